"""The ``devicegate`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is 0..65535 (0 = pick a free one)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="devicegate", description="Device conditional access for Okta, backed by Fleet.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(dest="command", required=True)

    profile = commands.add_parser("profile", help="the user-scope .mobileconfig to push with Fleet")
    profile.add_argument("--state-dir", type=Path, help="take everything from this running local stack")
    profile.add_argument("--outputs", type=Path, help="take it from a deployment's `pulumi stack output --json "
                                                     "--show-secrets` saved to a file")
    profile.add_argument("--scep-url", help="https://<domain>/scep (a deployment: see the stack outputs)")
    profile.add_argument("--device-url", help="https://okta.<domain>")
    profile.add_argument("--ca-file", type=Path, help="the SCEP CA certificate (PEM)")
    profile.add_argument("--challenge-file", type=Path, help="file holding the SCEP challenge")
    profile.add_argument("--organization", default="devicegate")
    profile.add_argument("--out", type=Path, help="write the profile here (default: standard output)")

    demo = commands.add_parser("demo", help="the whole story on a running local stack, narrated and checked")
    demo.add_argument("--state-dir", type=Path, required=True, help="the running local stack (./dev up)")
    demo.add_argument("--scep-client", choices=("auto", "certmonger", "builtin"), default="auto",
                      help="who enrolls: certmonger, devicegate's own SCEP client, or auto (default): "
                           "certmonger when installed and usable, else the built-in one")

    from .ops import cli as ops_cli

    ops_cli.register(commands)  # hosts, certs, crl, sync, doctor, rotate, audit: a local stack or AWS

    local = commands.add_parser("local", help="the local stack").add_subparsers(dest="local_command", required=True)
    up = local.add_parser("up", help="run the local stack in the foreground until Ctrl-C")
    up.add_argument("--state-dir", type=Path, required=True, help="keys, CA, journal and endpoints.json live here")
    up.add_argument("--public-port", type=_port, default=0, help="public TLS listener port (default: a free one)")
    up.add_argument("--device-port", type=_port, default=0, help="device mTLS listener port (default: a free one)")
    up.add_argument("--fleet-url", help="a real Fleet server (https://...) instead of the simulated one")
    up.add_argument("--fleet-token-file", type=Path, help="file holding that Fleet's API token")
    up.add_argument("--fleet-ca-bundle", type=Path, help="CA bundle for a Fleet with a private TLS CA")
    up.add_argument("--sync-interval", type=float, default=60.0, help="seconds between syncs (default 60)")
    up.add_argument("--lambda-reports", action="store_true",
                    help="log a Lambda-style REPORT line (duration and CPU of the handler) per invocation")
    up.add_argument("--aws-fault-proxy", action="store_true",
                    help="route the handlers' AWS calls through a fault-injecting proxy (failure tests; "
                         "switch it at endpoints.json's aws_fault_proxy.admin_url)")

    origin = local.add_parser("origin", help="plain-HTTP origin for the device site behind a self-hosted mTLS "
                                             "proxy (deploy/proxies/README.md)")
    origin.add_argument("--state-dir", type=Path, required=True, help="the running local stack's")
    origin.add_argument("--device-url", required=True, help="https://HOST[:PORT] browsers reach the proxy at")
    origin.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (default 127.0.0.1:8080)")
    origin.add_argument("--allow-non-loopback", action="store_true", help="listen on a non-loopback address")
    origin.add_argument("--serial-header", required=True, help="the proxy's serial header (X-SSL-Client-Serial)")
    origin.add_argument("--serial-format", choices=("hex", "decimal"), required=True, help="nginx: hex; Caddy: decimal")
    origin.add_argument("--leaf-header", help="the proxy's certificate header (URL-encoded PEM or base64 DER)")

    enroll = local.add_parser("enroll", help="enroll a host with devicegate's own SCEP client (as macOS does)")
    enroll.add_argument("--state-dir", type=Path, required=True)
    enroll.add_argument("--out", type=Path, required=True, help="writes device.pem and device.key here")
    enroll.add_argument("--uuid", help="the host's hardware UUID (default: a new one)")

    login = local.add_parser("login", help="one login through local Okta and the device host, as a browser")
    login.add_argument("--state-dir", type=Path, required=True)
    login.add_argument("--cert", type=Path, help="device certificate (PEM); without it the handshake is refused")
    login.add_argument("--key", type=Path, help="its private key (PEM)")
    login.add_argument("--user", default="alice@example.com", help="the Okta user (NameID); '' for no Subject")
    login.add_argument("--binding", choices=("redirect", "post"), default="redirect")

    sync = local.add_parser("sync", help="one sync from Fleet now; returns when it is written")
    sync.add_argument("--state-dir", type=Path, required=True)
    sync.add_argument("--host", help="refresh only this host (UUID), as \"check again\" does")

    certs = local.add_parser("certs", help="device certificates").add_subparsers(dest="certs_command", required=True)
    revoke = certs.add_parser("revoke", help="revoke a certificate (or a host's): the IdP refuses it at once, "
                                             "and the device listener at the handshake once the CRL is published")
    revoke.add_argument("--state-dir", type=Path, required=True)
    revoke.add_argument("serial", nargs="?", help="the certificate's serial (hex)")
    revoke.add_argument("--host", help="revoke every active certificate of this host UUID instead")
    revoke.add_argument("--reason", default="revoked by an administrator")
    revoke.add_argument("--no-publish", action="store_true", help="do not republish the CRL now")
    crl = local.add_parser("crl", help="the CRL").add_subparsers(dest="crl_command", required=True)
    publish = crl.add_parser("publish", help="rebuild the CRL from the revoked certificates and load it")
    publish.add_argument("--state-dir", type=Path, required=True)

    fleet = local.add_parser("fleet", help="the simulated Fleet").add_subparsers(dest="fleet_command", required=True)
    add = fleet.add_parser("add-host", help="add a host")
    add.add_argument("--state-dir", type=Path, required=True)
    add.add_argument("--uuid", required=True, help="hardware UUID")
    add.add_argument("--hostname")
    add.add_argument("--email", help="a device user's email (device mapping)")
    add.add_argument("--team", help="team name (created when new)")
    setp = fleet.add_parser("set-policy", help="set a host's result for a policy (created, enforced, when new)")
    setp.add_argument("--state-dir", type=Path, required=True)
    setp.add_argument("--host", required=True, help="the host's UUID")
    setp.add_argument("--policy", required=True, help="policy name, e.g. 'FileVault enabled'")
    setp.add_argument("--result", choices=("pass", "fail", "none"), required=True)
    setp.add_argument("--critical", action=argparse.BooleanOptionalAction, default=None,
                      help="mark the policy critical (--no-critical: not); default: leave it as it is")
    setp.add_argument("--resolution", help="what the user should do (shown on the block page)")
    remove = fleet.add_parser("remove-host", help="delete a host (the next sync revokes its certificates)")
    remove.add_argument("--state-dir", type=Path, required=True)
    remove.add_argument("--uuid", required=True)
    listing = fleet.add_parser("list", help="hosts, policies and results")
    listing.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _profile(args) -> int:
    import json

    from .profile import ProfileError, build_profile, profile_summary

    try:
        if args.outputs is not None:
            from .ops.targets import AwsTarget

            data = AwsTarget(args.outputs).profile()
        elif args.state_dir is not None:
            from .local import tools

            e = tools.endpoints(args.state_dir)
            inputs = {"scep_url": e["scep_url"], "challenge": e["scep_challenge"], "ca_cert_pem": e["scep_ca"],
                      "device_url": e["device_url"]}
        else:
            missing = [f"--{n.replace('_', '-')}" for n in ("scep_url", "device_url", "ca_file", "challenge_file")
                       if getattr(args, n) is None]
            if missing:
                print(f"devicegate profile: give --state-dir, --outputs, or all of {', '.join(missing)}", file=sys.stderr)
                return 2
            inputs = {"scep_url": args.scep_url, "device_url": args.device_url,
                      "ca_cert_pem": args.ca_file.read_text(), "challenge": args.challenge_file.read_text().strip()}
        if args.outputs is None:
            data = build_profile(organization=args.organization, **inputs)
    except (ProfileError, OSError) as exc:
        print(f"devicegate profile: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - e.g. a stack that is not running
        print(f"devicegate profile: {exc}", file=sys.stderr)
        return 1
    if args.out is not None:
        from .local.pki import write_private

        write_private(args.out, data.decode("utf-8"))  # it holds the challenge: 0600
        print(json.dumps(profile_summary(data), indent=2) if args.json else f"wrote {args.out}")
    else:
        sys.stdout.write(data.decode("utf-8"))
    return 0


def _local_tool(args) -> int:
    import json

    from .local import tools

    try:
        if args.local_command == "enroll":
            result = tools.enroll(args.state_dir, args.out, args.uuid)
            data = {"host_uuid": result.host_uuid, "serial": result.serial, "cert": str(result.cert_path),
                    "key": str(result.key_path)}
            text = (f"enrolled host {result.host_uuid}: certificate serial {result.serial}\n"
                    f"  certificate {result.cert_path}\n  key         {result.key_path}")
        elif args.local_command == "login":
            if (args.cert is None) != (args.key is None):
                raise tools.ToolError("--cert and --key go together")
            result = tools.login(args.state_dir, args.cert, args.key, args.user or None, args.binding)
            data = {"outcome": result.outcome, "status": result.status, "details": dict(result.summary),
                    "page": result.page_text}
            lines = [f"login {result.outcome.upper()} (HTTP {result.status})"]
            lines += [f"  {k}: {v}" for k, v in result.summary]
            if result.outcome != "allowed" and result.page_text:
                lines.append(f"  page: {result.page_text[:600]}")
            text = "\n".join(lines)
        elif args.local_command == "sync":
            from .ops.cli import sync_text

            data = tools.sync_now(args.state_dir, args.host)
            text = sync_text(data, args.host)
        elif args.local_command == "certs":
            data = tools.revoke(args.state_dir, serial=args.serial, host_uuid=args.host, reason=args.reason,
                                publish=not args.no_publish)
            text = (f"revoked {len(data['revoked'])} certificate(s): {', '.join(data['revoked']) or 'none'}"
                    + (f"\n  CRL published: {data['crl']['path']}" if data["crl"] else "\n  CRL not published"))
        elif args.local_command == "crl":
            data = tools.publish_crl(args.state_dir)
            text = f"CRL published with {len(data['revoked_serials'])} revoked serial(s): {data['path']}"
        else:
            command = args.fleet_command
            if command == "add-host":
                data = tools.fleet_add_host(args.state_dir, args.uuid, args.hostname, args.email, args.team)
                host = data.get("host", {})
                text = (f"host {host.get('uuid')} added to the simulated Fleet (id {host.get('id')}, "
                        f"hostname {host.get('hostname')!r}" + (f", team {host['team_name']!r}" if host.get("team_name") else "")
                        + ")")
            elif command == "set-policy":
                data = tools.fleet_set_policy(args.state_dir, args.host, args.policy, args.result,
                                              critical=args.critical, resolution=args.resolution)
                policy = data.get("policy", {})
                text = (f"host {args.host.upper()}: policy {policy.get('name')!r} (id {policy.get('id')}"
                        + (", critical" if policy.get("critical") else "") + f") is now {args.result}")
            elif command == "remove-host":
                data = tools.fleet_remove_host(args.state_dir, args.uuid)
                text = f"host {args.uuid.upper()} removed (the next sync revokes its certificates)"
            else:
                data = tools.fleet_state(args.state_dir)
                text = _fleet_listing(data)
    except tools.ToolError as exc:
        print(f"devicegate: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2, default=str) if args.json else text)
    if args.local_command == "login":
        return 0 if result.outcome == "allowed" else 3
    if args.local_command == "sync":
        return 0 if data["complete"] else 4
    return 0


def _fleet_listing(state: dict) -> str:
    """The simulated Fleet's hosts, each with its policy results, and its policies."""
    teams = {str(t["id"]): t["name"] for t in state.get("teams", {}).values()}
    policies = state.get("policies", {})
    lines = [f"hosts ({len(state.get('hosts', {}))}):"]
    for host_id, host in sorted(state.get("hosts", {}).items(), key=lambda item: int(item[0])):
        team = teams.get(str(host.get("team_id")))
        lines.append(f"  {host.get('uuid')}  {host.get('hostname')}" + (f"  team {team}" if team else ""))
        for policy_id, result in sorted(state.get("results", {}).get(host_id, {}).items(), key=lambda item: int(item[0])):
            lines.append(f"      {result:4s}  {policies.get(policy_id, {}).get('name', 'policy ' + policy_id)}")
    lines.append(f"policies ({len(policies)}):")
    for policy_id, policy in sorted(policies.items(), key=lambda item: int(item[0])):
        scope = teams.get(str(policy.get("team_id"))) or "global"
        lines.append(f"  {policy_id:>3}  {policy.get('name')}  ({scope}" + (", critical" if policy.get("critical") else "")
                     + ")")
    return "\n".join(lines)


def ops_commands() -> tuple[str, ...]:
    from .ops.cli import COMMANDS

    return COMMANDS


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `devicegate ... | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --json may come anywhere on the line, not only before the subcommand
    wants_json = "--json" in argv
    argv = [a for a in argv if a != "--json"]
    args = build_parser().parse_args(argv)
    args.json = wants_json
    running_stack = args.command == "local" and args.local_command == "up"
    logging.basicConfig(
        # the stack logs what it serves; the one-shot commands only what went wrong
        level=logging.DEBUG if args.verbose else (logging.INFO if running_stack else logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if args.command == "local" and args.local_command == "up":
        from .local import gateway, stack

        gateway.report_log.setLevel(logging.INFO if args.lambda_reports or args.verbose else logging.WARNING)

        return stack.run(args.state_dir, public_port=args.public_port, device_port=args.device_port,
                         fleet_url=args.fleet_url, fleet_token_file=args.fleet_token_file,
                         sync_interval=args.sync_interval, fleet_ca_bundle=args.fleet_ca_bundle,
                         aws_fault_proxy=args.aws_fault_proxy)
    if args.command == "local" and args.local_command == "origin":
        from .local import origin, tools

        try:
            config = origin.parse_config(listen=args.listen, device_url=args.device_url, serial_header=args.serial_header,
                                         serial_format=args.serial_format, leaf_header=args.leaf_header,
                                         allow_non_loopback=args.allow_non_loopback)
            return origin.run(args.state_dir, config)
        except (origin.OriginError, tools.ToolError) as exc:
            print(f"devicegate local origin: {exc}", file=sys.stderr)
            return 2
    if args.command == "local":
        return _local_tool(args)
    if args.command in ops_commands():
        from .ops import cli as ops_cli

        return ops_cli.dispatch(args)
    if args.command == "profile":
        return _profile(args)
    if args.command == "demo":
        from .local import demo, tools

        try:
            return demo.run(args.state_dir, scep_client=args.scep_client)
        except tools.ToolError as exc:
            print(f"devicegate demo: {exc}", file=sys.stderr)
            return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
