"""Which Lambda answers which path on which load balancer.

The single source for both the AWS listener rules (infra) and the local gateway. Anything not
listed gets the load balancer's fixed 404 and never reaches a Lambda.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module


@dataclass(frozen=True)
class RouteSpec:
    listener: str  # "public" (<domain>) or "device" (okta.<domain>, mTLS verify)
    path: str
    function: str  # the Lambda's short name
    handler: str  # "module:function"

    def load_handler(self):
        module, _, name = self.handler.partition(":")
        return getattr(import_module(module), name)


ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("public", "/scep", "scep", "devicegate.scep.handler:lambda_handler"),
    RouteSpec("public", "/healthz", "health", "devicegate.health:lambda_handler"),
    RouteSpec("public", "/saml/metadata", "idp", "devicegate.saml.handler:lambda_handler"),
    RouteSpec("public", "/fleet/webhook", "webhook", "devicegate.compliance.webhook:lambda_handler"),
    RouteSpec("device", "/saml/sso", "idp", "devicegate.saml.handler:lambda_handler"),
    RouteSpec("device", "/saml/recheck", "idp", "devicegate.saml.handler:lambda_handler"),
    # On the device host it also reports the verified client certificate (see health.py).
    RouteSpec("device", "/healthz", "health", "devicegate.health:lambda_handler"),
)
