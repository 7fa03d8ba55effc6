"""The Fleet policy webhook receiver, with ALB events, against moto and the simulated Fleet."""

from __future__ import annotations

import json
import uuid as uuid_mod

import boto3
import pytest

from devicegate import alb
from devicegate.compliance import webhook
from devicegate.compliance.enforcement import Enforcement
from devicegate.compliance.fleet import FleetClient
from devicegate.compliance.sync import sync_once
from devicegate.local.fleet_sim import SimulatedFleet

SECRET = "webhook-secret-" + "x" * 20


@pytest.fixture
def world(store, moto_server, tmp_path, monkeypatch):
    sim = SimulatedFleet(tmp_path / "fleet.json", token="t0ken")
    sim.start()
    host = str(uuid_mod.uuid4()).upper()
    sim.add_host(host, "ada-mbp", email="ada@example.com")
    sim.set_policy(host, "FileVault enabled", "pass", critical=True)
    sim.set_policy(host, "Firewall", "pass")
    sync_once(FleetClient(sim.url, "t0ken", sleep=lambda s: None), store, Enforcement())
    name = f"wh-{uuid_mod.uuid4().hex[:8]}"
    sm = boto3.client("secretsmanager", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    sm.create_secret(Name=name, SecretString=SECRET)
    for key, value in {"AWS_ENDPOINT_URL": moto_server.endpoint, "DEVICEGATE_TABLE": store.table,
                       "DEVICEGATE_FLEET_WEBHOOK_SECRET": name}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DEVICEGATE_FLEET_URL", raising=False)
    webhook.reset()
    yield sim, store, host
    webhook.reset()
    sim.stop()


def call(body, *, query="", headers=None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    event = alb.build_event(method="POST", path="/fleet/webhook", raw_query=query,
                            headers=[("content-type", "application/json"), *(headers or {}).items()], body=raw,
                            target_group_arn="arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/wh/1")
    reply = alb.parse_response(webhook.lambda_handler(event, None))
    return reply.status, json.loads(reply.body or b"{}")


def payload(sim, policy_name="FileVault enabled"):
    policy_id = next(p["id"] for p in sim.state()["policies"].values() if p["name"] == policy_name)
    return sim.failing_policy_webhook(policy_id) | {}


def results(store, host):
    compliance, _ = store.get_compliance(host)
    return {r.name: r.result for r in compliance.results}


def test_good_secret_marks_the_host_failing_at_once(world):
    sim, store, host = world
    sim.set_policy(host, "FileVault enabled", "fail", critical=True)
    body = payload(sim)
    assert body["hosts"] and "policy" in body
    for auth in ({"query": f"secret={SECRET}"}, {"headers": {"authorization": f"Bearer {SECRET}"}}):
        status, reply = call(body, **auth)
        assert status == 200 and reply["marked_failing"] == 1
        assert results(store, host)["FileVault enabled"] == "fail"
    status, reply = call(body, query=f"secret={SECRET}")  # a replay changes nothing more
    assert status == 200 and results(store, host) == {"FileVault enabled": "fail", "Firewall": "pass"}


@pytest.mark.parametrize("auth", [{}, {"query": "secret=wrong"}, {"headers": {"authorization": "Bearer wrong"}},
                                  {"query": f"secret={SECRET[:-1]}"}, {"query": f"secret={SECRET}&secret={SECRET}"}])
def test_wrong_or_missing_secret_is_refused_without_side_effects(world, auth):
    sim, store, host = world
    sim.set_policy(host, "FileVault enabled", "fail", critical=True)
    before = store.get_compliance_versioned(host)
    status, reply = call(payload(sim), **auth)
    assert status == 401 and "secret" in reply["error"]
    assert store.get_compliance_versioned(host) == before


@pytest.mark.parametrize("body", [b"not json", b"[]", json.dumps({"policy": {"id": "x"}, "hosts": []}).encode(),
                                  json.dumps({"policy": {"id": 1, "name": "p"}, "hosts": [{"id": "1"}]}).encode()])
def test_malformed_payloads_get_a_400(world, body):
    status, reply = call(body, query=f"secret={SECRET}")
    assert status == 400 and reply["error"]


def test_unknown_hosts_are_counted_not_invented(world):
    sim, store, host = world
    body = payload(sim)
    body["hosts"] = [{"id": 999999, "hostname": "ghost"}]
    status, reply = call(body, query=f"secret={SECRET}")
    assert status == 200 and reply == {"marked_failing": 0, "unknown_hosts": 1}


def test_only_post(world):
    event = alb.build_event(method="GET", path="/fleet/webhook", raw_query=f"secret={SECRET}", headers=[], body=b"",
                            target_group_arn="arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/wh/1")
    assert alb.parse_response(webhook.lambda_handler(event, None)).status == 405


def test_unknown_policies_old_payloads_and_odd_ids_mark_nothing(world):
    sim, store, host = world
    body = payload(sim)
    made_up = {**body, "policy": {**body["policy"], "id": 9999, "name": "Made up", "critical": True}}
    status, reply = call(made_up, query=f"secret={SECRET}")
    assert status == 200 and reply["marked_failing"] == 0 and "Made up" not in results(store, host)
    old = {**body, "timestamp": "2020-01-01T00:00:00.000000000Z"}
    assert call(old, query=f"secret={SECRET}")[0] == 400
    bool_id = {**body, "policy": {**body["policy"], "id": True}}
    assert call(bool_id, query=f"secret={SECRET}")[0] == 400
    deep = b"[" * 100000 + b"]" * 100000
    assert call(deep, query=f"secret={SECRET}")[0] == 400
    assert results(store, host)["FileVault enabled"] == "pass"


def test_a_webhook_write_keeps_the_fleet_id(world):
    sim, store, host = world
    fleet_id = store.get_compliance_versioned(host)[3]
    assert fleet_id is not None
    sim.set_policy(host, "FileVault enabled", "fail", critical=True)
    assert call(payload(sim), query=f"secret={SECRET}")[0] == 200
    assert store.get_compliance_versioned(host)[3] == fleet_id
