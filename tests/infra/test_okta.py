"""The Okta side, the dependency edges that order `pulumi destroy`, and the stack outputs."""

import json
import plistlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from infra.okta import certificate_pem
from infra.pki import pem_body
from tests.infra import harness

SAML = "okta:idp/saml:Saml"
KEY = "okta:idp/samlKey:SamlKey"
AUTHENTICATOR = "okta:index/authenticator:Authenticator"
POLICY = "okta:index/appSignonPolicy:AppSignonPolicy"
RULE = "okta:index/appSignonPolicyRule:AppSignonPolicyRule"
ASSIGNMENT = "okta:app/accessPolicyAssignment:AccessPolicyAssignment"


def test_saml_idp_settings(deployment):
    idp = deployment.one(SAML).inputs
    assert idp["issuer"] == "https://devicegate.example.com/saml/metadata"
    assert idp["ssoUrl"] == idp["ssoDestination"] == "https://okta.devicegate.example.com/saml/sso"
    assert idp["requestSignatureAlgorithm"] == "SHA-256"
    assert idp["requestSignatureScope"] == "REQUEST"
    assert idp["responseSignatureAlgorithm"] == "SHA-256"
    assert idp["responseSignatureScope"] == "ANY"
    assert idp["usernameTemplate"] == "idpuser.subjectNameId"
    assert idp["subjectMatchType"] == "USERNAME"
    assert idp["provisioningAction"] == "DISABLED"
    assert 0 < idp["maxClockSkew"] <= 300_000  # milliseconds
    assert idp["kid"] == deployment.one(KEY).id


def test_signing_key_is_our_idp_certificate(deployment):
    d = deployment
    (x5c,) = d.one(KEY).inputs["x5cs"]
    cert = x509.load_pem_x509_certificate(d.outputs["idpCertificatePem"].encode())
    assert x5c == pem_body(d.outputs["idpCertificatePem"])
    import base64

    assert base64.b64decode(x5c) == cert.public_bytes(Encoding.DER)


def test_okta_values_come_from_the_idps_metadata(deployment):
    d = deployment
    calls = [args for token, args in d.calls if token == "okta:idp/getMetadataSaml:getMetadataSaml"]
    assert calls and all(args["idpId"] == harness.IDP_ID for args in calls)
    assert d.outputs["oktaIdpId"] == harness.IDP_ID
    assert d.outputs["oktaAcsUrl"] == f"{harness.OKTA_ORG}/sso/saml2/{harness.IDP_ID}"
    assert d.outputs["oktaAudience"] == harness.OKTA_AUDIENCE


def test_sp_certificate_becomes_pem():
    body = harness.okta_sp_certificate_base64()
    pem = certificate_pem(body)
    assert x509.load_pem_x509_certificate(pem.encode()) == harness.okta_sp_certificate()
    assert certificate_pem(pem) == pem
    with pytest.raises(ValueError):
        certificate_pem("not a certificate!")


def test_authenticator_points_at_the_idp(deployment):
    d = deployment
    authenticator = d.one(AUTHENTICATOR).inputs
    assert authenticator["key"] == "external_idp"
    assert authenticator["status"] == "ACTIVE"
    provider = json.loads(authenticator["providerJson"])
    assert provider == {"type": "CLAIMS", "configuration": {"idpId": d.one(SAML).id}}


def test_rule_for_macos_requires_the_authenticator(deployment):
    d = deployment
    rule = d.one(RULE).inputs
    assert rule["policyId"] == d.one(POLICY).id
    assert rule["platformIncludes"] == [{"type": "DESKTOP", "osType": "MACOS"}]
    assert rule["access"] == "ALLOW" and rule["factorMode"] == "2FA" and rule["status"] == "ACTIVE"
    (constraint,) = [json.loads(c) for c in rule["constraints"]]
    assert constraint["possession"]["authenticationMethods"] == [
        {"key": "external_idp", "id": d.one(AUTHENTICATOR).id}]
    assert constraint["possession"]["required"] is True
    assert constraint["knowledge"]["types"] == ["password"]


def test_policy_is_assigned_to_the_configured_apps(deployment):
    d = deployment
    (assignment,) = d.of_type(ASSIGNMENT)
    assert assignment.inputs == {"appId": harness.APP_ID, "policyId": d.one(POLICY).id}
    assert d.depends_on(assignment, d.one(RULE))  # assigned only once the rule exists


def test_destroy_removes_okta_enforcement_before_the_endpoints(deployment):
    """Pulumi deletes dependents first: every Okta enforcement resource depends on the device
    ALB, its HTTPS listener, its DNS record, the SSO route and the idp function."""
    d = deployment
    endpoint = {
        "device ALB": d.one("aws:lb/loadBalancer:LoadBalancer", "device"),
        "device HTTPS listener": d.one("aws:lb/listener:Listener", "device-https"),
        "device DNS record": d.one("aws:route53/record:Record", "device-alias"),
    }
    login_path = {
        "idp function": d.one("aws:lambda/function:Function", "idp"),
        "SSO route": d.one("aws:lb/listenerRule:ListenerRule", "device-saml-sso"),
        "check-again route": d.one("aws:lb/listenerRule:ListenerRule", "device-saml-recheck"),
        "idp target attachment": d.one("aws:lb/targetGroupAttachment:TargetGroupAttachment", "device-idp"),
        "first CRL publish": d.one("aws:lambda/invocation:Invocation"),
    }
    for okta_type in (RULE, POLICY, AUTHENTICATOR, ASSIGNMENT):
        okta_resource = d.one(okta_type)
        for what, resource in {**endpoint, **login_path}.items():
            assert d.depends_on(okta_resource, resource), f"{okta_type} must be destroyed before the {what}"
    # The IdP (and its key) go before the endpoint too ...
    for okta_type in (SAML, KEY):
        for what, resource in endpoint.items():
            assert d.depends_on(d.one(okta_type), resource), f"{okta_type} must be destroyed before the {what}"
    # ... but after the idp function, whose settings are read from it: the edge runs the other way,
    # and enforcement (which needs the IdP) is gone before either.
    assert d.depends_on(login_path["idp function"], d.one(SAML))
    assert d.depends_on(d.one(RULE), d.one(AUTHENTICATOR))
    assert d.depends_on(d.one(AUTHENTICATOR), d.one(SAML))
    # Nothing on AWS depends on Okta enforcement (it can always go first).
    enforcement = {d.one(t).urn for t in (RULE, POLICY, AUTHENTICATOR, ASSIGNMENT)}
    for resource in d.resources:
        if resource.type.startswith("aws:"):
            assert not enforcement & d.closure(resource.urn), resource.name


def test_no_enforcement_before_the_idp_is_factor_only(deployment_before_factor_only):
    d = deployment_before_factor_only
    assert d.of_type(SAML) and d.of_type(KEY)
    for okta_type in (AUTHENTICATOR, POLICY, RULE, ASSIGNMENT):
        assert not d.of_type(okta_type)
    assert d.outputs["oktaEnforcement"] is False
    first = d.outputs["manualSteps"][0]
    assert "Factor only" in first and "devicegate:idpFactorOnly true" in first


def test_outputs(deployment):
    d = deployment
    expected = {"publicUrl", "deviceUrl", "scepUrl", "metadataUrl", "ssoUrl", "caCertificatePem",
                "idpCertificatePem", "oktaIdpId", "oktaAcsUrl", "oktaAudience", "manualSteps", "mobileconfig"}
    assert expected <= set(d.outputs)
    assert d.outputs["publicUrl"] == "https://devicegate.example.com"
    assert d.outputs["deviceUrl"] == "https://okta.devicegate.example.com"
    assert d.outputs["scepUrl"] == "https://devicegate.example.com/scep"
    assert d.outputs["metadataUrl"] == "https://devicegate.example.com/saml/metadata"
    assert d.outputs["ssoUrl"] == "https://okta.devicegate.example.com/saml/sso"
    assert d.outputs["oktaEnforcement"] is True
    assert {"mobileconfig", "fleetWebhookUrl"} <= d.secret_outputs
    assert not {"caCertificatePem", "idpCertificatePem", "oktaAcsUrl"} & d.secret_outputs
    steps = d.outputs["manualSteps"]
    assert steps and all(isinstance(s, str) for s in steps)
    assert not any("Factor only" in s for s in steps)  # done: idpFactorOnly is true
    webhook_secret = d.one("aws:secretsmanager/secretVersion:SecretVersion", "fleet-webhook-secret")
    assert d.outputs["fleetWebhookUrl"] == (
        f"https://devicegate.example.com/fleet/webhook?secret={webhook_secret.inputs['secretString']}")


def test_mobileconfig_output_is_the_profile_for_this_stack(deployment):
    d = deployment
    profile = plistlib.loads(d.outputs["mobileconfig"].encode())
    payloads = {p["PayloadType"]: p for p in profile["PayloadContent"]}
    scep = payloads["com.apple.security.scep"]["PayloadContent"]
    challenge = d.one("aws:secretsmanager/secretVersion:SecretVersion", "scep-challenge").inputs["secretString"]
    assert scep["URL"] == d.outputs["scepUrl"]
    assert scep["Challenge"] == challenge
    ca = x509.load_pem_x509_certificate(d.outputs["caCertificatePem"].encode())
    assert payloads["com.apple.security.root"]["PayloadContent"] == ca.public_bytes(Encoding.DER)
    assert profile["PayloadIdentifier"].startswith("com.example.devicegate")


DUO = {"id": "autDUOUNIVERSAL00001", "name": "Duo Universal Prompt", "key": "external_idp",
       "providerJson": json.dumps({"type": "CLAIMS", "configuration": {"idpId": "0oaDUO00000000000001"}})}


def test_an_adopted_existing_authenticator_is_refused_before_any_rule_uses_it():
    """The provider's create adopts an existing authenticator with the same key; the program notices
    (the name is not ours) and fails before the rule binds Macs to someone else's factor."""
    mocks = harness.DevicegateMocks(existing_authenticator=DUO, adopts_existing_authenticator=True)
    with pytest.raises(Exception, match="Duo Universal Prompt.*devicegate:oktaAuthenticatorId"):
        harness.run(mocks=mocks)


def test_an_admin_created_authenticator_is_read_not_managed():
    ours = {"id": "autDEVICEGATEADMIN01", "name": "devicegate device check", "key": "external_idp",
            "providerJson": json.dumps({"type": "CLAIMS", "configuration": {"idpId": harness.IDP_ID}})}
    d = harness.run({"devicegate:oktaAuthenticatorId": ours["id"]},
                    mocks=harness.DevicegateMocks(existing_authenticator=ours))
    assert not d.of_type(AUTHENTICATOR)  # never created, never deactivated by a destroy
    (constraint,) = [json.loads(c) for c in d.one(RULE).inputs["constraints"]]
    assert constraint["possession"]["authenticationMethods"] == [{"key": "external_idp", "id": ours["id"]}]
    assert d.depends_on(d.one(RULE), d.one(SAML))  # through the check that it points at our IdP
    assert d.depends_on(d.one(RULE), d.one("aws:lambda/function:Function", "idp"))


def test_an_admin_created_authenticator_for_another_idp_is_refused():
    with pytest.raises(Exception, match="devicegate:oktaAuthenticatorId: autDUOUNIVERSAL00001 is a external_idp "
                                        "authenticator for IdP 0oaDUO00000000000001"):
        harness.run({"devicegate:oktaAuthenticatorId": DUO["id"]},
                    mocks=harness.DevicegateMocks(existing_authenticator=DUO))
