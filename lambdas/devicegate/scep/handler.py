"""SCEP over HTTP (RFC 8894 section 4): the Lambda behind ``/scep`` on the public host.

A thin adapter: ALB event in, ALB response out. The CA key, the store and the authority are
built once per container; the challenge is re-read from Secrets Manager every few minutes so
a rotation takes effect without a redeploy.
"""

from __future__ import annotations

import base64
import binascii
from _thread import allocate_lock  # threading.Lock itself, without importing threading

from cryptography.hazmat.primitives.serialization import Encoding

from .. import alb, logs
from ..store import Store
from . import protocol
from .authority import Authority

log = logs.getLogger(__name__)

CA_CAPS = ("POSTPKIOperation", "SHA-256", "AES", "SCEPStandard", "Renewal")
_MAX_GET_MESSAGE_CHARS = (protocol.MAX_MESSAGE_BYTES * 4) // 3 + 1024  # base64 plus percent-escapes
_lock = allocate_lock()
_state: dict = {}


def _authority() -> tuple[Authority, bytes]:
    with _lock:
        if "authority" not in _state:
            from .. import settings  # the set-up's: environment, secrets, keys (not needed to import)

            config = settings.load()
            secrets = settings.Secrets()
            ca = settings.parse_ca_secret(config.ca_secret_id, secrets.get(config.ca_secret_id, ttl=float("inf")))
            _state["ca_der"] = ca.certificate.public_bytes(Encoding.DER)
            fleet = settings.load_fleet()
            client = settings.fleet_client(fleet, secrets, interactive=True) if fleet.require_known_host else None
            _state["authority"] = Authority(
                ca_cert=ca.certificate,
                ca_key=ca.private_key,
                store=Store(config.table),
                challenge=lambda: secrets.get(config.scep_challenge_secret_id),
                validity_days=config.cert_validity_days,
                accept_cn_uuid=config.accept_cn_uuid,
                # With Fleet configured, only hosts Fleet knows may enroll.
                host_known=(lambda uuid: client.host_by_uuid(uuid) is not None) if client else (lambda uuid: True),
            )
        return _state["authority"], _state["ca_der"]


def reset() -> None:
    """Forget the cached authority (tests, and the local stack after it rewrites settings)."""
    from .. import settings

    with _lock:
        _state.clear()
    settings.load.cache_clear()
    settings.load_fleet.cache_clear()


def lambda_handler(event, context):
    return alb.serve(event, handle)


def handle(request: alb.Request) -> alb.Response:
    from .. import settings  # loaded by the first request's set-up; here for ConfigError

    try:
        return _dispatch(request)
    except settings.ConfigError as exc:
        log.error("scep configuration error: %s", exc)
        return alb.Response(503, "the SCEP service is misconfigured; the operator has been told\n")
    except Exception as exc:  # secrets or CA unreachable at start-up: say so, never a 500
        log.exception("scep start-up failed")
        return alb.Response(503, f"the SCEP service is not ready ({type(exc).__name__}); retry later\n")


def _dispatch(request: alb.Request) -> alb.Response:
    operation = request.query_value("operation")
    if operation is None:
        return alb.Response(400, "missing operation= (GetCACaps, GetCACert or PKIOperation)\n")
    if operation == "GetCACaps":
        return alb.Response(200, "\n".join(CA_CAPS) + "\n")
    if operation == "GetCACert":
        _, ca_der = _authority()
        return alb.Response(200, ca_der, content_type="application/x-x509-ca-cert")
    if operation == "PKIOperation":
        return _pki_operation(request)
    return alb.Response(400, f"unknown operation {operation[:40]!r}\n")


def _pki_operation(request: alb.Request) -> alb.Response:
    if request.method == "POST":
        message = request.body
    elif request.method == "GET":
        encoded = request.query_value("message")
        if encoded is None:
            return alb.Response(400, "PKIOperation by GET needs message=<base64 pkiMessage>\n")
        if len(encoded) > _MAX_GET_MESSAGE_CHARS:
            return alb.Response(413, "message= is larger than a pkiMessage can be\n")
        try:
            # Clients wrap base64 at 64 columns; the characters themselves must be strict.
            message = base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError):
            return alb.Response(400, "message= is not valid base64\n")
    else:
        return alb.Response(405, "PKIOperation is GET or POST\n")
    if not message:
        return alb.Response(400, "empty pkiMessage\n")
    if len(message) > protocol.MAX_MESSAGE_BYTES:
        return alb.Response(413, f"pkiMessage larger than {protocol.MAX_MESSAGE_BYTES} bytes\n")
    authority, _ = _authority()
    try:
        reply = authority.respond(message)
    except protocol.Malformed as exc:
        log.info("scep malformed request: %s", exc)
        return alb.Response(400, f"malformed pkiMessage: {exc}\n")
    return alb.Response(200, reply, content_type="application/x-pki-message")
