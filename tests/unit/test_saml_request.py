"""Our AuthnRequest verification on both bindings: everything Okta would send is accepted,
everything forged, replayable, hostile or misdirected is refused with a reason."""

from __future__ import annotations

import base64
import time
import zlib
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree

from devicegate.local import okta, pki
from devicegate.saml import authn_request as ar
from devicegate.saml.authn_request import RequestRefused

AUDIENCE = "https://example.okta.com/saml2/service-provider/spabc"
SSO = "https://okta.devicegate.example.com/saml/sso"
ACS = "https://example.okta.com/sso/saml2/0oa123"
NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def sp():
    key = pki.new_key()
    return key, pki.signing_certificate("Okta SP", key)


@pytest.fixture
def expect(sp):
    return ar.Expectations(audience=AUDIENCE, sso_url=SSO, acs_url=ACS, sp_cert=sp[1])


def xml(request_id="id1", *, user="alice@example.com", now=NOW, audience=AUDIENCE, sso=SSO, acs=ACS):
    return okta.authn_request_xml(request_id=request_id, audience=audience, sso_url=sso, acs_url=acs, user=user, now=now)


def raw_query(query: str) -> dict[str, list[str]]:
    """Split a query string the way ALB does: names and values stay percent-encoded."""
    out: dict[str, list[str]] = {}
    for part in query.split("&"):
        name, _, value = part.partition("=")
        out.setdefault(name, []).append(value)
    return out


def redirect(sp, document: bytes, relay=None):
    return raw_query(okta.redirect_query(document, sp[0], relay))


def post_body(sp, document: bytes, request_id="id1", relay=None) -> bytes:
    form = {"SAMLRequest": okta.signed_post_form(document, sp[0], pki.pem_cert(sp[1]), request_id)}
    if relay is not None:
        form["RelayState"] = relay
    from urllib.parse import urlencode
    return urlencode(form).encode()


def refused(fn, *args, match: str):
    with pytest.raises(RequestRefused) as info:
        fn(*args)
    assert match.lower() in info.value.reason.lower(), info.value.reason
    return info.value


# ----------------------------------------------------------------------------- accepted


def test_redirect_signed_is_accepted_and_relay_state_is_byte_exact(sp, expect):
    relay = "https://example.okta.com/app/x?a=1&b=2 ünïcode+plus/slash=eq"
    request = ar.from_redirect(redirect(sp, xml(), relay), expect, NOW)
    assert request.id == "id1" and request.name_id == "alice@example.com" and request.signed
    assert request.relay_state == relay and request.acs_url == ACS and request.binding == "redirect"


def test_redirect_lowercase_percent_encoding_is_accepted(sp, expect):
    # Java encoders may emit %2b-style escapes; the signature is over the octets as sent.
    import re

    def lower_quote(text):
        return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(text, safe=""))

    deflater = zlib.compressobj(wbits=-15)
    encoded = base64.b64encode(deflater.compress(xml()) + deflater.flush()).decode()
    query = f"SAMLRequest={lower_quote(encoded)}&SigAlg={lower_quote(okta.RSA_SHA256)}"
    assert "%2f" in query
    signature = sp[0].sign(query.encode(), padding.PKCS1v15(), hashes.SHA256())
    query += "&Signature=" + lower_quote(base64.b64encode(signature).decode())
    assert ar.from_redirect(raw_query(query), expect, NOW).signed


def test_post_signed_is_accepted(sp, expect):
    request = ar.from_post(post_body(sp, xml(), relay="r&1"), expect, NOW)
    assert request.signed and request.binding == "post" and request.relay_state == "r&1"


def test_no_subject_is_parsed_as_no_name_id(sp, expect):
    assert ar.from_redirect(redirect(sp, xml(user=None)), expect, NOW).name_id is None


def test_within_clock_skew(sp, expect):
    for delta in (-119, 119):
        assert ar.from_redirect(redirect(sp, xml(now=NOW + timedelta(seconds=delta))), expect, NOW)


# ----------------------------------------------------------------------------- refused


def test_unsigned_is_refused_unless_relaxed(sp, expect):
    deflater = zlib.compressobj(wbits=-15)
    encoded = quote(base64.b64encode(deflater.compress(xml()) + deflater.flush()).decode(), safe="")
    refused(ar.from_redirect, raw_query(f"SAMLRequest={encoded}"), expect, NOW, match="not signed")
    body = ("SAMLRequest=" + quote(base64.b64encode(xml()).decode(), safe="")).encode()
    refused(ar.from_post, body, expect, NOW, match="not signed")
    relaxed = ar.Expectations(audience=AUDIENCE, sso_url=SSO, acs_url=ACS, sp_cert=sp[1], require_signed=False)
    assert not ar.from_redirect(raw_query(f"SAMLRequest={encoded}"), relaxed, NOW).signed


def test_bad_signature(sp, expect):
    q = redirect(sp, xml(), "relay")
    q["RelayState"] = ["other"]
    refused(ar.from_redirect, q, expect, NOW, match="does not verify")


def test_signed_by_another_key(sp, expect):
    other = pki.new_key()
    refused(ar.from_redirect, raw_query(okta.redirect_query(xml(), other, None)), expect, NOW, match="does not verify")
    body = post_body((other, pki.signing_certificate("evil", other)), xml())
    refused(ar.from_post, body, expect, NOW, match="does not verify")


def test_sha1_is_refused(sp, expect):
    deflater = zlib.compressobj(wbits=-15)
    encoded = quote(base64.b64encode(deflater.compress(xml()) + deflater.flush()).decode(), safe="")
    query = f"SAMLRequest={encoded}&SigAlg={quote('http://www.w3.org/2000/09/xmldsig#rsa-sha1', safe='')}"
    signature = sp[0].sign(query.encode(), padding.PKCS1v15(), hashes.SHA1())
    query += "&Signature=" + quote(base64.b64encode(signature).decode(), safe="")
    refused(ar.from_redirect, raw_query(query), expect, NOW, match="SHA-1")


def test_sha1_enveloped_signature_is_refused(sp, expect):
    # signxml will not make SHA-1 signatures; name the algorithms in a signed request instead
    signed = _signed_root(sp)
    info = signed.find("{http://www.w3.org/2000/09/xmldsig#}Signature/{http://www.w3.org/2000/09/xmldsig#}SignedInfo")
    info.find("{http://www.w3.org/2000/09/xmldsig#}SignatureMethod").set("Algorithm", "http://www.w3.org/2000/09/xmldsig#rsa-sha1")
    refused(ar.from_post, _post(signed), expect, NOW, match="SHA-1")
    signed = _signed_root(sp)
    digest = signed.find(".//{http://www.w3.org/2000/09/xmldsig#}DigestMethod")
    digest.set("Algorithm", "http://www.w3.org/2000/09/xmldsig#sha1")
    refused(ar.from_post, _post(signed), expect, NOW, match="SHA-1")


@pytest.mark.parametrize("kwargs,match", [
    ({"audience": "https://evil.okta.com/sp"}, "Issuer"),
    ({"sso": "https://evil.example.com/saml/sso"}, "Destination"),
    ({"acs": "https://evil.example.com/acs"}, "ACS"),
    ({"now": NOW - timedelta(minutes=10)}, "too old"),
    ({"now": NOW + timedelta(minutes=10)}, "future"),
])
def test_misdirected_or_stale(sp, expect, kwargs, match):
    refused(ar.from_redirect, redirect(sp, xml(**kwargs)), expect, NOW, match=match)
    refused(ar.from_post, post_body(sp, xml(**kwargs)), expect, NOW, match=match)


def test_version_and_root(sp, expect):
    doc = xml().replace(b'Version="2.0"', b'Version="1.1"')
    refused(ar.from_redirect, redirect(sp, doc), expect, NOW, match="Version")
    doc = xml().replace(b"samlp:AuthnRequest", b"samlp:LogoutRequest")
    refused(ar.from_redirect, redirect(sp, doc), expect, NOW, match="AuthnRequest")


def test_doctype_and_entities_are_refused(sp, expect):
    doc = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x "alice@example.com">]>' + xml().replace(
        b"alice@example.com", b"&x;")
    refused(ar.from_redirect, redirect(sp, doc), expect, NOW, match="DOCTYPE")
    body = ("SAMLRequest=" + quote(base64.b64encode(doc).decode(), safe="")).encode()
    refused(ar.from_post, body, expect, NOW, match="DOCTYPE")


def test_deflate_bomb_is_refused_fast(sp, expect):
    deflater = zlib.compressobj(9, wbits=-15)
    bomb = deflater.compress(b"<a>" + b" " * (8 * 1024 * 1024)) + deflater.flush()
    assert len(bomb) < 12 * 1024  # small on the wire, 8 MiB inflated
    encoded = quote(base64.b64encode(bomb).decode(), safe="")
    started = time.process_time()
    refused(ar.from_redirect, raw_query(f"SAMLRequest={encoded}"), expect, NOW, match="inflates to more")
    assert time.process_time() - started < 2  # sanity bound: the cap stops inflation early


def test_zlib_wrapped_is_refused(sp, expect):
    encoded = quote(base64.b64encode(zlib.compress(xml())).decode(), safe="")
    refused(ar.from_redirect, raw_query(f"SAMLRequest={encoded}"), expect, NOW, match="raw DEFLATE")


def test_non_strict_base64_is_refused(sp, expect):
    refused(ar.from_redirect, raw_query("SAMLRequest=abc%21def"), expect, NOW, match="base64")


@pytest.mark.parametrize("name", ["SAMLRequest", "RelayState", "SigAlg", "Signature"])
def test_duplicate_parameters_are_refused(sp, expect, name):
    q = redirect(sp, xml(), "relay")
    q[name] = q[name] * 2
    refused(ar.from_redirect, q, expect, NOW, match="more than once")


def test_duplicate_parameter_hidden_by_encoding_is_refused(sp, expect):
    q = redirect(sp, xml(), "relay")
    q["Relay%53tate"] = ["other"]
    refused(ar.from_redirect, q, expect, NOW, match="more than once")


def test_duplicate_post_fields_are_refused(sp, expect):
    body = post_body(sp, xml()) + b"&SAMLRequest=AAAA"
    refused(ar.from_post, body, expect, NOW, match="more than once")


def test_oversized_relay_state_is_refused(sp, expect):
    refused(ar.from_redirect, redirect(sp, xml(), "x" * 5000), expect, NOW, match="RelayState")


def test_signature_and_sigalg_come_together(sp, expect):
    q = redirect(sp, xml())
    del q["SigAlg"]
    refused(ar.from_redirect, q, expect, NOW, match="together")


# ----------------------------------------------------------------------------- wrapping, injection


def _signed_root(sp, document=None, request_id="id1"):
    return etree.fromstring(base64.b64decode(okta.signed_post_form(document or xml(request_id), sp[0],
                                                                   pki.pem_cert(sp[1]), request_id)))


def _post(root) -> bytes:
    return ("SAMLRequest=" + quote(base64.b64encode(etree.tostring(root)).decode(), safe="")).encode()


def test_wrapping_signed_original_inside_an_evil_root(sp, expect):
    signed = _signed_root(sp)
    evil = etree.fromstring(xml(acs="https://evil.example.com/acs"))
    evil.append(signed)  # the genuinely signed request, hidden as a child
    refused(ar.from_post, _post(evil), expect, NOW, match="signed")


def test_wrapping_evil_root_with_the_same_id(sp, expect):
    signed = _signed_root(sp)
    evil = etree.fromstring(xml(acs="https://evil.example.com/acs"))
    signature = signed.find("{http://www.w3.org/2000/09/xmldsig#}Signature")
    evil.find("{urn:oasis:names:tc:SAML:2.0:assertion}Issuer").addnext(signature)
    extensions = etree.SubElement(evil, "{urn:oasis:names:tc:SAML:2.0:protocol}Extensions")
    extensions.append(signed)  # the ID now appears twice
    refused(ar.from_post, _post(evil), expect, NOW, match="")


def test_signature_moved_into_a_child_is_refused(sp, expect):
    signed = _signed_root(sp)
    signature = signed.find("{http://www.w3.org/2000/09/xmldsig#}Signature")
    signed.find("{urn:oasis:names:tc:SAML:2.0:assertion}Subject").append(signature)
    refused(ar.from_post, _post(signed), expect, NOW, match="signed")


def test_tampered_after_signing(sp, expect):
    signed = _signed_root(sp)
    signed.set("AssertionConsumerServiceURL", ACS)  # unchanged is fine...
    signed.find(".//{urn:oasis:names:tc:SAML:2.0:assertion}NameID").text = "ceo@example.com"
    refused(ar.from_post, _post(signed), expect, NOW, match="does not verify")


def test_keyinfo_of_an_attacker_is_ignored(sp, expect):
    attacker = pki.new_key()
    body = post_body((attacker, pki.signing_certificate("Okta SP", attacker)), xml())
    refused(ar.from_post, body, expect, NOW, match="does not verify")


def test_comment_injection_is_refused(sp, expect):
    doc = xml(user="alice@example.com.evil.example").replace(b"alice@example.com.evil", b"alice@example.com<!---->.evil")
    refused(ar.from_redirect, redirect(sp, doc), expect, NOW, match="comments")
    root = _signed_root(sp, doc)
    refused(ar.from_post, _post(root), expect, NOW, match="comments")


def test_two_signatures_are_refused(sp, expect):
    signed = _signed_root(sp)
    signature = signed.find("{http://www.w3.org/2000/09/xmldsig#}Signature")
    signed.append(etree.fromstring(etree.tostring(signature)))
    refused(ar.from_post, _post(signed), expect, NOW, match="exactly one signature")


def test_redirect_with_embedded_xml_signature_too(sp, expect):
    root = _signed_root(sp)
    refused(ar.from_redirect, raw_query(okta.redirect_query(etree.tostring(root), sp[0], None)), expect, NOW,
            match="must not also carry")


def test_issue_instant_that_overflows_is_refused(sp, expect):
    for instant in ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"):
        doc = xml().replace(b'IssueInstant="2026-12-03T12:00:00Z"', f'IssueInstant="{instant}"'.encode())
        refused(ar.from_redirect, redirect(sp, doc), expect, NOW, match="xs:dateTime")


def test_redirect_relay_state_is_form_decoded(sp, expect):
    # python3-saml and Java's URLEncoder write a space as '+'
    q = okta.redirect_query(xml(), sp[0], None)
    query = q.split("&SigAlg=")[0] + "&RelayState=a+b%2Bc" + "&SigAlg=" + q.split("&SigAlg=")[1].split("&Signature=")[0]
    signature = sp[0].sign(query.encode(), padding.PKCS1v15(), hashes.SHA256())
    query += "&Signature=" + quote(base64.b64encode(signature).decode(), safe="")
    assert ar.from_redirect(raw_query(query), expect, NOW).relay_state == "a b+c"


@pytest.mark.parametrize("relay", ["%FF%FE", "a%00b", "line%0Abreak"])
def test_relay_state_that_would_not_survive_a_form_is_refused(sp, expect, relay):
    q = okta.redirect_query(xml(), sp[0], None)
    query = q.split("&SigAlg=")[0] + f"&RelayState={relay}" + "&SigAlg=" + q.split("&SigAlg=")[1].split("&Signature=")[0]
    signature = sp[0].sign(query.encode(), padding.PKCS1v15(), hashes.SHA256())
    query += "&Signature=" + quote(base64.b64encode(signature).decode(), safe="")
    with pytest.raises(RequestRefused):
        ar.from_redirect(raw_query(query), expect, NOW)
