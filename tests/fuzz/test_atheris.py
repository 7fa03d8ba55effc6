"""The atheris harnesses in bench/fuzz run, briefly, from a seed corpus of valid inputs, and exit
cleanly (no crash, no property violation, no libFuzzer timeout or memory limit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HARNESSES = ["fuzz_scep", "fuzz_saml", "fuzz_alb", "fuzz_fleet"]
RUNS = int(os.environ.get("DEVICEGATE_ATHERIS_RUNS", "300"))
SECONDS = int(os.environ.get("DEVICEGATE_ATHERIS_SECONDS", "5"))


def _atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise  # tests/requirements-fuzz.txt installs it: missing in CI is a set-up failure
        return False
    return True


@pytest.mark.skipif(not _atheris_available(), reason="atheris is not installed (tests/requirements-fuzz.txt)")
@pytest.mark.parametrize("harness", HARNESSES)
def test_harness_runs_cleanly(harness, tmp_path):
    corpus, artifacts = tmp_path / "corpus", tmp_path / "artifacts"
    artifacts.mkdir()
    command = [sys.executable, str(ROOT / "bench" / "fuzz" / f"{harness}.py"), str(corpus), f"-runs={RUNS}",
               f"-max_total_time={SECONDS}", "-timeout=10", "-rss_limit_mb=2048", f"-artifact_prefix={artifacts}/"]
    done = subprocess.run(command, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=SECONDS + 90)
    tail = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, tail
    assert "Done " in done.stderr and not list(artifacts.iterdir()), tail
    assert any(corpus.iterdir()), "the seed corpus was not written"
