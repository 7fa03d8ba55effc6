"""devicegate.awsjson: the Signature Version 4 signer checked byte for byte against botocore's
own signer and AWS's documented example (moto checks no signature, so this is the proof), the
wire format checked against what boto3 sends and parses, and the bounds, retries, CRC32,
keep-alive, TLS verification and boto3 fallback of the client."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from devicegate import awsjson, http11
from devicegate import store as store_mod

KEY = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
# shaped like a real STS token: long, with the base64 characters that need no escaping in a header
TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+abc/def==" + "A" * 300
AMZ_DATE = "20261203T220340Z"
UNUSUAL_BODY = json.dumps({
    "TableName": "t\u00fcble", "Item": {"pk": {"S": "CERT#\u00e9\u4e2d\U0001F600\u2028 \t\\\"x"},
                                       "der": {"B": "AAEC/w=="}}}, ensure_ascii=False).encode("utf-8") + b"\x00\xff"


def botocore_authorization(method, url, headers, body, *, token=TOKEN, region="us-east-1", service="dynamodb",
                           amz_date=AMZ_DATE, monkeypatch):
    """botocore's SigV4Auth over the same request at the same instant: its signed headers."""
    fixed = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: fixed)
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    botocore.auth.SigV4Auth(Credentials(KEY, SECRET, token), service, region).add_auth(request)
    return {k: request.headers[k] for k in ("Authorization", "X-Amz-Date")} | (
        {"X-Amz-Security-Token": request.headers["X-Amz-Security-Token"]} if token else {})


def ours(method, url, headers, body, *, token=TOKEN, region="us-east-1", service="dynamodb", amz_date=AMZ_DATE):
    signed = awsjson.sign(method, url, headers, body, access_key=KEY, secret_key=SECRET, region=region,
                          service=service, amz_date=amz_date, session_token=token)
    return {k: signed[k] for k in ("Authorization", "X-Amz-Date")} | (
        {"X-Amz-Security-Token": signed["X-Amz-Security-Token"]} if token else {})


# ------------------------------------------------------------------------------ the signer


def test_aws_documented_example_signature():
    # AWS General Reference, "Signature Version 4 signing process" example: IAM ListUsers,
    # 2015-08-30T12:36:00Z, the documentation's example key (no session token).
    signed = awsjson.sign(
        "GET", "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
        {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, b"",
        access_key=KEY, secret_key=SECRET, region="us-east-1", service="iam", amz_date="20150830T123600Z")
    assert signed["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, "
        "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7")
    assert "X-Amz-Security-Token" not in signed


JSON_HEADERS = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.PutItem",
                "User-Agent": "not signed/1.0", "Accept-Encoding": "identity"}


@pytest.mark.parametrize("url, headers, body, token, region, service", [
    ("https://dynamodb.eu-west-1.amazonaws.com/", JSON_HEADERS, UNUSUAL_BODY, TOKEN, "eu-west-1", "dynamodb"),
    ("https://dynamodb.eu-west-1.amazonaws.com/", JSON_HEADERS, UNUSUAL_BODY, None, "eu-west-1", "dynamodb"),
    ("http://127.0.0.1:5123/", JSON_HEADERS, b"{}", TOKEN, "us-east-1", "dynamodb"),
    ("https://dynamodb.us-east-1.amazonaws.com:443/", JSON_HEADERS, b"", TOKEN, "us-east-1", "dynamodb"),
    ("https://secretsmanager.cn-north-1.amazonaws.com.cn", {
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "secretsmanager.GetSecretValue"},
     '{"SecretId":"devicegate/ca \u00e5"}'.encode(), TOKEN, "cn-north-1", "secretsmanager"),
    # header values with runs of white space and upper-case names; a path with dot segments,
    # double slashes, a trailing slash and characters that need (double) percent-encoding
    ("http://[::1]:8000/base//./x/../p%20q/\u00fc~/", {"X-Amz-Target": "  DynamoDB_20120810.Query  ",
                                                    "CONTENT-TYPE": "application/x-amz-json-1.0",
                                                    "X-Custom": "a   b\tc"}, UNUSUAL_BODY, TOKEN, "us-east-1",
     "dynamodb"),
    ("http://localhost:4566/path?b=2&a=1&a=0", JSON_HEADERS, UNUSUAL_BODY, TOKEN, "ap-southeast-2", "dynamodb"),
])
def test_signer_matches_botocore_byte_for_byte(monkeypatch, url, headers, body, token, region, service):
    theirs = botocore_authorization("POST", url, headers, body, token=token, region=region, service=service,
                                    monkeypatch=monkeypatch)
    assert ours("POST", url, headers, body, token=token, region=region, service=service) == theirs


def test_signer_matches_botocore_for_every_byte_value_and_dates(monkeypatch):
    body = bytes(range(256)) * 3
    for amz_date in ("20240229T235959Z", "20260101T000000Z", AMZ_DATE):
        theirs = botocore_authorization("POST", "https://dynamodb.us-west-2.amazonaws.com/", JSON_HEADERS, body,
                                        region="us-west-2", amz_date=amz_date, monkeypatch=monkeypatch)
        assert ours("POST", "https://dynamodb.us-west-2.amazonaws.com/", JSON_HEADERS, body, region="us-west-2",
                    amz_date=amz_date) == theirs


def test_signature_depends_on_every_signed_part():
    base = dict(access_key=KEY, secret_key=SECRET, region="us-east-1", service="dynamodb", amz_date=AMZ_DATE,
                session_token=TOKEN)
    url = "https://dynamodb.us-east-1.amazonaws.com/"
    reference = awsjson.sign("POST", url, JSON_HEADERS, b"{}", **base)["Authorization"]
    variants = [
        awsjson.sign("POST", url, JSON_HEADERS, b"{ }", **base),
        awsjson.sign("POST", url, {**JSON_HEADERS, "X-Amz-Target": "DynamoDB_20120810.DeleteItem"}, b"{}", **base),
        awsjson.sign("POST", url.replace("us-east-1", "us-east-2"), JSON_HEADERS, b"{}", **base),
        awsjson.sign("POST", url, JSON_HEADERS, b"{}", **{**base, "session_token": TOKEN + "B"}),
        awsjson.sign("POST", url, JSON_HEADERS, b"{}", **{**base, "amz_date": "20261203T220341Z"}),
        awsjson.sign("POST", url, JSON_HEADERS, b"{}", **{**base, "secret_key": SECRET[:-1] + "X"}),
    ]
    assert all(v["Authorization"] != reference for v in variants)
    # the User-Agent is not signed (as with botocore): a proxy may rewrite it
    assert awsjson.sign("POST", url, {**JSON_HEADERS, "User-Agent": "x"}, b"{}", **base)["Authorization"] == reference


# ------------------------------------------------------------------------------ a capturing endpoint


class Endpoint:
    """A local HTTP endpoint that records each request and answers from a script."""

    def __init__(self, tls_context: ssl.SSLContext | None = None):
        self.requests: list[dict] = []
        self.script: list = []  # (status, headers, body) or "reset"
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                endpoint.requests.append({"path": self.path, "headers": dict(self.headers.items()), "body": body,
                                          "connection": id(self.connection)})
                status, headers, data = endpoint.script.pop(0) if endpoint.script else (200, {}, b"{}")
                if status == "reset":
                    self.close_connection = True
                    return
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls_context is not None:
            self.server.socket = tls_context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if tls_context else 'http'}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    e = Endpoint()
    yield e
    e.close()


ENV = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN,
       "AWS_REGION": "us-east-1"}


@pytest.fixture
def env(monkeypatch):
    for k in list(__import__("os").environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return ENV


def client(endpoint, service="dynamodb", **kw):
    kw.setdefault("backoff_base", 0.001)
    return awsjson.Client(service, "us-east-1", endpoint.url, env=ENV, **kw)


def boto(endpoint, service="dynamodb"):
    return boto3.client(service, endpoint_url=endpoint.url, region_name="us-east-1", aws_access_key_id=KEY,
                        aws_secret_access_key=SECRET, aws_session_token=TOKEN,
                        config=Config(retries={"mode": "standard", "total_max_attempts": 1}))


def signed_names(captured) -> set[str]:
    return set(captured["headers"]["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";"))


def resign_with_botocore(endpoint_url, captured, monkeypatch, service="dynamodb"):
    """botocore's signature over the request as it arrived: the headers it names as signed
    (with their values as received), the path and the body bytes."""
    headers = {k: v for k, v in captured["headers"].items()
               if k.lower() in signed_names(captured) and k.lower() not in ("x-amz-date", "x-amz-security-token")}
    return botocore_authorization("POST", endpoint_url + captured["path"], headers, captured["body"], service=service,
                                  amz_date=captured["headers"]["X-Amz-Date"], monkeypatch=monkeypatch)


def sent_auth(captured):
    h = captured["headers"]
    return {"Authorization": h["Authorization"], "X-Amz-Date": h["X-Amz-Date"],
            "X-Amz-Security-Token": h["X-Amz-Security-Token"]}


PUT = dict(TableName="t", Item={"pk": {"S": "CERT#\u00e9\u4e2d\U0001F600"}, "der": {"B": b"\x00\x01\xfe\xff" * 40},
                                "set": {"BS": [b"a", b"\xff"]}, "m": {"M": {"x": {"L": [{"B": b"\x01"}, {"N": "1"}]}}}},
           ConditionExpression="attribute_not_exists(pk)")


def test_what_we_send_is_what_boto3_sends_and_botocore_signs_it_alike(endpoint, monkeypatch):
    client(endpoint).put_item(**PUT)
    boto(endpoint).put_item(**PUT)
    mine, theirs = endpoint.requests
    # the same request: target, content type, body (as JSON), host
    for name in ("X-Amz-Target", "Content-Type", "Host"):
        assert mine["headers"][name] == theirs["headers"][name], name
    assert json.loads(mine["body"]) == json.loads(theirs["body"])
    # what we put on the wire, re-signed by botocore at the same instant: the same signature
    assert resign_with_botocore(endpoint.url, mine, monkeypatch) == sent_auth(mine)
    # and boto3's own request, signed by us: the same signature boto3 sent
    h = theirs["headers"]
    # the headers boto3 had when it signed (its HTTP layer adds Accept-Encoding and the like later)
    had = signed_names(theirs) | {"user-agent"}
    unsigned = {k: v for k, v in h.items()
                if k.lower() in had and k.lower() not in ("x-amz-date", "x-amz-security-token")}
    assert ours("POST", endpoint.url + theirs["path"], unsigned, theirs["body"], amz_date=h["X-Amz-Date"]) == \
        sent_auth(theirs)
    assert signed_names(mine) == signed_names(theirs) == {
        "content-type", "host", "x-amz-date", "x-amz-security-token", "x-amz-target"}


def test_secrets_manager_request_and_response_match_boto3(endpoint, monkeypatch):
    answer = {"ARN": "arn:aws:secretsmanager:us-east-1:1:secret:ca", "Name": "ca", "SecretString": "s\u00e9cret",
              "VersionId": "v1", "VersionStages": ["AWSCURRENT"], "CreatedDate": 1764800000.5}
    body = json.dumps(answer).encode()
    endpoint.script = [(200, {"Content-Type": "application/x-amz-json-1.1"}, body)] * 2
    got = client(endpoint, "secretsmanager").get_secret_value(SecretId="devicegate/ca")
    expected = boto(endpoint, "secretsmanager").get_secret_value(SecretId="devicegate/ca")
    got.pop("ResponseMetadata"), expected.pop("ResponseMetadata")
    assert got == expected
    mine, theirs = endpoint.requests
    assert mine["headers"]["X-Amz-Target"] == theirs["headers"]["X-Amz-Target"] == "secretsmanager.GetSecretValue"
    assert mine["headers"]["Content-Type"] == theirs["headers"]["Content-Type"]
    assert json.loads(mine["body"]) == json.loads(theirs["body"])
    assert resign_with_botocore(endpoint.url, mine, monkeypatch, "secretsmanager") == sent_auth(mine)


def _dynamodb_answer(doc, status=200, crc=True):
    data = json.dumps(doc).encode()
    headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "R1"}
    if crc:
        headers["x-amz-crc32"] = str(zlib.crc32(data))
    return status, headers, data


def test_responses_parse_as_boto3_parses_them(endpoint):
    item = {"pk": {"S": "CERT#1"}, "der": {"B": "AAH+/w=="}, "bs": {"BS": ["YQ==", "/w=="]}, "n": {"N": "12"},
            "m": {"M": {"b": {"B": "AQ=="}, "l": {"L": [{"B": "Ag=="}, {"S": "x"}, {"NULL": True}]}}},
            "ss": {"SS": ["a", "b"]}, "bool": {"BOOL": False}}
    for operation, doc in (("get_item", {"Item": item}),
                           ("query", {"Items": [item, item], "Count": 2, "ScannedCount": 2,
                                      "LastEvaluatedKey": {"pk": {"S": "x"}, "sk": {"B": "AQ=="}}}),
                           ("update_item", {"Attributes": item}), ("get_item", {})):
        endpoint.script = [_dynamodb_answer(doc)] * 2
        kwargs = {"TableName": "t", "Key": {"pk": {"S": "x"}}} if operation != "query" else {
            "TableName": "t", "KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "x"}}}
        if operation == "update_item":
            kwargs["UpdateExpression"] = "SET a = :a"
            kwargs["ExpressionAttributeValues"] = {":a": {"S": "1"}}
        got = getattr(client(endpoint), operation)(**kwargs)
        expected = getattr(boto(endpoint), operation)(**kwargs)
        got.pop("ResponseMetadata"), expected.pop("ResponseMetadata")
        assert got == expected, operation


@pytest.mark.parametrize("doc, status, code", [
    ({"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
      "message": "The conditional request failed"}, 400, "ConditionalCheckFailedException"),
    ({"__type": "com.amazon.coral.validate#ValidationException", "Message": "bad \u00e9"}, 400,
     "ValidationException"),
    ({"__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
      "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons "
                 "[None, ConditionalCheckFailed]",
      "CancellationReasons": [{"Code": "None"}, {"Code": "ConditionalCheckFailed", "Message": "failed",
                                                  "Item": {"der": {"B": "AQ=="}}}]}, 400,
     "TransactionCanceledException"),
    ({"__type": "ResourceNotFoundException", "message": "no table"}, 400, "ResourceNotFoundException"),
])
def test_errors_carry_the_code_message_and_reasons_boto3_gives(endpoint, doc, status, code):
    endpoint.script = [_dynamodb_answer(doc, status)] * 2
    with pytest.raises(awsjson.ServiceError) as mine:
        client(endpoint).put_item(TableName="t", Item={"pk": {"S": "x"}})
    with pytest.raises(ClientError) as theirs:
        boto(endpoint).put_item(TableName="t", Item={"pk": {"S": "x"}})
    assert mine.value.code == code == theirs.value.response["Error"]["Code"]
    assert mine.value.response["Error"] == theirs.value.response["Error"]
    assert mine.value.response.get("CancellationReasons") == theirs.value.response.get("CancellationReasons")
    assert len(endpoint.requests) == 2  # not retried


def test_store_maps_our_errors_exactly_as_botocore_errors(endpoint):
    cancelled = {"__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException", "Message": "x",
                 "CancellationReasons": [{"Code": "None"}, {"Code": "ConditionalCheckFailed"}]}
    conflict = {**cancelled, "CancellationReasons": [{"Code": "TransactionConflict"}]}
    checked = {"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException", "message": "x"}
    for low_level in (client(endpoint), boto(endpoint)):
        store = store_mod.Store("t", client=low_level)
        for doc, expected in ((checked, store_mod.AlreadyRecorded), (cancelled, store_mod.AlreadyRecorded),
                              (conflict, store_mod.StoreUnavailable),
                              ({"__type": "ValidationException", "message": "x"}, store_mod.StoreUnavailable)):
            endpoint.script = [_dynamodb_answer(doc, 400)]
            with pytest.raises(expected):
                store.remember_request("issuer", "id", dt.datetime.now(dt.timezone.utc))
    with pytest.raises(store_mod.StoreUnavailable, match="DynamoDB get_item failed: .*Connection"):
        store_mod.Store("t", client=awsjson.Client("dynamodb", "us-east-1", "http://127.0.0.1:9", env=ENV,
                                                   backoff_base=0.001)).get_certificate(1)
    with pytest.raises(ZeroDivisionError):  # a bug is not a store failure
        store_mod.Store("t", client=type("C", (), {"get_item": lambda self, **kw: 1 / 0})()).get_certificate(1)


# ------------------------------------------------------------------------------ retries, bounds, transport


def test_throttling_and_5xx_are_retried_at_most_three_attempts_in_all(endpoint):
    throttled = _dynamodb_answer({"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                                  "message": "slow down"}, 400)
    endpoint.script = [throttled, (500, {}, b"")]
    assert client(endpoint).get_item(TableName="t", Key={})["ResponseMetadata"]["RetryAttempts"] == 2
    assert len(endpoint.requests) == 3
    endpoint.requests.clear()
    endpoint.script = [throttled] * 5
    with pytest.raises(awsjson.ServiceError) as info:
        client(endpoint).get_item(TableName="t", Key={})
    assert info.value.code == "ProvisionedThroughputExceededException" and len(endpoint.requests) == 3
    endpoint.requests.clear()
    endpoint.script = [(503, {}, b"<html>busy</html>")] * 5
    with pytest.raises(awsjson.ServiceError) as info:
        client(endpoint, "secretsmanager").get_secret_value(SecretId="x")
    assert info.value.status == 503 and len(endpoint.requests) == 3


def test_a_bad_crc32_or_a_reset_is_retried_then_a_transport_error(endpoint):
    status, headers, data = _dynamodb_answer({"Item": {"pk": {"S": "x"}}})
    endpoint.script = [(status, {**headers, "x-amz-crc32": str(zlib.crc32(data) ^ 1)}, data), ("reset", {}, b""),
                       (status, headers, data)]
    assert client(endpoint).get_item(TableName="t", Key={})["Item"] == {"pk": {"S": "x"}}
    assert len(endpoint.requests) == 3
    endpoint.script = [(status, {**headers, "x-amz-crc32": "0"}, data)] * 3
    with pytest.raises(awsjson.TransportError, match="CRC32"):
        client(endpoint).get_item(TableName="t", Key={})


def test_connection_refused_and_slow_endpoints_are_bounded():
    import socket
    import time

    c = awsjson.Client("dynamodb", "us-east-1", "http://127.0.0.1:9", env=ENV, backoff_base=0.001)
    with pytest.raises(awsjson.TransportError):
        c.get_item(TableName="t", Key={})
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    try:
        c = awsjson.Client("dynamodb", "us-east-1", f"http://127.0.0.1:{silent.getsockname()[1]}", env=ENV,
                           read_timeout=0.2, backoff_base=0.001)
        started = time.monotonic()
        with pytest.raises(awsjson.TransportError, match="timed out"):
            c.get_item(TableName="t", Key={})
        assert time.monotonic() - started < 2
    finally:
        silent.close()


def test_defaults_are_the_store_bounds():
    c = awsjson.Client("dynamodb", "us-east-1", "https://dynamodb.us-east-1.amazonaws.com", env=ENV)
    assert (c.connect_timeout, c.read_timeout, c.max_attempts) == (2, 3, 3)
    worst = c.max_attempts * (c.connect_timeout + c.read_timeout) + sum(
        min(c.backoff_cap, c.backoff_base * 2 ** n) for n in range(c.max_attempts - 1))
    assert worst <= 20


def test_connections_are_kept_alive_and_shared_between_threads(endpoint):
    c = client(endpoint)
    for _ in range(5):
        c.get_item(TableName="t", Key={})
    assert c.connections_opened == 1 and len({r["connection"] for r in endpoint.requests}) == 1
    # a thread that comes later (a server's thread per client) takes the idle connection
    done = []
    t = threading.Thread(target=lambda: done.append(c.get_item(TableName="t", Key={})))
    t.start()
    t.join()
    assert done and c.connections_opened == 1
    # while one is in use, a concurrent request opens its own; both are kept afterwards
    busy = c._connection()
    c.get_item(TableName="t", Key={})
    assert c.connections_opened == 2
    c._release(busy)
    c.get_item(TableName="t", Key={})
    c.get_item(TableName="t", Key={})
    assert c.connections_opened == 2 and len({r["connection"] for r in endpoint.requests}) == 2
    c.close()
    c.get_item(TableName="t", Key={})
    assert c.connections_opened == 3


def test_idle_connections_are_bounded(endpoint):
    c = client(endpoint)
    held = [c._connection() for _ in range(c.MAX_IDLE + 3)]
    for conn in held:
        c._release(conn)
    assert len(c._idle) == c.MAX_IDLE
    assert sum(conn.sock is None for conn in held) == 3  # the ones beyond the bound were closed


def test_a_request_leaves_in_one_write(endpoint, monkeypatch):
    """Headers and body in one send (one segment, one TLS record); the endpoint still reads
    them as one well-formed request, and keep-alive goes on."""
    sends = []
    real_send = http11.Connection.send
    monkeypatch.setattr(http11.Connection, "send", lambda self, data: (sends.append(data), real_send(self, data))[1])
    c = client(endpoint)
    for n in (1, 2):
        c.put_item(TableName="t", Item={"pk": {"S": "x" * 3000 * n}})
        assert len(sends) == n and sends[-1].startswith(b"POST / HTTP/1.1\r\n") and sends[-1].endswith(b"x" * 100 + b'"}}}')
    assert [len(r["body"]) for r in endpoint.requests] == [int(r["headers"]["Content-Length"]) for r in endpoint.requests]
    assert json.loads(endpoint.requests[1]["body"])["Item"]["pk"]["S"] == "x" * 6000 and c.connections_opened == 1


def test_https_verifies_the_certificate_and_the_host_name(tmp_path, monkeypatch, env):
    from devicegate.local import pki

    ca_key = pki.new_key()
    ca = pki.self_signed_ca("awsjson test CA", ca_key)
    key = pki.new_key()
    (tmp_path / "ca.pem").write_text(pki.pem_cert(ca))
    chain = tmp_path / "server.pem"  # certificate and key in one file
    chain.write_text(pki.pem_cert(pki.server_certificate(ca, ca_key, key, ["127.0.0.1"])) + pki.pem_key(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(chain))
    e = Endpoint(context)
    try:
        with pytest.raises(awsjson.TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            awsjson.Client("dynamodb", "us-east-1", e.url, env=ENV, backoff_base=0.001).get_item(TableName="t", Key={})
        assert e.requests == []  # nothing (no signed request) went to an unverified peer
        monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "ca.pem"))
        assert awsjson.Client("dynamodb", "us-east-1", e.url, env=ENV).get_item(TableName="t", Key={}) == {
            "ResponseMetadata": {"HTTPStatusCode": 200, "RequestId": "", "RetryAttempts": 0}}
        wrong_name = e.url.replace("127.0.0.1", "localhost")  # the certificate names 127.0.0.1 only
        with pytest.raises(awsjson.TransportError, match="CERTIFICATE_VERIFY_FAILED|match"):
            awsjson.Client("dynamodb", "us-east-1", wrong_name, env=ENV, backoff_base=0.001).get_item(
                TableName="t", Key={})
    finally:
        e.close()


# ------------------------------------------------------------------------------ choosing a client


def test_endpoint_resolution_follows_the_documented_order():
    env = {"AWS_ENDPOINT_URL": "http://global:1", "AWS_ENDPOINT_URL_DYNAMODB": "http://ddb:2"}
    assert awsjson.endpoint_for("dynamodb", "us-east-1", env, "http://explicit:3") == "http://explicit:3"
    assert awsjson.endpoint_for("dynamodb", "us-east-1", env) == "http://ddb:2"
    assert awsjson.endpoint_for("secretsmanager", "us-east-1", env) == "http://global:1"
    assert awsjson.endpoint_for("secretsmanager", "us-east-1", {**env, "AWS_ENDPOINT_URL_SECRETS_MANAGER": "http://sm:4"}) \
        == "http://sm:4"
    ignored = {**env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}
    assert awsjson.endpoint_for("dynamodb", "eu-central-1", ignored) == "https://dynamodb.eu-central-1.amazonaws.com"
    assert awsjson.endpoint_for("secretsmanager", "cn-northwest-1", {}) == \
        "https://secretsmanager.cn-northwest-1.amazonaws.com.cn"
    assert awsjson.endpoint_for("dynamodb", "us-gov-west-1", {}) == "https://dynamodb.us-gov-west-1.amazonaws.com"
    assert awsjson.endpoint_for("dynamodb", "us-iso-east-1", {}) is None


def test_falls_back_to_boto3_without_environment_credentials(env, monkeypatch):
    assert isinstance(awsjson.client("dynamodb"), awsjson.Client)
    assert awsjson.client("dynamodb").endpoint == "https://dynamodb.us-east-1.amazonaws.com"
    for change in ({"AWS_ACCESS_KEY_ID": None}, {"AWS_SECRET_ACCESS_KEY": None},
                   {"AWS_USE_FIPS_ENDPOINT": "true"}, {"AWS_USE_DUALSTACK_ENDPOINT": "true"},
                   {"AWS_REGION": "us-isob-east-1"}, {"AWS_REGION": "not a/region", "AWS_DEFAULT_REGION": None}):
        with monkeypatch.context() as m:
            for k, v in change.items():
                m.delenv(k, raising=False) if v is None else m.setenv(k, v)
            assert awsjson.lightweight("dynamodb") is None, change
    # container credentials (no keys in the environment): boto3's chain, with the same bounds
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    fallback = awsjson.client("dynamodb", connect_timeout=2, read_timeout=3, max_attempts=3)
    assert not isinstance(fallback, awsjson.Client)
    assert fallback.meta.config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert (fallback.meta.config.connect_timeout, fallback.meta.config.read_timeout) == (2, 3)


def test_region_and_endpoint_are_validated():
    with pytest.raises(ValueError):
        awsjson.Client("dynamodb", "us-east-1.evil.example/", "https://x", env=ENV)
    for bad in ("ftp://x", "https://user:pw@x", "https://x/?q=1", "https://"):
        with pytest.raises(ValueError):
            awsjson.Client("dynamodb", "us-east-1", bad, env=ENV)


def test_the_store_and_secrets_use_it_when_credentials_are_in_the_environment(env):
    from devicegate import settings

    assert isinstance(store_mod.Store("t")._client, awsjson.Client)
    assert isinstance(settings.Secrets()._secrets_client(), awsjson.Client)
