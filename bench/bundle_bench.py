"""The Lambda bundle's size, zipped and unpacked, built by infra.bundle from the cached wheels."""

from __future__ import annotations

import sys
import tempfile
import time
import zipfile
from pathlib import Path

from . import common

CACHE = common.REPO / "build" / "wheel-cache"


def measure(allow_download: bool = False) -> dict:
    if str(common.REPO) not in sys.path:
        sys.path.insert(0, str(common.REPO))
    from infra import bundle as bundle_mod

    platform, python_version = "manylinux2014_aarch64", "3.12"  # what infra/functions.py deploys
    requirements = bundle_mod.DEFAULT_REQUIREMENTS
    entry = CACHE / bundle_mod._cache_key(requirements, bundle_mod.platform_tags(platform, python_version),
                                          python_version)[:32]
    if bundle_mod._cached_wheels(entry) is None and not allow_download:
        return {"skipped": f"no cached wheels for {platform} py{python_version} in {CACHE} "
                           "(run `python -m infra.bundle` once, or pass --allow-download)"}
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
        }
