"""Play Okta's side (the SAML service provider) against our IdP with real, independent SAML code.

Okta itself cannot be run here, so tests stand in for it with three independent implementations
that must all accept what our IdP sends (and refuse what it must not send):

* **python3-saml** (OneLogin, C libxmlsec1 through the ``xmlsec`` wheel) builds the signed
  AuthnRequests -- :func:`okta_authn_request_redirect`, :func:`okta_authn_request_post` -- and is
  the strict SP of :func:`validate_with_python3_saml`;
* **pysaml2** (its own object model, the ``xmlsec1`` program for signatures) is the second SP,
  :func:`validate_with_pysaml2`;
* the **xmlsec1** program checks a signature with one given key only, :func:`xmlsec1_verify`;

plus :func:`validate_xsd` (the SAML 2.0 XSDs shipped in python3-saml, loaded locally with lxml)
and :func:`exact_checks`, the comparisons both libraries do loosely.

Facts this module relies on (python3-saml 1.16.0, pysaml2 7.5.5, xmlsec 1.3.17, lxml 6.2.0,
xmlsec1 1.2.37 on Debian 12):

* python3-saml's AuthnRequest is a fixed text template. ``name_id_value_req`` adds
  ``<saml:Subject><saml:NameID Format=F>v</saml:NameID><saml:SubjectConfirmation
  Method="...:cm:bearer"></saml:SubjectConfirmation></saml:Subject>``, with F the SP's
  ``NameIDFormat`` (the same Format goes into ``<samlp:NameIDPolicy AllowCreate="true">``) and
  the value pasted in *unescaped*: this module escapes it first. IDs are ``ONELOGIN_`` + 40 hex
  digits; ``IssueInstant`` has whole seconds; ``Destination`` is the IdP's SSO URL,
  ``ProtocolBinding`` HTTP-POST and ``AssertionConsumerServiceURL`` the ACS.
* Its HTTP-Redirect query is ``SAMLRequest, RelayState, Signature, SigAlg`` in that order, each
  value encoded with ``urllib.parse.quote_plus``: upper-case hex, space as ``+``, ``~`` left as
  is, ``*`` as ``%2A``. The signed octets are ``SAMLRequest=..&RelayState=..&SigAlg=..``
  (RelayState only when present) exactly as they appear in the URL. ``login()`` always sends a
  RelayState (the current URL when none is given), so the builder here calls the same pieces
  login() calls, without that default. Java's ``URLEncoder`` (Okta is Java) differs on ``~`` and
  ``*``; ``query_encoding="java"`` / ``"lowercase"`` re-encode the query so that tests can prove
  the IdP verifies the octets it received rather than a re-encoding of its own.
* python3-saml in strict mode accepts a ``Recipient`` that merely *contains* the ACS URL, a
  ``Destination`` that merely *starts with* it, a Response without ``InResponseTo``, and an
  Assertion without ``AudienceRestriction``; :func:`exact_checks` closes those gaps and both
  validators run it unless ``exact=False``.
* pysaml2 skips the Recipient check entirely when ``conv_info`` is empty and schema-validates only
  its own re-serialisation of the signed element, so a Signature placed before the Issuer passes.
  :func:`validate_with_pysaml2` therefore passes a ``conv_info`` and validates the received octets
  with pysaml2's own XSD validator (xmlschema) first.
* ``requests`` re-quotes URLs (``%7E`` becomes ``~``), which breaks Redirect signatures:
  :func:`send_exact` sends the URL's octets unchanged.
* ``xmlsec1 --verify`` checks the *first* ``ds:Signature`` in the document. With
  ``--enabled-key-data key-name`` it uses only the key given on the command line and ignores
  certificates embedded in the message.

The heavy imports (python3-saml, pysaml2, xmlsec) happen on first use, so importing this module
never fails; :func:`missing_saml_peers` says what is absent, for skip reasons.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence
from urllib.parse import quote, quote_plus, urlsplit
from xml.sax.saxutils import escape as xml_escape

__all__ = [
    "SamlRejected",
    "SchemaInvalid",
    "SpIdentity",
    "IdpInfo",
    "RedirectRequest",
    "PostRequest",
    "missing_saml_peers",
    "parse_xml",
    "okta_authn_request_redirect",
    "okta_authn_request_post",
    "send_exact",
    "decode_post_message",
    "inflate_redirect_message",
    "validate_with_python3_saml",
    "validate_with_pysaml2",
    "exact_checks",
    "xmlsec1_verify",
    "validate_xsd",
    "generate_key_and_cert",
    "RSA_SHA1", "RSA_SHA256", "RSA_SHA384", "RSA_SHA512",
    "NAMEID_EMAIL", "NAMEID_UNSPECIFIED", "BINDING_REDIRECT", "BINDING_POST", "CM_BEARER",
    "STATUS_SUCCESS", "ASSERTION_NODE", "RESPONSE_NODE", "AUTHN_REQUEST_NODE", "NS",
]

RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384"
RSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
_DIGEST_FOR = {
    RSA_SHA1: "http://www.w3.org/2000/09/xmldsig#sha1",
    RSA_SHA256: "http://www.w3.org/2001/04/xmlenc#sha256",
    RSA_SHA384: "http://www.w3.org/2001/04/xmldsig-more#sha384",
    RSA_SHA512: "http://www.w3.org/2001/04/xmlenc#sha512",
}

NAMEID_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
NAMEID_UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
BINDING_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BINDING_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
CM_BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"

NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "md": "urn:oasis:names:tc:SAML:2.0:metadata",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
}
ASSERTION_NODE = "urn:oasis:names:tc:SAML:2.0:assertion:Assertion"
RESPONSE_NODE = "urn:oasis:names:tc:SAML:2.0:protocol:Response"
AUTHN_REQUEST_NODE = "urn:oasis:names:tc:SAML:2.0:protocol:AuthnRequest"

MAX_XML_BYTES = 1 << 20  # far above any SAML message or metadata we exchange

_PYTHON_MODULES = {"onelogin.saml2": "python3-saml", "saml2": "pysaml2", "xmlsec": "xmlsec",
                   "lxml": "lxml"}


class SamlRejected(Exception):
    """A peer (or one of our exact checks) refused a message; ``errors`` lists every reason."""

    def __init__(self, reason: str, errors: Sequence[str] = ()):
        super().__init__(reason)
        self.reason = reason
        self.errors = list(errors) or [reason]


class SchemaInvalid(SamlRejected):
    """The document does not validate against the SAML 2.0 XSDs; ``errors`` are the schema's."""


def missing_saml_peers() -> list[str]:
    """Names of the packages/programs this module needs that are not installed."""
    missing = [pkg for mod, pkg in _PYTHON_MODULES.items() if importlib.util.find_spec(mod) is None]
    if shutil.which("xmlsec1") is None:
        missing.append("xmlsec1 (Debian package xmlsec1)")
    return missing


# --------------------------------------------------------------------------------- identities


@dataclass(frozen=True)
class SpIdentity:
    """Okta as a service provider: audience (entity ID), ACS URL and its signing key pair."""

    entity_id: str
    acs_url: str
    cert_pem: str
    key_pem: str

    @classmethod
    def generate(cls, entity_id: str, acs_url: str, *, common_name: str = "test Okta SP") -> "SpIdentity":
        cert_pem, key_pem = generate_key_and_cert(common_name)
        return cls(entity_id=entity_id, acs_url=acs_url, cert_pem=cert_pem, key_pem=key_pem)

    @classmethod
    def from_local_stack(cls, okta: dict) -> "SpIdentity":
        """From the ``okta`` object of the local stack's endpoints.json."""
        return cls(entity_id=okta["audience"], acs_url=okta["acs_url"],
                   cert_pem=okta["sp_cert"], key_pem=okta["sp_key"])


@dataclass(frozen=True)
class IdpInfo:
    """What Okta knows about our IdP. ``cert_pem`` is the first signing certificate."""

    entity_id: str
    sso_url: str
    cert_pem: str
    sso_post_url: str | None = None
    signing_certs: tuple[str, ...] = field(default=())

    @classmethod
    def from_metadata(cls, xml_bytes: bytes | str) -> "IdpInfo":
        """Read an IdP's entity ID, SSO URLs and signing certificates from its metadata."""
        root = parse_xml(xml_bytes)
        if root.tag != f"{{{NS['md']}}}EntityDescriptor":
            raise SamlRejected(f"metadata root is {root.tag}, not md:EntityDescriptor")
        entity_id = root.get("entityID")
        if not entity_id:
            raise SamlRejected("metadata has no entityID")
        descriptors = root.findall("md:IDPSSODescriptor", NS)
        if len(descriptors) != 1:
            raise SamlRejected(f"metadata has {len(descriptors)} IDPSSODescriptor elements, not 1")
        idp = descriptors[0]
        if NS["samlp"] not in (idp.get("protocolSupportEnumeration") or "").split():
            raise SamlRejected("IDPSSODescriptor does not announce the SAML 2.0 protocol")
        sso = {}
        for service in idp.findall("md:SingleSignOnService", NS):
            sso.setdefault(service.get("Binding"), service.get("Location"))
        if not (sso.get(BINDING_REDIRECT) or sso.get(BINDING_POST)):
            raise SamlRejected(f"no HTTP-Redirect or HTTP-POST SingleSignOnService: {sso}")
        certs = []
        for descriptor in idp.findall("md:KeyDescriptor", NS):
            if descriptor.get("use") not in (None, "signing"):
                continue
            for node in descriptor.findall("ds:KeyInfo/ds:X509Data/ds:X509Certificate", NS):
                certs.append(_der_b64_to_pem("".join((node.text or "").split())))
        if not certs:
            raise SamlRejected("metadata has no signing certificate")
        return cls(entity_id=entity_id, sso_url=sso.get(BINDING_REDIRECT) or sso[BINDING_POST],
                   cert_pem=certs[0], sso_post_url=sso.get(BINDING_POST),
                   signing_certs=tuple(certs))


def generate_key_and_cert(common_name: str, *, days: int = 30) -> tuple[str, str]:
    """A self-signed RSA-2048 certificate and its PKCS#8 key, both PEM text."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def _der_b64_to_pem(b64: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_der_x509_certificate(base64.b64decode(b64, validate=True))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# ------------------------------------------------------------------------------------ parsing


def parse_xml(data: bytes | str):
    """Parse untrusted XML: size-limited, no DTD, no entities, no network. Returns the root."""
    from lxml import etree

    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > MAX_XML_BYTES:
        raise SamlRejected(f"XML document of {len(data)} bytes exceeds {MAX_XML_BYTES}")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             dtd_validation=False, huge_tree=False, remove_blank_text=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise SamlRejected(f"malformed XML: {exc}") from exc
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise SamlRejected("XML with a DOCTYPE is refused")
    return root


def decode_post_message(b64: str | bytes) -> bytes:
    """The XML octets of an HTTP-POST ``SAMLResponse``/``SAMLRequest`` form value."""
    if isinstance(b64, str):
        b64 = b64.encode("ascii")
    return base64.b64decode(b"".join(b64.split()), validate=True)


# ------------------------------------------------------------------------- python3-saml pieces


def _onelogin():
    """Import python3-saml (and its xmlsec) on first use."""
    from onelogin.saml2.auth import OneLogin_Saml2_Auth
    from onelogin.saml2.authn_request import OneLogin_Saml2_Authn_Request
    from onelogin.saml2.settings import OneLogin_Saml2_Settings
    from onelogin.saml2.utils import OneLogin_Saml2_Utils

    return OneLogin_Saml2_Auth, OneLogin_Saml2_Authn_Request, OneLogin_Saml2_Settings, OneLogin_Saml2_Utils


def _onelogin_settings(sp: SpIdentity, idp: IdpInfo, *, strict: bool = True,
                       sig_alg: str = RSA_SHA256, name_id_format: str = NAMEID_EMAIL,
                       want_messages_signed: bool = False):
    _, _, Settings, _ = _onelogin()
    if sig_alg not in _DIGEST_FOR:
        raise ValueError(f"unsupported signature algorithm {sig_alg}")
    return Settings({
        "strict": strict,
        "debug": False,
        "sp": {
            "entityId": sp.entity_id,
            "assertionConsumerService": {"url": sp.acs_url, "binding": BINDING_POST},
            "NameIDFormat": name_id_format,
            "x509cert": sp.cert_pem,
            "privateKey": sp.key_pem,
        },
        "idp": {
            "entityId": idp.entity_id,
            "singleSignOnService": {"url": idp.sso_url, "binding": BINDING_REDIRECT},
            "x509cert": idp.cert_pem,
            **({"x509certMulti": {"signing": list(idp.signing_certs)}}
               if len(idp.signing_certs) > 1 else {}),
        },
        "security": {
            "authnRequestsSigned": True,
            "signatureAlgorithm": sig_alg,
            "digestAlgorithm": _DIGEST_FOR[sig_alg],
            "wantAssertionsSigned": True,
            "wantMessagesSigned": want_messages_signed,
            "wantNameId": True,
            "wantAssertionsEncrypted": False,
            "wantNameIdEncrypted": False,
            # A "Factor only" IdP proves possession; Okta needs no attributes from it.
            "wantAttributeStatement": False,
            "requestedAuthnContext": False,
            "rejectDeprecatedAlgorithm": True,
            # The local stack's URLs may be http://localhost:PORT/...
            "allowSingleLabelDomains": True,
        },
    })


def _request_data(url: str, **extra) -> dict:
    """python3-saml's view of "the request we are handling", i.e. one that arrived at ``url``."""
    parts = urlsplit(url)
    data = {"http_host": parts.netloc, "script_name": parts.path, "get_data": {}, "post_data": {}}
    if parts.scheme == "https":
        data["https"] = "on"
    data.update(extra)
    return data


class RedirectRequest(NamedTuple):
    url: str          #: send these octets as they are (see send_exact)
    request_id: str
    xml: bytes        #: the AuthnRequest before DEFLATE


class PostRequest(NamedTuple):
    form: dict        #: SAMLRequest (base64 of the signed XML) and RelayState when given
    request_id: str
    xml: bytes        #: the signed AuthnRequest


def _java_urlencode(value: str) -> str:
    # java.net.URLEncoder.encode(value, UTF_8): keeps A-Z a-z 0-9 . - * _, space as '+'.
    # urllib's quote() never encodes '~' (always safe since Python 3.7); Java does.
    return quote(value, safe=".-*_ ").replace(" ", "+").replace("~", "%7E")


def _lowercase_urlencode(value: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote_plus(value))


_ENCODERS = {"java": _java_urlencode, "lowercase": _lowercase_urlencode}


def _authn_request(settings, name_id, force_authn, name_id_policy):
    _, AuthnRequest, _, _ = _onelogin()
    value = xml_escape(name_id) if name_id is not None else None
    return AuthnRequest(settings, force_authn=force_authn, is_passive=False,
                        set_nameid_policy=name_id_policy, name_id_value_req=value)


def okta_authn_request_redirect(sp: SpIdentity, idp: IdpInfo, *, name_id: str | None = None,
                                name_id_format: str = NAMEID_EMAIL,
                                relay_state: str | None = None, sig_alg: str = RSA_SHA256,
                                force_authn: bool = False, name_id_policy: bool = True,
                                query_encoding: str = "python") -> RedirectRequest:
    """A signed HTTP-Redirect AuthnRequest from "Okta" to ``idp.sso_url``, built by python3-saml.

    ``name_id`` adds ``<saml:Subject><saml:NameID Format=name_id_format>``. ``query_encoding``
    "python" is python3-saml's own URL; "java" and "lowercase" re-encode every value (and sign the
    re-encoded octets) the way Java's URLEncoder, or ADFS-style lower-case hex, would.
    """
    Auth, _, _, Utils = _onelogin()
    settings = _onelogin_settings(sp, idp, sig_alg=sig_alg, name_id_format=name_id_format)
    request = _authn_request(settings, name_id, force_authn, name_id_policy)
    saml_request = request.get_request(deflate=True)
    if query_encoding == "python":
        # What OneLogin_Saml2_Auth.login() does, minus its default RelayState.
        params = {"SAMLRequest": saml_request}
        if relay_state is not None:
            params["RelayState"] = relay_state
        auth = Auth(_request_data(sp.acs_url), settings)
        auth.add_request_signature(params, sig_alg)
        url = Utils.redirect(idp.sso_url, params, request_data=_request_data(sp.acs_url))
    elif query_encoding in _ENCODERS:
        import xmlsec

        encode = _ENCODERS[query_encoding]
        signed = [f"SAMLRequest={encode(saml_request)}"]
        if relay_state is not None:
            signed.append(f"RelayState={encode(relay_state)}")
        signed.append(f"SigAlg={encode(sig_alg)}")
        transform = {RSA_SHA1: xmlsec.Transform.RSA_SHA1, RSA_SHA256: xmlsec.Transform.RSA_SHA256,
                     RSA_SHA384: xmlsec.Transform.RSA_SHA384,
                     RSA_SHA512: xmlsec.Transform.RSA_SHA512}[sig_alg]
        octets = "&".join(signed)
        signature = base64.b64encode(Utils.sign_binary(octets, sp.key_pem, transform)).decode()
        sep = "&" if "?" in idp.sso_url else "?"
        url = f"{idp.sso_url}{sep}{octets}&Signature={encode(signature)}"
    else:
        raise ValueError(f"query_encoding must be python, java or lowercase, not {query_encoding!r}")
    return RedirectRequest(url=url, request_id=request.get_id(), xml=request.get_xml().encode())


def okta_authn_request_post(sp: SpIdentity, idp: IdpInfo, *, name_id: str | None = None,
                            name_id_format: str = NAMEID_EMAIL, relay_state: str | None = None,
                            sig_alg: str = RSA_SHA256, force_authn: bool = False,
                            name_id_policy: bool = True) -> PostRequest:
    """A signed HTTP-POST AuthnRequest: enveloped signature (after the Issuer) on the root.

    POST it as a form to ``idp.sso_post_url or idp.sso_url``; ``Destination`` is ``idp.sso_url``.
    """
    _, _, _, Utils = _onelogin()
    settings = _onelogin_settings(sp, idp, sig_alg=sig_alg, name_id_format=name_id_format)
    request = _authn_request(settings, name_id, force_authn, name_id_policy)
    signed = Utils.add_sign(request.get_xml(), sp.key_pem, sp.cert_pem,
                            sign_algorithm=sig_alg, digest_algorithm=_DIGEST_FOR[sig_alg])
    if isinstance(signed, str):
        signed = signed.encode()
    form = {"SAMLRequest": base64.b64encode(signed).decode()}
    if relay_state is not None:
        form["RelayState"] = relay_state
    return PostRequest(form=form, request_id=request.get_id(), xml=signed)


def send_exact(session, url: str, **send_kwargs):
    """GET ``url`` with ``requests`` without letting it re-quote the query octets.

    ``send_kwargs`` go to ``Session.send`` (``verify=``, ``cert=``, ``allow_redirects=``,
    ``timeout=``; the timeout defaults to 30 s).
    """
    import requests

    prepared = session.prepare_request(requests.Request("GET", url))
    prepared.url = url
    send_kwargs.setdefault("timeout", 30)
    send_kwargs.setdefault("allow_redirects", False)
    return session.send(prepared, **send_kwargs)


# ----------------------------------------------------------------------------------- validators


def validate_with_python3_saml(response_b64: str | bytes, *, sp: SpIdentity, idp: IdpInfo,
                               request_id: str, strict: bool = True, exact: bool = True,
                               want_messages_signed: bool = False) -> dict:
    """Consume a POSTed ``SAMLResponse`` as python3-saml's strict SP would, then :func:`exact_checks`.

    Returns ``nameid, nameid_format, attributes, session_index, issuer, in_response_to,
    assertion_id, authn_contexts``; raises :class:`SamlRejected` with OneLogin's errors.
    """
    Auth, _, _, _ = _onelogin()
    if isinstance(response_b64, bytes):
        response_b64 = response_b64.decode("ascii")
    settings = _onelogin_settings(sp, idp, strict=strict, want_messages_signed=want_messages_signed)
    auth = Auth(_request_data(sp.acs_url, post_data={"SAMLResponse": response_b64}), settings)
    try:
        auth.process_response(request_id=request_id)
    except Exception as exc:  # python3-saml raises for unparsable input, reports the rest
        raise SamlRejected(f"python3-saml: {type(exc).__name__}: {exc}") from exc
    errors = list(auth.get_errors())
    if errors or not auth.is_authenticated():
        reason = auth.get_last_error_reason() or "not authenticated"
        raise SamlRejected(f"python3-saml: {reason} ({', '.join(errors)})", [reason, *errors])
    xml = decode_post_message(response_b64)
    if exact:
        exact_checks(xml, sp, request_id)
    root = parse_xml(xml)
    return {
        "nameid": auth.get_nameid(),
        "nameid_format": auth.get_nameid_format(),
        "attributes": auth.get_attributes(),
        "session_index": auth.get_session_index(),
        "issuer": root.findtext("saml:Assertion/saml:Issuer", namespaces=NS),
        "in_response_to": auth.get_last_response_in_response_to(),
        "assertion_id": auth.get_last_assertion_id(),
        "authn_contexts": auth.get_last_authn_contexts(),
    }


def validate_with_pysaml2(response_b64: str | bytes, *, sp: SpIdentity,
                          idp_metadata_xml: bytes | str, request_id: str, exact: bool = True,
                          xsd: bool = True) -> dict:
    """Consume a POSTed ``SAMLResponse`` with pysaml2's ``Saml2Client`` (signatures by xmlsec1).

    ``xsd`` first validates the received octets with pysaml2's own schema validator. Returns
    ``nameid, nameid_format, attributes, session_index, issuer, in_response_to``.
    """
    with warnings.catch_warnings():
        # pysaml2 7.5 touches cryptography's deprecated CFB mode at import time.
        warnings.simplefilter("ignore")
        from saml2 import BINDING_HTTP_POST
        from saml2.client import Saml2Client
        from saml2.config import SPConfig
        from saml2.xml.schema import XMLSchemaError
        from saml2.xml.schema import validate as pysaml2_schema_validate

    if isinstance(response_b64, bytes):
        response_b64 = response_b64.decode("ascii")
    if isinstance(idp_metadata_xml, bytes):
        idp_metadata_xml = idp_metadata_xml.decode("utf-8")
    xml = decode_post_message(response_b64)
    if xsd:
        root = parse_xml(xml)  # hardened parse first; xmlschema gets the parsed tree
        try:
            pysaml2_schema_validate(root)
        except XMLSchemaError as exc:
            raise SchemaInvalid(f"pysaml2 XSD: {exc}") from exc

    config = SPConfig()
    config.load({
        "entityid": sp.entity_id,
        "xmlsec_binary": shutil.which("xmlsec1"),
        "metadata": {"inline": [idp_metadata_xml]},
        "allow_unknown_attributes": True,
        "delete_tmpfiles": True,
        "service": {"sp": {
            "endpoints": {"assertion_consumer_service": [(sp.acs_url, BINDING_HTTP_POST)]},
            "allow_unsolicited": False,
            "authn_requests_signed": True,
            "want_assertions_signed": True,
            "want_response_signed": False,
            "name_id_format": [NAMEID_EMAIL, NAMEID_UNSPECIFIED],
        }},
    })
    client = Saml2Client(config=config)
    try:
        response = client.parse_authn_request_response(
            response_b64, BINDING_HTTP_POST, outstanding={request_id: "/"},
            # Any non-empty conv_info turns on pysaml2's Recipient check (Recipient must be one
            # of our ACS URLs); "0.0.0.0" is its own "accept any Address" default.
            conv_info={"remote_addr": "0.0.0.0"})
    except Exception as exc:
        raise SamlRejected(f"pysaml2: {type(exc).__name__}: {_pysaml2_reason(exc)}") from exc
    if response is None:
        raise SamlRejected("pysaml2: the response could not be unpacked")
    if response.assertion is None or response.name_id is None:
        # parse_authn_request_response ignores AuthnResponse.verify()'s None (wrong Destination,
        # InResponseTo, status or IssueInstant) and hands back a response whose assertion was
        # never parsed nor its signature checked.
        raise SamlRejected(
            "pysaml2: AuthnResponse.verify() failed, no assertion was accepted "
            f"(Destination {response.response.destination!r}, "
            f"InResponseTo {response.response.in_response_to!r})")
    if exact:
        exact_checks(xml, sp, request_id)
    assertion = response.assertion
    session_index = None
    if assertion is not None and assertion.authn_statement:
        session_index = assertion.authn_statement[0].session_index
    return {
        "nameid": response.name_id.text if response.name_id is not None else None,
        "nameid_format": response.name_id.format if response.name_id is not None else None,
        "attributes": response.ava,
        "session_index": session_index,
        "issuer": response.issuer(),
        "in_response_to": response.in_response_to,
    }


def _pysaml2_reason(exc: Exception) -> str:
    # pysaml2's signature errors carry a dict that includes the whole document: drop it.
    detail = exc.args[0] if exc.args else exc
    if isinstance(detail, dict):
        detail = {k: v for k, v in detail.items() if k not in ("xml document", "document", "doc")}
    return str(detail)


def exact_checks(response_xml: bytes | str, sp: SpIdentity, request_id: str) -> None:
    """The Web Browser SSO profile's MUSTs that python3-saml and pysaml2 only check loosely.

    Response ``Destination`` and every bearer ``SubjectConfirmationData/@Recipient`` equal the
    ACS URL exactly; ``InResponseTo`` on both equals ``request_id``; bearer confirmations carry
    ``NotOnOrAfter``; exactly one (unencrypted) Assertion; every ``AudienceRestriction`` names the
    SP. Raises :class:`SamlRejected` listing every failure.
    """
    root = parse_xml(response_xml)
    problems = []
    if root.tag != f"{{{NS['samlp']}}}Response":
        raise SamlRejected(f"root element is {root.tag}, not samlp:Response")
    if root.get("Destination") != sp.acs_url:
        problems.append(f"Response Destination {root.get('Destination')!r} != ACS {sp.acs_url!r}")
    if root.get("InResponseTo") != request_id:
        problems.append(f"Response InResponseTo {root.get('InResponseTo')!r} != {request_id!r}")
    status = root.find("samlp:Status/samlp:StatusCode", NS)
    if status is None or status.get("Value") != STATUS_SUCCESS:
        problems.append(f"top-level StatusCode is {None if status is None else status.get('Value')!r}")
    assertions = root.findall("saml:Assertion", NS)
    if root.findall("saml:EncryptedAssertion", NS):
        problems.append("EncryptedAssertion present")
    if len(assertions) != 1 or len(root.findall(".//saml:Assertion", NS)) != 1:
        problems.append(f"{len(root.findall('.//saml:Assertion', NS))} Assertion elements, not 1")
    for assertion in assertions[:1]:
        bearer = [sc for sc in assertion.findall("saml:Subject/saml:SubjectConfirmation", NS)
                  if sc.get("Method") == CM_BEARER]
        if not bearer:
            problems.append("no bearer SubjectConfirmation")
        for sc in bearer:
            data = sc.find("saml:SubjectConfirmationData", NS)
            if data is None:
                problems.append("bearer SubjectConfirmation without SubjectConfirmationData")
                continue
            if data.get("Recipient") != sp.acs_url:
                problems.append(f"Recipient {data.get('Recipient')!r} != ACS {sp.acs_url!r}")
            if data.get("InResponseTo") != request_id:
                problems.append(
                    f"SubjectConfirmationData InResponseTo {data.get('InResponseTo')!r} != {request_id!r}")
            if not data.get("NotOnOrAfter"):
                problems.append("SubjectConfirmationData without NotOnOrAfter")
        restrictions = assertion.findall("saml:Conditions/saml:AudienceRestriction", NS)
        if not restrictions:
            problems.append("no AudienceRestriction")
        for restriction in restrictions:
            audiences = [(a.text or "").strip() for a in restriction.findall("saml:Audience", NS)]
            if sp.entity_id not in audiences:
                problems.append(f"AudienceRestriction {audiences} does not name {sp.entity_id!r}")
    if problems:
        raise SamlRejected("exact checks: " + "; ".join(problems), problems)


def xmlsec1_verify(xml_bytes: bytes | str, cert_pem: str,
                   id_attr: str | Sequence[str] = ASSERTION_NODE, *,
                   timeout: float = 30) -> subprocess.CompletedProcess:
    """``xmlsec1 --verify`` the first ``ds:Signature`` of ``xml_bytes`` with ``cert_pem``'s key only.

    ``id_attr`` names the node(s) whose ``ID`` attribute references point at
    (``namespace:LocalName``). Only same-document references are allowed. Returns the completed
    process (``returncode`` 0 and ``OK`` on stderr when the signature verifies).
    """
    binary = shutil.which("xmlsec1")
    if binary is None:
        raise FileNotFoundError("xmlsec1 is not installed (apt-get install xmlsec1)")
    if isinstance(xml_bytes, str):
        xml_bytes = xml_bytes.encode("utf-8")
    parse_xml(xml_bytes)  # refuse DTDs: xmlsec1 would honour ID attributes declared in one
    ids = [id_attr] if isinstance(id_attr, str) else list(id_attr)
    with tempfile.TemporaryDirectory(prefix="xmlsec1-") as tmp:
        cert_file = Path(tmp, "signer.pem")
        doc_file = Path(tmp, "message.xml")
        cert_file.write_text(cert_pem)
        doc_file.write_bytes(xml_bytes)
        cmd = [binary, "--verify", "--pubkey-cert-pem", str(cert_file),
               "--enabled-key-data", "key-name", "--enabled-reference-uris", "same-doc"]
        for node in ids:
            cmd += ["--id-attr:ID", node]
        cmd.append(str(doc_file))
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "LC_ALL": "C"})


# ---------------------------------------------------------------------------------------- XSDs

_SCHEMA_FILES = {
    "protocol": "saml-schema-protocol-2.0.xsd",
    "assertion": "saml-schema-assertion-2.0.xsd",
    "metadata": "saml-schema-metadata-2.0.xsd",
}


@functools.lru_cache(maxsize=None)
def _schema(kind: str):
    from importlib.resources import files

    from lxml import etree

    directory = Path(str(files("onelogin.saml2") / "schemas")).resolve()

    class LocalSchemasOnly(etree.Resolver):
        """Imports resolve inside python3-saml's schemas directory or not at all."""

        def resolve(self, url, pubid, context):
            path = Path(url[7:] if url.startswith("file://") else url)
            if not path.is_absolute():
                path = directory / path
            path = path.resolve()
            if path.parent != directory or not path.is_file():
                raise OSError(f"schema import outside {directory} refused: {url}")
            return self.resolve_filename(str(path), context)

    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    parser.resolvers.add(LocalSchemasOnly())
    document = etree.parse(str(directory / _SCHEMA_FILES[kind]), parser)
    return etree.XMLSchema(document)


def validate_xsd(xml_bytes: bytes | str, kind: str = "protocol") -> None:
    """Validate against the SAML 2.0 schema for ``kind`` ("protocol", "assertion", "metadata").

    Raises :class:`SchemaInvalid` whose ``errors`` are ``"line N: message"`` strings.
    """
    if kind not in _SCHEMA_FILES:
        raise ValueError(f"kind must be one of {sorted(_SCHEMA_FILES)}, not {kind!r}")
    schema = _schema(kind)
    root = parse_xml(xml_bytes)
    if not schema.validate(root):
        errors = [f"line {e.line}: {e.message}" for e in schema.error_log]
        raise SchemaInvalid(f"not valid per {_SCHEMA_FILES[kind]}: " + "; ".join(errors), errors)


def inflate_redirect_message(b64: str) -> bytes:
    """The XML of an HTTP-Redirect ``SAMLRequest`` value (already URL-decoded): raw DEFLATE."""
    return zlib.decompress(base64.b64decode(b64, validate=True), -15)
