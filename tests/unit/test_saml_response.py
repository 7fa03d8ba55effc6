"""The Response builder writes its document directly in exclusive-c14n form: lxml's exclusive
c14n of the output (and of each signed subtree) must be the output byte for byte, hostile
values included, and independent verifiers (signxml here, xmlsec1 when installed) must accept
both signatures with the IdP certificate."""

from __future__ import annotations

import base64
import shutil
from datetime import datetime, timezone

import pytest
from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier

from devicegate.local import pki
from devicegate.saml import pages, response
from tests.idp_helpers import form_value

SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
DS = "http://www.w3.org/2000/09/xmldsig#"
NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=timezone.utc)

HOSTILE = [
    "alice@example.com",
    'a<b>&c"d\'e',
    "x]]>y",
    "cr\rlf\ncrlf\r\ntab\tend",
    "ünïcødé ☃ 𝄞 \u00a0nbsp",
    "&amp; &#x41; &lt;not-an-entity&gt;",
    "  leading and trailing  ",
    "<saml:NameID>evil</saml:NameID>",
]


@pytest.fixture(scope="module")
def idp():
    key = pki.new_key()
    cert = pki.signing_certificate("devicegate IdP", key)
    return response.Signer(key=key, cert_pem=pki.pem_cert(cert)), pki.pem_cert(cert)


def build(signer, value="alice@example.com", *, sign_response=True, **overrides):
    kwargs = dict(in_response_to="id" + "a" * 32, acs_url="https://example.okta.com/sso/saml2/0oa?x=1&y=2",
                  audience="https://example.okta.com/saml2/service-provider/sp", idp_entity_id="https://dg.example.com/md",
                  name_id=value, name_id_format=None, signer=signer, now=NOW, sign_response=sign_response)
    kwargs.update(overrides)
    return response.build_response(**kwargs)


def body_of(document: bytes) -> bytes:
    assert document.startswith(response.XML_DECLARATION)
    return document[len(response.XML_DECLARATION):]


def exc_c14n(element) -> bytes:
    return etree.tostring(element, method="c14n", exclusive=True, with_comments=False)


def verify_both(document: bytes, cert_pem: str):
    """signxml (lxml c14n, its own digest and RSA checks) on the Response, then on the Assertion."""
    config = SignatureConfiguration(location="./", expect_references=1, ignore_ambiguous_key_info=True)
    root = etree.fromstring(document)
    XMLVerifier().verify(root, x509_cert=cert_pem, expect_config=config)
    assertion = XMLVerifier().verify(root.find(f"{{{SAML}}}Assertion"), x509_cert=cert_pem,
                                     expect_config=config).signed_xml
    return root, assertion


def assert_canonical(document: bytes) -> None:
    body = body_of(document)
    root = etree.fromstring(body)
    assert exc_c14n(root) == body
    assertion = root.find(f"{{{SAML}}}Assertion")
    assert exc_c14n(assertion) in body  # the Assertion's own exc-c14n stands in the document unchanged
    for signature in root.iter(f"{{{DS}}}Signature"):
        assert exc_c14n(signature) in body
        signed_info = signature.find(f"{{{DS}}}SignedInfo")
        assert exc_c14n(signed_info).startswith(f'<ds:SignedInfo xmlns:ds="{DS}">'.encode())


@pytest.mark.parametrize("value", HOSTILE)
def test_output_is_its_own_exclusive_c14n_with_hostile_values(idp, value):
    signer, cert_pem = idp
    fmt = "urn:x:" + value
    document = build(signer, value, name_id_format=fmt, audience="aud " + value, idp_entity_id="idp " + value,
                     acs_url="https://acs.example/?" + value, in_response_to="id" + value)
    assert_canonical(document)
    root, assertion = verify_both(document, cert_pem)
    name_id = assertion.find(f"{{{SAML}}}Subject/{{{SAML}}}NameID")
    assert name_id.text == value and name_id.get("Format") == fmt
    assert assertion.find(f".//{{{SAML}}}Audience").text == "aud " + value
    assert assertion.find(f"{{{SAML}}}Issuer").text == "idp " + value
    assert root.get("Destination") == "https://acs.example/?" + value and root.get("InResponseTo") == "id" + value
    confirmation = assertion.find(f".//{{{SAML}}}SubjectConfirmationData")
    assert confirmation.get("Recipient") == root.get("Destination") and confirmation.get("InResponseTo") == "id" + value


def test_same_document_as_the_tree_lxml_would_build(idp):
    """Signatures aside, the document equals lxml's exc-c14n of the same values built as a tree."""
    signer, _ = idp
    value = HOSTILE[1] + HOSTILE[3] + HOSTILE[4]
    root = etree.fromstring(build(signer, value, session_index="_s1"))
    for signature in list(root.iter(f"{{{DS}}}Signature")):
        signature.getparent().remove(signature)

    def el(parent, ns, name, text=None, **attrs):
        e = etree.SubElement(parent, f"{{{ns}}}{name}", **attrs)
        e.text = text
        return e

    tree = etree.Element(f"{{{SAMLP}}}Response", nsmap={"samlp": SAMLP, "saml": SAML}, ID=root.get("ID"),
                         Version="2.0", IssueInstant="2026-12-03T12:00:00Z",
                         Destination="https://example.okta.com/sso/saml2/0oa?x=1&y=2", InResponseTo="id" + "a" * 32)
    el(tree, SAML, "Issuer", "https://dg.example.com/md")
    el(el(tree, SAMLP, "Status"), SAMLP, "StatusCode", Value=response.SUCCESS)
    a = el(tree, SAML, "Assertion", ID=root.find(f"{{{SAML}}}Assertion").get("ID"), Version="2.0",
           IssueInstant="2026-12-03T12:00:00Z")
    el(a, SAML, "Issuer", "https://dg.example.com/md")
    subject = el(a, SAML, "Subject")
    el(subject, SAML, "NameID", value, Format=response.UNSPECIFIED)
    el(el(subject, SAML, "SubjectConfirmation", Method=response.BEARER), SAML, "SubjectConfirmationData",
       InResponseTo="id" + "a" * 32, NotOnOrAfter="2026-12-03T12:05:00Z",
       Recipient="https://example.okta.com/sso/saml2/0oa?x=1&y=2")
    conditions = el(a, SAML, "Conditions", NotBefore="2026-12-03T11:59:00Z", NotOnOrAfter="2026-12-03T12:05:00Z")
    el(el(conditions, SAML, "AudienceRestriction"), SAML, "Audience", "https://example.okta.com/saml2/service-provider/sp")
    statement = el(a, SAML, "AuthnStatement", AuthnInstant="2026-12-03T12:00:00Z", SessionIndex="_s1")
    el(el(statement, SAML, "AuthnContext"), SAML, "AuthnContextClassRef", response.X509_CONTEXT)
    assert exc_c14n(root) == exc_c14n(tree)


def test_signatures_sit_after_issuer_with_one_reference_to_the_element(idp):
    signer, cert_pem = idp
    root, _ = verify_both(build(signer), cert_pem)
    for element in (root, root.find(f"{{{SAML}}}Assertion")):
        assert element[0].tag == f"{{{SAML}}}Issuer" and element[1].tag == f"{{{DS}}}Signature"
        info = element[1].find(f"{{{DS}}}SignedInfo")
        references = info.findall(f"{{{DS}}}Reference")
        assert len(references) == 1 and references[0].get("URI") == "#" + element.get("ID")
        assert info.find(f"{{{DS}}}CanonicalizationMethod").get("Algorithm") == response.EXC_C14N
        assert info.find(f"{{{DS}}}SignatureMethod").get("Algorithm") == response.RSA_SHA256
        assert [t.get("Algorithm") for t in references[0].iter(f"{{{DS}}}Transform")] == [
            response.ENVELOPED, response.EXC_C14N]
    assert len(list(root.iter(f"{{{DS}}}Signature"))) == 2


def test_unsigned_response_still_has_a_signed_assertion(idp):
    signer, cert_pem = idp
    document = build(signer, sign_response=False)
    assert_canonical(document)
    root = etree.fromstring(document)
    assert root[1].tag == f"{{{SAMLP}}}Status" and len(list(root.iter(f"{{{DS}}}Signature"))) == 1
    config = SignatureConfiguration(location="./", expect_references=1, ignore_ambiguous_key_info=True)
    XMLVerifier().verify(root.find(f"{{{SAML}}}Assertion"), x509_cert=cert_pem, expect_config=config)


def test_tampering_breaks_the_signatures(idp):
    signer, cert_pem = idp
    document = build(signer)
    forged = document.replace(b">alice@example.com<", b">mallory@example.com<")
    with pytest.raises(Exception):
        verify_both(forged, cert_pem)
    other = pki.pem_cert(pki.signing_certificate("someone else", pki.new_key()))
    with pytest.raises(Exception):
        verify_both(document, other)


@pytest.mark.parametrize("bad", ["nul\x00", "bell\x07", "\ufffe", "lone \ud800 surrogate"])
def test_values_xml_cannot_carry_are_refused(idp, bad):
    signer, _ = idp
    with pytest.raises(ValueError):
        build(signer, bad)
    with pytest.raises(ValueError):
        build(signer, name_id_format=bad)


def test_non_rsa_key_is_refused():
    from cryptography.hazmat.primitives.asymmetric import ec

    rsa_key = pki.new_key()
    signer = response.Signer(key=ec.generate_private_key(ec.SECP256R1()),
                             cert_pem=pki.pem_cert(pki.signing_certificate("IdP", rsa_key)))
    with pytest.raises(TypeError):
        build(signer)


@pytest.mark.parametrize("relay", ['a<b>&c"d\'e ]]> ünï', "https://x.okta.com/app?a=1&b=~2"])
def test_relay_state_survives_the_post_form(idp, relay):
    signer, _ = idp
    document = build(signer)
    page = pages.auto_post("https://example.okta.com/acs", base64.b64encode(document).decode(), relay).body.decode()
    assert form_value(page, "RelayState") == relay
    assert base64.b64decode(form_value(page, "SAMLResponse")) == document


@pytest.mark.skipif(shutil.which("xmlsec1") is None, reason="xmlsec1 is not installed")
@pytest.mark.parametrize("value", HOSTILE)
def test_xmlsec1_verifies_hostile_values(idp, value):
    from tests.interop import saml_peers as peers

    signer, cert_pem = idp
    document = build(signer, value, name_id_format="urn:x:" + value, audience="aud " + value,
                     acs_url="https://acs.example/?" + value)
    whole = peers.xmlsec1_verify(document, cert_pem, id_attr=(f"{SAMLP}:Response", peers.ASSERTION_NODE))
    assert whole.returncode == 0, whole.stderr
    alone = peers.xmlsec1_verify(etree.tostring(etree.fromstring(document).find(f"{{{SAML}}}Assertion")), cert_pem)
    assert alone.returncode == 0, alone.stderr
    other = pki.pem_cert(pki.signing_certificate("someone else", pki.new_key()))
    assert peers.xmlsec1_verify(document, other, id_attr=(f"{SAMLP}:Response", peers.ASSERTION_NODE)).returncode != 0
