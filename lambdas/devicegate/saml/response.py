"""The signed SAML Response the IdP sends to Okta's ACS.

The Assertion is signed (RSA-SHA256, exclusive c14n, Signature right after Issuer), then the
Response too when ``sign_response`` is set. The bytes produced by the last signature are the
bytes sent: nothing re-serialises the document after signing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from lxml import etree

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
NSMAP = {"samlp": SAMLP, "saml": SAML}
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
X509_CONTEXT = "urn:oasis:names:tc:SAML:2.0:ac:classes:X509"
UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"

NOT_BEFORE_SLACK = timedelta(seconds=60)
VALIDITY = timedelta(minutes=5)


@dataclass(frozen=True)
class Signer:
    """The IdP's signing key and certificate, loaded once per container."""

    key: object
    cert_pem: str


def new_id() -> str:
    # xs:ID must not start with a digit; 160 random bits.
    return "_" + secrets.token_hex(20)


def _instant(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_response(
    *,
    in_response_to: str,
    acs_url: str,
    audience: str,
    idp_entity_id: str,
    name_id: str,
    name_id_format: str | None,
    signer: Signer,
    now: datetime,
    sign_response: bool = True,
    session_index: str | None = None,
) -> bytes:
    response_id, assertion_id = new_id(), new_id()
    issued = _instant(now)
    response = etree.Element(
        f"{{{SAMLP}}}Response",
        nsmap=NSMAP,
        ID=response_id,
        Version="2.0",
        IssueInstant=issued,
        Destination=acs_url,
        InResponseTo=in_response_to,
    )
    etree.SubElement(response, f"{{{SAML}}}Issuer").text = idp_entity_id
    status = etree.SubElement(response, f"{{{SAMLP}}}Status")
    etree.SubElement(status, f"{{{SAMLP}}}StatusCode", Value=SUCCESS)

    assertion = etree.SubElement(response, f"{{{SAML}}}Assertion", ID=assertion_id, Version="2.0", IssueInstant=issued)
    etree.SubElement(assertion, f"{{{SAML}}}Issuer").text = idp_entity_id
    etree.SubElement(assertion, f"{{{DS}}}Signature", nsmap={"ds": DS}, Id="placeholder")
    subject = etree.SubElement(assertion, f"{{{SAML}}}Subject")
    name = etree.SubElement(subject, f"{{{SAML}}}NameID", Format=name_id_format or UNSPECIFIED)
    name.text = name_id
    confirmation = etree.SubElement(subject, f"{{{SAML}}}SubjectConfirmation", Method=BEARER)
    etree.SubElement(
        confirmation,
        f"{{{SAML}}}SubjectConfirmationData",
        InResponseTo=in_response_to,
        NotOnOrAfter=_instant(now + VALIDITY),
        Recipient=acs_url,
    )
    conditions = etree.SubElement(
        assertion, f"{{{SAML}}}Conditions", NotBefore=_instant(now - NOT_BEFORE_SLACK), NotOnOrAfter=_instant(now + VALIDITY)
    )
    restriction = etree.SubElement(conditions, f"{{{SAML}}}AudienceRestriction")
    etree.SubElement(restriction, f"{{{SAML}}}Audience").text = audience
    statement = etree.SubElement(
        assertion,
        f"{{{SAML}}}AuthnStatement",
        AuthnInstant=issued,
        SessionIndex=session_index or new_id(),
    )
    context = etree.SubElement(statement, f"{{{SAML}}}AuthnContext")
    etree.SubElement(context, f"{{{SAML}}}AuthnContextClassRef").text = X509_CONTEXT

    signed = _sign(response, assertion_id, signer)
    if sign_response:
        issuer = signed.find(f"{{{SAML}}}Issuer")
        issuer.addnext(etree.Element(f"{{{DS}}}Signature", nsmap={"ds": DS}, Id="placeholder"))
        signed = _sign(signed, response_id, signer)
    return etree.tostring(signed, xml_declaration=True, encoding="UTF-8")


def _sign(root: etree._Element, reference_id: str, signer: Signer) -> etree._Element:
    from signxml import XMLSigner
    from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod

    xml_signer = XMLSigner(
        signature_algorithm=SignatureMethod.RSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    # SAML names its namespace prefix "ds"; signxml's default is too, but say so.
    xml_signer.namespaces = {"ds": DS}
    return xml_signer.sign(root, key=signer.key, cert=signer.cert_pem, reference_uri=f"#{reference_id}")
