"""The two front doors: ``<domain>`` (public) and ``<deviceHost>`` (mTLS verify), one ALB each.

``Gateway`` is everything that does not depend on a Lambda: the ACM certificate for both hosts
(DNS-validated in the Route53 zone), the trust store (the CA bundle from the bucket, object
version pinned; its revocation list is the crl function's, published when the stack is deployed
and daily, see functions.py), both ALBs (``drop_invalid_header_fields``),
their HTTPS listeners (modern TLS policy, fixed 404 by default, security response headers; the
device one in mTLS ``verify`` mode with our trust store, expired certificates refused) and
HTTP listeners that only redirect, and the alias records. The Okta IdP depends on these, so a
destroy removes it before the device endpoint goes.

``Routes`` connects the Lambdas: one target group per (listener, function), the permission for
that target group to invoke the function, and one listener rule per entry of
``devicegate.routes.ROUTES`` -- the same table the local gateway serves, so SSO and "check
again" exist on the device ALB only. Rules match the host too, so a request to the ALB's own
DNS name gets the 404.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from devicegate.routes import ROUTES

from .data import Data
from .network import AwsContext, Network
from .settings import ConfigError, StackSettings

LISTENERS = ("public", "device")
# AWS's recommended policy: TLS 1.3 and 1.2 with forward-secret AEAD ciphers only.
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
NOT_FOUND = {"type": "fixed-response",
             "fixed_response": {"content_type": "text/plain", "message_body": "Not Found\n", "status_code": "404"}}
# Added by the ALB to every response. No Content-Security-Policy here: the IdP's pages carry
# their own hashed CSP, which an ALB-level header would replace. No includeSubDomains: the
# domain may be an apex whose other subdomains are not ours.
SECURITY_HEADERS = {
    "routing_http_response_strict_transport_security_header_value": "max-age=31536000",
    "routing_http_response_x_content_type_options_header_value": "nosniff",
    "routing_http_response_x_frame_options_header_value": "DENY",
    "routing_http_response_server_enabled": False,
}


@dataclass(frozen=True)
class Zone:
    id: str
    name: str


def lookup_zone(cfg: StackSettings) -> Zone:
    """The public hosted zone, checked to hold both hosts (before anything is declared).

    A zone id is first looked for among the account's zones, so a wrong id is a config error
    naming the key (a failed lookup would only surface as the provider's error). A zone name
    that matches no public zone is the provider's "no matching Route 53 Hosted Zone found".
    """
    if cfg.hosted_zone_id:
        key = "devicegate:hostedZoneId"
        if cfg.hosted_zone_id not in (aws.route53.get_zones().ids or []):
            raise ConfigError([(key, f"{cfg.hosted_zone_id} is not a hosted zone of this AWS account",
                                "use the id of the public zone that holds devicegate:domain "
                                "(aws route53 list-hosted-zones), or set devicegate:hostedZoneName instead")])
        found = aws.route53.get_zone(zone_id=cfg.hosted_zone_id)
    else:
        key = "devicegate:hostedZoneName"
        found = aws.route53.get_zone(name=cfg.hosted_zone_name, private_zone=False)
    if found.private_zone:
        raise ConfigError([(key, "is a private hosted zone", "use the public zone: Okta and Macs resolve these names")])
    name = (found.name or "").lower().rstrip(".")
    zone_id = found.zone_id or found.id
    problems = [
        (host_key, f"{host} is not inside the hosted zone {name}",
         f"choose a host under {name}, or point {key} at the zone that holds it")
        for host_key, host in (("devicegate:domain", cfg.domain), ("devicegate:deviceHost", cfg.device_host))
        if host != name and not host.endswith("." + name)
    ]
    if problems:
        raise ConfigError(problems)
    return Zone(id=zone_id, name=name)


def _slug(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "root"


class Gateway(pulumi.ComponentResource):
    load_balancers: dict[str, aws.lb.LoadBalancer]
    https: dict[str, aws.lb.Listener]
    http: dict[str, aws.lb.Listener]
    records: dict[str, aws.route53.Record]
    hosts: dict[str, str]
    trust_store: aws.lb.TrustStore
    certificate: aws.acm.Certificate

    def __init__(self, name: str, cfg: StackSettings, ctx: AwsContext, zone: Zone, network: Network, data: Data,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("devicegate:index:Gateway", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = {"devicegate:stack": cfg.stack}
        self.hosts = {"public": cfg.domain, "device": cfg.device_host}

        # -- trust store: the CA bundle at a pinned version (a new CA is a new version: an update)
        self.trust_store = aws.lb.TrustStore(
            "devices",
            name=cfg.trust_store_name,  # fixed: the bucket and key policies name it
            ca_certificates_bundle_s3_bucket=data.bucket.id,
            ca_certificates_bundle_s3_key=data.ca_bundle.key,
            ca_certificates_bundle_s3_object_version=data.ca_bundle.version_id,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[data.bucket_policy]),
        )

        # -- one certificate for both hosts, validated through the zone
        self.certificate = aws.acm.Certificate(
            "tls", domain_name=cfg.domain, subject_alternative_names=[cfg.device_host],
            validation_method="DNS", key_algorithm="RSA_2048", tags=tags, opts=child)
        validation_records = []
        for listener, host in self.hosts.items():
            option = self.certificate.domain_validation_options.apply(
                lambda options, host=host: next(o for o in options if o.domain_name == host))
            validation_records.append(aws.route53.Record(
                f"tls-validation-{listener}",
                zone_id=zone.id,
                name=option.resource_record_name,
                type=option.resource_record_type,
                records=[option.resource_record_value],
                ttl=300,
                allow_overwrite=True,
                opts=child,
            ))
        validation = aws.acm.CertificateValidation(
            "tls", certificate_arn=self.certificate.arn,
            validation_record_fqdns=[r.fqdn for r in validation_records], opts=child)

        self.load_balancers, self.https, self.http, self.records = {}, {}, {}, {}
        for listener, host in self.hosts.items():
            listener_tags = {**tags, "devicegate:listener": listener}
            alb = aws.lb.LoadBalancer(
                listener,
                load_balancer_type="application",
                internal=False,
                ip_address_type="ipv4",
                subnets=network.subnet_ids,
                security_groups=[network.security_group_id],
                drop_invalid_header_fields=True,
                desync_mitigation_mode="defensive",  # AWS's default, stated: strictest refuses some real clients
                enable_deletion_protection=False,  # `pulumi destroy` must be able to remove it
                idle_timeout=60,
                tags=listener_tags,
                opts=child,
            )
            mutual = None
            if listener == "device":
                mutual = {
                    "mode": "verify",
                    "trust_store_arn": self.trust_store.arn,
                    "ignore_client_certificate_expiry": False,
                    # Lets macOS and Chrome offer the right identity without asking.
                    "advertise_trust_store_ca_names": "on",
                }
            self.https[listener] = aws.lb.Listener(
                f"{listener}-https",
                load_balancer_arn=alb.arn,
                port=443,
                protocol="HTTPS",
                ssl_policy=TLS_POLICY,
                certificate_arn=validation.certificate_arn,
                mutual_authentication=mutual,
                default_actions=[NOT_FOUND],
                tags=listener_tags,
                opts=child,
                **SECURITY_HEADERS,
            )
            self.http[listener] = aws.lb.Listener(
                f"{listener}-http",
                load_balancer_arn=alb.arn,
                port=80,
                protocol="HTTP",
                default_actions=[{"type": "redirect",
                                  "redirect": {"protocol": "HTTPS", "port": "443", "status_code": "HTTP_301"}}],
                tags=listener_tags,
                opts=child,
            )
            self.records[listener] = aws.route53.Record(
                f"{listener}-alias",
                zone_id=zone.id,
                name=host,
                type="A",
                aliases=[{"name": alb.dns_name, "zone_id": alb.zone_id, "evaluate_target_health": False}],
                opts=child,
            )
            self.load_balancers[listener] = alb
        self.register_outputs({"trust_store_arn": self.trust_store.arn})

    @property
    def device_endpoint(self) -> list[pulumi.Resource]:
        """What Okta's IdP points at: the device ALB, its listeners and its DNS name."""
        return [self.load_balancers["device"], self.https["device"], self.http["device"], self.records["device"]]


class Routes(pulumi.ComponentResource):
    """Listener rules from ``ROUTES``, each forwarding to a Lambda target group."""

    target_groups: dict[tuple[str, str], aws.lb.TargetGroup]
    rules: dict[tuple[str, str], aws.lb.ListenerRule]  # (listener, path) -> rule
    attachments: dict[tuple[str, str], aws.lb.TargetGroupAttachment]

    def __init__(self, name: str, cfg: StackSettings, ctx: AwsContext, gateway: Gateway,
                 functions: dict[str, aws.lambda_.Function], opts: pulumi.ResourceOptions | None = None):
        super().__init__("devicegate:index:Routes", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = {"devicegate:stack": cfg.stack}
        self.target_groups, self.rules, self.attachments = {}, {}, {}

        for listener in LISTENERS:
            priority = 0
            for route in (r for r in ROUTES if r.listener == listener):
                if route.function not in functions:
                    raise pulumi.RunError(f"route {listener} {route.path} names an unknown function {route.function!r}")
                key = (listener, route.function)
                if key not in self.target_groups:
                    function = functions[route.function]
                    group = aws.lb.TargetGroup(
                        f"{listener}-{route.function}",
                        target_type="lambda",
                        lambda_multi_value_headers_enabled=True,  # handlers speak multi-value events
                        health_check={"enabled": False},  # a health check would invoke the function
                        tags={**tags, "devicegate:listener": listener},
                        opts=child,
                    )
                    permission = aws.lambda_.Permission(
                        f"{listener}-{route.function}",
                        action="lambda:InvokeFunction",
                        function=function.name,
                        principal=f"elasticloadbalancing.{ctx.dns_suffix}",
                        source_arn=group.arn,
                        source_account=ctx.account_id,
                        opts=child,
                    )
                    self.attachments[key] = aws.lb.TargetGroupAttachment(
                        f"{listener}-{route.function}",
                        target_group_arn=group.arn,
                        target_id=function.arn,
                        opts=pulumi.ResourceOptions(parent=self, depends_on=[permission]),
                    )
                    self.target_groups[key] = group
                priority += 10
                self.rules[(listener, route.path)] = aws.lb.ListenerRule(
                    f"{listener}-{_slug(route.path)}",
                    listener_arn=gateway.https[listener].arn,
                    priority=priority,
                    actions=[{"type": "forward", "target_group_arn": self.target_groups[key].arn}],
                    conditions=[
                        {"host_header": {"values": [gateway.hosts[listener]]}},
                        {"path_pattern": {"values": [route.path]}},
                    ],
                    tags={**tags, "devicegate:listener": listener},
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[self.attachments[key]]),
                )
        self.register_outputs({})

    def device_routes(self) -> list[pulumi.Resource]:
        """The device listener's rules and attachments (what a login goes through)."""
        return [rule for (listener, _), rule in self.rules.items() if listener == "device"] + [
            attachment for (listener, _), attachment in self.attachments.items() if listener == "device"]
