"""The plain-HTTP origin behind a self-hosted proxy: what it believes, and what it refuses."""

from __future__ import annotations

import base64
import http.client
import json

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from devicegate import alb, health, settings
from devicegate.alb import MtlsHeaderError, Request
from devicegate.local.gateway import Route
from devicegate.local.origin import Origin, OriginError, parse_config

from tests.unit.x509_fixtures import issue, make_ca

OPTIONS = dict(listen="127.0.0.1:0", device_url="https://okta.example.com", serial_header="X-SSL-Client-Serial",
               serial_format="decimal", leaf_header="X-SSL-Client-Cert")


@pytest.fixture(scope="module")
def leaf():
    ca_key, ca = make_ca("Test SCEP CA")
    return issue(ca_key, ca, "0000-AAAA")[1]


# ------------------------------------------------------------------------- options


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "10.1.2.3:8080", "[::]:8080"])
def test_a_non_loopback_address_needs_the_explicit_flag(listen):
    with pytest.raises(OriginError, match="not a loopback address"):
        parse_config(**{**OPTIONS, "listen": listen})
    assert parse_config(**{**OPTIONS, "listen": listen}, allow_non_loopback=True).port == 8080


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "127.0.0.2:1"])
def test_loopback_addresses_are_accepted(listen):
    assert parse_config(**{**OPTIONS, "listen": listen}).host in ("127.0.0.1", "localhost", "::1", "127.0.0.2")


@pytest.mark.parametrize("changes", [
    {"listen": "8080"}, {"listen": "example.com:8080"}, {"listen": "127.0.0.1:99999"},
    {"device_url": "http://okta.example.com"}, {"device_url": "https://okta.example.com/saml/sso"},
    {"serial_format": "octal"},
    {"serial_header": "Host"}, {"serial_header": "X-Forwarded-For"}, {"serial_header": "X-Amzn-Trace-Id"},
    {"leaf_header": "X-SSL-Client-Serial"},
])
def test_bad_options_are_refused(changes):
    with pytest.raises(OriginError):
        parse_config(**{**OPTIONS, **changes})


def test_config_normalises_names():
    config = parse_config(**{**OPTIONS, "device_url": "https://okta.example.com:8443/"})
    assert config.device_url == "https://okta.example.com:8443" and config.forwarded_port == "8443"
    assert config.certificate_headers == {"x-ssl-client-serial", "x-ssl-client-cert"}


# ------------------------------------------------------------------------- requests


@pytest.fixture
def origin():
    events = []

    def handler(event, context):
        events.append(event)
        return alb.Response(200, "seen\n").to_event(multi_value=True)

    routes = [Route("device", "/healthz", handler), Route("public", "/scep", handler)]
    server = Origin(routes, parse_config(**OPTIONS)).start()
    server.events = events
    yield server
    server.stop()


def send(origin, path, headers):
    port = int(origin.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_only_the_configured_certificate_headers_reach_the_handler(origin):
    status, _ = send(origin, "/healthz", [
        ("X-SSL-Client-Serial", "10"), ("X-SSL-Client-Cert", "abc"),
        ("X-Amzn-Mtls-Clientcert-Serial-Number", "0B"), ("X-Amzn-Mtls-Clientcert-Leaf", "x"),
        ("X-Amzn-Mtls-Clientcert-Subject", "CN=forged"), ("X-Amzn-Tls-Version", "x"),
        ("X-Amzn-Trace-Id", "Root=forged"), ("X-Forwarded-Proto", "http"), ("X-Forwarded-For", "6.6.6.6"),
    ])
    assert status == 200
    headers = origin.events[-1]["multiValueHeaders"]
    assert headers["x-ssl-client-serial"] == ["10"] and headers["x-ssl-client-cert"] == ["abc"]
    assert not [name for name in headers if name.startswith("x-amzn-mtls") or name.startswith("x-amzn-tls")]
    assert headers["x-forwarded-proto"] == ["https"] and headers["x-forwarded-port"] == ["443"]
    assert headers["x-forwarded-for"] == ["6.6.6.6"]  # the proxy's, which it sets itself
    assert headers["x-amzn-trace-id"] != ["Root=forged"]


def test_no_serial_is_refused_before_any_handler(origin):
    assert send(origin, "/healthz", [("X-SSL-Client-Cert", "abc")])[0] == 400
    assert send(origin, "/healthz", [("X-SSL-Client-Serial", " ")])[0] == 400
    assert origin.events == []


def test_only_device_routes_are_served(origin):
    assert send(origin, "/scep", [("X-SSL-Client-Serial", "10")])[0] == 404
    assert send(origin, "/other", [("X-SSL-Client-Serial", "10")])[0] == 404
    assert origin.events == []


def test_an_alb_header_is_believed_only_when_configured():
    events = []
    config = parse_config(**{**OPTIONS, "serial_header": "X-Amzn-Mtls-Clientcert-Serial-Number",
                             "serial_format": "hex", "leaf_header": None})
    server = Origin([Route("device", "/healthz", lambda e, c: events.append(e) or
                           alb.Response(200).to_event(True))], config).start()
    try:
        send(server, "/healthz", [("X-Amzn-Mtls-Clientcert-Serial-Number", "0A"),
                                  ("X-Amzn-Mtls-Clientcert-Leaf", "x")])
    finally:
        server.stop()
    headers = events[-1]["multiValueHeaders"]
    assert headers["x-amzn-mtls-clientcert-serial-number"] == ["0A"]
    assert "x-amzn-mtls-clientcert-leaf" not in headers


# ------------------------------------------------------------------------- handlers


def mtls_request(headers: dict[str, str]) -> Request:
    return Request.from_event({"httpMethod": "GET", "path": "/healthz",
                               "multiValueHeaders": {k.lower(): [v] for k, v in headers.items()}})


def test_a_base64_der_leaf_is_read_like_a_pem_one(leaf):
    der = base64.b64encode(leaf.public_bytes(Encoding.DER)).decode()
    got = alb.client_cert(mtls_request({"x-c": der, "x-s": str(leaf.serial_number)}),
                          serial_header="x-s", serial_format="decimal", leaf_header="x-c")
    assert got.serial == leaf.serial_number and got.leaf == leaf
    with pytest.raises(MtlsHeaderError):
        alb.client_cert(mtls_request({"x-c": der[:-8]}), leaf_header="x-c")


def test_certificate_header_settings():
    assert settings.cert_headers_from_env({}) == {"serial_header": alb.SERIAL_HEADER, "serial_format": "hex",
                                                  "leaf_header": alb.LEAF_HEADER}
    env = {"DEVICEGATE_SERIAL_HEADER": "X-SSL-Client-Serial", "DEVICEGATE_SERIAL_FORMAT": "decimal",
           "DEVICEGATE_LEAF_HEADER": "X-SSL-Client-Cert"}
    assert settings.cert_headers_from_env(env) == {"serial_header": "x-ssl-client-serial",
                                                   "serial_format": "decimal", "leaf_header": "x-ssl-client-cert"}
    with pytest.raises(settings.ConfigError, match="DEVICEGATE_LEAF_HEADER"):
        settings.cert_headers_from_env({"DEVICEGATE_LEAF_HEADER": "x: y"})


def test_healthz_reads_the_configured_headers(leaf, monkeypatch):
    monkeypatch.setenv("DEVICEGATE_SERIAL_HEADER", "X-SSL-Client-Serial")
    monkeypatch.setenv("DEVICEGATE_SERIAL_FORMAT", "decimal")
    response = health.handle(mtls_request({"x-ssl-client-serial": str(leaf.serial_number)}))
    assert int(json.loads(response.body)["client_certificate"]["serial"], 16) == leaf.serial_number
    wrong = health.handle(mtls_request({"x-ssl-client-serial": format(leaf.serial_number, "X") + "Z"}))
    assert wrong.status == 400
