"""A small AWS JSON-protocol client (standard library only) for the Lambdas' hot path:
DynamoDB (JSON 1.0) and Secrets Manager (JSON 1.1), signed with Signature Version 4.

Why: boto3 costs ~160 ms to import on a cold start and ~1.4 ms of CPU per DynamoDB call; this
client does the same requests with a fraction of both. It speaks only what the Lambdas use and
returns what boto3's low-level client returns for those operations (same keyword arguments,
same response dicts, blobs as bytes), so callers do not change.

Security properties, deliberately the same as (or stricter than) the boto3 set-up it replaces:

* credentials only from the environment Lambda provides (AWS_ACCESS_KEY_ID,
  AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN); when they are absent (container credentials,
  instance metadata, SnapStart, profiles, FIPS / dual-stack endpoints, an unknown partition)
  ``client()`` returns a boto3 client instead, so nothing else has to know;
* HTTPS with certificate and host name verification (AWS_CA_BUNDLE, else certifi's bundle as
  botocore uses, else the system store), TLS 1.2 at least; plain HTTP only for an explicit
  ``http://`` endpoint (a local moto);
* every call bounded: connect and read timeouts, at most ``max_attempts`` attempts in all
  with full-jitter exponential backoff, and only for throttling, 5xx, a bad CRC32 and
  connection errors;
* DynamoDB responses checked against their x-amz-crc32 header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import ssl  # at import, as before: the real endpoints are https (a local moto is not)
import time
import urllib.parse
import zlib
from _thread import allocate_lock  # threading.Lock itself, without importing threading
from datetime import datetime, timezone

from . import http11
from .textcheck import LOWER, only

CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 3.0
MAX_ATTEMPTS = 3  # in all, the first one included
BACKOFF_BASE = 1.0  # seconds; attempt n (from 0) waits random(0, min(cap, base * 2**n))
BACKOFF_CAP = 20.0

USER_AGENT = "devicegate-awsjson/1"

_SERVICES = {
    # name: (signing name, endpoint prefix, X-Amz-Target prefix, content type, env suffix)
    "dynamodb": ("dynamodb", "dynamodb", "DynamoDB_20120810", "application/x-amz-json-1.0", "DYNAMODB"),
    "secretsmanager": ("secretsmanager", "secretsmanager", "secretsmanager", "application/x-amz-json-1.1",
                       "SECRETS_MANAGER"),
}


def _region_name(text: str) -> bool:
    """``[a-z]{2}(-[a-z]+)+-\\d{1,2}`` (``\\d``: any Unicode decimal digit, as re has it)."""
    parts = text.split("-")
    return (len(parts) >= 3 and len(parts[0]) == 2 and all(only(p, LOWER) for p in parts[:-1])
            and 1 <= len(parts[-1]) <= 2 and parts[-1].isdecimal())


# Partitions whose regional endpoints we know; anything else is left to boto3.
_PARTITION_SUFFIX = (("cn-", "amazonaws.com.cn"), ("us-gov-", "amazonaws.com"))


def _unknown_partition(region: str) -> bool:
    """``re.match(r"(us|eu)-iso[a-z]*-", region)``: the ISO partitions."""
    rest = region[6:].lstrip(LOWER)
    return region[:6] in ("us-iso", "eu-iso") and rest.startswith("-")


_THROTTLING = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "TransactionInProgressException",
    "RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException", "RequestThrottled",
    "SlowDown", "PriorRequestNotComplete", "EC2ThrottledException",
})
_TRANSIENT = frozenset({"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"})
_RETRY_STATUS = frozenset({500, 502, 503, 504})


class AwsError(Exception):
    """Base of what this client raises."""


class ServiceError(AwsError):
    """AWS answered with an error. ``code`` is the ``__type`` suffix (as botocore's
    ``Error.Code``); ``response`` mirrors botocore's ``ClientError.response``."""

    def __init__(self, operation: str, status: int, code: str, message: str, body: dict, request_id: str = ""):
        super().__init__(f"An error occurred ({code}) when calling the {operation} operation: {message}")
        self.operation, self.status, self.code, self.message = operation, status, code, message
        extra = {k: v for k, v in body.items() if k not in ("__type", "message", "Message")}
        if "CancellationReasons" in extra:  # items in the reasons carry attribute values
            extra["CancellationReasons"] = [
                {**r, "Item": _decode_item(r["Item"])} if isinstance(r, dict) and isinstance(r.get("Item"), dict) else r
                for r in extra["CancellationReasons"]
            ]
        self.response = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": request_id},
            **extra,
        }


class TransportError(AwsError):
    """No usable answer: connection refused or reset, timeout, TLS failure, a bad checksum or
    an unparseable body, after the last attempt."""


# ---------------------------------------------------------------------------- Signature Version 4


# Never signed: hop-by-hop headers, tracing, and ones a proxy may rewrite (botocore leaves the same out).
_UNSIGNED = frozenset({
    "authorization", "baggage", "connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "traceparent", "tracestate", "trailer", "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id",
})


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


_KEY_CACHE: dict[tuple[str, str, str, str], bytes] = {}


def _signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    cache_key = (secret, day, region, service)
    key = _KEY_CACHE.get(cache_key)
    if key is None:
        key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode("utf-8"), day), region), service), "aws4_request")
        if len(_KEY_CACHE) > 8:
            _KEY_CACHE.clear()
        _KEY_CACHE[cache_key] = key
    return key


def _canonical_path(path: str) -> str:
    """The URI path normalised (no empty, "." or ".." segments) and percent-encoded once more,
    as Signature Version 4 wants for every service but S3."""
    segments: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if segments:
                segments.pop()
            continue
        segments.append(part)
    normalised = "/" + "/".join(segments)
    if path.endswith("/") and normalised != "/":
        normalised += "/"
    return urllib.parse.quote(normalised, safe="/~")


def _canonical_query(query: str) -> str:
    pairs = []
    for item in query.split("&") if query else ():
        name, _, value = item.partition("=")
        pairs.append((urllib.parse.quote(urllib.parse.unquote_plus(name), safe="-_.~"),
                      urllib.parse.quote(urllib.parse.unquote_plus(value), safe="-_.~")))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def sign(method: str, url: str, headers: dict[str, str], body: bytes, *, access_key: str, secret_key: str,
         region: str, service: str, amz_date: str, session_token: str | None = None,
         unsigned: frozenset[str] = _UNSIGNED) -> dict[str, str]:
    """``headers`` with X-Amz-Date, X-Amz-Security-Token (when a token is given) and
    Authorization added. Every header but ``unsigned`` ones is signed; a missing Host is
    signed as the URL's host (with its port when it is not the scheme's default)."""
    parts = urllib.parse.urlsplit(url)
    out = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "x-amz-date", "x-amz-security-token")}
    out["X-Amz-Date"] = amz_date
    if session_token:
        out["X-Amz-Security-Token"] = session_token
    canonical: dict[str, list[str]] = {}
    for name, value in out.items():
        lower = name.lower()
        if lower not in unsigned:
            canonical.setdefault(lower, []).append(" ".join(str(value).split()))
    if "host" not in canonical:
        canonical["host"] = [_host_header(parts)]
    names = sorted(canonical)
    signed_headers = ";".join(names)
    request = "\n".join((
        method.upper(),
        _canonical_path(parts.path or "/"),
        _canonical_query(parts.query),
        "".join(f"{n}:{','.join(canonical[n])}\n" for n in names),
        signed_headers,
        hashlib.sha256(body).hexdigest(),
    ))
    day = amz_date[:8]
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(request.encode('utf-8')).hexdigest()}"
    signature = hmac.new(_signing_key(secret_key, day, region, service), to_sign.encode("utf-8"),
                         hashlib.sha256).hexdigest()
    out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                            f"SignedHeaders={signed_headers}, Signature={signature}")
    return out


def _host_header(parts: urllib.parse.SplitResult) -> str:
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


# ---------------------------------------------------------------------------- wire format


def _blob(value) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _decode_value(value: dict) -> dict:
    if "B" in value:
        return {"B": base64.b64decode(value["B"])}
    if "BS" in value:
        return {"BS": [base64.b64decode(v) for v in value["BS"]]}
    if "M" in value:
        return {"M": _decode_item(value["M"])}
    if "L" in value:
        return {"L": [_decode_value(v) for v in value["L"]]}
    return value


def _decode_item(item: dict) -> dict:
    return {name: _decode_value(value) for name, value in item.items()}


def _decode_dynamodb(doc: dict) -> dict:
    """Blobs in the attribute values of the parts the Store reads, as bytes (as boto3 does)."""
    for name in ("Item", "Attributes", "LastEvaluatedKey"):
        if name in doc:
            doc[name] = _decode_item(doc[name])
    if "Items" in doc:
        doc["Items"] = [_decode_item(i) for i in doc["Items"]]
    if isinstance(doc.get("Responses"), dict):  # BatchGetItem: {table: [items]}
        doc["Responses"] = {table: [_decode_item(i) for i in items] for table, items in doc["Responses"].items()}
    return doc


def _decode_secretsmanager(doc: dict) -> dict:
    if "SecretBinary" in doc:
        doc["SecretBinary"] = base64.b64decode(doc["SecretBinary"])
    if isinstance(doc.get("CreatedDate"), (int, float)):
        doc["CreatedDate"] = datetime.fromtimestamp(doc["CreatedDate"], timezone.utc)
    return doc


def _error_code(raw: str) -> str:
    # "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException" -> the suffix;
    # a header form may carry ":http://..." after the code
    return raw.rsplit("#", 1)[-1].split(":", 1)[0].strip()


# ---------------------------------------------------------------------------- the client


def _ssl_context() -> ssl.SSLContext:
    bundle = os.environ.get("AWS_CA_BUNDLE") or None
    if bundle is None:
        try:
            import certifi

            bundle = certifi.where()
        except ImportError:
            bundle = None
    context = ssl.create_default_context(cafile=bundle)  # verifies the chain and the host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _operation(name: str):
    """A method taking boto3's keyword arguments for the operation ``name``."""

    def method(self, **params):
        return self.call(name, params)

    # GetItem -> get_item
    snake = "".join("_" + c if i and "A" <= c <= "Z" else c for i, c in enumerate(name)).lower()
    method.__name__ = method.__qualname__ = snake
    return method


class Client:
    """One service's JSON API. Thread-safe: a request takes an idle keep-alive connection (or opens
    one) and gives it back when its answer has been read, so threads that come and go (a server's
    thread per client, as the local stack has) reuse connections as one Lambda thread does."""

    def __init__(self, service: str, region: str, endpoint: str, *, connect_timeout: float = CONNECT_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT, max_attempts: int = MAX_ATTEMPTS,
                 backoff_base: float = BACKOFF_BASE, backoff_cap: float = BACKOFF_CAP, env=None):
        self.service = service
        self._signing_name, _, self._target_prefix, self._content_type, _ = _SERVICES[service]
        if not _region_name(region):
            raise ValueError(f"{region!r} is not an AWS region name")
        self.region = region
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment \
                or parts.username or parts.password:
            raise ValueError(f"{endpoint!r} is not an http(s)://host[:port][/path] endpoint")
        self.endpoint = endpoint
        self._scheme, self._hostname, self._port = parts.scheme, parts.hostname, parts.port
        self._url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))
        self._path = parts.path or "/"
        self._host = _host_header(parts)
        self.connect_timeout, self.read_timeout = float(connect_timeout), float(read_timeout)
        self.max_attempts = max(1, int(max_attempts))
        self.backoff_base, self.backoff_cap = float(backoff_base), float(backoff_cap)
        self._env = os.environ if env is None else env
        self._idle: list[http11.Connection] = []  # most recently used last
        self._idle_lock = allocate_lock()
        self._tls = _ssl_context() if parts.scheme == "https" else None
        self._decode = _decode_dynamodb if service == "dynamodb" else _decode_secretsmanager
        self.connections_opened = 0  # for measurements and tests

    # ------------------------------------------------------------------ transport

    MAX_IDLE = 8  # kept-alive connections beyond this many idle ones are closed

    def _connection(self) -> http11.Connection:
        while True:
            with self._idle_lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if conn.reusable():
                return conn
            conn.close()
        conn = http11.Connection(self._hostname, self._port, tls=self._tls, timeout=self.connect_timeout)
        conn.connect()
        conn.sock.settimeout(self.read_timeout)
        with self._idle_lock:
            self.connections_opened += 1
        return conn

    def _release(self, conn: http11.Connection) -> None:
        """A connection whose last answer was read in full, back for the next request."""
        with self._idle_lock:
            if len(self._idle) < self.MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _send(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = None
        try:
            conn = self._connection()
            status, response_headers, data, will_close = conn.request("POST", self._path, headers, body)
        except BaseException:
            if conn is not None:
                conn.close()  # a failed exchange leaves the connection in an unknown state
            raise
        if will_close:
            conn.close()
        else:
            self._release(conn)
        return status, {k.lower(): v for k, v in response_headers}, data  # a repeated header: the last

    # ------------------------------------------------------------------ calls

    def _credentials(self) -> tuple[str, str, str | None]:
        env = self._env
        key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        if not key or not secret:
            raise TransportError("no AWS credentials in the environment")
        return key, secret, env.get("AWS_SESSION_TOKEN") or None

    def call(self, operation: str, params: dict) -> dict:
        """``operation`` as AWS names it (GetItem); ``params`` as boto3 takes them."""
        body = json.dumps(params, separators=(",", ":"), default=_blob).encode("utf-8")
        base = {
            "Host": self._host,
            "Content-Type": self._content_type,
            "X-Amz-Target": f"{self._target_prefix}.{operation}",
            "User-Agent": USER_AGENT,
        }
        attempt = 0
        while True:
            key, secret, token = self._credentials()
            headers = sign("POST", self._url, base, body, access_key=key, secret_key=secret, region=self.region,
                           service=self._signing_name, amz_date=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
                           session_token=token)
            headers["Accept-Encoding"] = "identity"  # unsigned, as botocore leaves it (and http.client sent it)
            try:
                status, response_headers, data = self._send(headers, body)
                result = self._result(operation, status, response_headers, data)
            except ServiceError as exc:
                if attempt + 1 >= self.max_attempts or not (
                        exc.code in _THROTTLING or exc.code in _TRANSIENT or exc.status in _RETRY_STATUS):
                    raise
            except (OSError, http11.BadResponse, TransportError) as exc:
                if attempt + 1 >= self.max_attempts:
                    if isinstance(exc, TransportError):
                        raise
                    raise TransportError(f"{self.service} {operation}: {type(exc).__name__}: {exc}") from None
            else:
                if attempt:
                    result.setdefault("ResponseMetadata", {})["RetryAttempts"] = attempt
                return result
            time.sleep(random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** attempt)))
            attempt += 1

    def _result(self, operation: str, status: int, headers: dict[str, str], data: bytes) -> dict:
        expected_crc = headers.get("x-amz-crc32")
        if expected_crc is not None and self.service == "dynamodb":
            if not expected_crc.isdigit() or int(expected_crc) != zlib.crc32(data):
                raise TransportError(f"{self.service} {operation}: the response failed its CRC32 check")
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            if status >= 300:
                raise ServiceError(operation, status, str(status), data[:200].decode("utf-8", "replace"), {},
                                   headers.get("x-amzn-requestid", ""))
            raise TransportError(f"{self.service} {operation}: the response is not a JSON object")
        if status >= 300:
            code = _error_code(str(doc.get("__type") or headers.get("x-amzn-errortype") or status))
            message = str(doc.get("message", doc.get("Message", "")))
            raise ServiceError(operation, status, code, message, doc, headers.get("x-amzn-requestid", ""))
        doc = self._decode(doc)
        doc["ResponseMetadata"] = {"HTTPStatusCode": status, "RequestId": headers.get("x-amzn-requestid", ""),
                                   "RetryAttempts": 0}
        return doc

    # ------------------------------------------------------------------ boto3's method names

    get_item = _operation("GetItem")
    batch_get_item = _operation("BatchGetItem")
    put_item = _operation("PutItem")
    update_item = _operation("UpdateItem")
    delete_item = _operation("DeleteItem")
    query = _operation("Query")
    scan = _operation("Scan")
    transact_write_items = _operation("TransactWriteItems")
    get_secret_value = _operation("GetSecretValue")


# ---------------------------------------------------------------------------- choosing a client


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def endpoint_for(service: str, region: str, env=None, explicit: str | None = None) -> str | None:
    """The endpoint boto3 would use: explicit, else AWS_ENDPOINT_URL_<SERVICE>, else
    AWS_ENDPOINT_URL (both unless AWS_IGNORE_CONFIGURED_ENDPOINT_URLS), else the regional
    https endpoint; None when we do not know the partition's endpoints."""
    env = os.environ if env is None else env
    if explicit:
        return explicit
    if not _truthy(env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")):
        configured = env.get(f"AWS_ENDPOINT_URL_{_SERVICES[service][4]}") or env.get("AWS_ENDPOINT_URL")
        if configured:
            return configured
    if _unknown_partition(region):
        return None
    suffix = next((s for prefix, s in _PARTITION_SUFFIX if region.startswith(prefix)), "amazonaws.com")
    return f"https://{_SERVICES[service][1]}.{region}.{suffix}"


def lightweight(service: str, endpoint: str | None = None, env=None, **options) -> Client | None:
    """This module's client when the environment has everything it needs, else None."""
    env = os.environ if env is None else env
    if not (env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")):
        return None  # container credentials, instance metadata, a profile...: boto3's chain
    if _truthy(env.get("AWS_USE_FIPS_ENDPOINT")) or _truthy(env.get("AWS_USE_DUALSTACK_ENDPOINT")):
        return None
    region = (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "").strip()
    if not _region_name(region):
        return None
    url = endpoint_for(service, region, env, endpoint)
    if url is None:
        return None
    return Client(service, region, url, env=env, **options)


def client(service: str, endpoint: str | None = None, *, connect_timeout: float = CONNECT_TIMEOUT,
           read_timeout: float = READ_TIMEOUT, max_attempts: int = MAX_ATTEMPTS):
    """A client for ``service`` ("dynamodb" or "secretsmanager") with the given bounds: this
    module's when the environment allows it, else boto3's with the same bounds."""
    light = lightweight(service, endpoint, connect_timeout=connect_timeout, read_timeout=read_timeout,
                        max_attempts=max_attempts)
    if light is not None:
        return light
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                    retries={"mode": "standard", "total_max_attempts": max_attempts})
    return boto3.client(service, endpoint_url=endpoint, config=config)
