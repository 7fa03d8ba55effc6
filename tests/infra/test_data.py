"""Table, bucket, KMS key and secrets: private, encrypted, and kept (or not) as configured."""

import json

from cryptography import x509

from devicegate.store import TTL_ATTRIBUTE
from tests.infra import harness
from tests.infra.harness import as_list, is_secret, policy_statements

TABLE = "aws:dynamodb/table:Table"


def test_table_keys_ttl_on_demand_pitr_kms(deployment):
    d = deployment
    table = d.one(TABLE)
    assert table.inputs["hashKey"] == "pk" and table.inputs["rangeKey"] == "sk"
    assert sorted(table.inputs["attributes"], key=lambda a: a["name"]) == [
        {"name": "pk", "type": "S"}, {"name": "sk", "type": "S"}]
    assert table.inputs["ttl"] == {"attributeName": TTL_ATTRIBUTE, "enabled": True} and TTL_ATTRIBUTE == "expires_at"
    assert table.inputs["billingMode"] == "PAY_PER_REQUEST"
    assert table.inputs["pointInTimeRecovery"] == {"enabled": True}
    assert table.inputs["serverSideEncryption"] == {"enabled": True,
                                                    "kmsKeyArn": d.one("aws:kms/key:Key").outputs["arn"]}
    assert "globalSecondaryIndexes" not in table.inputs


def test_retained_data_survives_destroy(deployment):
    d = deployment
    table = d.one(TABLE)
    assert table.inputs["deletionProtectionEnabled"] is True and table.retain_on_delete
    assert d.one("aws:kms/key:Key").retain_on_delete
    secrets = {r.name: r for r in d.of_type("aws:secretsmanager/secret:Secret")}
    versions = {r.name: r for r in d.of_type("aws:secretsmanager/secretVersion:SecretVersion")}
    for name in ("ca", "idp-key"):
        assert secrets[name].retain_on_delete and versions[name].retain_on_delete
    for name in ("scep-challenge", "fleet-token", "fleet-webhook-secret"):
        assert not secrets[name].retain_on_delete  # rotatable, nothing depends on the old value
    for key in d.of_type("tls:index/privateKey:PrivateKey"):
        assert key.retain_on_delete
    # Nothing is `protect`ed: `pulumi destroy` must run to the end (and remove Okta enforcement).
    assert not [r.name for r in d.resources if r.protect]


def test_retain_data_false_lets_destroy_remove_everything(deployment_not_retained):
    d = deployment_not_retained
    table = d.one(TABLE)
    assert table.inputs["deletionProtectionEnabled"] is False
    assert not [r.name for r in d.resources if r.retain_on_delete]
    assert table.inputs["pointInTimeRecovery"] == {"enabled": True}


def test_no_public_bucket(deployment):
    d = deployment
    bucket = d.one("aws:s3/bucket:Bucket")
    name = bucket.outputs["bucket"]
    block = d.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert block.inputs["bucket"] == name
    for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
        assert block.inputs[flag] is True
    ownership = d.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls")
    assert ownership.inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    for obj in d.of_type("aws:s3/bucketObjectv2:BucketObjectv2"):
        assert "acl" not in obj.inputs
    assert d.one("aws:s3/bucketVersioning:BucketVersioning").inputs["versioningConfiguration"] == {"status": "Enabled"}
    (rule,) = d.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
                    ).inputs["rules"]
    assert rule["applyServerSideEncryptionByDefault"] == {
        "sseAlgorithm": "aws:kms", "kmsMasterKeyId": d.one("aws:kms/key:Key").outputs["arn"]}


def test_bucket_policy_is_tls_only_and_readable_only_by_the_trust_store(deployment):
    d = deployment
    bucket = d.one("aws:s3/bucket:Bucket")
    arn = bucket.outputs["arn"]
    statements = policy_statements(d.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    deny = [s for s in statements if s["Effect"] == "Deny"]
    assert deny == [{"Sid": "DenyAnythingButTls", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                     "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]
    allow = [s for s in statements if s["Effect"] == "Allow"]
    assert len(allow) == 1
    (grant,) = allow
    assert grant["Principal"] == {"Service": "elasticloadbalancing.amazonaws.com"}
    assert sorted(as_list(grant["Action"])) == ["s3:GetObject", "s3:GetObjectVersion"]
    assert sorted(grant["Resource"]) == [f"{arn}/crl/*", f"{arn}/truststore/*"]
    assert grant["Condition"]["StringEquals"] == {"aws:SourceAccount": harness.ACCOUNT}
    store = d.one("aws:lb/trustStore:TrustStore")
    pattern = grant["Condition"]["ArnLike"]["aws:SourceArn"]
    assert pattern == f"arn:aws:elasticloadbalancing:{harness.REGION}:{harness.ACCOUNT}:truststore/{store.inputs['name']}/*"
    assert store.outputs["arn"].startswith(pattern[:-1])


def test_kms_key_policy(deployment):
    d = deployment
    key = d.one("aws:kms/key:Key")
    assert key.inputs["enableKeyRotation"] is True
    statements = {s["Sid"]: s for s in policy_statements(key.inputs["policy"])}
    assert statements["AccountAdministersTheKeyThroughIam"]["Principal"] == {
        "AWS": f"arn:aws:iam::{harness.ACCOUNT}:root"}
    logs = statements["CloudWatchLogsForDevicegateLogGroups"]
    assert logs["Principal"] == {"Service": f"logs.{harness.REGION}.amazonaws.com"}
    assert logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"].endswith(
        ":log-group:/aws/lambda/devicegate-test-*")
    for group in d.of_type("aws:cloudwatch/logGroup:LogGroup"):
        assert group.inputs["name"].startswith("/aws/lambda/devicegate-test-")
    elb = statements["LoadBalancerTrustStoreReadsFromS3"]
    assert elb["Action"] == ["kms:Decrypt", "kms:DescribeKey"]
    assert elb["Condition"]["StringEquals"]["kms:ViaService"] == f"s3.{harness.REGION}.amazonaws.com"
    # No other principal: everything else goes through IAM, where each role is scoped.
    assert set(statements) == {"AccountAdministersTheKeyThroughIam", "CloudWatchLogsForDevicegateLogGroups",
                               "LoadBalancerTrustStoreReadsFromS3"}


def test_secrets_hold_what_the_runtime_parses_under_the_stack_key(deployment):
    d = deployment
    from devicegate import settings as runtime_settings

    key_arn = d.one("aws:kms/key:Key").outputs["arn"]
    secrets = {r.name: r for r in d.of_type("aws:secretsmanager/secret:Secret")}
    versions = {r.name: r for r in d.of_type("aws:secretsmanager/secretVersion:SecretVersion")}
    assert set(secrets) == {"ca", "idp-key", "scep-challenge", "fleet-token", "fleet-webhook-secret"}
    for name, secret in secrets.items():
        assert secret.inputs["kmsKeyId"] == key_arn
        assert secret.inputs["namePrefix"].startswith("devicegate-test/")
        assert versions[name].inputs["secretId"] == secret.id
        assert is_secret(versions[name].raw_inputs["secretString"]), name
    ca = runtime_settings.parse_ca_secret("ca", versions["ca"].inputs["secretString"])
    assert ca.certificate.subject.rfc4514_string().startswith("CN=devicegate device CA")
    assert ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    idp = runtime_settings.parse_idp_secret("idp", versions["idp-key"].inputs["secretString"])
    assert idp.certificate_pem == d.outputs["idpCertificatePem"]
    assert versions["fleet-token"].inputs["secretString"] == harness.BASE_CONFIG["devicegate:fleetApiToken"]
    challenge = versions["scep-challenge"].inputs["secretString"]
    assert len(challenge) == 32 and challenge.isalnum()


def test_the_ca_is_an_rsa_scep_ca(deployment):
    d = deployment
    ca_cert = d.one("tls:index/selfSignedCert:SelfSignedCert", "ca-cert")
    assert ca_cert.inputs["isCaCertificate"] is True
    assert ca_cert.inputs["maxPathLength"] == 0
    assert set(ca_cert.inputs["allowedUses"]) == {"cert_signing", "crl_signing", "digital_signature",
                                                  "key_encipherment"}
    ca_key = d.one("tls:index/privateKey:PrivateKey", "ca-key")
    assert ca_key.inputs == {"algorithm": "RSA", "rsaBits": 3072}


def test_a_configured_challenge_is_used_not_generated():
    d = harness.run({"devicegate:scepChallenge": "a-configured-challenge-0123"})
    assert not [r for r in d.of_type("random:index/randomPassword:RandomPassword") if r.name == "scep-challenge"]
    version = d.one("aws:secretsmanager/secretVersion:SecretVersion", "scep-challenge")
    assert version.inputs["secretString"] == "a-configured-challenge-0123"
    assert "a-configured-challenge-0123" in d.outputs["mobileconfig"]


def test_existing_vpc_and_subnets_are_used_as_given():
    d = harness.run({"devicegate:vpcId": "vpc-0123456789abcdef0",
                     "devicegate:publicSubnetIds": json.dumps(["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"])})
    assert not d.of_type("aws:ec2/vpc:Vpc") and not d.of_type("aws:ec2/subnet:Subnet")
    assert d.one("aws:ec2/securityGroup:SecurityGroup").inputs["vpcId"] == "vpc-0123456789abcdef0"
    for alb in d.of_type("aws:lb/loadBalancer:LoadBalancer"):
        assert alb.inputs["subnets"] == ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"]
    assert ("aws:index/getAvailabilityZones:getAvailabilityZones" not in {token for token, _ in d.calls})


def test_new_vpc_has_two_public_subnets_in_two_zones(deployment):
    d = deployment
    subnets = d.of_type("aws:ec2/subnet:Subnet")
    assert len({s.inputs["availabilityZone"] for s in subnets}) == 2
    (table,) = d.of_type("aws:ec2/routeTable:RouteTable")
    assert table.inputs["routes"][0]["cidrBlock"] == "0.0.0.0/0"
    assert len(d.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")) == 2
