"""Cold start: each Lambda handler module imported (and initialised) in a fresh interpreter, against
importing exactly the third-party modules it ends up with, alone, in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from . import common
from .common import summary

HANDLERS = {  # infra/functions.py HANDLERS: the six functions' modules
    "scep": "devicegate.scep.handler",
    "idp": "devicegate.saml.handler",
    "webhook": "devicegate.compliance.webhook",
    "sync": "devicegate.compliance.sync",
    "health": "devicegate.health",
    "crl": "devicegate.crl",
}
# The per-container initialisation the first request triggers (keys, clients, settings).
INIT = {
    "scep": "m._authority()",
    "idp": "m._idp()",
}

_CHILD = r"""
import json, sys, time
from cryptography.hazmat.primitives import serialization as _s
_n = [0]
_orig = _s.load_pem_private_key
def _count(*a, **k):
    _n[0] += 1
    return _orig(*a, **k)
_s.load_pem_private_key = _count
pre = set(sys.modules)
t0 = time.perf_counter()
import importlib
m = importlib.import_module(MODULE)
t1 = time.perf_counter()
keys_at_import = _n[0]
INIT_CODE
t2 = time.perf_counter()
def third_party(name):
    mod = sys.modules.get(name)
    f = getattr(mod, "__file__", None) or ""
    return "site-packages" in f and not name.startswith("devicegate")
after_import = [n for n in MODS_AT_IMPORT if third_party(n)]
print(json.dumps({"import_ms": (t1 - t0) * 1000, "init_ms": (t2 - t1) * 1000, "keys_at_import": keys_at_import,
                  "keys_at_init": _n[0] - keys_at_import,
                  "third_party_at_import": after_import,
                  "third_party_after_init": [n for n in sys.modules if n not in pre and third_party(n)]}))
"""

_DEPS = r"""
import json, sys, time, importlib
from cryptography.hazmat.primitives import serialization  # the handler child imports this before its clock too
names = json.loads(sys.argv[1])
t0 = time.perf_counter()
for n in names:
    try:
        importlib.import_module(n)
    except Exception:
        pass
print(json.dumps({"ms": (time.perf_counter() - t0) * 1000}))
"""


# What the Lambda Python runtime has imported before it loads a handler: its bootstrap module
# (awslambdaric, the runtime interface client of the AWS base images). A cold start in Lambda
# pays the handler's imports on top of these, so the second set of figures imports it first in
# both children, before their clocks.
RUNTIME_PRELUDE = "import awslambdaric.bootstrap  # the Lambda runtime's own imports\n"


def runtime_available(env: dict | None = None) -> str | None:
    """awslambdaric's version when it is installed (tests/requirements-bench.txt), else None."""
    out = subprocess.run([sys.executable, "-c", RUNTIME_PRELUDE + "import importlib.metadata as m; "
                          "print(m.version('awslambdaric'))"], capture_output=True, text=True, env=env, timeout=60)
    return out.stdout.strip() or None if out.returncode == 0 else None


def _child_code(module: str, init: str | None, prelude: str = "") -> str:
    # MODS_AT_IMPORT: the module list right after the import (before init)
    code = _CHILD.replace("MODULE", repr(module))
    code = code.replace("keys_at_import = _n[0]\n", "keys_at_import = _n[0]\nMODS_AT_IMPORT = [n for n in sys.modules if n not in pre]\n")
    return prelude + code.replace("INIT_CODE", init or "pass")


def _run(code: str, env: dict, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-1500:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(repeats: int, names=None, world_env: dict | None = None, prelude: str = "") -> dict:
    """``prelude``: code both children run before their clocks (RUNTIME_PRELUDE: in the Lambda runtime)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(common.LAMBDAS)
    # No PYTHONDONTWRITEBYTECODE at all: any non-empty value (even "0") stops Python writing .pyc
    # files, and then a module edited since its last .pyc is compiled from source in every child.
    results = {}
    for short, module in HANDLERS.items():
        if names is not None and short not in names:
            continue
        _run(_child_code(module, None, prelude), env)  # warm the page cache and the .pyc files
        imp, deps_imp, imp_init, deps_init, info = [], [], [], [], None
        for _ in range(repeats):
            info = _run(_child_code(module, None, prelude), env)
            imp.append(info["import_ms"])
            deps_imp.append(_run(prelude + _DEPS, env, json.dumps(info["third_party_at_import"]))["ms"])
        entry = {
            "import": summary(imp),
            "third_party_alone": summary(deps_imp),
            # no third-party module at import time (the sync imports them lazily): no baseline to compare with
            "ratio": round(common.median(imp) / common.median(deps_imp), 3) if info["third_party_at_import"] else None,
            "third_party_top_level": sorted({n.split(".")[0] for n in info["third_party_at_import"]}),
            "private_key_loads_at_import": info["keys_at_import"],
        }
        if short in INIT and world_env is not None:
            ienv = {**env, **world_env}
            for _ in range(repeats):
                info2 = _run(_child_code(module, INIT[short], prelude), ienv)
                imp_init.append(info2["import_ms"] + info2["init_ms"])
                deps_init.append(_run(prelude + _DEPS, ienv, json.dumps(info2["third_party_after_init"]))["ms"])
            entry["import_plus_init"] = summary(imp_init)
            entry["third_party_alone_after_init"] = summary(deps_init)
            entry["ratio_with_init"] = round(common.median(imp_init) / common.median(deps_init), 3)
            entry["private_key_loads_at_init"] = info2["keys_at_init"]
            entry["third_party_top_level_after_init"] = sorted({n.split(".")[0] for n in info2["third_party_after_init"]})
        results[short] = entry
    return results


def key_loads_per_request(world: common.World, pool) -> dict:
    """load_pem_private_key calls: first request after a reset (cold container) and later requests."""
    from unittest import mock

    from cryptography.hazmat.primitives import serialization

    from devicegate.saml import handler as saml_handler
    from devicegate.scep import handler as scep_handler

    from . import scep_bench, sso_bench

    counts = {}
    orig = serialization.load_pem_private_key
    calls = [0]

    def counting(*a, **k):
        calls[0] += 1
        return orig(*a, **k)

    host, cert = sso_bench.enrolled_device(world)
    with mock.patch.object(serialization, "load_pem_private_key", counting):
        scep_handler.reset()
        saml_handler.reset()
        for label, fn in (
            ("scep", lambda: scep_handler.lambda_handler(scep_bench._event(scep_bench.build_request(
                world.ca_cert, pool.next(), world.CHALLENGE, host)), None)),
            ("idp", lambda: saml_handler.lambda_handler(sso_bench.sso_event(sso_bench.redirect_query(world)[1], cert), None)),
        ):
            calls[0] = 0
            fn()
            first = calls[0]
            calls[0] = 0
            for _ in range(3):
                fn()
            counts[label] = {"first_request": first, "per_later_request": calls[0] / 3}
    return counts
