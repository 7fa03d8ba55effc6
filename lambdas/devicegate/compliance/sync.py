"""Keep DynamoDB true to Fleet: the scheduled sync (a Lambda in AWS, a loop in the local stack).

One run: read the policy catalogue, then every host with its policy results and device
emails from Fleet's paginated host listing; write, with bounded concurrency, only what changed
(or what is getting old, so unchanged hosts do not go stale); remove hosts deleted in Fleet
(confirmed one by one) and revoke their certificates. A failed fetch never replaces good data: if the catalogue or the host list
cannot be read completely, nothing is written or deleted; a host whose details fail keeps
its previous data (and ages toward the staleness rule).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

from .. import telemetry
from .decision import HostCompliance, PolicyResult
from .enforcement import Enforcement
from .fleet import FleetError

log = logging.getLogger(__name__)


@dataclass
class Catalogue:
    """Fleet's policies: global ones apply to every host, team ones to their team."""

    global_policies: list
    team_policies: dict  # team id -> list of FleetPolicy
    team_names: dict  # team id -> name

    @classmethod
    def fetch(cls, client, teams: list[int] | None = None) -> "Catalogue":
        names = dict(client.teams())
        wanted = list(names) if teams is None else [t for t in teams if t is not None]
        team_policies = {team_id: list(client.team_policies(team_id)) for team_id in wanted}
        team_policies[NO_TEAM] = _no_team_policies(client) if names else []
        return cls(global_policies=list(client.global_policies()), team_policies=team_policies, team_names=names)

    def for_team(self, team_id: int | None) -> list:
        # Hosts without a team get Fleet's "No team" policies (team id 0) besides the global ones.
        return self.global_policies + self.team_policies.get(NO_TEAM if team_id is None else team_id, [])


NO_TEAM = 0
# A sync removes at most this many hosts, or the fraction given, whichever is more: a wrong
# Fleet URL or an empty answer must not revoke every certificate.
MAX_DELETE_ABSOLUTE = 5


def _no_team_policies(client) -> list:
    try:
        return list(client.team_policies(NO_TEAM))
    except FleetError as exc:
        if exc.status in (400, 402, 404):  # a Fleet without "No team" policies
            return []
        raise


def compliance_from_detail(detail, catalogue: Catalogue, enforcement: Enforcement, now: datetime):
    """(HostCompliance, enforced ids) for one host as Fleet reports it."""
    host = detail.host
    applicable = catalogue.for_team(host.team_id)
    known = {p.id: p for p in applicable}
    results = []
    for policy in detail.policies:
        catalogued = known.get(policy.policy_id)
        results.append(
            PolicyResult(
                policy_id=str(policy.policy_id),
                name=policy.name,
                result=policy.response if policy.response in ("pass", "fail") else None,
                critical=bool(catalogued.critical if catalogued else policy.critical),
                resolution=(catalogued.resolution if catalogued else None) or policy.resolution,
            )
        )
    reported = {r.policy_id for r in results}
    # An applicable policy the host has no row for has no result yet.
    results += [PolicyResult(str(p.id), p.name, None, p.critical, p.resolution) for p in applicable if str(p.id) not in reported]
    compliance = HostCompliance(
        host_uuid=host.uuid,
        hostname=host.display_name or host.hostname,
        team_id=str(host.team_id) if host.team_id is not None else None,
        results=tuple(results),
        synced_at=now,
        device_users=tuple(dict.fromkeys(detail.emails)),
    )
    enforced = enforcement.enforced(applicable, host.team_id, catalogue.team_names.get(host.team_id))
    return compliance, enforced


def enforcement_warnings(catalogue: Catalogue, enforcement: Enforcement) -> list[str]:
    """What an operator must hear: a setting that matches nothing enforces nothing."""
    warnings = []
    every = catalogue.global_policies + [p for policies in catalogue.team_policies.values() for p in policies]
    if enforcement.mode == "listed":
        known = {str(p.id) for p in every} | {p.name for p in every}
        for scope, items in enforcement.listed.items():
            missing = sorted(items - known)
            if missing:
                warnings.append(f"DEVICEGATE_ENFORCED_POLICIES names policies Fleet does not have in {scope}: "
                                f"{', '.join(missing)}")
    scopes = [None, *catalogue.team_names]
    if every and not any(enforcement.enforced(catalogue.for_team(t), t, catalogue.team_names.get(t)) for t in scopes):
        warnings.append("no Fleet policy is enforced: every host passes. Mark policies for conditional access in "
                        "Fleet, or set DEVICEGATE_ENFORCED_POLICIES")
    for warning in warnings:
        log.warning(warning)
    return warnings


@dataclass
class SyncReport:
    started_at: str
    finished_at: str = ""
    complete: bool = False
    hosts_seen: int = 0
    hosts_failing: int = 0
    written: int = 0
    unchanged: int = 0
    deleted: int = 0
    revoked: int = 0
    vanished: int = 0  # missing from the listing but still in Fleet: kept
    raced: int = 0  # changed (by the webhook) while the sync ran: left for the next run
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    duration_ms: int = 0


def _same(a: HostCompliance, enforced_a, b: HostCompliance, enforced_b) -> bool:
    return (a.results, a.hostname, a.team_id, tuple(sorted(a.device_users)), enforced_a) == (
        b.results, b.hostname, b.team_id, tuple(sorted(b.device_users)), enforced_b)


def sync_once(
    client,
    store,
    enforcement: Enforcement,
    *,
    now: datetime | None = None,
    concurrency: int = 8,
    refresh_after: timedelta = timedelta(minutes=30),
    max_delete_fraction: float = 0.1,
) -> SyncReport:
    now = now or datetime.now(timezone.utc)
    started = time.monotonic()
    report = SyncReport(started_at=now.isoformat())
    # Read what we hold before asking Fleet: a webhook that writes after this point changes an
    # item's version, and the (older) listing below then does not overwrite it.
    stored = store.all_compliance()
    try:
        catalogue = Catalogue.fetch(client)
        # One paginated listing with policy results and device emails: a request per page,
        # not per host. If any page fails, nothing below runs.
        details = list(client.host_details())
    except FleetError as exc:
        report.errors.append(f"Fleet catalogue or host list: {exc}")
        return _finish(report, store, started)
    report.hosts_seen = len(details)
    report.warnings = enforcement_warnings(catalogue, enforcement)

    writes = []
    for info in details:
        compliance, enforced = compliance_from_detail(info, catalogue, enforcement, now)
        if any(r.result == "fail" and r.policy_id in enforced for r in compliance.results):
            report.hosts_failing += 1
        previous = stored.get(compliance.host_uuid)
        fresh = previous and previous[0].synced_at and now - previous[0].synced_at < refresh_after
        if previous and fresh and _same(compliance, enforced, previous[0], previous[1]):
            report.unchanged += 1
            continue
        writes.append((compliance, enforced, info.host.id, previous is None or previous[2] != info.host.id,
                       previous[3] if previous else 0))
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        written = list(pool.map(lambda w: _write(store, *w), writes))
    report.written = sum(1 for ok in written if ok is True)
    report.raced = sum(1 for ok in written if ok is None)
    report.errors += [f"write failed for {w[0].host_uuid}" for w, ok in zip(writes, written) if ok is False]

    # Only a complete host list may delete anything, and a host missing from it is confirmed
    # gone with Fleet first (a host deleted mid-listing can shift a page and hide another).
    in_fleet = {info.host.uuid for info in details}
    missing = sorted(set(stored) - in_fleet)
    limit = max(MAX_DELETE_ABSOLUTE, int(len(stored) * max_delete_fraction))
    if len(missing) > limit:
        report.errors.append(
            f"{len(missing)} of {len(stored)} hosts are missing from Fleet: more than the {limit} a sync removes at "
            "once (is this the right Fleet?). Nothing removed; remove them in smaller steps or raise "
            "DEVICEGATE_SYNC_MAX_DELETE_PERCENT")
        missing = []
    for uuid in missing:
        try:
            current = store.get_compliance_versioned(uuid)
            if current is not None and current[2] != stored[uuid][3]:
                report.raced += 1  # written since we read it: not ours to delete now
                continue
            if client.host_by_uuid(uuid) is not None:
                report.vanished += 1  # listed wrongly this time; kept
                continue
            store.delete_compliance(uuid)
            report.deleted += 1
            for cert in store.host_certificates(uuid):
                if cert.status == "active" and store.revoke_certificate(cert.serial, "host removed from Fleet", now):
                    report.revoked += 1
        except Exception as exc:  # noqa: BLE001 - reported, retried next run
            report.errors.append(f"removing {uuid}: {exc}")
    report.complete = not report.errors
    return _finish(report, store, started)


def _write(store, compliance, enforced, fleet_id, new_mapping, version) -> bool | None:
    """True written, None skipped (a newer write — the webhook — got there first), False failed."""
    from ..store import AlreadyRecorded

    try:
        store.put_compliance(compliance, enforced, fleet_id=fleet_id, expect_version=version)
        if new_mapping:
            store.put_fleet_host(fleet_id, compliance.host_uuid)
        return True
    except AlreadyRecorded:
        return None  # the next run brings Fleet's newer view
    except Exception:  # noqa: BLE001 - counted; the next run retries
        log.exception("writing compliance for %s failed", compliance.host_uuid)
        return False


def _finish(report: SyncReport, store, started: float) -> SyncReport:
    report.finished_at = datetime.now(timezone.utc).isoformat()
    report.duration_ms = int((time.monotonic() - started) * 1000)
    try:
        store.put_sync_report(asdict(report))
    except Exception:  # noqa: BLE001 - the metrics line below still says what happened
        log.exception("recording the sync report failed")
    telemetry.emit(_emf(report))
    return report


def _emf(report: SyncReport) -> dict:
    """The sync's record (standard output): an EMF line with the metrics of the run."""
    names = ("hosts_seen", "hosts_failing", "written", "deleted", "revoked", "duration_ms")
    metrics = {name: getattr(report, name) for name in names}
    metrics["errors"] = len(report.errors)
    record = {"event": "sync", "complete": report.complete, "error_messages": report.errors[:10], **metrics}
    return telemetry.emf(record, function="sync",
                         metrics={n: "Milliseconds" if n == "duration_ms" else "Count" for n in metrics})


def revoke_superseded(store, now: datetime, grace: timedelta) -> tuple[list[str], list[dict]]:
    """Revoke a host's older certificates once a newer one has been in use for ``grace`` and
    they have not been used since it was.

    A host renews (or re-enrolls when the profile is pushed again) before its certificate
    expires; until the newest one signs in, the older keeps working. If an older certificate
    is still used after a newer one came into use, two devices claim the host (a copied key, or
    someone who enrolled with the challenge for this UUID): nothing is revoked automatically and
    the conflict is reported. Returns (revoked serials (hex), conflicts)."""
    by_host: dict[str, list] = {}
    for cert in store.all_certificates(status="active"):
        by_host.setdefault(cert.host_uuid, []).append(cert)
    revoked, conflicts = [], []
    for host_uuid, certs in by_host.items():
        if len(certs) < 2:
            continue
        certs.sort(key=lambda c: (c.issued_at, c.serial))
        used = [c for c in certs if c.first_used_at is not None and c.first_used_at <= now - grace]
        if not used:
            continue
        newest = used[-1]
        for cert in certs:
            if cert.issued_at >= newest.issued_at or cert is newest:
                continue
            last = cert.last_used_at or cert.issued_at
            if last >= newest.first_used_at:
                conflicts.append({"host_uuid": host_uuid, "older": format(cert.serial, "x"),
                                  "newer": format(newest.serial, "x"), "older_last_used": last.isoformat(),
                                  "newer_first_used": newest.first_used_at.isoformat()})
            elif store.revoke_certificate(cert.serial, "superseded", now):
                revoked.append(format(cert.serial, "x"))
    if revoked:
        log.info("revoked %d superseded certificate(s): %s", len(revoked), ", ".join(revoked[:20]))
    for conflict in conflicts:
        telemetry.emit(telemetry.emf({"event": "certificate_conflict", "CertificateConflicts": 1, **conflict},
                                     function="sync", metrics={"CertificateConflicts": "Count"}))
    return revoked, conflicts


def lambda_handler(event, context):
    """The scheduled sync Lambda (EventBridge): one run, its report as the result. Invoked with
    ``{"host": "<UUID>"}`` (``devicegate sync now --host``) it refreshes that host only, as
    "check again" does."""
    from .. import settings
    from ..store import Store

    fleet = settings.load_fleet()
    if not fleet.enabled:
        raise settings.ConfigError("DEVICEGATE_FLEET_URL", "is not set", "the sync needs the Fleet server's URL")
    secrets = settings.Secrets()
    host_uuid = event.get("host") if isinstance(event, dict) else None
    if host_uuid is not None:
        return _refresh_one(settings.fleet_client(fleet, secrets), Store(settings.table_name()), fleet.enforcement(),
                            str(host_uuid))
    report = sync_once(
        settings.fleet_client(fleet, secrets),
        Store(settings.table_name()),
        fleet.enforcement(),
        concurrency=fleet.sync_concurrency,
        refresh_after=timedelta(seconds=fleet.max_data_age_seconds / 4),
        max_delete_fraction=fleet.max_delete_fraction,
    )
    result = asdict(report)
    try:
        result["superseded_revoked"], result["certificate_conflicts"] = revoke_superseded(
            Store(settings.table_name()), datetime.now(timezone.utc), timedelta(hours=fleet.superseded_grace_hours))
    except Exception as exc:  # noqa: BLE001 - the sync itself is done; the next run retries this
        log.exception("revoking superseded certificates failed")
        result["errors"] = [*result["errors"], f"revoking superseded certificates failed: {exc}"]
    return result


def _refresh_one(client, store, enforcement, host_uuid: str) -> dict:
    import re

    from .source import refresh_host

    if not re.fullmatch(r"[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}", host_uuid):
        raise ValueError(f"{host_uuid!r} is not a host UUID")
    refreshed = refresh_host(client, store, enforcement, host_uuid.upper())
    if refreshed is None:
        return {"complete": False, "host_uuid": host_uuid.upper(), "errors": [f"Fleet has no host {host_uuid}"],
                "results": {}, "enforced": []}
    host, enforced = refreshed
    return {"complete": True, "host_uuid": host.host_uuid, "errors": [],
            "results": {r.name: r.result for r in host.results}, "enforced": sorted(enforced)}
