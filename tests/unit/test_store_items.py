"""Compliance items to records and back (pure: no table), including the parse cache of "results"."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from devicegate import store as store_mod
from devicegate.compliance.decision import HostCompliance, PolicyResult

ROWS = (PolicyResult("1", "Disk encryption", "pass", True, "Turn on FileVault."),
        PolicyResult("2", "Firewall", None, False, None))


def _host(uuid: str, rows=ROWS) -> HostCompliance:
    return HostCompliance(uuid, f"{uuid}-mbp", "7", rows, datetime(2024, 5, 1, 12, tzinfo=timezone.utc),
                          ("alice@example.com",))


def test_a_compliance_item_reads_back_as_written(monkeypatch):
    monkeypatch.setattr(store_mod, "_results_cache", {})
    for _ in range(2):  # parsed, then from the cache: the same records
        host, enforced = store_mod._compliance_from_item(store_mod._compliance_item(_host("A"), {"1"}, None))
        assert host == _host("A") and enforced == frozenset({"1"})


def test_hosts_with_the_same_results_share_one_parse_and_keep_their_own_fields(monkeypatch):
    monkeypatch.setattr(store_mod, "_results_cache", {})
    a = store_mod._compliance_from_item(store_mod._compliance_item(_host("A"), {"1"}, None))
    b = store_mod._compliance_from_item(store_mod._compliance_item(_host("B"), {"1"}, None))
    assert a[0].host_uuid == "A" and b[0].host_uuid == "B" and a[0].hostname == "A-mbp"
    assert a[0].results is b[0].results and len(store_mod._results_cache) == 1
    # other results, or the same results enforced differently, are other texts
    c = store_mod._compliance_from_item(store_mod._compliance_item(_host("C"), {"1", "2"}, None))
    assert c[1] == frozenset({"1", "2"}) and len(store_mod._results_cache) == 2


def test_unusable_results_fail_every_time_and_are_not_kept(monkeypatch):
    monkeypatch.setattr(store_mod, "_results_cache", {})
    item = store_mod._compliance_item(_host("A"), {"1"}, None)
    item["results"] = {"S": json.dumps([{"name": "no id"}])}
    for _ in range(2):
        with pytest.raises(KeyError):
            store_mod._compliance_from_item(item)
    assert store_mod._results_cache == {}


def test_the_results_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(store_mod, "_results_cache", {})
    monkeypatch.setattr(store_mod, "_RESULTS_CACHE_MAX", 2)
    for i in range(5):
        rows = (PolicyResult(str(i), f"policy {i}", "pass"),)
        host, _ = store_mod._compliance_from_item(store_mod._compliance_item(_host("A", rows), set(), None))
        assert host.results == rows
    assert 1 <= len(store_mod._results_cache) <= 2


def test_batch_read_asks_again_for_unprocessed_keys_then_reads_them_one_by_one():
    from datetime import datetime, timezone

    from devicegate import store as store_mod

    cert_key = {"pk": {"S": "CERT#a"}, "sk": {"S": "CERT"}}
    comp_key = {"pk": {"S": "COMPLIANCE"}, "sk": {"S": "HOST#H"}}
    cert_item = store_mod._certificate_item(store_mod.CertificateRecord(
        serial=10, host_uuid="H", status="active", not_before=datetime(2026, 1, 1, tzinfo=timezone.utc),
        not_after=datetime(2027, 1, 1, tzinfo=timezone.utc), issued_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        der=b"\x30\x00", subject="CN=x", transaction_key="k", kind="enroll"))

    class Client:
        def __init__(self, unprocessed_rounds):
            self.rounds, self.calls = unprocessed_rounds, []

        def batch_get_item(self, RequestItems):
            keys = RequestItems["t"]["Keys"]
            assert RequestItems["t"]["ConsistentRead"] is True
            self.calls.append(("batch", len(keys)))
            answered = [cert_item] if cert_key in keys else []
            left = [comp_key] if comp_key in keys and self.rounds > 0 else []
            self.rounds -= 1
            return {"Responses": {"t": answered}, "UnprocessedKeys": {"t": {"Keys": left}} if left else {}}

        def get_item(self, TableName, Key, ConsistentRead):
            self.calls.append(("get", Key["pk"]["S"]))
            return {}

    assert store_mod.serial_key(10) == "a"
    once = Client(unprocessed_rounds=1)
    record, compliance = store_mod.Store("t", client=once).get_certificate_and_compliance(10, "H")
    assert record.serial == 10 and compliance is None and once.calls == [("batch", 2), ("batch", 1)]
    stuck = Client(unprocessed_rounds=99)
    record, compliance = store_mod.Store("t", client=stuck).get_certificate_and_compliance(10, "H")
    assert record.serial == 10 and stuck.calls == [("batch", 2), ("batch", 1), ("batch", 1), ("get", "COMPLIANCE")]
