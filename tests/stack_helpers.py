"""Drive a real local stack process from tests: start, wait for endpoints.json, stop."""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid as uuid_mod
from dataclasses import dataclass
from pathlib import Path


class StackProcess:
    def __init__(self, state_dir: Path, env: dict | None = None, args: tuple = ()):
        self.state_dir = Path(state_dir)
        self.env = env or {}
        self.args = tuple(args)
        self.process: subprocess.Popen | None = None
        self.endpoints: dict = {}
        self.log = self.state_dir.parent / f"{self.state_dir.name}-stack.log"

    def start(self, timeout: float = 60.0) -> dict:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / "endpoints.json"
        path.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "devicegate", "local", "up", "--state-dir", str(self.state_dir), *self.args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"local stack exited {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"local stack not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        self.endpoints = json.loads(path.read_text())
        return self.endpoints

    def stop(self, sig=signal.SIGTERM) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code


def running_stack(tmp_path_factory, name: str, **kwargs):
    """A module fixture's body: a stack process for the module, stopped (exit 0) after it."""
    proc = StackProcess(tmp_path_factory.mktemp(name) / "state", **kwargs)
    proc.start()
    yield proc
    assert proc.stop() == 0, "the stack exits 0 on SIGTERM"


def tls_context(ca_pem: str, cert_pem: str | None = None, key_pem: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem)
    if cert_pem:
        with tempfile.TemporaryDirectory() as tmp:
            cert_file, key_file = Path(tmp, "c.pem"), Path(tmp, "k.pem")
            cert_file.write_text(cert_pem)
            key_file.write_text(key_pem)
            ctx.load_cert_chain(cert_file, key_file)
    return ctx


def request(url: str, ctx: ssl.SSLContext, method: str = "GET", body: bytes | None = None,
            headers: dict | None = None, raw_path: str | None = None) -> tuple[int, dict, bytes]:
    """One HTTPS request; ``raw_path`` sends exactly these path+query octets (no re-quoting)."""
    from devicegate.local.tools import https_request

    return https_request(url, ctx, method, body, headers, raw_path)


@dataclass
class Device:
    uuid: str
    cert_path: Path
    key_path: Path
    cert_pem: str
    key_pem: str

    def context(self, tls_ca: str) -> ssl.SSLContext:
        return tls_context(tls_ca, self.cert_pem, self.key_pem)


def fleet_host(stack: "StackProcess", uuid: str | None = None, *, policies=(("FileVault enabled", "pass", True),),
               hostname="ada-mbp", email="ada@example.com", sync=True) -> str:
    """A host in the simulated Fleet with these (name, result, critical) results, synced."""
    from devicegate.local import tools

    uuid = (uuid or str(uuid_mod.uuid4())).upper()
    tools.fleet_add_host(stack.state_dir, uuid, hostname, email)
    for name, result, critical in policies:
        tools.fleet_set_policy(stack.state_dir, uuid, name, result, critical=critical,
                               resolution=f"How to fix {name}.")
    if sync:
        tools.sync_now(stack.state_dir)
    return uuid


def set_result(stack: "StackProcess", uuid: str, name: str, result: str, critical=True, *, sync=True) -> None:
    from devicegate.local import tools

    tools.fleet_set_policy(stack.state_dir, uuid, name, result, critical=critical)
    if sync:
        tools.sync_now(stack.state_dir)


def enrolled_device(stack: "StackProcess", out_dir: Path, **kwargs) -> Device:
    """A host known to the simulated Fleet, enrolled over real HTTPS SCEP like macOS."""
    from devicegate.local import tools

    uuid = fleet_host(stack, **kwargs)
    enrolled = tools.enroll(stack.state_dir, out_dir, uuid)
    return Device(uuid, enrolled.cert_path, enrolled.key_path, enrolled.cert_path.read_text(),
                  enrolled.key_path.read_text())
