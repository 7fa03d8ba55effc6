"""Okta's AuthnRequest, on either binding: decode, verify the signature with Okta's SP key
from settings (never a key from the message), and check every field that decides where a
Response could go.

Pure: bytes and settings in, an :class:`AuthnRequest` or a :class:`RequestRefused` out.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, unquote_plus

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from lxml import etree

from ..record import frozen
from ..textcheck import ALNUM, LETTERS, only
from . import xmlsafe

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
POST_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"

MAX_ENCODED_REQUEST = 16 * 1024  # a SAMLRequest parameter, base64, before inflating
MAX_INFLATED_REQUEST = 32 * 1024
MAX_RELAY_STATE = 4 * 1024  # "a few KB"; SAML itself says 80 bytes, Okta sends more
MAX_FORM_BYTES = 64 * 1024
MAX_NAME_ID = 256

# Signature algorithm allow-list (URI -> (hash, key type)). SHA-1 is refused by omission.
SIG_ALGS = {
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": (hashes.SHA256, rsa.RSAPublicKey),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": (hashes.SHA384, rsa.RSAPublicKey),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": (hashes.SHA512, rsa.RSAPublicKey),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": (hashes.SHA256, ec.EllipticCurvePublicKey),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": (hashes.SHA384, ec.EllipticCurvePublicKey),
}
_DIGEST_URIS = {
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
}
_NCNAME = ALNUM + "._-"
_AUTHN_REQUEST = f"{{{SAMLP}}}AuthnRequest"
_ISSUER, _SUBJECT, _NAME_ID = f"{{{SAML}}}Issuer", f"{{{SAML}}}Subject", f"{{{SAML}}}NameID"
_DS_SIGNATURE = f"{{{DS}}}Signature"


def _ncname(text: str) -> bool:
    """``re.match(r"^[A-Za-z_][A-Za-z0-9._-]{0,255}$", text)``, which ``$`` lets end in one "\\n"."""
    if text.endswith("\n"):
        text = text[:-1]
    return 1 <= len(text) <= 256 and text[0] in LETTERS + "_" and only(text, _NCNAME)


class RequestRefused(ValueError):
    """The request cannot be answered with a Response. ``reason`` is safe to show."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@frozen
class Expectations:
    """What a request must say: all of it comes from settings, none from the message."""

    audience: str  # Okta's entity id; the request's Issuer
    sso_url: str  # our SSO URL; the request's Destination
    acs_url: str  # Okta's ACS; the only place a Response may go
    sp_cert: x509.Certificate
    require_signed: bool = True
    clock_skew: timedelta = timedelta(seconds=120)

    def __init__(self, audience: str, sso_url: str, acs_url: str, sp_cert: x509.Certificate,
                 require_signed: bool = True, clock_skew: timedelta = timedelta(seconds=120)):
        self.__dict__.update(audience=audience, sso_url=sso_url, acs_url=acs_url, sp_cert=sp_cert,
                             require_signed=require_signed, clock_skew=clock_skew)


@frozen
class AuthnRequest:
    id: str
    issuer: str
    issue_instant: datetime
    acs_url: str
    name_id: str | None
    name_id_format: str | None
    force_authn: bool
    relay_state: str | None
    binding: str  # "redirect" | "post"
    signed: bool

    def __init__(self, id: str, issuer: str, issue_instant: datetime, acs_url: str, name_id: str | None,
                 name_id_format: str | None, force_authn: bool, relay_state: str | None, binding: str,
                 signed: bool):
        self.__dict__.update(id=id, issuer=issuer, issue_instant=issue_instant, acs_url=acs_url, name_id=name_id,
                             name_id_format=name_id_format, force_authn=force_authn, relay_state=relay_state,
                             binding=binding, signed=signed)


# ------------------------------------------------------------------------------ bindings


def _single(pairs: list[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in pairs if k == name]
    if len(values) > 1:
        raise RequestRefused(f"the {name} parameter appears more than once")
    return values[0] if values else None


def _strict_b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise RequestRefused(f"{what} is not valid base64") from None


def _relay_state(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value.encode("utf-8")) > MAX_RELAY_STATE:
        raise RequestRefused(f"RelayState is longer than {MAX_RELAY_STATE} bytes")
    # It goes back through an HTML form, where control characters do not survive unchanged.
    # (isprintable is False for every control character: the exact test runs only then)
    if not value.isprintable() and any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise RequestRefused("RelayState holds control characters")
    return value


# The escapes a redirect query's values are made of (a URI's '/', ':', '#' and base64's '+', '/',
# '=', either case), the most frequent first: none decodes to '%', so replacing them cannot make
# another escape.
_COMMON_ESCAPES = tuple((f"%{ord(ch):02X}", ch) for ch in "/+=:#") + tuple((f"%{ord(ch):02x}", ch) for ch in "/+=:#")


def _form_decode(value: str) -> str:
    """``unquote_plus(value, errors="strict")``: when replacing common escapes leaves no '%', each
    escape was one of them, all ASCII, and the result is unquote_plus's; otherwise it decides."""
    plain = value.replace("+", " ")
    for escape, char in _COMMON_ESCAPES:
        if "%" not in plain:
            return plain
        plain = plain.replace(escape, char)
    if "%" not in plain:
        return plain
    return unquote_plus(value, errors="strict")


def inflate(data: bytes) -> bytes:
    """Raw DEFLATE (RFC 1951) only, capped, so a deflate bomb stops at the cap."""
    inflater = zlib.decompressobj(wbits=-15)
    try:
        out = inflater.decompress(data, MAX_INFLATED_REQUEST + 1)
    except zlib.error:
        raise RequestRefused("SAMLRequest is not raw DEFLATE data (a zlib or gzip wrapper is not allowed)") from None
    if len(out) > MAX_INFLATED_REQUEST or inflater.unconsumed_tail:
        raise RequestRefused(f"SAMLRequest inflates to more than {MAX_INFLATED_REQUEST} bytes")
    if not inflater.eof or inflater.unused_data:
        raise RequestRefused("SAMLRequest is not one complete raw DEFLATE stream")
    return out


def from_redirect(raw_query: dict[str, list[str]], expect: Expectations, now: datetime) -> AuthnRequest:
    """HTTP-Redirect: ``raw_query`` holds names and values exactly as received (still
    percent-encoded); the signature covers those octets, not a re-encoding of them."""
    # Senders form-encode the query (Java's URLEncoder and python3-saml write a space as '+'),
    # so values decode as a form would; the signature still covers the octets as received.
    try:
        raw_pairs = [(_form_decode(raw_name), raw_name, value)
                     for raw_name, values in raw_query.items() for value in values]
        decoded = [(name, _form_decode(value)) for name, _, value in raw_pairs]
    except UnicodeDecodeError:
        raise RequestRefused("the query is not percent-encoded UTF-8") from None
    encoded = _single(decoded, "SAMLRequest")
    if encoded is None:
        raise RequestRefused("no SAMLRequest parameter")
    if len(encoded) > MAX_ENCODED_REQUEST:
        raise RequestRefused("SAMLRequest is too long")
    if _single(decoded, "SAMLEncoding") not in (None, "urn:oasis:names:tc:SAML:2.0:bindings:URL-Encoding:DEFLATE"):
        raise RequestRefused("only DEFLATE encoding is supported")
    relay_state = _relay_state(_single(decoded, "RelayState"))
    sig_alg = _single(decoded, "SigAlg")
    signature = _single(decoded, "Signature")
    xml = inflate(_strict_b64(encoded, "SAMLRequest"))
    root = _parse(xml)

    signed = False
    if signature is not None or sig_alg is not None:
        if signature is None or sig_alg is None:
            raise RequestRefused("Signature and SigAlg must come together")
        raw = {name: value for name, _, value in raw_pairs}
        octets = f"SAMLRequest={raw['SAMLRequest']}"
        if "RelayState" in raw:
            octets += f"&RelayState={raw['RelayState']}"
        octets += f"&SigAlg={raw['SigAlg']}"
        if not octets.isascii():
            raise RequestRefused("the signed query is not percent-encoded ASCII")
        _verify_detached(octets.encode("ascii"), sig_alg, _strict_b64(signature, "Signature"), expect.sp_cert)
        if next(root.iterchildren(_DS_SIGNATURE), None) is not None:
            raise RequestRefused("a Redirect request must not also carry an XML signature")
        signed = True
    elif expect.require_signed:
        raise RequestRefused("the request is not signed, and signed requests are required")
    return _check(root, expect, now, relay_state=relay_state, binding="redirect", signed=signed)


def from_post(body: bytes, expect: Expectations, now: datetime) -> AuthnRequest:
    """HTTP-POST: a form with SAMLRequest (base64 XML) and optional RelayState."""
    if len(body) > MAX_FORM_BYTES:
        raise RequestRefused("the form is too large")
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=bool(body),
                          max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        raise RequestRefused("the form is not valid application/x-www-form-urlencoded data") from None
    encoded = _single(pairs, "SAMLRequest")
    if encoded is None:
        raise RequestRefused("no SAMLRequest field")
    relay_state = _relay_state(_single(pairs, "RelayState"))
    xml = _strict_b64(encoded, "SAMLRequest")
    root = _parse(xml)
    signature = root.find(f"{{{DS}}}Signature")
    signed = False
    if signature is not None:
        root = _verify_enveloped(root, expect.sp_cert)
        signed = True
    elif expect.require_signed:
        raise RequestRefused("the request is not signed, and signed requests are required")
    return _check(root, expect, now, relay_state=relay_state, binding="post", signed=signed)


def _parse(xml: bytes) -> etree._Element:
    try:
        return xmlsafe.parse(xml, max_bytes=MAX_INFLATED_REQUEST)
    except xmlsafe.UnsafeXml as exc:
        raise RequestRefused(f"the SAMLRequest is unusable: {exc}") from None


# ------------------------------------------------------------------------------ signatures


_held_key: tuple = (None, None)  # (the configured certificate, its public key): held, so `is` stays meaningful


def _public_key(cert: x509.Certificate):
    """The configured certificate's key, parsed once: the same certificate object every request
    (an identity check, where a cache keyed on the certificate would hash its DER every time)."""
    global _held_key
    held = _held_key
    if held[0] is not cert:
        held = _held_key = (cert, cert.public_key())
    return held[1]


def _verify_detached(octets: bytes, sig_alg: str, signature: bytes, cert: x509.Certificate) -> None:
    if sig_alg not in SIG_ALGS:
        raise RequestRefused(f"signature algorithm {sig_alg[:100]} is not allowed (SHA-1 is refused)")
    hash_cls, key_type = SIG_ALGS[sig_alg]
    key = _public_key(cert)
    if not isinstance(key, key_type):
        raise RequestRefused("the signature algorithm does not match Okta's key")
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, octets, padding.PKCS1v15(), hash_cls())
        else:
            key.verify(signature, octets, ec.ECDSA(hash_cls()))
    except (InvalidSignature, ValueError):
        raise RequestRefused("the request signature does not verify with Okta's certificate") from None


def _verify_enveloped(root: etree._Element, cert: x509.Certificate) -> etree._Element:
    """An enveloped signature on the root, one reference, to the root's ID. Returns the
    verified subtree: everything after this point reads only what was signed."""
    from signxml import InvalidInput, InvalidSignature as XmlInvalidSignature, SignatureConfiguration
    from signxml import XMLVerifier
    from signxml.algorithms import DigestAlgorithm, SignatureMethod
    from signxml.exceptions import InvalidCertificate, InvalidDigest, SignXMLException

    root_id = root.get("ID")
    if not root_id or not _ncname(root_id):
        raise RequestRefused("the request has no usable ID")
    if len(root.findall(f"{{{DS}}}Signature")) != 1 or len(root.findall(f".//{{{DS}}}Signature")) != 1:
        raise RequestRefused("the request must carry exactly one signature, on its root")
    if len(root.xpath("//*[@ID=$id]", id=root_id)) != 1:
        raise RequestRefused("the request's ID is not unique in the document")
    references = root.findall(f"{{{DS}}}Signature/{{{DS}}}SignedInfo/{{{DS}}}Reference")
    if len(references) != 1 or references[0].get("URI") != f"#{root_id}":
        raise RequestRefused("the signature must have exactly one reference, to the request itself")
    # Named up front so the refusal says why; signxml enforces the same lists when verifying.
    method = root.find(f"{{{DS}}}Signature/{{{DS}}}SignedInfo/{{{DS}}}SignatureMethod")
    if method is None or method.get("Algorithm") not in SIG_ALGS:
        algorithm = (method.get("Algorithm") if method is not None else "none") or "none"
        raise RequestRefused(f"signature algorithm {algorithm[:100]} is not allowed (SHA-1 is refused)")
    digest = references[0].find(f"{{{DS}}}DigestMethod")
    if digest is None or digest.get("Algorithm") not in _DIGEST_URIS:
        raise RequestRefused("the signature's digest algorithm is not allowed (SHA-1 is refused)")
    config = SignatureConfiguration(
        location="./",
        expect_references=1,
        signature_methods=frozenset(m for m in SignatureMethod if m.value in SIG_ALGS),
        digest_algorithms=frozenset(
            {DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512}
        ),
        # Okta's certificate comes from settings; whatever KeyInfo the message carries is ignored.
        ignore_ambiguous_key_info=True,
    )
    try:
        result = XMLVerifier().verify(root, x509_cert=cert, expect_config=config)
    except (XmlInvalidSignature, InvalidDigest, InvalidInput, InvalidCertificate, SignXMLException) as exc:
        raise RequestRefused(f"the request signature does not verify with Okta's certificate ({type(exc).__name__})") from None
    except (ValueError, etree.LxmlError):
        raise RequestRefused("the request signature is malformed") from None
    signed = result.signed_xml
    if signed is None or signed.tag != root.tag or signed.get("ID") != root_id:
        raise RequestRefused("the signature does not cover the request")
    return signed


# ------------------------------------------------------------------------------ content


def _parse_instant(text: str | None) -> datetime:
    if not text:
        raise RequestRefused("the request has no IssueInstant")
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if value.tzinfo is None:
            raise RequestRefused("IssueInstant has no time zone")
        return value.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # year 1 or 9999 with an offset overflows
        raise RequestRefused("IssueInstant is not an xs:dateTime") from None


def _text(element) -> str:
    try:
        return xmlsafe.text_of(element).strip()
    except xmlsafe.UnsafeXml as exc:
        raise RequestRefused(f"the request is unusable: {exc}") from None


def _check(root, expect: Expectations, now: datetime, *, relay_state, binding, signed) -> AuthnRequest:
    if root.tag != _AUTHN_REQUEST:
        raise RequestRefused("the message is not a SAML 2.0 AuthnRequest")
    if root.get("Version") != "2.0":
        raise RequestRefused("only SAML Version 2.0 is supported")
    request_id = root.get("ID")
    if not request_id or not _ncname(request_id):
        raise RequestRefused("the request has no usable ID")

    instant = _parse_instant(root.get("IssueInstant"))
    if instant > now + expect.clock_skew:
        raise RequestRefused("the request was issued in the future; check the clocks")
    if now - instant > expect.clock_skew:
        raise RequestRefused("the request is too old; start the sign-in again")

    issuers = list(root.iterchildren(_ISSUER))  # as findall: the element children with that tag
    if len(issuers) != 1 or _text(issuers[0]) != expect.audience:
        raise RequestRefused("the request's Issuer is not the Okta org this IdP serves")
    if root.get("Destination") != expect.sso_url:
        raise RequestRefused("the request's Destination is not this IdP's SSO URL")

    acs = root.get("AssertionConsumerServiceURL")
    if acs is not None and acs != expect.acs_url:
        raise RequestRefused("the request asks for a Response at an ACS URL that is not Okta's")
    binding_attr = root.get("ProtocolBinding")
    if binding_attr is not None and binding_attr != POST_BINDING:
        raise RequestRefused("only the HTTP-POST binding is supported for the Response")

    name_id = name_id_format = None
    subjects = list(root.iterchildren(_SUBJECT))
    if len(subjects) > 1:
        raise RequestRefused("the request has more than one Subject")
    if subjects:
        name_ids = list(subjects[0].iterchildren(_NAME_ID))
        if len(name_ids) != 1:
            raise RequestRefused("the request's Subject must hold exactly one NameID")
        name_id = _text(name_ids[0])
        if not name_id or len(name_id) > MAX_NAME_ID or not name_id.isprintable():
            raise RequestRefused("the request's NameID is empty, too long or not printable")
        name_id_format = name_ids[0].get("Format")

    return AuthnRequest(
        id=request_id,
        issuer=expect.audience,
        issue_instant=instant,
        acs_url=expect.acs_url,  # always the configured one: the request can only confirm it
        name_id=name_id,
        name_id_format=name_id_format,
        force_authn=root.get("ForceAuthn") in ("true", "1"),
        relay_state=relay_state,
        binding=binding,
        signed=signed,
    )
