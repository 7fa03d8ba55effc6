"""The Okta side: the SAML IdP devicegate answers for, and the macOS rule that requires it.

``OktaIdp``: the IdP signing key (our IdP certificate as x5c) and the SAML IdP -- issuer = our
metadata URL, SSO URL and destination = the device host's ``/saml/sso``, AuthnRequests signed
SHA-256, responses verified on any signature (we sign both), username from the NameID, matched
on username, no JIT provisioning -- and Okta's side of the trust read back from its SP metadata
(``get_metadata_saml``): the ACS URL, the audience and the SP signing certificate for the idp
function's settings. It depends on the device endpoint (ALB, listeners, DNS record).

``OktaEnforcement``: the ``external_idp`` authenticator bound to that IdP, an authentication
policy whose rule for macOS desktops requires password + that authenticator, and (optional) the
policy assigned to the configured apps. It depends on the device endpoint, the device routes and
the idp function, so ``pulumi destroy`` removes enforcement before any of them goes and no user
is sent to an IdP that is no longer there.

Okta's API has no documented way to set the IdP's "IdP usage: Factor only" (the
``IdentityProvider`` object has no such property; the provider has no argument for it), and the
IdP authenticator needs it. So enforcement is declared once the admin has made that one change
and said so with ``devicegate:idpFactorOnly=true``; until then ``manualSteps`` says what to do.

The provider's authenticator "create" first looks for an existing authenticator with the same
name *or the same key* and adopts it (okta/terraform-provider-okta, resource_okta_authenticator.go,
``findAuthenticatorV6``). In an org that already has an IdP authenticator (Duo Universal Prompt,
say) that would bind our rule to it and, on destroy, deactivate it. So: when the org has none,
the program creates ours and checks the result really is ours (its name) before any rule uses
it; when it has one, the admin adds ours in the console and names it with
``devicegate:oktaAuthenticatorId``, and the program only reads it (checking it points at our IdP).
"""

from __future__ import annotations

import json
import re
import textwrap

import pulumi
import pulumi_okta as okta

from .pki import pem_body
from .settings import StackSettings

CLOCK_SKEW_MS = 120_000  # Okta counts milliseconds; the idp function allows 120 s too
AUTHENTICATOR_KEY = "external_idp"
AUTHENTICATOR_NAME = "devicegate device check"


def certificate_pem(value: str) -> str:
    """Okta's metadata gives the X509Certificate text (base64 DER, maybe wrapped); make it PEM."""
    if "-----BEGIN CERTIFICATE-----" in value:
        return value.strip() + "\n"
    body = "".join(value.split())
    if not body or not re.fullmatch(r"[A-Za-z0-9+/]+=*", body):
        raise ValueError("Okta's SP signing certificate is neither PEM nor base64")
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(textwrap.wrap(body, 64)) + "\n-----END CERTIFICATE-----\n"


def authenticator_provider(idp_id: str) -> str:
    return json.dumps({"type": "CLAIMS", "configuration": {"idpId": idp_id}}, sort_keys=True)


def created_authenticator_id(authenticator_id: str, name: str, key: str) -> str:
    """The id of the authenticator the provider created -- refused if it adopted another one."""
    if key != AUTHENTICATOR_KEY or name != AUTHENTICATOR_NAME:
        raise pulumi.RunError(
            f"Okta returned the existing authenticator {name!r} ({authenticator_id}, key {key}) instead of creating "
            f"{AUTHENTICATOR_NAME!r}: the org already has an IdP authenticator. Do not run `pulumi destroy` as is "
            f"(it would deactivate {name!r}): run `pulumi state delete` on the okta:index/authenticator:Authenticator "
            "resource, add the devicegate IdP authenticator in the Admin Console (Security > Authenticators > Add > "
            "IdP Authenticator) and set devicegate:oktaAuthenticatorId to its id")
    return authenticator_id


def configured_authenticator_id(authenticator_id: str, key: str, provider_json: str | None, idp_id: str) -> str:
    """The id of the admin-created authenticator, once it is known to point at our IdP."""
    try:
        points_at = json.loads(provider_json or "{}").get("configuration", {}).get("idpId")
    except ValueError:
        points_at = None
    if key != AUTHENTICATOR_KEY or points_at != idp_id:
        raise pulumi.RunError(
            f"devicegate:oktaAuthenticatorId: {authenticator_id} is a {key} authenticator for IdP {points_at}, not the "
            f"IdP authenticator of the devicegate IdP {idp_id}. Fix: set it to the id of the IdP authenticator "
            "whose Identity Provider is devicegate (Security > Authenticators)")
    return authenticator_id


def rule_constraint(authenticator_id: str) -> str:
    """Password, and our authenticator as the possession factor (both required)."""
    return json.dumps({
        "knowledge": {"types": ["password"], "required": True},
        "possession": {"authenticationMethods": [{"key": AUTHENTICATOR_KEY, "id": authenticator_id}],
                       "required": True},
    }, sort_keys=True)


class OktaIdp(pulumi.ComponentResource):
    key: okta.idp.SamlKey
    idp: okta.idp.Saml
    idp_id: pulumi.Output[str]
    acs_url: pulumi.Output[str]
    audience: pulumi.Output[str]
    sp_cert_pem: pulumi.Output[str]

    def __init__(self, name: str, cfg: StackSettings, idp_cert_pem: pulumi.Input[str],
                 device_endpoint: list[pulumi.Resource], opts: pulumi.ResourceOptions | None = None):
        super().__init__("devicegate:index:OktaIdp", name, None, opts)
        after_endpoint = pulumi.ResourceOptions(parent=self, depends_on=device_endpoint)

        self.key = okta.idp.SamlKey(
            "signing-key", x5cs=[pulumi.Output.from_input(idp_cert_pem).apply(pem_body)], opts=after_endpoint)
        self.idp = okta.idp.Saml(
            "idp",
            name=f"devicegate ({cfg.domain})"[:100],
            issuer=cfg.metadata_url,
            sso_url=cfg.sso_url,
            sso_destination=cfg.sso_url,
            sso_binding="HTTP-POST",
            kid=self.key.id,
            request_signature_algorithm="SHA-256",
            request_signature_scope="REQUEST",
            response_signature_algorithm="SHA-256",
            response_signature_scope="ANY",
            username_template="idpuser.subjectNameId",
            subject_match_type="USERNAME",
            provisioning_action="DISABLED",  # a factor never creates or updates users
            profile_master=False,
            groups_action="NONE",
            account_link_action="AUTO",
            deprovisioned_action="NONE",
            suspended_action="NONE",
            max_clock_skew=CLOCK_SKEW_MS,
            status="ACTIVE",
            # `devicegate rotate idp-key` moves the IdP to a new key; `pulumi up` must not move it back
            opts=pulumi.ResourceOptions.merge(after_endpoint, pulumi.ResourceOptions(ignore_changes=["kid"])),
        )
        metadata = okta.idp.get_metadata_saml_output(idp_id=self.idp.id)
        self.idp_id = self.idp.id
        self.acs_url = metadata.http_post_binding
        self.audience = metadata.entity_id
        self.sp_cert_pem = metadata.signing_certificate.apply(certificate_pem)
        self.register_outputs({"idp_id": self.idp_id, "acs_url": self.acs_url, "audience": self.audience})


class OktaEnforcement(pulumi.ComponentResource):
    authenticator: okta.Authenticator | None  # None: the admin's, read by id
    authenticator_id: pulumi.Output[str]  # checked to be ours before any rule uses it
    policy: okta.AppSignonPolicy
    rule: okta.AppSignonPolicyRule
    assignments: list[okta.app.AccessPolicyAssignment]

    def __init__(self, name: str, cfg: StackSettings, idp: OktaIdp, depends_on: list[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("devicegate:index:OktaEnforcement", name, None, opts)
        after = pulumi.ResourceOptions(parent=self, depends_on=depends_on)

        if cfg.okta_authenticator_id:
            self.authenticator = None
            found = okta.get_authenticator_output(id=cfg.okta_authenticator_id)
            self.authenticator_id = pulumi.Output.all(found.id, found.key, found.provider_json, idp.idp_id).apply(
                lambda a: configured_authenticator_id(*a))
        else:
            self.authenticator = okta.Authenticator(
                "device-check",
                key=AUTHENTICATOR_KEY,
                name=AUTHENTICATOR_NAME,
                provider_json=idp.idp_id.apply(authenticator_provider),
                status="ACTIVE",
                legacy_ignore_name=False,
                opts=after,
            )
            self.authenticator_id = pulumi.Output.all(
                self.authenticator.id, self.authenticator.name, self.authenticator.key).apply(
                lambda a: created_authenticator_id(*a))
        self.policy = okta.AppSignonPolicy(
            "macos",
            name=f"devicegate: compliant Macs ({cfg.domain})"[:100],
            description="macOS desktops must pass devicegate's device check (Fleet policies) after the password.",
            opts=after,
        )
        self.rule = okta.AppSignonPolicyRule(
            "macos",
            policy_id=self.policy.id,
            name="macOS: password + compliant device",
            access="ALLOW",
            type="ASSURANCE",
            factor_mode="2FA",
            constraints=[self.authenticator_id.apply(rule_constraint)],
            platform_includes=[{"type": "DESKTOP", "os_type": "MACOS"}],
            network_connection="ANYWHERE",
            status="ACTIVE",
            opts=after,
        )
        # Assignment only once the rule exists; on destroy it goes first. (Okta cannot unassign a
        # policy: deleting the policy puts its apps back on the default one.)
        self.assignments = [
            okta.app.AccessPolicyAssignment(
                f"app-{app_id}", app_id=app_id, policy_id=self.policy.id,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[*depends_on, self.rule]))
            for app_id in cfg.okta_app_ids
        ]
        self.register_outputs({"authenticator_id": self.authenticator_id, "policy_id": self.policy.id})


def manual_steps(cfg: StackSettings, enforced: bool) -> list[str]:
    """What is left for a person to do, in order."""
    steps = []
    if not enforced:
        steps.append(
            "Okta Admin Console > Security > Identity Providers > the 'devicegate' IdP > Edit: set "
            "'IdP Usage' to 'Factor only' and save (Okta's API cannot set this). Then run "
            "`pulumi config set devicegate:idpFactorOnly true` and `pulumi up` again to create the IdP "
            "authenticator and the macOS authentication-policy rule. (If Security > Authenticators already "
            f"lists an IdP Authenticator, first add one there for the devicegate IdP, named '{AUTHENTICATOR_NAME}', "
            "and set devicegate:oktaAuthenticatorId to its id: Okta's provider would adopt the existing one.)")
    else:
        steps.append(
            f"Okta Admin Console > Security > Authenticators > Enrollment: allow '{AUTHENTICATOR_NAME}' "
            "(Optional) in the enrollment policy that applies to your Mac users; until then the macOS rule "
            "cannot be satisfied.")
        if not cfg.okta_app_ids:
            steps.append(
                "Put apps under the 'devicegate: compliant Macs' authentication policy (Applications > app > "
                "Sign On), or list them in devicegate:oktaAppIds.")
    steps.append(
        "Fleet > Policies > Manage automations > Other workflows: send failing-policy webhooks to "
        f"{cfg.webhook_url} with its secret, i.e. to `pulumi stack output fleetWebhookUrl --show-secrets`.")
    steps.append(
        "Fleet > Controls > OS settings > Custom settings: add the profile from `pulumi stack output "
        "mobileconfig --show-secrets > devicegate.mobileconfig` for the Macs that should enroll.")
    return steps
