"""Self-check of the SAML harness (tests/interop/saml_peers.py) before our IdP exists.

Two throw-away IdPs stand in for ours: pysaml2's own IdP (``saml2.server.Server``, a real
third-party implementation) and a hand-built Response signed with python-xmlsec, whose every
attribute a test can bend. The tests prove that the harness's "Okta" requests are what they claim
(signature over the exact query octets, checked here with ``cryptography`` alone; the Subject when
asked), that every validator accepts a correct Response, and that each one refuses the tampered
copies it is responsible for -- so that a later failure against our IdP is about our IdP. Where a
library is lax (see the module docstring of saml_peers.py) the laxness is asserted too, so that a
library upgrade that changes it is noticed.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import secrets
import shutil
import tempfile
import threading
import urllib.parse
import warnings
import zlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

try:  # tests/ and tests/interop/ are packages ...
    from tests.interop import saml_peers
except ImportError:  # pragma: no cover - ... or pytest put tests/interop itself on sys.path
    import saml_peers


NS = saml_peers.NS
SamlRejected = saml_peers.SamlRejected

MISSING = saml_peers.missing_saml_peers()
pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)}"),
]

# Shaped like the real thing: Okta's audience and ACS URL differ.
OKTA_AUDIENCE = "https://www.okta.com/saml2/service-provider/spdevicegateselfcheck"
OKTA_ACS = "https://devicegate-test.okta.com/sso/saml2/0oadevicegateselfcheck"
IDP_ENTITY_ID = "https://devicegate.test/saml/metadata"
IDP_SSO_URL = "https://okta.devicegate.test/saml/sso"
USER = "user@example.com"
AC_X509 = "urn:oasis:names:tc:SAML:2.0:ac:classes:X509"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def okta():
    return saml_peers.SpIdentity.generate(OKTA_AUDIENCE, OKTA_ACS)


@pytest.fixture(scope="module")
def idp_keys():
    return saml_peers.generate_key_and_cert("devicegate self-check IdP")


@pytest.fixture(scope="module")
def attacker_keys():
    return saml_peers.generate_key_and_cert("devicegate self-check IdP")  # same name, other key


class Pysaml2Idp:
    """pysaml2's IdP, configured with Okta's SP metadata (as python3-saml writes it)."""

    def __init__(self, okta, idp_keys, workdir: Path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pysaml2 7.5 touches cryptography's deprecated CFB
            from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
            from saml2.config import IdPConfig
            from saml2.metadata import entity_descriptor
            from saml2.server import Server
        from onelogin.saml2.settings import OneLogin_Saml2_Settings

        cert_pem, key_pem = idp_keys
        (workdir / "idp.crt").write_text(cert_pem)
        (workdir / "idp.key").write_text(key_pem)
        sp_metadata = OneLogin_Saml2_Settings({
            "sp": {"entityId": okta.entity_id,
                   "assertionConsumerService": {"url": okta.acs_url},
                   "NameIDFormat": saml_peers.NAMEID_EMAIL,
                   "x509cert": okta.cert_pem, "privateKey": okta.key_pem},
            "security": {"authnRequestsSigned": True, "wantAssertionsSigned": True},
        }, sp_validation_only=True).get_sp_metadata()
        config = IdPConfig()
        config.load({
            "entityid": IDP_ENTITY_ID,
            "xmlsec_binary": shutil.which("xmlsec1"),
            "key_file": str(workdir / "idp.key"),
            "cert_file": str(workdir / "idp.crt"),
            "metadata": {"inline": [sp_metadata.decode()]},
            "service": {"idp": {
                "endpoints": {"single_sign_on_service": [(IDP_SSO_URL, BINDING_HTTP_REDIRECT),
                                                         (IDP_SSO_URL, BINDING_HTTP_POST)]},
                "name_id_format": [saml_peers.NAMEID_EMAIL],
                "want_authn_requests_signed": True,
                "sign_assertion": True,
                "sign_response": False,
                "policy": {"default": {"lifetime": {"minutes": 5}}},
            }},
        })
        self.server = Server(config=config)
        self.metadata_xml = str(entity_descriptor(config)).encode()
        self.info = saml_peers.IdpInfo.from_metadata(self.metadata_xml)

    def respond(self, request, *, sign_response=False) -> bytes:
        """A signed Response (RSA-SHA256) to a parsed pysaml2 AuthnRequest."""
        from saml2.authn_context import PASSWORDPROTECTEDTRANSPORT

        message = request.message
        xml = self.server.create_authn_response(
            {}, in_response_to=message.id, destination=message.assertion_consumer_service_url,
            sp_entity_id=message.issuer.text, name_id=message.subject.name_id,
            authn={"class_ref": PASSWORDPROTECTEDTRANSPORT}, sign_assertion=True,
            sign_response=sign_response, sign_alg=saml_peers.RSA_SHA256, digest_alg=SHA256)
        return str(xml).encode()


@pytest.fixture(scope="module")
def pysaml2_idp(okta, idp_keys):
    with tempfile.TemporaryDirectory(prefix="pysaml2-idp-") as tmp:
        yield Pysaml2Idp(okta, idp_keys, Path(tmp))


@pytest.fixture(scope="module")
def idp(pysaml2_idp):
    """What Okta knows about the IdP (read from pysaml2's IdP metadata)."""
    return pysaml2_idp.info


# ------------------------------------------------------------------- the hand-built test IdP


def saml_time(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_response(sp, request_id, *, name_id=USER, destination=..., recipient=...,
                   in_response_to=..., scd_in_response_to=..., audience=...,
                   issuer=IDP_ENTITY_ID):
    """An unsigned Response tree; ``...`` is the right value, ``None`` leaves the item out."""
    from lxml import etree

    def right(value, default):
        return default if value is ... else value

    def put(element, name, value):
        if value is not None:
            element.set(name, value)

    samlp, saml = "{%s}" % NS["samlp"], "{%s}" % NS["saml"]
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    later = saml_time(now + datetime.timedelta(minutes=5))
    root = etree.Element(samlp + "Response", nsmap={"samlp": NS["samlp"], "saml": NS["saml"]})
    root.set("ID", "_r" + secrets.token_hex(16))
    root.set("Version", "2.0")
    root.set("IssueInstant", saml_time(now))
    put(root, "Destination", right(destination, sp.acs_url))
    put(root, "InResponseTo", right(in_response_to, request_id))
    etree.SubElement(root, saml + "Issuer").text = issuer
    status = etree.SubElement(root, samlp + "Status")
    etree.SubElement(status, samlp + "StatusCode", Value=saml_peers.STATUS_SUCCESS)

    assertion = etree.SubElement(root, saml + "Assertion", ID="_a" + secrets.token_hex(16),
                                 Version="2.0", IssueInstant=saml_time(now))
    etree.SubElement(assertion, saml + "Issuer").text = issuer
    subject = etree.SubElement(assertion, saml + "Subject")
    etree.SubElement(subject, saml + "NameID", Format=saml_peers.NAMEID_EMAIL).text = name_id
    confirmation = etree.SubElement(subject, saml + "SubjectConfirmation",
                                    Method=saml_peers.CM_BEARER)
    data = etree.SubElement(confirmation, saml + "SubjectConfirmationData", NotOnOrAfter=later)
    put(data, "Recipient", right(recipient, sp.acs_url))
    put(data, "InResponseTo", right(scd_in_response_to, request_id))
    conditions = etree.SubElement(assertion, saml + "Conditions", NotBefore=saml_time(now),
                                  NotOnOrAfter=later)
    audience = right(audience, sp.entity_id)
    if audience is not None:
        restriction = etree.SubElement(conditions, saml + "AudienceRestriction")
        etree.SubElement(restriction, saml + "Audience").text = audience
    statement = etree.SubElement(assertion, saml + "AuthnStatement", AuthnInstant=saml_time(now),
                                 SessionIndex="_s" + secrets.token_hex(8))
    context = etree.SubElement(statement, saml + "AuthnContext")
    etree.SubElement(context, saml + "AuthnContextClassRef").text = AC_X509
    attributes = etree.SubElement(assertion, saml + "AttributeStatement")
    attribute = etree.SubElement(attributes, saml + "Attribute", Name="deviceCompliant",
                                 NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic")
    etree.SubElement(attribute, saml + "AttributeValue").text = "true"
    return root


def sign_enveloped(element, cert_pem: str, key_pem: str, *, sha1: bool = False) -> None:
    """Enveloped RSA-SHA256 (or RSA-SHA1) / exc-c14n signature right after ``element``'s Issuer."""
    import xmlsec

    signature = xmlsec.template.create(
        element, xmlsec.Transform.EXCL_C14N,
        xmlsec.Transform.RSA_SHA1 if sha1 else xmlsec.Transform.RSA_SHA256, ns="ds")
    element.find("saml:Issuer", NS).addnext(signature)
    reference = xmlsec.template.add_reference(
        signature, xmlsec.Transform.SHA1 if sha1 else xmlsec.Transform.SHA256,
        uri="#" + element.get("ID"))
    xmlsec.template.add_transform(reference, xmlsec.Transform.ENVELOPED)
    xmlsec.template.add_transform(reference, xmlsec.Transform.EXCL_C14N)
    xmlsec.template.add_x509_data(xmlsec.template.ensure_key_info(signature))
    xmlsec.tree.add_ids(element.getroottree().getroot(), ["ID"])
    context = xmlsec.SignatureContext()
    key = xmlsec.Key.from_memory(key_pem, xmlsec.constants.KeyDataFormatPem)
    key.load_cert_from_memory(cert_pem, xmlsec.constants.KeyDataFormatPem)
    context.key = key
    context.sign(signature)


def signed_response(sp, request_id, keys, *, sign=("assertion",), sha1=False, **fields) -> bytes:
    from lxml import etree

    root = build_response(sp, request_id, **fields)
    if "assertion" in sign:  # inner first: the Response's digest then covers it
        sign_enveloped(root.find("saml:Assertion", NS), *keys, sha1=sha1)
    if "response" in sign:
        sign_enveloped(root, *keys, sha1=sha1)
    return etree.tostring(root)


def edited(xml: bytes, edit) -> bytes:
    """A copy of ``xml`` changed by ``edit(root)`` after signing."""
    from lxml import etree

    root = saml_peers.parse_xml(xml)
    edit(root)
    return etree.tostring(root)


def b64(xml: bytes) -> str:
    return base64.b64encode(xml).decode()


# ------------------------------------------------------------------------- request builders


def split_query(url: str) -> tuple[str, list[tuple[str, str]]]:
    """The URL before '?', and its query as (name, raw value) pairs, nothing decoded."""
    base, _, query = url.partition("?")
    return base, [(name, value) for name, _, value in (part.partition("=") for part in query.split("&"))]


def signed_octets(pairs) -> bytes:
    raw = dict(pairs)
    return "&".join(f"{name}={raw[name]}" for name in ("SAMLRequest", "RelayState", "SigAlg")
                    if name in raw).encode("ascii")


def verify_query_signature(pairs, cert_pem: str, octets: bytes) -> None:
    raw = dict(pairs)
    algorithm = {saml_peers.RSA_SHA256: hashes.SHA256(), saml_peers.RSA_SHA512: hashes.SHA512()}[
        urllib.parse.unquote_plus(raw["SigAlg"])]
    signature = base64.b64decode(urllib.parse.unquote_plus(raw["Signature"]), validate=True)
    public_key = x509.load_pem_x509_certificate(cert_pem.encode()).public_key()
    public_key.verify(signature, octets, padding.PKCS1v15(), algorithm)


def inflate(raw_value: str) -> bytes:
    return zlib.decompress(base64.b64decode(urllib.parse.unquote_plus(raw_value), validate=True), -15)


RELAY_STATE = "okta state ~*/é"  # the characters on which quote_plus, Java and ADFS differ


@pytest.mark.parametrize("query_encoding, relay_marks", [
    ("python", ["okta+state+~%2A%2F%C3%A9"]),
    ("java", ["okta+state+%7E*%2F%C3%A9"]),
    ("lowercase", ["okta+state+~%2a%2f%c3%a9"]),
])
def test_redirect_request_is_signed_over_the_exact_query_octets(okta, idp, query_encoding, relay_marks):
    request = saml_peers.okta_authn_request_redirect(
        okta, idp, name_id=USER, relay_state=RELAY_STATE, query_encoding=query_encoding)
    base, pairs = split_query(request.url)
    assert base == idp.sso_url
    names = [name for name, _ in pairs]
    assert sorted(names) == ["RelayState", "SAMLRequest", "SigAlg", "Signature"]
    if query_encoding == "python":  # python3-saml's own order
        assert names == ["SAMLRequest", "RelayState", "Signature", "SigAlg"]
    assert dict(pairs)["RelayState"] in relay_marks

    octets = signed_octets(pairs)
    verify_query_signature(pairs, okta.cert_pem, octets)
    with pytest.raises(InvalidSignature):  # and not with the IdP's key, or another one
        verify_query_signature(pairs, idp.cert_pem, octets)
    # A verifier that decodes and re-encodes the values with quote_plus only works by luck:
    reencoded = "&".join(
        f"{name}={urllib.parse.quote_plus(urllib.parse.unquote_plus(dict(pairs)[name]))}"
        for name in ("SAMLRequest", "RelayState", "SigAlg")).encode()
    if query_encoding == "python":
        assert reencoded == octets
    else:
        assert reencoded != octets
        with pytest.raises(InvalidSignature):
            verify_query_signature(pairs, okta.cert_pem, reencoded)

    xml = inflate(dict(pairs)["SAMLRequest"])
    assert xml == request.xml
    saml_peers.validate_xsd(xml)
    root = saml_peers.parse_xml(xml)
    assert root.tag == "{%s}AuthnRequest" % NS["samlp"]
    assert root.get("ID") == request.request_id
    assert root.get("Destination") == idp.sso_url
    assert root.get("AssertionConsumerServiceURL") == okta.acs_url
    assert root.get("ProtocolBinding") == saml_peers.BINDING_POST
    assert root.get("ForceAuthn") is None
    assert root.findtext("saml:Issuer", namespaces=NS) == okta.entity_id
    name_id = root.find("saml:Subject/saml:NameID", NS)
    assert name_id.text == USER and name_id.get("Format") == saml_peers.NAMEID_EMAIL
    assert root.find("ds:Signature", NS) is None  # Redirect: the signature is in the query


def test_redirect_request_sha512_without_subject_or_relay_state(okta, idp):
    request = saml_peers.okta_authn_request_redirect(
        okta, idp, sig_alg=saml_peers.RSA_SHA512, force_authn=True)
    _, pairs = split_query(request.url)
    assert [name for name, _ in pairs] == ["SAMLRequest", "Signature", "SigAlg"]
    verify_query_signature(pairs, okta.cert_pem, signed_octets(pairs))
    root = saml_peers.parse_xml(inflate(dict(pairs)["SAMLRequest"]))
    assert root.find("saml:Subject", NS) is None
    assert root.get("ForceAuthn") == "true"
    assert root.find("samlp:NameIDPolicy", NS).get("Format") == saml_peers.NAMEID_EMAIL


def test_name_id_is_xml_escaped_and_login_itself_emits_the_subject(okta, idp):
    request = saml_peers.okta_authn_request_redirect(okta, idp, name_id="o'b&<x>@example.com")
    root = saml_peers.parse_xml(request.xml)
    assert root.findtext("saml:Subject/saml:NameID", namespaces=NS) == "o'b&<x>@example.com"

    # The harness builds what OneLogin_Saml2_Auth.login() builds; login() itself, for the record:
    from onelogin.saml2.auth import OneLogin_Saml2_Auth
    from onelogin.saml2.settings import OneLogin_Saml2_Settings

    settings = OneLogin_Saml2_Settings({
        "sp": {"entityId": okta.entity_id, "assertionConsumerService": {"url": okta.acs_url},
               "NameIDFormat": saml_peers.NAMEID_EMAIL, "x509cert": okta.cert_pem,
               "privateKey": okta.key_pem},
        "idp": {"entityId": idp.entity_id, "singleSignOnService": {"url": idp.sso_url},
                "x509cert": idp.cert_pem},
        "security": {"authnRequestsSigned": True, "requestedAuthnContext": False}})
    auth = OneLogin_Saml2_Auth({"https": "on", "http_host": "devicegate-test.okta.com",
                                "script_name": "/sso/saml2/0oadevicegateselfcheck"}, settings)
    url = auth.login(name_id_value_req=USER)
    subject = saml_peers.parse_xml(auth.get_last_request_xml()).find("saml:Subject", NS)
    assert subject.findtext("saml:NameID", namespaces=NS) == USER
    assert subject.find("saml:SubjectConfirmation", NS).get("Method") == saml_peers.CM_BEARER
    # login() without return_to sends the current URL as RelayState; the harness does not.
    assert dict(split_query(url)[1])["RelayState"] == urllib.parse.quote_plus(okta.acs_url)


def test_post_request_has_an_enveloped_signature_after_the_issuer(okta, idp, attacker_keys):
    request = saml_peers.okta_authn_request_post(okta, idp, name_id=USER, relay_state="rs")
    assert set(request.form) == {"SAMLRequest", "RelayState"} and request.form["RelayState"] == "rs"
    xml = saml_peers.decode_post_message(request.form["SAMLRequest"])
    assert xml == request.xml
    saml_peers.validate_xsd(xml)
    root = saml_peers.parse_xml(xml)
    assert root.get("ID") == request.request_id
    assert [child.tag for child in root][:3] == [
        "{%s}Issuer" % NS["saml"], "{%s}Signature" % NS["ds"], "{%s}Subject" % NS["saml"]]
    assert root.find("ds:Signature/ds:SignedInfo/ds:Reference", NS).get("URI") == "#" + request.request_id
    assert root.find("ds:Signature/ds:SignedInfo/ds:SignatureMethod", NS).get(
        "Algorithm") == saml_peers.RSA_SHA256
    assert root.findtext("saml:Subject/saml:NameID", namespaces=NS) == USER

    good = saml_peers.xmlsec1_verify(xml, okta.cert_pem, saml_peers.AUTHN_REQUEST_NODE)
    assert good.returncode == 0 and "OK" in good.stderr, good.stderr
    # The signature embeds Okta's certificate; xmlsec1 must not use it.
    bad = saml_peers.xmlsec1_verify(xml, attacker_keys[0], saml_peers.AUTHN_REQUEST_NODE)
    assert bad.returncode != 0 and "FAIL" in bad.stderr, bad.stderr


def test_pysaml2_idp_verifies_redirect_signatures_by_re_encoding(okta, pysaml2_idp):
    """pysaml2's IdP rebuilds the signed string with urlencode: fine for python3-saml's URL,
    wrong for a Java-encoded one. Ours must verify the octets it received."""
    from saml2 import BINDING_HTTP_REDIRECT
    from saml2.response import IncorrectlySigned

    def parse(request):
        values = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(request.url).query))
        return pysaml2_idp.server.parse_authn_request(
            values["SAMLRequest"], BINDING_HTTP_REDIRECT, relay_state=values.get("RelayState"),
            sigalg=values["SigAlg"], signature=values["Signature"])

    python_style = saml_peers.okta_authn_request_redirect(
        okta, pysaml2_idp.info, name_id=USER, relay_state=RELAY_STATE)
    parsed = parse(python_style)
    assert parsed.message.id == python_style.request_id
    assert parsed.message.subject.name_id.text == USER

    java_style = saml_peers.okta_authn_request_redirect(
        okta, pysaml2_idp.info, name_id=USER, relay_state=RELAY_STATE, query_encoding="java")
    with pytest.raises(IncorrectlySigned, match="not signed correctly"):
        parse(java_style)


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    paths: list[str] = []

    def do_GET(self):
        self.paths.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_send_exact_keeps_the_query_octets_that_requests_would_rewrite(okta, idp):
    import requests

    server = http.server.HTTPServer(("127.0.0.1", 0), _RecordingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        local_idp = saml_peers.IdpInfo(entity_id=idp.entity_id, cert_pem=idp.cert_pem,
                                       sso_url=f"http://127.0.0.1:{server.server_port}/saml/sso")
        request = saml_peers.okta_authn_request_redirect(
            okta, local_idp, relay_state=RELAY_STATE, query_encoding="java")
        assert requests.Request("GET", request.url).prepare().url != request.url  # %7E -> ~
        with requests.Session() as session:
            reply = saml_peers.send_exact(session, request.url, timeout=10)
        assert reply.status_code == 204
        assert _RecordingHandler.paths[-1] == request.url.split(str(server.server_port), 1)[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# ----------------------------------------------------------------------------------- metadata


def test_idp_info_from_pysaml2_metadata(pysaml2_idp, idp_keys):
    saml_peers.validate_xsd(pysaml2_idp.metadata_xml, "metadata")
    info = pysaml2_idp.info
    assert info.entity_id == IDP_ENTITY_ID
    assert info.sso_url == IDP_SSO_URL and info.sso_post_url == IDP_SSO_URL

    def der(pem):
        return x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)

    assert der(info.cert_pem) == der(idp_keys[0]) and len(info.signing_certs) == 1


def test_metadata_with_a_dtd_or_without_an_idp_is_refused(pysaml2_idp):
    bomb = (b'<?xml version="1.0"?><!DOCTYPE md [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>' + pysaml2_idp.metadata_xml)
    with pytest.raises(SamlRejected, match="DOCTYPE"):
        saml_peers.IdpInfo.from_metadata(bomb)
    with pytest.raises(SamlRejected, match="DOCTYPE"):
        saml_peers.validate_xsd(bomb, "metadata")
    no_idp = (b'<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
              b'entityID="https://x.test/"/>')
    with pytest.raises(SamlRejected, match="IDPSSODescriptor"):
        saml_peers.IdpInfo.from_metadata(no_idp)
    with pytest.raises(saml_peers.SchemaInvalid) as raised:  # an EntityDescriptor needs a role
        saml_peers.validate_xsd(no_idp, "metadata")
    assert raised.value.errors[0].startswith("line 1: ")


# ---------------------------------------------------------------------------------- responses


def run_all(xml: bytes, *, sp, idp, metadata_xml, request_id, idp_cert) -> tuple[dict, dict]:
    """Every validator on one Response: ({name: accepted}, {name: reason refused})."""
    accepted, reasons = {}, {}

    def xmlsec1():
        done = saml_peers.xmlsec1_verify(xml, idp_cert, (saml_peers.RESPONSE_NODE,
                                                         saml_peers.ASSERTION_NODE))
        if done.returncode != 0:
            raise SamlRejected(f"xmlsec1 exit {done.returncode}: {done.stderr.strip()[-300:]}")

    checks = {
        "python3-saml": lambda: saml_peers.validate_with_python3_saml(
            b64(xml), sp=sp, idp=idp, request_id=request_id, exact=False),
        "pysaml2": lambda: saml_peers.validate_with_pysaml2(
            b64(xml), sp=sp, idp_metadata_xml=metadata_xml, request_id=request_id, exact=False),
        "pysaml2-no-xsd": lambda: saml_peers.validate_with_pysaml2(
            b64(xml), sp=sp, idp_metadata_xml=metadata_xml, request_id=request_id, exact=False,
            xsd=False),
        "xmlsec1": xmlsec1,
        "xsd": lambda: saml_peers.validate_xsd(xml),
        "exact": lambda: saml_peers.exact_checks(xml, sp, request_id),
    }
    for name, check in checks.items():
        try:
            check()
        except SamlRejected as exc:
            accepted[name], reasons[name] = False, exc.reason
        else:
            accepted[name] = True
    return accepted, reasons


def test_pysaml2_idp_response_to_a_harness_request_is_accepted_everywhere(okta, pysaml2_idp, idp_keys):
    from saml2 import BINDING_HTTP_POST

    request = saml_peers.okta_authn_request_post(okta, pysaml2_idp.info, name_id=USER)
    parsed = pysaml2_idp.server.parse_authn_request(request.form["SAMLRequest"], BINDING_HTTP_POST)
    for sign_response in (False, True):
        xml = pysaml2_idp.respond(parsed, sign_response=sign_response)
        accepted, reasons = run_all(xml, sp=okta, idp=pysaml2_idp.info,
                                    metadata_xml=pysaml2_idp.metadata_xml,
                                    request_id=request.request_id, idp_cert=idp_keys[0])
        assert all(accepted.values()), reasons

    onelogin = saml_peers.validate_with_python3_saml(
        b64(xml), sp=okta, idp=pysaml2_idp.info, request_id=request.request_id)
    assert onelogin["nameid"] == USER and onelogin["nameid_format"] == saml_peers.NAMEID_EMAIL
    assert onelogin["issuer"] == IDP_ENTITY_ID and onelogin["in_response_to"] == request.request_id
    other = saml_peers.validate_with_pysaml2(
        b64(xml), sp=okta, idp_metadata_xml=pysaml2_idp.metadata_xml, request_id=request.request_id)
    assert other["nameid"] == USER and other["issuer"] == IDP_ENTITY_ID
    assert other["session_index"] == onelogin["session_index"]


def test_hand_built_response_is_accepted_and_read_alike(okta, idp, pysaml2_idp, idp_keys):
    request = saml_peers.okta_authn_request_redirect(okta, idp, name_id=USER)
    xml = signed_response(okta, request.request_id, idp_keys)
    onelogin = saml_peers.validate_with_python3_saml(b64(xml), sp=okta, idp=idp,
                                                     request_id=request.request_id)
    other = saml_peers.validate_with_pysaml2(b64(xml), sp=okta, idp_metadata_xml=pysaml2_idp.metadata_xml,
                                             request_id=request.request_id)
    root = saml_peers.parse_xml(xml)
    for result in (onelogin, other):
        assert result["nameid"] == USER
        assert result["nameid_format"] == saml_peers.NAMEID_EMAIL
        assert result["issuer"] == IDP_ENTITY_ID
        assert result["in_response_to"] == request.request_id
        assert result["session_index"] == root.find(".//saml:AuthnStatement", NS).get("SessionIndex")
        assert result["attributes"] == {"deviceCompliant": ["true"]}
    assert onelogin["authn_contexts"] == [AC_X509]
    assert onelogin["assertion_id"] == root.find("saml:Assertion", NS).get("ID")


def _set(path, attribute, value):
    def edit(root):
        node = root if path == "." else root.find(path, NS)
        node.set(attribute, value)
    return edit


def _set_text(path, value):
    def edit(root):
        root.find(path, NS).text = value
    return edit


def _signature_before_issuer(root):
    assertion = root.find("saml:Assertion", NS)
    assertion.insert(0, assertion.find("ds:Signature", NS))  # still verifies: enveloped


SCD = "saml:Assertion/saml:Subject/saml:SubjectConfirmation/saml:SubjectConfirmationData"
VALIDATORS = ("python3-saml", "pysaml2", "pysaml2-no-xsd", "xmlsec1", "xsd", "exact")
# name: (how the IdP signs it, what is changed after signing, which validators accept it)
CASES = {
    "correct": (dict(), None, "p3s pysaml2 nox xmlsec1 xsd exact"),
    "correct, Response and Assertion signed": (dict(sign=("assertion", "response")), None,
                                               "p3s pysaml2 nox xmlsec1 xsd exact"),
    "NameID changed after signing": (
        dict(), _set_text(".//saml:NameID", "admin@example.com"), "xsd exact"),
    "NameID changed after signing both": (
        dict(sign=("assertion", "response")), _set_text(".//saml:NameID", "admin@example.com"),
        "xsd exact"),
    "wrong Destination, signed by the IdP": (
        dict(destination="https://evil.test/acs"), None, "xmlsec1 xsd"),
    "Destination changed after signing both": (
        dict(sign=("assertion", "response")), _set(".", "Destination", "https://evil.test/acs"),
        "xsd"),
    "wrong InResponseTo, signed by the IdP": (
        dict(in_response_to="ONELOGIN_other", scd_in_response_to="ONELOGIN_other"), None,
        "xmlsec1 xsd"),
    "SubjectConfirmationData InResponseTo changed after signing": (
        dict(), _set(SCD, "InResponseTo", "ONELOGIN_other"), "xsd"),
    "unsigned": (dict(sign=()), None, "xsd exact"),
    "signed with RSA-SHA1": (dict(sha1=True), None, "pysaml2 nox xmlsec1 xsd exact"),
    "signed by another key, its certificate embedded": (
        dict(keys="attacker"), None, "xsd exact"),
    "Signature placed before the Issuer": (
        dict(), _signature_before_issuer, "nox xmlsec1 exact"),
    # python3-saml's laxness (PEERS.md), caught by the exact checks:
    "Destination merely starts with the ACS": (
        dict(destination=OKTA_ACS + "/../elsewhere"), None, "p3s xmlsec1 xsd"),
    "Recipient merely contains the ACS": (
        dict(recipient="https://evil.test/?" + OKTA_ACS), None, "p3s xmlsec1 xsd"),
    "no InResponseTo anywhere": (
        dict(in_response_to=None, scd_in_response_to=None), None, "p3s xmlsec1 xsd"),
    "no AudienceRestriction": (dict(audience=None), None, "p3s pysaml2 nox xmlsec1 xsd"),
}
_SHORT = {"p3s": "python3-saml", "nox": "pysaml2-no-xsd"}


@pytest.mark.parametrize("case", list(CASES))
def test_validators_accept_exactly_what_they_should(case, okta, idp, pysaml2_idp, idp_keys,
                                                    attacker_keys):
    fields, edit, expected = CASES[case]
    fields = dict(fields)
    keys = attacker_keys if fields.pop("keys", None) == "attacker" else idp_keys
    request = saml_peers.okta_authn_request_redirect(okta, idp, name_id=USER)
    xml = signed_response(okta, request.request_id, keys, **fields)
    if edit is not None:
        xml = edited(xml, edit)
    accepted, reasons = run_all(xml, sp=okta, idp=idp, metadata_xml=pysaml2_idp.metadata_xml,
                                request_id=request.request_id, idp_cert=idp_keys[0])
    want = {name: name in {_SHORT.get(w, w) for w in expected.split()} for name in VALIDATORS}
    assert accepted == want, reasons
    if not want["exact"] or not want["python3-saml"]:  # and the full harness refuses it too
        with pytest.raises(SamlRejected):
            saml_peers.validate_with_python3_saml(b64(xml), sp=okta, idp=idp,
                                                  request_id=request.request_id)


def test_rejection_reasons_name_the_problem(okta, idp, pysaml2_idp, idp_keys):
    request = saml_peers.okta_authn_request_redirect(okta, idp, name_id=USER)
    rid = request.request_id

    def reasons(xml):
        return run_all(xml, sp=okta, idp=idp, metadata_xml=pysaml2_idp.metadata_xml,
                       request_id=rid, idp_cert=idp_keys[0])[1]

    tampered = edited(signed_response(okta, rid, idp_keys),
                      _set_text(".//saml:NameID", "admin@example.com"))
    why = reasons(tampered)
    assert "Signature validation failed" in why["python3-saml"]
    assert "SignatureError" in why["pysaml2"]
    assert "FAIL" in why["xmlsec1"]

    why = reasons(signed_response(okta, rid, idp_keys, destination="https://evil.test/acs"))
    assert "The response was received at" in why["python3-saml"]
    assert "verify() failed" in why["pysaml2"] and "evil.test" in why["pysaml2"]
    assert "Destination 'https://evil.test/acs' != ACS" in why["exact"]

    why = reasons(signed_response(okta, rid, idp_keys, in_response_to="ONELOGIN_other",
                                  scd_in_response_to="ONELOGIN_other"))
    assert "does not match the ID of the AuthNRequest" in why["python3-saml"]
    assert "Unsolicited" in why["pysaml2"]
    assert "InResponseTo 'ONELOGIN_other' != " + repr(rid) in why["exact"]

    why = reasons(edited(signed_response(okta, rid, idp_keys), _signature_before_issuer))
    assert "saml-schema-protocol-2.0.xsd" in why["xsd"] and "Signature" in why["xsd"]
    assert "pysaml2 XSD" in why["pysaml2"]


@pytest.mark.parametrize("c14n, accepted_by_pysaml2", [
    ("http://www.w3.org/2001/10/xml-exc-c14n#", True),
    (None, False),  # signxml's default, inclusive C14N 1.1: pysaml2 allows only (exc-)c14n 1.0
])
def test_signxml_coexists_and_its_assertion_signatures_are_accepted(
        c14n, accepted_by_pysaml2, okta, idp, pysaml2_idp, idp_keys):
    """The product signs with signxml (same lxml, same process as xmlsec): what the peers say."""
    signxml = pytest.importorskip("signxml")
    from lxml import etree

    request = saml_peers.okta_authn_request_redirect(okta, idp, name_id=USER)
    root = build_response(okta, request.request_id)
    assertion = root.find("saml:Assertion", NS)
    placeholder = etree.Element("{%s}Signature" % NS["ds"], Id="placeholder")
    assertion.find("saml:Issuer", NS).addnext(placeholder)  # signxml signs in its place
    signer = signxml.XMLSigner(**({"c14n_algorithm": c14n} if c14n else {}))
    signed = signer.sign(assertion, key=idp_keys[1].encode(), cert=idp_keys[0],
                         reference_uri=assertion.get("ID"))
    root.replace(assertion, signed)  # sign() returns a signed copy
    xml = etree.tostring(root)
    accepted, reasons = run_all(xml, sp=okta, idp=idp, metadata_xml=pysaml2_idp.metadata_xml,
                                request_id=request.request_id, idp_cert=idp_keys[0])
    assert accepted == {"python3-saml": True, "pysaml2": accepted_by_pysaml2,
                        "pysaml2-no-xsd": accepted_by_pysaml2, "xmlsec1": True, "xsd": True,
                        "exact": True}, reasons
    if not accepted_by_pysaml2:
        assert "canonicalization method is c14n': False" in reasons["pysaml2"]
