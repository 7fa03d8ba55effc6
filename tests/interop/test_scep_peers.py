"""Real SCEP clients against the real local stack, over HTTPS.

certmonger (C, OpenSSL 3; FreeIPA's client) enrolls and its certificate works for mTLS;
micromdm scepclient (Go) always encrypts with single DES, which we refuse with badAlg.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.interop import peers
from tests.stack_helpers import fleet_host, request, running_stack, tls_context

pytestmark = pytest.mark.interop


def _need(*programs, root=False):
    missing = peers.missing_programs(*programs)
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    if root and __import__("os").geteuid() != 0:
        pytest.skip("needs root for certmonger's private mount namespace")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from running_stack(tmp_path_factory, "interop")


def test_certmonger_enrolls_and_its_certificate_opens_the_device_listener(stack, tmp_path):
    _need("certmonger", "getcert", "dbus-daemon", "unshare", "mount", "openssl", root=True)
    e = stack.endpoints
    host = fleet_host(stack, policies=(), sync=False)  # the CN names a host Fleet knows
    with peers.Certmonger(tmp_path / "certmonger", tls_ca_pem=e["tls_ca"]) as cm:
        cm.add_scep_ca("devicegate", e["scep_url"], e["scep_ca"], tls_ca_pem=e["tls_ca"])
        info = cm.enroll("devicegate", host, e["scep_challenge"], expect="MONITORING", timeout=90)
    cert_path, key_path = Path(info["cert-file"]), Path(info["key-file"])
    ca_path = stack.state_dir / "ca" / "scep-ca.pem"

    verify = subprocess.run(["openssl", "verify", "-CAfile", str(ca_path), "-purpose", "sslclient", str(cert_path)],
                            capture_output=True, text=True, timeout=30)
    assert verify.returncode == 0 and verify.stdout.strip().endswith(": OK"), verify.stdout + verify.stderr

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"urn:device:apple:uuid:{host}"]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == host

    # the certificate certmonger received completes mTLS, and the handler sees its serial
    ctx = tls_context(e["tls_ca"], cert_path.read_text(), key_path.read_text())
    status, _, body = request(e["device_url"] + "/healthz", ctx)
    assert status == 200
    seen = json.loads(body)["client_certificate"]
    assert int(seen["serial"], 16) == cert.serial_number and seen["host_uuid"] == host


def test_certmonger_with_a_wrong_challenge_is_rejected_cleanly(stack, tmp_path):
    _need("certmonger", "getcert", "dbus-daemon", "unshare", "mount", root=True)
    e = stack.endpoints
    with peers.Certmonger(tmp_path / "certmonger", tls_ca_pem=e["tls_ca"]) as cm:
        cm.add_scep_ca("devicegate", e["scep_url"], e["scep_ca"], tls_ca_pem=e["tls_ca"])
        info = cm.enroll("devicegate", str(uuid.uuid4()).upper(), "wrong-challenge", expect="CA_REJECTED", timeout=90)
    assert info["status"] == "CA_REJECTED"


@pytest.mark.parametrize("challenge", ["plain", "with_!@"])  # the latter becomes a UTF8String
def test_scepclient_single_des_gets_bad_alg(stack, tmp_path, challenge):
    _need("scepclient")
    e = stack.endpoints
    result = peers.scepclient(tmp_path, e["scep_url"], challenge, str(uuid.uuid4()).upper(), tls_ca_pem=e["tls_ca"])
    output = result.stdout + result.stderr
    assert result.returncode == 1 and not result.cert_path.exists(), output
    # scepclient decoded our CertRep (signature verified) and reports its failInfo
    assert "badAlg" in output, output
    assert "Internal Server Error" not in output and "status code 500" not in output.lower()
