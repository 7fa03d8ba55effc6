"""Operations: the ``devicegate`` commands that run a deployment or a local stack.

``hosts``, ``certs revoke``, ``crl publish``, ``sync now``, ``profile``, ``doctor``,
``rotate idp-key``, ``audit`` — each against ``--state-dir DIR`` (local) or ``--outputs FILE``
(AWS); see targets.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from .targets import OpsError


def parse_serial(text: str) -> int:
    """A serial as ALB and ``hosts`` print it (hex, colons allowed)."""
    try:
        value = int(text.replace(":", "").strip(), 16)
    except ValueError:
        raise OpsError(f"{text!r} is not a hex serial (as `devicegate hosts` prints it)") from None
    if value <= 0:
        raise OpsError(f"{text!r} is not a certificate serial")
    return value


def revoke(store, *, serial: str | None = None, host_uuid: str | None = None,
           reason: str = "revoked by an administrator", now: datetime | None = None) -> list[str]:
    """Mark one certificate, or every active one of a host, revoked (effective at once in the
    IdP). Returns the serials (hex) this call revoked."""
    now = now or datetime.now(timezone.utc)
    if serial is None and host_uuid is None:
        raise OpsError("say which: a serial (as `devicegate hosts` prints it) or --host UUID")
    if serial is not None and host_uuid is not None:
        raise OpsError("give a serial or --host, not both")
    if serial is not None:
        serials = [parse_serial(serial)]
        if store.get_certificate(serials[0]) is None:
            raise OpsError(f"no certificate with serial {serial}")
    else:
        serials = [c.serial for c in store.host_certificates(host_uuid.upper()) if c.status == "active"]
        if not serials and not store.host_certificates(host_uuid.upper()):
            raise OpsError(f"host {host_uuid} has no certificates")
    return [format(s, "x") for s in serials if store.revoke_certificate(s, reason, now)]


def hosts(store, *, host_uuid: str | None = None, now: datetime | None = None) -> dict:
    """Every host devicegate knows: its certificates, its compliance, and the last sync."""
    from ..compliance import decision

    now = now or datetime.now(timezone.utc)
    certs = store.host_certificates(host_uuid.upper()) if host_uuid else store.all_certificates()
    compliance = store.all_compliance()
    uuids = {c.host_uuid for c in certs} | (set(compliance) if not host_uuid else
                                            ({host_uuid.upper()} & set(compliance)))
    out = []
    for uuid in sorted(uuids):
        entry = {"host_uuid": uuid, "hostname": None, "certificates": [], "compliance": None}
        for cert in sorted((c for c in certs if c.host_uuid == uuid), key=lambda c: c.issued_at):
            entry["certificates"].append({
                "serial": format(cert.serial, "x"),
                "status": "expired" if cert.status == "active" and cert.not_after <= now else cert.status,
                "issued_at": cert.issued_at.isoformat(),
                "not_after": cert.not_after.isoformat(),
                "first_used_at": cert.first_used_at.isoformat() if cert.first_used_at else None,
                "last_used_at": cert.last_used_at.isoformat() if cert.last_used_at else None,
                "revocation_reason": cert.revocation_reason,
            })
        if uuid in compliance:
            host, enforced, _fleet_id, _version = compliance[uuid]
            entry["hostname"] = host.hostname
            # the policies alone: staleness depends on the IdP's settings, so synced_at is shown instead
            verdict = decision.decide(host, enforced=enforced, now=now, rules=decision.Rules(max_age=timedelta(days=36500)))
            entry["compliance"] = {
                "synced_at": host.synced_at.isoformat() if host.synced_at else None,
                "verdict": verdict.outcome,
                "failing": [p.name for p in verdict.failing],
                "enforced_policies": len(enforced),
                "device_users": list(host.device_users),
            }
        out.append(entry)
    return {"hosts": out, "last_sync": store.sync_report()}
