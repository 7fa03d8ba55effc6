"""Caddy 2.6 and nginx 1.22 in front of devicegate's origin, run from the shipped configurations.

For each proxy: a config is rendered from ``deploy/proxies/`` by replacing only the documented
placeholders (hostname, file paths, ports; Caddy also gets test-only global options: admin off,
ports, loopback bind, storage), the real proxy runs on loopback, ``devicegate local origin`` runs
behind it against a local stack, and real HTTPS clients check what a Mac would meet.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from html import unescape
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from devicegate import alb
from devicegate.local import pki, tools
from devicegate.local.okta import LocalOkta
from devicegate.scep import authority
from tests.interop.peers import _free_port, _spawn, _terminate, missing_programs
from tests.stack_helpers import enrolled_device, running_stack, tls_context

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "proxies"
HOSTNAME = "localhost"  # the TLS server certificate of the local stack names it
USER = "alice@example.com"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from running_stack(tmp_path_factory, "proxies", args=("--sync-interval", "3600"))


# ---------------------------------------------------------------------- configs


def render(shipped: str, replacements: list[tuple[str, str]]) -> str:
    """The shipped file with each placeholder replaced (in order); every placeholder must be there."""
    for placeholder, value in replacements:
        assert placeholder in shipped, f"the shipped file no longer has {placeholder!r}"
        shipped = shipped.replace(placeholder, value)
    return shipped


def directives(text: str) -> list[str]:
    """The first word of every line that is not a comment: what the proxy is told to do."""
    return [line.split()[0] for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def file_replacements(state: Path, origin_port: int) -> list[tuple[str, str]]:
    return [
        ("/etc/devicegate/okta.example.com.pem", str(state / "tls" / "server.pem")),
        ("/etc/devicegate/okta.example.com.key", str(state / "tls" / "server.key")),
        ("/etc/devicegate/scep-ca.pem", str(state / "ca" / "scep-ca.pem")),
        ("127.0.0.1:8080", f"127.0.0.1:{origin_port}"),
    ]


def caddy_config(state: Path, work: Path, port: int, origin_port: int) -> str:
    shipped = (DEPLOY / "Caddyfile").read_text()
    body = render(shipped, file_replacements(state, origin_port) + [("okta.example.com", HOSTNAME)])
    test_options = (
        "\tadmin off\n"
        f"\thttps_port {port}\n"
        "\tdefault_bind 127.0.0.1\n"
        "\tauto_https disable_redirects\n"
        "\tskip_install_trust\n"
        f"\tstorage file_system {work / 'storage'}\n"
    )
    assert directives(body) == [HOSTNAME if d == "okta.example.com" else d for d in directives(shipped)]
    assert body.count("\n{\n") == 1, "the shipped Caddyfile has one global options block"
    config = body.replace("\n{\n", "\n{\n" + test_options, 1)
    got, added = directives(config), directives(test_options)
    at = got.index(added[0])
    assert got[at:at + len(added)] == added and got[:at] + got[at + len(added):] == directives(body)
    return config


def nginx_config(state: Path, work: Path, port: int, origin_port: int) -> tuple[str, str]:
    """(main config written by the test, the shipped server block rendered)."""
    shipped = (DEPLOY / "nginx.conf").read_text()
    site = render(shipped, file_replacements(state, origin_port) + [
        ("/etc/devicegate/crl.pem", str(state / "ca" / "crl.pem")),
        ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
        ("server_name okta.example.com;", f"server_name {HOSTNAME};"),
    ])
    assert directives(site) == directives(shipped)
    temp = "\n".join(f"    {kind}_temp_path {work / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = (
        "daemon off;\n"
        + ("user root root;\n" if os.geteuid() == 0 else "")  # workers must reach the temp dirs below
        + f"pid {work / 'nginx.pid'};\n"
        f"error_log {work / 'error.log'} info;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        f"    access_log {work / 'access.log'};\n"
        f"{temp}\n"
        f"    include {work / 'devicegate.conf'};\n"
        "}\n"
    )
    return main, site


# ---------------------------------------------------------------------- processes


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.args[0]} is not listening on {port}:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.05)


@dataclass
class Proxy:
    kind: str  # "caddy" | "nginx"
    port: int
    process: subprocess.Popen
    work: Path

    @property
    def url(self) -> str:
        return f"https://{HOSTNAME}:{self.port}"

    def reload(self) -> None:
        """What an operator does after publishing a CRL: nginx reads ssl_crl at (re)load only."""
        os.kill(self.process.pid, signal.SIGHUP)


SERIAL_FORMAT = {"caddy": "decimal", "nginx": "hex"}


@pytest.fixture(scope="module", params=["caddy", "nginx"])
def proxy(request, stack, tmp_path_factory):
    kind = request.param
    missing = missing_programs(kind)
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    work = tmp_path_factory.mktemp(kind)
    state = stack.state_dir.resolve()
    port, origin_port = _free_port(), _free_port()
    started: list[subprocess.Popen] = []
    try:
        origin_log = work / "origin.log"
        with open(origin_log, "wb") as log:
            origin = _spawn(
                [sys.executable, "-m", "devicegate", "local", "origin", "--state-dir", str(state),
                 "--device-url", f"https://{HOSTNAME}:{port}", "--listen", f"127.0.0.1:{origin_port}",
                 "--serial-header", "X-SSL-Client-Serial", "--serial-format", SERIAL_FORMAT[kind],
                 "--leaf-header", "X-SSL-Client-Cert"],
                env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
        started.append(origin)
        proxy_log = work / f"{kind}.log"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin:/usr/sbin"), "HOME": str(work),
               "XDG_DATA_HOME": str(work / "data"), "XDG_CONFIG_HOME": str(work / "config")}
        if kind == "caddy":
            (work / "Caddyfile").write_text(caddy_config(state, work, port, origin_port))
            argv = ["caddy", "run", "--config", str(work / "Caddyfile"), "--adapter", "caddyfile"]
        else:
            main, site = nginx_config(state, work, port, origin_port)
            (work / "devicegate.conf").write_text(site)
            (work / "nginx.conf").write_text(main)
            argv = ["nginx", "-p", str(work), "-c", str(work / "nginx.conf"), "-e", str(work / "error.log")]
        with open(proxy_log, "wb") as log:
            process = _spawn(argv, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
        started.append(process)
        _wait_port(origin_port, origin, origin_log)
        _wait_port(port, process, proxy_log)
        yield Proxy(kind, port, process, work)
    finally:
        for proc in reversed(started):
            _terminate(proc)


# ---------------------------------------------------------------------- clients


def get(proxy: Proxy, path: str, ctx: ssl.SSLContext, method="GET", body=None, headers=None):
    """One request to the proxy by its name (SNI), as a browser sends it; raw path octets."""
    conn = http.client.HTTPSConnection(HOSTNAME, proxy.port, context=ctx, timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def refused(proxy: Proxy, ctx: ssl.SSLContext, path="/healthz", server_hostname=HOSTNAME) -> str:
    """How the proxy refused a client: 'handshake' (TLS alert or reset) or 'HTTP <status>'."""
    try:
        raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOSTNAME}:{proxy.port}\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while chunk := tls.recv(65536):
                reply += chunk
    except (ssl.SSLError, ConnectionError):
        return "handshake"
    if not reply:
        return "handshake"
    status = reply.split(b"\r\n", 1)[0].decode()
    return "HTTP " + status.split()[1] + " " + reply.decode("utf-8", "replace").rsplit("\r\n\r\n", 1)[-1]


def ca_context(stack) -> ssl.SSLContext:
    return tls_context(stack.endpoints["tls_ca"])


def device_context(stack, cert_pem: str, key_pem: str) -> ssl.SSLContext:
    return tls_context(stack.endpoints["tls_ca"], cert_pem, key_pem)


def issue(stack, serial: int, host_uuid: str) -> tuple[str, str]:
    """A device certificate with a chosen serial from the stack's SCEP CA, by the CA's own code."""
    ca, ca_key = pki.load_or_create_pair(stack.state_dir / "ca", "scep-ca", lambda: None)
    key = pki.new_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devicegate device")]))
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(f"urn:device:apple:uuid:{host_uuid}")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    facts = authority.inspect_csr(csr.public_bytes(Encoding.DER), accept_cn_uuid=False)
    cert = authority.build_certificate(facts, host_uuid, ca_cert=ca, ca_key=ca_key, validity_days=30,
                                       now=datetime.now(timezone.utc), serial=serial)
    return pki.pem_cert(cert), pki.pem_key(key)


def saml_login(stack, proxy: Proxy, ctx: ssl.SSLContext) -> tuple[int, str, dict | None]:
    """A login as Okta starts it, through the proxy: the local Okta's own code, in this process,
    with the proxy's SSO URL. (status, page, what Okta accepted or None)."""
    e = stack.endpoints
    okta = LocalOkta(
        audience=e["okta"]["audience"], acs_url=e["okta"]["acs_url"], sso_url=f"{proxy.url}/saml/sso",
        idp_entity_id=e["metadata_url"], idp_cert=x509.load_pem_x509_certificate(e["idp_cert"].encode()),
        sp_key=serialization.load_pem_private_key(e["okta"]["sp_key"].encode(), password=None),
        sp_cert_pem=e["okta"]["sp_cert"],
    )
    start = okta.login_handler(alb.build_event(method="GET", path="/okta/login", raw_query=f"user={USER}",
                                               headers=[], body=b"", target_group_arn="test"), None)
    location = alb.parse_response(start)
    location = dict((k.lower(), v) for k, v in location.headers)["location"]
    parts = urllib.parse.urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}" == proxy.url
    status, page = get(proxy, f"{parts.path}?{parts.query}", ctx)
    response = re.search(r'name="SAMLResponse"\s+value="([^"]+)"', page)
    if status != 200 or not response:
        return status, page, None
    form = urllib.parse.urlencode({"SAMLResponse": unescape(response.group(1))}).encode()
    acs = alb.parse_response(okta.acs_handler(alb.build_event(
        method="POST", path="/okta/sso/saml2", raw_query="", body=form, target_group_arn="test",
        headers=[("content-type", "application/x-www-form-urlencoded")]), None))
    rows = dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", acs.body.decode()))
    return status, page, rows if acs.status == 200 else None


def healthz(proxy: Proxy, ctx: ssl.SSLContext, headers=None) -> dict:
    status, body = get(proxy, "/healthz", ctx, headers=headers)
    assert status == 200, body
    return json.loads(body)["client_certificate"]


# ---------------------------------------------------------------------- tests


def test_no_client_certificate_never_reaches_the_origin(stack, proxy):
    ctx = ca_context(stack)
    if proxy.kind == "caddy":
        assert refused(proxy, ctx) == "handshake"
        # without SNI: default_sni puts the client under the same policy
        no_sni = ssl.create_default_context(cadata=stack.endpoints["tls_ca"])
        no_sni.check_hostname = False
        assert refused(proxy, no_sni, server_hostname=None) == "handshake"
    else:
        # nginx finishes the handshake and answers 400 itself; the origin is not asked
        assert refused(proxy, ctx).startswith("HTTP 400 ")
        assert "No required SSL certificate was sent" in refused(proxy, ctx)


@pytest.mark.parametrize("serial", [
    0x1234,  # its hex form is all digits: read with the wrong base it is another number
    (1 << 127) | 0x5A5A_0000_0000_0000_0000_0000_0000_00A5,  # high bit: DER needs a 00 octet
], ids=["digits-only-hex", "high-bit"])
def test_healthz_reports_the_verified_serial_and_host(stack, proxy, serial):
    host = "5F0C3E8A-1B2C-4D5E-8F90-A1B2C3D4E5F6"
    cert_pem, key_pem = issue(stack, serial, host)
    seen = healthz(proxy, device_context(stack, cert_pem, key_pem))
    # The leaf and the serial header both arrive; the handler refuses (400) when they disagree, so
    # this also proves the proxy's decimal/hex serial was read in the right base.
    assert int(seen["serial"], 16) == serial
    assert seen["host_uuid"] == host


def test_enrolled_device_login_gets_a_signed_response(stack, proxy, tmp_path):
    device = enrolled_device(stack, tmp_path)
    ctx = device.context(stack.endpoints["tls_ca"])
    seen = healthz(proxy, ctx)
    assert seen["host_uuid"] == device.uuid
    status, page, accepted = saml_login(stack, proxy, ctx)
    assert status == 200 and accepted is not None, page[:2000]
    assert accepted["NameID"] == USER
    assert accepted["Signature"] == "Assertion signature verified with the IdP certificate"
    # the origin's decisions land in the stack's audit log, like the gateway's
    import json

    records = [json.loads(line) for line in (stack.state_dir / "audit.jsonl").read_text().splitlines()]
    serial = format(x509.load_pem_x509_certificate(device.cert_pem.encode()).serial_number, "x")
    assert any(r.get("event") == "decision" and r.get("serial") == serial and r["Outcome"] == "allow" for r in records)


def test_client_supplied_certificate_headers_are_overwritten(stack, proxy, tmp_path):
    mine = enrolled_device(stack, tmp_path / "mine")
    other_pem, _ = issue(stack, 0xABCDEF, "0D0E0A0D-0000-4000-8000-000000000001")
    other = x509.load_pem_x509_certificate(other_pem.encode())
    forged = {
        "X-SSL-Client-Serial": str(other.serial_number) if proxy.kind == "caddy" else format(other.serial_number, "X"),
        "X-SSL-Client-Cert": urllib.parse.quote(other_pem, safe=""),
        "X-Amzn-Mtls-Clientcert-Serial-Number": format(other.serial_number, "X"),
        "X-Amzn-Mtls-Clientcert-Leaf": urllib.parse.quote(other_pem, safe="+=/"),
    }
    seen = healthz(proxy, mine.context(stack.endpoints["tls_ca"]), headers=forged)
    assert seen["host_uuid"] == mine.uuid
    assert int(seen["serial"], 16) == x509.load_pem_x509_certificate(mine.cert_pem.encode()).serial_number


def test_revoked_certificate_is_refused(stack, proxy, tmp_path):
    device = enrolled_device(stack, tmp_path)
    ctx = device.context(stack.endpoints["tls_ca"])
    serial = format(x509.load_pem_x509_certificate(device.cert_pem.encode()).serial_number, "x")
    assert saml_login(stack, proxy, ctx)[2] is not None  # allowed before
    tools.revoke(stack.state_dir, serial=serial, publish=True)
    if proxy.kind == "nginx":
        proxy.reload()  # nginx reads ssl_crl at (re)load
        deadline = time.monotonic() + 10
        while (outcome := refused(proxy, ctx)).startswith("HTTP 200"):
            assert time.monotonic() < deadline, "nginx still accepts the revoked certificate"
            time.sleep(0.1)
        assert outcome.startswith("HTTP 400 ") and "The SSL certificate error" in outcome, outcome
    else:
        # Caddy 2.6 cannot check a CRL: the handshake succeeds, and the IdP refuses the certificate
        status, page, accepted = saml_login(stack, proxy, ctx)
        assert accepted is None and status == 403, page[:2000]
        assert "This device certificate has been revoked" in unescape(page)
