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
from datetime import datetime, timedelta, timezone

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
    except RecursionError:
        return _json(400, {"error": "not a Fleet failing-policy payload: nested too deeply"})
    except (UnicodeDecodeError, ValueError) as exc:
        return _json(400, {"error": f"not a Fleet failing-policy payload: {exc}"})
    try:
        marked, unknown = mark_failing(store, client, fleet, policy, hosts)
    except StoreUnavailable as exc:
        log.error("webhook storage unavailable: %s", exc)
        return _json(503, {"error": "storage unavailable; Fleet will retry"})
    log.info(json.dumps({"event": "webhook", "policy": policy["id"], "marked": marked, "not_marked": unknown}))
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


MAX_AGE = timedelta(hours=24)  # Fleet sends at once and retries briefly; older is a replay


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _validated(payload, now: datetime | None = None) -> tuple[dict, list[dict]]:
    if not isinstance(payload, dict):
        raise ValueError("the body is not a JSON object")
    policy, hosts = payload.get("policy"), payload.get("hosts")
    if not isinstance(policy, dict) or not _is_id(policy.get("id")) or not isinstance(policy.get("name"), str):
        raise ValueError("policy.id (number) and policy.name are required")
    if not isinstance(hosts, list) or len(hosts) > MAX_HOSTS:
        raise ValueError(f"hosts must be a list of at most {MAX_HOSTS}")
    for host in hosts:
        if not isinstance(host, dict) or not _is_id(host.get("id")):
            raise ValueError("every host needs a numeric id")
    stamp = payload.get("timestamp")
    try:
        sent = datetime.fromisoformat(_trim_nanoseconds(stamp)) if isinstance(stamp, str) else None
    except ValueError:
        sent = None
    if sent is None or sent.tzinfo is None:
        raise ValueError("timestamp (RFC 3339) is required")
    if (now or datetime.now(timezone.utc)) - sent > MAX_AGE:
        raise ValueError("the payload is more than a day old (a replay?)")
    return policy, hosts


def _trim_nanoseconds(stamp: str) -> str:
    """Fleet writes nanoseconds (``...:00.417238961Z``); Python reads at most microseconds."""
    stamp = stamp.replace("Z", "+00:00")
    head, dot, rest = stamp.partition(".")
    if not dot:
        return stamp
    count = len(rest) - len(rest.lstrip("0123456789"))
    return f"{head}.{rest[:count][:6]}{rest[count:]}"


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
    """Mark a policy the host already has (as the sync recorded it) failing. A policy the sync
    has not seen is left for the sync: the payload alone cannot say whether it is enforced."""
    policy_id = str(policy["id"])
    for _attempt in range(5):  # read-modify-write; a concurrent sync or webhook makes us re-read
        current = store.get_compliance_versioned(uuid)
        if current is None:
            return False  # the next sync brings the host in
        host, enforced, version, fleet_id = current
        if not any(row.policy_id == policy_id for row in host.results):
            return False
        rows = tuple(
            PolicyResult(row.policy_id, row.name, "fail", row.critical, row.resolution) if row.policy_id == policy_id
            else row
            for row in host.results
        )
        updated = HostCompliance(host.host_uuid, host.hostname, host.team_id, rows, host.synced_at, host.device_users)
        try:
            store.put_compliance(updated, enforced, expect_version=version, fleet_id=fleet_id)
            return True
        except AlreadyRecorded:
            continue
    raise StoreUnavailable(f"could not update {uuid}: too many concurrent writes")
