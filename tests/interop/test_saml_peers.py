"""Okta's side played by real SAML libraries, through the local stack's device listener with a
certificate issued by our SCEP CA: python3-saml (strict) and pysaml2 accept our Response on both
bindings, xmlsec1 verifies it with the metadata certificate, and it is valid against the XSDs."""

from __future__ import annotations

import base64
import os
import re
import urllib.parse
from datetime import datetime, timezone
from html import unescape

import pytest
from cryptography import x509

from devicegate import store as store_mod
from devicegate.compliance.decision import HostCompliance, PolicyResult
from devicegate.local import dynamo, pki
from devicegate.scep import protocol
from tests import scep_helpers as h
from tests.interop import saml_peers as peers
from pathlib import Path

from tests import stack_helpers
from tests.stack_helpers import request, running_stack, tls_context

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    missing = peers.missing_saml_peers()
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    yield from running_stack(tmp_path_factory, "saml")


@pytest.fixture(scope="module")
def world(stack):
    e = stack.endpoints
    public = tls_context(e["tls_ca"])
    status, headers, metadata = request(e["metadata_url"], public)
    assert status == 200 and headers["content-type"] == "application/samlmetadata+xml"
    os.environ.update(dynamo.LOCAL_CREDENTIALS)
    store = store_mod.Store(e["dynamodb"]["table"], endpoint=e["dynamodb"]["endpoint"])
    return {
        "e": e, "public": public, "metadata": metadata, "store": store, "stack": stack,
        "sp": peers.SpIdentity.from_local_stack(e["okta"]), "idp": peers.IdpInfo.from_metadata(metadata),
    }


def enrolled_device(world, result="pass"):
    """A host in the simulated Fleet, synced, enrolled over real HTTPS SCEP."""
    import tempfile

    device = stack_helpers.enrolled_device(world["stack"], Path(tempfile.mkdtemp()),
                                           policies=(("FileVault enabled", result, True),))
    return device.context(world["e"]["tls_ca"])


def via_redirect(world, device, **kw):
    req = peers.okta_authn_request_redirect(world["sp"], world["idp"], name_id="alice@example.com", **kw)
    parts = urllib.parse.urlsplit(req.url)
    status, headers, body = request(req.url, device, raw_path=parts.path + "?" + parts.query)
    return req.request_id, status, body.decode()


def via_post(world, device, **kw):
    req = peers.okta_authn_request_post(world["sp"], world["idp"], name_id="alice@example.com", **kw)
    body = urllib.parse.urlencode(req.form).encode()
    status, _, page = request(world["idp"].sso_url, device, "POST", body,
                              {"Content-Type": "application/x-www-form-urlencoded"})
    return req.request_id, status, page.decode()


def saml_response(page: str) -> str:
    return unescape(re.search(r'name="SAMLResponse"\s+value="([^"]+)"', page).group(1))


RESPONSE_NODE = "urn:oasis:names:tc:SAML:2.0:protocol:Response"


def assert_xmlsec1_verifies(xml: bytes, cert_pem: str) -> None:
    """xmlsec1 checks the first signature: the Response's (covering everything), then the
    Assertion's on the Assertion alone (exclusive c14n makes the subtree self-contained)."""
    from lxml import etree

    whole = peers.xmlsec1_verify(xml, cert_pem, id_attr=(RESPONSE_NODE, peers.ASSERTION_NODE))
    assert whole.returncode == 0, whole.stderr
    assertion = etree.fromstring(xml).find("{urn:oasis:names:tc:SAML:2.0:assertion}Assertion")
    alone = peers.xmlsec1_verify(etree.tostring(assertion), cert_pem)
    assert alone.returncode == 0, alone.stderr


def test_metadata_is_valid_and_names_the_device_host(world):
    peers.validate_xsd(world["metadata"], kind="metadata")
    assert world["idp"].sso_url == world["e"]["sso_url"]
    assert world["idp"].entity_id == world["e"]["metadata_url"]
    assert world["idp"].cert_pem.split() == world["e"]["idp_cert"].split()


@pytest.mark.parametrize("binding,encoding", [
    ("redirect", "python"), ("redirect", "java"), ("redirect", "lowercase"), ("post", None)])
def test_python3_saml_strict_accepts_our_response(world, binding, encoding):
    device = enrolled_device(world)
    send = via_redirect if binding == "redirect" else via_post
    kwargs = {"query_encoding": encoding, "relay_state": "https://x.okta.com/app?a=1&b=~2"} if binding == "redirect" else {}
    request_id, status, page = send(world, device, **kwargs)
    assert status == 200, page[:500]
    b64 = saml_response(page)
    result = peers.validate_with_python3_saml(b64, sp=world["sp"], idp=world["idp"], request_id=request_id)
    assert result["nameid"] == "alice@example.com" and result["in_response_to"] == request_id
    assert result["issuer"] == world["idp"].entity_id
    xml = base64.b64decode(b64)
    peers.validate_xsd(xml, kind="protocol")
    assert_xmlsec1_verifies(xml, world["e"]["idp_cert"])
    if binding == "redirect":
        assert unescape(re.search(r'name="RelayState"\s+value="([^"]*)"', page).group(1)) == kwargs["relay_state"]


@pytest.mark.parametrize("binding", ["redirect", "post"])
def test_pysaml2_accepts_our_response(world, binding):
    device = enrolled_device(world)
    request_id, status, page = (via_redirect if binding == "redirect" else via_post)(world, device)
    assert status == 200
    result = peers.validate_with_pysaml2(saml_response(page), sp=world["sp"], idp_metadata_xml=world["metadata"],
                                         request_id=request_id)
    assert result["nameid"] == "alice@example.com"


def test_xmlsec1_with_another_certificate_fails(world):
    device = enrolled_device(world)
    _, _, page = via_redirect(world, device)
    other, _ = peers.generate_key_and_cert("not the IdP")
    xml = base64.b64decode(saml_response(page))
    assert peers.xmlsec1_verify(xml, other, id_attr=(RESPONSE_NODE, peers.ASSERTION_NODE)).returncode != 0


def test_failing_host_gets_a_block_page_that_no_sp_could_use(world):
    device = enrolled_device(world, result="fail")
    _, status, page = via_redirect(world, device)
    assert status == 403 and "FileVault enabled" in page and "SAMLResponse" not in page


def test_sha1_request_from_python3_saml_is_refused(world):
    device = enrolled_device(world)
    _, status, page = via_redirect(world, device, sig_alg="http://www.w3.org/2000/09/xmldsig#rsa-sha1")
    assert status == 400 and "SHA-1" in page and "SAMLResponse" not in page


def test_replayed_python3_saml_request_is_refused(world):
    device = enrolled_device(world)
    req = peers.okta_authn_request_redirect(world["sp"], world["idp"], name_id="alice@example.com")
    parts = urllib.parse.urlsplit(req.url)
    first = request(req.url, device, raw_path=parts.path + "?" + parts.query)
    second = request(req.url, device, raw_path=parts.path + "?" + parts.query)
    assert first[0] == 200 and second[0] == 400 and b"SAMLResponse" not in second[2]


def test_metadata_during_a_key_rotation_lists_both_keys_and_is_valid():
    from devicegate.saml.metadata import build_metadata
    current, _ = peers.generate_key_and_cert("current")
    following, _ = peers.generate_key_and_cert("next")
    xml = build_metadata(entity_id="https://dg.example.com/saml/metadata", sso_url="https://okta.dg.example.com/saml/sso",
                         signing_certs=[current, following])
    peers.validate_xsd(xml, kind="metadata")
    info = peers.IdpInfo.from_metadata(xml)
    assert len(info.signing_certs) == 2 and info.cert_pem.split() == current.split()
