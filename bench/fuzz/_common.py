"""Shared set-up for the atheris harnesses: import paths, instrumentation, a moto-backed world,
seed corpus files, and the libFuzzer entry.

Usage of every harness (see tests/fuzz/README.md):
    .venv/bin/python bench/fuzz/fuzz_scep.py CORPUS_DIR [libFuzzer flags, e.g. -max_total_time=3600]
CORPUS_DIR is created and filled with valid seed inputs when it has none; crashes are written
where -artifact_prefix points (default: the current directory).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import atheris  # noqa: E402

# Instrument devicegate's parsing and handler modules before anything imports them.
with atheris.instrument_imports(include=["devicegate"]):
    import devicegate.alb  # noqa: F401
    import devicegate.compliance.fleet  # noqa: F401
    import devicegate.compliance.sync  # noqa: F401
    import devicegate.compliance.webhook  # noqa: F401
    import devicegate.saml.authn_request  # noqa: F401
    import devicegate.saml.handler  # noqa: F401
    import devicegate.saml.xmlsafe  # noqa: F401
    import devicegate.scep.authority  # noqa: F401
    import devicegate.scep.handler  # noqa: F401
    import devicegate.scep.protocol  # noqa: F401

from devicegate.local import dynamo, pki  # noqa: E402


def start_world():
    """A World on a fresh moto server (stopped when the process exits)."""
    import atexit
    import logging

    from tests.fuzz.targets import Env, World

    logging.getLogger("devicegate").setLevel(logging.CRITICAL + 1)  # the harness checks; logs are noise
    os.environ.update(dynamo.LOCAL_CREDENTIALS)
    server = dynamo.MotoServer().start()
    atexit.register(server.stop)
    key = pki.new_key()
    world = World(server, (pki.self_signed_ca("fuzz SCEP CA", key, scep=True), key), Env())
    logging.getLogger("devicegate").setLevel(logging.ERROR)  # ERRORs are what the checks look for
    return world


def corpus_dir(argv: list[str]) -> Path | None:
    for arg in argv[1:]:
        if not arg.startswith("-"):
            return Path(arg)
    return None


def write_seeds(argv: list[str], seeds) -> None:
    directory = corpus_dir(argv)
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        return
    for seed in seeds:
        (directory / f"seed-{hashlib.sha256(seed).hexdigest()[:16]}").write_bytes(seed)


def run(test_one_input, argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
