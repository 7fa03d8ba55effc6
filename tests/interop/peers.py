"""Drive the real SCEP peer programs installed on this machine from pytest.

What is here (all context managers clean up what they started, by PID):

* :class:`Certmonger` -- re-exported from :mod:`devicegate.local.certmonger` (the product's
  driver, also used by ``devicegate demo``): a private ``dbus-daemon`` + ``certmonger -s -n``
  with ``getcert`` wrappers; that module's docstring has the certmonger facts it relies on.
* :func:`scepclient` -- one run of micromdm ``scepclient`` (Go) in a fresh directory.
* :class:`ScepServer` -- micromdm ``scepserver`` with a fresh depot, as a reference server.
* :class:`HttpsReverseProxy` -- a tiny TLS-terminating reverse proxy (stdlib + ``cryptography``)
  with a throw-away TLS CA, to put any plain-HTTP SCEP server behind HTTPS.

Facts this module relies on (observed on Debian 12, scep 2.1.0):

* Children are started like certmonger's (own process group, ``PR_SET_PDEATHSIG=SIGKILL``),
  with the same plumbing, so they die with the test process even if it is SIGKILLed.
* micromdm ``scepserver`` 2.1.0 listens on ``":" + port`` -- every interface.  It has no
  listen-address flag (only ``-port`` / ``SCEP_HTTP_LISTEN_PORT``), so it cannot be bound to
  loopback only; :class:`ScepServer` picks a random free port and talks to it via 127.0.0.1.
"""

from __future__ import annotations

import datetime
import http.client
import http.server
import ipaddress
import os
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from devicegate.local.certmonger import (
    CERTMONGER_TERMINAL_STATES,
    CLIENT_AUTH_EKU,
    SYSTEM_CA_BUNDLE,
    SYSTEM_OPENSSL_CNF,
    Certmonger,
    missing_programs,
    parse_getcert_list,
)
from devicegate.local.certmonger import ProgramError as PeerError
from devicegate.local.certmonger import ProgramTimeout as PeerTimeout
from devicegate.local.certmonger import base_env as _base_env
from devicegate.local.certmonger import run_program as _run
from devicegate.local.certmonger import spawn as _spawn
from devicegate.local.certmonger import tail as _tail
from devicegate.local.certmonger import terminate as _terminate

__all__ = [
    "PeerError",
    "PeerTimeout",
    "missing_programs",
    "Certmonger",
    "CERTMONGER_TERMINAL_STATES",
    "CLIENT_AUTH_EKU",
    "SYSTEM_CA_BUNDLE",
    "SYSTEM_OPENSSL_CNF",
    "parse_getcert_list",
    "ScepClientResult",
    "scepclient",
    "ScepServer",
    "TlsMaterial",
    "make_tls_material",
    "HttpsReverseProxy",
]


def _free_port() -> int:
    # scepserver binds the wildcard address, so ask for a port free on the wildcard address.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# micromdm scepclient
# --------------------------------------------------------------------------------------------


class ScepClientResult(subprocess.CompletedProcess):
    """CompletedProcess plus where scepclient ran and what it wrote."""

    cwd: Path
    key_path: Path
    cert_path: Path
    elapsed: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.cert_path.exists()


def scepclient(work_dir: os.PathLike | str, server_url: str, challenge: str, cn: str,
               timeout: float = 30.0, *, tls_ca_pem: str | None = None,
               extra_args: Sequence[str] = ()) -> ScepClientResult:
    """Run micromdm ``scepclient`` once in a fresh directory under ``work_dir``.

    ``scepclient -server-url URL -challenge X -cn CN -private-key k.pem -certificate c.pem
    -debug``.  It exits 0 on success and 1 on failure (output in ``.stdout``/``.stderr``, its log
    goes to stderr).  It reuses key/self-signed files found in its cwd, hence the fresh cwd.
    ``tls_ca_pem``: trusted for HTTPS via ``SSL_CERT_FILE`` (Go reads it; no CLI flag exists).
    Raises :class:`PeerTimeout` if it runs longer than ``timeout``.
    """
    base = Path(work_dir).resolve()
    base.mkdir(parents=True, exist_ok=True)
    cwd = Path(tempfile.mkdtemp(prefix="scepclient-", dir=base))
    key, cert = cwd / "k.pem", cwd / "c.pem"
    env = _base_env({"HOME": str(cwd)})
    if tls_ca_pem is not None:
        bundle = cwd / "tls-ca.pem"
        bundle.write_text(tls_ca_pem)
        env["SSL_CERT_FILE"] = str(bundle)
        env["SSL_CERT_DIR"] = str(cwd / "no-cert-dir")
    argv = ["scepclient", "-server-url", server_url, "-challenge", challenge, "-cn", cn,
            "-private-key", str(key), "-certificate", str(cert), "-debug", *extra_args]
    t0 = time.monotonic()
    res = _run(argv, timeout=timeout, env=env, cwd=cwd)
    out = ScepClientResult(res.args, res.returncode, res.stdout, res.stderr)
    out.cwd, out.key_path, out.cert_path = cwd, key, cert
    out.elapsed = time.monotonic() - t0
    return out


# --------------------------------------------------------------------------------------------
# micromdm scepserver
# --------------------------------------------------------------------------------------------


class ScepServer:
    """micromdm ``scepserver`` on a fresh depot in ``work_dir``.

    ``scepserver ca -init -depot D -keySize 2048`` then ``scepserver -depot D -port P
    -challenge X``.  NOTE: scepserver 2.1.0 cannot bind loopback only -- it listens on
    ``":" + port`` (all interfaces) and has no address flag; we only ever connect to 127.0.0.1.
    Exposes ``.url`` (``http://127.0.0.1:P/scep``), ``.ca_pem``, ``.caps``, ``.port``,
    ``.depot``, ``.log_path``.
    """

    def __init__(self, work_dir: os.PathLike | str, challenge: str = "secret", *,
                 port: int | None = None, key_size: int = 2048, debug: bool = False,
                 extra_args: Sequence[str] = (), start_timeout: float = 15.0) -> None:
        self.work_dir = Path(work_dir).resolve()
        self.challenge = challenge
        self.port = port
        self.key_size = key_size
        self.debug = debug
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.depot = self.work_dir / "depot"
        self.log_path = self.work_dir / "scepserver.log"
        self.ca_pem = ""
        self.caps = ""
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/scep"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def __enter__(self) -> "ScepServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if missing_programs("scepserver"):
            raise PeerError("scepserver is not installed")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not (self.depot / "ca.pem").exists():
            res = _run(["scepserver", "ca", "-init", "-depot", str(self.depot),
                        "-keySize", str(self.key_size)], timeout=60, env=_base_env(),
                       cwd=self.work_dir)
            if res.returncode != 0:
                raise PeerError(f"scepserver ca -init failed: {res.stdout}{res.stderr}")
        self.ca_pem = (self.depot / "ca.pem").read_text()
        attempts = 1 if self.port else 3
        for attempt in range(attempts):
            port = self.port or _free_port()
            argv = ["scepserver", "-depot", str(self.depot), "-port", str(port),
                    "-challenge", self.challenge, *(["-debug"] if self.debug else []),
                    *self.extra_args]
            with open(self.log_path, "ab") as log:
                self._proc = _spawn(argv, env=_base_env(), cwd=self.work_dir, stdout=log,
                                    stderr=subprocess.STDOUT)
            self.port = port
            try:
                self.caps = self._wait_ready()
                return
            except PeerError:
                _terminate(self._proc)
                self._proc = None
                in_use = "address already in use" in _tail(self.log_path, 5)
                if attempt == attempts - 1 or not in_use:
                    raise
                self.port = None

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + self.start_timeout
        url = f"{self.url}?operation=GetCACaps"
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise PeerError(f"scepserver exited with {self._proc.returncode}:\n"
                                f"{_tail(self.log_path, 20)}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    body = r.read().decode()
                    if r.status == 200 and body.strip():
                        return body
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise PeerTimeout(f"scepserver did not answer GetCACaps within "
                                  f"{self.start_timeout}s:\n{_tail(self.log_path, 20)}")
            time.sleep(0.05)

    def stop(self) -> None:
        _terminate(self._proc)

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)


# --------------------------------------------------------------------------------------------
# throw-away TLS CA + HTTPS reverse proxy
# --------------------------------------------------------------------------------------------


@dataclass
class TlsMaterial:
    ca_pem: str
    cert_pem: str
    key_pem: str
    cert_file: Path
    key_file: Path
    ca_file: Path


def make_tls_material(out_dir: os.PathLike | str,
                      names: Sequence[str] = ("localhost", "127.0.0.1")) -> TlsMaterial:
    """A throw-away TLS CA (P-256) and a server certificate for ``names`` (DNS or IP SANs)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devicegate interop TLS CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem).decode()
    cert_pem = cert.public_bytes(pem).decode()
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    files = {"tls-ca.pem": ca_pem, "tls-server.pem": cert_pem, "tls-server.key": key_pem}
    for name, text in files.items():
        (out / name).write_text(text)
    (out / "tls-server.key").chmod(0o600)
    return TlsMaterial(ca_pem, cert_pem, key_pem, out / "tls-server.pem",
                       out / "tls-server.key", out / "tls-ca.pem")


@dataclass
class ProxiedRequest:
    method: str
    path: str
    status: int
    request_bytes: int
    response_bytes: int


_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailers", "transfer-encoding", "upgrade", "host", "content-length"}


class HttpsReverseProxy:
    """HTTPS on 127.0.0.1:<random port> forwarding every request to a plain-HTTP upstream.

    ``upstream`` is ``http://host:port`` (any path in it is ignored; the request path is kept).
    Exposes ``.url_base`` (``https://127.0.0.1:P``), ``.url_for(path)``, ``.tls`` (the
    :class:`TlsMaterial`, ``.tls.ca_pem`` is what clients must trust) and ``.requests``, a list
    of :class:`ProxiedRequest` that went through the TLS listener.
    """

    def __init__(self, upstream: str, work_dir: os.PathLike | str, *, host: str = "127.0.0.1",
                 tls: TlsMaterial | None = None, upstream_timeout: float = 30.0) -> None:
        u = urllib.parse.urlsplit(upstream)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream_host = u.hostname
        self.upstream_port = u.port or 80
        self.host = host
        self.work_dir = Path(work_dir)
        self.tls = tls or make_tls_material(self.work_dir / "tls")
        self.upstream_timeout = upstream_timeout
        self.requests: list[ProxiedRequest] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def url_base(self) -> str:
        return f"https://{self.host}:{self.port}"

    def url_for(self, path: str) -> str:
        return self.url_base + (path if path.startswith("/") else "/" + path)

    def __enter__(self) -> "HttpsReverseProxy":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        proxy = self
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.tls.cert_file, self.tls.key_file)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                # TLS handshake here, in the per-connection thread, so a client that rejects
                # our certificate cannot stall the accept loop.
                self.request.do_handshake()
                super().setup()

            def log_message(self, fmt, *args):  # keep pytest output clean
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                try:
                    conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port,
                                                      timeout=proxy.upstream_timeout)
                    try:
                        conn.request(self.command, self.path, body=body, headers=headers)
                        resp = conn.getresponse()
                        data = resp.read()
                        status, reason = resp.status, resp.reason
                        resp_headers = [(k, v) for k, v in resp.getheaders()
                                        if k.lower() not in _HOP_BY_HOP]
                    finally:
                        conn.close()
                except Exception as e:  # upstream down: answer 502, remember why
                    with proxy._lock:
                        proxy.errors.append(f"{self.command} {self.path[:80]}: {e!r}")
                    status, reason, data = 502, "Bad Gateway", repr(e).encode()
                    resp_headers = [("Content-Type", "text/plain")]
                self.send_response(status, reason)
                for k, v in resp_headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                with proxy._lock:
                    proxy.requests.append(ProxiedRequest(self.command, self.path, status,
                                                         length, len(data)))

            do_GET = do_POST = do_HEAD = do_PUT = _forward

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                sock, addr = super().get_request()
                sock.settimeout(30)
                return ctx.wrap_socket(sock, server_side=True,
                                       do_handshake_on_connect=False), addr

            def handle_error(self, request, client_address):  # TLS failures of bad clients
                import sys
                with proxy._lock:
                    proxy.errors.append(f"{client_address}: {sys.exc_info()[1]!r}")

        self._server = Server((self.host, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="https-reverse-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

