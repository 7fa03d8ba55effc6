"""Faults on the real local stack: DynamoDB stopped, slowed and throttling under load (through
``--aws-fault-proxy``), a restart mid-enrollment, and Okta's clock off by less and more than the
allowed skew. (Fleet down or slow during sync and "check again": tests/e2e/test_local_fleet.py.)

Every request loop is bounded in count and time; everything is on loopback. Latencies are
printed, never asserted.
"""

from __future__ import annotations

import http.client
import json
import random
import signal
import threading
import time
import urllib.parse
import urllib.request
import uuid as uuid_mod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html import unescape

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from devicegate import settings
from devicegate.local import tools
from devicegate.scep import protocol
from devicegate.scep.protocol import PkiStatus
from tests import scep_helpers as h
from tests.load.load_helpers import Table, latency_summary, record_figures, timed
from tests.stack_helpers import StackProcess, enrolled_device, fleet_host, request, running_stack, tls_context

UNAVAILABLE = "can\u2019t check your device right now"  # the 503 page's reason


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from running_stack(tmp_path_factory, "faults", args=("--aws-fault-proxy", "--sync-interval", "3600"))


def set_fault(stack, mode: str, seconds: float = 0, service: str = "dynamodb") -> dict:
    body = json.dumps({"mode": mode, "seconds": seconds, "service": service}).encode()
    req = urllib.request.Request(stack.endpoints["aws_fault_proxy"]["admin_url"], data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as response:
        return json.loads(response.read())


def okta_login(stack, ctx, user="ada@example.com", **query):
    """GET the local Okta's login (extra query: e.g. clock_offset), follow it to /saml/sso."""
    e = stack.endpoints
    params = urllib.parse.urlencode({"user": user, **query})
    status, headers, body = request(f"{e['okta']['login_url']}?{params}", tls_context(e["tls_ca"]))
    assert status == 302, body[:300]
    parts = urllib.parse.urlsplit(headers["location"])
    return request(headers["location"], ctx, raw_path=f"{parts.path}?{parts.query}")


# ------------------------------------------------------------------------------ clock skew


def test_okta_clock_skew_within_and_beyond_the_window(stack, tmp_path):
    e = stack.endpoints
    window = int(e["settings"].get("DEVICEGATE_CLOCK_SKEW_SECONDS")
                 or settings.IdpSettings.__dataclass_fields__["clock_skew_seconds"].default)
    device = enrolled_device(stack, tmp_path / "mac")
    ctx = device.context(e["tls_ca"])
    margin = 10  # IssueInstant has whole seconds; the margin keeps each case on its side
    for offset in (window - margin, -(window - margin)):
        status, _, page = okta_login(stack, ctx, clock_offset=offset)
        assert status == 200 and b"SAMLResponse" in page, (offset, page[:300])
        text = page.decode()
        form = {"SAMLResponse": unescape(text.split('name="SAMLResponse" value="', 1)[1].split('"', 1)[0])}
        status, _, accepted = request(e["okta"]["acs_url"], tls_context(e["tls_ca"]), "POST",
                                      urllib.parse.urlencode(form).encode(),
                                      {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200 and b"Assertion signature verified" in accepted, offset
    for offset, reason in ((window + margin, b"issued in the future; check the clocks"),
                           (-(window + margin), b"too old; start the sign-in again")):
        status, _, page = okta_login(stack, ctx, clock_offset=offset)
        assert status == 400 and reason in page and b"SAMLResponse" not in page, (offset, page[:300])
    status, _, page = request(f"{e['okta']['login_url']}?user=a&clock_offset=7200", tls_context(e["tls_ca"]))
    assert status == 400 and b"clock_offset" in page


# ------------------------------------------------------------------------------ DynamoDB faults


@dataclass
class Op:
    phase: str
    kind: str  # "login" | "enroll"
    ok: bool
    status: int
    detail: str
    seconds: float
    serial: str | None = None
    cert_der: bytes | None = None
    started: float = 0.0  # time.monotonic() when it began


class Driver:
    """Background load: ``workers`` threads alternating logins (enrolled devices) and
    enrollments (fresh Fleet hosts), each recording what it got, until stopped."""

    def __init__(self, stack, tmp_path, devices, spare_hosts, workers=6, max_ops=600):
        self.stack, self.tmp_path, self.devices = stack, tmp_path, devices
        self.spare = list(spare_hosts)
        self.lock = threading.Lock()
        self.phase = "warm-up"
        self.ops: list[Op] = []
        self.stopping = threading.Event()
        self.max_ops = max_ops
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(workers)]

    def _run(self, i):
        rng = random.Random(i)
        while not self.stopping.is_set() and len(self.ops) < self.max_ops:
            phase = self.phase
            with self.lock:
                host = self.spare.pop() if rng.random() < 0.3 and self.spare else None
            started = time.monotonic()
            op = self._enroll(phase, host) if host else self._login(phase, rng.choice(self.devices))
            op.started = started
            with self.lock:
                self.ops.append(op)

    def _login(self, phase, device):
        try:
            result, seconds = timed(tools.login, self.stack.state_dir, device.cert_path, device.key_path,
                                    "ada@example.com")
        except OSError as exc:  # the client's own 30 s timeout: a hung request
            return Op(phase, "login", False, -1, f"client error {exc!r}", 30.0)
        return Op(phase, "login", result.outcome == "allowed", result.status, result.page_text, seconds)

    def _enroll(self, phase, host):
        started = time.perf_counter()
        try:
            enrolled = tools.enroll(self.stack.state_dir, self.tmp_path / f"e-{host}", host)
        except tools.ToolError as exc:
            return Op(phase, "enroll", False, 200, str(exc), time.perf_counter() - started)
        except OSError as exc:
            return Op(phase, "enroll", False, -1, f"client error {exc!r}", time.perf_counter() - started)
        der = x509.load_pem_x509_certificate(enrolled.cert_path.read_bytes()).public_bytes(Encoding.DER)
        return Op(phase, "enroll", True, 200, "issued", time.perf_counter() - started, enrolled.serial, der)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=60)


def _explained(op: Op) -> bool:
    """A refusal during a fault: a 503 page saying why, or SCEP's FAILURE / 503 saying retry."""
    if op.kind == "login":
        return (op.status == 503 and UNAVAILABLE in op.detail) or (
            op.status == 400 and "already used" in op.detail)  # a write retried after it landed
    return ("cannot record certificates right now; retry later" in op.detail
            or ("HTTP 503" in op.detail and "retry later" in op.detail))


def _reason(op: Op) -> str:
    for known in (UNAVAILABLE, "already used", "cannot record certificates right now", "HTTP 503"):
        if known in op.detail:
            return known
    return op.detail[:120]


def test_dynamodb_stopped_slowed_and_throttling_under_load(stack, tmp_path):
    state = stack.state_dir
    devices = [enrolled_device(stack, tmp_path / f"mac{i}") for i in range(4)]
    spare = [fleet_host(stack, policies=(), sync=False) for _ in range(60)]
    phases = [("pass", 0, 1.5), ("stop", 0, 2), ("pass", 0, 1), ("throttle", 0, 2), ("pass", 0, 1),
              ("slow", 1.0, 2), ("slow", 5.0, 10), ("pass", 0, 1)]
    recovery = {}
    windows: dict[str, tuple[float, float]] = {}  # each fault phase's first (start, end)
    try:
        with Driver(stack, tmp_path, devices, spare) as driver:
            for mode, seconds, length in phases:
                set_fault(stack, mode, seconds)
                driver.phase = f"{mode}{seconds or ''}"
                began = time.monotonic()
                time.sleep(length)
                windows.setdefault(driver.phase, (began, time.monotonic()))
            # the fault is gone: the service is back (bounded wait for in-flight requests)
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and not recovery.get("login"):
                result = tools.login(state, devices[0].cert_path, devices[0].key_path, "ada@example.com")
                recovery["login"] = result.outcome == "allowed"
                time.sleep(0 if recovery["login"] else 0.5)
            enrolled = tools.enroll(state, tmp_path / "after", fleet_host(stack, policies=(), sync=False))
            recovery["enroll"] = bool(enrolled.serial)
    finally:
        set_fault(stack, "pass")
    assert recovery == {"login": True, "enroll": True}, "service returns when the endpoint does"

    ops = driver.ops
    assert ops, "the driver ran"
    table = Table(stack.endpoints)
    for op in ops:
        assert op.status != -1, f"a request hung or broke the connection: {op}"
        assert op.status < 500 or op.status == 503, f"no 5xx but the explained 503: {op}"
        if op.ok and op.kind == "enroll":
            record = table.certificate(op.serial)
            # crucially: no certificate is handed out without its record
            assert record is not None and bytes(record["der"]["B"]) == op.cert_der, op
        elif not op.ok:
            assert _explained(op), f"an unexplained refusal in phase {op.phase}: {op.status} {op.detail[:300]}"
        if op.phase == "pass" and op.kind == "login" and not op.ok:
            # only requests that began in a fault phase may fail; a pass phase right after
            # one may still see its in-flight stragglers, nothing else
            assert op.status == 503 or "already used" in op.detail, op
    serials = [op.serial for op in ops if op.serial]
    assert len(serials) == len(set(serials)), "no duplicate serials"
    by_phase: dict[str, dict] = {}
    for op in ops:
        entry = by_phase.setdefault(op.phase, {"ok": 0, "refused": 0, "seconds": [], "why": {}})
        entry["ok" if op.ok else "refused"] += 1
        entry["seconds"].append(op.seconds)
        if not op.ok:
            why = f"{op.kind} {op.status} {_reason(op)}"
            entry["why"][why] = entry["why"].get(why, 0) + 1
    for phase in ("stop", "throttle", "slow5.0"):
        # felt: a request refused while that fault was on (it may have begun in the phase
        # before: with every worker inside a slowed request, none may begin in this one)
        began, ended = windows[phase]
        felt = [op for op in ops if not op.ok and _explained(op) and op.started < ended
                and op.started + op.seconds > began]
        assert felt, f"the {phase} fault was felt"
    record_figures("faults", {phase: {"ok": v["ok"], "refused": v["refused"], "why": v["why"],
                                      **latency_summary(v["seconds"])}
                              for phase, v in by_phase.items()})


def test_store_calls_are_bounded_below_the_lambda_timeout(monkeypatch):
    """A slow endpoint cannot hold a request for minutes: every DynamoDB call is bounded, with
    the Lambdas' own client (credentials in the environment) and with boto3's (without)."""
    from devicegate import awsjson
    from devicegate.store import Store

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "bounded-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "bounded-test")
    light = Store("t")._client
    assert isinstance(light, awsjson.Client)
    backoff = sum(min(light.backoff_cap, light.backoff_base * 2 ** n) for n in range(light.max_attempts - 1))
    worst_light = light.max_attempts * (light.connect_timeout + light.read_timeout) + backoff

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    config = Store("t")._client.meta.config
    attempts = config.retries["total_max_attempts"]  # botocore's "max_attempts" would count retries only
    assert config.retries["mode"] == "standard" and attempts == 3 == light.max_attempts
    backoff = sum(min(20, 2 ** n) for n in range(attempts - 1))  # botocore standard: random, at most this
    worst_call = attempts * (config.connect_timeout + config.read_timeout) + backoff
    # the IdP and SCEP Lambdas time out at 30 s (infra/functions.py): one call must leave room
    assert worst_call <= 20, worst_call
    assert worst_light <= worst_call, (worst_light, worst_call)


# ------------------------------------------------------------------------------ restart


def test_restart_mid_enrollment_gives_the_retry_the_same_certificate(tmp_path):
    proc = StackProcess(tmp_path / "state", args=("--sync-interval", "3600"))
    e = proc.start()
    try:
        ca = x509.load_pem_x509_certificate(e["scep_ca"].encode())
        requests = []
        for i in range(12):
            host = fleet_host(proc, policies=(), sync=False)
            key = h.key(slot=100 + i)
            csr = h.make_csr(key, host_uuid=host, challenge=e["scep_challenge"])
            message, _, _, _ = h.pkcs_req(ca, private_key=key, csr=csr)
            requests.append((host, key, message))

        def send(endpoints, item):
            host, key, message = item
            try:
                status, _, body = request(endpoints["scep_url"] + "?operation=PKIOperation", tls_context(endpoints["tls_ca"]),
                                          "POST", message, {"Content-Type": "application/x-pki-message"})
            except (OSError, http.client.HTTPException) as exc:  # e.g. IncompleteRead: the stack died mid-reply
                return host, None, repr(exc)
            if status != 200:
                return host, None, f"HTTP {status}"
            reply = protocol.parse_cert_rep(body, ca_cert=ca, requester_key=key)
            if reply.status is not PkiStatus.SUCCESS:
                return host, None, reply.fail_text
            return host, reply.certificates[0].serial_number, "issued"

        first = [send(e, item) for item in requests[:4]]
        assert all(serial for _, serial, _ in first), first
        # the rest in flight when the stack dies (SIGKILL: no clean shutdown)
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(send, e, item) for item in requests[4:]]
            time.sleep(0.15)
            proc.stop(sig=signal.SIGKILL)
            in_flight = [f.result() for f in futures]
        e = proc.start()  # same state dir: the journal brings back every recorded issuance
        retried = [send(e, item) for item in requests]  # byte-identical retries
        table = Table(e)
        missing = [host for host, serial, _ in retried if serial and table.certificate(format(serial, "x")) is None]
    finally:
        proc.stop()
    assert not missing, f"certificates without their record after the restart: {missing}"
    got = {host: serial for host, serial, _ in first + in_flight if serial}
    for host, serial, detail in retried:
        assert serial is not None, f"{host}: the retry was refused: {detail}"
        if host in got:
            assert serial == got[host], "the retry got the certificate it was issued before the restart"
    assert len({serial for _, serial, _ in retried}) == len(requests), "one certificate per transaction"
    print(f"\nrestart: {len(got) - 4} of {len(in_flight)} in-flight enrollments answered before the kill; "
          f"every retry got its certificate")
