"""The Lambda bundle's size, zipped and unpacked, built by infra.bundle from the cached wheels; and
the cold start it gives under Python 3.12 with and without its .pyc files."""

from __future__ import annotations

import os
import platform as host_platform
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from . import common

CACHE = common.REPO / "build" / "wheel-cache"


def _bundle_module():
    if str(common.REPO) not in sys.path:
        sys.path.insert(0, str(common.REPO))
    from infra import bundle as bundle_mod

    return bundle_mod


def _no_wheels(platform: str, python_version: str, allow_download: bool) -> dict | None:
    bundle_mod = _bundle_module()
    entry = CACHE / bundle_mod._cache_key(bundle_mod.DEFAULT_REQUIREMENTS,
                                          bundle_mod.platform_tags(platform, python_version), python_version)[:32]
    if bundle_mod._cached_wheels(entry) is None and not allow_download:
        return {"skipped": f"no cached wheels for {platform} py{python_version} in {CACHE} "
                           f"(run `.venv/bin/python -m infra.bundle --platform {platform}` once, or pass --allow-download)"}
    return None


def measure(allow_download: bool = False, cold_repeats: int = 5) -> dict:
    bundle_mod = _bundle_module()
    platform, python_version = "manylinux2014_aarch64", "3.12"  # what infra/functions.py deploys
    skipped = _no_wheels(platform, python_version, allow_download)
    if skipped:
        return skipped
    with tempfile.TemporaryDirectory(prefix="bench-bundle-") as tmp:
        t = time.perf_counter()
        bundle = bundle_mod.build_bundle(out_dir=Path(tmp), cache_dir=CACHE, platform=platform,
                                         python_version=python_version)
        seconds = time.perf_counter() - t
        by_top: dict[str, int] = {}
        with zipfile.ZipFile(bundle.path) as archive:
            infos = archive.infolist()
            for info in infos:
                top = info.filename.split("/", 1)[0]
                if top.endswith(".dist-info"):
                    top = "(dist-info)"
                by_top[top] = by_top.get(top, 0) + info.file_size
        return {
            "platform": platform, "python_version": python_version,
            "zipped_bytes": bundle.size, "unpacked_bytes": bundle.unpacked_size, "files": len(infos),
            "zipped_mib": round(bundle.size / 2**20, 2), "unpacked_mib": round(bundle.unpacked_size / 2**20, 2),
            "unpacked_share_of_lambda_limit": round(bundle.unpacked_size / bundle_mod.LAMBDA_UNPACKED_LIMIT, 4),
            "build_seconds_from_cache": round(seconds, 2),
            "largest_unpacked_mib": {k: round(v / 2**20, 2) for k, v in sorted(by_top.items(), key=lambda kv: -kv[1])[:8]},
            "sha256": bundle.sha256,
            "pyc_files": bundle.pyc_files, "pyc_unpacked_bytes": bundle.pyc_bytes,
            "coldstart_bytecode": coldstart_bytecode(cold_repeats, allow_download),
        }


_IMPORT = r"""
import importlib, sys, time
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
importlib.import_module(sys.argv[2])
print((time.perf_counter() - t0) * 1000)
"""


def coldstart_bytecode(repeats: int = 5, allow_download: bool = False) -> dict:
    """Each handler's import in fresh ``python3.12 -I -S -B`` processes from the unpacked, read-only
    bundle, with its .pyc files and without them (as Lambda runs it: nothing can be written).

    The bundle is the deployed one's twin for this machine (manylinux x86_64 or aarch64, cp312):
    same builder, same requirements; an aarch64 bundle's extension modules do not load on x86_64.
    Import only (the per-container init needs the world's configuration; see coldstart.py).
    """
    from .coldstart import HANDLERS

    bundle_mod = _bundle_module()
    compiler, tried = bundle_mod.find_bytecode_compiler("3.12")
    if compiler is None:
        return {"skipped": f"no CPython 3.12: {'; '.join(tried)}"}
    arch = host_platform.machine()
    if arch not in ("x86_64", "aarch64"):
        return {"skipped": f"no manylinux wheels for {arch}"}
    platform = f"manylinux2014_{arch}"
    skipped = _no_wheels(platform, "3.12", allow_download)
    if skipped:
        return skipped
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "AWS_EC2_METADATA_DISABLED": "true"}
    with tempfile.TemporaryDirectory(prefix="bench-bundle-cold-") as tmp:
        bundle = bundle_mod.build_bundle(out_dir=Path(tmp) / "out", cache_dir=CACHE, platform=platform,
                                         python_version="3.12")
        trees = {}
        with zipfile.ZipFile(bundle.path) as archive:
            for variant, keep_pyc in (("with_pyc", True), ("without_pyc", False)):
                root = trees[variant] = Path(tmp) / variant
                archive.extractall(root, [n for n in archive.namelist() if keep_pyc or not n.endswith(".pyc")])
                for path in [root, *root.rglob("*")]:
                    path.chmod(path.stat().st_mode & ~0o222)  # read-only, as /var/task
        try:
            samples = {short: {variant: {"import": [], "process": []} for variant in trees} for short in HANDLERS}
            for round_ in range(repeats + 1):  # round 0 warms the page cache and is not counted
                for short, module in HANDLERS.items():
                    for variant, root in trees.items():
                        started = time.perf_counter()
                        out = subprocess.run([compiler.executable, "-I", "-S", "-B", "-c", _IMPORT, str(root), module],
                                             capture_output=True, text=True, env=env, timeout=120)
                        wall = (time.perf_counter() - started) * 1000
                        if out.returncode != 0:
                            raise RuntimeError(f"{module} ({variant}): {out.stderr[-1500:]}")
                        if round_:
                            samples[short][variant]["import"].append(float(out.stdout.strip().splitlines()[-1]))
                            samples[short][variant]["process"].append(wall)
        finally:
            for root in trees.values():
                for path in [root, *root.rglob("*")]:
                    path.chmod(path.stat().st_mode | 0o200)
    handlers = {}
    for short, by_variant in samples.items():
        with_ms = common.median(by_variant["with_pyc"]["import"])
        without_ms = common.median(by_variant["without_pyc"]["import"])
        handlers[short] = {
            "import_with_pyc": common.summary(by_variant["with_pyc"]["import"]),
            "import_without_pyc": common.summary(by_variant["without_pyc"]["import"]),
            "process_with_pyc": common.summary(by_variant["with_pyc"]["process"]),
            "process_without_pyc": common.summary(by_variant["without_pyc"]["process"]),
            "import_saved_ms": round(without_ms - with_ms, 2),
            "import_speedup": round(without_ms / with_ms, 2),
        }
    return {"python": compiler.executable, "bundle": bundle.path.name, "pyc_files": bundle.pyc_files,
            "repeats": repeats, "handlers": handlers}


if __name__ == "__main__":  # python -m bench.bundle_bench [repeats]: the cold-start figure alone
    import json

    print(json.dumps(coldstart_bytecode(int(sys.argv[1]) if len(sys.argv) > 1 else 5), indent=2))
