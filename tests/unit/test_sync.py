"""The scheduled sync against the simulated Fleet over real HTTP, and DynamoDB (moto): many
pages, one fault at a time, and what is kept when Fleet fails."""

from __future__ import annotations

import uuid as uuid_mod
from datetime import datetime, timedelta, timezone

import pytest

from devicegate.compliance.enforcement import Enforcement
from devicegate.compliance.fleet import FleetClient
from devicegate.compliance.sync import sync_once
from devicegate.local.fleet_sim import SimulatedFleet
from devicegate.store import CertificateRecord, Transaction

TOKEN = "sim-token-for-tests"
HOSTS = 40


@pytest.fixture
def fleet(tmp_path):
    sim = SimulatedFleet(tmp_path / "fleet.json", token=TOKEN)
    sim.start()
    with sim.batch():
        for i in range(HOSTS):
            host = str(uuid_mod.UUID(int=i + 1)).upper()
            sim.add_host(host, f"mac-{i}", email=f"user{i}@example.com", team="Engineering" if i % 2 else None)
            sim.set_policy(host, "FileVault enabled", "fail" if i % 5 == 0 else "pass", critical=True,
                           resolution="Turn on FileVault.")
            sim.set_policy(host, "Firewall", "pass", critical=False)
    yield sim
    sim.stop()


def client_for(sim, **kw):
    return FleetClient(sim.url, TOKEN, per_page=7, sleep=lambda s: None, timeout=kw.pop("timeout", 2.0), **kw)


def uuid_of(i):
    return str(uuid_mod.UUID(int=i + 1)).upper()


def test_full_sync_over_many_pages(fleet, store):
    report = sync_once(client_for(fleet), store, Enforcement())
    assert report.complete and report.hosts_seen == HOSTS and report.written == HOSTS
    assert report.hosts_failing == HOSTS // 5
    host, enforced = store.get_compliance(uuid_of(0))
    assert {r.name: r.result for r in host.results} == {"FileVault enabled": "fail", "Firewall": "pass"}
    assert host.device_users == ("user0@example.com",) and host.hostname == "mac-0"
    assert len(enforced) == 2  # the simulator marks the policies it creates for conditional access
    assert store.fleet_host_uuid(1) is not None
    again = sync_once(client_for(fleet), store, Enforcement())
    assert again.complete and again.written == 0 and again.unchanged == HOSTS, "writes only what changed"
    assert store.sync_report()["hosts_seen"] == HOSTS


def test_changes_and_staleness_refresh(fleet, store):
    sync_once(client_for(fleet), store, Enforcement())
    fleet.set_policy(uuid_of(1), "Firewall", "fail")
    report = sync_once(client_for(fleet), store, Enforcement())
    assert report.written == 1
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    report = sync_once(client_for(fleet), store, Enforcement(), now=later, refresh_after=timedelta(minutes=30))
    assert report.written == HOSTS, "unchanged hosts are rewritten before they go stale"


def _snapshot(store):
    return {u: (h.results, e) for u, (h, e, *_) in store.all_compliance().items()}


@pytest.mark.parametrize("kind,extra", [
    ("500", {}), ("429", {"retry_after": 1}), ("timeout", {"seconds": 3}), ("malformed", {}), ("truncated", {}),
])
def test_transient_faults_are_retried(fleet, store, kind, extra):
    sync_once(client_for(fleet), store, Enforcement())
    fleet.set_policy(uuid_of(2), "Firewall", "fail")
    fleet.inject_fault("/api/v1/fleet/hosts", kind, count=2, **extra)
    waits = []
    client = FleetClient(fleet.url, TOKEN, per_page=7, sleep=waits.append, timeout=1.0)
    report = sync_once(client, store, Enforcement())
    assert report.complete and report.written == 1, report.errors
    if kind == "429":
        assert 1 in waits, "Retry-After is honoured"


@pytest.mark.parametrize("kind,extra", [
    ("500", {}), ("429", {"retry_after": 1}), ("timeout", {"seconds": 3}), ("malformed", {}), ("truncated", {}),
])
def test_persistent_faults_keep_the_previous_state(fleet, store, kind, extra):
    sync_once(client_for(fleet), store, Enforcement())
    before = _snapshot(store)
    fleet.set_policy(uuid_of(3), "Firewall", "fail")
    fleet.remove_host(uuid_of(4))
    fleet.inject_fault("/api/v1/fleet/hosts", kind, count=50, **extra)
    report = sync_once(client_for(fleet, timeout=1.0), store, Enforcement())
    assert not report.complete and report.errors and report.written == 0 and report.deleted == 0
    assert _snapshot(store) == before, "a failed fetch never replaces good data"
    assert store.sync_report()["errors"], "the error is reported"


def test_a_failing_policy_catalogue_keeps_everything(fleet, store):
    sync_once(client_for(fleet), store, Enforcement())
    before = _snapshot(store)
    fleet.inject_fault("/api/v1/fleet/global/policies", "500", count=50)
    report = sync_once(client_for(fleet), store, Enforcement())
    assert not report.complete and _snapshot(store) == before


def _issue_cert(store, host):
    now = datetime.now(timezone.utc)
    serial = uuid_mod.uuid4().int >> 1
    record = CertificateRecord(serial=serial, host_uuid=host, status="active", not_before=now - timedelta(days=1),
                               not_after=now + timedelta(days=30), issued_at=now, der=b"x", subject="CN=x",
                               transaction_key="t", kind="enroll")
    store.record_issuance(Transaction(key=uuid_mod.uuid4().hex, csr_sha256="c", requester_spki_sha256="s",
                                      serial=serial), record)
    return serial


def test_removed_host_is_deleted_and_its_certificates_revoked(fleet, store):
    sync_once(client_for(fleet), store, Enforcement())
    serial = _issue_cert(store, uuid_of(5))
    fleet.remove_host(uuid_of(5))
    report = sync_once(client_for(fleet), store, Enforcement())
    assert report.complete and report.deleted == 1 and report.revoked == 1
    assert store.get_compliance(uuid_of(5)) is None
    record = store.get_certificate(serial)
    assert record.status == "revoked" and record.revocation_reason == "host removed from Fleet"


def test_a_host_vanishing_mid_listing_loses_nobody_else(fleet, store):
    sync_once(client_for(fleet), store, Enforcement())
    serials = {i: _issue_cert(store, uuid_of(i)) for i in range(HOSTS)}
    # host 6 is deleted while the listing is on its later pages: every page after shifts by one
    fleet.inject_fault("/api/v1/fleet/hosts", "vanish", count=1, host_uuid=uuid_of(6))
    fleet.inject_fault("/api/v1/fleet/hosts", "500", count=1)  # and a retried page, for good measure
    report = sync_once(client_for(fleet), store, Enforcement())
    assert report.deleted <= 1
    for i, serial in serials.items():
        expected = "revoked" if i == 6 and report.deleted else "active"
        assert store.get_certificate(serial).status == expected, (i, report)
    follow_up = sync_once(client_for(fleet), store, Enforcement())
    assert store.get_compliance(uuid_of(6)) is None and store.get_certificate(serials[6]).status == "revoked"
    assert all(store.get_certificate(s).status == "active" for i, s in serials.items() if i != 6), follow_up


def test_enforcement_settings():
    from devicegate.compliance.fleet import FleetPolicy

    policies = [FleetPolicy(1, "FileVault", True, None, None, True), FleetPolicy(2, "Firewall", False, None, 3, False),
                FleetPolicy(3, "Updates", True, None, 3, False)]
    assert Enforcement().enforced(policies) == {"1"}
    assert Enforcement.parse("all-critical").enforced(policies) == {"1", "3"}
    listed = Enforcement.parse('{"global": ["Firewall"], "Engineering": [3]}')
    assert listed.enforced(policies, 3, "Engineering") == {"2", "3"}
    assert listed.enforced(policies, 4, "Sales") == {"2"}
    legacy = [FleetPolicy(1, "FileVault", True, None, None, None), FleetPolicy(2, "Firewall", False, None, None, None)]
    assert Enforcement().enforced(legacy) == {"1"}, "a Fleet without the flag enforces the critical ones"
    with pytest.raises(ValueError):
        Enforcement.parse("[1, 2]")


def test_a_webhook_during_a_sync_is_not_overwritten_by_the_older_listing(fleet, store):
    from devicegate.compliance import webhook
    from devicegate.settings import FleetSettings

    sync_once(client_for(fleet), store, Enforcement())
    host = uuid_of(1)
    client = client_for(fleet)
    listing = client.host_details

    def listing_then_webhook(*args, **kwargs):
        pages = list(listing(*args, **kwargs))  # Fleet's view: still passing
        policy = next(p for p in fleet.state()["policies"].values() if p["name"] == "Firewall")
        webhook.mark_failing(store, None, FleetSettings(url=None, token_secret_id=None), policy,
                             [{"id": next(h["id"] for h in fleet.state()["hosts"].values() if h["uuid"] == host)}])
        return iter(pages)

    client.host_details = listing_then_webhook
    fleet.set_policy(host, "FileVault enabled", "fail", critical=True)  # something to write for this host
    report = sync_once(client, store, Enforcement())
    results = {r.name: r.result for r in store.get_compliance(host)[0].results}
    assert results["Firewall"] == "fail", "the webhook's newer mark survives"
    assert report.raced == 1


def test_a_sync_never_removes_more_than_its_limit(fleet, store):
    sync_once(client_for(fleet), store, Enforcement())
    for i in range(10):
        fleet.remove_host(uuid_of(i))
    report = sync_once(client_for(fleet), store, Enforcement())  # 10 of 40 > max(5, 10%)
    assert report.deleted == 0 and not report.complete and "right Fleet" in report.errors[0]
    report = sync_once(client_for(fleet), store, Enforcement(), max_delete_fraction=0.5)
    assert report.deleted == 10


def test_an_empty_fleet_revokes_nothing(tmp_path, store):
    from devicegate.local.fleet_sim import SimulatedFleet as Sim

    full = Sim(tmp_path / "full.json", token=TOKEN)
    full.start()
    with full.batch():
        for i in range(20):
            full.add_host(uuid_of(i), f"m{i}")
    sync_once(client_for(full), store, Enforcement())
    full.stop()
    serial = _issue_cert(store, uuid_of(0))
    empty = Sim(tmp_path / "empty.json", token=TOKEN)
    empty.start()
    try:
        report = sync_once(client_for(empty), store, Enforcement())
    finally:
        empty.stop()
    assert report.deleted == 0 and store.get_certificate(serial).status == "active"


def test_no_team_policies_apply_to_hosts_without_a_team():
    from devicegate.compliance.fleet import FleetHost, FleetHostDetail, FleetPolicy, HostPolicy
    from devicegate.compliance.sync import NO_TEAM, Catalogue, compliance_from_detail

    catalogue = Catalogue(global_policies=[FleetPolicy(1, "FileVault", True, None, None, True)],
                          team_policies={NO_TEAM: [FleetPolicy(5, "Firewall (No team)", False, None, 0, True)]},
                          team_names={})
    detail = FleetHostDetail(FleetHost(7, "U", "h", None, None, "darwin"),
                             [HostPolicy(1, "FileVault", "pass", True, None), HostPolicy(5, "Firewall (No team)", "fail", False, None)],
                             [])
    host, enforced = compliance_from_detail(detail, catalogue, Enforcement(), datetime.now(timezone.utc))
    assert enforced == {"1", "5"}


def test_enforcement_that_matches_nothing_is_reported(fleet, store):
    report = sync_once(client_for(fleet), store, Enforcement.parse('{"global": ["Filevault"]}'))
    assert any("does not have" in w and "Filevault" in w for w in report.warnings)
    assert any("no Fleet policy is enforced" in w for w in report.warnings)
    assert not sync_once(client_for(fleet), store, Enforcement()).warnings
