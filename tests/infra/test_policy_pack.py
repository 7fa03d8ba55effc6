"""The policy pack: every rule passes the mocked stack and fails a deliberately bad resource."""

import json
import runpy
from pathlib import Path

import pytest
from pulumi_policy import (
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

import devicegate_policies as pack

REPO = Path(__file__).resolve().parents[2]


def _options() -> PolicyResourceOptions:
    return PolicyResourceOptions(protect=False, ignore_changes=[], delete_before_replace=None, aliases=[],
                                 custom_timeouts=None, additional_secret_outputs=[])


def violations(policy: ResourceValidationPolicy, resource_type: str, props: dict, urn: str = "urn:x") -> list[str]:
    found: list[str] = []
    args = ResourceValidationArgs(resource_type=resource_type, props=props, urn=urn, name=urn.rsplit("::", 1)[-1],
                                  opts=_options(), provider=None)
    policy.validate(args, lambda message, urn=None: found.append(message))
    return found


POLICIES = {policy.name: policy for policy in pack.POLICIES}


def test_the_pack_covers_what_devicegate_promises():
    assert {"alb-listener-modern-https", "device-listener-mtls-verify", "s3-public-access-blocked",
            "s3-bucket-policy-private-tls", "s3-encrypted-cmk", "dynamodb-pitr-sse", "iam-no-wildcard-actions",
            "lambda-arm64-python312-tracing", "log-retention-and-encryption", "s3-buckets-fully-guarded"} <= set(POLICIES)


def test_the_pack_entry_point_builds_a_mandatory_pack(monkeypatch):
    import pulumi_policy

    built = {}
    monkeypatch.setattr(pulumi_policy, "PolicyPack", lambda **kwargs: built.update(kwargs))
    runpy.run_path(str(REPO / "policy" / "__main__.py"), run_name="__main__")
    assert built["name"] == "devicegate"
    assert built["policies"] is pack.POLICIES
    assert built["enforcement_level"] == pulumi_policy.EnforcementLevel.MANDATORY


def test_every_resource_of_the_stack_passes_every_policy(deployment):
    checked = {}
    for resource in deployment.resources:
        for name, policy in POLICIES.items():
            if not isinstance(policy, ResourceValidationPolicy):
                continue
            found = violations(policy, resource.type, resource.inputs, resource.urn)
            assert not found, (name, resource.type, resource.name, found)
            checked[resource.type] = True
    # The rules did look at the resources they are about.
    for resource_type in ("aws:lb/listener:Listener", "aws:lambda/function:Function", "aws:dynamodb/table:Table",
                          "aws:iam/rolePolicy:RolePolicy", "aws:s3/bucketPolicy:BucketPolicy"):
        assert checked.get(resource_type)


def test_the_stack_policy_passes_the_stack(deployment):
    resources = [PolicyResource(r.type, r.outputs, r.urn, r.name, _options(), None, None, [], {})
                 for r in deployment.resources]
    found = []
    policy = POLICIES["s3-buckets-fully-guarded"]
    assert isinstance(policy, StackValidationPolicy)
    policy.validate(StackValidationArgs(resources), lambda message, urn=None: found.append((message, urn)))
    assert found == []
    assert [r for r in resources if r.resource_type == "aws:s3/bucket:Bucket"]


def test_the_stack_policy_fails_an_unguarded_bucket():
    bucket = PolicyResource("aws:s3/bucket:Bucket", {"bucket": "loose"}, "urn:loose", "loose", _options(), None,
                            None, [], {})
    found = []
    POLICIES["s3-buckets-fully-guarded"].validate(StackValidationArgs([bucket]),
                                                  lambda message, urn=None: found.append((message, urn)))
    assert {m for m, _ in found} == {"bucket has no public access block",
                                     "bucket has no server-side encryption configuration",
                                     "bucket has no policy (it must at least refuse non-TLS requests)"}
    assert {u for _, u in found} == {"urn:loose"}


LISTENER = "aws:lb/listener:Listener"
DEVICE_TAGS = {"devicegate:listener": "device"}
GOOD_DEVICE_LISTENER = {"protocol": "HTTPS", "sslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06", "tags": DEVICE_TAGS,
                        "mutualAuthentication": {"mode": "verify", "trustStoreArn": "arn:ts",
                                                 "ignoreClientCertificateExpiry": False}}


def _policy_doc(*statements) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


BAD = [
    ("alb-listener-modern-https", LISTENER, {"protocol": "HTTPS", "sslPolicy": "ELBSecurityPolicy-2016-08"}, "TLS policy"),
    ("alb-listener-modern-https", LISTENER, {"protocol": "HTTPS"}, "(default)"),
    ("alb-listener-modern-https", LISTENER, {"protocol": "HTTP", "defaultActions": [{"type": "forward"}]},
     "only redirect"),
    ("device-listener-mtls-verify", LISTENER, {**GOOD_DEVICE_LISTENER, "mutualAuthentication": {"mode": "passthrough"}},
     "must be verify"),
    ("device-listener-mtls-verify", LISTENER, {**GOOD_DEVICE_LISTENER, "mutualAuthentication": None}, "off"),
    ("device-listener-mtls-verify", LISTENER,
     {**GOOD_DEVICE_LISTENER, "mutualAuthentication": {"mode": "verify", "trustStoreArn": "arn:ts",
                                                       "ignoreClientCertificateExpiry": True}}, "expired"),
    ("device-listener-mtls-verify", LISTENER,
     {**GOOD_DEVICE_LISTENER, "mutualAuthentication": {"mode": "verify"}}, "no trust store"),
    ("alb-drop-invalid-headers", "aws:lb/loadBalancer:LoadBalancer", {"loadBalancerType": "application"},
     "drop_invalid_header_fields"),
    ("s3-public-access-blocked", "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
     {"blockPublicAcls": True, "blockPublicPolicy": False, "ignorePublicAcls": True, "restrictPublicBuckets": True},
     "blockPublicPolicy"),
    ("s3-bucket-policy-private-tls", "aws:s3/bucketPolicy:BucketPolicy",
     {"policy": _policy_doc({"Sid": "Open", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                             "Resource": "arn:aws:s3:::b/*"})}, "allows everyone"),
    ("s3-bucket-policy-private-tls", "aws:s3/bucketPolicy:BucketPolicy", {"policy": _policy_doc()}, "without TLS"),
    ("s3-no-public-acl", "aws:s3/bucketObjectv2:BucketObjectv2", {"acl": "public-read"}, "public"),
    ("s3-encrypted-cmk", "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
     {"rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]}, "customer-managed KMS key"),
    ("dynamodb-pitr-sse", "aws:dynamodb/table:Table",
     {"pointInTimeRecovery": {"enabled": False}, "serverSideEncryption": {"enabled": True, "kmsKeyArn": "arn:k"}},
     "point-in-time recovery"),
    ("dynamodb-pitr-sse", "aws:dynamodb/table:Table", {"pointInTimeRecovery": {"enabled": True}},
     "customer-managed KMS key"),
    ("secrets-cmk", "aws:secretsmanager/secret:Secret", {"name": "s"}, "KMS key"),
    ("iam-no-wildcard-actions", "aws:iam/rolePolicy:RolePolicy",
     {"policy": _policy_doc({"Sid": "All", "Effect": "Allow", "Action": "dynamodb:*", "Resource": "arn:t"})},
     "wildcard action dynamodb:*"),
    ("iam-no-wildcard-actions", "aws:iam/rolePolicy:RolePolicy",
     {"policy": _policy_doc({"Sid": "Star", "Effect": "Allow", "Action": "*", "Resource": "*"})}, "wildcard action *"),
    ("iam-no-wildcard-actions", "aws:iam/rolePolicy:RolePolicy",
     {"policy": _policy_doc({"Sid": "Any", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
                             "Resource": "*"})}, "on every resource"),
    ("iam-no-wildcard-actions", "aws:iam/policy:Policy",
     {"policy": _policy_doc({"Sid": "Not", "Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})}, "NotAction"),
    ("iam-role-inline-no-wildcards", "aws:iam/role:Role",
     {"inlinePolicies": [{"name": "p", "policy": _policy_doc({"Effect": "Allow", "Action": "s3:Get*",
                                                              "Resource": "arn:b"})}]}, "wildcard action s3:Get*"),
    ("lambda-arm64-python312-tracing", "aws:lambda/function:Function",
     {"runtime": "python3.11", "architectures": ["arm64"], "tracingConfig": {"mode": "Active"}}, "python3.12"),
    ("lambda-arm64-python312-tracing", "aws:lambda/function:Function",
     {"runtime": "python3.12", "tracingConfig": {"mode": "Active"}}, "x86_64"),
    ("lambda-arm64-python312-tracing", "aws:lambda/function:Function",
     {"runtime": "python3.12", "architectures": ["arm64"], "tracingConfig": {"mode": "PassThrough"}}, "tracing"),
    ("log-retention-and-encryption", "aws:cloudwatch/logGroup:LogGroup", {"kmsKeyId": "arn:k"}, "retention"),
    ("log-retention-and-encryption", "aws:cloudwatch/logGroup:LogGroup", {"retentionInDays": 30}, "KMS"),
]


@pytest.mark.parametrize("policy_name, resource_type, props, words", BAD,
                         ids=[f"{b[0]}:{b[3]}" for b in BAD])
def test_each_policy_fails_a_bad_resource(policy_name, resource_type, props, words):
    found = violations(POLICIES[policy_name], resource_type, props)
    assert found, f"{policy_name} let a bad {resource_type} through"
    assert any(words in message for message in found), found


def test_a_public_listener_needs_no_mtls_but_the_device_one_does():
    policy = POLICIES["device-listener-mtls-verify"]
    public = {**GOOD_DEVICE_LISTENER, "tags": {"devicegate:listener": "public"}, "mutualAuthentication": None}
    assert violations(policy, LISTENER, public) == []
    assert violations(policy, LISTENER, GOOD_DEVICE_LISTENER) == []


def test_policies_ignore_other_resource_types():
    for policy in POLICIES.values():
        if isinstance(policy, ResourceValidationPolicy):
            assert violations(policy, "aws:sns/topic:Topic", {"name": "t"}) == []
