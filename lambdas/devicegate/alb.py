"""The Application Load Balancer ⇄ Lambda contract, and the only module that knows it.

Handlers turn the ALB event into a `Request`, answer with a `Response`, and read the
client certificate with `client_cert`. The local gateway uses `build_event`,
`parse_response` and `format_mtls_headers` to play the ALB, so the shapes below exist
exactly once.

Facts from the AWS docs this module relies on ("Lambda functions as targets" and
"Mutual authentication with TLS in Application Load Balancer"):

* Request bodies and response JSON are limited to 1 MB.
* Query names and values arrive still percent-encoded: "If the query parameters are
  URL-encoded, the load balancer does not decode them." Without multi-value headers the
  last value of a repeated header or parameter wins; with them every value is kept and
  the fields are `multiValueHeaders` / `multiValueQueryStringParameters`, and the
  response must use `multiValueHeaders` too.
* Request body: base64 (`isBase64Encoded: true`) when `content-encoding` is present,
  otherwise as is for text/*, application/json, application/javascript and
  application/xml, base64 for every other type.
* ALB adds `X-Amzn-Trace-Id` (e.g. `Root=1-5bdb40ca-556d8b0c50dc66f0511bf520`),
  `X-Forwarded-For` (appends the client IP: the right-most entry is the one it saw),
  `X-Forwarded-Port` and `X-Forwarded-Proto`.
* mTLS verify mode adds, per the docs' examples:
    X-Amzn-Mtls-Clientcert-Serial-Number: 03A5B1                 (hex, no colons)
    X-Amzn-Mtls-Clientcert-Issuer: CN=rootcamtls.com,OU=rootCA,O=mTLS,L=Seattle,ST=Washington,C=US
    X-Amzn-Mtls-Clientcert-Subject: CN=client_.com,OU=client-3,O=mTLS,ST=Washington,C=US
    X-Amzn-Mtls-Clientcert-Validity: NotBefore=2023-09-21T01:50:17Z;NotAfter=2024-09-20T01:50:17Z
    X-Amzn-Mtls-Clientcert-Leaf: -----BEGIN%20CERTIFICATE-----%0AMIIG<...>NmrUlw%0A-----END%20CERTIFICATE-----%0A
  Issuer/Subject are RFC 2253 strings, Validity is ISO 8601, and the Leaf is the PEM
  "URL-encoded ... with +=/ as safe characters": a `+` in the Leaf is base64, never a
  space, so it is decoded with `unquote`, not `unquote_plus`. (The docs' passthrough
  example shows `=` as `%3D` despite that sentence; decoding accepts both.)
  Passthrough mode sends `X-Amzn-Mtls-Clientcert` (the whole chain) instead.
  Self-hosted proxies send a configured serial header (hex or decimal) and leaf header: a
  URL-encoded PEM (nginx's $ssl_client_escaped_cert) or a base64 DER (Caddy's).

Imported on every cold start: only light stdlib modules at import time; cryptography is
imported inside the functions that need it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from .memo import remember
from .record import FACTORY, frozen, mutable
from .textcheck import ALNUM, DIGITS, HEX, only

if TYPE_CHECKING:
    from cryptography import x509

# ALB's Lambda limits are "1 MB"; 1 MiB is the generous reading of that.
MAX_BODY_BYTES = 1024 * 1024
MAX_RESPONSE_BYTES = 1024 * 1024

_TOKEN = "!#$%&'*+-.^_`|~" + ALNUM  # RFC 9110 token characters (methods, header names)

# What ALB sends to the Lambda as plain text (docs list); everything else is base64.
_ALB_TEXT_REQUEST_TYPES = frozenset({"application/json", "application/javascript", "application/xml"})
# What we send back as text. Anything else goes base64, which ALB decodes for the client.
_TEXT_RESPONSE_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/x-www-form-urlencoded",
        "application/javascript",
    }
)


class BadEvent(Exception):
    """The Lambda event is not a well-formed ALB request event."""


class BadResponse(ValueError):
    """A handler's result is not a well-formed ALB response (ALB answers 502)."""


class MtlsHeaderError(ValueError):
    """mTLS client-certificate headers are present but malformed or inconsistent."""


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _is_text_response_type(content_type: str) -> bool:
    media = _media_type(content_type)
    return (
        media.startswith("text/")
        or media in _TEXT_RESPONSE_TYPES
        or media.endswith("+xml")
        or media.endswith("+json")
    )


# --------------------------------------------------------------------------- requests


@frozen
class Request:
    method: str
    path: str
    # Names and values exactly as ALB delivers them: still percent-encoded. Signature
    # checks (SAML HTTP-Redirect) need the raw form; use query_value() for the decoded one.
    query: dict[str, list[str]]
    headers: dict[str, list[str]]  # names lowercased
    body: bytes
    multi_value: bool  # the response must use the same header style as the event
    source_ip: str | None

    def __init__(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, list[str]],
                 body: bytes, multi_value: bool, source_ip: str | None):
        self.__dict__.update(method=method, path=path, query=query, headers=headers, body=body,
                             multi_value=multi_value, source_ip=source_ip)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def query_values(self, name: str) -> list[str]:
        # Decoded with unquote, not unquote_plus: ALB leaves '+' alone and SAML's base64
        # values contain literal '+' that must not become spaces.
        out: list[str] = []
        for raw_name, values in self.query.items():
            if unquote(raw_name) == name:
                out.extend(unquote(v) for v in values)
        return out

    def query_value(self, name: str) -> str | None:
        values = self.query_values(name)
        return values[0] if values else None

    @classmethod
    def from_event(cls, event: Any) -> Request:
        if not isinstance(event, dict):
            raise BadEvent("event is not a JSON object")
        method = event.get("httpMethod")
        if method is None:
            method = "GET"
        if not isinstance(method, str) or not only(method, _TOKEN):
            raise BadEvent("httpMethod is not an HTTP method token")
        path = event.get("path")
        if path is None:
            path = "/"
        if not isinstance(path, str) or not path.startswith("/"):
            raise BadEvent("path is not a string starting with '/'")

        mv_headers = event.get("multiValueHeaders")
        mv_query = event.get("multiValueQueryStringParameters")
        multi_value = mv_headers is not None or mv_query is not None
        if multi_value:
            headers = _multi_map(mv_headers, "multiValueHeaders", lower=True)
            query = _multi_map(mv_query, "multiValueQueryStringParameters", lower=False)
        else:
            headers = _single_map(event.get("headers"), "headers", lower=True)
            query = _single_map(event.get("queryStringParameters"), "queryStringParameters", lower=False)

        return cls(
            method=method,
            path=path,
            query=query,
            headers=headers,
            body=_event_body(event),
            multi_value=multi_value,
            source_ip=_source_ip(headers),
        )


def _multi_map(value: Any, what: str, *, lower: bool) -> dict[str, list[str]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadEvent(f"{what} is not an object")
    out: dict[str, list[str]] = {}
    for name, values in value.items():
        if not isinstance(name, str):
            raise BadEvent(f"{what} has a non-string name")
        if type(values) is list and len(values) == 1 and type(values[0]) is str:  # nearly every entry
            if not ((name.isascii() or _is_unicode(name)) and (values[0].isascii() or _is_unicode(values[0]))):
                raise BadEvent(f"{what} holds a string that is not valid Unicode")
        else:
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise BadEvent(f"{what}[{name!r}] is not a list of strings")
            if not all(map(_is_unicode, (name, *values))):
                raise BadEvent(f"{what} holds a string that is not valid Unicode")
        out.setdefault(name.lower() if lower else name, []).extend(values)
    return out


def _single_map(value: Any, what: str, *, lower: bool) -> dict[str, list[str]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadEvent(f"{what} is not an object")
    out: dict[str, list[str]] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not isinstance(item, str):
            raise BadEvent(f"{what} must map strings to strings")
        if not (_is_unicode(name) and _is_unicode(item)):
            raise BadEvent(f"{what} holds a string that is not valid Unicode")
        out.setdefault(name.lower() if lower else name, []).append(item)
    return out


def _is_unicode(text: str) -> bool:
    """False for lone surrogates: JSON can escape them (``"\\ud800"``), UTF-8 cannot encode them,
    and ALB never sends them; every later ``.encode()`` would raise."""
    if text.isascii():  # O(1), and nearly every name and value is ASCII
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _event_body(event: dict) -> bytes:
    body = event.get("body")
    is_b64 = event.get("isBase64Encoded")
    if is_b64 is None:
        is_b64 = False
    if not isinstance(is_b64, bool):
        raise BadEvent("isBase64Encoded is not a boolean")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise BadEvent("body is not a string")
    if is_b64:
        if len(body) > (MAX_BODY_BYTES + 2) // 3 * 4:  # refuse before decoding
            raise BadEvent("body exceeds the 1 MiB limit")
        try:
            raw = binascii.a2b_base64(body.encode("ascii"), strict_mode=True)
        except (UnicodeEncodeError, binascii.Error) as exc:
            raise BadEvent(f"body is not valid base64: {exc}") from None
    else:
        if len(body) > MAX_BODY_BYTES:
            raise BadEvent("body exceeds the 1 MiB limit")
        try:
            raw = body.encode("utf-8")
        except UnicodeEncodeError:
            raise BadEvent("body is not encodable as UTF-8") from None
    if len(raw) > MAX_BODY_BYTES:
        raise BadEvent("body exceeds the 1 MiB limit")
    return raw


def _source_ip(headers: dict[str, list[str]]) -> str | None:
    # ALB appends the address it saw, so only the right-most entry is trustworthy;
    # anything left of it came from the client.
    values = headers.get("x-forwarded-for")
    if not values:
        return None
    last = values[-1].rsplit(",", 1)[-1].strip()
    return last or None



def serve(event: Any, handle, on_bad_event=None) -> dict:
    """A Lambda handler's whole ALB contract: event in, ``handle(Request) -> Response``, event out.

    An event that cannot be read gets ``on_bad_event(exc)`` (default: a plain 400), in the
    header style the event used.
    """
    try:
        request = Request.from_event(event)
    except BadEvent as exc:
        response = on_bad_event(exc) if on_bad_event else Response(400, f"bad request: {exc}\n")
        return response.to_event(multi_value=isinstance(event, dict) and "multiValueHeaders" in event)
    return handle(request).to_event(request.multi_value)

# -------------------------------------------------------------------------- responses


@mutable
class Response:
    status: int
    body: bytes | str = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str | list[str]] = field(default_factory=dict)

    def __init__(self, status: int, body: bytes | str = b"", content_type: str = "text/plain; charset=utf-8",
                 headers: dict[str, str | list[str]] = FACTORY):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = {} if headers is FACTORY else headers

    @classmethod
    def text(cls, status: int, text: str, headers: dict[str, str | list[str]] | None = None) -> Response:
        return cls(status, text, "text/plain; charset=utf-8", dict(headers or {}))

    @classmethod
    def html(cls, status: int, html: str, headers: dict[str, str | list[str]] | None = None) -> Response:
        return cls(status, html, "text/html; charset=utf-8", dict(headers or {}))

    @classmethod
    def binary(
        cls, status: int, data: bytes, content_type: str, headers: dict[str, str | list[str]] | None = None
    ) -> Response:
        return cls(status, bytes(data), content_type, dict(headers or {}))

    def to_event(self, multi_value: bool) -> dict:
        """The Lambda result ALB expects. Raises ValueError for responses ALB would reject."""
        if isinstance(self.status, bool) or not isinstance(self.status, int) or not 100 <= self.status <= 599:
            raise ValueError(f"invalid HTTP status {self.status!r}")
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            values = [value] if isinstance(value, str) else list(value)
            _check_header(name, values)
            headers.setdefault(name.lower(), []).extend(values)
        # A content-type in headers is the handler being explicit; it wins over the field.
        content_type = headers.pop("content-type", [self.content_type])[-1]
        _check_header("content-type", [content_type])
        headers["content-type"] = [content_type]
        headers.setdefault("cache-control", ["no-store"])  # login answers must never be cached

        raw = self.body.encode("utf-8") if isinstance(self.body, str) else bytes(self.body)
        body, is_b64 = None, True
        if _is_text_response_type(content_type):
            try:
                body, is_b64 = raw.decode("utf-8"), False
            except UnicodeDecodeError:
                pass  # not valid text after all: base64 keeps the bytes intact
        if body is None:
            body = base64.b64encode(raw).decode("ascii")
        if len(body) > MAX_RESPONSE_BYTES:  # ALB's limit is on the JSON, so after base64
            raise ValueError("response body exceeds ALB's 1 MB limit")

        description = _status_description(self.status)
        event: dict[str, Any] = {
            "statusCode": self.status,
            "statusDescription": description,
            "isBase64Encoded": is_b64,
            "body": body,
        }
        if multi_value:
            event["multiValueHeaders"] = headers
        else:
            for name, values in headers.items():
                if len(values) != 1:
                    # Joining would corrupt Set-Cookie; the target group needs multi-value.
                    raise ValueError(f"header {name!r} has {len(values)} values; needs multi-value headers")
            event["headers"] = {name: values[0] for name, values in headers.items()}
        return event


_STATUS_DESCRIPTIONS: dict[int, str] = {}


def _status_description(status: int) -> str:
    """``"200 OK"``; http.HTTPStatus (an enum of some sixty members) is imported on the first
    response rather than on every cold start, and each status is looked up once."""
    description = _STATUS_DESCRIPTIONS.get(status)
    if description is None:
        from http import HTTPStatus

        try:
            description = f"{status} {HTTPStatus(status).phrase}"
        except ValueError:
            description = str(status)
        _STATUS_DESCRIPTIONS[status] = description
    return description


def _check_header(name: Any, values: list[Any]) -> None:
    if not isinstance(name, str) or not only(name, _TOKEN):
        raise ValueError(f"invalid header name {name!r}")
    for value in values:
        if not isinstance(value, str) or ("\r" in value or "\n" in value or "\x00" in value):
            raise ValueError(f"invalid value for header {name!r}")  # no header injection


# ------------------------------------------------- the ALB side (used by the local gateway)


def build_event(
    *,
    method: str,
    path: str,
    raw_query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    target_group_arn: str,
    multi_value: bool = True,
) -> dict:
    """The event ALB would send for this request (headers already filtered/added by the caller)."""
    query: dict[str, list[str]] = {}
    for part in raw_query.split("&"):
        if part:
            name, _, value = part.partition("=")  # a name without '=' gets ""
            query.setdefault(name, []).append(value)  # still encoded, as ALB does
    header_map: dict[str, list[str]] = {}
    for name, value in headers:
        header_map.setdefault(name.lower(), []).append(value)

    encoded_body, is_b64 = "", False
    if body:
        content_type = header_map.get("content-type", [""])[-1]
        is_text = "content-encoding" not in header_map and (
            _media_type(content_type).startswith("text/") or _media_type(content_type) in _ALB_TEXT_REQUEST_TYPES
        )
        if is_text:
            try:
                encoded_body = body.decode("utf-8")
            except UnicodeDecodeError:
                is_text = False  # cannot go into JSON as text
        if not is_text:
            encoded_body, is_b64 = base64.b64encode(body).decode("ascii"), True

    event: dict[str, Any] = {
        "requestContext": {"elb": {"targetGroupArn": target_group_arn}},
        "httpMethod": method,
        "path": path,
    }
    if multi_value:
        event["multiValueQueryStringParameters"] = query
        event["multiValueHeaders"] = header_map
    else:  # ALB's default format keeps the last value
        event["queryStringParameters"] = {k: v[-1] for k, v in query.items()}
        event["headers"] = {k: v[-1] for k, v in header_map.items()}
    event["body"] = encoded_body
    event["isBase64Encoded"] = is_b64
    return event


@frozen
class HttpReply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes):
        self.__dict__.update(status=status, headers=headers, body=body)


def parse_response(result: Any) -> HttpReply:
    """What ALB sends to the client for a Lambda result; BadResponse where ALB gives 502."""
    if not isinstance(result, dict):
        raise BadResponse("result is not a JSON object")
    status = result.get("statusCode")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise BadResponse(f"invalid statusCode {status!r}")
    multi, single = result.get("multiValueHeaders"), result.get("headers")
    if not isinstance(multi, (dict, type(None))) or not isinstance(single, (dict, type(None))):
        raise BadResponse("headers are not an object")
    headers: list[tuple[str, str]] = []
    try:
        for name, values in (multi or {}).items():
            if not isinstance(values, list):
                raise ValueError(f"multiValueHeaders[{name!r}] is not a list")
            _check_header(name, values)
            headers.extend((name, v) for v in values)
        for name, value in (single or {}).items():
            _check_header(name, [value])
            headers.append((name, value))
    except ValueError as exc:
        raise BadResponse(f"bad headers: {exc}") from None
    body = result.get("body")
    if body is None:
        body = ""
    if not isinstance(body, str):
        raise BadResponse("body is not a string")
    is_b64 = result.get("isBase64Encoded", False)
    if not isinstance(is_b64, bool):
        raise BadResponse("isBase64Encoded is not a boolean")
    if len(body) > MAX_RESPONSE_BYTES:
        raise BadResponse("response exceeds ALB's 1 MB limit")
    try:
        raw = binascii.a2b_base64(body.encode("ascii"), strict_mode=True) if is_b64 else body.encode("utf-8")
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise BadResponse(f"bad body: {exc}") from None
    return HttpReply(status, headers, raw)


# ------------------------------------------------------------------------------ mTLS

SERIAL_HEADER = "x-amzn-mtls-clientcert-serial-number"
ISSUER_HEADER = "x-amzn-mtls-clientcert-issuer"
SUBJECT_HEADER = "x-amzn-mtls-clientcert-subject"
VALIDITY_HEADER = "x-amzn-mtls-clientcert-validity"
LEAF_HEADER = "x-amzn-mtls-clientcert-leaf"
CHAIN_HEADER = "x-amzn-mtls-clientcert"  # passthrough mode only; we never trust it
MTLS_HEADERS = (SERIAL_HEADER, ISSUER_HEADER, SUBJECT_HEADER, VALIDITY_HEADER, LEAF_HEADER, CHAIN_HEADER)

MAX_LEAF_CHARS = 16 * 1024  # a URL-encoded RSA-4096 leaf is ~2.5 KB; ALB caps headers at 64 KB
_MAX_HEADER_CHARS = 4096
_MAX_SERIAL_DIGITS = {"hex": 64, "decimal": 80}  # RFC 5280 allows 20 octets; leave slack
_VALIDITY_BEFORE, _VALIDITY_AFTER = "NotBefore=", ";NotAfter="  # NotBefore=<instant>;NotAfter=<instant>
_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"
_BASE64 = ALNUM + "+/"


@frozen
class ClientCert:
    serial: int
    leaf: x509.Certificate | None
    subject: str | None
    issuer: str | None
    not_before: datetime | None
    not_after: datetime | None
    der: bytes | None = field(default=None, repr=False, compare=False)  # the leaf's DER, when there is a leaf

    def __init__(self, serial: int, leaf: x509.Certificate | None, subject: str | None, issuer: str | None,
                 not_before: datetime | None, not_after: datetime | None, der: bytes | None = None):
        self.__dict__.update(serial=serial, leaf=leaf, subject=subject, issuer=issuer, not_before=not_before,
                             not_after=not_after, der=der)

    @property
    def serial_hex(self) -> str:
        return _serial_hex(self.serial)


def client_cert(
    request: Request,
    serial_header: str = SERIAL_HEADER,
    serial_format: str = "hex",
    leaf_header: str = LEAF_HEADER,
    names: bool = True,
) -> ClientCert | None:
    """The client certificate the TLS terminator verified, or None if it sent none.

    serial_format is "hex" (ALB, nginx's $ssl_client_serial; colons and any case
    tolerated) or "decimal" (Caddy). When the leaf is present it is authoritative and a
    serial header must agree with it. Every malformed input raises MtlsHeaderError.

    ``names=False``: a leaf's subject and issuer are not rendered as RFC 4514 strings (``subject``
    and ``issuer`` are None), for a caller that reads what it needs from the leaf itself (the
    IdP). The leaf is checked the same either way: a name that does not parse is refused.
    """
    if serial_format not in _MAX_SERIAL_DIGITS:
        raise MtlsHeaderError(f"unknown serial format {serial_format!r}")
    serial_text = _one_header(request, serial_header.lower())
    leaf_text = _one_header(request, leaf_header.lower(), MAX_LEAF_CHARS)
    subject = _one_header(request, SUBJECT_HEADER)
    issuer = _one_header(request, ISSUER_HEADER)
    validity_text = _one_header(request, VALIDITY_HEADER)
    if serial_text is None and leaf_text is None:
        if subject is None and issuer is None and validity_text is None:
            return None
        raise MtlsHeaderError("certificate headers without a serial number or leaf")

    header_serial = None if serial_text is None else _parse_serial(serial_text, serial_format)
    not_before = not_after = None
    if validity_text is not None:
        not_before, not_after = _parse_validity(validity_text)
    if leaf_text is None:
        assert header_serial is not None
        return ClientCert(header_serial, None, subject, issuer, not_before, not_after)

    leaf, der, serial, (not_before, not_after) = _leaf_facts(leaf_text)
    if header_serial is not None and header_serial != serial:
        raise MtlsHeaderError(f"serial header {serial_text!r} does not match the leaf certificate")
    # Parsed from the leaf rather than the headers, so values are consistent across proxies.
    subject = issuer = None
    if names:
        try:
            subject, issuer = leaf.subject.rfc4514_string(), leaf.issuer.rfc4514_string()
        except Exception as exc:
            raise MtlsHeaderError(f"leaf certificate is malformed: {exc}") from None
    return ClientCert(serial, leaf, subject, issuer, not_before, not_after, der=der)


# A device presents the same leaf on every login, so each distinct header text is parsed once per
# container: keyed on the whole text (a str key compares every character), holding only what the
# parse of that text yields, never a failure (a malformed leaf is parsed, and refused, every time).
# Bounded: when full it starts over.
_LEAF_CACHE_MAX = 256
_leaf_cache: dict[str, tuple] = {}


def _leaf_facts(leaf_text: str) -> tuple:
    """(certificate, its DER, serial, (not before, not after)) of a leaf header."""
    facts = _leaf_cache.get(leaf_text)
    if facts is not None:
        return facts
    leaf, der = _parse_leaf(leaf_text)
    try:
        serial = leaf.serial_number
        leaf.subject, leaf.issuer  # parsed (and kept by the certificate) here: a malformed name fails here
        dates = (leaf.not_valid_before_utc, leaf.not_valid_after_utc)
        leaf.extensions  # callers read the SAN (health, the IdP): a malformed one must fail here
        if der is None:
            from cryptography.hazmat.primitives.serialization import Encoding

            der = leaf.public_bytes(Encoding.DER)
    except Exception as exc:  # cryptography parses lazily; a bad field surfaces here
        raise MtlsHeaderError(f"leaf certificate is malformed: {exc}") from None
    return remember(_leaf_cache, leaf_text, (leaf, der, serial, dates), _LEAF_CACHE_MAX)


def _one_header(request: Request, name: str, limit: int = _MAX_HEADER_CHARS) -> str | None:
    values = request.headers.get(name)
    if not values:
        return None
    if len(values) != 1:
        raise MtlsHeaderError(f"{name} appears {len(values)} times")  # a smuggled copy
    value = values[0].strip()
    if not value:
        return None  # e.g. nginx's $ssl_client_serial when no certificate was sent
    if len(value) > limit:
        raise MtlsHeaderError(f"{name} is longer than {limit} characters")
    return value


def _parse_serial(text: str, serial_format: str) -> int:
    # hex: [0-9A-Fa-f]+(:[0-9A-Fa-f]+)*, decimal: [0-9]+
    if not (all(only(part, HEX) for part in text.split(":")) if serial_format == "hex" else only(text, DIGITS)):
        raise MtlsHeaderError(f"serial number {text!r} is not {serial_format}")
    digits = text.replace(":", "")
    if len(digits) > _MAX_SERIAL_DIGITS[serial_format]:
        raise MtlsHeaderError("serial number is too long")
    return int(digits, 16 if serial_format == "hex" else 10)


def _instant(text: str) -> list[int] | None:
    """``YYYY-MM-DDTHH:MM:SSZ`` (ASCII digits, exactly so many) as its six numbers, else None."""
    if len(text) != 20 or text[4] + text[7] + text[10] + text[13] + text[16] + text[19] != "--T::Z":
        return None
    groups = (text[0:4], text[5:7], text[8:10], text[11:13], text[14:16], text[17:19])
    return [int(g) for g in groups] if all(only(g, DIGITS) for g in groups) else None


def _parse_validity(text: str) -> tuple[datetime, datetime]:
    before, after = len(_VALIDITY_BEFORE), len(_VALIDITY_BEFORE) + 20
    start = _instant(text[before:after]) if text.startswith(_VALIDITY_BEFORE) else None
    separator = text[after:after + len(_VALIDITY_AFTER)]
    end = _instant(text[after + len(_VALIDITY_AFTER):]) if separator == _VALIDITY_AFTER else None
    if start is None or end is None:
        raise MtlsHeaderError(f"validity header {text!r} is not NotBefore=...;NotAfter=...")
    # _instant fixed every field's digits; datetime() refuses what strptime would (month 13,
    # February 30, hour 24, second 60), without strptime's per-call format parsing.
    fields = start + end
    try:
        return (datetime(*fields[:6], tzinfo=timezone.utc), datetime(*fields[6:], tzinfo=timezone.utc))
    except ValueError as exc:
        raise MtlsHeaderError(f"validity header has an impossible date: {exc}") from None


def _base64_der(text: str) -> bool:
    """``MI[A-Za-z0-9+/]+={0,2}``: a DER SEQUENCE (0x30 0x8x ...) in base64."""
    body = text[2:].rstrip("=")
    return text.startswith("MI") and len(text) - 2 - len(body) <= 2 and only(body, _BASE64)


def _unquote_leaf(text: str) -> str:
    """``unquote(text, encoding="ascii", errors="strict")`` of a leaf header. A PEM URL-encoded as
    ALB and nginx do it escapes only its spaces and line feeds: when those two replacements leave
    no '%', every escape was one of them and the result is unquote's; otherwise unquote decides."""
    plain = text.replace("%20", " ").replace("%0A", "\n")
    if "%" not in plain:
        return plain
    return unquote(text, encoding="ascii", errors="strict")


def _canonical_pem_der(pem: str) -> bytes | None:
    """The DER inside a PEM certificate laid out exactly as cryptography writes one (and as its
    loader reads it): the BEGIN line, the DER's base64 in lines of 64, the END line. None for any
    other layout (``load_pem_x509_certificate`` then decides, with its own messages)."""
    head, tail = _PEM_BEGIN + "\n", "\n" + _PEM_END
    if not pem.startswith(head) or not pem.endswith(tail):
        return None
    body = pem[len(head):-len(tail)].encode("ascii")
    digits = body.replace(b"\n", b"")
    try:
        der = binascii.a2b_base64(digits, strict_mode=True)
    except binascii.Error:
        return None
    # The canonical layout: the base64 of the DER, a line feed after every 64 digits but the last.
    encoded = binascii.b2a_base64(der, newline=False)
    breaks = (len(encoded) - 1) // 64
    if body.count(b"\n") != breaks or body[64::65] != b"\n" * breaks or digits != encoded:
        return None  # not the canonical layout (or not canonical base64): leave it to the PEM loader
    return der


def _parse_leaf(text: str) -> tuple[x509.Certificate, bytes | None]:
    """The leaf certificate, and its DER when that came out of the parse (else None)."""
    try:
        pem = _unquote_leaf(text)  # '+' stays '+' (base64)
    except UnicodeDecodeError:
        raise MtlsHeaderError("leaf is not URL-encoded ASCII") from None
    pem = pem.strip()
    from cryptography import x509

    if _base64_der(pem):
        # Caddy cannot put a multi-line PEM in a header; it sends the DER in base64
        # ({http.request.tls.client.certificate_der_base64}), which no PEM or URL-encoded PEM can match.
        try:
            der = binascii.a2b_base64(pem.encode("ascii"), strict_mode=True)
            return x509.load_der_x509_certificate(der), der
        except Exception as exc:
            raise MtlsHeaderError(f"leaf certificate (base64 DER) does not parse: {exc}") from None
    if (
        not pem.isascii()
        or not pem.startswith(_PEM_BEGIN)
        or not pem.endswith(_PEM_END)
        or pem.count("-----BEGIN") != 1
    ):
        raise MtlsHeaderError("leaf is not exactly one PEM certificate")
    # The usual case (ALB's, nginx's header): the PEM's own bytes give the DER, loaded as DER, which
    # is what the PEM loader does after decoding the same base64; no DER re-encoded from the parse.
    der = _canonical_pem_der(pem)
    if der is not None:
        try:
            return x509.load_der_x509_certificate(der), der
        except Exception:
            pass  # the PEM loader below refuses it too, with its message
    try:
        return x509.load_pem_x509_certificate(pem.encode("ascii")), None
    except Exception as exc:
        raise MtlsHeaderError(f"leaf certificate does not parse: {exc}") from None


def _serial_hex(serial: int) -> str:
    digits = format(serial, "X")
    return "0" * (len(digits) % 2) + digits  # whole octets, as in the docs' "03A5B1"


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_mtls_headers(cert: x509.Certificate) -> dict[str, str]:
    """The verify-mode headers ALB would add for this verified client certificate."""
    from cryptography.hazmat.primitives.serialization import Encoding

    pem = cert.public_bytes(Encoding.PEM).decode("ascii")
    return {
        "X-Amzn-Mtls-Clientcert-Serial-Number": _serial_hex(cert.serial_number),
        # cryptography's RFC 4514 form: RFC 2253's successor, same order and escaping.
        "X-Amzn-Mtls-Clientcert-Issuer": cert.issuer.rfc4514_string(),
        "X-Amzn-Mtls-Clientcert-Subject": cert.subject.rfc4514_string(),
        "X-Amzn-Mtls-Clientcert-Validity": (
            f"NotBefore={_iso(cert.not_valid_before_utc)};NotAfter={_iso(cert.not_valid_after_utc)}"
        ),
        "X-Amzn-Mtls-Clientcert-Leaf": quote(pem, safe="+=/"),
    }
