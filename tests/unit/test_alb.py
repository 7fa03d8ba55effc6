"""The ALB ⇄ Lambda contract: events in, responses out, mTLS headers."""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devicegate import alb
from devicegate.alb import BadEvent, MtlsHeaderError, Request, Response

from tests.unit.x509_fixtures import issue, make_ca

ARN = "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/t/0123456789abcdef"


@pytest.fixture(scope="module")
def cert():
    ca_key, ca = make_ca("Test SCEP CA")
    _, leaf = issue(ca_key, ca, "0000-AAAA")
    return leaf


def mtls_request(headers: dict[str, str | list[str]]) -> Request:
    mv = {k.lower(): (v if isinstance(v, list) else [v]) for k, v in headers.items()}
    return Request.from_event({"httpMethod": "GET", "path": "/saml/sso", "multiValueHeaders": mv})


# ------------------------------------------------------------------------ events in


def test_single_value_event():
    request = Request.from_event(
        {
            "requestContext": {"elb": {"targetGroupArn": ARN}},
            "httpMethod": "GET",
            "path": "/scep",
            "queryStringParameters": {"operation": "GetCACaps", "message": "x"},
            "headers": {"Host": "example.com", "X-Forwarded-For": "203.0.113.7, 10.0.0.9", "Cookie": "a=b"},
            "body": "",
            "isBase64Encoded": False,
        }
    )
    assert request.method == "GET" and request.path == "/scep"
    assert request.multi_value is False
    assert request.query == {"operation": ["GetCACaps"], "message": ["x"]}
    assert request.headers["host"] == ["example.com"]
    assert request.header("HOST") == "example.com"
    assert request.header("cookie") == "a=b"
    assert request.header("missing") is None
    assert request.source_ip == "10.0.0.9"  # the right-most entry is the one ALB appended
    assert request.body == b""


def test_multi_value_event():
    request = Request.from_event(
        {
            "httpMethod": "POST",
            "path": "/saml/sso",
            "multiValueQueryStringParameters": {"k": ["1", "2"]},
            "multiValueHeaders": {"Cookie": ["a=1", "b=2"], "content-type": ["text/plain"]},
            "body": "hello",
            "isBase64Encoded": False,
        }
    )
    assert request.multi_value is True
    assert request.query_values("k") == ["1", "2"]
    assert request.query_value("k") == "1"
    assert request.headers["cookie"] == ["a=1", "b=2"]
    assert request.header("Cookie") == "a=1"
    assert request.body == b"hello"
    assert request.source_ip is None


def test_query_stays_encoded_and_decodes_on_request():
    request = Request.from_event(
        {
            "httpMethod": "GET",
            "path": "/saml/sso",
            "multiValueQueryStringParameters": {
                "plus": ["a%2Bb"],
                "slash": ["%2Fx%2Fy"],
                "eq": ["abc%3D%3D"],
                "literal": ["a+b"],
                "na%6De": ["v"],
                "empty": [""],
            },
        }
    )
    assert request.query["plus"] == ["a%2Bb"]  # raw, as ALB delivers it
    assert request.query_value("plus") == "a+b"
    assert request.query_value("slash") == "/x/y"
    assert request.query_value("eq") == "abc=="
    assert request.query_value("literal") == "a+b"  # '+' is not a space
    assert request.query_value("name") == "v"  # names compared after unquote
    assert request.query_value("empty") == ""
    assert request.query_value("absent") is None
    assert request.query_values("absent") == []


def test_base64_body():
    payload = bytes(range(256))
    request = Request.from_event(
        {"httpMethod": "POST", "path": "/scep", "body": base64.b64encode(payload).decode(), "isBase64Encoded": True}
    )
    assert request.body == payload


def test_missing_and_null_fields_are_fine():
    request = Request.from_event({"headers": None, "queryStringParameters": None, "body": None})
    assert (request.method, request.path, request.query, request.headers, request.body) == ("GET", "/", {}, {}, b"")
    assert Request.from_event({}).multi_value is False


@pytest.mark.parametrize(
    "event",
    [
        [],
        "event",
        None,
        {"httpMethod": 1},
        {"httpMethod": "GET POST"},
        {"path": "relative"},
        {"path": ["/"]},
        {"headers": []},
        {"headers": {"a": 1}},
        {"headers": {"a": ["b"]}},
        {"multiValueHeaders": {"a": "b"}},
        {"multiValueHeaders": {"a": [1]}},
        {"multiValueQueryStringParameters": []},
        {"queryStringParameters": {"a": None}},
        {"body": 12},
        {"body": "x", "isBase64Encoded": "true"},
        {"body": "not base64!", "isBase64Encoded": True},
        {"body": "YWJj\n", "isBase64Encoded": True},  # strict: no whitespace
        {"body": "YWJ", "isBase64Encoded": True},  # strict: padding
        {"body": "YQ==YQ==", "isBase64Encoded": True},  # strict: data after padding
        {"body": "é", "isBase64Encoded": True},
        {"body": "\ud800"},
        {"body": "a" * (alb.MAX_BODY_BYTES + 1)},
        {"body": "é" * (alb.MAX_BODY_BYTES // 2 + 1)},  # within the char count, over in bytes
        {"body": base64.b64encode(b"a" * (alb.MAX_BODY_BYTES + 1)).decode(), "isBase64Encoded": True},
    ],
)
def test_bad_events(event):
    with pytest.raises(BadEvent):
        Request.from_event(event)


def test_body_at_the_limit_is_accepted():
    body = base64.b64encode(b"a" * alb.MAX_BODY_BYTES).decode()
    assert len(Request.from_event({"body": body, "isBase64Encoded": True}).body) == alb.MAX_BODY_BYTES


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_fields = st.sampled_from(
    [
        "httpMethod", "path", "headers", "multiValueHeaders", "queryStringParameters",
        "multiValueQueryStringParameters", "body", "isBase64Encoded", "requestContext",
    ]
)
_plausible = st.one_of(
    _json,
    st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.lists(st.text(max_size=8) | _json, max_size=3)),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(_json, st.dictionaries(_fields | st.text(max_size=6), _plausible, max_size=8)))
def test_from_event_only_raises_bad_event(event):
    try:
        request = Request.from_event(event)
    except BadEvent:
        return
    # Whatever parsed must be usable without surprises either.
    request.header("x")
    request.query_value("x")
    try:
        alb.client_cert(request)
    except MtlsHeaderError:
        pass


# -------------------------------------------------------------------- responses out


def test_text_response_is_not_base64():
    event = Response.text(200, "héllo").to_event(multi_value=False)
    assert event == {
        "statusCode": 200,
        "statusDescription": "200 OK",
        "isBase64Encoded": False,
        "body": "héllo",
        "headers": {"content-type": "text/plain; charset=utf-8", "cache-control": "no-store"},
    }


@pytest.mark.parametrize(
    "content_type",
    [
        "text/html; charset=utf-8",
        "application/json",
        "application/xml",
        "application/samlmetadata+xml",
        "application/x-www-form-urlencoded",
        "application/javascript",
    ],
)
def test_text_like_types_stay_text(content_type):
    event = Response(200, b"<x/>", content_type).to_event(multi_value=True)
    assert event["isBase64Encoded"] is False and event["body"] == "<x/>"
    assert event["multiValueHeaders"]["content-type"] == [content_type]


@pytest.mark.parametrize("content_type", ["application/x-pki-message", "application/x-x509-ca-cert", "image/png"])
def test_binary_response_is_base64(content_type):
    payload = bytes(range(256))
    event = Response.binary(200, payload, content_type).to_event(multi_value=True)
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"], validate=True) == payload
    assert event["multiValueHeaders"] == {"content-type": [content_type], "cache-control": ["no-store"]}


def test_text_type_with_invalid_utf8_falls_back_to_base64():
    event = Response(200, b"\xff\xfe", "text/plain").to_event(multi_value=False)
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == b"\xff\xfe"


def test_response_headers():
    response = Response.html(
        403,
        "<p>blocked</p>",
        headers={"Set-Cookie": ["a=1; Secure", "b=2; Secure"], "Cache-Control": "private, max-age=5"},
    )
    event = response.to_event(multi_value=True)
    assert event["statusDescription"] == "403 Forbidden"
    assert event["multiValueHeaders"] == {
        "set-cookie": ["a=1; Secure", "b=2; Secure"],
        "cache-control": ["private, max-age=5"],  # the handler's choice is kept
        "content-type": ["text/html; charset=utf-8"],
    }
    with pytest.raises(ValueError, match="multi-value"):
        response.to_event(multi_value=False)  # two cookies cannot be one header


def test_content_type_header_wins():
    event = Response(200, b"\x00\x01", headers={"Content-Type": "application/octet-stream"}).to_event(False)
    assert event["headers"]["content-type"] == "application/octet-stream"
    assert event["isBase64Encoded"] is True


@pytest.mark.parametrize(
    "response",
    [
        Response(99),
        Response(600),
        Response(True),
        Response(200, headers={"X-A": "1\r\nSet-Cookie: evil=1"}),
        Response(200, headers={"bad name": "x"}),
        Response(200, b"a" * (alb.MAX_RESPONSE_BYTES + 1), "application/octet-stream"),
    ],
)
def test_invalid_responses(response):
    with pytest.raises(ValueError):
        response.to_event(multi_value=True)


def test_build_event_and_parse_response_round_trip():
    event = alb.build_event(
        method="POST",
        path="/scep",
        raw_query="operation=PKIOperation&flag&&x=%2B&x=2",
        headers=[("Content-Type", "application/x-pki-message"), ("Cookie", "a"), ("cookie", "b")],
        body=b"\x00\x01",
        target_group_arn=ARN,
    )
    assert event["multiValueQueryStringParameters"] == {"operation": ["PKIOperation"], "flag": [""], "x": ["%2B", "2"]}
    assert event["multiValueHeaders"]["cookie"] == ["a", "b"]
    assert event["isBase64Encoded"] is True
    request = Request.from_event(event)
    assert request.body == b"\x00\x01" and request.query_values("x") == ["+", "2"]

    single = alb.build_event(
        method="GET", path="/", raw_query="a=1&a=2", headers=[("Cookie", "a"), ("Cookie", "b")],
        body=b'{"x": 1}', target_group_arn=ARN, multi_value=False,
    )
    assert single["queryStringParameters"] == {"a": "2"} and single["headers"] == {"cookie": "b"}
    text = alb.build_event(
        method="POST", path="/", raw_query="", headers=[("Content-Type", "application/json")],
        body=b'{"x": 1}', target_group_arn=ARN,
    )
    assert text["body"] == '{"x": 1}' and text["isBase64Encoded"] is False
    gz = alb.build_event(
        method="POST", path="/", raw_query="", headers=[("Content-Type", "text/plain"), ("Content-Encoding", "gzip")],
        body=b"x", target_group_arn=ARN,
    )
    assert gz["isBase64Encoded"] is True  # content-encoding forces base64, as ALB does

    reply = alb.parse_response(Response.binary(201, b"\xff", "application/x-pki-message").to_event(True))
    assert reply.status == 201 and reply.body == b"\xff"
    assert ("content-type", "application/x-pki-message") in reply.headers


@pytest.mark.parametrize(
    "result",
    [
        None,
        [],
        {},
        {"statusCode": "200"},
        {"statusCode": 200, "body": b"x"},
        {"statusCode": 200, "isBase64Encoded": True, "body": "!!"},
        {"statusCode": 200, "headers": {"a": "b\nc"}},
        {"statusCode": 200, "multiValueHeaders": {"a": "b"}},
        {"statusCode": 200, "headers": []},
    ],
)
def test_parse_response_rejects_what_alb_would_502(result):
    with pytest.raises(alb.BadResponse):
        alb.parse_response(result)


# -------------------------------------------------------------------------- mTLS


def test_no_mtls_headers_means_no_certificate():
    assert alb.client_cert(mtls_request({"Host": "okta.example.com"})) is None
    assert alb.client_cert(mtls_request({alb.SERIAL_HEADER: "  "})) is None  # empty = not sent


def test_client_cert_from_leaf(cert):
    headers = alb.format_mtls_headers(cert)
    got = alb.client_cert(mtls_request({"X-Amzn-Mtls-Clientcert-Leaf": headers["X-Amzn-Mtls-Clientcert-Leaf"]}))
    assert got is not None
    assert got.serial == cert.serial_number
    assert got.leaf == cert
    assert got.subject == cert.subject.rfc4514_string()
    assert got.not_after == cert.not_valid_after_utc


def test_a_leaf_is_parsed_once_per_exact_text(cert, monkeypatch):
    from cryptography.hazmat.primitives.serialization import Encoding

    monkeypatch.setattr(alb, "_leaf_cache", {})
    leaf = alb.format_mtls_headers(cert)["X-Amzn-Mtls-Clientcert-Leaf"]
    first = alb.client_cert(mtls_request({alb.LEAF_HEADER: leaf}))
    again = alb.client_cert(mtls_request({alb.LEAF_HEADER: leaf}))
    assert first == again and first.der == again.der == cert.public_bytes(Encoding.DER)
    assert list(alb._leaf_cache) == [leaf]
    # the serial header is still checked against the (cached) leaf on every request
    with pytest.raises(MtlsHeaderError):
        alb.client_cert(mtls_request({alb.LEAF_HEADER: leaf, alb.SERIAL_HEADER: format(cert.serial_number + 1, "X")}))
    # a malformed leaf is never remembered: refused every time
    broken = leaf.replace("MII", "MIJ", 1)
    for _ in range(2):
        with pytest.raises(MtlsHeaderError):
            alb.client_cert(mtls_request({alb.LEAF_HEADER: broken}))
    assert list(alb._leaf_cache) == [leaf]


def test_names_false_leaves_the_names_unrendered(cert):
    leaf = alb.format_mtls_headers(cert)["X-Amzn-Mtls-Clientcert-Leaf"]
    full = alb.client_cert(mtls_request({alb.LEAF_HEADER: leaf}))
    bare = alb.client_cert(mtls_request({alb.LEAF_HEADER: leaf}), names=False)
    assert bare.subject is None and bare.issuer is None
    assert (bare.serial, bare.leaf, bare.der, bare.not_before, bare.not_after) == (
        full.serial, full.leaf, full.der, full.not_before, full.not_after)


def _pem_lines(cert, width: int) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    b64 = base64.b64encode(cert.public_bytes(Encoding.DER)).decode()
    lines = [b64[i:i + width] for i in range(0, len(b64), width)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("variant", ["canonical", "76-wide", "one line", "CRLF", "%0a", "all escaped"])
def test_every_pem_layout_gives_the_pem_loaders_answer(cert, variant, monkeypatch):
    """The canonical PEM is read from its own base64; any other layout goes to the PEM loader:
    the same certificate and DER either way."""
    from urllib.parse import quote

    from cryptography.hazmat.primitives.serialization import Encoding

    monkeypatch.setattr(alb, "_leaf_cache", {})
    text = {"canonical": quote(_pem_lines(cert, 64), safe="+=/"), "76-wide": quote(_pem_lines(cert, 76), safe="+=/"),
            "one line": quote(_pem_lines(cert, 10_000), safe="+=/"),
            "CRLF": quote(_pem_lines(cert, 64).replace("\n", "\r\n"), safe="+=/"),
            "%0a": quote(_pem_lines(cert, 64), safe="+=/").replace("%0A", "%0a"),
            "all escaped": quote(_pem_lines(cert, 64), safe="")}[variant]
    got = alb.client_cert(mtls_request({alb.LEAF_HEADER: text}))
    assert got.leaf == cert and got.der == cert.public_bytes(Encoding.DER) and got.serial == cert.serial_number
    read_as_der = alb._canonical_pem_der(alb._unquote_leaf(text).strip()) is not None
    assert read_as_der == (variant in ("canonical", "%0a", "all escaped"))


def test_unused_base64_bits_get_the_pem_loaders_answer(monkeypatch):
    """Changing the unused low bits of the last base64 digit before the padding decodes to the
    same DER: whatever the PEM loader makes of such a text, the leaf parse makes of it too."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    ca_key, ca = make_ca("Test SCEP CA")
    padded = next(c for c in (issue(ca_key, ca, f"0000-{n:04d}")[1] for n in range(30))
                  if len(c.public_bytes(Encoding.DER)) % 3)
    pem = _pem_lines(padded, 64)
    body, end = pem.rsplit("\n-----END", 1)
    stripped = body.rstrip("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    for flip in (1, 2, 3):
        monkeypatch.setattr(alb, "_leaf_cache", {})
        bent = stripped[:-1] + alphabet[alphabet.index(stripped[-1]) ^ flip] + body[len(stripped):] + "\n-----END" + end
        try:
            expected = x509.load_pem_x509_certificate(bent.encode())
        except ValueError:
            with pytest.raises(MtlsHeaderError, match="does not parse"):
                alb.client_cert(mtls_request({alb.LEAF_HEADER: bent}))
        else:
            got = alb.client_cert(mtls_request({alb.LEAF_HEADER: bent}))
            assert got.leaf == expected and got.der == expected.public_bytes(Encoding.DER)


def test_the_leaf_cache_is_bounded(cert, monkeypatch):
    monkeypatch.setattr(alb, "_leaf_cache", {})
    monkeypatch.setattr(alb, "_LEAF_CACHE_MAX", 2)
    pem = alb.format_mtls_headers(cert)["X-Amzn-Mtls-Clientcert-Leaf"]
    texts = [pem, pem + "%0A", pem + "%0A%0A"]  # the same certificate, three distinct header texts
    for text in texts:
        assert alb.client_cert(mtls_request({alb.LEAF_HEADER: text})).serial == cert.serial_number
    assert len(alb._leaf_cache) <= 2 and texts[-1] in alb._leaf_cache


def test_leaf_with_matching_hex_header(cert):
    leaf = alb.format_mtls_headers(cert)["X-Amzn-Mtls-Clientcert-Leaf"]
    lower_colons = ":".join(f"{b:02x}" for b in cert.serial_number.to_bytes(16, "big"))
    for serial in (format(cert.serial_number, "X"), lower_colons, "00" + format(cert.serial_number, "x")):
        got = alb.client_cert(mtls_request({alb.LEAF_HEADER: leaf, alb.SERIAL_HEADER: serial}))
        assert got is not None and got.serial == cert.serial_number


def test_leaf_with_mismatching_header_is_rejected(cert):
    leaf = alb.format_mtls_headers(cert)["X-Amzn-Mtls-Clientcert-Leaf"]
    with pytest.raises(MtlsHeaderError, match="does not match"):
        alb.client_cert(mtls_request({alb.LEAF_HEADER: leaf, alb.SERIAL_HEADER: format(cert.serial_number + 1, "X")}))


def test_decimal_serial_from_a_proxy():
    request = mtls_request({"X-Client-Serial": "340282366920938463463374607431768211455"})
    got = alb.client_cert(request, serial_header="X-Client-Serial", serial_format="decimal")
    assert got is not None and got.serial == 2**128 - 1 and got.leaf is None
    with pytest.raises(MtlsHeaderError):
        alb.client_cert(mtls_request({"x-client-serial": "0x10"}), "x-client-serial", "decimal")
    with pytest.raises(MtlsHeaderError):
        alb.client_cert(mtls_request({"x-client-serial": "10"}), "x-client-serial", "octal")


def test_header_only_certificate():
    got = alb.client_cert(
        mtls_request(
            {
                alb.SERIAL_HEADER: "03A5B1",
                alb.ISSUER_HEADER: "CN=rootcamtls.com,OU=rootCA,O=mTLS,L=Seattle,ST=Washington,C=US",
                alb.SUBJECT_HEADER: "CN=client_.com,OU=client-3,O=mTLS,ST=Washington,C=US",
                alb.VALIDITY_HEADER: "NotBefore=2023-09-21T01:50:17Z;NotAfter=2024-09-20T01:50:17Z",
            }
        )
    )
    assert got == alb.ClientCert(
        serial=0x03A5B1,
        leaf=None,
        subject="CN=client_.com,OU=client-3,O=mTLS,ST=Washington,C=US",
        issuer="CN=rootcamtls.com,OU=rootCA,O=mTLS,L=Seattle,ST=Washington,C=US",
        not_before=datetime(2023, 9, 21, 1, 50, 17, tzinfo=timezone.utc),
        not_after=datetime(2024, 9, 20, 1, 50, 17, tzinfo=timezone.utc),
    )
    assert got.serial_hex == "03A5B1"


@pytest.mark.parametrize(
    "headers",
    [
        {alb.LEAF_HEADER: "garbage"},
        {alb.LEAF_HEADER: "-----BEGIN%20CERTIFICATE-----%0AAAAA%0A-----END%20CERTIFICATE-----%0A"},
        {alb.LEAF_HEADER: "%FF%FE"},
        {alb.LEAF_HEADER: "-----BEGIN CERTIFICATE-----é-----END CERTIFICATE-----"},
        {alb.LEAF_HEADER: "x" * (alb.MAX_LEAF_CHARS + 1)},
        {alb.SERIAL_HEADER: "xyz"},
        {alb.SERIAL_HEADER: "12:"},
        {alb.SERIAL_HEADER: "-12"},
        {alb.SERIAL_HEADER: "F" * 65},
        {alb.SERIAL_HEADER: ["01", "02"]},  # a smuggled second copy
        {alb.SERIAL_HEADER: "01", alb.VALIDITY_HEADER: "NotBefore=yesterday"},
        {alb.SERIAL_HEADER: "01", alb.VALIDITY_HEADER: "NotBefore=2023-02-30T00:00:00Z;NotAfter=2024-01-01T00:00:00Z"},
        {alb.SUBJECT_HEADER: "CN=x"},  # details but no serial or leaf
    ],
)
def test_malformed_mtls_headers(headers):
    with pytest.raises(MtlsHeaderError):
        alb.client_cert(mtls_request(headers))


def test_two_certificates_in_the_leaf_are_rejected(cert):
    leaf = alb.format_mtls_headers(cert)["X-Amzn-Mtls-Clientcert-Leaf"]
    with pytest.raises(MtlsHeaderError, match="exactly one"):
        alb.client_cert(mtls_request({alb.LEAF_HEADER: leaf + leaf}))


def test_format_mtls_headers_round_trip(cert):
    headers = alb.format_mtls_headers(cert)
    assert set(name.lower() for name in headers) <= set(alb.MTLS_HEADERS)
    serial = headers["X-Amzn-Mtls-Clientcert-Serial-Number"]
    assert serial == serial.upper() and ":" not in serial and len(serial) % 2 == 0
    assert int(serial, 16) == cert.serial_number
    assert headers["X-Amzn-Mtls-Clientcert-Leaf"].startswith("-----BEGIN%20CERTIFICATE-----%0A")
    assert headers["X-Amzn-Mtls-Clientcert-Leaf"].endswith("-----END%20CERTIFICATE-----%0A")
    assert "%2B" not in headers["X-Amzn-Mtls-Clientcert-Leaf"]  # '+' is a safe character
    assert headers["X-Amzn-Mtls-Clientcert-Validity"].startswith("NotBefore=")

    # Through the whole ALB path: headers → event → Request → ClientCert.
    event = alb.build_event(
        method="GET", path="/saml/sso", raw_query="", headers=list(headers.items()), body=b"", target_group_arn=ARN
    )
    got = alb.client_cert(Request.from_event(event))
    assert got is not None
    assert got.serial == cert.serial_number
    assert got.leaf == cert
    assert got.subject == headers["X-Amzn-Mtls-Clientcert-Subject"]
    assert got.issuer == headers["X-Amzn-Mtls-Clientcert-Issuer"]
    assert (got.not_before, got.not_after) == (cert.not_valid_before_utc, cert.not_valid_after_utc)


def test_serial_hex_pads_to_whole_octets():
    assert alb.ClientCert(0x3A5B1, None, None, None, None, None).serial_hex == "03A5B1"


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(list(alb.MTLS_HEADERS) + ["x-client-serial"]),
        st.text(max_size=80) | st.lists(st.text(max_size=20), max_size=2),
    ),
    st.sampled_from(["hex", "decimal"]),
)
def test_client_cert_only_raises_mtls_header_error(headers, serial_format):
    request = mtls_request(headers)
    try:
        alb.client_cert(request, serial_format=serial_format)
        alb.client_cert(request, "x-client-serial", serial_format)
    except MtlsHeaderError:
        pass
