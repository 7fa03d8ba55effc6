"""An IdP wired to moto (DynamoDB + Secrets Manager) and a SCEP CA, driven with ALB events."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from html import unescape
from urllib.parse import urlencode

import boto3
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from devicegate import alb
from devicegate import store as store_mod
from devicegate.compliance.decision import HostCompliance, PolicyResult
from devicegate.local import okta, pki
from devicegate.saml import handler as saml_handler
from devicegate.scep.authority import build_certificate, inspect_csr, random_serial
from tests import scep_helpers as h

AUDIENCE = "https://example.okta.com/saml2/service-provider/spdevicegate"
ACS = "https://example.okta.com/sso/saml2/0oadevicegate"
ENTITY = "https://devicegate.example.com/saml/metadata"
SSO = "https://okta.devicegate.example.com/saml/sso"


class IdpWorld:
    def __init__(self, moto_server, scep_ca, monkeypatch, **env):
        self.ca_cert, self.ca_key = scep_ca
        self.sp_key = h.key(slot=20)
        self.sp_cert = pki.signing_certificate("Okta SP", self.sp_key)
        self.idp_key = h.key(slot=21)
        self.idp_cert = pki.signing_certificate("devicegate IdP", self.idp_key)
        suffix = uuid.uuid4().hex[:8]
        kwargs = {"endpoint_url": moto_server.endpoint, "region_name": "us-east-1"}
        self.table = f"idp-{suffix}"
        store_mod.create_table(boto3.client("dynamodb", **kwargs), self.table)
        sm = boto3.client("secretsmanager", **kwargs)
        sm.create_secret(Name=f"ca-{suffix}", SecretString=json.dumps(
            {"certificate": pki.pem_cert(self.ca_cert), "private_key": pki.pem_key(self.ca_key)}))
        sm.create_secret(Name=f"idp-{suffix}", SecretString=json.dumps(
            {"certificate": pki.pem_cert(self.idp_cert), "private_key": pki.pem_key(self.idp_key)}))
        values = {
            "AWS_ENDPOINT_URL": moto_server.endpoint, "DEVICEGATE_TABLE": self.table,
            "DEVICEGATE_CA_SECRET": f"ca-{suffix}", "DEVICEGATE_IDP_KEY_SECRET": f"idp-{suffix}",
            "DEVICEGATE_IDP_ENTITY_ID": ENTITY, "DEVICEGATE_SSO_URL": SSO, "DEVICEGATE_OKTA_AUDIENCE": AUDIENCE,
            "DEVICEGATE_OKTA_ACS_URL": ACS, "DEVICEGATE_OKTA_SP_CERT": pki.pem_cert(self.sp_cert), **env,
        }
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        saml_handler.reset()
        self.store = store_mod.Store(self.table, endpoint=moto_server.endpoint)

    # ------------------------------------------------------------------ devices

    def device(self, *, status="active", days=30, not_before=None, results=(), users=("alice@example.com",),
               synced_at=None, hostname="alice-mbp", ca_key=None):
        """A certificate issued by the CA, recorded like SCEP records it, plus compliance.
        ``ca_key``: sign it with another key instead (the CA's name as issuer, a bad signature)."""
        key = h.key(slot=22)
        host = h.new_uuid()
        facts = inspect_csr(h.make_csr(key, host_uuid=host), accept_cn_uuid=False)
        now = not_before or datetime.now(timezone.utc)
        cert = build_certificate(facts, host, ca_cert=self.ca_cert, ca_key=ca_key or self.ca_key, validity_days=days,
                                 now=now, serial=random_serial())
        record = store_mod.CertificateRecord(
            serial=cert.serial_number, host_uuid=host, status=status, not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc, issued_at=now, der=cert.public_bytes(Encoding.DER),
            subject=cert.subject.rfc4514_string(), transaction_key="t", kind="enroll")
        tx = store_mod.Transaction(key=uuid.uuid4().hex, csr_sha256="x", requester_spki_sha256="y", serial=cert.serial_number)
        self.store.record_issuance(tx, record)
        if results is not None:
            self.set_compliance(host, results, users=users, synced_at=synced_at, hostname=hostname)
        return host, cert

    def set_compliance(self, host, results, *, users=("alice@example.com",), synced_at=None, hostname="alice-mbp"):
        rows = tuple(PolicyResult(pid, name, result, critical, f"How to fix {name}.\nSecond line.")
                     for pid, name, result, critical in results)
        self.store.put_compliance(
            HostCompliance(host, hostname, None, rows, synced_at or datetime.now(timezone.utc), tuple(users)),
            {r.policy_id for r in rows})

    # ------------------------------------------------------------------ requests

    def authn_xml(self, request_id=None, *, user="alice@example.com", now=None, **kw):
        request_id = request_id or "id" + uuid.uuid4().hex
        return request_id, okta.authn_request_xml(request_id=request_id, audience=kw.get("audience", AUDIENCE),
                                                  sso_url=kw.get("sso", SSO), acs_url=kw.get("acs", ACS), user=user,
                                                  now=now or datetime.now(timezone.utc))

    def redirect_event(self, cert=None, *, xml=None, relay=None, headers=None, **kw):
        request_id, document = (None, xml) if xml is not None else self.authn_xml(**kw)
        query = okta.redirect_query(document, self.sp_key, relay)
        params: dict[str, list[str]] = {}
        for part in query.split("&"):
            name, _, value = part.partition("=")
            params.setdefault(name, []).append(value)
        return request_id, self._event("GET", "/saml/sso", params, b"", cert, headers)

    def post_event(self, cert, path, fields: dict, headers=None):
        return self._event("POST", path, {}, urlencode(fields).encode(), cert,
                           {"content-type": "application/x-www-form-urlencoded", **(headers or {})})

    def _event(self, method, path, params, body, cert, headers):
        mtls = alb.format_mtls_headers(cert) if cert is not None else {}
        all_headers = {**mtls, **(headers or {})}
        return alb.build_event(method=method, path=path,
                               raw_query="&".join(f"{k}={v}" for k, vs in params.items() for v in vs),
                               headers=list(all_headers.items()), body=body,
                               target_group_arn="arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/idp/1")

    def call(self, event):
        result = saml_handler.lambda_handler(event, None)
        reply = alb.parse_response(result)
        return reply.status, {k.lower(): v for k, v in reply.headers}, reply.body.decode("utf-8")


def form_value(page: str, name: str) -> str | None:
    match = re.search(rf'name="{name}"\s+value="([^"]*)"', page) or re.search(rf'value="([^"]*)"\s+name="{name}"', page)
    return unescape(match.group(1)) if match else None


def response_xml(page: str) -> etree._Element:
    return etree.fromstring(base64.b64decode(form_value(page, "SAMLResponse")))


def in_a_while(minutes):
    return datetime.now(timezone.utc) + timedelta(minutes=minutes)
