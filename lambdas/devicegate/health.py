"""``/healthz`` on both load balancers. It touches no storage, so it says the function is up.

On the device host it also says which client certificate the load balancer verified (serial,
host UUID): the quickest way for an admin, or ``doctor``, to see the mTLS path end to end.
"""

from __future__ import annotations

import json

from . import alb, settings
from .scep.hostid import host_uuid_of  # not .scep.authority: that is the whole SCEP stack


def lambda_handler(event, context):
    return alb.serve(event, handle)


def handle(request: alb.Request) -> alb.Response:
    try:
        headers = settings.cert_headers_from_env()  # the IdP's, so a self-hosted proxy's show here too
    except settings.ConfigError as exc:
        return alb.Response(503, f"misconfigured: {exc}\n")
    try:
        cert = alb.client_cert(request, **headers)
    except alb.MtlsHeaderError as exc:
        return alb.Response(400, f"bad client certificate headers: {exc}\n")
    if cert is None:
        return alb.Response(200, "ok\n")
    body = {
        "status": "ok",
        "client_certificate": {
            "serial": cert.serial_hex,
            "host_uuid": host_uuid_of(cert.leaf) if cert.leaf is not None else None,
            "subject": cert.subject,
            "issuer": cert.issuer,
            "not_after": cert.not_after.isoformat() if cert.not_after else None,
        },
    }
    return alb.Response(200, json.dumps(body) + "\n", content_type="application/json")
