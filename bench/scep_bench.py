"""SCEP: CPU per enrollment and enrollments/s, devicegate's local stack against micromdm scepserver,
plus the handler in-process (no HTTP) with its breakdown and the crypto floor."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import common
from .common import summary

TG_ARN = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/scep/1"


# ---------------------------------------------------------------------------- client side (not timed)


def build_request(ca_cert, key, challenge: str, host_uuid: str) -> bytes:
    """What devicegate's own client (devicegate.local.tools.enroll) sends: CSR with the SAN URI,
    throw-away self-signed signer, AES-256-CBC, SHA-256."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import AttributeOID, NameOID

    from devicegate.local import pki
    from devicegate.scep import protocol

    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devicegate device")]))
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(f"urn:device:apple:uuid:{host_uuid}")]), critical=False)
        .add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
        .sign(key, hashes.SHA256())
    )
    message, _ = protocol.build_pki_message(
        message_type=protocol.MessageType.PKCS_REQ, inner=csr.public_bytes(Encoding.DER), recipient=ca_cert,
        signer_cert=pki.signing_certificate("SCEP requester", key), signer_key=key,
        transaction_id=os.urandom(16).hex())
    return message


def _event(message: bytes) -> dict:
    from devicegate import alb

    return alb.build_event(method="POST", path="/scep", raw_query="operation=PKIOperation",
                           headers=[("content-type", "application/x-pki-message")], body=message,
                           target_group_arn=TG_ARN)


class StoreTimer:
    """Wall time spent inside devicegate.store.Store._call (devicegate.awsjson + the wait for DynamoDB)."""

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0

    def __enter__(self):
        from devicegate import store as store_mod

        self._orig = orig = store_mod.Store._call
        timer = self

        def wrapped(store, operation, **kwargs):
            t = time.perf_counter()
            try:
                return orig(store, operation, **kwargs)
            finally:
                timer.seconds += time.perf_counter() - t
                timer.calls += 1

        store_mod.Store._call = wrapped
        return self

    def __exit__(self, *exc):
        from devicegate import store as store_mod

        store_mod.Store._call = self._orig


# ---------------------------------------------------------------------------- in-process


def inprocess(world: common.World, n: int, repeats: int, pool: common.KeyPool) -> dict:
    from devicegate import alb
    from devicegate.scep import handler, protocol

    handler.reset()
    # warm-up: the first request loads the CA key and builds the clients (cold start, measured elsewhere)
    first = handler.lambda_handler(_event(build_request(world.ca_cert, pool.next(), world.CHALLENGE,
                                                        str(uuid.uuid4()).upper())), None)
    reply = alb.parse_response(first)
    assert reply.status == 200, reply
    walls, cpus, store_walls, non_store = [], [], [], []
    for _ in range(repeats):
        events = []
        for _ in range(n):
            key = pool.next()
            events.append((key, _event(build_request(world.ca_cert, key, world.CHALLENGE, str(uuid.uuid4()).upper()))))
        results = []
        with StoreTimer() as st, common.timed() as t:
            for _, event in events:
                results.append(handler.lambda_handler(event, None))
        walls.append(t["wall"] / n * 1000)
        cpus.append(t["cpu"] / n * 1000)
        store_walls.append(st.seconds / n * 1000)
        non_store.append((t["wall"] - st.seconds) / n * 1000)
        # every one issued a certificate
        key, event = events[-1]
        rep = protocol.parse_cert_rep(alb.parse_response(results[-1]).body, ca_cert=world.ca_cert, requester_key=key)
        assert rep.status is protocol.PkiStatus.SUCCESS, rep.fail_text
    return {
        "wall_per_enrollment": summary(walls),
        "cpu_per_enrollment": summary(cpus),
        "store_wall_per_enrollment": summary(store_walls),
        "wall_excluding_store": summary(non_store),
        "enrollments_per_repeat": n,
    }


def crypto_floor(world: common.World, repeats: int, n: int, pool: common.KeyPool) -> dict:
    """The cryptographic work one enrollment cannot avoid, with cryptography alone: RSA decrypt of
    the content key + AES decrypt, verify the request signature and the CSR self-signature,
    build and sign the certificate, seal the reply (RSA encrypt + AES), sign the reply."""
    from datetime import datetime, timedelta, timezone

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, padding
    from cryptography.hazmat.primitives.asymmetric import padding as ap
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from devicegate.local import pki

    key = pool.next()
    signer_cert = pki.signing_certificate("SCEP requester", key)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "d")]))
           .sign(key, hashes.SHA256()))
    csr_der = csr.public_bytes(Encoding.DER)
    ck, iv = os.urandom(32), os.urandom(16)
    enc = Cipher(algorithms.AES(ck), modes.CBC(iv)).encryptor()
    pad = padding.PKCS7(128).padder()
    ct = enc.update(pad.update(csr_der) + pad.finalize()) + enc.finalize()
    wrapped = world.ca_cert.public_key().encrypt(ck, ap.PKCS1v15())
    attrs = os.urandom(300)
    req_sig = key.sign(attrs, ap.PKCS1v15(), hashes.SHA256())
    ca_pub = world.ca_cert.public_key()

    def once():
        k = world.ca_key.decrypt(wrapped, ap.PKCS1v15())
        d = Cipher(algorithms.AES(k), modes.CBC(iv)).decryptor()
        u = padding.PKCS7(128).unpadder()
        der = u.update(d.update(ct) + d.finalize()) + u.finalize()
        signer_cert.public_key().verify(req_sig, attrs, ap.PKCS1v15(), hashes.SHA256())
        c = x509.load_der_x509_csr(der)
        assert c.is_signature_valid
        now = datetime.now(timezone.utc)
        pub = c.public_key()
        cert = (x509.CertificateBuilder().subject_name(c.subject).issuer_name(world.ca_cert.subject)
                .public_key(pub).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_pub), critical=False)
                .sign(world.ca_key, hashes.SHA256()))
        body = cert.public_bytes(Encoding.DER)
        k2, iv2 = os.urandom(32), os.urandom(16)
        e = Cipher(algorithms.AES(k2), modes.CBC(iv2)).encryptor()
        p = padding.PKCS7(128).padder()
        e.update(p.update(body) + p.finalize()) + e.finalize()
        signer_cert.public_key().encrypt(k2, ap.PKCS1v15())
        world.ca_key.sign(os.urandom(350), ap.PKCS1v15(), hashes.SHA256())

    once()
    per = []
    for _ in range(repeats):
        with common.timed() as t:
            for _ in range(n):
                once()
        per.append(t["cpu"] / n * 1000)
    # the individual primitives, for the record
    prims = {}
    for name, fn in {
        "rsa2048_sign": lambda: world.ca_key.sign(b"x" * 300, ap.PKCS1v15(), hashes.SHA256()),
        "rsa2048_decrypt": lambda: world.ca_key.decrypt(wrapped, ap.PKCS1v15()),
        "rsa2048_verify": lambda: signer_cert.public_key().verify(req_sig, attrs, ap.PKCS1v15(), hashes.SHA256()),
    }.items():
        vals = []
        for _ in range(repeats):
            with common.timed() as t:
                for _ in range(50):
                    fn()
            vals.append(t["cpu"] / 50 * 1000)
        prims[name] = summary(vals)
    return {"cpu_per_enrollment": summary(per), "primitives": prims,
            "operations": "1 RSA decrypt + AES decrypt, 2 RSA verifies (request, CSR), 1 certificate build+RSA sign, "
                          "1 RSA encrypt + AES encrypt, 1 RSA sign (CertRep)"}


def profile_inprocess(world: common.World, n: int, pool: common.KeyPool) -> dict:
    from . import profiling
    from devicegate.scep import handler

    events = [_event(build_request(world.ca_cert, pool.next(), world.CHALLENGE, str(uuid.uuid4()).upper()))
              for _ in range(n)]
    handler.lambda_handler(events[0], None)  # warm
    return profiling.profile_calls(lambda: [handler.lambda_handler(e, None) for e in events[1:]], n - 1)


# ---------------------------------------------------------------------------- over HTTP: the local stack


class Stack:
    """`devicegate local up` in its own session; PIDs of the stack, its moto child and its
    simulated-Fleet child (Fleet's server side: in production a server of its own, not ours)."""

    def __init__(self, work: Path):
        self.state = work / "stack-state"
        self.log = work / "stack.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> dict:
        self.state.mkdir(parents=True, exist_ok=True)
        endpoints = self.state / "endpoints.json"
        endpoints.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONPATH": str(common.LAMBDAS)}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "devicegate", "local", "up", "--state-dir", str(self.state),
                 "--sync-interval", "86400", "--lambda-reports"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        deadline = time.monotonic() + timeout
        while not endpoints.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"local stack did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        self.endpoints = json.loads(endpoints.read_text())
        self.pid = self.proc.pid
        port = self.endpoints["dynamodb"]["endpoint"].rsplit(":", 1)[1]
        self.moto_pid = None
        deadline = time.monotonic() + 10
        while self.moto_pid is None and time.monotonic() < deadline:
            # the stack's moto child (by the port it serves), found via the process tree of our stack
            for pid in _descendants(self.pid):
                line = common.cmdline(pid)
                if f" -p {port}" in line and ("moto" in line or "dynamo" in line):
                    self.moto_pid = pid
            if self.moto_pid is None:
                time.sleep(0.2)
        if self.moto_pid is None:
            raise RuntimeError(f"cannot find the stack's moto process (port {port})")
        # None when the simulated Fleet runs inside the stack process (older stacks)
        self.fleet_pid = next((pid for pid in _descendants(self.pid)
                               if "devicegate.local.fleet_sim" in common.cmdline(pid)), None)
        return self.endpoints

    def stop(self):
        if self.proc is not None:
            common.stop_group(self.proc)
            self.proc = None

    def log_offset(self) -> int:
        return self.log.stat().st_size

    def reports_since(self, offset: int) -> dict[str, dict[str, float]]:
        """The gateway's Lambda-style REPORT lines written since ``offset``: per function, the
        invocations and the summed handler duration and CPU (ms)."""
        with open(self.log, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
        found: dict[str, dict[str, float]] = {}
        for m in _REPORT.finditer(text):
            row = found.setdefault(m["function"], {"invocations": 0, "duration_ms": 0.0, "cpu_ms": 0.0})
            row["invocations"] += 1
            row["duration_ms"] += float(m["duration"])
            row["cpu_ms"] += float(m["cpu"])
        return found


_REPORT = re.compile(r"REPORT RequestId: \S+ Function: (?P<function>\S+) Duration: (?P<duration>[0-9.]+) ms "
                     r"CPU: (?P<cpu>[0-9.]+) ms")


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = common.children_of(todo.pop())
        found += kids
        todo += kids
    # fall back to every process in our stack's session (it was started with start_new_session)
    if not found:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getsid(int(entry.name)) == pid:
                        found.append(int(entry.name))
                except OSError:
                    pass
    return found


def _enroll_ours(state_dir: Path, out: Path, host: str, key) -> None:
    from unittest import mock

    from devicegate.local import pki, tools

    with mock.patch.object(pki, "new_key", lambda bits=2048: key):
        tools.enroll(state_dir, out, host)


def _worker_ours(args) -> tuple[int, float]:
    """One client process: enroll every host given, sequentially, with devicegate's own client."""
    state_dir, out, hosts, key_pem = args
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(key_pem, None)
    failures = 0
    cpu0 = time.process_time()
    for host in hosts:
        try:
            _enroll_ours(Path(state_dir), Path(out) / host, host, key)
        except Exception:  # noqa: BLE001 - counted
            failures += 1
    return failures, time.process_time() - cpu0


def _worker_scepclient(args) -> int:
    url, challenge, out, keys_pem = args
    failures = 0
    for i, key_pem in enumerate(keys_pem):
        d = Path(tempfile.mkdtemp(prefix="sc-", dir=out))
        (d / "k.pem").write_bytes(key_pem)
        res = subprocess.run(["scepclient", "-server-url", url, "-challenge", challenge, "-cn", f"bench-{uuid.uuid4()}",
                              "-private-key", str(d / "k.pem"), "-certificate", str(d / "c.pem")],
                             cwd=d, stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                             env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(d)})
        if res.returncode != 0 or not (d / "c.pem").exists():
            failures += 1
        shutil.rmtree(d, ignore_errors=True)
    return failures


def _pem_traditional(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _run_clients(kind: str, target: dict, concurrency: int, per_client: int, pool: common.KeyPool, out: Path,
                 hosts: list[str] | None = None) -> tuple[float, int]:
    """Run `concurrency` client processes/threads, each doing `per_client` enrollments. (wall, failures)"""
    import multiprocessing

    if kind == "ours":
        chunks = [hosts[i * per_client:(i + 1) * per_client] for i in range(concurrency)]
        args = [(str(target["state"]), str(out), chunk, _pem_traditional(pool.next())) for chunk in chunks]
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(concurrency) as procs:
            # warm the workers' imports before the clock starts
            procs.map(_noop, range(concurrency))
            t = time.perf_counter()
            results = procs.map(_worker_ours, args)
            wall = time.perf_counter() - t
        CLIENT_CPU.append((sum(r[1] for r in results), sum(len(c) for c in chunks)))
        return wall, sum(r[0] for r in results)
    args = [(target["url"], target["challenge"], str(out), [_pem_traditional(pool.next()) for _ in range(per_client)])
            for _ in range(concurrency)]
    import resource

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with ThreadPoolExecutor(concurrency) as ex:
        t = time.perf_counter()
        results = list(ex.map(_worker_scepclient, args))
        wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    CLIENT_CPU.append((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, concurrency * per_client))
    return wall, sum(results)


CLIENT_CPU: list[tuple[float, int]] = []  # (client CPU seconds, enrollments) per client run


def _client_cpu_ms() -> float:
    cpu = sum(c for c, _ in CLIENT_CPU)
    n = sum(k for _, k in CLIENT_CPU)
    CLIENT_CPU.clear()
    return round(cpu / n * 1000, 2) if n else None


def _noop(_):
    import devicegate.local.tools  # noqa: F401
    import devicegate.scep.protocol  # noqa: F401

    return 0


def _idle_rate(pids: list[int], seconds: float = 2.0) -> dict[int, float]:
    before = {p: common.proc_cpu_seconds(p) for p in pids}
    time.sleep(seconds)
    return {p: (common.proc_cpu_seconds(p) - before[p]) / seconds for p in pids}


def _cpu_run(kind, target, pids, n, pool, out, hosts, idle, stack=None):
    """(CPU ms per enrollment by PID, wall, failures, the stack's REPORT totals per function)."""
    offset = stack.log_offset() if stack is not None else 0
    before = {p: common.proc_cpu_seconds(p) for p in pids}
    wall, failures = _run_clients(kind, target, 1, n, pool, out, hosts)
    after = {p: common.proc_cpu_seconds(p) for p in pids}
    per = {p: max(0.0, (after[p] - before[p]) - idle[p] * wall) / n * 1000 for p in pids}
    return per, wall, failures, (stack.reports_since(offset) if stack is not None else {})


def _throughput(kind, target, server_pid, cpu_key, levels, per_client, repeats, pool, out, hosts=None):
    """({clients: enrollments/s and server CPU ms per enrollment}, failures) at each concurrency
    level; ``hosts`` (ours) are consumed, ``per_client`` for each client of each run."""
    tput, failures = {}, 0
    for c in levels:
        rates, cpu_at = [], []
        for _ in range(repeats):
            chunk = None
            if hosts is not None:
                chunk, hosts = hosts[:c * per_client], hosts[c * per_client:]
            before = common.proc_cpu_seconds(server_pid)
            wall, fails = _run_clients(kind, target, c, per_client, pool, out, chunk)
            cpu_at.append((common.proc_cpu_seconds(server_pid) - before) / (c * per_client) * 1000)
            failures += fails
            rates.append((c * per_client - fails) / wall)
        tput[str(c)] = {"enrollments_per_s": summary(rates, "1/s"), cpu_key: summary(cpu_at)}
    return tput, failures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def over_http(work: Path, *, n: int, repeats: int, levels: list[int], per_client: int, tput_repeats: int,
              pool: common.KeyPool) -> dict:
    from devicegate.local import tools

    results: dict = {"ours": {}, "scepserver": {}}
    # ------------------------------------------------------------ ours
    stack = Stack(work)
    CLIENT_CPU.clear()
    try:
        stack.start()
        state = stack.state
        total_hosts = 1 + repeats * n + sum(levels) * per_client * tput_repeats
        hosts = [str(uuid.uuid4()).upper() for _ in range(total_hosts)]
        for h in hosts:  # Fleet must know every host (DEVICEGATE_REQUIRE_KNOWN_HOST): done before any clock
            tools.fleet_add_host(state, h)
        out = work / "ours-out"
        out.mkdir(exist_ok=True)
        _enroll_ours(state, out / "warm", hosts.pop(), pool.next())  # warm the handlers (first request)
        CLIENT_CPU.clear()
        pids = [stack.pid, stack.moto_pid] + ([stack.fleet_pid] if stack.fleet_pid else [])
        idle = _idle_rate(pids)
        stack_cpu, moto_cpu, fleet_cpu, seq_rate, failures = [], [], [], [], 0
        lambda_cpu, lambda_wall, invocations = [], [], []
        for _ in range(repeats):
            chunk, hosts = hosts[:n], hosts[n:]
            per, wall, fails, reports = _cpu_run("ours", {"state": state}, pids, n, pool, out, chunk, idle, stack)
            lambda_cpu.append(sum(r["cpu_ms"] for r in reports.values()) / n)
            lambda_wall.append(sum(r["duration_ms"] for r in reports.values()) / n)
            invocations.append({f: r["invocations"] / n for f, r in reports.items()})
            stack_cpu.append(per[stack.pid])
            moto_cpu.append(per[stack.moto_pid])
            if stack.fleet_pid:
                fleet_cpu.append(per[stack.fleet_pid])
            seq_rate.append(n / wall)
            failures += fails
        results["ours"]["cpu_per_enrollment_stack_process"] = summary(stack_cpu)
        # what the Lambda functions cost (the handlers, per the gateway's REPORT lines); the rest
        # of the stack process is the load balancer stand-in (TLS, HTTP, event JSON)
        results["ours"]["cpu_per_enrollment_lambda"] = summary(lambda_cpu)
        results["ours"]["duration_per_enrollment_lambda"] = summary(lambda_wall)
        results["ours"]["cpu_per_enrollment_gateway"] = summary([s - l for s, l in zip(stack_cpu, lambda_cpu)])
        results["ours"]["lambda_invocations_per_enrollment"] = invocations[-1] if invocations else {}
        results["ours"]["cpu_per_enrollment_moto_process"] = summary(moto_cpu)
        results["ours"]["idle_cpu_fraction"] = {"stack": round(idle[stack.pid], 4), "moto": round(idle[stack.moto_pid], 4)}
        if stack.fleet_pid:
            # the server side of the "is this host known" lookup: Fleet's work, not ours, in production
            results["ours"]["cpu_per_enrollment_fleet_sim_process"] = summary(fleet_cpu)
            results["ours"]["idle_cpu_fraction"]["fleet_sim"] = round(idle[stack.fleet_pid], 4)
        tput, fails = _throughput("ours", {"state": state}, stack.pid, "stack_cpu_ms_per_enrollment", levels, per_client,
                                  tput_repeats, pool, out, hosts)
        results["ours"]["throughput"] = tput
        results["ours"]["failures"] = failures + fails
        results["ours"]["client_cpu_ms_per_enrollment"] = _client_cpu_ms()
        results["ours"]["client"] = "devicegate.local.tools.enroll (AES-256-CBC, SHA-256; GetCACert + POST PKIOperation " \
                                    "over one kept-alive TLS connection per enrollment, as scepclient keeps one HTTP " \
                                    "connection per run), one client process per concurrent client"
        where = "its own process, counted separately" if stack.fleet_pid else "same process"
        results["ours"]["transport"] = "HTTPS (TLS 1.3, gateway in the stack process); each enrollment includes the " \
                                       f"stack's Fleet lookup (simulated Fleet, HTTPS, {where})"
        results["ours"]["ca_key_bits"] = _ca_bits(stack.endpoints["scep_ca"])
    finally:
        stack.stop()
    # ------------------------------------------------------------ micromdm scepserver
    sdir = work / "scepserver"
    sdir.mkdir(exist_ok=True)
    depot = sdir / "depot"
    subprocess.run(["scepserver", "ca", "-init", "-depot", str(depot), "-keySize", "2048"], cwd=sdir,
                   check=True, capture_output=True, timeout=60)
    port = _free_port()
    log = open(sdir / "scepserver.log", "ab")
    proc = subprocess.Popen(["scepserver", "-depot", str(depot), "-port", str(port), "-challenge", "bench-secret"],
                            cwd=sdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/scep"
        _wait_http(url + "?operation=GetCACaps", proc)
        target = {"url": url, "challenge": "bench-secret"}
        out = work / "scepserver-out"
        out.mkdir(exist_ok=True)
        _run_clients("scepserver", target, 1, 1, pool, out)  # warm
        CLIENT_CPU.clear()
        pids = [proc.pid]
        idle = _idle_rate(pids)
        cpu, failures = [], 0
        for _ in range(repeats):
            per, wall, fails, _ = _cpu_run("scepserver", target, pids, n, pool, out, None, idle)
            cpu.append(per[proc.pid])
            failures += fails
        results["scepserver"]["cpu_per_enrollment"] = summary(cpu)
        tput, fails = _throughput("scepserver", target, proc.pid, "server_cpu_ms_per_enrollment", levels, per_client,
                                  tput_repeats, pool, out)
        results["scepserver"]["throughput"] = tput
        results["scepserver"]["failures"] = failures + fails
        results["scepserver"]["client_cpu_ms_per_enrollment"] = _client_cpu_ms()
        results["scepserver"]["ca_key_bits"] = _ca_bits((depot / "ca.pem").read_text())
        results["scepserver"]["client"] = "micromdm scepclient 2.1.0 (single DES, SHA-1; GetCACaps + GetCACert + " \
                                          "PKIOperation over one kept-alive HTTP connection), one process per " \
                                          "enrollment, pre-generated 2048-bit key"
        results["scepserver"]["transport"] = "plain HTTP; binds every interface (it has no listen-address option: " \
                                             "-port 127.0.0.1:P fails with 'too many colons'); driven via 127.0.0.1"
    finally:
        common.stop_group(proc)
        log.close()
    return results


def _ca_bits(pem: str) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem.encode()).public_key().key_size


def _wait_http(url, proc, timeout=20.0):
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError("scepserver exited")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("scepserver did not answer")
        time.sleep(0.05)
