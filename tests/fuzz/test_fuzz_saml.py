"""AuthnRequest fuzzing on both bindings, through the IdP Lambda with a compliant device.

Every example starts from a fresh, validly signed request (a new ID, so the replay check never
hides anything) and damages it: the query or form as received, the XML after signing (edits,
DTDs, entity bombs, deep nesting, signature wrapping, encodings), the XML before signing (the
SP's own key signs the damage, so the checks after the signature run), and the DEFLATE layer
(bombs, wrappers, truncation). Properties: a 400 page with a reason, or a signed Response only
for exactly what was signed, answering that request; never a 5xx, within the bounds.
"""

from __future__ import annotations

import base64
import zlib
from urllib.parse import quote, urlencode

from hypothesis import assume, given
from hypothesis import strategies as st

from tests.fuzz import mutate
from tests.fuzz.harness import fuzz_settings
from tests.fuzz.targets import (
    authn_xml, check_saml, post_event, redirect_event, redirect_params, response_answers, signed_content,
    signed_post_b64,
)
from devicegate.local import okta

_PARAMS = ["SAMLRequest", "RelayState", "SigAlg", "Signature", "SAMLEncoding", "samlrequest", "SAMLRequest%00"]
_ODD = ["", "%", "%zz", "%ff%fe", "%C3%28", "+", "%2B", "a" * 20000, "%00", "%0D%0A", "\u00e9", "%ED%A0%80",
        quote("http://www.w3.org/2000/09/xmldsig#rsa-sha1", safe=""), quote("urn:x", safe="")]


@fuzz_settings(60)
@given(data=st.data(), relay=st.none() | st.sampled_from(["r", "https://example.okta.com/a?b=c", "\u00e9\u4e2d"]))
def test_redirect_query_mutants(world, data, relay):
    """The signed query as received, damaged: no Response unless every signed octet is intact."""
    _, xml = authn_xml(world)
    params = redirect_params(xml, world.idp.sp_key, relay)
    original = {k: list(v) for k, v in params.items()}
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["value", "drop", "dup", "add", "case", "plus"]))
        name = data.draw(st.sampled_from(sorted(params) or ["SAMLRequest"]))
        if op == "value" and name in params:
            raw = params[name][0].encode("ascii", "surrogateescape")
            params[name] = [data.draw(mutate.byte_mutants(raw, max_ops=2)).decode("latin-1")]
        elif op == "drop":
            params.pop(name, None)
        elif op == "dup" and name in params:
            params[name] = params[name] * 2
        elif op == "add":
            params.setdefault(data.draw(st.sampled_from(_PARAMS)), []).append(data.draw(st.sampled_from(_ODD)))
        elif op == "case" and name in params:
            params[name] = [params[name][0].swapcase()]
        elif op == "plus" and name in params:
            params[name] = [params[name][0].replace("%2B", "+").replace("%2F", "/")]
    intact = all(params.get(k) == v for k, v in original.items())
    check_saml(world, redirect_event(world, params), expect=response_answers(xml) if intact else None)


def _signed_redirect(world, xml: bytes, relay=None, raw_deflated: bytes | None = None) -> dict:
    """A Redirect query over arbitrary (already DEFLATEd or not) bytes, signed with Okta's key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    deflated = mutate.deflate(xml) if raw_deflated is None else raw_deflated
    query = f"SAMLRequest={quote(base64.b64encode(deflated).decode(), safe='')}"
    if relay is not None:
        query += f"&RelayState={quote(relay, safe='')}"
    query += f"&SigAlg={quote(okta.RSA_SHA256, safe='')}"
    signature = world.idp.sp_key.sign(query.encode(), padding.PKCS1v15(), hashes.SHA256())
    query += f"&Signature={quote(base64.b64encode(signature).decode(), safe='')}"
    params: dict[str, list[str]] = {}
    for part in query.split("&"):
        name, _, value = part.partition("=")
        params.setdefault(name, []).append(value)
    return redirect_event(world, params)


@fuzz_settings(60)
@given(data=st.data())
def test_redirect_signed_xml_mutants(world, data):
    """Okta's key signs damaged XML: the content checks after the signature must hold on their own."""
    _, xml = authn_xml(world)
    damaged = data.draw(mutate.xml_tree_mutants(xml) | mutate.xml_text_mutants(xml))
    check_saml(world, _signed_redirect(world, damaged), expect=response_answers(damaged))


_DEFLATE_SHAPES = st.sampled_from(["bomb", "zlib", "gzip", "truncated", "trailing", "twice", "stored", "empty",
                                   "garbage", "raw_xml"])


@fuzz_settings(20)
@given(shape=_DEFLATE_SHAPES)
def test_redirect_deflate_layer(world, shape):
    _, xml = authn_xml(world)
    good = mutate.deflate(xml)
    raw = {
        "bomb": lambda: mutate.deflate_bomb(12 * 1024 * 1024),
        "zlib": lambda: zlib.compress(xml),
        "gzip": lambda: mutate.deflate(xml, wbits=31),
        "truncated": lambda: good[: len(good) // 2],
        "trailing": lambda: good + b"\x00junk",
        "twice": lambda: good + good,
        "stored": lambda: _stored(xml),
        "empty": lambda: b"",
        "garbage": lambda: b"\xff" * 64,
        "raw_xml": lambda: xml,
    }[shape]()
    assume(len(base64.b64encode(raw)) < 60_000)
    check_saml(world, _signed_redirect(world, xml, raw_deflated=raw),
               expect=response_answers(xml) if shape in ("stored",) else None)


def _stored(data: bytes) -> bytes:
    """Raw DEFLATE with stored (uncompressed) blocks: unusual but valid."""
    compressor = zlib.compressobj(0, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def _form(b64: str, relay=None) -> bytes:
    fields = {"SAMLRequest": b64}
    if relay is not None:
        fields["RelayState"] = relay
    return urlencode(fields).encode()


@fuzz_settings(50)
@given(data=st.data())
def test_post_signed_then_damaged(world, data):
    """A validly signed POST request damaged after signing (edits, DTDs, bombs, wrapping)."""
    request_id, xml = authn_xml(world)
    signed = base64.b64decode(signed_post_b64(world, xml, request_id))
    wrapped = mutate.signature_wrapping(signed)
    damaged = data.draw(mutate.xml_tree_mutants(signed) | mutate.xml_text_mutants(signed) | st.sampled_from(wrapped)
                        | mutate.byte_mutants(signed, max_ops=2))
    same = signed_content(damaged) is not None and signed_content(damaged) == signed_content(signed)
    check_saml(world, post_event(world, _form(base64.b64encode(damaged).decode())),
               expect=response_answers(signed) if same else None)


@fuzz_settings(30)
@given(data=st.data())
def test_post_damaged_then_signed(world, data):
    """Okta's key signs damaged XML on the POST binding."""
    request_id, xml = authn_xml(world)
    damaged = data.draw(mutate.xml_tree_mutants(xml))
    try:
        b64 = signed_post_b64(world, damaged, request_id)
    except Exception:  # noqa: BLE001 - the signer itself cannot sign this tree
        assume(False)
    check_saml(world, post_event(world, _form(b64)), expect=response_answers(base64.b64decode(b64)))


@fuzz_settings(50)
@given(data=st.data(), content_type=st.sampled_from(["application/x-www-form-urlencoded",
                                                     "application/x-www-form-urlencoded; charset=utf-8",
                                                     "text/plain", "multipart/form-data; boundary=x"]))
def test_post_form_mutants(world, data, content_type):
    """The form body itself: byte damage, base64 damage, duplicate or extra fields, non-ASCII."""
    request_id, xml = authn_xml(world)
    b64 = signed_post_b64(world, xml, request_id)
    body = _form(b64, relay="state")
    op = data.draw(st.sampled_from(["bytes", "b64", "dup", "many", "latin1", "huge", "empty"]))
    if op == "bytes":
        body = data.draw(mutate.byte_mutants(body))
    elif op == "b64":
        body = _form(data.draw(mutate.byte_mutants(b64.encode(), max_ops=2)).decode("latin-1"))
    elif op == "dup":
        body = body + b"&" + body
    elif op == "many":
        body = body + b"&" + b"&".join(b"x%d=1" % i for i in range(20))
    elif op == "latin1":
        body = body + b"&RelayState2=\xe9"
    elif op == "huge":
        body = body + b"&pad=" + b"A" * 70_000
    else:
        body = b""
    intact = body == _form(b64, relay="state") and content_type.startswith("application/x-www-form-urlencoded")
    check_saml(world, post_event(world, body, content_type), expect=response_answers(xml) if intact else None)


@fuzz_settings(30)
@given(method=st.sampled_from(["GET", "POST"]), raw=st.binary(max_size=400))
def test_arbitrary_requests(world, method, raw):
    if method == "POST":
        check_saml(world, post_event(world, raw))
    else:
        check_saml(world, redirect_event(world, {"SAMLRequest": [quote(base64.b64encode(raw).decode(), safe="")]}))
