"""The local stack's AWS endpoint: a moto server process on loopback, over real HTTP.

DynamoDB and Secrets Manager calls go to it exactly as they would go to AWS. moto keeps its
state in memory, so the stack turns on moto's request recorder: every request is appended to
``<state>/aws-requests.jsonl`` as it is served, and the log is replayed into a fresh server on
the next start. That makes a restart (even after SIGKILL) keep what was recorded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "devicegate-local",
    "AWS_SECRET_ACCESS_KEY": "devicegate-local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _die_with_parent() -> None:
    """In the child before exec: end with the stack even when it is killed with SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: a clean stop still ends the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    def __init__(self, log_path: Path | None = None, port: int | None = None):
        self.log_path = log_path
        self.port = port
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "MotoServer":
        env = {**os.environ, **LOCAL_CREDENTIALS}
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path.touch()
            env["MOTO_ENABLE_RECORDING"] = "True"
            env["MOTO_RECORDER_FILEPATH"] = str(self.log_path)
        wanted = self.port
        for _attempt in range(5):  # a free port can be taken between probe and bind
            self.port = wanted or free_port()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            if self._wait_ready(timeout):
                break
            self.stop()
        else:
            raise RuntimeError(f"moto server did not start on 127.0.0.1 (last port tried {self.port})")
        if self.log_path is not None and self.log_path.stat().st_size:
            self._replay()
        return self

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return True
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        return False

    def _replay(self) -> None:
        # The server replays its own log (it rewrites the recorded host to the new port) and
        # does not record the replay itself.
        request = urllib.request.Request(f"{self.endpoint}/moto-api/recorder/replay-recording", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()

    def replayed_requests(self) -> int:
        if self.log_path is None or not self.log_path.exists():
            return 0
        with self.log_path.open() as handle:
            return sum(1 for line in handle if line.strip() and json.loads(line))

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
