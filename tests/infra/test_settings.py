"""Stack config validation: every error names the key and the fix, before any resource exists."""

import json
from pathlib import Path

import pytest
import yaml

from infra import settings
from infra.settings import ConfigError, parse
from tests.infra import harness

REPO = Path(__file__).resolve().parents[2]
NO_ENV: dict[str, str] = {}


def good(**changes) -> dict:
    raw = dict(harness.BASE_CONFIG)
    for key, value in changes.items():
        full = key if ":" in key else f"devicegate:{key}"
        if value is None:
            raw.pop(full, None)
        else:
            raw[full] = value
    return raw


def problems(**changes) -> dict[str, tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse(good(**changes), environ=NO_ENV)
    return {key: (problem, fix) for key, problem, fix in caught.value.problems}


def test_the_base_config_parses_with_defaults():
    cfg = parse(good(), stack="prod", environ=NO_ENV)
    assert cfg.domain == "devicegate.example.com"
    assert cfg.device_host == "okta.devicegate.example.com"
    assert cfg.fail_mode == "closed" and cfg.retain_data is True and cfg.cert_validity_days == 365
    assert cfg.scep_challenge is None and cfg.vpc_id is None
    assert cfg.okta_app_ids == (harness.APP_ID,)
    assert cfg.idp_factor_only is True
    assert "fleet-api-token-value" not in repr(cfg)  # secrets never printed
    assert cfg.trust_store_name == "devicegate-prod-devices"
    with pytest.raises(Exception):
        cfg.domain = "other.example.com"  # frozen


@pytest.mark.parametrize("changes, key, words", [
    ({"domain": None}, "devicegate:domain", ["is not set", "pulumi config set devicegate:domain"]),
    ({"domain": "https://devicegate.example.com"}, "devicegate:domain", ["not a DNS host name", "no scheme"]),
    ({"deviceHost": "devicegate.example.com"}, "devicegate:deviceHost", ["same host", "okta.<domain>"]),
    ({"hostedZoneName": None}, "devicegate:hostedZoneId", ["neither", "hostedZoneName"]),
    ({"hostedZoneId": "Z0123456789ABCDEFGHIJ"}, "devicegate:hostedZoneName", ["only one"]),
    ({"hostedZoneId": "zone-1", "hostedZoneName": None}, "devicegate:hostedZoneId", ["not a Route53 hosted zone id"]),
    ({"hostedZoneName": "other.com"}, "devicegate:domain", ["not inside the zone other.com"]),
    ({"failMode": "sometimes"}, "devicegate:failMode", ["'sometimes' is not closed or open", "use closed"]),
    ({"certValidityDays": "399"}, "devicegate:certValidityDays", ["399 is out of range", "from 1 to 398"]),
    ({"certValidityDays": "0"}, "devicegate:certValidityDays", ["out of range"]),
    ({"certValidityDays": "a year"}, "devicegate:certValidityDays", ["not a whole number"]),
    ({"fleetUrl": None}, "devicegate:fleetUrl", ["is not set", "https://fleet.example.com"]),
    ({"fleetUrl": "http://fleet.example.com"}, "devicegate:fleetUrl", ["not an https:// URL"]),
    ({"fleetApiToken": None}, "devicegate:fleetApiToken", ["is not set", "--secret"]),
    ({"scepChallenge": "short"}, "devicegate:scepChallenge", ["shorter than 16", "generated"]),
    ({"enforcedPolicies": "{not json"}, "devicegate:enforcedPolicies", ["not understood", "all-critical"]),
    ({"oktaAppIds": json.dumps(["my-app"])}, "devicegate:oktaAppIds", ["not an Okta app id", "0oa"]),
    ({"retainData": "maybe"}, "devicegate:retainData", ["not a boolean", "true or false"]),
    ({"oktaAuthenticatorId": "duo"}, "devicegate:oktaAuthenticatorId", ["not an Okta authenticator id", "aut"]),
    ({"vpcId": "vpc-0123456789abcdef0"}, "devicegate:publicSubnetIds", ["needs two", "at least two"]),
    ({"publicSubnetIds": json.dumps(["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"])},
     "devicegate:vpcId", ["not set while", "unset both"]),
    ({"vpcId": "vpc-0123456789abcdef0", "publicSubnetIds": "subnet-0123456789abcdef0,sub-2"},
     "devicegate:publicSubnetIds", ["not a subnet id"]),
    ({"okta:orgName": None}, "okta:orgName", ["is not set", "pulumi config set okta:orgName"]),
    ({"okta:apiToken": None}, "okta:apiToken", ["no Okta credentials", "okta:clientId"]),
    ({"aws:region": None}, "aws:region", ["is not set", "aws:region"]),
])
def test_each_error_names_the_key_and_the_fix(changes, key, words):
    found = problems(**changes)
    assert key in found, found
    problem, fix = found[key]
    text = f"{problem}. Fix: {fix}"
    for word in words:
        assert word in text, (word, text)
    assert fix  # every problem says what to do


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        parse(good(domain=None, failMode="x", certValidityDays="399", hostedZoneName=None), environ=NO_ENV)
    error = caught.value
    assert {"devicegate:domain", "devicegate:failMode", "devicegate:certValidityDays",
            "devicegate:hostedZoneId"} <= set(error.keys)
    message = str(error)
    assert "devicegate:certValidityDays: 399 is out of range. Fix: use a number of days from 1 to 398" in message


def test_provider_settings_may_come_from_the_environment():
    raw = good(**{"okta:orgName": None, "okta:baseUrl": None, "okta:apiToken": None, "aws:region": None})
    cfg = parse(raw, environ={"OKTA_ORG_NAME": "example", "OKTA_BASE_URL": "okta.com", "OKTA_API_TOKEN": "t",
                              "AWS_REGION": "eu-west-1"})
    assert cfg.domain == "devicegate.example.com"
    oauth = good(**{"okta:apiToken": None, "okta:clientId": "0oaSERVICEAPP", "okta:privateKey": "-----BEGIN..."})
    assert parse(oauth, environ=NO_ENV).domain == "devicegate.example.com"


def test_lists_accept_json_and_commas():
    subnets = "subnet-0123456789abcdef0, subnet-0fedcba9876543210"
    cfg = parse(good(vpcId="vpc-0123456789abcdef0", publicSubnetIds=subnets), environ=NO_ENV)
    assert cfg.public_subnet_ids == ("subnet-0123456789abcdef0", "subnet-0fedcba9876543210")
    assert parse(good(oktaAppIds="[]"), environ=NO_ENV).okta_app_ids == ()


def test_zone_id_may_carry_the_route53_prefix():
    cfg = parse(good(hostedZoneName=None, hostedZoneId="/hostedzone/Z0123456789ABCDEFGHIJ"), environ=NO_ENV)
    assert cfg.hosted_zone_id == "Z0123456789ABCDEFGHIJ"


def test_the_program_refuses_bad_config_before_declaring_anything():
    mocks = harness.DevicegateMocks()
    with pytest.raises(ConfigError) as caught:
        harness.run({"devicegate:failMode": "sometimes", "devicegate:certValidityDays": "399"}, mocks=mocks)
    assert {"devicegate:failMode", "devicegate:certValidityDays"} <= set(caught.value.keys)
    assert mocks.calls == []  # not even an AWS lookup


def test_zone_by_id_is_checked_against_the_hosts():
    d = harness.run({"devicegate:hostedZoneName": None, "devicegate:hostedZoneId": harness.ZONE_ID})
    assert d.one("aws:route53/record:Record", "device-alias").inputs["zoneId"] == harness.ZONE_ID
    with pytest.raises(ConfigError) as caught:
        harness.run({"devicegate:hostedZoneName": None, "devicegate:hostedZoneId": harness.ZONE_ID},
                    mocks=harness.DevicegateMocks(zone_name="other.org"))
    assert set(caught.value.keys) == {"devicegate:domain", "devicegate:deviceHost"}
    assert "not inside the hosted zone other.org" in str(caught.value)


def test_an_unknown_or_private_zone_is_a_config_error():
    with pytest.raises(ConfigError, match="devicegate:hostedZoneId: Z0000000000000000000 is not a hosted zone"):
        harness.run({"devicegate:hostedZoneName": None, "devicegate:hostedZoneId": "Z0000000000000000000"})
    with pytest.raises(ConfigError, match="devicegate:hostedZoneId: is a private hosted zone"):
        harness.run({"devicegate:hostedZoneName": None, "devicegate:hostedZoneId": harness.ZONE_ID},
                    mocks=harness.DevicegateMocks(private_zone=True))
    # A zone name no public zone has: the provider's own "no matching Route 53 Hosted Zone found".
    with pytest.raises(Exception, match="no matching Route 53 Hosted Zone"):
        harness.run(mocks=harness.DevicegateMocks(zone_name="example.org"))


def test_pulumi_yaml_declares_every_key_with_the_same_defaults():
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    assert project["main"] == "infra/"
    declared = project["config"]
    assert set(declared) == {f"devicegate:{key}" for key in settings.DEFAULTS}
    types = {str: "string", bool: "boolean", int: "integer", list: "array"}
    for key, default in settings.DEFAULTS.items():
        entry = declared[f"devicegate:{key}"]
        assert entry.get("description"), key
        if default is None:
            assert "default" not in entry, key  # required: the CLI asks for it
        else:
            assert entry["default"] == default, key
            assert entry["type"] == types[type(default)], key


def test_example_stack_file_parses():
    stack = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())["config"]
    raw = {k: json.dumps(v) if isinstance(v, (list, bool)) else str(v) for k, v in stack.items()}
    raw["devicegate:idpFactorOnly"] = str(stack["devicegate:idpFactorOnly"]).lower()
    raw["devicegate:retainData"] = str(stack["devicegate:retainData"]).lower()
    # The two secrets are set with `pulumi config set --secret`, as the file says.
    raw.update({"devicegate:fleetApiToken": "t", "okta:apiToken": "t"})
    cfg = parse(raw, environ=NO_ENV)
    assert cfg.domain == "devicegate.example.com" and cfg.idp_factor_only is False


def test_the_program_previews_too():
    """`pulumi preview` runs the same program as a dry run; nothing in it needs a created resource."""
    d = harness.run(preview=True)
    assert d.of_type("aws:lb/listener:Listener") and d.of_type("okta:idp/saml:Saml")
