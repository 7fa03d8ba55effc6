"""Superseded certificates (grace period), the decision/EMF records, and the ops helpers that
need no stack."""

from __future__ import annotations

import json
import logging
import uuid as uuid_mod
from datetime import datetime, timedelta, timezone

import pytest

from devicegate import ops, telemetry
from devicegate.compliance.sync import revoke_superseded
from devicegate.ops.targets import _decisions, since_arg
from devicegate.store import CertificateRecord, Transaction


def issue(store, host, issued_at):
    serial = uuid_mod.uuid4().int >> 1
    record = CertificateRecord(serial=serial, host_uuid=host, status="active", not_before=issued_at,
                               not_after=issued_at + timedelta(days=365), issued_at=issued_at, der=b"x",
                               subject="CN=x", transaction_key="t", kind="enroll")
    store.record_issuance(Transaction(key=uuid_mod.uuid4().hex, csr_sha256="c", requester_spki_sha256="s",
                                      serial=serial), record)
    return serial


def test_older_certificates_go_only_after_the_newer_one_has_been_used_for_the_grace(store):
    now = datetime.now(timezone.utc)
    host, other = "A" * 8 + "-AAAA-AAAA-AAAA-" + "A" * 12, "B" * 8 + "-BBBB-BBBB-BBBB-" + "B" * 12
    first = issue(store, host, now - timedelta(days=30))
    second = issue(store, host, now - timedelta(days=2))
    third = issue(store, host, now - timedelta(hours=1))
    lone = issue(store, other, now - timedelta(days=30))
    grace = timedelta(hours=24)
    assert revoke_superseded(store, now, grace) == ([], [])  # no newer certificate used yet

    store.mark_use(first, now - timedelta(days=3), seen=None)  # last used before the newer one
    store.mark_use(third, now - timedelta(hours=2), seen=None)  # used, but within the grace
    assert revoke_superseded(store, now, grace) == ([], [])
    store.mark_use(second, now - timedelta(hours=30), seen=None)  # in use for longer than the grace
    store.mark_use(second, now, seen=None)  # a stale "seen" changes nothing
    record = store.get_certificate(second)
    assert record.first_used_at == record.last_used_at == now - timedelta(hours=30)
    assert revoke_superseded(store, now, grace) == ([format(first, "x")], [])
    assert store.get_certificate(first).revocation_reason == "superseded"
    assert store.get_certificate(second).status == "active" and store.get_certificate(third).status == "active"
    assert store.get_certificate(lone).status == "active"
    # the second is still used after the third came into use: two devices claim the host
    store.mark_use(second, now - timedelta(hours=1), seen=record.last_used_at)
    revoked, conflicts = revoke_superseded(store, now + timedelta(hours=23), grace)
    assert revoked == [] and [(c["older"], c["newer"]) for c in conflicts] == [(format(second, "x"), format(third, "x"))]
    assert store.get_certificate(second).status == "active"
    assert revoke_superseded(store, now + timedelta(hours=23), timedelta(0))[1]  # whatever the grace


def test_a_certificate_never_used_is_superseded_from_its_issue_time(store):
    now = datetime.now(timezone.utc)
    host = "F" * 8 + "-FFFF-FFFF-FFFF-" + "F" * 12
    old = issue(store, host, now - timedelta(days=10))
    new = issue(store, host, now - timedelta(days=5))
    store.mark_use(new, now - timedelta(days=4), seen=None)
    assert revoke_superseded(store, now, timedelta(hours=24)) == ([format(old, "x")], [])


def test_ops_revoke_by_serial_and_host(store):
    now = datetime.now(timezone.utc)
    host = "C" * 8 + "-CCCC-CCCC-CCCC-" + "C" * 12
    a, b = issue(store, host, now), issue(store, host, now)
    assert ops.revoke(store, serial=format(a, "X")) == [format(a, "x")]
    assert ops.revoke(store, host_uuid=host.lower()) == [format(b, "x")]
    assert ops.revoke(store, host_uuid=host) == []
    with pytest.raises(ops.OpsError, match="no certificate"):
        ops.revoke(store, serial="abc")
    with pytest.raises(ops.OpsError, match="not both"):
        ops.revoke(store, serial="abc", host_uuid=host)
    with pytest.raises(ops.OpsError, match="no certificates"):
        ops.revoke(store, host_uuid="D" * 8 + "-DDDD-DDDD-DDDD-" + "D" * 12)
    listed = ops.hosts(store, host_uuid=host)
    assert [c["status"] for c in listed["hosts"][0]["certificates"]] == ["revoked", "revoked"]


def test_records_go_to_stdout_on_lambda_and_to_the_logger_elsewhere(monkeypatch, capsys, caplog, tmp_path):
    record = telemetry.emf({"event": "decision", "Outcome": "allow", "Decisions": 1}, function="idp",
                           metrics={"Decisions": "Count"}, dimensions=("Outcome",))
    sink = telemetry.FileSink(tmp_path / "audit.jsonl", max_bytes=400)
    telemetry.add_sink(sink)
    try:
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "devicegate-idp")
        telemetry.emit(record)
        line = capsys.readouterr().out.strip()
        data = json.loads(line)
        emf = data["_aws"]["CloudWatchMetrics"][0]
        assert emf["Namespace"] == "devicegate" and emf["Dimensions"] == [["Function"], ["Function", "Outcome"]]
        assert emf["Metrics"] == [{"Name": "Decisions", "Unit": "Count"}] and data["Function"] == "idp"
        monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME")
        with caplog.at_level(logging.INFO, logger="devicegate.telemetry"):
            telemetry.emit(record)
        assert capsys.readouterr().out == "" and json.loads(caplog.records[-1].getMessage())["Outcome"] == "allow"
        telemetry.emit({"event": "x", "bad": object()})  # unserialisable: a record of the error, no exception
    finally:
        telemetry.remove_sink(sink)
    lines = (tmp_path / "audit.jsonl").read_text().splitlines() + (tmp_path / "audit.jsonl.1").read_text().splitlines()
    assert len(lines) == 3  # rotated past max_bytes, nothing lost
    with pytest.raises(ValueError, match="lacks"):
        telemetry.emf({"event": "x"}, function="idp", metrics={"Decisions": "Count"})


def test_audit_readback_filters_and_orders():
    now = datetime.now(timezone.utc)
    lines = [
        json.dumps({"event": "decision", "time": (now - timedelta(hours=3)).isoformat(), "Outcome": "allow"}),
        "not json", "{broken", json.dumps(["list"]), json.dumps({"event": "sync", "time": now.isoformat()}),
        json.dumps({"event": "decision", "time": now.isoformat(), "Outcome": "block", "_aws": {}}),
        json.dumps({"event": "decision", "time": (now - timedelta(minutes=5)).isoformat(), "Outcome": "allow"}),
        json.dumps({"event": "decision", "Outcome": "no time"}),
    ]
    records = _decisions(lines, since_arg("1h"))
    assert [r["Outcome"] for r in records] == ["allow", "block"] and "_aws" not in records[1]
    assert since_arg("2026-01-01T00:00:00").tzinfo is not None
