"""``devicegate doctor``: is this deployment (or local stack) wired the way it must be?

Each check is (name, "ok" | "warn" | "fail", detail). They look from outside, as a Mac and
Okta do (DNS, TLS on both hosts, the refused handshake without a certificate, the metadata,
SCEP), and from inside (the trust store holds exactly the CA, the CRL is fresh and lists every
revoked certificate, the last sync, Okta's objects).
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import socket
import ssl
import urllib.parse
from datetime import datetime, timedelta, timezone

from cryptography import x509

MD = "{urn:oasis:names:tc:SAML:2.0:metadata}"
DS = "{http://www.w3.org/2000/09/xmldsig#}"


def _context(tls_ca_pem: str | None, cert=None, key=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=tls_ca_pem) if tls_ca_pem else ssl.create_default_context()
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def fetch(url: str, tls_ca_pem: str | None, *, cert=None, key=None, timeout: float = 10.0):
    """(status, headers, body) of one GET over verified HTTPS."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=_context(tls_ca_pem, cert, key),
                                       timeout=timeout)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read(1 << 20)
    finally:
        conn.close()


def _host_port(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname, parts.port or 443


def run(target, *, cert=None, key=None) -> list[tuple[str, str, str]]:
    d = target.deployment()
    checks: list[tuple[str, str, str]] = []

    def check(name, fn):
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - a failed check says why and the others still run
            result = ("fail", f"{type(exc).__name__}: {exc}")
        checks.append((name, *result))

    for label, url in (("public", d.public_url), ("device", d.device_url)):
        check(f"dns {label}", lambda url=url: _dns(url))
    check("tls public", lambda: _tls_public(d))
    check("tls device refuses no certificate", lambda: _no_cert_refused(d))
    if cert is not None:
        check("tls device with certificate", lambda: _with_cert(target, d, cert, key))
    check("clock", lambda: _clock(d))
    check("scep", lambda: _scep(d))
    check("metadata", lambda: _metadata(d))
    check("trust store = CA", lambda: _trust_store(target, d))
    check("crl", lambda: _crl(target, d))
    check("sync", lambda: _sync(target))
    try:
        checks += target.okta_checks()
    except Exception as exc:  # noqa: BLE001
        checks.append(("okta", "fail", str(exc)))
    return checks


def _dns(url: str):
    host, port = _host_port(url)
    addresses = sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
    return "ok", f"{host} -> {', '.join(addresses)}"


def _tls_public(d):
    host, port = _host_port(d.public_url)
    with socket.create_connection((host, port), timeout=10) as raw:
        with _context(d.tls_ca_pem).wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
            version = tls.version()
    cert = x509.load_der_x509_certificate(der)
    days = (cert.not_valid_after_utc - datetime.now(timezone.utc)).days
    return ("ok" if days >= 14 else "warn"), f"{version}, certificate valid for {days} more days"


def _no_cert_refused(d):
    """The device host must refuse a client without a certificate: at the handshake (ALB, the
    local gateway, Caddy) or with nginx's 400 before any handler runs. Our own check of the
    server's certificate must pass first, or the refusal proves nothing."""
    host, port = _host_port(d.device_url)
    raw = socket.create_connection((host, port), timeout=10)
    try:
        try:
            tls = _context(d.tls_ca_pem).wrap_socket(raw, server_hostname=host)
        except ssl.SSLCertVerificationError as exc:
            return "fail", f"the device host's own certificate does not verify ({exc.verify_message}): not checked"
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
            return "ok", f"handshake refused without a client certificate ({_tls_reason(exc)})"
        try:
            tls.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            reply = tls.recv(4096)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:  # TLS 1.3: the alert comes late
            return "ok", f"handshake refused without a client certificate ({_tls_reason(exc)})"
        finally:
            tls.close()
    finally:
        raw.close()
    if not reply:
        return "ok", "connection closed without an answer: no client certificate, no service"
    status_line = reply.split(b"\r\n", 1)[0].decode("latin-1")
    if status_line.split(" ")[1:2] == ["400"] and b"SSL certificate" in reply:
        return "ok", f"the proxy answered {status_line!r} itself (nginx: no required certificate sent)"
    return "fail", f"the device host answered {status_line!r} without a client certificate: mTLS is not enforced"


def _tls_reason(exc) -> str:
    return getattr(exc, "reason", None) or type(exc).__name__


def _with_cert(target, d, cert, key):
    """The device host accepts this certificate, and the IdP would too (its record is active)."""
    import json

    with open(cert, "rb") as handle:
        leaf = x509.load_pem_x509_certificate(handle.read())
    try:
        status, _, body = fetch(f"{d.device_url}/healthz", d.tls_ca_pem, cert=cert, key=key)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
        record = target.store().get_certificate(leaf.serial_number)
        why = f"revoked ({record.revocation_reason})" if record and record.status == "revoked" else _tls_reason(exc)
        return "fail", f"handshake refused for serial {leaf.serial_number:x}: {why}"
    if status != 200:
        return "fail", f"HTTP {status}"
    seen = json.loads(body)
    record = target.store().get_certificate(leaf.serial_number)
    if record is None:
        return "fail", f"serial {leaf.serial_number:x} is accepted at the handshake but unknown to the IdP"
    if record.status != "active":
        return "fail", (f"serial {leaf.serial_number:x} is {record.status} in the table but the load balancer still "
                        "accepts it: run devicegate crl publish")
    return "ok", f"serial {leaf.serial_number:x} (host {seen.get('host_uuid') or record.host_uuid}) accepted and active"


def _clock(d):
    _, headers, _ = fetch(f"{d.public_url}/healthz", d.tls_ca_pem)
    if "date" not in headers:
        return "warn", "the public host sent no Date header to compare clocks with"
    remote = email.utils.parsedate_to_datetime(headers["date"])
    skew = abs((datetime.now(timezone.utc) - remote).total_seconds())
    return ("ok" if skew < 30 else "warn" if skew < 120 else "fail"), f"{skew:.0f} s from the server's clock"


def _scep(d):
    status, _, caps = fetch(f"{d.scep_url}?operation=GetCACaps", d.tls_ca_pem)
    if status != 200:
        return "fail", f"GetCACaps: HTTP {status}"
    names = set(caps.decode("ascii", "replace").split())
    missing = {"AES", "SHA-256", "POSTPKIOperation"} - names
    status, _, der = fetch(f"{d.scep_url}?operation=GetCACert", d.tls_ca_pem)
    same = status == 200 and x509.load_der_x509_certificate(der) == x509.load_pem_x509_certificate(d.scep_ca_pem.encode())
    if missing or not same:
        return "fail", f"missing capabilities {sorted(missing)}" if missing else "GetCACert is not the deployment's CA"
    return "ok", f"capabilities {' '.join(sorted(names))}; GetCACert is the CA"


def _metadata(d):
    from ..saml import xmlsafe

    status, headers, body = fetch(d.metadata_url, d.tls_ca_pem)
    if status != 200:
        return "fail", f"HTTP {status}"
    root = xmlsafe.parse(body)
    problems = []
    if root.tag != f"{MD}EntityDescriptor" or root.get("entityID") != d.metadata_url:
        problems.append(f"entityID is {root.get('entityID')!r}, not the metadata URL")
    locations = {e.get("Location") for e in root.iter(f"{MD}SingleSignOnService")}
    if locations != {d.sso_url}:
        problems.append(f"SingleSignOnService locations {sorted(locations)} are not {d.sso_url}")
    certs = metadata_certificates(root)
    expected = x509.load_pem_x509_certificate(d.idp_cert_pem.encode())
    if not certs or certs[0] != expected:
        problems.append("the first signing certificate is not the one the IdP signs with")
    if problems:
        return "fail", "; ".join(problems)
    days = min((c.not_valid_after_utc - datetime.now(timezone.utc)).days for c in certs)
    return ("ok" if days >= 30 else "warn"), f"valid; {len(certs)} signing certificate(s), soonest expiry in {days} days"


def metadata_certificates(root) -> list[x509.Certificate]:
    """The signing certificates an IdP metadata document lists, in order (current first)."""
    return [x509.load_der_x509_certificate(base64.b64decode(e.text)) for e in root.iter(f"{DS}X509Certificate")]


def _trust_store(target, d):
    bundle = target.trust_bundle()
    certs = x509.load_pem_x509_certificates(bundle)
    ca = x509.load_pem_x509_certificate(d.scep_ca_pem.encode())
    if certs == [ca]:
        return "ok", "exactly the SCEP CA"
    return "fail", f"{len(certs)} certificate(s), {'including' if ca in certs else 'not including'} the SCEP CA"


def _crl(target, d):
    crl = x509.load_pem_x509_crl(target.published_crl())
    ca = x509.load_pem_x509_certificate(d.scep_ca_pem.encode())
    if not crl.is_signature_valid(ca.public_key()):
        return "fail", "the published CRL is not signed by the CA"
    now = datetime.now(timezone.utc)
    left = crl.next_update_utc - now
    listed = {entry.serial_number for entry in crl}
    revoked = {c.serial for c in target.store().revoked_certificates()}
    missing = revoked - listed
    detail = f"{len(listed)} revoked serial(s), next update in {left.days} d {left.seconds // 3600} h"
    if left <= timedelta(0):
        return "fail", detail + ": EXPIRED, the load balancer refuses every device. Run devicegate crl publish"
    if missing:  # the load balancer still lets them through the handshake
        return "fail", detail + f"; {len(missing)} revoked certificate(s) not in it yet: run devicegate crl publish"
    mismatch = target.revocation_mismatch(len(listed))
    if mismatch:
        return "fail", detail + f"; {mismatch}: run devicegate crl publish"
    return ("ok" if left > timedelta(days=2) else "warn"), detail


def _sync(target):
    report = target.store().sync_report()
    if not report:
        return "warn", "no sync has run yet"
    finished = datetime.fromisoformat(report["finished_at"])
    age = datetime.now(timezone.utc) - finished
    max_age = timedelta(seconds=target.max_data_age_seconds())
    detail = (f"last run {int(age.total_seconds() // 60)} min ago, {'complete' if report['complete'] else 'INCOMPLETE'}"
              f", {report['hosts_seen']} hosts")
    if not report["complete"]:
        return "fail", detail + f": {'; '.join(report['errors'][:2])}"
    if age >= max_age:
        return "fail", detail + f": older than the data age limit ({max_age}); logins are blocked as out of date"
    return ("ok" if age < min(timedelta(minutes=15), max_age / 4) else "warn"), detail
