"""The signed SAML Response the IdP sends to Okta's ACS.

The Assertion is signed (RSA-SHA256, exclusive c14n, Signature right after Issuer), then the
Response too when ``sign_response`` is set. One reference per signature, to the signed
element's ID, with the enveloped-signature and exclusive-c14n transforms.

We produce the whole document, so it is written directly in its exclusive-c14n form (XML
Exclusive Canonicalization 1.0, no comments) rather than built as a tree, serialised and
canonicalised again:

* every element has a start and an end tag (no ``<a/>``);
* each element declares exactly the namespace its own prefix needs, unless its parent
  already declared it: exc-c14n renders only *visibly utilised* prefixes, and none of our
  attributes is namespace-qualified, so ``saml:Issuer`` under ``samlp:Response`` re-declares
  ``saml`` and ``samlp:Status`` declares nothing;
* namespace declarations come before attributes, and attributes (all unqualified) are in
  code-point order of their names;
* text escapes ``& < >`` and CR; attribute values escape ``& < "``, TAB, LF and CR.

That makes the sent document its own canonical form: the Assertion's bytes in it are exactly
its exc-c14n as a subtree, the SignedInfo a verifier canonicalises is exactly the SignedInfo
we signed, and the Response minus its Signature is what its digest covers. The digests and
signatures are computed over those bytes; nothing re-serialises the document after signing.
``tests/unit/test_saml_response.py`` checks byte for byte that lxml's exclusive c14n of the
output is the output.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import field
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from ..memo import remember
from ..record import frozen

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
X509_CONTEXT = "urn:oasis:names:tc:SAML:2.0:ac:classes:X509"
UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"

EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"

NOT_BEFORE_SLACK = timedelta(seconds=60)
VALIDITY = timedelta(minutes=5)

XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

# Characters XML 1.0 cannot carry at all (not even as character references): the complement of
# its Char production (#x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF])
# within Unicode, written out positively: the same set, but the negated class over those huge
# ranges took ~5 ms to compile on every cold start. Every one of them is unprintable
# (str.isprintable: categories Cc, Cs, Cn), so a printable value (nearly all) is checked
# without the pattern, compiled (~0.5 ms) only when a value has a tab, a newline or such.
_NOT_XML = "[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]"


def _checked(value: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"XML values must be str, not {type(value).__name__}")
    if not value.isprintable() and re.search(_NOT_XML, value):
        raise ValueError("All strings must be XML compatible: Unicode or ASCII, no NULL bytes or control characters")
    return value


def _text(value: str) -> str:
    """Character data as exc-c14n writes it."""
    # "&" first: the other replacements bring their own
    return _checked(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#xD;")


def _attr_value(value: str) -> str:
    """An attribute value as exc-c14n writes it (between double quotes)."""
    return (_checked(value).replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
            .replace("\t", "&#x9;").replace("\n", "&#xA;").replace("\r", "&#xD;"))


# The SignedInfo as a verifier canonicalises it (apex: it declares ds) and as it stands in the
# document (inside ds:Signature, which declares ds). Only the reference and digest vary.
_SIGNED_INFO_APEX = f'<ds:SignedInfo xmlns:ds="{DS}">'
_SIGNED_INFO_INNER = "<ds:SignedInfo>"
_SIGNED_INFO_BODY = (
    f'<ds:CanonicalizationMethod Algorithm="{EXC_C14N}"></ds:CanonicalizationMethod>'
    f'<ds:SignatureMethod Algorithm="{RSA_SHA256}"></ds:SignatureMethod>'
    '<ds:Reference URI="#{reference}"><ds:Transforms>'
    f'<ds:Transform Algorithm="{ENVELOPED}"></ds:Transform>'
    f'<ds:Transform Algorithm="{EXC_C14N}"></ds:Transform>'
    f'</ds:Transforms><ds:DigestMethod Algorithm="{SHA256}"></ds:DigestMethod>'
    "<ds:DigestValue>{digest}</ds:DigestValue></ds:Reference></ds:SignedInfo>"
)


@frozen
class Signer:
    """The IdP's signing key and certificate, loaded once per container (the certificate's
    KeyInfo is prepared once here, not per signature)."""

    key: object
    cert_pem: str
    key_info: str = field(init=False, repr=False, compare=False)
    rsa_key: bool = field(init=False, repr=False, compare=False)

    def __init__(self, key: object, cert_pem: str):
        self.__dict__.update(key=key, cert_pem=cert_pem)
        self.__post_init__()

    def __post_init__(self):
        der = x509.load_pem_x509_certificate(self.cert_pem.encode("ascii")).public_bytes(Encoding.DER)
        object.__setattr__(self, "key_info", (
            "<ds:KeyInfo><ds:X509Data><ds:X509Certificate>"
            f"{base64.b64encode(der).decode('ascii')}"
            "</ds:X509Certificate></ds:X509Data></ds:KeyInfo>"))
        # The key never changes (a new key is a new Signer): its type is checked once here, and a
        # non-RSA key refused when it is asked to sign, as before.
        object.__setattr__(self, "rsa_key", isinstance(self.key, rsa.RSAPrivateKey))

    def signature(self, reference_id: str, canonical: bytes) -> str:
        """The ds:Signature element over ``canonical`` (the exc-c14n bytes of the element with
        ID ``reference_id``, its Signature left out: the enveloped-signature transform)."""
        if not self.rsa_key:
            raise TypeError("the IdP signing key must be an RSA key (the Response is signed with RSA-SHA256)")
        body = _SIGNED_INFO_BODY.format(
            reference=_attr_value(reference_id),
            digest=_b64(hashlib.sha256(canonical).digest()),
        )
        value = self.key.sign((_SIGNED_INFO_APEX + body).encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
        return (
            f'<ds:Signature xmlns:ds="{DS}">{_SIGNED_INFO_INNER}{body}'
            f"<ds:SignatureValue>{_b64(value)}</ds:SignatureValue>"
            f"{self.key_info}</ds:Signature>"
        )


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _new_ids() -> tuple[str, str, str]:
    """The Response's, the Assertion's and the session's IDs: xs:ID must not start with a digit;
    160 random bits each from the OS CSPRNG (what secrets.token_hex(20) returns, without importing
    secrets on every cold start), the three from one read."""
    hexed = os.urandom(60).hex()
    return "_" + hexed[:40], "_" + hexed[40:80], "_" + hexed[80:]


def _instant(moment: datetime) -> str:
    """xs:dateTime in UTC to the second, ``2026-12-03T12:00:00Z``: the same text strftime's
    ``%Y-%m-%dT%H:%M:%SZ`` writes for years 1000 to 9999, from isoformat (a third of the cost)."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


# What a Response says that is the same for every login to one SP from one IdP, written once in
# its exc-c14n form (values escaped), per (ACS URL, audience, IdP entity ID, NameID format): the
# configured values, so a handful per container; bounded all the same.
_PARTS_MAX = 16
_parts: dict[tuple, tuple[str, ...]] = {}


def _parts_for(acs_url: str, audience: str, idp_entity_id: str, name_id_format: str | None) -> tuple[str, ...]:
    """(the Response's start tag up to its Destination, its Issuer, the Assertion's Issuer, the
    NameID start tag, the end of SubjectConfirmationData's start tag from Recipient, and the
    Conditions from AudienceRestriction to their end tag)."""
    key = (acs_url, audience, idp_entity_id, name_id_format)
    parts = _parts.get(key)
    if parts is None:
        entity = _text(idp_entity_id)
        parts = remember(_parts, key, (
            f'<samlp:Response xmlns:samlp="{SAMLP}" Destination="{_attr_value(acs_url)}"',
            f'<saml:Issuer xmlns:saml="{SAML}">{entity}</saml:Issuer>',  # as a child of samlp
            f"<saml:Issuer>{entity}</saml:Issuer>",
            f'<saml:NameID Format="{_attr_value(name_id_format or UNSPECIFIED)}">',
            f'" Recipient="{_attr_value(acs_url)}">',
            (f"<saml:AudienceRestriction><saml:Audience>{_text(audience)}</saml:Audience>"
             "</saml:AudienceRestriction></saml:Conditions>"),
        ), _PARTS_MAX)
    return parts


_STATUS = f'<samlp:Status><samlp:StatusCode Value="{SUCCESS}"></samlp:StatusCode></samlp:Status>'
_CONFIRMATION = f'<saml:SubjectConfirmation Method="{BEARER}"><saml:SubjectConfirmationData InResponseTo="'
_AUTHN_CONTEXT = (f"<saml:AuthnContext><saml:AuthnContextClassRef>{X509_CONTEXT}</saml:AuthnContextClassRef>"
                  "</saml:AuthnContext></saml:AuthnStatement></saml:Assertion>")


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
    response_head, issuer, assertion_issuer, name_id_open, recipient, conditions_tail = _parts_for(
        acs_url, audience, idp_entity_id, name_id_format)
    response_id, assertion_id, new_session = _new_ids()  # "_" and hex digits: nothing to escape
    issued = _instant(now)  # digits, '-', ':', 'T', 'Z': nothing to escape
    not_after = _instant(now + VALIDITY)
    replying_to = _attr_value(in_response_to)
    session = _attr_value(session_index) if session_index else new_session

    # The Assertion: its own element declares saml, so its bytes here are its exc-c14n alone.
    # Attributes by name: ID, IssueInstant, Version.
    assertion_open = f'<saml:Assertion xmlns:saml="{SAML}" ID="{assertion_id}" IssueInstant="{issued}" Version="2.0">'
    assertion_rest = (
        f"<saml:Subject>{name_id_open}{_text(name_id)}</saml:NameID>"
        # InResponseTo, NotOnOrAfter, Recipient
        f'{_CONFIRMATION}{replying_to}" NotOnOrAfter="{not_after}{recipient}'
        "</saml:SubjectConfirmationData></saml:SubjectConfirmation></saml:Subject>"
        # NotBefore, NotOnOrAfter
        f'<saml:Conditions NotBefore="{_instant(now - NOT_BEFORE_SLACK)}" NotOnOrAfter="{not_after}">'
        f"{conditions_tail}"
        # AuthnInstant, SessionIndex
        f'<saml:AuthnStatement AuthnInstant="{issued}" SessionIndex="{session}">{_AUTHN_CONTEXT}'
    )
    assertion_signature = signer.signature(
        assertion_id, (assertion_open + assertion_issuer + assertion_rest).encode("utf-8"))
    assertion = assertion_open + assertion_issuer + assertion_signature + assertion_rest

    # Destination, ID, InResponseTo, IssueInstant, Version.
    response_open = (f'{response_head} ID="{response_id}" InResponseTo="{replying_to}" '
                     f'IssueInstant="{issued}" Version="2.0">')
    response_rest = f"{_STATUS}{assertion}</samlp:Response>"
    if sign_response:
        response_signature = signer.signature(response_id, (response_open + issuer + response_rest).encode("utf-8"))
        document = response_open + issuer + response_signature + response_rest
    else:
        document = response_open + issuer + response_rest
    return XML_DECLARATION + document.encode("utf-8")
