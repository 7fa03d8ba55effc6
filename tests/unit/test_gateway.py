"""The local ALB stand-in, driven over real HTTPS and real mutual TLS."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from devicegate import alb
from devicegate.alb import Request, Response
from devicegate.local.gateway import Gateway, Route

from tests.unit.x509_fixtures import issue, make_ca, make_crl, write_pem


@dataclass
class Pki:
    tls_ca: Path
    server_cert: Path
    server_key: Path
    device_ca: Path
    client_cert: Path
    client_key: Path
    client_serial: int
    second_cert: Path
    second_key: Path
    second_serial: int
    other_cert: Path
    other_key: Path
    device_ca_key: object
    device_ca_cert: object


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    tls_key, tls_ca = make_ca("Local TLS CA")
    server_key, server = issue(tls_key, tls_ca, "localhost", server=True)
    device_key, device_ca = make_ca("Local SCEP CA")
    client_key, client = issue(device_key, device_ca, "1111-AAAA")
    second_key, second = issue(device_key, device_ca, "2222-BBBB")
    stranger_key, stranger_ca = make_ca("Somebody else's CA")
    other_key, other = issue(stranger_key, stranger_ca, "3333-CCCC")
    return Pki(
        tls_ca=write_pem(d / "tls-ca.pem", tls_ca),
        server_cert=write_pem(d / "server.pem", server),
        server_key=write_pem(d / "server.key", server_key),
        device_ca=write_pem(d / "device-ca.pem", device_ca),
        client_cert=write_pem(d / "client.pem", client),
        client_key=write_pem(d / "client.key", client_key),
        client_serial=client.serial_number,
        second_cert=write_pem(d / "second.pem", second),
        second_key=write_pem(d / "second.key", second_key),
        second_serial=second.serial_number,
        other_cert=write_pem(d / "other.pem", other),
        other_key=write_pem(d / "other.key", other_key),
        device_ca_key=device_key,
        device_ca_cert=device_ca,
    )


class Recorder:
    """Handlers that record every event they get, like a Lambda with a debugger attached."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def echo(self, event, context):
        self.events.append(event)
        request = Request.from_event(event)
        summary = {
            "function": context.function_name,
            "request_id": context.aws_request_id,
            "body": base64.b64encode(request.body).decode(),
        }
        return Response(200, json.dumps(summary), "application/json").to_event(request.multi_value)

    def binary(self, event, context):
        self.events.append(event)
        request = Request.from_event(event)
        return Response.binary(200, request.body[::-1], "application/x-pki-message").to_event(request.multi_value)

    def whoami(self, event, context):
        self.events.append(event)
        request = Request.from_event(event)
        cert = alb.client_cert(request)
        return Response.text(200, "none" if cert is None else cert.serial_hex).to_event(request.multi_value)

    def boom(self, event, context):
        self.events.append(event)
        raise RuntimeError("handler blew up")

    def malformed(self, event, context):
        self.events.append(event)
        return {"statusCode": "two hundred", "body": 5}

    def huge(self, event, context):
        self.events.append(event)  # body fits the limit, the JSON around it does not
        return {"statusCode": 200, "headers": {"x-pad": "p" * 100}, "body": "a" * alb.MAX_RESPONSE_BYTES}

    def routes(self) -> list[Route]:
        return [
            Route("public", "/echo", self.echo),
            Route("public", "/tree", self.echo, prefix=True),
            Route("public", "/binary", self.binary),
            Route("public", "/whoami", self.whoami),
            Route("public", "/boom", self.boom),
            Route("public", "/malformed", self.malformed),
            Route("public", "/huge", self.huge),
            Route("device", "/whoami", self.whoami),
            Route("device", "/saml/sso", self.echo),
        ]


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def gateway(pki, recorder):
    with Gateway(
        recorder.routes(),
        server_cert=pki.server_cert,
        server_key=pki.server_key,
        device_ca=pki.device_ca,
    ) as gw:
        yield gw


def client_context(pki: Pki, cert: Path | None = None, key: Path | None = None, *, max_tls12: bool = False):
    ctx = ssl.create_default_context(cafile=str(pki.tls_ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    if max_tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def request(port, ctx, method="GET", target="/echo", body=None, headers=None):
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()  # headers: case-insensitive
    finally:
        conn.close()


def raw_exchange(port, ctx, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            tls.sendall(data)
            chunks = []
            while chunk := tls.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)


# ------------------------------------------------------------------ public listener


def test_request_arrives_as_an_alb_multi_value_event(gateway, pki, recorder):
    conn = http.client.HTTPSConnection("127.0.0.1", gateway.public_port, context=client_context(pki), timeout=10)
    conn.putrequest("GET", "/echo?SAMLRequest=a%2Bb%2F%3D&RelayState=x+y&flag&k=1&k=2")
    conn.putheader("X-Custom", "one")
    conn.putheader("X-Custom", "two")
    conn.putheader("Accept", "text/html")
    conn.endheaders()
    response = conn.getresponse()
    summary = json.loads(response.read())
    conn.close()
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("Cache-Control") == "no-store"

    event = recorder.events[-1]
    assert event["requestContext"]["elb"]["targetGroupArn"].startswith(
        "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/devicegate-echo/"
    )
    assert event["httpMethod"] == "GET"
    assert event["path"] == "/echo"
    assert event["multiValueQueryStringParameters"] == {
        "SAMLRequest": ["a%2Bb%2F%3D"],  # still encoded, as ALB does
        "RelayState": ["x+y"],
        "flag": [""],
        "k": ["1", "2"],
    }
    headers = event["multiValueHeaders"]
    assert all(name == name.lower() for name in headers)
    assert headers["x-custom"] == ["one", "two"]
    assert headers["accept"] == ["text/html"]
    assert headers["host"] == [f"127.0.0.1:{gateway.public_port}"]
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["https"]
    assert headers["x-forwarded-port"] == [str(gateway.public_port)]
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24}", headers["x-amzn-trace-id"][0])
    assert event["body"] == "" and event["isBase64Encoded"] is False
    assert "headers" not in event and "queryStringParameters" not in event

    request_ = Request.from_event(event)
    assert request_.query_value("SAMLRequest") == "a+b/="
    assert request_.query_value("RelayState") == "x+y"
    assert summary["function"] == "devicegate-echo" and summary["request_id"]


def test_bodies_are_encoded_like_alb(gateway, pki, recorder):
    ctx = client_context(pki)
    status, _, _ = request(gateway.public_port, ctx, "POST", "/echo", b'{"a": 1}', {"Content-Type": "application/json"})
    assert status == 200
    assert recorder.events[-1]["body"] == '{"a": 1}' and recorder.events[-1]["isBase64Encoded"] is False

    payload = bytes(range(256))
    status, _, body = request(
        gateway.public_port, ctx, "POST", "/echo", payload, {"Content-Type": "application/x-pki-message"}
    )
    assert status == 200
    assert recorder.events[-1]["isBase64Encoded"] is True
    assert base64.b64decode(recorder.events[-1]["body"]) == payload
    assert base64.b64decode(json.loads(body)["body"]) == payload


def test_binary_response_round_trip(gateway, pki):
    payload = bytes(range(256)) * 16
    status, headers, body = request(
        gateway.public_port, client_context(pki), "POST", "/binary", payload,
        {"Content-Type": "application/octet-stream"},
    )
    assert status == 200
    assert headers["Content-Type"] == "application/x-pki-message"
    assert body == payload[::-1]


def test_spoofed_alb_headers_are_stripped(gateway, pki, recorder):
    spoof = {
        "X-Amzn-Mtls-Clientcert-Leaf": "-----BEGIN%20CERTIFICATE-----%0Aevil%0A-----END%20CERTIFICATE-----%0A",
        "X-Amzn-Mtls-Clientcert-Serial-Number": "01",
        "X-Amzn-Mtls-Clientcert": "chain",
        "X-Forwarded-For": "198.51.100.66",
        "X-Forwarded-Proto": "http",
        "X-Amzn-Trace-Id": "Root=1-00000000-000000000000000000000000",
    }
    status, _, body = request(gateway.public_port, client_context(pki), "GET", "/whoami", headers=spoof)
    assert (status, body) == (200, b"none")
    headers = recorder.events[-1]["multiValueHeaders"]
    assert not any(name.startswith("x-amzn-mtls") for name in headers)
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["https"]
    assert headers["x-amzn-trace-id"] != [spoof["X-Amzn-Trace-Id"]]


def test_unknown_path_is_a_fixed_404(gateway, pki, recorder):
    before = len(recorder.events)
    ctx = client_context(pki)
    assert request(gateway.public_port, ctx, "GET", "/nope")[0] == 404
    assert request(gateway.public_port, ctx, "GET", "/echo/extra")[0] == 404  # exact match only
    assert request(gateway.public_port, ctx, "GET", "/saml/sso")[0] == 404  # device-only route
    status, headers, body = request(gateway.public_port, ctx, "GET", "/nope")
    assert (status, body) == (404, b"Not Found") and headers["Content-Type"].startswith("text/plain")
    assert len(recorder.events) == before
    assert request(gateway.public_port, ctx, "GET", "/tree/a/b?x=1")[0] == 200  # prefix route
    assert recorder.events[-1]["path"] == "/tree/a/b"


def test_handler_failures_are_502_and_the_server_survives(gateway, pki, caplog):
    ctx = client_context(pki)
    status, _, body = request(gateway.public_port, ctx, "GET", "/boom")
    assert (status, body) == (502, b"502 Bad Gateway")
    assert request(gateway.public_port, ctx, "GET", "/malformed")[0] == 502
    assert request(gateway.public_port, ctx, "GET", "/echo")[0] == 200
    assert "handler blew up" in caplog.text and "Traceback" in caplog.text  # logged for the developer


def test_oversize_body_is_413_before_any_handler(gateway, pki, recorder):
    before = len(recorder.events)
    ctx = client_context(pki)
    reply = raw_exchange(
        gateway.public_port,
        ctx,
        # Far too big to be worth draining: answered at once, body never read.
        f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {100 * alb.MAX_BODY_BYTES}\r\n\r\n".encode(),
    )
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in reply
    status, _, _ = request(gateway.public_port, ctx, "POST", "/echo", b"a" * (alb.MAX_BODY_BYTES + 1))
    assert status == 413
    assert len(recorder.events) == before
    assert request(gateway.public_port, ctx, "POST", "/whoami", b"a" * alb.MAX_BODY_BYTES)[0] == 200
    assert len(recorder.events[-1]["body"]) == alb.MAX_BODY_BYTES // 3 * 4 + 4  # base64 of exactly 1 MiB


def test_oversize_response_is_502(gateway, pki):
    # ALB's 1 MB applies to the response JSON, so a 900 KB binary body (1.2 MB base64) is too big.
    ctx = client_context(pki)
    assert request(gateway.public_port, ctx, "POST", "/binary", b"a" * 700_000)[0] == 200
    assert request(gateway.public_port, ctx, "POST", "/binary", b"a" * 900_000)[0] == 502
    assert request(gateway.public_port, ctx, "GET", "/huge")[0] == 502


def test_chunked_body_is_411(gateway, pki):
    reply = raw_exchange(
        gateway.public_port,
        client_context(pki),
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 411 ")


def test_only_get_post_head(gateway, pki):
    ctx = client_context(pki)
    status, headers, _ = request(gateway.public_port, ctx, "PUT", "/echo", b"x")
    assert status == 405 and headers["Allow"] == "GET, POST, HEAD"
    assert request(gateway.public_port, ctx, "BREW", "/echo")[0] == 405
    status, headers, body = request(gateway.public_port, ctx, "HEAD", "/echo")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_keep_alive(gateway, pki):
    conn = http.client.HTTPSConnection("127.0.0.1", gateway.public_port, context=client_context(pki), timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/echo")
            response = conn.getresponse()
            response.read()
            assert response.status == 200 and not response.will_close
        first_socket = conn.sock
        conn.request("GET", "/nope")
        conn.getresponse().read()
        assert conn.sock is first_socket  # same TLS connection all along
    finally:
        conn.close()


def test_a_reply_is_one_write_with_no_nagle_delay(gateway, pki):
    """Headers and body leave in one TLS record (one recv() returns both), for handler replies
    and the gateway's own; the accepted socket has TCP_NODELAY (a second small write would
    otherwise wait for the client's delayed ACK)."""
    for target, body in (("/echo", b'"function": "devicegate-echo"'), ("/nope", b"Not Found")):
        with socket.create_connection(("127.0.0.1", gateway.public_port), timeout=10) as sock:
            with client_context(pki).wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                tls.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                first = tls.recv(65536)
        head, _, rest = first.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *([0-9]+)", head).group(1))
        assert len(rest) == length and body in rest, first[:200]
    server = gateway._servers["public"]
    accepted: list[int] = []
    original = server.get_request

    def get_request():
        conn, address = original()
        accepted.append(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return conn, address

    server.get_request = get_request
    try:
        request(gateway.public_port, client_context(pki), target="/echo")
    finally:
        del server.get_request
    assert accepted and all(accepted), accepted


def test_report_lines_give_each_invocation_its_duration_and_cpu(gateway, pki, caplog):
    from devicegate.local import gateway as gateway_mod

    assert gateway_mod.report_log.level == logging.WARNING  # off by default
    gateway_mod.report_log.setLevel(logging.INFO)
    try:
        with caplog.at_level(logging.INFO, logger="devicegate.lambda.report"):
            request(gateway.public_port, client_context(pki), target="/echo")
            request(gateway.public_port, client_context(pki), target="/nope")  # no handler: no REPORT
    finally:
        gateway_mod.report_log.setLevel(logging.WARNING)
    reports = [r.getMessage() for r in caplog.records if r.name == "devicegate.lambda.report"]
    assert len(reports) == 1, reports
    m = re.fullmatch(r"REPORT RequestId: [0-9a-f-]{36} Function: (\S+) Duration: ([0-9.]+) ms CPU: ([0-9.]+) ms",
                     reports[0])
    assert m and m[1].startswith("devicegate-") and float(m[2]) > 0 and float(m[3]) >= 0, reports


# ------------------------------------------------------------------ device listener


def test_device_listener_passes_the_verified_certificate(gateway, pki, recorder):
    ctx = client_context(pki, pki.client_cert, pki.client_key)
    spoof = {"X-Amzn-Mtls-Clientcert-Serial-Number": "01", "X-Amzn-Mtls-Clientcert-Leaf": "garbage"}
    status, _, body = request(gateway.device_port, ctx, "GET", "/whoami", headers=spoof)
    assert status == 200
    assert int(body, 16) == pki.client_serial
    headers = recorder.events[-1]["multiValueHeaders"]
    assert headers["x-amzn-mtls-clientcert-serial-number"] == [format(pki.client_serial, "X")]
    assert len(headers["x-amzn-mtls-clientcert-leaf"]) == 1  # the client's copy is gone
    assert headers["x-amzn-mtls-clientcert-validity"][0].startswith("NotBefore=")
    assert "CN=1111-AAAA" in headers["x-amzn-mtls-clientcert-subject"][0]
    assert "CN=Local SCEP CA" in headers["x-amzn-mtls-clientcert-issuer"][0]
    assert headers["x-forwarded-port"] == [str(gateway.device_port)]


def test_device_listener_has_its_own_routes(gateway, pki, recorder):
    ctx = client_context(pki, pki.client_cert, pki.client_key)
    assert request(gateway.device_port, ctx, "GET", "/saml/sso?SAMLRequest=x")[0] == 200
    assert recorder.events[-1]["path"] == "/saml/sso"
    assert request(gateway.device_port, ctx, "GET", "/echo")[0] == 404


def test_no_client_certificate_fails_the_handshake(gateway, pki, capfd, caplog):
    # TLS 1.2: the server's rejection arrives inside the handshake.
    with pytest.raises(ssl.SSLError):
        request(gateway.device_port, client_context(pki, max_tls12=True), "GET", "/whoami")
    # TLS 1.3: the client finishes first and sees the alert (or a reset) on first use.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        request(gateway.device_port, client_context(pki), "GET", "/whoami")
    # The server shrugs it off: no traceback, and the next good client is served.
    good = client_context(pki, pki.client_cert, pki.client_key)
    assert request(gateway.device_port, good, "GET", "/whoami")[0] == 200
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_certificate_from_another_ca_fails(gateway, pki):
    tls12 = client_context(pki, pki.other_cert, pki.other_key, max_tls12=True)
    with pytest.raises(ssl.SSLError):
        request(gateway.device_port, tls12, "GET", "/whoami")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        request(gateway.device_port, client_context(pki, pki.other_cert, pki.other_key), "GET", "/whoami")


def test_crl_and_reload_device_trust(pki, recorder, tmp_path):
    crl = write_pem(tmp_path / "crl.pem", make_crl(pki.device_ca_key, pki.device_ca_cert, []))
    gw = Gateway(
        recorder.routes(),
        server_cert=pki.server_cert,
        server_key=pki.server_key,
        device_ca=pki.device_ca,
        device_crl=crl,
    )
    with gw:
        first = client_context(pki, pki.client_cert, pki.client_key)
        second = client_context(pki, pki.second_cert, pki.second_key)
        assert request(gw.device_port, first, "GET", "/whoami")[0] == 200

        write_pem(crl, make_crl(pki.device_ca_key, pki.device_ca_cert, [pki.client_serial]))
        assert request(gw.device_port, first, "GET", "/whoami")[0] == 200  # not reloaded yet
        gw.reload_device_trust()
        with pytest.raises((ssl.SSLError, ConnectionError)):
            request(gw.device_port, first, "GET", "/whoami")
        status, _, body = request(gw.device_port, second, "GET", "/whoami")
        assert status == 200 and int(body, 16) == pki.second_serial


def test_stop_closes_everything(pki, recorder):
    gw = Gateway(recorder.routes(), server_cert=pki.server_cert, server_key=pki.server_key, device_ca=pki.device_ca)
    gw.start()
    port = gw.public_port
    idle = http.client.HTTPSConnection("127.0.0.1", port, context=client_context(pki), timeout=10)
    idle.request("GET", "/echo")
    idle.getresponse().read()  # a keep-alive connection now sits idle on the server
    started = time.monotonic()
    gw.stop()
    assert time.monotonic() - started < 3
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with pytest.raises((OSError, http.client.HTTPException)):
        idle.request("GET", "/echo")
        idle.getresponse().read()
    idle.close()


def test_bad_configuration_fails_at_construction(pki, recorder, tmp_path):
    with pytest.raises(ValueError, match="listener"):
        Route("private", "/x", recorder.echo)
    with pytest.raises(ValueError, match="duplicate"):
        Gateway(
            [Route("public", "/x", recorder.echo), Route("public", "/x", recorder.echo)],
            server_cert=pki.server_cert, server_key=pki.server_key, device_ca=pki.device_ca,
        )
    (tmp_path / "crl.der").write_bytes(b"\x30\x00")
    with pytest.raises(ValueError, match="PEM CRL"):
        Gateway(
            [], server_cert=pki.server_cert, server_key=pki.server_key, device_ca=pki.device_ca,
            device_crl=tmp_path / "crl.der",
        )
