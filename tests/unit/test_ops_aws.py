"""The operations CLI's AWS back end (``--outputs FILE``) against the moto server over HTTP
(DynamoDB, Secrets Manager, S3, CloudWatch Logs) and a stand-in for the Okta management API
(there is no Okta org here). The stand-in answers with the JSON shapes of Okta's documented
IdP, IdP key and authenticator endpoints and records what it was sent, so the test checks the
requests the CLI makes; that Okta accepts them is not proven here."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from devicegate import ops, store as store_mod, telemetry
from devicegate.crl import CRL_KEY, build_crl
from devicegate.local import pki
from devicegate.ops import rotate
from devicegate.ops.targets import AwsTarget, OpsError
from devicegate.store import CertificateRecord, Transaction

TOKEN = "okta-test-token"


class FakeOkta:
    def __init__(self, idp_id: str, cert_pem: str, sso_url: str, issuer: str, authenticator_id: str):
        self.requests: list[tuple[str, str, dict | None]] = []
        der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(Encoding.DER)
        self.keys = {"kid-1": {"kid": "kid-1", "x5c": [base64.b64encode(der).decode()]}}
        self.idps = {idp_id: {"id": idp_id, "name": "devicegate (example.com)", "status": "ACTIVE", "protocol": {
            "endpoints": {"sso": {"url": sso_url}},
            "credentials": {"trust": {"issuer": issuer, "kid": "kid-1"}}}}}
        self.authenticators = {authenticator_id: {"id": authenticator_id, "key": "external_idp", "status": "ACTIVE",
                                                  "name": "devicegate", "provider": {"configuration": {"idpId": idp_id}}}}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append((self.command, self.path, body))
                if self.headers.get("authorization") != f"SSWS {TOKEN}":
                    return self._send(401, {"errorCode": "E0000011", "errorSummary": "Invalid token provided"})
                parts = self.path.strip("/").split("/")
                if parts[:4] == ["api", "v1", "idps", "credentials"]:
                    if self.command == "POST":
                        kid = f"kid-{len(fake.keys) + 1}"
                        fake.keys[kid] = {"kid": kid, "x5c": body["x5c"]}
                        return self._send(200, fake.keys[kid])
                    key = fake.keys.get(parts[5])
                    return self._send(200, key) if key else self._send(404, {"errorCode": "E0000007"})
                if parts[:3] == ["api", "v1", "idps"] and parts[3] in fake.idps:
                    if self.command == "PUT":
                        fake.idps[parts[3]] = body
                    return self._send(200, fake.idps[parts[3]])
                if parts[:3] == ["api", "v1", "authenticators"] and parts[3] in fake.authenticators:
                    return self._send(200, fake.authenticators[parts[3]])
                return self._send(404, {"errorCode": "E0000007", "errorSummary": "Not found"})

            do_GET = do_POST = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def deployment(moto_server, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    monkeypatch.setenv("OKTA_API_TOKEN", TOKEN)
    kw = {"endpoint_url": moto_server.endpoint, "region_name": "us-east-1"}
    suffix = uuid.uuid4().hex[:8]
    table, bucket, group = f"dg-{suffix}", f"dg-crl-{suffix}", f"/aws/lambda/devicegate-idp-{suffix}"
    store_mod.create_table(boto3.client("dynamodb", **kw), table)
    boto3.client("s3", **kw).create_bucket(Bucket=bucket)
    logs = boto3.client("logs", **kw)
    logs.create_log_group(logGroupName=group)
    ca_key = pki.new_key()
    ca = pki.self_signed_ca("aws test CA", ca_key, scep=True)
    idp_key = pki.new_key()
    idp_cert = pki.signing_certificate("aws test IdP", idp_key)
    secret_arn = boto3.client("secretsmanager", **kw).create_secret(
        Name=f"dg/idp-key-{suffix}",
        SecretString=json.dumps({"certificate": pki.pem_cert(idp_cert), "private_key": pki.pem_key(idp_key)}))["ARN"]
    okta = FakeOkta("0oaIDP", pki.pem_cert(idp_cert), "https://okta.example.com/saml/sso",
                    "https://example.com/saml/metadata", "aut123")
    outputs = {
        "publicUrl": "https://example.com", "deviceUrl": "https://okta.example.com",
        "scepUrl": "https://example.com/scep", "metadataUrl": "https://example.com/saml/metadata",
        "ssoUrl": "https://okta.example.com/saml/sso", "caCertificatePem": pki.pem_cert(ca),
        "idpCertificatePem": pki.pem_cert(idp_cert), "tableName": table, "crlBucket": bucket,
        "functionNames": {"idp": f"devicegate-idp-{suffix}", "sync": "s", "crl": "c"},
        "logGroups": {"idp": group}, "idpKeySecretId": secret_arn, "oktaIdpId": "0oaIDP",
        "oktaOrgUrl": okta.url, "oktaAuthenticatorId": "aut123", "region": "us-east-1",
        "mobileconfig": "<plist/>", "trustStoreArn": "arn:aws:elasticloadbalancing:us-east-1:1:truststore/x/y",
    }
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    yield {"target": AwsTarget(path), "okta": okta, "kw": kw, "ca": ca, "ca_key": ca_key, "group": group,
           "bucket": bucket, "outputs": outputs, "path": path}
    okta.server.shutdown()


def test_hosts_revoke_and_crl_readback(deployment):
    target = deployment["target"]
    store = target.store()
    now = datetime.now(timezone.utc)
    host = "E" * 8 + "-EEEE-EEEE-EEEE-" + "E" * 12
    serial = uuid.uuid4().int >> 1
    store.record_issuance(Transaction(key="k", csr_sha256="c", requester_spki_sha256="s", serial=serial),
                          CertificateRecord(serial=serial, host_uuid=host, status="active", not_before=now,
                                            not_after=now + timedelta(days=30), issued_at=now, der=b"x",
                                            subject="CN=x", transaction_key="k", kind="enroll"))
    assert ops.hosts(store)["hosts"][0]["certificates"][0]["serial"] == format(serial, "x")
    assert ops.revoke(store, host_uuid=host) == [format(serial, "x")]
    crl = build_crl(deployment["ca"], deployment["ca_key"], store.revoked_certificates(), now=now, number=1)
    boto3.client("s3", **deployment["kw"]).put_object(Bucket=deployment["bucket"], Key=CRL_KEY + ".pem",
                                                      Body=crl.public_bytes(Encoding.PEM))
    published = x509.load_pem_x509_crl(target.published_crl())
    assert published.get_revoked_certificate_by_serial_number(serial) is not None
    assert target.profile() == b"<plist/>"


def test_audit_reads_the_idp_log_group(deployment):
    target = deployment["target"]
    logs = boto3.client("logs", **deployment["kw"])
    logs.create_log_stream(logGroupName=deployment["group"], logStreamName="s")
    now = datetime.now(timezone.utc)
    record = telemetry.emf({"event": "decision", "time": now.isoformat(), "Outcome": "block", "Decisions": 1,
                            "host_uuid": "H"}, function="idp", metrics={"Decisions": "Count"}, dimensions=("Outcome",))
    logs.put_log_events(logGroupName=deployment["group"], logStreamName="s", logEvents=[
        {"timestamp": int(time.time() * 1000), "message": "START RequestId: 1 Version: $LATEST"},
        {"timestamp": int(time.time() * 1000), "message": json.dumps(record)},
        {"timestamp": int(time.time() * 1000), "message": json.dumps({"event": "sync", "time": now.isoformat()})},
    ])
    records = target.audit_records(now - timedelta(minutes=5))
    assert [(r["Outcome"], r["host_uuid"]) for r in records] == [("block", "H")] and "_aws" not in records[0]


def test_okta_checks_and_key_rollover_requests(deployment):
    target, okta = deployment["target"], deployment["okta"]
    checks = {name: result for name, result, _ in target.okta_checks()}
    assert checks == {"okta idp": "ok", "okta idp sso url": "ok", "okta idp issuer": "ok",
                      "okta idp certificate": "ok", "okta authenticator": "ok", "okta factor-only usage": "ok"}
    okta.authenticators["aut123"]["status"] = "INACTIVE"
    checks = {name: result for name, result, _ in target.okta_checks()}
    assert checks["okta authenticator"] == checks["okta factor-only usage"] == "fail"

    staged = rotate.stage(target)
    status = rotate.status(target)
    assert status["stage"] == "staged" and status["next"] == staged["next"] and status["okta_trusts"] == status["current"]
    new_cert = json.loads(target.secret(target.idp_key_secret_id))["next_certificate"]
    result = target.set_okta_trust(new_cert)
    method, path, body = okta.requests[-3]
    assert (method, path) == ("POST", "/api/v1/idps/credentials/keys")
    assert x509.load_der_x509_certificate(base64.b64decode(body["x5c"][0])) == x509.load_pem_x509_certificate(
        new_cert.encode())
    method, path, body = okta.requests[-1]
    assert (method, path) == ("PUT", "/api/v1/idps/0oaIDP")
    assert body["protocol"]["credentials"]["trust"]["kid"] == result["kid"]
    assert rotate.status(target)["okta_trusts"] == staged["next"]


def test_clear_errors(deployment, tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"publicUrl": "x"}))
    with pytest.raises(OpsError, match="missing deviceUrl"):
        AwsTarget(bad)
    monkeypatch.setenv("OKTA_API_TOKEN", "wrong")
    checks = deployment["target"].okta_checks()
    assert checks[0][1] == "fail" and "HTTP 401" in checks[0][2]
    monkeypatch.delenv("OKTA_API_TOKEN")
    with pytest.raises(OpsError, match="OKTA_API_TOKEN"):
        deployment["target"].okta_trust()
