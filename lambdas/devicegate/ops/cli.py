"""The operations commands' parsers and their one code path per command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..store import StoreUnavailable
from . import OpsError, hosts, revoke
from .targets import since_arg, target_from_args

COMMANDS = ("hosts", "certs", "crl", "sync", "doctor", "rotate", "audit")
OUTCOMES = ("allow", "allow_bypass", "block", "unknown", "request_refused", "device_refused", "replay",
            "no_subject", "device_mismatch", "bypass_refused")


def _where(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where (one of)")
    group.add_argument("--state-dir", type=Path, help="a running local stack (or DEVICEGATE_STATE_DIR)")
    group.add_argument("--outputs", type=Path,
                       help="a deployment: `pulumi stack output --json --show-secrets` saved to a file "
                            "(or DEVICEGATE_OUTPUTS); AWS credentials as for the aws CLI")
    group.add_argument("--region", help="AWS region (default: the outputs' region, then the AWS config)")


def register(commands) -> None:
    p = commands.add_parser("hosts", help="enrolled hosts: certificates, compliance, last sync")
    _where(p)
    p.add_argument("--host", help="only this host (UUID)")

    certs = commands.add_parser("certs", help="device certificates").add_subparsers(dest="certs_command", required=True)
    p = certs.add_parser("revoke", help="revoke a certificate (or every active one of a host): the IdP refuses it "
                                        "at once, the load balancer at the handshake once the CRL is published")
    _where(p)
    p.add_argument("serial", nargs="?", help="the serial (hex, as `devicegate hosts` prints it)")
    p.add_argument("--host", help="revoke every active certificate of this host UUID instead")
    p.add_argument("--reason", default="revoked by an administrator")
    p.add_argument("--no-publish", action="store_true", help="do not publish the CRL now")

    crl = commands.add_parser("crl", help="the certificate revocation list").add_subparsers(dest="crl_command",
                                                                                        required=True)
    p = crl.add_parser("publish", help="build the CRL from the table; AWS: to S3 and the ALB trust store")
    _where(p)

    sync = commands.add_parser("sync", help="compliance from Fleet").add_subparsers(dest="sync_command", required=True)
    p = sync.add_parser("now", help="one sync now (the sync function's code); --host refreshes one host")
    _where(p)
    p.add_argument("--host", help="refresh only this host (UUID), as \"check again\" does")

    p = commands.add_parser("doctor", help="check DNS, TLS, mTLS, metadata, SCEP, trust store, CRL, clock, sync, Okta")
    _where(p)
    p.add_argument("--cert", type=Path, help="a device certificate (PEM) to try the device host with")
    p.add_argument("--key", type=Path, help="its key")

    rotate = commands.add_parser("rotate", help="key rotation").add_subparsers(dest="rotate_command", required=True)
    p = rotate.add_parser("idp-key", help="two-key rollover of the SAML signing key through Okta")
    _where(p)
    p.add_argument("--step", choices=("all", "status", "stage", "activate", "finish"), default="all",
                   help="all (default) = stage then activate; finish drops the old certificate from the metadata")
    p.add_argument("--wait", type=float, help="seconds to wait for the IdP to sign with the new key")

    p = commands.add_parser("audit", help="recent decisions (one record per login decision)")
    _where(p)
    p.add_argument("--since", default="24h", help="30m, 2h, 7d, or an ISO-8601 time (default 24h)")
    p.add_argument("--host", help="only this host (UUID)")
    p.add_argument("--user", help="only this Okta user")
    p.add_argument("--outcome", choices=OUTCOMES, help="only this outcome")
    p.add_argument("--limit", type=int, default=50, help="the most recent N (default 50; 0 = all)")


def _progress(args, message: str) -> None:
    if not args.json:
        print(f"... {message}", file=sys.stderr, flush=True)


def dispatch(args) -> int:
    try:
        target = target_from_args(args)
        data, text, code = _run(args, target)
    except OpsError as exc:
        print(f"devicegate {args.command}: {exc}", file=sys.stderr)
        return 1
    except StoreUnavailable as exc:
        print(f"devicegate {args.command}: the table cannot be reached ({exc}); nothing was changed by this "
              "failure: retry when it answers", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - botocore, network: one clear line, not a traceback
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, (BotoCoreError, ClientError, OSError)):
            print(f"devicegate {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        raise
    print(json.dumps(data, indent=2, default=str) if args.json else text)
    return code


def _run(args, target):
    command = args.command
    if command == "hosts":
        data = hosts(target.store(), host_uuid=args.host)
        if args.host and not data["hosts"]:
            raise OpsError(f"devicegate knows no host {args.host} (no certificate, no compliance data)")
        return data, _hosts_text(data), 0
    if command == "certs":
        _progress(args, "marking the certificate(s) revoked in the table")
        serials = revoke(target.store(), serial=args.serial, host_uuid=args.host, reason=args.reason)
        data = {"revoked": serials, "crl": None}
        text = f"revoked {len(serials)} certificate(s): {', '.join(serials) or 'none (already revoked)'}"
        if not args.no_publish:
            _progress(args, "publishing the CRL")
            data["crl"] = target.publish_crl()
            text += f"\n  CRL published ({data['crl']['revoked']} revoked): {', '.join(data['crl']['published_to'])}"
        else:
            text += "\n  CRL not published: the load balancer still accepts it until `devicegate crl publish`"
        return data, text, 0
    if command == "crl":
        _progress(args, "building and publishing the CRL")
        data = target.publish_crl()
        return data, f"CRL published with {data['revoked']} revoked serial(s): {', '.join(data['published_to'])}", 0
    if command == "sync":
        _progress(args, f"refreshing host {args.host} from Fleet" if args.host else "syncing from Fleet")
        data = target.sync(args.host)
        return data, sync_text(data, args.host), 0 if data["complete"] else 4
    if command == "doctor":
        from . import doctor

        if (args.cert is None) != (args.key is None):
            raise OpsError("--cert and --key go together")
        checks = doctor.run(target, cert=args.cert, key=args.key)
        data = {"checks": [{"check": n, "result": r, "detail": d} for n, r, d in checks],
                "ok": all(r != "fail" for _, r, _ in checks)}
        width = max(len(n) for n, _, _ in checks)
        text = "\n".join(f"{'✓' if r == 'ok' else '!' if r == 'warn' else '✗'} {n:<{width}}  {d}" for n, r, d in checks)
        warnings = sum(r == "warn" for _, r, _ in checks)
        text += "\n" + ("doctor: something is wrong (✗ above)" if not data["ok"] else
                        f"doctor: no failure, {warnings} warning(s) (! above)" if warnings else "doctor: all good")
        return data, text, 0 if data["ok"] else 5
    if command == "rotate":
        from . import rotate

        steps = {"status": lambda: rotate.status(target), "stage": lambda: rotate.stage(target),
                 "activate": lambda: rotate.activate(target, wait_seconds=args.wait,
                                                     progress=lambda m: _progress(args, m)),
                 "finish": lambda: rotate.finish(target),
                 "all": lambda: rotate.rotate(target, wait_seconds=args.wait, progress=lambda m: _progress(args, m))}
        data = steps[args.step]()
        return data, "\n".join(f"{k}: {'-' if v is None else v}" for k, v in data.items()), 0
    if command == "audit":
        try:
            since = since_arg(args.since)
        except (ValueError, OverflowError):
            raise OpsError(f"--since {args.since!r}: use 30m, 2h, 7d or an ISO-8601 time") from None
        records = target.audit_records(since)
        if args.host:
            records = [r for r in records if (r.get("host_uuid") or "").upper() == args.host.upper()]
        if args.user:
            records = [r for r in records if (r.get("user") or "").lower() == args.user.lower()]
        if args.outcome:
            records = [r for r in records if r.get("Outcome") == args.outcome]
        if args.limit:
            records = records[-args.limit:]
        lines = [f"{r['time']}  {r['Outcome']:<15} {r.get('status')}  {r.get('user') or '-'}  "
                 f"host {r.get('host_uuid') or '-'}  cert {r.get('serial') or '-'}  "
                 + "; ".join(x["message"] for x in r.get("reasons", []))[:300]
                 for r in records]
        return {"records": records}, "\n".join(lines) or "no decisions in that period", 0
    raise OpsError(f"unknown command {command}")


def sync_text(data: dict, host: str | None) -> str:
    if host:
        return f"host {data['host_uuid']} refreshed from Fleet: " + ", ".join(
            f"{k}: {v or 'no result'}" for k, v in data["results"].items())
    text = (f"sync {'complete' if data['complete'] else 'INCOMPLETE'} in {data['duration_ms']} ms: "
            f"{data['hosts_seen']} hosts, {data['hosts_failing']} failing, {data['written']} written, "
            f"{data['unchanged']} unchanged, {data['deleted']} removed, {data['revoked']} revoked, "
            f"{len(data.get('superseded_revoked', []))} superseded revoked")
    return text + "".join(f"\n  error: {e}" for e in data["errors"])


def _hosts_text(data: dict) -> str:
    lines = []
    for host in data["hosts"]:
        c = host["compliance"]
        verdict = "no compliance data" if c is None else (
            "passing" if c["verdict"] == "allow" else f"FAILING {', '.join(c['failing'])}")
        lines.append(f"{host['host_uuid']}  {host['hostname'] or '-'}  {verdict}"
                     + (f"  (synced {c['synced_at']})" if c else ""))
        for cert in host["certificates"]:
            lines.append(f"    cert {cert['serial']}  {cert['status']:<8} issued {cert['issued_at'][:19]}  "
                         f"until {cert['not_after'][:10]}  first used {(cert['first_used_at'] or 'never')[:19]}")
    report = data["last_sync"]
    if report:
        lines.append(f"last sync: {report.get('finished_at')} ({'complete' if report.get('complete') else 'INCOMPLETE'}, "
                     f"{report.get('hosts_seen')} hosts)")
    else:
        lines.append("last sync: never")
    return "\n".join(lines) or "no hosts"
