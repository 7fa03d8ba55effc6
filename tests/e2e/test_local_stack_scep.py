"""The local stack as a user runs it: a real process, real HTTPS, real mTLS, moto over HTTP."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.parse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from devicegate.local import pki
from devicegate.scep import protocol
from devicegate.scep.protocol import FailInfo, PkiStatus
from tests import scep_helpers as h
from tests.stack_helpers import StackProcess, fleet_host, request, running_stack, tls_context


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from running_stack(tmp_path_factory, "stack")


@pytest.fixture(scope="module")
def public(stack):
    return tls_context(stack.endpoints["tls_ca"])


def scep_ca(stack) -> x509.Certificate:
    return x509.load_pem_x509_certificate(stack.endpoints["scep_ca"].encode())


def post_pki(stack, ctx, message: bytes) -> bytes:
    status, headers, body = request(stack.endpoints["scep_url"] + "?operation=PKIOperation", ctx, "POST", message,
                                    {"Content-Type": "application/x-pki-message"})
    assert status == 200 and headers["content-type"] == "application/x-pki-message", body[:200]
    return body


def enroll(stack, ctx, *, host=None, key=None, challenge=None, **kwargs):
    key = key or h.key()
    host = fleet_host(stack, host, policies=(), sync=False)  # only hosts Fleet knows may enroll
    ca = scep_ca(stack)
    csr = h.make_csr(key, host_uuid=host, challenge=challenge or stack.endpoints["scep_challenge"])
    message, nonce, _, _ = h.pkcs_req(ca, private_key=key, csr=csr, **kwargs)
    reply = post_pki(stack, ctx, message)
    return protocol.parse_cert_rep(reply, ca_cert=ca, requester_key=key), key, host, message


def test_endpoints_contract(stack):
    e = stack.endpoints
    for name in ("public_url", "device_url", "scep_url", "metadata_url", "sso_url", "tls_ca", "scep_ca", "idp_cert",
                 "scep_challenge", "okta", "dynamodb", "fleet"):
        assert name in e, name
    assert set(e["okta"]) >= {"audience", "acs_url", "sp_cert", "sp_key"}
    assert set(e["dynamodb"]) == {"endpoint", "table"} and set(e["fleet"]) >= {"mode", "url"}
    assert e["public_url"].startswith("https://127.0.0.1:") and e["device_url"].startswith("https://127.0.0.1:")
    assert (stack.state_dir / "endpoints.json").stat().st_mode & 0o077 == 0


def test_get_ca_caps_and_cert(stack, public):
    for suffix in ("", "&message=CAIdentifier", "&message=devicegate%20CA"):
        status, headers, body = request(stack.endpoints["scep_url"] + "?operation=GetCACaps" + suffix, public)
        assert status == 200 and headers["content-type"].startswith("text/plain")
        assert set(body.decode().split()) == {"POSTPKIOperation", "SHA-256", "AES", "SCEPStandard", "Renewal"}
        status, headers, body = request(stack.endpoints["scep_url"] + "?operation=GetCACert" + suffix, public)
        assert status == 200 and headers["content-type"] == "application/x-x509-ca-cert"
        assert x509.load_der_x509_certificate(body) == scep_ca(stack)


def test_enroll_by_post(stack, public):
    rep, _, host, _ = enroll(stack, public)
    assert rep.status is PkiStatus.SUCCESS, rep.fail_text
    cert = rep.certificates[0]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"urn:device:apple:uuid:{host}"]


def test_builtin_client_enrolls_over_one_kept_alive_connection(stack, public, tmp_path, monkeypatch):
    """devicegate's own client sends GetCACert and PKIOperation over one TLS connection (as
    scepclient does for its run), and replaces a connection the server closed while idle."""
    from devicegate.local import tools

    sessions = []
    real_exit = tools.HttpsSession.__exit__
    monkeypatch.setattr(tools.HttpsSession, "__exit__", lambda self, *exc: (sessions.append(self), real_exit(self, *exc))[1])
    host = fleet_host(stack, policies=(), sync=False)
    sessions.clear()
    enrolled = tools.enroll(stack.state_dir, tmp_path / "one", host)
    assert enrolled.host_uuid == host and [s.connections for s in sessions] == [1]

    with tools.HttpsSession(public) as session:  # the server hangs up an idle connection: one new one
        assert session.request(stack.endpoints["public_url"] + "/healthz")[0] == 200
        session.conn.sock.shutdown(__import__("socket").SHUT_RDWR)
        assert session.request(stack.endpoints["public_url"] + "/healthz")[0] == 200
        assert session.connections == 2


@pytest.mark.parametrize("style", ["percent-encoded", "macos-only-equals-escaped", "line-wrapped"])
def test_enroll_by_get(stack, public, style):
    key = h.key()
    ca = scep_ca(stack)
    csr = h.make_csr(key, host_uuid=fleet_host(stack, policies=(), sync=False), challenge=stack.endpoints["scep_challenge"])
    # find a message whose base64 holds all of + / = (the characters clients escape differently)
    for _ in range(50):
        message, nonce, _, _ = h.pkcs_req(ca, private_key=key, csr=csr)
        b64 = base64.b64encode(message).decode()
        if "+" in b64 and "/" in b64 and b64.endswith("="):
            break
    if style == "percent-encoded":
        query = urllib.parse.quote(b64, safe="")
    elif style == "macos-only-equals-escaped":
        query = b64.replace("=", "%3D")
    else:
        query = urllib.parse.quote("\n".join(b64[i:i + 64] for i in range(0, len(b64), 64)), safe="")
    raw = urllib.parse.urlsplit(stack.endpoints["scep_url"]).path + "?operation=PKIOperation&message=" + query
    status, headers, body = request(stack.endpoints["scep_url"], public, raw_path=raw)
    assert status == 200, body
    rep = protocol.parse_cert_rep(body, ca_cert=ca, requester_key=key)
    assert rep.status is PkiStatus.SUCCESS and rep.recipient_nonce == nonce


def test_host_unknown_to_fleet_is_refused(stack, public):
    key = h.key()
    ca = scep_ca(stack)
    csr = h.make_csr(key, host_uuid=h.new_uuid(), challenge=stack.endpoints["scep_challenge"])
    rep = protocol.parse_cert_rep(post_pki(stack, public, h.pkcs_req(ca, private_key=key, csr=csr)[0]), ca_cert=ca,
                                  requester_key=key)
    assert rep.status is PkiStatus.FAILURE and "not known to Fleet" in rep.fail_text


def test_wrong_challenge_is_a_failure_not_an_error(stack, public):
    rep, _, _, _ = enroll(stack, public, challenge="not-the-challenge")
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_REQUEST and "challenge" in rep.fail_text


@pytest.mark.parametrize("query,body,method,expected", [
    ("operation=PKIOperation", b"garbage", "POST", 400),
    ("operation=PKIOperation&message=%%%", None, "GET", 400),
    ("operation=PKIOperation&message=AAAA", None, "GET", 400),
    ("operation=PKIOperation", None, "GET", 400),
    ("operation=Nope", None, "GET", 400),
    ("", None, "GET", 400),
    ("operation=PKIOperation", b"\x30\x82" + b"\x00" * (70 * 1024), "POST", 413),
])
def test_bad_http_requests_get_a_reason(stack, public, query, body, method, expected):
    status, headers, text = request(stack.endpoints["scep_url"] + (f"?{query}" if query else ""), public, method, body)
    assert status == expected, text
    assert headers["content-type"].startswith("text/plain") and len(text) > 10


def test_gateway_limits_and_404(stack, public):
    status, _, _ = request(stack.endpoints["public_url"] + "/nothing-here", public)
    assert status == 404
    status, _, _ = request(stack.endpoints["scep_url"] + "?operation=PKIOperation", public, "POST", b"\x00" * (2 * 1024 * 1024))
    assert status == 413


def _write_pair(tmp_path, cert: x509.Certificate, key):
    return pki.pem_cert(cert), pki.pem_key(key)


def test_issued_certificate_completes_mtls_and_handler_sees_its_serial(stack, public):
    rep, key, host, _ = enroll(stack, public)
    cert = rep.certificates[0]
    ctx = tls_context(stack.endpoints["tls_ca"], pki.pem_cert(cert), pki.pem_key(key))
    status, headers, body = request(stack.endpoints["device_url"] + "/healthz", ctx)
    assert status == 200, body
    seen = json.loads(body)["client_certificate"]
    assert int(seen["serial"], 16) == cert.serial_number
    assert seen["host_uuid"] == host


def test_device_listener_refuses_no_certificate_and_foreign_ca(stack):
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        request(stack.endpoints["device_url"] + "/healthz", tls_context(stack.endpoints["tls_ca"]))
    other_key = h.key(slot=7)
    other_ca = pki.self_signed_ca("impostor CA", other_key, scep=True)
    leaf_key = h.key(slot=8)
    csr = x509.load_der_x509_csr(h.make_csr(leaf_key, host_uuid=h.new_uuid()))
    from datetime import datetime, timezone

    from devicegate.scep.authority import build_certificate, inspect_csr
    facts = inspect_csr(csr.public_bytes(Encoding.DER), accept_cn_uuid=False)
    forged = build_certificate(facts, facts.host_uuid, ca_cert=other_ca, ca_key=other_key, validity_days=30,
                               now=datetime.now(timezone.utc), serial=12345)
    ctx = tls_context(stack.endpoints["tls_ca"], pki.pem_cert(forged), pki.pem_key(leaf_key))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        request(stack.endpoints["device_url"] + "/healthz", ctx)


def test_spoofed_mtls_headers_on_public_listener_are_dropped(stack, public):
    status, _, body = request(stack.endpoints["public_url"] + "/healthz", public,
                              headers={"X-Amzn-Mtls-Clientcert-Serial-Number": "01"})
    assert status == 200 and body == b"ok\n"


def test_restart_keeps_ca_and_certificates(tmp_path):
    proc = StackProcess(tmp_path / "state")
    first = proc.start()
    ctx = tls_context(first["tls_ca"])
    key = h.key()
    ca = x509.load_pem_x509_certificate(first["scep_ca"].encode())
    csr = h.make_csr(key, host_uuid=fleet_host(proc, policies=(), sync=False), challenge=first["scep_challenge"])
    message, _, _, signer = h.pkcs_req(ca, private_key=key, csr=csr, transaction_id="survives-restart")
    issued = protocol.parse_cert_rep(post_pki(proc, ctx, message), ca_cert=ca, requester_key=key).certificates[0]
    assert proc.stop() == 0
    assert not (tmp_path / "state" / "endpoints.json").exists(), "endpoints.json is removed on shutdown"

    second = proc.start()
    try:
        assert second["scep_ca"] == first["scep_ca"] and second["scep_challenge"] == first["scep_challenge"]
        ctx = tls_context(second["tls_ca"])
        retry, _, _, _ = h.pkcs_req(ca, private_key=key, csr=csr, transaction_id="survives-restart", signer_cert=signer)
        again = protocol.parse_cert_rep(post_pki(proc, ctx, retry), ca_cert=ca, requester_key=key)
        assert again.status is PkiStatus.SUCCESS
        assert again.certificates[0].serial_number == issued.serial_number, "same certificate after restart"
        mtls = tls_context(second["tls_ca"], pki.pem_cert(issued), pki.pem_key(key))
        status, _, _ = request(second["device_url"] + "/healthz", mtls)
        assert status == 200
    finally:
        assert proc.stop() == 0
