"""The IdP Lambda: ``/saml/metadata`` (public host), ``/saml/sso`` and ``/saml/recheck``
(device host, behind mTLS verify).

Per login: one read for the certificate, one conditional write for the request ID, one read
for the host's compliance. Every failure is a page with a reason and never a Response; when
storage is unreachable the answer is a 503 page (fail closed).
"""

from __future__ import annotations

import base64
import os
import time
from _thread import allocate_lock  # threading.Lock itself, without importing threading
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from .. import alb, logs, telemetry
from ..memo import remember
from ..compliance import decision as decision_mod
from ..scep import hostid
from ..store import AlreadyRecorded, CertificateRecord, Store, StoreUnavailable
from . import authn_request, pages, response

if TYPE_CHECKING:
    from .. import settings
    from ..compliance.source import ComplianceSource

log = logs.getLogger(__name__)

PENDING_TTL = timedelta(minutes=10)
EMAIL_FORMAT = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Idp:
    """The per-container state (internal: built once by ``_idp``). A plain class rather than
    a dataclass, whose generated methods cost a millisecond of every cold start."""

    def __init__(self, config: settings.IdpSettings, expect: authn_request.Expectations, signer: response.Signer,
                 metadata_xml: bytes, ca_cert: x509.Certificate, store: Store, source: ComplianceSource,
                 rules: decision_mod.Rules, clock=_utc_now):
        self.config, self.expect, self.signer, self.metadata_xml = config, expect, signer, metadata_xml
        self.ca_cert, self.store, self.source, self.rules, self.clock = ca_cert, store, source, rules, clock


_lock = allocate_lock()
_state: dict = {}


def _idp() -> Idp:
    with _lock:
        if "idp" in _state and time.monotonic() - _state["key_checked"] > _state["key_refresh"]:
            _refresh_signing_key(_state["idp"])
        if "idp" not in _state:
            # Needed by the set-up only (and the rare metadata fetch): imported here, not with the handler.
            from .. import settings
            from ..compliance.source import FleetSource, StoreSource
            from . import metadata

            config = settings.load_idp()
            secrets_client = settings.Secrets()
            ca_cert = settings.parse_ca_certificate(config.ca_secret_id, secrets_client.get(config.ca_secret_id, ttl=float("inf")))
            key_text = secrets_client.get(config.idp_key_secret_id, ttl=0)
            key = settings.parse_idp_secret(config.idp_key_secret_id, key_text)
            store = Store(config.table)
            fleet = settings.load_fleet()
            client = settings.fleet_client(fleet, secrets_client, interactive=True)
            source = FleetSource(store, client, fleet.enforcement()) if client else StoreSource(store)
            _state["idp"] = Idp(
                config=config,
                expect=authn_request.Expectations(
                    audience=config.okta_audience,
                    sso_url=config.sso_url,
                    acs_url=config.okta_acs_url,
                    sp_cert=x509.load_pem_x509_certificate(config.okta_sp_cert_pem.encode()),
                    require_signed=config.require_signed_requests,
                    clock_skew=timedelta(seconds=config.clock_skew_seconds),
                ),
                signer=response.Signer(key=key.private_key, cert_pem=key.certificate_pem),
                metadata_xml=metadata.build_metadata(entity_id=config.entity_id, sso_url=config.sso_url,
                                                     signing_certs=key.metadata_certificates()),
                ca_cert=ca_cert,
                store=store,
                source=source,
                rules=decision_mod.Rules(
                    max_age=timedelta(seconds=config.max_data_age_seconds),
                    fail_mode=decision_mod.FailMode(config.fail_mode),
                    strict=config.strict_policies,
                    require_device_user=config.require_device_user,
                ),
            )
            _state["secrets"], _state["key_text"], _state["key_checked"] = secrets_client, key_text, time.monotonic()
            _state["key_refresh"] = config.key_refresh_seconds
            if not config.require_signed_requests:
                log.warning("DEVICEGATE_REQUIRE_SIGNED_REQUESTS is false: unsigned AuthnRequests are accepted")
        return _state["idp"]


def _refresh_signing_key(idp: Idp) -> None:
    """Re-read the signing-key secret; when it changed, sign and publish with the new value."""
    from .. import settings
    from . import metadata

    _state["key_checked"] = time.monotonic()
    secret_id = idp.config.idp_key_secret_id
    try:
        text = _state["secrets"].get(secret_id, ttl=0)
        if text == _state["key_text"]:
            return
        key = settings.parse_idp_secret(secret_id, text)
    except Exception as exc:  # noqa: BLE001 - keep signing with the key we have; say why
        log.error("re-reading the IdP signing key failed, keeping the current one: %s", exc)
        return
    idp.signer = response.Signer(key=key.private_key, cert_pem=key.certificate_pem)
    idp.metadata_xml = metadata.build_metadata(entity_id=idp.config.entity_id, sso_url=idp.config.sso_url,
                                               signing_certs=key.metadata_certificates())
    _state["key_text"] = text
    log.warning("the IdP signing key changed: now signing with the certificate %s",
                x509.load_pem_x509_certificate(key.certificate_pem.encode()).fingerprint(hashes.SHA256()).hex())


def reset() -> None:
    from .. import settings

    with _lock:
        _state.clear()
        _issued_by_ca.clear()
    settings.load_idp.cache_clear()
    settings.load_fleet.cache_clear()


def lambda_handler(event, context):
    return alb.serve(event, handle, lambda exc: pages.bad_request(f"the load balancer event is unusable: {exc}"))


def handle(request: alb.Request) -> alb.Response:
    from .. import settings  # loaded by the first request's set-up; here for ConfigError

    try:
        idp = _idp()
    except settings.ConfigError as exc:
        log.error("idp configuration error: %s", exc)
        return pages.unavailable("The sign-in service is misconfigured. IT has been told.")
    except Exception:  # secrets unreachable at start-up: fail closed, say so
        log.exception("idp start-up failed")
        return pages.unavailable("The sign-in service is starting up or cannot reach its keys. Try again shortly.")
    try:
        if request.path == "/saml/metadata":
            if request.method not in ("GET", "HEAD"):
                return pages.bad_request("metadata is fetched with GET")
            from . import metadata

            return alb.Response(200, idp.metadata_xml, content_type=metadata.CONTENT_TYPE,
                                headers={"cache-control": "public, max-age=300"})
        if request.path == "/saml/sso":
            return _sso(idp, request)
        if request.path == "/saml/recheck":
            return _recheck(idp, request)
        return pages.not_found()
    except StoreUnavailable as exc:
        log.error("idp storage unavailable: %s", exc)
        return pages.unavailable("Device compliance cannot be checked right now, so sign-in is paused. Try again shortly.")
    except Exception:  # a bug of ours: fail closed with a page, never a stack trace
        log.exception("idp internal error")
        return pages.unavailable("The sign-in service hit an internal error. Try again; if it persists, contact IT.")


# ------------------------------------------------------------------------------ device identity


class _DeviceRefused(Exception):
    def __init__(self, page: alb.Response, reason: str, record: CertificateRecord | None = None):
        super().__init__(reason)
        self.page, self.reason, self.record = page, reason, record


_NOT_READ = object()  # a login's compliance not read along with its certificate


def _device(idp: Idp, request: alb.Request, now: datetime, *, with_compliance: bool = False):
    """The certificate record behind the verified client certificate; _DeviceRefused (with
    the page to show and the reason for the audit record) otherwise.

    ``with_compliance`` (a login): ``(record, compliance)``, where compliance is what the store
    holds for the host the leaf names, read in the same round trip as the record (or _NOT_READ
    when it could not be: no leaf, no host in it, a source that is not the store, another host)."""
    try:
        presented = alb.client_cert(request, serial_header=idp.config.serial_header, serial_format=idp.config.serial_format,
                                    leaf_header=idp.config.leaf_header, names=False)
    except alb.MtlsHeaderError as exc:
        log.warning("unusable client certificate headers: %s", exc)
        raise _DeviceRefused(pages.bad_request("the device certificate information from the load balancer is unusable"),
                             f"unusable certificate headers: {exc}") from None
    if presented is None:
        raise _DeviceRefused(pages.no_certificate(), "no client certificate")
    compliance, host = _NOT_READ, None
    login_store = getattr(idp.source, "login_store", None)
    if with_compliance and presented.leaf is not None and login_store is not None and login_store() is idp.store:
        host = hostid.host_uuid_of(presented.leaf)
    if host is not None:
        record, compliance = idp.store.get_certificate_and_compliance(presented.serial, host)
    else:
        record = idp.store.get_certificate(presented.serial)
    if record is None:
        raise _DeviceRefused(pages.unknown_certificate(), f"unknown certificate serial {presented.serial_hex}")
    if presented.leaf is not None:
        leaf = presented.leaf
        der = presented.der if presented.der is not None else leaf.public_bytes(Encoding.DER)
        if der != record.der:
            raise _DeviceRefused(pages.unknown_certificate(), "the presented certificate differs from the issued one")
        _check_issued_by_ca(leaf, der, idp.ca_cert)
    if record.status != "active":
        raise _DeviceRefused(pages.revoked_certificate(),
                             f"certificate revoked: {record.revocation_reason or 'no reason recorded'}", record)
    if not record.not_before <= now < record.not_after:
        raise _DeviceRefused(pages.expired_certificate(), "certificate outside its validity period", record)
    if not with_compliance:
        return record
    return record, (compliance if host == record.host_uuid else _NOT_READ)


# Leaves found issued by the CA, as (leaf DER, CA DER): both checks below depend on those bytes
# alone, so a device's later logins skip the RSA verify. Only successes are kept; bounded (when
# full it starts over).
_ISSUED_MAX = 256
_issued_by_ca: dict[tuple[bytes, bytes], bool] = {}
_ca_der: tuple = (None, b"")  # (the CA certificate object, its DER): held, so `is` stays meaningful


def _check_issued_by_ca(leaf: x509.Certificate, der: bytes, ca_cert: x509.Certificate) -> None:
    global _ca_der
    held = _ca_der
    if held[0] is not ca_cert:
        held = _ca_der = (ca_cert, ca_cert.public_bytes(Encoding.DER))
    key = (der, held[1])
    if key in _issued_by_ca:
        return
    if leaf.issuer != ca_cert.subject:
        raise _DeviceRefused(pages.unknown_certificate(), "the presented certificate differs from the issued one")
    try:  # the load balancer verified the chain already; this costs one RSA verify
        leaf.verify_directly_issued_by(ca_cert)
    except Exception:
        raise _DeviceRefused(pages.unknown_certificate(), "the certificate is not signed by the CA") from None
    remember(_issued_by_ca, key, True, _ISSUED_MAX)


# ------------------------------------------------------------------------------ SSO


def _sso(idp: Idp, request: alb.Request) -> alb.Response:
    now = idp.clock()
    try:
        if request.method == "GET":
            authn = authn_request.from_redirect(request.query, idp.expect, now)
        elif request.method == "POST":
            if not _is_form(request):
                return pages.bad_request("the sign-in request must be posted as a form")
            authn = authn_request.from_post(request.body, idp.expect, now)
        else:
            return pages.bad_request("sign-in requests use GET or POST")
    except authn_request.RequestRefused as exc:
        _audit(request, "login", None, None, "request_refused", 400, reason=exc.reason)
        return pages.bad_request(exc.reason)

    try:
        device, compliance = _device(idp, request, now, with_compliance=True)
    except _DeviceRefused as refused:
        _audit(request, "login", authn, refused.record, "device_refused", refused.page.status, reason=refused.reason)
        return refused.page

    # A request ID is answered once; keep it past the skew window so a replay is always seen.
    try:
        idp.store.remember_request(authn.issuer, authn.id, now + 2 * idp.expect.clock_skew + timedelta(minutes=5))
    except AlreadyRecorded:
        _audit(request, "login", authn, device, "replay", 400, reason="the request ID was already answered")
        return pages.bad_request("this sign-in request was already used; start again from Okta")

    pending = {
        "request_id": authn.id,
        "issuer": authn.issuer,
        "name_id": authn.name_id,
        "name_id_format": authn.name_id_format,
        "relay_state": authn.relay_state,
        "serial": format(device.serial, "x"),
        "host_uuid": device.host_uuid,
    }
    return _answer(idp, request, pending, device, now, action="login", compliance=compliance)


def _answer(idp: Idp, request: alb.Request, pending: dict, device: CertificateRecord, now: datetime, *, action: str,
            token: str | None = None, bypass: bool = False, compliance=_NOT_READ) -> alb.Response:
    if compliance is _NOT_READ:
        compliance = idp.source.host(device.host_uuid, refresh=action != "login")
    host, enforced = compliance if compliance else (None, frozenset())
    name_id, name_id_format = pending["name_id"], pending["name_id_format"]
    if name_id is None:
        users = host.device_users if host else ()
        if idp.config.name_id_from_device_user and len(users) == 1:
            name_id = users[0]
            name_id_format = EMAIL_FORMAT if "@" in name_id else None
        else:
            reason = ("Okta's request did not say who is signing in, and this IdP does not guess. "
                      "Ask IT to check the Okta IdP settings.")
            _audit(request, action, pending, device, "no_subject", 400, reason=reason)
            return pages.bad_request(reason)
    verdict = decision_mod.decide(host, enforced=enforced, now=now, rules=idp.rules, okta_user=name_id,
                                  bypass_available=bypass)
    if verdict.allowed:
        if token is not None:
            try:
                idp.store.finish_pending(token)
            except AlreadyRecorded:
                _audit(request, action, pending, device, "replay", 400, reason="the sign-in was already completed")
                return pages.bad_request("this sign-in was already completed; start again from Okta")
        _record_use(idp, device, now)
        xml = response.build_response(
            in_response_to=pending["request_id"],
            acs_url=idp.expect.acs_url,
            audience=idp.expect.audience,
            idp_entity_id=idp.config.entity_id,
            name_id=name_id,
            name_id_format=name_id_format,
            signer=idp.signer,
            now=now,
            sign_response=idp.config.sign_response,
        )
        _audit(request, action, pending, device, "allow" if not verdict.bypass_used else "allow_bypass", 200, verdict,
               name_id)
        return pages.auto_post(idp.expect.acs_url, base64.b64encode(xml).decode("ascii"), pending["relay_state"])

    if token is None:
        import secrets  # only a blocked login needs it

        token = secrets.token_urlsafe(32)
        idp.store.put_pending(token, pending, now + PENDING_TTL)
    bypass_allowed = (
        idp.config.allow_bypass and verdict.bypass_possible and not idp.store.bypass_used(device.host_uuid, now)
    )
    _audit(request, action, pending, device, verdict.outcome, 403, verdict, name_id)
    return pages.block_page(
        decision=verdict,
        hostname=host.hostname if host else None,
        host_uuid=device.host_uuid,
        okta_user=name_id,
        my_device_url=idp.config.my_device_url,
        recheck_token=token,
        bypass_allowed=bypass_allowed,
    )


# ------------------------------------------------------------------------------ check again


def _recheck(idp: Idp, request: alb.Request) -> alb.Response:
    import secrets
    from urllib.parse import parse_qsl

    now = idp.clock()
    if request.method != "POST":
        return pages.bad_request("“Check again” is a form; use the button on the page")
    if not _is_form(request):
        return pages.bad_request("“Check again” is a form; use the button on the page")
    origin = request.header("origin")
    if origin is not None and origin != _origin(idp.config.sso_url):
        return pages.bad_request("“Check again” must come from this sign-in page")
    try:
        pairs = parse_qsl(request.body.decode("ascii"), keep_blank_values=True, strict_parsing=True, max_num_fields=5)
    except (UnicodeDecodeError, ValueError):
        return pages.bad_request("the form is unusable")
    fields = dict(pairs)
    if len(fields) != len(pairs) or set(fields) - {"token", "action"}:
        return pages.bad_request("the form is unusable")
    token, action = fields.get("token", ""), fields.get("action", "recheck")
    if action not in ("recheck", "bypass") or not token or len(token) > 100:
        return pages.bad_request("the form is unusable")

    try:
        device = _device(idp, request, now)
    except _DeviceRefused as refused:
        _audit(request, action, None, refused.record, "device_refused", refused.page.status, reason=refused.reason)
        return refused.page
    pending = idp.store.get_pending(token, now)
    if pending is None:
        return pages.bad_request("this sign-in has expired; start again from Okta")
    if not secrets.compare_digest(pending["serial"], format(device.serial, "x")):
        _audit(request, action, pending, device, "device_mismatch", 400, reason="the sign-in was started on another device")
        return pages.bad_request("this sign-in was started on another device")

    bypass = False
    if action == "bypass":
        if not idp.config.allow_bypass:
            return pages.bad_request("bypass is not enabled")
        compliance = idp.source.host(device.host_uuid, refresh=False)
        host, enforced = compliance if compliance else (None, frozenset())
        verdict = decision_mod.decide(host, enforced=enforced, now=now, rules=idp.rules, okta_user=pending["name_id"])
        if verdict.allowed:
            bypass = False  # nothing to bypass any more
        elif not verdict.bypass_possible:
            _audit(request, action, pending, device, "bypass_refused", 400, verdict)
            return pages.bad_request("a critical policy is failing; it cannot be bypassed")
        else:
            try:
                idp.store.use_bypass(device.host_uuid, now, idp.config.bypass_window_seconds)
            except AlreadyRecorded:
                _audit(request, action, pending, device, "bypass_refused", 400, reason="the bypass was already used")
                return pages.bad_request("this device already used its bypass; fix the policies and check again")
            bypass = True
    return _answer(idp, request, pending, device, now, action=action, token=token, bypass=bypass)


USE_RECORD_INTERVAL = timedelta(hours=1)


def _record_use(idp: Idp, device: CertificateRecord, now: datetime) -> None:
    """An allowed login records that its certificate is in use: the first time, and then at
    most once an hour (so nearly every login stays at 2 reads + 1 write). The sync revokes a
    host's older certificate only once it has not been used since a newer one was."""
    if device.last_used_at is not None and now - device.last_used_at < USE_RECORD_INTERVAL:
        return
    try:
        idp.store.mark_use(device.serial, now, seen=device.last_used_at)
    except StoreUnavailable as exc:  # the login itself does not depend on it
        log.warning("recording the use of %x failed: %s", device.serial, exc)


def _is_form(request: alb.Request) -> bool:
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    return content_type == "application/x-www-form-urlencoded"


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _presented_serial(request: alb.Request) -> str | None:
    """The serial the load balancer verified, for records made before the table is read."""
    try:
        config = _state["idp"].config
        presented = alb.client_cert(request, serial_header=config.serial_header, serial_format=config.serial_format,
                                    leaf_header=config.leaf_header, names=False)
    except (alb.MtlsHeaderError, KeyError):
        return None
    return presented.serial_hex.lower() if presented else None


def _new_correlation_id() -> str:
    """``str(uuid.uuid4())`` (122 random bits, the version and variant bits set as uuid4 sets them),
    written out without a UUID object; ALB always sends X-Amzn-Trace-Id, so this is rarely used."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _audit(request: alb.Request, action: str, subject, device, outcome: str, status: int, verdict=None,
           user=None, reason: str | None = None) -> None:
    """One structured record per decision — who, device, certificate, policies, result, why —
    which is also an EMF metric (``Decisions`` per ``Outcome``) and what ``devicegate audit``
    reads back. ``subject`` is the AuthnRequest or the pending login (or None)."""
    if subject is None:
        request_id = issuer = None
    elif isinstance(subject, dict):
        request_id, issuer = subject.get("request_id"), subject.get("issuer")
        user = user or subject.get("name_id")
    else:
        request_id, issuer = subject.id, subject.issuer
        user = user or subject.name_id
    trace = request.header("x-amzn-trace-id")
    record = {
        "event": "decision",
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        # the load balancer's trace id when there is one, so access log and decision line up
        "correlation_id": trace[:200] if trace else _new_correlation_id(),
        "action": action,
        "request_id": request_id,
        "issuer": issuer,
        "user": user,
        "host_uuid": device.host_uuid if device else None,
        "serial": format(device.serial, "x") if device else _presented_serial(request),
        "source_ip": request.source_ip,
        "Outcome": outcome,
        "status": status,
        "Decisions": 1,
    }
    if verdict is not None:
        record["failing"] = [p.name for p in verdict.failing]
        record["reasons"] = [{"code": r.code, "message": r.text} for r in verdict.reasons]
    elif reason is not None:
        record["reasons"] = [{"code": "refused", "message": reason}]
    telemetry.emit(telemetry.emf(record, function="idp", metrics={"Decisions": "Count"}, dimensions=("Outcome",)))
