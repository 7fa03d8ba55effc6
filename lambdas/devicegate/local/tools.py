"""Commands that act on a running local stack, named by its state dir.

``enroll``  a host with devicegate's own SCEP client (what macOS does, over real HTTPS);
``login``   as a browser would: local Okta -> device host (mTLS) -> local Okta's ACS;
``compliance set`` writes a host's policy result straight into the stack's DynamoDB (until
the simulated Fleet replaces it).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
import tempfile
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from html import unescape
from pathlib import Path

from cryptography import x509

from .. import store as store_mod
from ..compliance.decision import HostCompliance, PolicyResult
from ..scep import protocol
from . import dynamo, pki


class ToolError(RuntimeError):
    pass


def endpoints(state_dir: Path) -> dict:
    path = Path(state_dir) / "endpoints.json"
    if not path.exists():
        raise ToolError(f"no running local stack at {state_dir} ({path} is missing); start it with ./dev up")
    return json.loads(path.read_text())


def _context(e: dict, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=e["tls_ca"])
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def _request(url: str, ctx, method="GET", body: bytes | None = None, headers=None, raw_path=None):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=ctx, timeout=30)
    try:
        conn.request(method, raw_path or (parts.path + (f"?{parts.query}" if parts.query else "")), body=body,
                     headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


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
    ctx = _context(e)
    status, _, ca_der = _request(e["scep_url"] + "?operation=GetCACert", ctx)
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
    status, _, body = _request(e["scep_url"] + "?operation=PKIOperation", ctx, "POST", message,
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
    status, headers, body = _request(f"{e['okta']['login_url']}?{query}", public)
    try:
        if status == 302:
            location = headers["location"]
            parts = urllib.parse.urlsplit(location)
            status, headers, body = _request(location, device, raw_path=f"{parts.path}?{parts.query}")
        else:
            page = body.decode()
            form = {n: unescape(v) for n, v in re.findall(r'name="(SAMLRequest|RelayState)" value="([^"]*)"', page)}
            status, headers, body = _request(e["sso_url"], device, "POST", urllib.parse.urlencode(form).encode(),
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
        status, _, acs = _request(e["okta"]["acs_url"], public, "POST", urllib.parse.urlencode(form).encode(),
                                  {"Content-Type": "application/x-www-form-urlencoded"})
        acs_page = acs.decode()
        rows = [(unescape(k), unescape(v)) for k, v in re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", acs_page)]
        return LoginResult("allowed" if status == 200 else "refused", status, rows, _text(acs_page))
    if status == 403 and 'name="token"' in page:
        return LoginResult("blocked", status, [], _text(page))
    return LoginResult("refused", status, [], _text(page))


# ------------------------------------------------------------------------------ compliance


def set_policy(state_dir: Path, host_uuid: str, policy: str, result: str | None, *, critical: bool = False,
               resolution: str | None = None, hostname: str | None = None, email: str | None = None) -> HostCompliance:
    """Set one policy result on a host, enforced, and mark the data fresh."""
    e = endpoints(state_dir)
    os.environ.update(dynamo.LOCAL_CREDENTIALS)
    store = store_mod.Store(e["dynamodb"]["table"], endpoint=e["dynamodb"]["endpoint"])
    host_uuid = host_uuid.upper()
    current = store.get_compliance(host_uuid)
    old, enforced = current if current else (None, frozenset())
    results = {r.name: r for r in (old.results if old else ())}
    previous = results.get(policy)
    results[policy] = PolicyResult(
        policy_id=previous.policy_id if previous else f"local-{len(results) + 1}",
        name=policy,
        result=result,
        critical=critical,
        resolution=resolution if resolution is not None else (previous.resolution if previous else None),
    )
    users = tuple(old.device_users if old else ()) + ((email,) if email else ())
    host = HostCompliance(
        host_uuid=host_uuid,
        hostname=hostname or (old.hostname if old else None),
        team_id=old.team_id if old else None,
        results=tuple(results.values()),
        synced_at=datetime.now(timezone.utc),
        device_users=tuple(dict.fromkeys(users)),
    )
    store.put_compliance(host, set(enforced) | {results[policy].policy_id})
    return host
