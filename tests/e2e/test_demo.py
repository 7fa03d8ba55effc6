"""`devicegate demo` on a real local stack: every step behaves, and it says so."""

import subprocess
import sys

from tests.stack_helpers import StackProcess


def test_demo(tmp_path):
    proc = StackProcess(tmp_path / "state", args=("--sync-interval", "3600"))
    proc.start()
    try:
        result = subprocess.run([sys.executable, "-m", "devicegate", "demo", "--state-dir", str(proc.state_dir)],
                                capture_output=True, text=True, timeout=180)
    finally:
        assert proc.stop() == 0
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout and "every step behaved" in result.stdout
    for step in ("1.", "2.", "3.", "4.", "5.", "6."):
        assert f"\n{step}" in "\n" + result.stdout


def test_demo_without_a_stack(tmp_path):
    result = subprocess.run([sys.executable, "-m", "devicegate", "demo", "--state-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "./dev up" in result.stderr
