"""``/fleet/webhook``: Fleet's failing-policy automation, so a failing host is blocked at once.

Fleet posts ``{"timestamp", "policy": {...}, "hosts": [{"id", "hostname", ...}]}`` for hosts
that newly fail a policy (it never reports passing ones: those come back by sync or "check
again"). Fleet cannot add headers to this webhook, so the shared secret travels either as
``Authorization: Bearer <secret>`` or in the URL (``?secret=...``); it is compared in
constant time and nothing is read or written before it matches. Marking a host failing is
idempotent, so a replayed payload is harmless.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading

from .. import alb, settings
from ..store import AlreadyRecorded, Store, StoreUnavailable
from .decision import HostCompliance, PolicyResult

log = logging.getLogger(__name__)

MAX_HOSTS = 10_000
_lock = threading.Lock()
_state: dict = {}


def _context():
    with _lock:
        if "ctx" not in _state:
            fleet = settings.load_fleet()
            if fleet.webhook_secret_id is None:
                raise settings.ConfigError("DEVICEGATE_FLEET_WEBHOOK_SECRET", "is not set",
                                           "set it to the Secrets Manager id of the webhook secret")
            secrets = settings.Secrets()
            _state["ctx"] = (fleet, secrets, Store(settings.table_name()), settings.fleet_client(fleet, secrets))
        return _state["ctx"]


def reset() -> None:
    with _lock:
        _state.clear()
    settings.load_fleet.cache_clear()


def lambda_handler(event, context):
    return alb.serve(event, handle)


def _json(status: int, body: dict) -> alb.Response:
    return alb.Response(status, json.dumps(body) + "\n", content_type="application/json")


def handle(request: alb.Request) -> alb.Response:
    if request.method != "POST":
        return _json(405, {"error": "POST the Fleet policy webhook here"})
    try:
        fleet, secrets, store, client = _context()
        expected = secrets.get(fleet.webhook_secret_id)
    except settings.ConfigError as exc:
        log.error("webhook configuration error: %s", exc)
        return _json(503, {"error": "the webhook receiver is not configured"})
    except Exception:
        log.exception("webhook start-up failed")
        return _json(503, {"error": "the webhook receiver cannot read its secret; retry later"})
    if not _authenticated(request, expected):
        return _json(401, {"error": "missing or wrong webhook secret"})
    try:
        payload = json.loads(request.body.decode("utf-8"))
        policy, hosts = _validated(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        return _json(400, {"error": f"not a Fleet failing-policy payload: {exc}"})
    try:
        marked, unknown = mark_failing(store, client, fleet, policy, hosts)
    except StoreUnavailable as exc:
        log.error("webhook storage unavailable: %s", exc)
        return _json(503, {"error": "storage unavailable; Fleet will retry"})
    log.info(json.dumps({"event": "webhook", "policy": policy["id"], "marked": marked, "unknown": unknown}))
    return _json(200, {"marked_failing": marked, "unknown_hosts": unknown})


def _authenticated(request: alb.Request, expected: str) -> bool:
    given = None
    authorization = request.header("authorization") or ""
    if authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    elif len(request.query_values("secret")) == 1:
        given = request.query_value("secret")
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _validated(payload) -> tuple[dict, list[dict]]:
    if not isinstance(payload, dict):
        raise ValueError("the body is not a JSON object")
    policy, hosts = payload.get("policy"), payload.get("hosts")
    if not isinstance(policy, dict) or not isinstance(policy.get("id"), int) or not isinstance(policy.get("name"), str):
        raise ValueError("policy.id (number) and policy.name are required")
    if not isinstance(hosts, list) or len(hosts) > MAX_HOSTS:
        raise ValueError(f"hosts must be a list of at most {MAX_HOSTS}")
    for host in hosts:
        if not isinstance(host, dict) or not isinstance(host.get("id"), int):
            raise ValueError("every host needs a numeric id")
    return policy, hosts


def mark_failing(store, client, fleet, policy: dict, hosts: list[dict]) -> tuple[int, int]:
    """Mark each listed host failing ``policy``; returns (marked, unknown)."""
    marked = unknown = 0
    for host in hosts:
        uuid = store.fleet_host_uuid(host["id"])
        if uuid is None and client is not None:
            try:
                uuid = client.host(host["id"]).host.uuid
                store.put_fleet_host(host["id"], uuid)
            except Exception:  # noqa: BLE001 - unknown to us and to Fleet: nothing to mark
                uuid = None
        if uuid is None:
            unknown += 1
            continue
        if _mark_one(store, fleet, uuid, policy):
            marked += 1
        else:
            unknown += 1
    return marked, unknown


def _mark_one(store, fleet, uuid: str, policy: dict) -> bool:
    policy_id = str(policy["id"])
    for _attempt in range(5):  # read-modify-write; a concurrent sync or webhook makes us re-read
        current = store.get_compliance_versioned(uuid)
        if current is None:
            return False  # the next sync brings the host in
        host, enforced, version = current
        rows, found = [], False
        for row in host.results:
            if row.policy_id == policy_id:
                row = PolicyResult(row.policy_id, row.name, "fail", row.critical, row.resolution)
                found = True
            rows.append(row)
        if not found:
            rows.append(PolicyResult(policy_id, policy["name"], "fail", bool(policy.get("critical")),
                                     policy.get("resolution")))
            if _newly_enforced(fleet, policy):
                enforced = enforced | {policy_id}
        updated = HostCompliance(host.host_uuid, host.hostname, host.team_id, tuple(rows), host.synced_at,
                                 host.device_users)
        try:
            store.put_compliance(updated, enforced, expect_version=version)
            return True
        except AlreadyRecorded:
            continue
    raise StoreUnavailable(f"could not update {uuid}: too many concurrent writes")


def _newly_enforced(fleet, policy: dict) -> bool:
    """Whether a policy the host had no row for is enforced (the payload carries what we need)."""
    from .fleet import FleetPolicy

    candidate = FleetPolicy(
        id=policy["id"], name=policy["name"], critical=bool(policy.get("critical")),
        resolution=policy.get("resolution"), team_id=policy.get("team_id"),
        conditional_access=policy.get("conditional_access_enabled"),
    )
    return str(policy["id"]) in fleet.enforcement().enforced([candidate], policy.get("team_id"))
