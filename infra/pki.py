"""Key material: the customer-managed KMS key, the SCEP CA, the IdP signing key, the secrets.

* The KMS key encrypts the secrets, the table, the bucket and the log groups. Its policy keeps
  the account root (so IAM policies decide who uses it; never a key nobody can manage) and
  admits only two services on their own: CloudWatch Logs, for our log groups, and Elastic Load
  Balancing, to read the trust-store bundle and CRLs from the bucket through S3.
* The CA is RSA 3072 (SCEP clients encrypt their requests to it, so it must be RSA; its usage
  includes keyEncipherment for that), valid 10 years, path length 0: it only issues device
  certificates. The IdP key is RSA 2048, the size every SAML SP accepts.
* Secrets Manager holds what the Lambdas read, in the shapes ``devicegate.settings`` parses:
  CA and IdP key as ``{"certificate": PEM, "private_key": PEM}``, the SCEP challenge, the Fleet
  API token and the Fleet webhook secret as plain strings.
* With ``retainData`` the KMS key, the CA and IdP secrets survive ``pulumi destroy``
  (``retain_on_delete``): devices keep certificates that chain to a CA that still exists, and
  the key that decrypts the retained table and secrets is not scheduled for deletion.
"""

from __future__ import annotations

import base64
import json
import re

import pulumi
import pulumi_aws as aws
import pulumi_random as random
import pulumi_tls as tls

from .network import AwsContext
from .settings import StackSettings

CA_VALIDITY_HOURS = 10 * 365 * 24
IDP_VALIDITY_HOURS = 3 * 365 * 24
LOG_GROUP_PREFIX = "/aws/lambda/"


def key_policy(cfg: StackSettings, ctx: AwsContext) -> str:
    log_groups = ctx.arn("logs", f"log-group:{LOG_GROUP_PREFIX}{cfg.prefix}-*")
    trust_stores = ctx.arn("elasticloadbalancing", f"truststore/{cfg.trust_store_name}/*")
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AccountAdministersTheKeyThroughIam",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:{ctx.partition}:iam::{ctx.account_id}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "CloudWatchLogsForDevicegateLogGroups",
                "Effect": "Allow",
                "Principal": {"Service": ctx.service_host("logs")},
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo",
                           "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:DescribeKey"],
                "Resource": "*",
                "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": log_groups}},
            },
            {
                "Sid": "LoadBalancerTrustStoreReadsFromS3",
                "Effect": "Allow",
                "Principal": {"Service": f"elasticloadbalancing.{ctx.dns_suffix}"},
                "Action": ["kms:Decrypt", "kms:DescribeKey"],
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": ctx.account_id, "kms:ViaService": ctx.service_host("s3")},
                    "ArnLike": {"aws:SourceArn": trust_stores},
                },
            },
        ],
    }, indent=2)


def pem_body(pem: str) -> str:
    """Base64 DER of a PEM certificate (what Okta's x5c wants)."""
    match = re.search(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", pem, re.S)
    if not match:
        raise ValueError("not a PEM certificate")
    body = "".join(match.group(1).split())
    base64.b64decode(body, validate=True)
    return body


class Pki(pulumi.ComponentResource):
    kms_key: aws.kms.Key
    ca_cert_pem: pulumi.Output[str]
    ca_key_pem: pulumi.Output[str]  # secret
    idp_cert_pem: pulumi.Output[str]
    secrets: dict[str, aws.secretsmanager.Secret]  # ca, idp_key, scep_challenge, fleet_token, webhook_secret
    scep_challenge: pulumi.Output[str]  # secret
    webhook_secret: pulumi.Output[str]  # secret

    def __init__(self, name: str, cfg: StackSettings, ctx: AwsContext, opts: pulumi.ResourceOptions | None = None):
        super().__init__("devicegate:index:Pki", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        retained = pulumi.ResourceOptions(parent=self, retain_on_delete=cfg.retain_data)
        tags = {"devicegate:stack": cfg.stack}

        self.kms_key = aws.kms.Key(
            "key",
            description=f"devicegate {cfg.stack}: secrets, table, bucket and logs",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=key_policy(cfg, ctx),
            tags=tags,
            opts=retained,
        )
        aws.kms.Alias("key", name=f"alias/{cfg.prefix}", target_key_id=self.kms_key.key_id, opts=child)

        # -- the SCEP certificate authority
        ca_key = tls.PrivateKey("ca-key", algorithm="RSA", rsa_bits=3072, opts=retained)
        ca_cert = tls.SelfSignedCert(
            "ca-cert",
            private_key_pem=ca_key.private_key_pem,
            is_ca_certificate=True,
            max_path_length=0,
            set_subject_key_id=True,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature", "key_encipherment"],
            validity_period_hours=CA_VALIDITY_HOURS,
            subject={"common_name": f"devicegate device CA ({cfg.domain})"[:64], "organization": "devicegate"},
            opts=retained,
        )
        self.ca_cert_pem = ca_cert.cert_pem
        self.ca_key_pem = pulumi.Output.secret(ca_key.private_key_pem)

        # -- the IdP signing key (Okta verifies our Responses with its certificate)
        idp_key = tls.PrivateKey("idp-key", algorithm="RSA", rsa_bits=2048, opts=retained)
        idp_cert = tls.SelfSignedCert(
            "idp-cert",
            private_key_pem=idp_key.private_key_pem,
            allowed_uses=["digital_signature"],
            validity_period_hours=IDP_VALIDITY_HOURS,
            subject={"common_name": f"devicegate IdP ({cfg.domain})"[:64], "organization": "devicegate"},
            opts=retained,
        )
        self.idp_cert_pem = idp_cert.cert_pem

        # -- generated shared secrets
        if cfg.scep_challenge is None:
            self.scep_challenge = random.RandomPassword(
                "scep-challenge", length=32, special=False, opts=child).result
        else:
            self.scep_challenge = pulumi.Output.secret(cfg.scep_challenge)
        self.webhook_secret = random.RandomPassword("fleet-webhook-secret", length=40, special=False,
                                                    opts=child).result

        def secret(short: str, description: str, value, keep: bool, rotated: bool = False) -> aws.secretsmanager.Secret:
            options = retained if keep else child
            resource = aws.secretsmanager.Secret(
                short,
                name_prefix=f"{cfg.prefix}/{short}-",
                description=description,
                kms_key_id=self.kms_key.arn,
                recovery_window_in_days=30 if keep and cfg.retain_data else 7,
                tags=tags,
                opts=options,
            )
            # `devicegate rotate idp-key` writes new values; a later `pulumi up` must not undo them
            version_opts = pulumi.ResourceOptions.merge(options, pulumi.ResourceOptions(
                ignore_changes=["secretString"])) if rotated else options
            aws.secretsmanager.SecretVersion(
                short, secret_id=resource.id, secret_string=pulumi.Output.secret(value), opts=version_opts)
            return resource

        pair = lambda cert, key: pulumi.Output.json_dumps({"certificate": cert, "private_key": key})  # noqa: E731
        self.secrets = {
            "ca": secret("ca", "SCEP CA certificate and private key (JSON)",
                         pair(ca_cert.cert_pem, ca_key.private_key_pem), keep=True),
            "idp_key": secret("idp-key", "SAML IdP signing certificate and private key (JSON)",
                              pair(idp_cert.cert_pem, idp_key.private_key_pem), keep=True, rotated=True),
            "scep_challenge": secret("scep-challenge", "SCEP challenge password", self.scep_challenge, keep=False),
            "fleet_token": secret("fleet-token", "Fleet API token (API-only user)", cfg.fleet_api_token, keep=False),
            "webhook_secret": secret("fleet-webhook-secret", "Fleet policy webhook secret", self.webhook_secret,
                                     keep=False),
        }
        self.register_outputs({"ca_cert_pem": self.ca_cert_pem, "idp_cert_pem": self.idp_cert_pem})
