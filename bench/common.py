"""Shared helpers: statistics, /proc CPU accounting, process control by PID, a moto world."""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAMBDAS = REPO / "lambdas"
CLK_TCK = os.sysconf("SC_CLK_TCK")

if str(LAMBDAS) not in sys.path:  # the venv has devicegate installed; this makes bench/ self-sufficient
    sys.path.insert(0, str(LAMBDAS))


def median(values):
    values = list(values)
    return statistics.median(values) if values else None


def summary(values, unit: str = "ms") -> dict:
    """Median plus spread of repeated measurements."""
    values = [float(v) for v in values]
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "repeats": len(values),
        "unit": unit,
    }


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads, living and dead) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        data = handle.read()
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is state (field 3); utime is field 14, stime field 15 (1-based in proc(5))
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_of(pid: int) -> list[int]:
    kids: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    for task in task_dir.iterdir() if task_dir.exists() else ():
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stop_group(proc: subprocess.Popen, grace: float = 15.0) -> int | None:
    """Stop a process we started in its own session: SIGTERM to its group (by its PID), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import cryptography

    mem = ""
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "os": _os_release(),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "other_busy_processes": _busy_others(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
    }


def _busy_others() -> list[str]:
    """Other people's long-running servers on this shared machine (they add noise; named, not touched)."""
    mine = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != mine:
            line = cmdline(int(entry.name))
            if any(s in line for s in ("devicegate local up", "moto", "scepserver", "devicegate.local.dynamo")):
                found.append(f"{entry.name}: {line[:100]}")
    return found


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


# ---------------------------------------------------------------------------- DynamoDB call counting


def _conditional(operation_name: str, params: dict) -> bool:
    return bool(params.get("ConditionExpression")) or (
        operation_name == "TransactWriteItems"
        and any("ConditionExpression" in next(iter(i.values()), {}) for i in params.get("TransactItems", []))
    )


def _items_read(operation_name: str, params: dict) -> int:
    """Items a read asks for: a BatchGetItem or TransactGetItems reads one per key, as two GetItems would."""
    if operation_name == "BatchGetItem":
        return sum(len(table.get("Keys", ())) for table in params.get("RequestItems", {}).values())
    if operation_name == "TransactGetItems":
        return len(params.get("TransactItems", ()))
    return 1


class CallCounter:
    """Counts every AWS API call made in this process (all botocore clients and devicegate.awsjson's),
    by service and operation."""

    READS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}
    WRITES = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}

    def __init__(self):
        self.calls: list[tuple[str, str, bool, int]] = []  # service, operation, conditional, items read
        self._original = None

    def __enter__(self):
        from botocore.client import BaseClient

        self._original = original = BaseClient._make_api_call
        counter = self

        def counting(client, operation_name, api_params):
            service = client.meta.service_model.service_name
            counter.calls.append((service, operation_name, _conditional(operation_name, api_params),
                                  _items_read(operation_name, api_params)))
            return original(client, operation_name, api_params)

        BaseClient._make_api_call = counting

        from devicegate import awsjson  # the Lambdas' own client: its single entry point too

        self._original_light = original_light = awsjson.Client.call

        def counting_light(client, operation_name, params):
            counter.calls.append((client.service, operation_name, _conditional(operation_name, params),
                                  _items_read(operation_name, params)))
            return original_light(client, operation_name, params)

        awsjson.Client.call = counting_light
        return self

    def __exit__(self, *exc):
        from botocore.client import BaseClient

        from devicegate import awsjson

        BaseClient._make_api_call = self._original
        awsjson.Client.call = self._original_light

    def reset(self):
        self.calls.clear()

    def dynamodb(self) -> dict:
        ops: dict[str, int] = {}
        conditional = items = 0
        for service, op, cond, read in self.calls:
            if service != "dynamodb":
                continue
            ops[op] = ops.get(op, 0) + 1
            conditional += cond and op in self.WRITES
            items += read if op in self.READS else 0
        writes = sum(n for op, n in ops.items() if op in self.WRITES)
        # reads: items read (a BatchGetItem of two keys is two reads, in one call)
        return {"total": sum(ops.values()), "reads": items, "read_calls": sum(n for op, n in ops.items() if op in self.READS),
                "writes": writes, "conditional_writes": conditional, "by_operation": dict(sorted(ops.items()))}

    def other_services(self) -> dict:
        ops: dict[str, int] = {}
        for service, op, _, _ in self.calls:
            if service != "dynamodb":
                ops[f"{service}:{op}"] = ops.get(f"{service}:{op}", 0) + 1
        return ops


# ---------------------------------------------------------------------------- an in-process world on moto


class World:
    """A moto server (own process), a table, the secrets, and the environment the handlers read:
    the SCEP and IdP Lambdas wired exactly as infra wires them, minus Fleet (no Fleet URL: SCEP
    accepts any host, the IdP reads compliance from the store)."""

    AUDIENCE = "https://example.okta.com/saml2/service-provider/spdevicegate"
    ACS = "https://example.okta.com/sso/saml2/0oadevicegate"
    ENTITY = "https://devicegate.example.com/saml/metadata"
    SSO = "https://okta.devicegate.example.com/saml/sso"
    CHALLENGE = "bench-challenge-" + "x" * 16

    def __init__(self):
        from devicegate.local import pki

        self.pki = pki
        self.ca_key = pki.new_key()
        self.ca_cert = pki.self_signed_ca("bench SCEP CA", self.ca_key, scep=True)
        self.idp_key = pki.new_key()
        self.idp_cert = pki.signing_certificate("bench IdP", self.idp_key)
        self.sp_key = pki.new_key()
        self.sp_cert = pki.signing_certificate("bench Okta SP", self.sp_key)
        self.moto = None
        self.saved_env = None

    def start(self) -> "World":
        import boto3

        from devicegate import store as store_mod
        from devicegate.local import dynamo

        self.moto = dynamo.MotoServer().start()
        suffix = uuid.uuid4().hex[:8]
        self.table = f"bench-{suffix}"
        self.saved_env = dict(os.environ)
        env = {
            **dynamo.LOCAL_CREDENTIALS,
            "AWS_ENDPOINT_URL": self.moto.endpoint,
            "DEVICEGATE_TABLE": self.table,
            "DEVICEGATE_CA_SECRET": f"ca-{suffix}",
            "DEVICEGATE_SCEP_CHALLENGE_SECRET": f"challenge-{suffix}",
            "DEVICEGATE_IDP_KEY_SECRET": f"idp-{suffix}",
            "DEVICEGATE_IDP_ENTITY_ID": self.ENTITY,
            "DEVICEGATE_SSO_URL": self.SSO,
            "DEVICEGATE_OKTA_AUDIENCE": self.AUDIENCE,
            "DEVICEGATE_OKTA_ACS_URL": self.ACS,
            "DEVICEGATE_OKTA_SP_CERT": self.pki.pem_cert(self.sp_cert),
            "POWERTOOLS_SERVICE_NAME": "devicegate-bench",
        }
        for key in [k for k in os.environ if k.startswith("DEVICEGATE_FLEET")]:
            del os.environ[key]
        os.environ.update(env)
        self.env = env
        kwargs = {"endpoint_url": self.moto.endpoint, "region_name": "us-east-1"}
        store_mod.create_table(boto3.client("dynamodb", **kwargs), self.table)
        sm = boto3.client("secretsmanager", **kwargs)
        sm.create_secret(Name=f"ca-{suffix}", SecretString=json.dumps(
            {"certificate": self.pki.pem_cert(self.ca_cert), "private_key": self.pki.pem_key(self.ca_key)}))
        sm.create_secret(Name=f"idp-{suffix}", SecretString=json.dumps(
            {"certificate": self.pki.pem_cert(self.idp_cert), "private_key": self.pki.pem_key(self.idp_key)}))
        sm.create_secret(Name=f"challenge-{suffix}", SecretString=self.CHALLENGE)
        self.store = store_mod.Store(self.table, endpoint=self.moto.endpoint)
        self.reset_handlers()
        return self

    @staticmethod
    def reset_handlers():
        from devicegate.saml import handler as saml_handler
        from devicegate.scep import handler as scep_handler

        scep_handler.reset()
        saml_handler.reset()

    def stop(self):
        if self.moto is not None:
            self.moto.stop()
            self.moto = None
        if self.saved_env is not None:
            os.environ.clear()
            os.environ.update(self.saved_env)
            self.saved_env = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@contextmanager
def timed():
    box = {}
    wall, cpu = time.perf_counter(), time.process_time()
    yield box
    box["wall"] = time.perf_counter() - wall
    box["cpu"] = time.process_time() - cpu


class KeyPool:
    """Client RSA keys made once (key generation is client cost, not server cost)."""

    def __init__(self, size: int = 8, bits: int = 2048):
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.keys = [rsa.generate_private_key(public_exponent=65537, key_size=bits) for _ in range(size)]
        self.i = 0

    def next(self):
        key = self.keys[self.i % len(self.keys)]
        self.i += 1
        return key
