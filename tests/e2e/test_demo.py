"""`devicegate demo` on a real local stack: every step behaves, and it says so.

The SCEP client is certmonger when it is installed and usable (auto), devicegate's own with
``--scep-client builtin`` or when certmonger cannot be used; whatever certmonger started or wrote
is gone when the demo ends, also after a failed step or an interrupt.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devicegate.local import certmonger
from tests.stack_helpers import running_stack

STEPS = ("1.", "2.", "3.", "4.", "5.", "6.")
CERTMONGER_UNUSABLE = certmonger.unusable_reason()

# What util-linux unshare prints, and its exit status, when a non-root user asks for a mount
# namespace (checked with setpriv --reuid=nobody on this machine): the stub stands in for that.
NOT_ROOT_UNSHARE = '#!/bin/sh\necho "unshare: unshare failed: Operation not permitted" >&2\nexit 1\n'


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from running_stack(tmp_path_factory, "demo", args=("--sync-interval", "3600"))


def _mentions(text: str) -> list[str]:
    """``"pid name"`` of the processes whose command line or environment names ``text`` (what
    certmonger, its dbus-daemon and their helpers carry: their work dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if any(text.encode() in (proc / part).read_bytes() for part in ("cmdline", "environ")):
                found.append(f"{proc.name} {(proc / 'comm').read_text().strip()}")
        except OSError:  # gone meanwhile, or not ours to read
            pass
    return found


class Demo:
    """Runs the demo as a separate process with its own TMPDIR, so that what it leaves behind
    (temporary dirs, key files, certmonger's state, processes) can be looked for afterwards."""

    def __init__(self, state_dir: Path, tmp_path: Path, *args: str, path: str | None = None):
        self.tmp = tmp_path / "demo-tmp"
        self.tmp.mkdir()
        env = {**os.environ, "TMPDIR": str(self.tmp)}
        if path is not None:
            env["PATH"] = path
        self.argv = [sys.executable, "-m", "devicegate", "demo", "--state-dir", str(state_dir), *args]
        self.env = env

    def run(self, timeout: float = 60) -> subprocess.CompletedProcess:
        started = time.monotonic()
        result = subprocess.run(self.argv, env=self.env, capture_output=True, text=True, timeout=timeout)
        print(result.stdout, result.stderr)
        self.elapsed = time.monotonic() - started
        self.assert_nothing_left()
        return result

    def assert_nothing_left(self) -> None:
        assert list(self.tmp.iterdir()) == [], "the demo left files behind"
        assert _mentions(str(self.tmp)) == [], "the demo left processes behind"


def _every_step_behaved(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout and "every step behaved" in result.stdout
    for step in STEPS:
        assert f"\n{step}" in "\n" + result.stdout
    assert result.stdout.count("   ok ") == 7


@pytest.mark.interop  # in CI, a machine without a usable certmonger fails this instead of skipping it
@pytest.mark.skipif(CERTMONGER_UNUSABLE is not None, reason=f"certmonger: {CERTMONGER_UNUSABLE}")
def test_demo_enrolls_with_certmonger_when_it_is_usable(stack, tmp_path):
    demo = Demo(stack.state_dir, tmp_path)
    result = demo.run()
    _every_step_behaved(result)
    assert "SCEP client: certmonger 0.79" in result.stdout
    assert "devicegate's own" not in result.stdout
    assert "certmonger status MONITORING; certificate issued, serial " in result.stdout
    assert demo.elapsed < 30


def test_demo_with_the_builtin_client(stack, tmp_path):
    demo = Demo(stack.state_dir, tmp_path, "--scep-client", "builtin")
    result = demo.run()
    _every_step_behaved(result)
    assert "SCEP client: devicegate's own, which enrolls as macOS does (asked for with --scep-client builtin)" \
        in result.stdout
    assert "certmonger" not in result.stdout
    assert demo.elapsed < 30


def _stub_bin(tmp_path: Path) -> Path:
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "unshare").write_text(NOT_ROOT_UNSHARE)
    (stub / "unshare").chmod(0o755)
    return stub


@pytest.mark.parametrize("machine", ["not root", "no certmonger"])
def test_auto_falls_back_to_the_builtin_client_and_says_why(stack, tmp_path, machine):
    if machine == "not root":  # unshare --mount fails as it does for a non-root user
        path, why = f"{_stub_bin(tmp_path)}:{os.environ['PATH']}", (
            "certmonger cannot be used here: cannot make a private mount namespace: "
            "unshare: unshare failed: Operation not permitted")
    else:  # no program at all on PATH (the built-in client needs none)
        (tmp_path / "empty").mkdir()
        path, why = str(tmp_path / "empty"), "certmonger cannot be used here: not installed: certmonger, getcert, dbus-daemon"
    result = Demo(stack.state_dir, tmp_path, path=path).run()
    _every_step_behaved(result)
    assert f"SCEP client: devicegate's own, which enrolls as macOS does ({why})" in result.stdout


def test_forcing_an_unusable_certmonger_fails_clearly(stack, tmp_path):
    path = f"{_stub_bin(tmp_path)}:{os.environ['PATH']}"
    result = Demo(stack.state_dir, tmp_path, "--scep-client", "certmonger", path=path).run()
    assert result.returncode == 2
    assert result.stdout == ""  # nothing was done to the stack
    assert result.stderr.strip() == (
        "devicegate demo: --scep-client certmonger: certmonger cannot be used here: cannot make a private "
        "mount namespace: unshare: unshare failed: Operation not permitted")


@pytest.fixture
def wrong_challenge(stack):
    """endpoints.json hands the demo a challenge the CA does not accept; restored afterwards."""
    path = stack.state_dir / "endpoints.json"
    original = path.read_text()
    path.write_text(json.dumps({**json.loads(original), "scep_challenge": "not-the-challenge"}))
    yield
    path.write_text(original)


@pytest.mark.parametrize("client", ["auto", "builtin"])
def test_a_step_that_fails_makes_the_exit_code_non_zero(stack, tmp_path, wrong_challenge, client):
    if client == "auto" and CERTMONGER_UNUSABLE is not None:
        pytest.skip(f"certmonger: {CERTMONGER_UNUSABLE}")
    result = Demo(stack.state_dir, tmp_path, "--scep-client", client).run()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "demo: a step did not behave (see above)" in result.stdout
    assert "\n3." not in result.stdout  # it stops at the step that failed
    failed = [line for line in result.stdout.splitlines() if "FAILED" in line]
    assert len(failed) == 1
    if client == "auto":
        assert "certmonger status CA_REJECTED" in failed[0]
    else:
        assert "devicegate's SCEP client: the CA refused" in failed[0]


@pytest.mark.interop
@pytest.mark.skipif(CERTMONGER_UNUSABLE is not None, reason=f"certmonger: {CERTMONGER_UNUSABLE}")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_an_interrupted_demo_stops_and_removes_what_certmonger_started(stack, tmp_path, sig):
    demo = Demo(stack.state_dir, tmp_path)
    proc = subprocess.Popen(demo.argv, env=demo.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while not any(entry.endswith(" certmonger") for entry in _mentions(str(demo.tmp))):
            assert proc.poll() is None and time.monotonic() < deadline, "certmonger never ran"
            time.sleep(0.02)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(out)
    assert proc.returncode == 128 + sig, out
    assert f"demo: interrupted by {sig.name}; what it started is stopped and removed" in out
    demo.assert_nothing_left()


def test_demo_without_a_stack(tmp_path):
    result = subprocess.run([sys.executable, "-m", "devicegate", "demo", "--state-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "./dev up" in result.stderr
