"""The CA's certificate revocation list, and the Lambda that publishes it.

Revocation takes effect in the IdP at once (the certificate record says ``revoked``); the CRL
makes the device load balancer refuse the TLS handshake too. The Lambda builds the CRL from
the table, writes it to S3 (DER and PEM) and replaces the ALB trust store's revocation list.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

NEXT_UPDATE = timedelta(days=7)  # published daily; a week of slack before clients see it stale
CRL_KEY = "crl/devicegate.crl"
_REASONS = {
    "host removed from fleet": x509.ReasonFlags.cessation_of_operation,
    "superseded": x509.ReasonFlags.superseded,
    "key compromise": x509.ReasonFlags.key_compromise,
}


def build_crl(ca_cert: x509.Certificate, ca_key, revoked, *, now: datetime, number: int) -> x509.CertificateRevocationList:
    """``revoked``: CertificateRecords with status revoked."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + NEXT_UPDATE)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
    )
    for record in sorted(revoked, key=lambda r: r.serial):
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(record.serial)
            .revocation_date(record.revoked_at or now)
        )
        reason = _REASONS.get((record.revocation_reason or "").lower())
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca_key, hashes.SHA256())


def crl_files(crl: x509.CertificateRevocationList) -> dict[str, bytes]:
    return {
        CRL_KEY: crl.public_bytes(serialization.Encoding.DER),
        CRL_KEY + ".pem": crl.public_bytes(serialization.Encoding.PEM),
    }


def lambda_handler(event, context):
    """Scheduled daily, and invoked after a revocation (aws lambda invoke; locally `devicegate local crl publish`)."""
    import json  # json, logging, os: only the (daily) publication needs them, not the import
    import logging
    import os

    import boto3

    from . import settings
    from .store import Store

    table = settings.table_name()
    bucket = os.environ.get("DEVICEGATE_CRL_BUCKET", "").strip()
    trust_store = os.environ.get("DEVICEGATE_TRUST_STORE_ARN", "").strip()
    if not bucket:
        raise settings.ConfigError("DEVICEGATE_CRL_BUCKET", "is not set", "set it to the trust-store bucket (infra sets it)")
    secret_id = settings._required(os.environ, "DEVICEGATE_CA_SECRET", "set it to the CA secret id")
    ca = settings.parse_ca_secret(secret_id, settings.Secrets().get(secret_id, ttl=0))
    store = Store(table)
    now = datetime.now(timezone.utc)
    revoked = store.revoked_certificates()
    crl = build_crl(ca.certificate, ca.private_key, revoked, now=now, number=int(now.timestamp()))
    s3 = boto3.client("s3")
    versions = {}
    for key, body in crl_files(crl).items():
        versions[key] = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/pkix-crl")["VersionId"]
    replaced = []
    if trust_store:
        elb = boto3.client("elbv2")
        old = elb.describe_trust_store_revocations(TrustStoreArn=trust_store).get("TrustStoreRevocations", [])
        elb.add_trust_store_revocations(TrustStoreArn=trust_store, RevocationContents=[{
            "S3Bucket": bucket, "S3Key": CRL_KEY + ".pem", "S3ObjectVersion": versions[CRL_KEY + ".pem"],
            "RevocationType": "CRL"}])
        ids = [r["RevocationId"] for r in old]
        if ids:  # the new list is in place first: there is never a moment without one
            elb.remove_trust_store_revocations(TrustStoreArn=trust_store, RevocationIds=ids)
        replaced = ids
    result = {"revoked": len(revoked), "crl_number": int(now.timestamp()), "versions": versions,
              "replaced_revocation_ids": replaced}
    logging.getLogger(__name__).info(json.dumps({"event": "crl_published", **result}))
    return result
