"""Commands that act on a running local stack, named by its state dir.

``enroll``  a host with devicegate's own SCEP client (what macOS does, over real HTTPS);
``login``   as a browser would: local Okta -> device host (mTLS) -> local Okta's ACS;
``fleet ...`` changes the simulated Fleet (hosts, policy results); ``sync`` runs one sync now.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import re
import ssl
import tempfile
import urllib.parse
from dataclasses import dataclass
from html import unescape
from pathlib import Path

from cryptography import x509

from ..scep import protocol
from . import pki


class ToolError(RuntimeError):
    pass


def endpoints(state_dir: Path) -> dict:
    path = Path(state_dir) / "endpoints.json"
    if not path.exists():
        raise ToolError(f"no running local stack at {state_dir} ({path} is missing); start it with ./dev up")
    return json.loads(path.read_text())


def _context(e: dict, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    if cert is None:
        return _trusting(e["tls_ca"])
    ctx = ssl.create_default_context(cadata=e["tls_ca"])
    ctx.load_cert_chain(cert, key)
    return ctx


@functools.lru_cache(maxsize=4)
def _trusting(tls_ca_pem: str) -> ssl.SSLContext:
    """A context trusting the stack's TLS CA, built once per CA (loading it costs a few
    hundred microseconds: the benchmarks' clients enroll thousands of times)."""
    return ssl.create_default_context(cadata=tls_ca_pem)


def https_request(url: str, ctx, method="GET", body: bytes | None = None, headers=None, raw_path=None,
                  session: "HttpsSession | None" = None):
    """One request; on ``session``'s kept-alive connection when given, else on a new one."""
    if session is not None:
        return session.request(url, method, body, headers, raw_path)
    with HttpsSession(ctx) as own:
        return own.request(url, method, body, headers, raw_path)


class HttpsSession:
    """Requests to one origin over one kept-alive TLS connection, as SCEP clients do for the
    requests of one enrollment (micromdm's scepclient sends GetCACaps, GetCACert and
    PKIOperation over one connection). A connection the server closed while idle is
    replaced once."""

    def __init__(self, ctx: ssl.SSLContext):
        self.ctx = ctx
        self.conn: http.client.HTTPSConnection | None = None
        self.origin: tuple[str, int | None] | None = None
        self.connections = 0

    def request(self, url: str, method="GET", body: bytes | None = None, headers=None, raw_path=None):
        parts = urllib.parse.urlsplit(url)
        if self.origin != (parts.hostname, parts.port):
            self.close()
            self.origin = (parts.hostname, parts.port)
        target = raw_path or (parts.path + (f"?{parts.query}" if parts.query else ""))
        for attempt in (0, 1):
            reused = self.conn is not None
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=self.ctx, timeout=30)
                self.connections += 1
            try:
                self.conn.request(method, target, body=body, headers=headers or {})
                response = self.conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionError, ssl.SSLEOFError):
                self.close()
                if reused and attempt == 0:
                    continue  # the server had closed the idle connection: once more on a new one
                raise
            except BaseException:
                self.close()
                raise
            if response.will_close:
                self.close()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> "HttpsSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------ enroll


@dataclass
class Enrollment:
    host_uuid: str
    serial: str
    cert_path: Path
    key_path: Path


def enroll(state_dir: Path, out_dir: Path, host_uuid: str | None = None, challenge: str | None = None) -> Enrollment:
    """Enroll like macOS: a CSR with the SAN URI of the hardware UUID, a throw-away
    self-signed signer, AES-256 and SHA-256, PKIOperation by POST."""
    import uuid

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import AttributeOID, NameOID

    e = endpoints(state_dir)
    host_uuid = (host_uuid or str(uuid.uuid4())).upper()
    key = pki.new_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devicegate device")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"urn:device:apple:uuid:{host_uuid}")]),
            critical=False,
        )
        .add_attribute(AttributeOID.CHALLENGE_PASSWORD, (challenge or e["scep_challenge"]).encode())
        .sign(key, hashes.SHA256())
    )
    with HttpsSession(_context(e)) as session:
        status, _, ca_der = session.request(e["scep_url"] + "?operation=GetCACert")
        if status != 200:
            raise ToolError(f"GetCACert answered {status}")
        ca = x509.load_der_x509_certificate(ca_der)
        message, _ = protocol.build_pki_message(
            message_type=protocol.MessageType.PKCS_REQ,
            inner=csr.public_bytes(Encoding.DER),
            recipient=ca,
            signer_cert=pki.signing_certificate("SCEP requester", key),
            signer_key=key,
            transaction_id=os.urandom(16).hex(),
        )
        status, _, body = session.request(e["scep_url"] + "?operation=PKIOperation", "POST", message,
                                          {"Content-Type": "application/x-pki-message"})
    if status != 200:
        raise ToolError(f"PKIOperation answered HTTP {status}: {body[:200]!r}")
    reply = protocol.parse_cert_rep(body, ca_cert=ca, requester_key=key)
    if reply.status is not protocol.PkiStatus.SUCCESS:
        raise ToolError(f"the CA refused: {reply.fail_info.name if reply.fail_info is not None else '?'}: {reply.fail_text}")
    cert = reply.certificates[0]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / "device.pem", out_dir / "device.key"
    pki.write_private(key_path, pki.pem_key(key))
    pki.write_private(cert_path, pki.pem_cert(cert))
    return Enrollment(host_uuid, format(cert.serial_number, "x"), cert_path, key_path)


# ------------------------------------------------------------------------------ login


@dataclass
class LoginResult:
    outcome: str  # "allowed" | "blocked" | "refused"
    status: int
    summary: list[tuple[str, str]]
    page_text: str


def _text(page: str) -> str:
    page = re.sub(r"(?s)<(style|script)[^>]*>.*?</\1>", " ", page)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", page))).strip()


def login(state_dir: Path, cert: Path | None, key: Path | None, user: str | None, binding: str = "redirect") -> LoginResult:
    """One login, followed the way a browser follows it."""
    e = endpoints(state_dir)
    public = _context(e)
    device = _context(e, cert, key) if cert else _context(e)
    query = urllib.parse.urlencode({k: v for k, v in {"user": user, "binding": binding}.items() if v})
    status, headers, body = https_request(f"{e['okta']['login_url']}?{query}", public)
    try:
        if status == 302:
            location = headers["location"]
            parts = urllib.parse.urlsplit(location)
            status, headers, body = https_request(location, device, raw_path=f"{parts.path}?{parts.query}")
        else:
            page = body.decode()
            form = {n: unescape(v) for n, v in re.findall(r'name="(SAMLRequest|RelayState)" value="([^"]*)"', page)}
            status, headers, body = https_request(e["sso_url"], device, "POST", urllib.parse.urlencode(form).encode(),
                                             {"Content-Type": "application/x-www-form-urlencoded"})
    except ssl.SSLError as exc:
        return LoginResult("refused", 0, [("TLS", f"the device listener refused the handshake: {exc.reason}")], "")
    except ConnectionError as exc:
        return LoginResult("refused", 0, [("TLS", f"the device listener closed the connection: {exc}")], "")
    page = body.decode("utf-8", "replace")
    response = re.search(r'name="SAMLResponse"\s+value="([^"]+)"', page)
    if status == 200 and response:
        relay = re.search(r'name="RelayState"\s+value="([^"]*)"', page)
        form = {"SAMLResponse": unescape(response.group(1))}
        if relay:
            form["RelayState"] = unescape(relay.group(1))
        status, _, acs = https_request(e["okta"]["acs_url"], public, "POST", urllib.parse.urlencode(form).encode(),
                                  {"Content-Type": "application/x-www-form-urlencoded"})
        acs_page = acs.decode()
        rows = [(unescape(k), unescape(v)) for k, v in re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", acs_page)]
        return LoginResult("allowed" if status == 200 else "refused", status, rows, _text(acs_page))
    if status == 403 and 'name="token"' in page:
        return LoginResult("blocked", status, [], _text(page))
    return LoginResult("refused", status, [], _text(page))


# ------------------------------------------------------------------------------ Fleet


def _fleet_admin(e: dict, method: str, path: str, body: dict | None = None) -> dict:
    fleet = e["fleet"]
    if fleet["mode"] != "simulated":
        raise ToolError("this stack uses a real Fleet: change hosts and policies in Fleet itself")
    ctx = ssl.create_default_context(cafile=fleet["ca_bundle"])
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {fleet['token']}", "Content-Type": "application/json"}
    status, _, reply = https_request(fleet["url"] + path, ctx, method, data, headers)
    document = json.loads(reply or b"{}")
    if status >= 400:
        raise ToolError(f"the simulated Fleet refused: {document.get('message', status)} "
                        f"{'; '.join(e.get('reason', '') for e in document.get('errors', []))}".strip())
    return document


def fleet_add_host(state_dir: Path, host_uuid: str, hostname: str | None = None, email: str | None = None,
                   team: str | None = None) -> dict:
    host_uuid = host_uuid.upper()
    body = {"uuid": host_uuid, "hostname": hostname or f"mac-{host_uuid[:8].lower()}"}
    if email:
        body["email"] = email
    if team:
        body["team"] = team
    return _fleet_admin(endpoints(state_dir), "POST", "/_sim/hosts", body)


def fleet_set_policy(state_dir: Path, host_uuid: str, policy: str, result: str, *, critical: bool | None = None,
                     resolution: str | None = None) -> dict:
    body = {"host_uuid": host_uuid.upper(), "policy": policy, "result": result}
    if critical is not None:  # None: leave the policy's criticality as it is
        body["critical"] = critical
    if resolution is not None:
        body["resolution"] = resolution
    return _fleet_admin(endpoints(state_dir), "POST", "/_sim/results", body)


def fleet_remove_host(state_dir: Path, host_uuid: str) -> dict:
    return _fleet_admin(endpoints(state_dir), "DELETE", f"/_sim/hosts/{urllib.parse.quote(host_uuid.upper())}")


def fleet_state(state_dir: Path) -> dict:
    return _fleet_admin(endpoints(state_dir), "GET", "/_sim/state")


def sync_now(state_dir: Path, host_uuid: str | None = None) -> dict:
    """One sync (or one host's refresh, as "check again" does), run here with the sync
    Lambda's own handler; returns once it is written."""
    from .. import settings
    from ..compliance import sync
    from .stack import tool_environment

    saved = dict(os.environ)
    os.environ.update(tool_environment(endpoints(state_dir)))
    settings.load_fleet.cache_clear()
    try:
        event = {"source": "devicegate local sync"} | ({"host": host_uuid} if host_uuid else {})
        try:
            result = sync.lambda_handler(event, None)
        except ValueError as exc:
            raise ToolError(str(exc)) from None
        if host_uuid is not None and not result["complete"]:
            raise ToolError(result["errors"][0])
        if result.get("superseded_revoked") or result.get("revoked"):
            publish_crl(state_dir)  # what the local schedule does after revoking
        return result
    finally:  # a library caller (a test) keeps its own environment
        os.environ.clear()
        os.environ.update(saved)
        settings.load_fleet.cache_clear()


# ------------------------------------------------------------------------------ revocation


def _store(state_dir: Path):
    from ..store import Store
    from . import dynamo

    e = endpoints(state_dir)
    for key, value in dynamo.LOCAL_CREDENTIALS.items():
        os.environ.setdefault(key, value)
    return Store(e["dynamodb"]["table"], endpoint=e["dynamodb"]["endpoint"])


def revoke(state_dir: Path, *, serial: str | None = None, host_uuid: str | None = None,
           reason: str = "revoked by an administrator", publish: bool = True) -> dict:
    """Revoke one certificate, or every active one of a host: effective at once in the IdP; with
    ``publish`` the CRL is republished too, so the device listener refuses the handshake."""
    from .. import ops

    try:
        revoked = ops.revoke(_store(state_dir), serial=serial, host_uuid=host_uuid, reason=reason)
    except ops.OpsError as exc:
        raise ToolError(str(exc)) from None
    return {"revoked": revoked, "crl": publish_crl(state_dir) if publish else None}


def publish_crl(state_dir: Path) -> dict:
    from .stack import write_crl

    revoked = _store(state_dir).revoked_certificates()
    path = write_crl(Path(state_dir).resolve(), revoked)
    return {"path": str(path), "revoked_serials": sorted(format(r.serial, "x") for r in revoked)}
