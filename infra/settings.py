"""Stack configuration -> one validated, frozen ``StackSettings``, before any resource exists.

Every problem is reported at once, each naming the key and the fix, so a first ``pulumi up``
with a half-filled stack file fails in the preview with a list to work through rather than
halfway through creating resources.

``parse`` is pure (a mapping of full keys to raw strings, plus the environment for the provider
fallbacks) so the rules are testable without a Pulumi engine; ``load`` reads the real stack
config. Secrets stay plain strings here (never printed: ``repr=False``); the components wrap
them with ``pulumi.Output.secret`` where they are used.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Mapping

import pulumi

NAMESPACE = "devicegate"
MAX_CERT_VALIDITY_DAYS = 398  # the runtime's own ceiling (devicegate.settings)

# Every key of the devicegate namespace, with its default (None: no default). Pulumi.yaml
# declares the same keys and defaults; a test keeps the two in step.
DEFAULTS: dict[str, object] = {
    "domain": None,
    "deviceHost": "",  # "" = okta.<domain>
    "hostedZoneId": "",
    "hostedZoneName": "",
    "vpcId": "",
    "publicSubnetIds": [],
    "fleetUrl": None,
    "fleetApiToken": None,
    "scepChallenge": "",  # "" = generated (random.RandomPassword)
    "enforcedPolicies": "",
    "failMode": "closed",
    "oktaAppIds": [],
    "retainData": True,
    "certValidityDays": 365,
    "idpFactorOnly": False,
    "oktaAuthenticatorId": "",  # "" = created by the program
    "reservedConcurrency": True,
}
SECRET_KEYS = ("fleetApiToken", "scepChallenge")

_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_VPC_ID = re.compile(r"vpc-[0-9a-f]{8,17}")
_SUBNET_ID = re.compile(r"subnet-[0-9a-f]{8,17}")
_ZONE_ID = re.compile(r"Z[A-Z0-9]{1,31}")
_OKTA_APP_ID = re.compile(r"0oa[A-Za-z0-9]{17}")
_OKTA_AUTHENTICATOR_ID = re.compile(r"aut[A-Za-z0-9]{17}")


class ConfigError(pulumi.RunError):
    """One or more stack settings are wrong; ``problems`` holds (key, problem, fix) triples."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        lines = [f"  {key}: {problem}. Fix: {fix}" for key, problem, fix in problems]
        noun = "setting needs" if len(problems) == 1 else "settings need"
        super().__init__(f"{len(problems)} stack {noun} attention:\n" + "\n".join(lines))

    @property
    def keys(self) -> list[str]:
        return [key for key, _, _ in self.problems]


@dataclass(frozen=True)
class StackSettings:
    project: str
    stack: str
    domain: str
    device_host: str
    hosted_zone_id: str | None
    hosted_zone_name: str | None
    vpc_id: str | None
    public_subnet_ids: tuple[str, ...]
    fleet_url: str
    fleet_api_token: str = field(repr=False)
    scep_challenge: str | None = field(repr=False)  # None: generate one
    enforced_policies: str = ""
    fail_mode: str = "closed"
    okta_app_ids: tuple[str, ...] = ()
    retain_data: bool = True
    cert_validity_days: int = 365
    idp_factor_only: bool = False
    okta_authenticator_id: str | None = None
    reserved_concurrency: bool = True

    # ----------------------------------------------------------------- derived names and URLs

    @property
    def public_url(self) -> str:
        return f"https://{self.domain}"

    @property
    def device_url(self) -> str:
        return f"https://{self.device_host}"

    @property
    def scep_url(self) -> str:
        return f"{self.public_url}/scep"

    @property
    def metadata_url(self) -> str:  # = the IdP entity ID
        return f"{self.public_url}/saml/metadata"

    @property
    def sso_url(self) -> str:
        return f"{self.device_url}/saml/sso"

    @property
    def webhook_url(self) -> str:
        return f"{self.public_url}/fleet/webhook"

    @property
    def uses_existing_vpc(self) -> bool:
        return self.vpc_id is not None

    @property
    def slug(self) -> str:
        """The stack name made safe for AWS names (Lambda, secrets, trust store)."""
        cleaned = re.sub(r"[^A-Za-z0-9-]+", "-", self.stack).strip("-").lower() or "stack"
        return cleaned[:20].rstrip("-")

    @property
    def prefix(self) -> str:
        return f"devicegate-{self.slug}"

    @property
    def trust_store_name(self) -> str:
        # ELB: 1..32 characters of [A-Za-z0-9-], no leading/trailing hyphen, no "--".
        name = re.sub(r"-{2,}", "-", f"{self.prefix}-devices")[:32].strip("-")
        return name

    def function_name(self, short: str) -> str:
        return f"{self.prefix}-{short}"


# ----------------------------------------------------------------------------- parsing helpers


def _text(raw: Mapping[str, str], key: str) -> str:
    value = raw.get(f"{NAMESPACE}:{key}")
    return "" if value is None else str(value).strip()


def _hostname(value: str) -> str | None:
    host = value.lower().rstrip(".")
    if not host or len(host) > 253 or "." not in host:
        return None
    if not all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
        return None
    return host


def _list(value: str) -> list[str] | None:
    """A JSON array of strings (``pulumi config set --path k[0] ...``) or a comma-separated list."""
    if not value:
        return []
    if value.startswith("["):
        try:
            items = json.loads(value)
        except ValueError:
            return None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            return None
        return [i.strip() for i in items if i.strip()]
    return [part.strip() for part in value.split(",") if part.strip()]


def _bool(value: str) -> bool | None:
    lowered = value.lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    return None


def parse(raw: Mapping[str, str], *, project: str = "devicegate", stack: str = "dev",
          environ: Mapping[str, str] | None = None) -> StackSettings:
    """Validate the raw config (full keys such as ``devicegate:domain``); raise ConfigError."""
    env = os.environ if environ is None else environ
    problems: list[tuple[str, str, str]] = []

    def bad(key: str, problem: str, fix: str) -> None:
        problems.append((key if ":" in key else f"{NAMESPACE}:{key}", problem, fix))

    # -- hosts
    domain_raw = _text(raw, "domain")
    domain = _hostname(domain_raw) if domain_raw else None
    if not domain_raw:
        bad("domain", "is not set",
            "pulumi config set devicegate:domain devicegate.example.com (the public host for SCEP and metadata)")
    elif domain is None or "://" in domain_raw:
        bad("domain", f"{domain_raw!r} is not a DNS host name",
            "use a bare host name such as devicegate.example.com (no scheme, path or port)")
        domain = None
    device_raw = _text(raw, "deviceHost")
    device_host = None
    if device_raw:
        device_host = _hostname(device_raw)
        if device_host is None or "://" in device_raw:
            bad("deviceHost", f"{device_raw!r} is not a DNS host name",
                "use a bare host name such as okta.devicegate.example.com, or unset it for okta.<domain>")
            device_host = None
    elif domain:
        device_host = f"okta.{domain}"
    if domain and device_host and device_host == domain:
        bad("deviceHost", "is the same host as devicegate:domain",
            "the mTLS host needs its own name (its own load balancer): unset it for okta.<domain>")

    # -- DNS zone
    zone_id = _text(raw, "hostedZoneId").removeprefix("/hostedzone/") or None
    zone_name = (_text(raw, "hostedZoneName").lower().rstrip(".") or None)
    if zone_id is None and zone_name is None:
        bad("hostedZoneId", "neither devicegate:hostedZoneId nor devicegate:hostedZoneName is set",
            "set one of them to the public Route53 zone that holds devicegate:domain "
            "(pulumi config set devicegate:hostedZoneName example.com)")
    elif zone_id is not None and zone_name is not None:
        bad("hostedZoneName", "is set together with devicegate:hostedZoneId",
            "set only one of devicegate:hostedZoneId and devicegate:hostedZoneName")
    if zone_id is not None and not _ZONE_ID.fullmatch(zone_id):
        bad("hostedZoneId", f"{zone_id!r} is not a Route53 hosted zone id",
            "use the zone's id as shown by `aws route53 list-hosted-zones` (Z followed by letters and digits)")
    if zone_name is not None:
        if _hostname(zone_name) is None:
            bad("hostedZoneName", f"{zone_name!r} is not a DNS zone name", "use the zone's name, e.g. example.com")
        else:
            for key, host in (("domain", domain), ("deviceHost", device_host)):
                if host and host != zone_name and not host.endswith("." + zone_name):
                    bad(key, f"{host} is not inside the zone {zone_name}",
                        "choose a host under devicegate:hostedZoneName, or name the zone that holds it")

    # -- network
    vpc_id = _text(raw, "vpcId") or None
    subnets = _list(_text(raw, "publicSubnetIds"))
    if subnets is None:
        bad("publicSubnetIds", "is neither a JSON list nor a comma-separated list",
            "pulumi config set --path 'devicegate:publicSubnetIds[0]' subnet-... (one per availability zone)")
        subnets = []
    if vpc_id is not None and not _VPC_ID.fullmatch(vpc_id):
        bad("vpcId", f"{vpc_id!r} is not a VPC id", "use the id of an existing VPC (vpc-...), or unset it")
    if vpc_id is None and subnets:
        bad("vpcId", "is not set while devicegate:publicSubnetIds is",
            "set devicegate:vpcId to the VPC of those subnets, or unset both to get a new VPC")
    if vpc_id is not None:
        if len(subnets) < 2:
            bad("publicSubnetIds", f"has {len(subnets)} subnet(s); an Application Load Balancer needs two",
                "list at least two public subnets of devicegate:vpcId in different availability zones")
        for subnet in subnets:
            if not _SUBNET_ID.fullmatch(subnet):
                bad("publicSubnetIds", f"{subnet!r} is not a subnet id", "use subnet ids (subnet-...)")
        if len(set(subnets)) != len(subnets):
            bad("publicSubnetIds", "lists a subnet twice", "list each subnet once")

    # -- Fleet
    fleet_url = _text(raw, "fleetUrl").rstrip("/")
    if not fleet_url:
        bad("fleetUrl", "is not set",
            "pulumi config set devicegate:fleetUrl https://fleet.example.com (compliance comes from Fleet)")
    elif not re.fullmatch(r"https://[^/\s?#]+(/[^\s?#]*)?", fleet_url):
        bad("fleetUrl", f"{fleet_url!r} is not an https:// URL", "use your Fleet server's https URL")
    fleet_token = _text(raw, "fleetApiToken")
    if not fleet_token:
        bad("fleetApiToken", "is not set",
            "pulumi config set --secret devicegate:fleetApiToken <token of an API-only Fleet user>")

    challenge = _text(raw, "scepChallenge") or None
    if challenge is not None:
        if len(challenge) < 16:
            bad("scepChallenge", "is shorter than 16 characters",
                "use a long random value, or unset it and one is generated")
        elif len(challenge) > 255 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in challenge):
            bad("scepChallenge", "has control characters or is over 255 characters",
                "use printable characters only (letters and digits are safest for SCEP clients)")

    enforced = _text(raw, "enforcedPolicies")
    if enforced:
        from devicegate.compliance.enforcement import Enforcement

        try:
            Enforcement.parse(enforced)
        except ValueError as exc:
            bad("enforcedPolicies", "is not understood", str(exc))

    fail_mode = (_text(raw, "failMode") or "closed").lower()
    if fail_mode not in ("closed", "open"):
        bad("failMode", f"{fail_mode!r} is not closed or open",
            "use closed (stale compliance data blocks logins, the default) or open")

    app_ids = _list(_text(raw, "oktaAppIds"))
    if app_ids is None:
        bad("oktaAppIds", "is neither a JSON list nor a comma-separated list",
            "pulumi config set --path 'devicegate:oktaAppIds[0]' 0oa...")
        app_ids = []
    for app_id in app_ids:
        if not _OKTA_APP_ID.fullmatch(app_id):
            bad("oktaAppIds", f"{app_id!r} is not an Okta app id",
                "use the app's id (0oa followed by 17 letters/digits, in the app's Admin Console URL)")

    authenticator_id = _text(raw, "oktaAuthenticatorId") or None
    if authenticator_id is not None and not _OKTA_AUTHENTICATOR_ID.fullmatch(authenticator_id):
        bad("oktaAuthenticatorId", f"{authenticator_id!r} is not an Okta authenticator id",
            "use the id (aut followed by 17 letters/digits) of the devicegate IdP authenticator, or unset it")

    flags = {}
    for key in ("retainData", "idpFactorOnly", "reservedConcurrency"):
        text = _text(raw, key)
        value = DEFAULTS[key] if not text else _bool(text)
        if value is None:
            bad(key, f"{text!r} is not a boolean", "use true or false")
            value = DEFAULTS[key]
        flags[key] = value

    validity_text = _text(raw, "certValidityDays")
    validity = 365
    if validity_text:
        try:
            validity = int(validity_text)
        except ValueError:
            bad("certValidityDays", f"{validity_text!r} is not a whole number",
                f"use a number of days from 1 to {MAX_CERT_VALIDITY_DAYS}")
        else:
            if not 1 <= validity <= MAX_CERT_VALIDITY_DAYS:
                bad("certValidityDays", f"{validity} is out of range",
                    f"use a number of days from 1 to {MAX_CERT_VALIDITY_DAYS} (Apple and browsers refuse longer)")

    # -- the providers' own settings (config or their environment variables)
    def provider_value(key: str, *env_names: str) -> str:
        return str(raw.get(key) or "").strip() or next((env[n] for n in env_names if env.get(n)), "")

    if not provider_value("okta:orgName", "OKTA_ORG_NAME"):
        bad("okta:orgName", "is not set", "pulumi config set okta:orgName <your org, e.g. dev-123456>")
    if not provider_value("okta:baseUrl", "OKTA_BASE_URL"):
        bad("okta:baseUrl", "is not set", "pulumi config set okta:baseUrl okta.com (or oktapreview.com)")
    has_token = provider_value("okta:apiToken", "OKTA_API_TOKEN")
    has_oauth = provider_value("okta:clientId", "OKTA_API_CLIENT_ID") and (
        provider_value("okta:privateKey", "OKTA_API_PRIVATE_KEY")
        or provider_value("okta:accessToken", "OKTA_ACCESS_TOKEN"))
    if not (has_token or has_oauth):
        bad("okta:apiToken", "no Okta credentials are set",
            "pulumi config set --secret okta:apiToken <token of a super admin>, or set okta:clientId, "
            "okta:privateKey and okta:scopes for an OAuth service app")
    if not provider_value("aws:region", "AWS_REGION", "AWS_DEFAULT_REGION"):
        bad("aws:region", "is not set", "pulumi config set aws:region us-east-1 (or your region)")

    if problems:
        raise ConfigError(problems)
    return StackSettings(
        project=project,
        stack=stack,
        domain=domain,
        device_host=device_host,
        hosted_zone_id=zone_id,
        hosted_zone_name=zone_name,
        vpc_id=vpc_id,
        public_subnet_ids=tuple(subnets),
        fleet_url=fleet_url,
        fleet_api_token=fleet_token,
        scep_challenge=challenge,
        enforced_policies=enforced,
        fail_mode=fail_mode,
        okta_app_ids=tuple(dict.fromkeys(app_ids)),
        retain_data=flags["retainData"],
        cert_validity_days=validity,
        idp_factor_only=flags["idpFactorOnly"],
        okta_authenticator_id=authenticator_id,
        reserved_concurrency=flags["reservedConcurrency"],
    )


PROVIDER_KEYS = (
    "okta:orgName", "okta:baseUrl", "okta:apiToken", "okta:clientId", "okta:privateKey", "okta:accessToken",
    "aws:region",
)


def load() -> StackSettings:
    """The current stack's settings, validated (raises ConfigError before anything is declared)."""
    from pulumi.runtime.config import get_config, is_config_secret

    raw: dict[str, str] = {}
    for key in [f"{NAMESPACE}:{k}" for k in DEFAULTS] + list(PROVIDER_KEYS):
        value = get_config(key)
        if value is not None:
            raw[key] = value if isinstance(value, str) else json.dumps(value)
    for key in SECRET_KEYS:
        full = f"{NAMESPACE}:{key}"
        if raw.get(full) and not is_config_secret(full):
            pulumi.log.warn(f"{full} is stored in plain text: set it with `pulumi config set --secret {full} ...`")
    return parse(raw, project=pulumi.get_project(), stack=pulumi.get_stack())
