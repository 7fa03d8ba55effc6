"""Self-check of the Chromium harness (tests/interop/browser.py) against a local mTLS server.

The server is stdlib ``http.server`` behind ``ssl`` with a *required* client certificate and
throw-away CAs made with ``cryptography``; it serves pages rendered by devicegate.saml.pages and
records what an ACS receives. This proves that the harness gets a real browser through a
client-certificate handshake with no prompts and no ``--ignore-certificate-errors``, follows an
auto-POST, and can turn JavaScript off -- so later failures against the IdP are about the IdP.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import ipaddress
import os
import ssl
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devicegate.compliance.decision import BLOCK, Decision, PolicyResult, Reason
from devicegate.saml import pages

try:
    from tests.interop import browser as harness
except ImportError:  # pragma: no cover - pytest put tests/interop itself on sys.path
    import browser as harness

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(bool(harness.missing()), reason=f"not installed: {', '.join(harness.missing())}"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the managed-policy directory /etc/chromium needs root"),
]

TLS_CA_CN = "devicegate selfcheck TLS CA"
CLIENT_CA_CN = "devicegate selfcheck device CA"
# Hostile on purpose: quotes, ampersands, angle brackets, percent, plus, equals, non-ASCII,
# and a CRLF (already in the form browsers submit, so it must survive untouched).
RELAY_STATE = "a\"b'c&amp;d<e>f%2Bg+h=i j\u00e9\u2603&#10;\r\nk"
HOST_UUID = "5F0C3E8A-1B2C-4D5E-8F90-A1B2C3D4E5F6"
RECHECK_TOKEN = "rt.\"<&>'x"
SAML_RESPONSE = "PHNhbWxwOlJlc3BvbnNlIHhtbG5zOnNhbWxwPSJ1cm46b2FzaXM6bmFtZXM6dGM6U0FNTDoyLjA6cHJvdG9jb2wiLz4+/+=="


# ------------------------------------------------------------------------------ the PKI


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(ca, cn: str, *, server: bool):
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
                "urn:device:apple:uuid:" + HOST_UUID)]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


@dataclass
class Pki:
    tls_ca: x509.Certificate
    client_ca: x509.Certificate
    server_cert: x509.Certificate
    server_key: object
    client: harness.ClientCertificate

    @property
    def tls_ca_pem(self) -> bytes:
        return self.tls_ca.public_bytes(Encoding.PEM)


@pytest.fixture(scope="module")
def pki() -> Pki:
    tls_ca, client_ca = _ca(TLS_CA_CN), _ca(CLIENT_CA_CN)
    server_cert, server_key = _leaf(tls_ca, "127.0.0.1", server=True)
    client_cert, client_key = _leaf(client_ca, HOST_UUID, server=False)
    return Pki(tls_ca[0], client_ca[0], server_cert, server_key,
               harness.ClientCertificate(client_cert, client_key))


# --------------------------------------------------------------------------- the server


def sample_decision() -> Decision:
    disk = PolicyResult("11", "FileVault disk encryption is on", "fail", critical=True,
                        resolution="Open System Settings > Privacy & Security.\nTurn on FileVault.\n\n"
                                   "Restart the Mac when asked.")
    update = PolicyResult("12", "macOS is up to date", "fail",
                          resolution="Open System Settings > General > Software Update and install updates.")
    return Decision(
        BLOCK,
        (Reason("policy_failing", f"{disk.name} is failing.", disk),
         Reason("policy_failing", f"{update.name} is failing.", update)),
        (disk, update),
        bypass_possible=False,
    )


@dataclass
class Received:
    path: str
    method: str
    fields: list[tuple[str, str]]
    body: bytes
    client_serial: int | None


@dataclass
class Server:
    origin: str
    routes: dict[str, object] = field(default_factory=dict)  # GET path -> alb.Response
    received: list[Received] = field(default_factory=list)

    def posts(self, path: str) -> list[Received]:
        return [r for r in self.received if r.method == "POST" and r.path == path]


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "selfcheck"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _client_serial(self) -> int | None:
        der = self.connection.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number if der else None

    def _send(self, response) -> None:
        body = response.body if isinstance(response.body, bytes) else response.body.encode()
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        state: Server = self.server.state  # type: ignore[attr-defined]
        state.received.append(Received(self.path, "GET", [], b"", self._client_serial()))
        self._send(state.routes.get(self.path) or pages.not_found())

    def do_POST(self):
        state: Server = self.server.state  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        fields = urllib.parse.parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True,
                                        encoding="utf-8", errors="strict")
        state.received.append(Received(self.path, "POST", fields, body, self._client_serial()))
        if self.path == "/acs":
            self._send(pages.error_page(200, "Okta received the response", "This is the test ACS."))
        elif self.path == "/saml/recheck":
            self._send(pages.error_page(200, "Checked again", "This is the test recheck endpoint."))
        else:
            self._send(pages.not_found())


@contextlib.contextmanager
def mtls_server(pki: Pki, tmp_path: Path):
    cert_file, key_file, ca_file = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "clients.pem"
    cert_file.write_bytes(pki.server_cert.public_bytes(Encoding.PEM))
    key_file.write_bytes(pki.server_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    ca_file.write_bytes(pki.client_ca.public_bytes(Encoding.PEM))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(ca_file)
    context.verify_mode = ssl.CERT_REQUIRED  # no certificate, no handshake

    class TlsServer(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self):
            sock, addr = super().get_request()
            sock.settimeout(10)
            # Handshake later, in the request's own thread: a client stuck choosing a
            # certificate must not stall the accept loop for everyone else.
            return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

        def finish_request(self, request, client_address):
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError):
                return  # no or a bad client certificate: nothing to serve
            super().finish_request(request, client_address)

        def handle_error(self, request, client_address):  # failed handshakes are expected
            pass

    httpd = TlsServer(("127.0.0.1", 0), _Handler)
    state = Server(f"https://127.0.0.1:{httpd.server_address[1]}")
    state.routes["/block"] = pages.block_page(
        decision=sample_decision(), hostname="Ada\u2019s MacBook Pro", host_uuid=HOST_UUID,
        okta_user="ada@example.com", my_device_url="https://fleet.example.com/device/abc",
        recheck_token=RECHECK_TOKEN, bypass_allowed=True)
    state.routes["/post"] = pages.auto_post(f"{state.origin}/acs", SAML_RESPONSE, RELAY_STATE)
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def server(pki, tmp_path):
    with mtls_server(pki, tmp_path) as state:
        yield state


@pytest.fixture
def chromium(pki, server):
    with harness.Chromium(trusted_cas=[pki.tls_ca_pem], client_cert=pki.client,
                          auto_select_origins=[server.origin], timeout=30) as browser:
        yield browser


# ------------------------------------------------------------------------------- tests


def test_block_page_through_mtls(chromium, server, pki, tmp_path):
    page = chromium.load(f"{server.origin}/block")
    assert page.error is None, page.error
    assert page.status == 403
    assert page.url == f"{server.origin}/block"
    assert "FileVault disk encryption is on" in page.text
    assert "macOS is up to date" in page.text
    assert "Critical" in page.text
    assert "Turn on FileVault." in page.text
    assert "Bypass once" not in page.text  # a critical policy fails
    # The policy selected the imported certificate: the server saw it.
    assert server.received[-1].client_serial == pki.client.certificate.serial_number
    # Nothing blocked by the CSP (a wrong style hash shows up here as a violation).
    assert not [line for line in page.console if "Content Security Policy" in line], page.console
    shot = page.save_screenshot(tmp_path / "block_page.png")
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    print(f"\nblock page screenshot: {shot}")

    chromium.set_viewport(320, 640)
    narrow = chromium.load(f"{server.origin}/block")
    print(f"block page at 320px: {narrow.save_screenshot(tmp_path / 'block_page_320.png')}")
    width = chromium.cdp("Runtime.evaluate", {
        "expression": "document.documentElement.scrollWidth", "returnByValue": True})["result"]["value"]
    assert width <= 320, "the page scrolls sideways at 320px"

    # "Check again" posts the token to the recheck path (form-action 'self' allows it).
    assert chromium.is_visible("form button")
    after = chromium.click("form button")
    assert after.url == f"{server.origin}/saml/recheck"
    assert server.posts("/saml/recheck")[-1].fields == [("token", RECHECK_TOKEN), ("action", "recheck")]
    assert not [line for line in after.console if "Content Security Policy" in line], after.console


def test_auto_post_reaches_acs_byte_exact(chromium, server, pki, tmp_path):
    page = chromium.load(f"{server.origin}/post")
    assert page.error is None, page.error
    assert page.url == f"{server.origin}/acs", page.navigations
    assert [(n.method, n.url, n.status) for n in page.navigations] == [
        ("GET", f"{server.origin}/post", 200), ("POST", f"{server.origin}/acs", 200)]
    posts = server.posts("/acs")
    assert len(posts) == 1
    assert posts[0].fields == [("SAMLResponse", SAML_RESPONSE), ("RelayState", RELAY_STATE)]
    assert posts[0].client_serial == pki.client.certificate.serial_number
    assert not [line for line in page.console if "Content Security Policy" in line], page.console
    print(f"\nACS page screenshot: {page.save_screenshot(tmp_path / 'acs.png')}")


def test_auto_post_without_javascript(chromium, server, tmp_path):
    page = chromium.load(f"{server.origin}/post", javascript=False)
    assert page.url == f"{server.origin}/post"  # nothing submitted by itself
    assert not server.posts("/acs")
    assert chromium.is_visible("form#f button[type=submit]")
    assert "Continue" in page.text
    print(f"\nno-JS auto-POST screenshot: {page.save_screenshot(tmp_path / 'auto_post_nojs.png')}")

    after = chromium.click("form#f button[type=submit]")
    assert after.url == f"{server.origin}/acs"
    assert server.posts("/acs")[-1].fields == [("SAMLResponse", SAML_RESPONSE), ("RelayState", RELAY_STATE)]


def test_browsers_normalize_lone_newlines_in_form_posts(chromium, server):
    """The HTML spec's form entry-list conversion: a lone LF or CR is submitted as CRLF.

    pages.auto_post writes both as character references, so the DOM holds them exactly (checked
    below), but no markup can stop the browser from normalizing them when it submits. Recorded
    here so that nobody expects byte-exact RelayState with bare newlines.
    """
    relay = "line1\nline2\rline3"
    server.routes["/post-newlines"] = pages.auto_post(f"{server.origin}/acs", SAML_RESPONSE, relay)
    chromium.load(f"{server.origin}/post-newlines", javascript=False)
    value = chromium.cdp("Runtime.evaluate", {
        "expression": "document.forms.f.RelayState.value", "returnByValue": True})["result"]["value"]
    assert value == relay
    chromium.click("form#f button[type=submit]")
    assert dict(server.posts("/acs")[-1].fields)["RelayState"] == "line1\r\nline2\r\nline3"


def test_without_policy_headless_chromium_hangs_on_the_certificate_request(pki, server):
    """No picker in headless mode: with a candidate certificate in NSS but no policy selecting
    it, the navigation never commits. With no certificate at all it fails at once instead."""
    with harness.Chromium(trusted_cas=[pki.tls_ca_pem], client_cert=pki.client, timeout=15) as browser:
        assert browser.policy_file is None
        with pytest.raises(harness.BrowserTimeout, match="AutoSelectCertificateForUrls"):
            browser.load(f"{server.origin}/block", timeout=6)
    with harness.Chromium(trusted_cas=[pki.tls_ca_pem], timeout=15) as browser:
        page = browser.load(f"{server.origin}/block")
        # Chromium goes on without a certificate and the server refuses the handshake. Under
        # TLS 1.3 the client learns that only after sending its request, so which error it
        # reports depends on timing (alert first, or the server's close first).
        assert page.error in ("net::ERR_BAD_SSL_CLIENT_AUTH_CERT", "net::ERR_SOCKET_NOT_CONNECTED")
    assert not [r for r in server.received if r.path == "/block"]


def test_tls_ca_must_be_trusted_in_nss(pki, server):
    """The trust comes from NSS (no --ignore-certificate-errors): without it the handshake fails."""
    with harness.Chromium(client_cert=pki.client, auto_select_origins=[server.origin], timeout=15) as browser:
        policy = browser.policy_file
        assert policy is not None and policy.parent == harness.POLICY_DIR
        assert server.origin in policy.read_text()
        page = browser.load(f"{server.origin}/block")
        assert page.error == "net::ERR_CERT_AUTHORITY_INVALID"
    assert not policy.exists(), "the managed policy must be removed with the browser"


def test_the_csp_is_enforced_and_violations_are_seen(chromium, server):
    """Negative controls: the header really binds the page, and the harness reports violations."""
    import dataclasses

    def tampered(response, old: str, new: str):
        csp = response.headers["Content-Security-Policy"]
        assert old in csp
        return dataclasses.replace(response, headers={**response.headers,
                                                      "Content-Security-Policy": csp.replace(old, new)})

    good = pages.auto_post(f"{server.origin}/acs", SAML_RESPONSE, RELAY_STATE)
    server.routes["/wrong-target"] = tampered(good, f"form-action {server.origin}/acs",
                                              f"form-action {server.origin}/elsewhere")
    page = chromium.load(f"{server.origin}/wrong-target")
    assert page.url == f"{server.origin}/wrong-target"
    assert not server.posts("/acs"), "form-action did not stop the auto-POST"
    assert any("form-action" in line for line in page.console), page.console

    server.routes["/wrong-style"] = tampered(server.routes["/block"], pages.STYLE_HASH,
                                             "'sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='")
    page = chromium.load(f"{server.origin}/wrong-style")
    assert any("style-src" in line for line in page.console), page.console
