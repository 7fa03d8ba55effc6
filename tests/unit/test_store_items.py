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
