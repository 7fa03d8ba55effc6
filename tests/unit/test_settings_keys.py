"""Key loading from the CA / IdP secrets: what is parsed, what is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from unittest import mock

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devicegate import settings
from devicegate.local import pki


@pytest.fixture(scope="module")
def ca():
    key = pki.new_key()
    return pki.self_signed_ca("settings test CA", key, scep=True), key


def _pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _secret(cert, key_pem: str) -> str:
    return json.dumps({"certificate": cert.public_bytes(serialization.Encoding.PEM).decode(), "private_key": key_pem})


def test_ca_secret_loads_certificate_and_a_working_key(ca):
    cert, key = ca
    parsed = settings.parse_ca_secret("ca", _secret(cert, _pem(key)))
    assert parsed.certificate == cert
    assert parsed.private_key.private_numbers() == key.private_numbers()


def test_certificate_alone_leaves_the_private_key_unparsed(ca):
    cert, key = ca
    with mock.patch.object(serialization, "load_pem_private_key", side_effect=AssertionError("parsed the key")):
        assert settings.parse_ca_certificate("ca", _secret(cert, _pem(key))) == cert
    with pytest.raises(settings.ConfigError, match="certificate"):
        settings.parse_ca_certificate("ca", json.dumps({"private_key": _pem(key)}))


def test_key_of_another_certificate_is_refused(ca):
    cert, _ = ca
    with pytest.raises(settings.ConfigError, match="do not match"):
        settings.parse_ca_secret("ca", _secret(cert, _pem(pki.new_key())))


def test_damaged_private_half_is_refused_at_load(ca):
    # The modulus matches the certificate, but the private exponent and CRT values are wrong:
    # with OpenSSL's key check skipped, the signing probe is what catches it.
    cert, key = ca
    n = key.private_numbers()
    bad = rsa.RSAPrivateNumbers(p=n.p, q=n.q, d=n.d ^ 2, dmp1=n.dmp1 ^ 2, dmq1=n.dmq1 ^ 2, iqmp=n.iqmp,
                                public_numbers=n.public_numbers)
    damaged = bad.private_key(unsafe_skip_rsa_key_validation=True)
    with pytest.raises(settings.ConfigError, match="do not match"):
        settings.parse_ca_secret("ca", _secret(cert, _pem(damaged)))


def test_readers_of_settings_do_not_load_cryptography():
    # The webhook, the sync and /healthz read settings but never a key or certificate.
    code = ("import sys; import devicegate.settings, devicegate.health, devicegate.compliance.webhook; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cryptography', 'asn1crypto')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
