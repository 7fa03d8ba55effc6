"""State: the one DynamoDB table and the bucket behind the trust store.

The table is keyed ``pk``/``sk`` (both strings) with ``expires_at`` as its TTL attribute, the
layout ``devicegate.store`` documents; on-demand, point-in-time recovery, encrypted with the
stack's KMS key, and with ``retainData`` deletion-protected and kept by ``pulumi destroy``.

The bucket holds what the ALB trust store reads: the CA bundle (``truststore/``, written here)
and the revocation lists (``crl/``, written only by the crl function, which also owns the trust
store's revocation entries: it replaces them all on every run).
It is versioned (the trust store pins an object version, so a new CA bundle is a new version and
an update of the trust store), has every public-access block on, owner-enforced objects (no
ACLs), SSE-KMS with the stack key, a policy that refuses anything but TLS, and one grant: the
Elastic Load Balancing service may read those two prefixes for this account's trust store. The
only role that may touch it is the crl function's (see functions.py).
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws
from devicegate.store import TTL_ATTRIBUTE

from .network import AwsContext
from .pki import Pki
from .settings import StackSettings

TRUST_STORE_PREFIX = "truststore/"
CA_BUNDLE_KEY = f"{TRUST_STORE_PREFIX}ca-bundle.pem"
CRL_PREFIX = "crl/"  # devicegate.crl writes crl/devicegate.crl and crl/devicegate.crl.pem
NONCURRENT_VERSION_DAYS = 30


def bucket_policy(bucket_arn: str, cfg: StackSettings, ctx: AwsContext) -> str:
    trust_stores = ctx.arn("elasticloadbalancing", f"truststore/{cfg.trust_store_name}/*")
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyAnythingButTls",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
            {
                "Sid": "TrustStoreReadsBundleAndRevocationLists",
                "Effect": "Allow",
                "Principal": {"Service": f"elasticloadbalancing.{ctx.dns_suffix}"},
                "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                "Resource": [f"{bucket_arn}/{TRUST_STORE_PREFIX}*", f"{bucket_arn}/{CRL_PREFIX}*"],
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": ctx.account_id},
                    "ArnLike": {"aws:SourceArn": trust_stores},
                },
            },
        ],
    }, indent=2)


class Data(pulumi.ComponentResource):
    table: aws.dynamodb.Table
    bucket: aws.s3.Bucket
    ca_bundle: aws.s3.BucketObjectv2
    bucket_policy: aws.s3.BucketPolicy

    def __init__(self, name: str, cfg: StackSettings, ctx: AwsContext, pki: Pki,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("devicegate:index:Data", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = {"devicegate:stack": cfg.stack}

        self.table = aws.dynamodb.Table(
            "table",
            billing_mode="PAY_PER_REQUEST",
            hash_key="pk",
            range_key="sk",
            attributes=[{"name": "pk", "type": "S"}, {"name": "sk", "type": "S"}],
            ttl={"attribute_name": TTL_ATTRIBUTE, "enabled": True},
            point_in_time_recovery={"enabled": True},
            server_side_encryption={"enabled": True, "kms_key_arn": pki.kms_key.arn},
            deletion_protection_enabled=cfg.retain_data,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=cfg.retain_data),
        )

        # The bucket holds nothing that is not rebuilt by `pulumi up` or the crl function, so it
        # may go (with every version) on destroy.
        self.bucket = aws.s3.Bucket("truststore", force_destroy=True, tags=tags, opts=child)
        public_access = aws.s3.BucketPublicAccessBlock(
            "truststore", bucket=self.bucket.id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=child)
        ownership = aws.s3.BucketOwnershipControls(
            "truststore", bucket=self.bucket.id, rule={"object_ownership": "BucketOwnerEnforced"}, opts=child)
        versioning = aws.s3.BucketVersioning(
            "truststore", bucket=self.bucket.id, versioning_configuration={"status": "Enabled"}, opts=child)
        encryption = aws.s3.BucketServerSideEncryptionConfiguration(
            "truststore", bucket=self.bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms",
                                                                "kms_master_key_id": pki.kms_key.arn},
                    "bucket_key_enabled": True}],
            opts=child)
        aws.s3.BucketLifecycleConfiguration(
            "truststore", bucket=self.bucket.id,
            rules=[{"id": "expire-old-versions", "status": "Enabled", "filter": {},
                    "noncurrent_version_expiration": {"noncurrent_days": NONCURRENT_VERSION_DAYS},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 1}}],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]))
        self.bucket_policy = aws.s3.BucketPolicy(
            "truststore", bucket=self.bucket.id,
            policy=self.bucket.arn.apply(lambda arn: bucket_policy(arn, cfg, ctx)),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access, ownership]))

        # The bundle only once versioning and encryption are on: the trust store pins its version id.
        ready = pulumi.ResourceOptions(parent=self, depends_on=[versioning, encryption, ownership])
        self.ca_bundle = aws.s3.BucketObjectv2(
            "ca-bundle", bucket=self.bucket.id, key=CA_BUNDLE_KEY, content=pki.ca_cert_pem,
            content_type="application/x-pem-file", tags=tags, opts=ready)
        self.register_outputs({"table": self.table.name, "bucket": self.bucket.id})
