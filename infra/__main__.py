"""devicegate on AWS and Okta: the Pulumi program (``main: infra/`` in Pulumi.yaml).

Order matters twice. Settings, the AWS account/region and the DNS zone are read and checked
before any resource is declared. And the dependency edges are chosen so ``pulumi destroy`` runs
the safe way round: Okta enforcement (rule, policy, authenticator) depends on the device
endpoint, the device routes and the idp function; the Okta IdP depends on the device endpoint.
So enforcement goes first, then the Lambdas and routes, then the IdP, then the load balancers.
(The IdP cannot also depend on the idp function: the function's settings are read from the
IdP's metadata, which is the edge the other way.)
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent
# Pulumi runs this directory as a script, which puts infra/ itself first on sys.path: its modules
# (settings, data, okta, ...) must only ever be imported as infra.*, never as top-level modules.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
for _path in (_REPO / "lambdas", _REPO):  # `infra.*` and `devicegate.*` without installing either
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import pulumi  # noqa: E402

from infra import bundle as bundle_builder  # noqa: E402
from infra import settings as stack_settings  # noqa: E402
from infra.data import Data  # noqa: E402
from infra.functions import Functions, OktaValues  # noqa: E402
from infra.gateway import Gateway, Routes, lookup_zone  # noqa: E402
from infra.network import AwsContext, Network  # noqa: E402
from infra.okta import OktaEnforcement, OktaIdp, manual_steps  # noqa: E402
from infra.pki import Pki  # noqa: E402


def mobileconfig(cfg: stack_settings.StackSettings, challenge: str, ca_cert_pem: str) -> str:
    from devicegate.profile import build_profile

    labels = [label.replace("-", "") or "x" for label in reversed(cfg.domain.split("."))]
    profile = build_profile(
        scep_url=cfg.scep_url,
        challenge=challenge,
        ca_cert_pem=ca_cert_pem,
        device_url=cfg.device_url,
        organization="devicegate",
        identifier=".".join(labels + ["devicegate"]),
    )
    try:
        return profile.decode("utf-8")
    except UnicodeDecodeError:  # not an XML plist: hand it over losslessly
        return base64.b64encode(profile).decode()


def main() -> None:
    cfg = stack_settings.load()
    ctx = AwsContext.lookup()
    zone = lookup_zone(cfg)

    network = Network("network", cfg)
    pki = Pki("pki", cfg, ctx)
    data = Data("data", cfg, ctx, pki)
    gateway = Gateway("gateway", cfg, ctx, zone, network, data)
    idp = OktaIdp("okta-idp", cfg, pki.idp_cert_pem, gateway.device_endpoint)
    bundle = bundle_builder.build_bundle(log=pulumi.log.info)
    functions = Functions(
        "functions", cfg, ctx, pki, data, gateway.trust_store,
        OktaValues(acs_url=idp.acs_url, audience=idp.audience, sp_cert_pem=idp.sp_cert_pem), bundle)
    routes = Routes("routes", cfg, ctx, gateway, functions.functions)

    enforced = cfg.idp_factor_only
    enforcement = None
    if enforced:
        enforcement = OktaEnforcement("okta-enforcement", cfg, idp,
                        depends_on=[*gateway.device_endpoint, *routes.device_routes(), functions.functions["idp"],
                                    functions.crl_publish])

    pulumi.export("publicUrl", cfg.public_url)
    pulumi.export("deviceUrl", cfg.device_url)
    pulumi.export("scepUrl", cfg.scep_url)
    pulumi.export("metadataUrl", cfg.metadata_url)
    pulumi.export("ssoUrl", cfg.sso_url)
    pulumi.export("caCertificatePem", pki.ca_cert_pem)
    pulumi.export("idpCertificatePem", pki.idp_cert_pem)
    pulumi.export("oktaIdpId", idp.idp_id)
    pulumi.export("oktaAcsUrl", idp.acs_url)
    pulumi.export("oktaAudience", idp.audience)
    pulumi.export("oktaEnforcement", enforced)
    pulumi.export("manualSteps", manual_steps(cfg, enforced))
    pulumi.export("mobileconfig", pulumi.Output.secret(
        pulumi.Output.all(pki.scep_challenge, pki.ca_cert_pem).apply(lambda a: mobileconfig(cfg, *a))))
    pulumi.export("fleetWebhookUrl", pulumi.Output.secret(
        pki.webhook_secret.apply(lambda secret: f"{cfg.webhook_url}?secret={secret}")))
    pulumi.export("tableName", data.table.name)
    pulumi.export("trustStoreArn", gateway.trust_store.arn)
    pulumi.export("functionNames", {short: f.name for short, f in functions.functions.items()})
    # what the operations CLI (devicegate hosts|doctor|rotate idp-key|audit --outputs FILE) needs
    pulumi.export("region", ctx.region)
    pulumi.export("crlBucket", data.bucket.bucket)
    pulumi.export("idpKeySecretId", pki.secrets["idp_key"].arn)
    pulumi.export("logGroups", {short: g.name for short, g in functions.log_groups.items()})
    pulumi.export("oktaOrgUrl", okta_org_url())
    pulumi.export("oktaAuthenticatorId", enforcement.authenticator_id if enforcement else None)



def okta_org_url() -> str:
    import os

    config = pulumi.Config("okta")
    org = config.get("orgName") or os.environ.get("OKTA_ORG_NAME", "")
    base = config.get("baseUrl") or os.environ.get("OKTA_BASE_URL", "")
    return f"https://{org}.{base}"


main()
