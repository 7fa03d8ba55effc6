"""The local stack's stand-in for Okta: it starts logins and receives Responses.

* ``GET /okta/login?user=alice@example.com[&relay=...][&binding=post][&clock_offset=S]`` builds a
  signed AuthnRequest with the local SP key (as Okta would, Subject included) and sends the
  browser to the device host's SSO URL; ``clock_offset`` (seconds, -3600..3600) dates its
  IssueInstant as an Okta whose clock is that far ahead (or, negative, behind) would;
* ``POST /okta/sso/saml2`` (the ACS URL in endpoints.json) verifies the Response with the IdP
  certificate (never a key from the message), checks Destination, audience, InResponseTo
  and times, and shows what it accepted.

Only for the local stack and demos: in AWS, Okta itself plays this part.
"""

from __future__ import annotations

import base64
import html
import secrets
import threading
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qsl, quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree
from signxml.exceptions import SignXMLException

from .. import alb
from ..saml import xmlsafe

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
POST_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
MAX_CLOCK_OFFSET = 3600  # seconds: a skewed "Okta" clock, for clock-skew tests
TRUST_FILE = "okta/idp-trust.pem"


def trusted_idp_certs(state_dir: Path, default_pem: str) -> list[str]:
    """The certificate the local Okta verifies with (a list, as Okta's API returns keys)."""
    try:
        return [(Path(state_dir) / TRUST_FILE).read_text()]
    except OSError:
        return [default_pem]


def set_trusted_idp_cert(state_dir: Path, cert_pem: str) -> None:
    from . import pki

    x509.load_pem_x509_certificate(cert_pem.encode())  # refuse anything else
    path = Path(state_dir) / TRUST_FILE
    path.parent.mkdir(mode=0o700, exist_ok=True)
    pki.write_private(path, cert_pem)


def _instant(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def authn_request_xml(*, request_id: str, audience: str, sso_url: str, acs_url: str, user: str | None,
                      now: datetime) -> bytes:
    root = etree.Element(
        f"{{{SAMLP}}}AuthnRequest",
        nsmap={"samlp": SAMLP, "saml": SAML},
        ID=request_id,
        Version="2.0",
        IssueInstant=_instant(now),
        Destination=sso_url,
        ProtocolBinding=POST_BINDING,
        AssertionConsumerServiceURL=acs_url,
    )
    etree.SubElement(root, f"{{{SAML}}}Issuer").text = audience
    if user:
        subject = etree.SubElement(root, f"{{{SAML}}}Subject")
        etree.SubElement(subject, f"{{{SAML}}}NameID", Format=EMAIL).text = user
    etree.SubElement(root, f"{{{SAMLP}}}NameIDPolicy", Format=EMAIL)
    return etree.tostring(root)


def redirect_query(xml: bytes, sp_key, relay_state: str | None) -> str:
    """The signed HTTP-Redirect query string: raw DEFLATE, base64, percent-encoding."""
    deflater = zlib.compressobj(wbits=-15)
    encoded = base64.b64encode(deflater.compress(xml) + deflater.flush()).decode("ascii")
    query = f"SAMLRequest={quote(encoded, safe='')}"
    if relay_state is not None:
        query += f"&RelayState={quote(relay_state, safe='')}"
    query += f"&SigAlg={quote(RSA_SHA256, safe='')}"
    signature = sp_key.sign(query.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return query + f"&Signature={quote(base64.b64encode(signature).decode('ascii'), safe='')}"


def signed_post_form(xml: bytes, sp_key, sp_cert_pem: str, request_id: str) -> str:
    """The base64 of an AuthnRequest with an enveloped signature on its root."""
    from signxml import XMLSigner
    from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod

    root = etree.fromstring(xml)
    signer = XMLSigner(
        signature_algorithm=SignatureMethod.RSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    issuer = root.find(f"{{{SAML}}}Issuer")
    issuer.addnext(etree.Element("{http://www.w3.org/2000/09/xmldsig#}Signature", Id="placeholder"))
    signed = signer.sign(root, key=sp_key, cert=sp_cert_pem, reference_uri=f"#{request_id}")
    return base64.b64encode(etree.tostring(signed)).decode("ascii")


@dataclass
class LocalOkta:
    audience: str
    acs_url: str
    sso_url: str
    idp_entity_id: str
    idp_cert: x509.Certificate
    sp_key: object
    sp_cert_pem: str
    outstanding: dict = field(default_factory=dict)  # request ID -> issued at
    lock: threading.Lock = field(default_factory=threading.Lock)
    state_dir: Path | None = None  # where `devicegate rotate idp-key` changes which certificate is trusted
    _trust_cache: tuple | None = None

    def trusted_cert(self) -> x509.Certificate:
        """Like Okta's IdP setting, exactly one certificate verifies Responses: the one
        `rotate idp-key` set (``<state>/okta/idp-trust.pem``), else the IdP's first one."""
        if self.state_dir is not None:
            path = Path(self.state_dir) / TRUST_FILE
            try:
                stamp = path.stat().st_mtime_ns
                cached = self._trust_cache
                if cached is None or cached[0] != stamp:
                    self._trust_cache = cached = (stamp, x509.load_pem_x509_certificate(path.read_bytes()))
                return cached[1]
            except (OSError, ValueError):
                pass
        return self.idp_cert

    # -------------------------------------------------------------- handlers (ALB events)

    def login_handler(self, event, context):
        request = alb.Request.from_event(event)
        now = datetime.now(timezone.utc)
        request_id = "id" + secrets.token_hex(16)
        user = request.query_value("user") or None
        try:
            offset = float(request.query_value("clock_offset") or 0)
        except ValueError:
            offset = float("nan")
        if not -MAX_CLOCK_OFFSET <= offset <= MAX_CLOCK_OFFSET:
            return _page(400, "Okta (local) refused the login", [("Reason", "clock_offset is -3600..3600 seconds")]
                         ).to_event(request.multi_value)
        xml = authn_request_xml(request_id=request_id, audience=self.audience, sso_url=self.sso_url,
                                acs_url=self.acs_url, user=user, now=now + timedelta(seconds=offset))
        with self.lock:
            self.outstanding[request_id] = now
        relay = request.query_value("relay")
        if request.query_value("binding") == "post":
            form = signed_post_form(xml, self.sp_key, self.sp_cert_pem, request_id)
            body = (
                '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Okta (local)</title></head>'
                f'<body><form method="post" action="{html.escape(self.sso_url)}">'
                f'<input type="hidden" name="SAMLRequest" value="{form}">'
                + (f'<input type="hidden" name="RelayState" value="{html.escape(relay)}">' if relay else "")
                + '<button type="submit">Continue to device check</button></form></body></html>'
            )
            return alb.Response(200, body, content_type="text/html; charset=utf-8").to_event(request.multi_value)
        location = f"{self.sso_url}?{redirect_query(xml, self.sp_key, relay)}"
        return alb.Response(302, "", headers={"location": location}).to_event(request.multi_value)

    def acs_handler(self, event, context):
        request = alb.Request.from_event(event)
        try:
            fields = dict(parse_qsl(request.body.decode("ascii"), strict_parsing=True))
            xml = base64.b64decode(fields["SAMLResponse"], validate=True)
            result = self.verify(xml, datetime.now(timezone.utc))
        except (KeyError, ValueError, UnicodeDecodeError, SignXMLException) as exc:
            return _page(400, "Okta (local) refused the Response", [("Reason", str(exc))]).to_event(request.multi_value)
        rows = [*result.items(), ("RelayState", fields.get("RelayState", ""))]
        return _page(200, "Okta (local) accepted the device factor", rows).to_event(request.multi_value)

    # -------------------------------------------------------------- verification

    def verify(self, xml: bytes, now: datetime) -> dict:
        """Accept only a Response whose Assertion is signed by the IdP key and meant for us."""
        from signxml import SignatureConfiguration, XMLVerifier

        root = xmlsafe.parse(xml)
        if root.tag != f"{{{SAMLP}}}Response" or root.get("Destination") != self.acs_url:
            raise ValueError("not a Response for this ACS")
        status = root.find(f"{{{SAMLP}}}Status/{{{SAMLP}}}StatusCode")
        if status is None or status.get("Value") != "urn:oasis:names:tc:SAML:2.0:status:Success":
            raise ValueError("the Response is not a success")
        assertions = root.findall(f"{{{SAML}}}Assertion")
        if len(assertions) != 1:
            raise ValueError("expected exactly one Assertion")
        config = SignatureConfiguration(location="./", expect_references=1, ignore_ambiguous_key_info=True)
        signed = XMLVerifier().verify(assertions[0], x509_cert=self.trusted_cert(), expect_config=config).signed_xml
        # Read only what was signed.
        if signed.find(f"{{{SAML}}}Issuer").text != self.idp_entity_id:
            raise ValueError("the Assertion's Issuer is not the IdP")
        audience = signed.find(f"{{{SAML}}}Conditions/{{{SAML}}}AudienceRestriction/{{{SAML}}}Audience")
        if audience is None or audience.text != self.audience:
            raise ValueError("the Assertion is not for this audience")
        conditions = signed.find(f"{{{SAML}}}Conditions")
        not_before = datetime.fromisoformat(conditions.get("NotBefore").replace("Z", "+00:00"))
        not_after = datetime.fromisoformat(conditions.get("NotOnOrAfter").replace("Z", "+00:00"))
        if not not_before - timedelta(seconds=30) <= now < not_after:
            raise ValueError("the Assertion is outside its validity window")
        data = signed.find(f"{{{SAML}}}Subject/{{{SAML}}}SubjectConfirmation/{{{SAML}}}SubjectConfirmationData")
        if data is None or data.get("Recipient") != self.acs_url:
            raise ValueError("the bearer confirmation is not for this ACS")
        in_response_to = data.get("InResponseTo")
        with self.lock:
            issued = self.outstanding.pop(in_response_to, None)
        if issued is None:
            raise ValueError("the Response answers no request this Okta sent (or was replayed)")
        name_id = signed.find(f"{{{SAML}}}Subject/{{{SAML}}}NameID")
        context = signed.find(f"{{{SAML}}}AuthnStatement/{{{SAML}}}AuthnContext/{{{SAML}}}AuthnContextClassRef")
        return {
            "NameID": name_id.text,
            "NameID Format": name_id.get("Format"),
            "Issuer": self.idp_entity_id,
            "InResponseTo": in_response_to,
            "AuthnContext": context.text if context is not None else "",
            "Signature": "Assertion signature verified with the IdP certificate",
        }


def _page(status: int, title: str, rows: list[tuple[str, str]]) -> alb.Response:
    items = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
        f'<table id="result">{items}</table></body></html>'
    )
    return alb.Response(status, body, content_type="text/html; charset=utf-8",
                        headers={"content-security-policy": "default-src 'none'"})
