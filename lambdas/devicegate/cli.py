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

    local = commands.add_parser("local", help="the local stack").add_subparsers(dest="local_command", required=True)
    up = local.add_parser("up", help="run the local stack in the foreground until Ctrl-C")
    up.add_argument("--state-dir", type=Path, required=True, help="keys, CA, journal and endpoints.json live here")
    up.add_argument("--public-port", type=_port, default=0, help="public TLS listener port (default: a free one)")
    up.add_argument("--device-port", type=_port, default=0, help="device mTLS listener port (default: a free one)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if args.command == "local" and args.local_command == "up":
        from .local import stack

        return stack.run(args.state_dir, public_port=args.public_port, device_port=args.device_port)
    return 2


if __name__ == "__main__":
    sys.exit(main())
