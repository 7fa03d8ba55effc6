"""The Fleet client against the simulated Fleet, over real HTTPS with a throwaway CA."""

from __future__ import annotations

import logging
import socket
import time
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import pytest

from devicegate.compliance import fleet as fleet_mod
from devicegate.compliance.fleet import FleetClient, FleetError, FleetHost, HostPolicy, retry_after_seconds
from devicegate.local import pki
from devicegate.local.fleet_sim import SimulatedFleet

TOKEN = "fleet-token-Zq7Xv2Lk9Pw4Rt6Yb8Nm3Hc5"
HOSTS_PATH = "/api/v1/fleet/hosts"


def hw_uuid(i: int) -> str:
    return f"{i:08x}-5e1a-4c0d-9b7e-{i:012x}"  # lower case on purpose: the client upper-cases


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    d = tmp_path_factory.mktemp("fleet-tls")
    ca_key = pki.new_key()
    ca = pki.self_signed_ca("test Fleet CA", ca_key)
    key = pki.new_key()
    cert = pki.server_certificate(ca, ca_key, key, ["127.0.0.1", "localhost"])
    (d / "ca.pem").write_text(pki.pem_cert(ca))
    (d / "server.pem").write_text(pki.pem_cert(cert))
    (d / "server.key").write_text(pki.pem_key(key))
    return {"ca": str(d / "ca.pem"), "cert": str(d / "server.pem"), "key": str(d / "server.key")}


@pytest.fixture
def sim(tmp_path, tls):
    s = SimulatedFleet(tmp_path / "fleet.json", token=TOKEN, certfile=tls["cert"], keyfile=tls["key"]).start()
    yield s
    s.stop()


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def make_client(sim, tls, token=TOKEN, **kw):
    sleeps = Sleeps()
    kw.setdefault("timeout", 3.0)
    return FleetClient(sim.url, token, ca_bundle=tls["ca"], sleep=sleeps, **kw), sleeps


def populate(sim, n, team=None):
    with sim.batch():
        for i in range(1, n + 1):
            sim.add_host(hw_uuid(i), f"host-{i}.local", f"user{i}@example.com", team=team)


def list_requests(sim, path=HOSTS_PATH):
    return [q for method, p, q in sim.requests if p == path]


# ------------------------------------------------------------------ pagination


@pytest.mark.parametrize("per_page", [100, 7])
def test_pagination_over_many_pages(sim, tls, per_page):
    populate(sim, 250)
    client, sleeps = make_client(sim, tls, per_page=per_page)
    sim.requests.clear()
    hosts = list(client.hosts())
    assert [h.id for h in hosts] == list(range(1, 251))
    assert hosts[0] == FleetHost(1, hw_uuid(1).upper(), "host-1.local", "host-1", None, "darwin")
    pages = list_requests(sim)
    assert [q["page"] for q in pages] == [str(i) for i in range(-(-250 // per_page))]
    assert all(q["per_page"] == str(per_page) and q["order_key"] == "id" for q in pages)
    assert sleeps == []


def test_pagination_stops_on_an_empty_page_after_an_exact_multiple(sim, tls):
    populate(sim, 14)
    client, _ = make_client(sim, tls, per_page=7)
    sim.requests.clear()
    assert len(list(client.hosts())) == 14
    assert [q["page"] for q in list_requests(sim)] == ["0", "1", "2"]


def test_a_server_repeating_a_page_is_an_error_not_an_endless_loop(sim, tls):
    populate(sim, 30)
    sim.inject_fault(HOSTS_PATH, "repeat", 1000)
    client, _ = make_client(sim, tls, per_page=7)
    with pytest.raises(FleetError, match="already seen") as info:
        list(client.hosts())
    assert len(list_requests(sim)) == 2


def test_a_server_ignoring_per_page_is_read_in_one_request(sim, tls):
    populate(sim, 30)
    sim.inject_fault(HOSTS_PATH, "unpaged", 1000)
    client, _ = make_client(sim, tls, per_page=7)
    sim.requests.clear()
    assert len(list(client.hosts())) == 30
    assert len(list_requests(sim)) == 1


def test_team_and_policy_filters(sim, tls):
    populate(sim, 6)
    with sim.batch():
        for i in (1, 2, 3):
            sim.add_host(hw_uuid(i), f"host-{i}.local", f"user{i}@example.com", team="Workstations")
        for i in (1, 2, 3):
            sim.set_policy(hw_uuid(i), "FileVault enabled", "fail" if i != 2 else "pass", critical=True)
    client, _ = make_client(sim, tls, per_page=2)
    (team_id, name), = client.teams()
    assert name == "Workstations"
    assert [h.id for h in client.hosts(team_id=team_id)] == [1, 2, 3]
    assert [h.id for h in client.hosts(team_id=0)] == [4, 5, 6]  # Fleet's "No team"
    policy, = client.team_policies(team_id)
    assert [h.id for h in client.hosts(policy_id=policy.id, policy_response="failing")] == [1, 3]
    assert [h.id for h in client.hosts(policy_id=policy.id, policy_response="passing")] == [2]
    assert all(h.team_id == team_id for h in client.hosts(policy_id=policy.id))


def test_bad_filter_arguments_fail_before_any_request(sim, tls):
    client, _ = make_client(sim, tls)
    sim.requests.clear()
    with pytest.raises(ValueError):
        client.hosts(policy_response="failing")
    with pytest.raises(ValueError):
        client.hosts(policy_id=1, policy_response="broken")
    with pytest.raises(ValueError):
        client.hosts(team_id=-1)
    assert not sim.requests


# ------------------------------------------------------------------ one host


def test_host_detail_with_policy_results_and_emails(sim, tls):
    populate(sim, 2)
    sim.add_host(hw_uuid(1), "host-1.local", "Ada@Example.com", team="Workstations")
    sim.set_policy(hw_uuid(1), "FileVault enabled", "fail", critical=True, resolution="Turn FileVault on.")
    sim.set_policy(hw_uuid(1), "Screen lock", "pass")
    sim.set_policy(hw_uuid(1), "Firewall on", "fail")
    sim.set_policy(hw_uuid(1), "Firewall on", "none")  # back to "no result yet"
    client, _ = make_client(sim, tls)
    detail = client.host(1)
    assert detail.host.uuid == hw_uuid(1).upper() and detail.host.team_id == 1
    assert detail.policies == [
        HostPolicy(1, "FileVault enabled", "fail", True, "Turn FileVault on."),
        HostPolicy(2, "Screen lock", "pass", False, None),
        HostPolicy(3, "Firewall on", None, False, None),
    ]
    assert detail.emails == ["Ada@Example.com"]
    assert client.device_emails(1) == ["Ada@Example.com"]
    assert client.device_emails(2) == ["user2@example.com"]


def test_host_by_uuid_is_case_insensitive_and_none_when_unknown(sim, tls):
    populate(sim, 3)
    client, sleeps = make_client(sim, tls)
    found = client.host_by_uuid(hw_uuid(2).upper())
    assert found is not None and found.host.id == 2 and found.host.uuid == hw_uuid(2).upper()
    assert client.host_by_uuid(hw_uuid(99)) is None
    assert sleeps == []  # a 404 is an answer, not a failure
    with pytest.raises(ValueError):
        client.host_by_uuid("../../admin")


def test_host_lookups_ask_fleet_to_leave_the_software_inventory_out(sim, tls):
    # Fleet's host detail carries every installed title unless asked not to; nothing here reads
    # it, and each enrollment (host known?) and each "check again" asks for a host
    populate(sim, 2)
    client, _ = make_client(sim, tls)
    sim.requests.clear()
    assert client.host_by_uuid(hw_uuid(1)).host.id == 1 and client.host(2).host.id == 2
    asked = [(p, q) for _, p, q in sim.requests]
    assert [p.rsplit("/fleet", 1)[1] for p, _ in asked] == [f"/hosts/identifier/{hw_uuid(1)}", "/hosts/2"]
    assert all(q.get("exclude_software") == "true" for _, q in asked), asked


def test_host_by_uuid_does_not_trust_a_host_named_after_another_hosts_uuid(sim, tls):
    # Fleet's identifier lookup also matches hostnames: host 1 names itself after host 2's UUID.
    sim.add_host(hw_uuid(1), hw_uuid(2).upper(), "mallory@example.com")
    sim.add_host(hw_uuid(2), "victim.local", "victim@example.com")
    client, _ = make_client(sim, tls)
    found = client.host_by_uuid(hw_uuid(2).upper())
    assert found.host.id == 2 and found.emails == ["victim@example.com"]
    sim.remove_host(hw_uuid(2))
    assert client.host_by_uuid(hw_uuid(2).upper()) is None


def test_host_details_from_the_list_match_the_detail_endpoint(sim, tls):
    populate(sim, 9)
    for i in (2, 5):
        sim.set_policy(hw_uuid(i), "FileVault enabled", "fail", critical=True)
        sim.set_policy(hw_uuid(i), "Screen lock", "pass")
    client, _ = make_client(sim, tls, per_page=4)
    listed = list(client.host_details())
    assert [d.host.id for d in listed] == list(range(1, 10))
    for detail in listed:
        assert detail == client.host(detail.host.id)
    populated = [q for q in list_requests(sim) if q.get("populate_policies") == "true"]
    assert populated and all(q["device_mapping"] == "true" for q in populated)


def test_policies_teams_and_the_conditional_access_flag(sim, tls):
    sim.add_host(hw_uuid(1), "a.local", team="Workstations")
    sim.add_host(hw_uuid(2), "b.local")
    sim.set_policy(hw_uuid(1), "FileVault enabled", "fail", critical=True, resolution="Turn it on.")
    sim.set_policy(hw_uuid(2), "Gatekeeper enabled", "pass")
    client, _ = make_client(sim, tls)
    assert client.teams() == [(1, "Workstations")]
    team_policy, = client.team_policies(1)
    assert (team_policy.name, team_policy.critical, team_policy.resolution, team_policy.team_id,
            team_policy.conditional_access) == ("FileVault enabled", True, "Turn it on.", 1, True)
    global_policy, = client.global_policies()
    assert global_policy.team_id is None and global_policy.conditional_access is True
    sim.conditional_access_flag = False  # a Fleet from before the feature
    assert client.team_policies(1)[0].conditional_access is None
    with pytest.raises(FleetError, match="no team 42") as info:
        client.team_policies(42)
    assert info.value.status == 404


def test_policy_lists_are_paginated(sim, tls):
    sim.add_host(hw_uuid(1), "a.local")
    with sim.batch():
        for i in range(23):
            sim.set_policy(hw_uuid(1), f"policy {i:02d}", "pass")
    client, _ = make_client(sim, tls, per_page=5)
    assert [p.name for p in client.global_policies()] == [f"policy {i:02d}" for i in range(23)]
    assert len(list_requests(sim, "/api/v1/fleet/global/policies")) == 5


# ------------------------------------------------------------------ faults and retries


def test_500s_are_retried_with_jittered_backoff(sim, tls):
    populate(sim, 3)
    sim.inject_fault(HOSTS_PATH, "500", 3)
    client, sleeps = make_client(sim, tls, backoff=0.2, max_backoff=0.5)
    assert len(list(client.hosts())) == 3
    assert len(sleeps) == 3
    for attempt, slept in enumerate(sleeps, start=1):
        assert 0 <= slept <= min(0.5, 0.2 * 2 ** (attempt - 1))


def test_500s_past_max_attempts_are_a_retryable_error(sim, tls):
    populate(sim, 3)
    sim.inject_fault(HOSTS_PATH, "500", 100)
    client, sleeps = make_client(sim, tls, max_attempts=4)
    sim.requests.clear()
    with pytest.raises(FleetError) as info:
        list(client.hosts())
    assert (info.value.status, info.value.retryable) == (500, True)
    assert "after 4 attempts" in str(info.value)
    assert len(list_requests(sim)) == 4 and len(sleeps) == 3


@pytest.mark.parametrize("header, expected", [(7, 7.0), (3600, 30.0)])
def test_429_honours_retry_after_seconds_capped(sim, tls, header, expected):
    populate(sim, 2)
    sim.inject_fault(HOSTS_PATH, "429", 1, retry_after=header)
    client, sleeps = make_client(sim, tls)
    assert len(list(client.hosts())) == 2
    assert sleeps == [expected]


def test_429_honours_retry_after_as_an_http_date(sim, tls):
    populate(sim, 2)
    when = datetime.now(timezone.utc) + timedelta(seconds=10)
    sim.inject_fault(HOSTS_PATH, "429", 1, retry_after=format_datetime(when, usegmt=True))
    client, sleeps = make_client(sim, tls)
    assert len(list(client.hosts())) == 2
    assert len(sleeps) == 1 and 7.0 < sleeps[0] <= 10.0


def test_a_timeout_is_retried(sim, tls):
    populate(sim, 2)
    sim.inject_fault(HOSTS_PATH, "timeout", 1, seconds=2.0)
    client, sleeps = make_client(sim, tls, timeout=0.3)
    started = time.monotonic()
    assert len(list(client.hosts())) == 2
    assert time.monotonic() - started < 1.8
    assert len(sleeps) == 1


def test_timeouts_past_max_attempts_are_a_retryable_error(sim, tls):
    populate(sim, 2)
    sim.inject_fault(HOSTS_PATH, "timeout", 10, seconds=1.0)
    client, sleeps = make_client(sim, tls, timeout=0.2, max_attempts=2)
    with pytest.raises(FleetError, match="did not answer within") as info:
        list(client.hosts())
    assert info.value.retryable and len(sleeps) == 1


@pytest.mark.parametrize("kind, words", [("malformed", "malformed JSON"), ("truncated", "truncated")])
def test_broken_bodies_are_retried(sim, tls, kind, words):
    populate(sim, 4)
    sim.inject_fault(HOSTS_PATH, kind, 2)
    client, sleeps = make_client(sim, tls)
    assert len(list(client.hosts())) == 4
    assert len(sleeps) == 2


@pytest.mark.parametrize("kind, words", [("malformed", "malformed JSON"), ("truncated", "truncated")])
def test_broken_bodies_past_max_attempts_are_a_retryable_error(sim, tls, kind, words):
    populate(sim, 4)
    sim.inject_fault("/api/v1/fleet/hosts/*", kind, 100)
    client, sleeps = make_client(sim, tls, max_attempts=3)
    with pytest.raises(FleetError, match=words) as info:
        client.host(1)
    assert info.value.retryable and info.value.status is None
    assert len(sleeps) == 2


def test_a_host_that_vanishes_between_the_list_and_the_detail(sim, tls):
    populate(sim, 3)
    client, sleeps = make_client(sim, tls)
    listed = list(client.hosts())
    sim.inject_fault("/api/v1/fleet/hosts/*", "vanish", 1)
    with pytest.raises(FleetError) as info:
        client.host(listed[1].id)
    assert (info.value.status, info.value.retryable) == (404, False)
    sim.inject_fault("/api/v1/fleet/hosts/identifier/*", "vanish", 1)
    assert client.host_by_uuid(listed[2].uuid) is None
    assert sleeps == []
    assert [h.id for h in client.hosts()] == [listed[0].id]


def test_a_kept_alive_connection_the_server_dropped_is_resent_at_once(tmp_path, tls):
    first = SimulatedFleet(tmp_path / "f.json", token=TOKEN, certfile=tls["cert"], keyfile=tls["key"]).start()
    populate(first, 3)
    client, sleeps = make_client(first, tls)
    assert len(list(client.hosts())) == 3
    port = first.port
    first.stop()  # the client still holds its kept-alive connection
    second = SimulatedFleet(tmp_path / "f.json", token=TOKEN, certfile=tls["cert"], keyfile=tls["key"], port=port).start()
    try:
        assert len(list(client.hosts())) == 3
        assert sleeps == []
    finally:
        second.stop()


def test_connection_refused_is_retried_then_a_retryable_error(tls):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    client = FleetClient(f"https://127.0.0.1:{port}", TOKEN, ca_bundle=tls["ca"], sleep=sleeps, max_attempts=3)
    with pytest.raises(FleetError, match="could not talk to Fleet") as info:
        client.teams()
    assert info.value.retryable and len(sleeps) == 2


# ------------------------------------------------------------------ errors that are final


def test_401_says_check_the_token_and_is_not_retried(sim, tls):
    wrong = "not-the-token-Qm8Vb3Xs"
    client, sleeps = make_client(sim, tls, token=wrong)
    sim.requests.clear()
    with pytest.raises(FleetError) as info:
        list(client.hosts())
    assert (info.value.status, info.value.retryable) == (401, False)
    assert "check the Fleet API token" in str(info.value)
    assert wrong not in str(info.value) and wrong not in repr(info.value)
    assert len(sim.requests) == 1 and sleeps == []


def test_404_on_a_list_says_check_the_fleet_url(sim, tls):
    sleeps = Sleeps()
    client = FleetClient(sim.url + "/fleet", TOKEN, ca_bundle=tls["ca"], sleep=sleeps)
    with pytest.raises(FleetError, match="check the Fleet URL") as info:
        list(client.hosts())
    assert (info.value.status, info.value.retryable) == (404, False) and sleeps == []


def test_tls_is_always_verified(sim, tls):
    sleeps = Sleeps()
    client = FleetClient(sim.url, TOKEN, sleep=sleeps)  # system roots: the test CA is not among them
    with pytest.raises(FleetError, match="did not verify") as info:
        client.teams()
    assert not info.value.retryable and sleeps == []


def test_a_missing_ca_bundle_is_a_clear_error(tmp_path):
    client = FleetClient("https://127.0.0.1:9", TOKEN, ca_bundle=str(tmp_path / "missing.pem"), sleep=Sleeps())
    with pytest.raises(FleetError, match="cannot load the CA bundle") as info:
        client.teams()
    assert not info.value.retryable


def test_oversized_responses_are_refused(sim, tls):
    populate(sim, 20)
    client, sleeps = make_client(sim, tls, max_response_bytes=4096)
    with pytest.raises(FleetError, match="limit") as info:
        list(client.hosts())
    assert not info.value.retryable and sleeps == []


def test_the_token_never_appears_in_errors_logs_or_repr(sim, tls, caplog, tmp_path):
    caplog.set_level(logging.DEBUG, logger="devicegate")
    populate(sim, 2)
    errors = []
    client, _ = make_client(sim, tls, max_attempts=2)
    for kind in ("500", "malformed", "truncated", "429"):
        sim.inject_fault(HOSTS_PATH, kind, 10, retry_after=1)
        with pytest.raises(FleetError) as info:
            list(client.hosts())
        errors.append(info.value)
        sim.clear_faults()
    for bad_client in (make_client(sim, tls, token=TOKEN + "x")[0],
                       FleetClient(sim.url + "/nope", TOKEN, ca_bundle=tls["ca"], sleep=Sleeps()),
                       FleetClient(sim.url, TOKEN, sleep=Sleeps())):
        with pytest.raises(FleetError) as info:
            bad_client.teams()
        errors.append(info.value)
    with pytest.raises(FleetError) as info:
        client.host(999)
    errors.append(info.value)
    assert len(errors) == 8
    for err in errors:
        assert TOKEN not in str(err) and TOKEN not in repr(err)
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(client)


def test_configuration_is_checked():
    with pytest.raises(ValueError, match="https"):
        FleetClient("http://fleet.example.com", TOKEN)
    with pytest.raises(ValueError):
        FleetClient("https://user:pw@fleet.example.com", TOKEN)
    with pytest.raises(ValueError):
        FleetClient("ftp://fleet.example.com", TOKEN)
    with pytest.raises(ValueError):
        FleetClient("https://fleet.example.com", "tok\r\nX-Evil: 1")
    for bad_token in ("", "tok\n", "two words"):
        with pytest.raises(ValueError):
            FleetClient("https://fleet.example.com", bad_token)
    with pytest.raises(ValueError):
        FleetClient("https://fleet.example.com", TOKEN).host_by_uuid(hw_uuid(1) + "\n/../x")
    client = FleetClient("https://fleet.example.com/", TOKEN)
    assert client.base_url == "https://fleet.example.com" and TOKEN not in repr(client)


# ------------------------------------------------------------------ small pure pieces


def test_retry_after_parsing():
    now = 1_700_000_000.0
    assert retry_after_seconds("12") == 12.0
    assert retry_after_seconds("0") == 0.0
    assert retry_after_seconds("9999") == fleet_mod.RETRY_AFTER_CAP
    date = format_datetime(datetime.fromtimestamp(now + 20, timezone.utc), usegmt=True)
    assert retry_after_seconds(date, now=lambda: now) == pytest.approx(20.0)
    past = format_datetime(datetime.fromtimestamp(now - 20, timezone.utc), usegmt=True)
    assert retry_after_seconds(past, now=lambda: now) == 0.0
    for bad in (None, "", "soon", "-5", "1.5e9", "x" * 100):
        assert retry_after_seconds(bad) is None


@pytest.mark.parametrize("body", [b'{"a": 1, "a": 2}', b'{"a": NaN}', b'{"a": Infinity}', b"[1, 2]",
                                  b'{"a": "\xff"}', b'{"a": 1', b"\xef\xbb\xbf{}"])
def test_json_is_parsed_strictly(body):
    with pytest.raises(FleetError) as info:
        fleet_mod._parse_json(body, "test")
    assert info.value.retryable


def test_unexpected_shapes_are_errors_not_half_filled_objects(sim, tls, monkeypatch):
    populate(sim, 1)
    client, _ = make_client(sim, tls)
    original = sim._host_policy_json

    def odd_response(row, response):
        doc = original(row, response)
        doc["response"] = "maybe"
        return doc

    sim.set_policy(hw_uuid(1), "FileVault enabled", "fail")
    monkeypatch.setattr(sim, "_host_policy_json", odd_response)
    with pytest.raises(FleetError, match="not shaped as expected"):
        client.host(1)


def test_answers_that_are_not_http_we_accept_are_retried_then_a_retryable_error():
    from tests.unit.test_http11 import CLOSE, RawServer

    bad = CLOSE(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n folded: header\r\n\r\n{}")
    server = RawServer(bad, bad, bad)
    try:
        sleeps = Sleeps()
        client = FleetClient(f"http://127.0.0.1:{server.port}", TOKEN, sleep=sleeps, max_attempts=3)
        with pytest.raises(FleetError, match="not an HTTP/1.1 response we accept") as info:
            client.teams()
        assert info.value.retryable and len(sleeps) == 2 and server.connections == 3
        assert all(b"authorization: bearer" in r.lower() and b"\r\nhost: 127.0.0.1:" in r.lower() for r in server.requests)
    finally:
        server.close()


def test_a_chunked_answer_over_the_limit_is_refused_without_retry():
    from tests.unit.test_http11 import RawServer

    big = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1000\r\n" + b"x" * 4096 + b"\r\n0\r\n\r\n"
    server = RawServer(big)
    try:
        sleeps = Sleeps()
        client = FleetClient(f"http://127.0.0.1:{server.port}", TOKEN, sleep=sleeps, max_response_bytes=1024)
        with pytest.raises(FleetError, match="limit") as info:
            client.teams()
        assert not info.value.retryable and sleeps == []
    finally:
        server.close()
