"""Load on the real local stack: 200 concurrent enrollments and 2,000 logins over real HTTPS.

Invariants are asserted (no duplicate serials, every issued certificate has its record, every
allowed login ends in a Response the local Okta verified, no 5xx, every refusal says why);
latencies are printed and written to ``test-output/load.json``, never asserted. Loopback only,
bounded in count.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from devicegate.local import tools
from tests.load.load_helpers import (
    Table,
    latency_summary,
    record_figures,
    timed,
)
from tests.stack_helpers import running_stack

HOSTS = 200
UNKNOWN_HOSTS = 8  # enrollments Fleet must refuse, mixed into the burst
LOGINS = 2000
FAILING_EVERY = 10  # every tenth host fails a critical policy: its logins are blocked
ENROLL_WORKERS = 8  # the client's key generation holds the GIL: more threads only queue
LOGIN_WORKERS = 16
POLICY = "FileVault enabled"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from running_stack(tmp_path_factory, "load", args=("--sync-interval", "3600"))


def test_200_enrollments_and_2000_logins(stack, tmp_path):
    import uuid as uuid_mod

    state = stack.state_dir
    hosts = [str(uuid_mod.uuid4()).upper() for _ in range(HOSTS)]
    failing = set(hosts[::FAILING_EVERY])

    def add(host):
        tools.fleet_add_host(state, host, f"mac-{host[:8].lower()}", "ada@example.com")
        tools.fleet_set_policy(state, host, POLICY, "fail" if host in failing else "pass", critical=True,
                               resolution="Turn on FileVault.")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, hosts))

    # ---------------------------------------------------------------- 200 enrollments at once
    strangers = [str(uuid_mod.uuid4()).upper() for _ in range(UNKNOWN_HOSTS)]
    work = [(h, True) for h in hosts] + [(h, False) for h in strangers]

    def enroll(item):
        host, known = item
        try:
            enrolled, seconds = timed(tools.enroll, state, tmp_path / host, host)
            return host, known, enrolled, None, seconds
        except tools.ToolError as exc:
            return host, known, None, str(exc), None

    started = time.monotonic()
    with ThreadPoolExecutor(ENROLL_WORKERS) as pool:
        results = list(pool.map(enroll, work[::2] + work[1::2]))  # strangers spread through the burst
    enroll_wall = time.monotonic() - started

    issued = {host: enrolled for host, known, enrolled, _, _ in results if enrolled}
    for host, known, enrolled, error, _ in results:
        if known:
            assert enrolled is not None, f"{host} was refused: {error}"
        else:
            assert enrolled is None and "not known to Fleet" in error, (host, error)  # refused, and why
    serials = [e.serial for e in issued.values()]
    assert len(serials) == HOSTS and len(set(serials)) == HOSTS, "no duplicate serials"

    table = Table(stack.endpoints)
    for host, enrolled in issued.items():
        record = table.certificate(enrolled.serial)
        cert = x509.load_pem_x509_certificate(enrolled.cert_path.read_bytes())
        assert record is not None, f"certificate {enrolled.serial} was handed out without its record"
        assert record["host_uuid"]["S"] == host and bytes(record["der"]["B"]) == cert.public_bytes(Encoding.DER)
        assert table.host_link(host, enrolled.serial), "the host -> certificate link is recorded"

    # ---------------------------------------------------------------- 2,000 logins
    # (synced only now: enrolling needs Fleet to know the host, not its compliance, and moto's
    # TransactWriteItems copies the whole table, so a smaller table makes the burst cheaper)
    assert tools.sync_now(state)["complete"]
    devices = [issued[h] for h in hosts]

    def login(i):
        device = devices[i % HOSTS]
        result, seconds = timed(tools.login, state, device.cert_path, device.key_path, "ada@example.com",
                                "post" if i % 4 == 0 else "redirect")
        return device.host_uuid, result, seconds

    started = time.monotonic()
    with ThreadPoolExecutor(LOGIN_WORKERS) as pool:
        logins = list(pool.map(login, range(LOGINS)))
    login_wall = time.monotonic() - started

    outcomes = {"allowed": 0, "blocked": 0}
    for host, result, _ in logins:
        assert result.status < 500, f"{host}: HTTP {result.status}: {result.page_text[:300]}"
        if host in failing:
            assert result.outcome == "blocked" and result.status == 403, (host, result.status, result.page_text[:300])
            assert POLICY in result.page_text and "Turn on FileVault." in result.page_text, "the block says why"
        else:
            details = dict(result.summary)
            assert result.outcome == "allowed", (host, result.status, result.page_text[:300])
            # the local Okta verified the Assertion's signature with the IdP certificate
            assert details["Signature"].startswith("Assertion signature verified") and details["NameID"] == "ada@example.com"
        outcomes[result.outcome] += 1
    assert outcomes == {"allowed": LOGINS - LOGINS // FAILING_EVERY, "blocked": LOGINS // FAILING_EVERY}

    figures = {
        "enrollments": {"count": HOSTS, "refused_unknown": UNKNOWN_HOSTS, "workers": ENROLL_WORKERS,
                        "wall_seconds": round(enroll_wall, 2),
                        **latency_summary([s for *_, s in results if s is not None])},
        "logins": {"count": LOGINS, **outcomes, "workers": LOGIN_WORKERS, "wall_seconds": round(login_wall, 2),
                   **latency_summary([s for *_, s in logins])},
    }
    record_figures("load", figures)
