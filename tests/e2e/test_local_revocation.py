"""Revocation at both layers on the real local stack: the IdP at once, the TLS handshake once
the CRL is published (and after a restart)."""

from __future__ import annotations

import ssl
import time

import pytest
from cryptography import x509

from devicegate.local import tools
from tests.stack_helpers import StackProcess, enrolled_device, request, running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from running_stack(tmp_path_factory, "revocation", args=("--sync-interval", "3600"))


def healthz(stack, device):
    return request(stack.endpoints["device_url"] + "/healthz", device.context(stack.endpoints["tls_ca"]))


def refused_at_handshake(stack, device, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            healthz(stack, device)
        except (ssl.SSLError, ConnectionError, OSError):
            return True
        time.sleep(0.2)
    return False


def test_revocation_at_the_idp_then_at_the_handshake(stack, tmp_path):
    device = enrolled_device(stack, tmp_path / "mac")
    other = enrolled_device(stack, tmp_path / "other")
    assert healthz(stack, device)[0] == 200
    serial = format(x509.load_pem_x509_certificate(device.cert_pem.encode()).serial_number, "x")

    result = tools.revoke(stack.state_dir, serial=serial, publish=False)
    assert result["revoked"] == [serial]
    # the IdP refuses it at once, while TLS (no CRL yet) still lets it in
    login = tools.login(stack.state_dir, device.cert_path, device.key_path, "ada@example.com")
    assert login.status == 403 and "revoked" in login.page_text

    tools.publish_crl(stack.state_dir)
    assert refused_at_handshake(stack, device), "the device listener refuses a revoked certificate"
    assert healthz(stack, other)[0] == 200, "others are not affected"

    again = tools.revoke(stack.state_dir, serial=serial)
    assert again["revoked"] == [], "revoking twice changes nothing"


def test_revoke_a_host_and_keep_it_revoked_across_a_restart(tmp_path):
    proc = StackProcess(tmp_path / "state", args=("--sync-interval", "3600"))
    proc.start()
    try:
        device = enrolled_device(proc, tmp_path / "mac")
        result = tools.revoke(proc.state_dir, host_uuid=device.uuid)
        assert len(result["revoked"]) == 1 and result["crl"]["revoked_serials"] == result["revoked"]
        assert refused_at_handshake(proc, device)
        assert proc.stop() == 0
        proc.start()
        assert refused_at_handshake(proc, device, timeout=3), "still refused after a restart"
    finally:
        proc.stop()


def test_revoke_explains_bad_input(stack):
    with pytest.raises(tools.ToolError, match="not a hex serial"):
        tools.revoke(stack.state_dir, serial="xyz")
    with pytest.raises(tools.ToolError, match="no certificate"):
        tools.revoke(stack.state_dir, serial="abc123")
    with pytest.raises(tools.ToolError, match="say which"):
        tools.revoke(stack.state_dir)
    with pytest.raises(tools.ToolError, match="not both"):
        tools.revoke(stack.state_dir, serial="abc123", host_uuid="5F0C3E8A-1B2C-4D5E-8F90-A1B2C3D4E5F6")


def test_a_stale_or_corrupt_crl_is_rebuilt_from_the_table_at_start(tmp_path):
    from datetime import datetime, timedelta, timezone

    from cryptography.hazmat.primitives.serialization import Encoding

    from devicegate.crl import build_crl
    from devicegate.local import pki

    proc = StackProcess(tmp_path / "state", args=("--sync-interval", "3600"))
    proc.start()
    try:
        good = enrolled_device(proc, tmp_path / "good")
        bad = enrolled_device(proc, tmp_path / "bad")
        tools.revoke(proc.state_dir, host_uuid=bad.uuid)
        assert refused_at_handshake(proc, bad)
        assert proc.stop() == 0
        crl_path = proc.state_dir / "ca" / "crl.pem"
        crl_path.write_text("garbage\n")  # corrupt: the stack must still start, with the table's CRL
        proc.start()
        assert healthz(proc, good)[0] == 200 and refused_at_handshake(proc, bad, timeout=3)
        assert proc.stop() == 0
        ca, key = pki.load_or_create_pair(proc.state_dir / "ca", "scep-ca", lambda: None)
        old = build_crl(ca, key, [], now=datetime.now(timezone.utc) - timedelta(days=8), number=1)
        crl_path.write_bytes(old.public_bytes(Encoding.PEM))  # expired: would refuse everyone
        proc.start()
        assert healthz(proc, good)[0] == 200 and refused_at_handshake(proc, bad, timeout=3)
    finally:
        proc.stop()
