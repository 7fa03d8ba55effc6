"""The CRL: built from revoked records, signed by the CA, readable by OpenSSL."""

import subprocess
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from devicegate.crl import build_crl, crl_files
from devicegate.store import CertificateRecord

NOW = datetime(2026, 12, 3, tzinfo=timezone.utc)


def record(serial, reason):
    return CertificateRecord(serial=serial, host_uuid="H", status="revoked", not_before=NOW, not_after=NOW, issued_at=NOW,
                             der=b"", revoked_at=NOW - timedelta(hours=1), revocation_reason=reason)


def test_crl_lists_revoked_serials_and_verifies(scep_ca, tmp_path):
    ca, key = scep_ca
    crl = build_crl(ca, key, [record(5, "host removed from Fleet"), record(3, "superseded"), record(9, "other")],
                    now=NOW, number=42)
    assert crl.is_signature_valid(ca.public_key())
    assert [r.serial_number for r in crl] == [3, 5, 9]
    assert crl.get_revoked_certificate_by_serial_number(5).extensions.get_extension_for_class(x509.CRLReason).value.reason \
        == x509.ReasonFlags.cessation_of_operation
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 42
    files = crl_files(crl)
    (tmp_path / "crl.pem").write_bytes(files["crl/devicegate.crl.pem"])
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(Encoding.PEM))
    out = subprocess.run(["openssl", "crl", "-in", str(tmp_path / "crl.pem"), "-CAfile", str(tmp_path / "ca.pem"),
                          "-noout"], capture_output=True, text=True)
    assert "verify OK" in out.stderr + out.stdout


def test_revoked_certificates_come_from_the_store(store):
    from tests.unit.test_sync import _issue_cert

    serial = _issue_cert(store, "HOST-A")
    assert store.revoked_certificates() == []
    assert store.revoke_certificate(serial, "superseded", NOW)
    assert [r.serial for r in store.revoked_certificates()] == [serial]
    assert not store.revoke_certificate(serial, "superseded", NOW), "revoking twice is a no-op"
