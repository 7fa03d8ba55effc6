"""The local stack's AWS endpoint: a moto server process on loopback, over real HTTP.

DynamoDB and Secrets Manager calls go to it exactly as they would go to AWS. moto keeps its
state in memory, so the stack turns on moto's request recorder: every request is appended to
``<state>/aws-requests.jsonl`` as it is served, and the log is replayed into a fresh server on
the next start. That makes a restart (even after SIGKILL) keep what was recorded.

moto's backends are not thread-safe (TransactWriteItems deep-copies every table for its
rollback while other threads write: "dictionary changed size during iteration", HTTP 500), so
the server is run by :func:`serve` here, which hands moto one AWS request at a time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
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
                [sys.executable, "-m", "devicegate.local.dynamo", "-H", "127.0.0.1", "-p", str(self.port)],
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


def serialized(app):
    """WSGI middleware: one AWS request at a time through moto (whose backends are not
    thread-safe). ``/moto-api/`` passes unlocked: its replay calls back into this server."""
    lock = threading.Lock()

    def serve_one(environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/moto-api/"):
            return app(environ, start_response)
        with lock:
            result = app(environ, start_response)
            try:
                return [b"".join(result)]
            finally:
                if hasattr(result, "close"):
                    result.close()

    return serve_one


def serve(argv: list[str] | None = None) -> None:
    """``python -m devicegate.local.dynamo -H HOST -p PORT``: moto's server, serialized."""
    import argparse

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(prog="devicegate.local.dynamo")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    # Exit at once: the journal is written before each request is served, and a graceful
    # exit would wait for every kept-alive client connection to go idle.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # as moto.server runs it
    run_simple(args.host, args.port, serialized(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    serve()
