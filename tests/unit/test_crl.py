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


def test_lambda_handler_publishes_the_crl_to_s3(store, scep_ca, moto_server, monkeypatch):
    """The scheduled Lambda end to end against moto: CA from Secrets Manager, revoked rows from the
    table, DER and PEM written to the bucket, a JSON log line (json, logging, os and boto3 are
    imported in the handler, not at import: this is the test that runs them)."""
    import json
    import logging
    import uuid

    import boto3
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    from devicegate import crl as crl_mod
    from tests.unit.test_sync import _issue_cert

    ca, key = scep_ca
    endpoint = moto_server.endpoint
    secret = f"ca-{uuid.uuid4().hex[:8]}"
    bucket = f"crl-{uuid.uuid4().hex[:8]}"
    boto3.client("secretsmanager", endpoint_url=endpoint, region_name="us-east-1").create_secret(
        Name=secret, SecretString=json.dumps({
            "certificate": ca.public_bytes(Encoding.PEM).decode(),
            "private_key": key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()}))
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    serial = _issue_cert(store, "HOST-CRL")
    assert store.revoke_certificate(serial, "key compromise", NOW)
    for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1", "DEVICEGATE_TABLE": store.table,
                        "DEVICEGATE_CRL_BUCKET": bucket, "DEVICEGATE_CA_SECRET": secret}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DEVICEGATE_TRUST_STORE_ARN", raising=False)
    logged = []
    handler = logging.Handler()
    handler.emit = lambda rec: logged.append(rec.getMessage())
    logger = logging.getLogger("devicegate.crl")
    logger.addHandler(handler)
    monkeypatch.setattr(logger, "level", logging.INFO)
    try:
        result = crl_mod.lambda_handler({}, None)
    finally:
        logger.removeHandler(handler)
    assert result["revoked"] == 1 and result["replaced_revocation_ids"] == []
    der = s3.get_object(Bucket=bucket, Key=crl_mod.CRL_KEY)["Body"].read()
    published = x509.load_der_x509_crl(der)
    assert published.is_signature_valid(ca.public_key())
    assert [r.serial_number for r in published] == [serial]
    assert x509.load_pem_x509_crl(s3.get_object(Bucket=bucket, Key=crl_mod.CRL_KEY + ".pem")["Body"].read()) == published
    assert [json.loads(line)["event"] for line in logged] == ["crl_published"]
