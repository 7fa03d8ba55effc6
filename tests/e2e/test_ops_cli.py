"""The operations CLI (`devicegate hosts|certs revoke|crl publish|sync now|doctor|rotate idp-key|
audit|profile`) against a running local stack: each command run as a user runs it (a process,
`--json`), its result checked against what the stack really does."""

from __future__ import annotations

import base64
import json
import os
import plistlib
import ssl
import subprocess
import sys

import pytest
from cryptography import x509
from lxml import etree

from devicegate.local import tools
from tests.stack_helpers import enrolled_device, request, running_stack, set_result

DS = "{http://www.w3.org/2000/09/xmldsig#}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # grace 0: an older certificate is revoked as soon as a newer one has signed in
    yield from running_stack(tmp_path_factory, "ops", args=("--sync-interval", "3600"),
                             env={"DEVICEGATE_SUPERSEDED_GRACE_HOURS": "0"})


def cli(stack, *args, expect=0):
    proc = subprocess.run([sys.executable, "-m", "devicegate", *args, "--state-dir", str(stack.state_dir), "--json"],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert proc.returncode == expect, (args, proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    return json.loads(proc.stdout) if proc.stdout.strip() else None, proc.stderr


def login(stack, device):
    return tools.login(stack.state_dir, device.cert_path, device.key_path, "ada@example.com")


def serial_of(device) -> str:
    return format(x509.load_pem_x509_certificate(device.cert_pem.encode()).serial_number, "x")


def test_hosts_sync_and_audit(stack, tmp_path):
    device = enrolled_device(stack, tmp_path / "mac")
    data, _ = cli(stack, "hosts", "--host", device.uuid)
    (host,) = data["hosts"]
    assert host["host_uuid"] == device.uuid and host["hostname"] == "ada-mbp"
    assert [c["serial"] for c in host["certificates"]] == [serial_of(device)]
    assert host["certificates"][0]["status"] == "active" and host["certificates"][0]["first_used_at"] is None
    assert host["compliance"]["verdict"] == "allow" and host["compliance"]["failing"] == []
    assert data["last_sync"]["complete"] is True

    assert login(stack, device).outcome == "allowed"
    tools.fleet_set_policy(stack.state_dir, device.uuid, "FileVault enabled", "fail", critical=True)
    refreshed, progress = cli(stack, "sync", "now", "--host", device.uuid)
    assert refreshed["results"] == {"FileVault enabled": "fail"}
    full, _ = cli(stack, "sync", "now")
    assert full["complete"] and full["hosts_seen"] >= 1
    blocked = login(stack, device)
    assert blocked.outcome == "blocked"

    data, _ = cli(stack, "hosts", "--host", device.uuid)
    host = data["hosts"][0]
    assert host["compliance"]["failing"] == ["FileVault enabled"]
    assert host["certificates"][0]["first_used_at"] is not None  # the first login recorded it

    records, _ = cli(stack, "audit", "--host", device.uuid, "--since", "10m")
    outcomes = [r["Outcome"] for r in records["records"]]
    assert outcomes == ["allow", "block"]
    allow, block = records["records"]
    for record in (allow, block):
        assert record["serial"] == serial_of(device) and record["user"] == "ada@example.com"
        assert record["correlation_id"] and record["request_id"].startswith("id")
    assert block["failing"] == ["FileVault enabled"]
    assert block["reasons"][0]["code"] == "policy_failing" and "FileVault enabled" in block["reasons"][0]["message"]
    only_blocks, _ = cli(stack, "audit", "--host", device.uuid, "--outcome", "block")
    assert [r["request_id"] for r in only_blocks["records"]] == [block["request_id"]]
    set_result(stack, device.uuid, "FileVault enabled", "pass")


def test_revoke_then_publish(stack, tmp_path):
    device = enrolled_device(stack, tmp_path / "mac")
    serial = serial_of(device)
    revoked, _ = cli(stack, "certs", "revoke", serial, "--no-publish", "--reason", "key compromise")
    assert revoked == {"revoked": [serial], "crl": None}
    refused = login(stack, device)  # the IdP refuses at once; the handshake still succeeds
    assert refused.outcome != "allowed" and "revoked" in refused.page_text.lower()
    records, _ = cli(stack, "audit", "--host", device.uuid, "--outcome", "device_refused")
    assert "key compromise" in records["records"][-1]["reasons"][0]["message"]

    checks, _ = cli(stack, "doctor", expect=5)  # the listener still accepts it: a failure, not a warning
    crl_check = next(c for c in checks["checks"] if c["check"] == "crl")
    assert crl_check["result"] == "fail" and "not in it yet" in crl_check["detail"]
    device_check, _ = cli(stack, "doctor", "--cert", str(device.cert_path), "--key", str(device.key_path), expect=5)
    detail = next(c for c in device_check["checks"] if c["check"] == "tls device with certificate")
    assert detail["result"] == "fail" and "revoked in the table but the load balancer still accepts it" in detail["detail"]

    published, _ = cli(stack, "crl", "publish")
    assert published["revoked"] >= 1
    crl = x509.load_pem_x509_crl(open(published["published_to"][0], "rb").read())
    assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
    checks, _ = cli(stack, "doctor")
    assert next(c for c in checks["checks"] if c["check"] == "crl")["result"] == "ok"
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):  # the listener reloads within a second
        for _ in range(40):
            request(stack.endpoints["device_url"] + "/healthz", device.context(stack.endpoints["tls_ca"]))
            import time

            time.sleep(0.25)

    again, _ = cli(stack, "certs", "revoke", serial, "--no-publish")
    assert again["revoked"] == []  # already revoked: nothing changes
    _, err = cli(stack, "certs", "revoke", "zz", expect=1)
    assert "not a hex serial" in err
    _, err = cli(stack, "certs", "revoke", expect=1)
    assert "say which" in err
    _, err = cli(stack, "audit", "--since", "2x", expect=1)
    assert "--since '2x'" in err and "Traceback" not in err
    _, err = cli(stack, "audit", "--since", "99999999d", expect=1)
    assert "Traceback" not in err


def test_old_certificate_revoked_once_the_newer_one_is_used(stack, tmp_path):
    old = enrolled_device(stack, tmp_path / "old")
    newer = tools.enroll(stack.state_dir, tmp_path / "new", old.uuid)
    assert login(stack, old).outcome == "allowed"
    cli(stack, "sync", "now")  # the newer one never signed in: the old one stays
    data, _ = cli(stack, "hosts", "--host", old.uuid)
    assert [c["status"] for c in data["hosts"][0]["certificates"]] == ["active", "active"]

    assert tools.login(stack.state_dir, newer.cert_path, newer.key_path, "ada@example.com").outcome == "allowed"
    report, _ = cli(stack, "sync", "now")
    assert report["superseded_revoked"] == [serial_of(old)]
    data, _ = cli(stack, "hosts", "--host", old.uuid)
    certs = data["hosts"][0]["certificates"]
    assert [(c["status"], c["revocation_reason"]) for c in certs] == [("revoked", "superseded"), ("active", None)]
    crl = x509.load_pem_x509_crl((stack.state_dir / "ca" / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(int(serial_of(old), 16)) is not None
    assert login(stack, old).outcome != "allowed"


def test_doctor_all_good_and_with_a_device(stack, tmp_path):
    device = enrolled_device(stack, tmp_path / "mac")
    cli(stack, "crl", "publish")
    data, _ = cli(stack, "doctor", "--cert", str(device.cert_path), "--key", str(device.key_path))
    results = {c["check"]: c["result"] for c in data["checks"]}
    assert data["ok"] and set(results.values()) == {"ok"}, data
    for name in ("dns public", "dns device", "tls public", "tls device refuses no certificate",
                 "tls device with certificate", "clock", "scep", "metadata", "trust store = CA", "crl", "sync",
                 "okta idp certificate"):
        assert name in results


def test_rotate_idp_key_two_key_rollover(stack, tmp_path):
    device = enrolled_device(stack, tmp_path / "mac")
    before, _ = cli(stack, "rotate", "idp-key", "--step", "status")
    assert before["stage"] == "steady" and before["current"] == before["okta_trusts"]
    staged, _ = cli(stack, "rotate", "idp-key", "--step", "stage")
    status, _ = cli(stack, "rotate", "idp-key", "--step", "status")
    assert status["next"] == staged["next"] and status["current"] == before["current"]
    assert login(stack, device).outcome == "allowed"  # still signing with the current key

    activated, _ = cli(stack, "rotate", "idp-key", "--step", "activate")
    assert activated["current"] == staged["next"] and activated["previous"] == before["current"]
    result = login(stack, device)
    assert result.outcome == "allowed", result.page_text  # local Okta verifies with the new certificate
    _, _, body = request(stack.endpoints["metadata_url"], ssl.create_default_context(cadata=stack.endpoints["tls_ca"]))
    certs = [x509.load_der_x509_certificate(base64.b64decode(e.text)) for e in etree.fromstring(body).iter(f"{DS}X509Certificate")]
    assert len(certs) == 2  # new first, the previous still published

    cli(stack, "rotate", "idp-key", "--step", "finish")
    after, _ = cli(stack, "rotate", "idp-key", "--step", "status")
    assert after["stage"] == "steady" and after["current"] == after["okta_trusts"] == staged["next"]
    _, err = cli(stack, "rotate", "idp-key", "--step", "activate", expect=1)
    assert "no key is staged" in err


def test_a_left_over_endpoints_file_is_not_a_running_stack(stack, tmp_path):
    import shutil

    dead = tmp_path / "dead"
    dead.mkdir()
    e = json.loads((stack.state_dir / "endpoints.json").read_text())
    probe = subprocess.Popen([sys.executable, "-c", "pass"])
    probe.wait()
    e["pid"] = probe.pid  # a process that has exited
    (dead / "endpoints.json").write_text(json.dumps(e))
    proc = subprocess.run([sys.executable, "-m", "devicegate", "hosts", "--state-dir", str(dead)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "is not running" in proc.stderr and "Traceback" not in proc.stderr
    shutil.rmtree(dead)


def test_profile_and_errors(stack, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "devicegate", "profile", "--state-dir", str(stack.state_dir)],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0
    profile = plistlib.loads(proc.stdout)
    assert profile["PayloadScope"] == "User"
    proc = subprocess.run([sys.executable, "-m", "devicegate", "hosts"], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if not k.startswith("DEVICEGATE_")})
    assert proc.returncode == 1 and "--state-dir DIR" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "devicegate", "hosts", "--outputs", str(tmp_path / "none.json")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "pulumi stack output --json --show-secrets" in proc.stderr


def test_only_an_allowed_login_records_that_a_certificate_is_in_use(stack, tmp_path):
    """A blocked (or refused) login must not start the grace of a host's older certificates:
    otherwise a second certificate enrolled for a UUID could get the first revoked."""
    device = enrolled_device(stack, tmp_path / "mac", policies=(("FileVault enabled", "fail", True),))
    assert login(stack, device).outcome == "blocked"
    data, _ = cli(stack, "hosts", "--host", device.uuid)
    assert data["hosts"][0]["certificates"][0]["first_used_at"] is None
    set_result(stack, device.uuid, "FileVault enabled", "pass")
    assert login(stack, device).outcome == "allowed"
    data, _ = cli(stack, "hosts", "--host", device.uuid)
    cert = data["hosts"][0]["certificates"][0]
    assert cert["first_used_at"] is not None and cert["first_used_at"] == cert["last_used_at"]
