"""devicegate's guard rails, as Pulumi policies (``pulumi preview --policy-pack policy``).

Each rule is a pure function of a resource's type and properties (as the engine shows them to
a policy pack: camelCase inputs) returning the problems found; ``POLICIES`` wraps them as
``ResourceValidationPolicy`` objects (and one ``StackValidationPolicy`` for what needs several
resources at once: every bucket has its public-access block, encryption and TLS-only policy).
Kept importable without starting the analyzer, so the tests run every rule on the mocked stack
and on deliberately bad resources.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Mapping

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

LISTENER_TYPES = ("aws:lb/listener:Listener", "aws:alb/listener:Listener")
LOAD_BALANCER_TYPES = ("aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer")
# AWS's TLS 1.3 policies (with 1.2 as the floor, or 1.3 only), FIPS and post-quantum variants.
MODERN_TLS_POLICY_PREFIXES = ("ELBSecurityPolicy-TLS13-1-2-", "ELBSecurityPolicy-TLS13-1-3-")
IAM_POLICY_TYPES = ("aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy", "aws:iam/userPolicy:UserPolicy",
                    "aws:iam/groupPolicy:GroupPolicy")
# Actions on data: never allowed on every resource.
DATA_SERVICES = ("dynamodb", "secretsmanager", "s3", "kms")
RUNTIME = "python3.12"
ARCHITECTURES = ["arm64"]
PUBLIC_ACLS = ("public-read", "public-read-write", "authenticated-read")

Rule = Callable[[str, Mapping[str, Any]], list[str]]


def _list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, (str, dict)) else list(value)


def _json(value) -> dict:
    if isinstance(value, Mapping):
        return dict(value)
    try:
        return json.loads(value or "{}")
    except (TypeError, ValueError):
        return {}


def _statements(document) -> list[dict]:
    return [s for s in _list(_json(document).get("Statement")) if isinstance(s, Mapping)]


# ----------------------------------------------------------------------------- load balancers


def listener_tls(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """HTTPS with a TLS 1.3 policy; plain HTTP only to redirect to HTTPS."""
    protocol = str(props.get("protocol") or "").upper()
    if protocol == "HTTPS":
        policy = str(props.get("sslPolicy") or "")
        if not policy.startswith(MODERN_TLS_POLICY_PREFIXES):
            return [f"HTTPS listener uses TLS policy {policy or '(default)'}: use ELBSecurityPolicy-TLS13-1-2-2021-06 "
                    "or another TLS 1.3 policy"]
        return []
    if protocol == "HTTP":
        actions = _list(props.get("defaultActions"))
        redirects = [a for a in actions if a.get("type") == "redirect"
                     and str((a.get("redirect") or {}).get("protocol", "")).upper() == "HTTPS"]
        if not actions or len(redirects) != len(actions):
            return ["plain-HTTP listener must only redirect to HTTPS"]
        return []
    return [f"listener protocol {protocol or '(none)'}: devicegate serves only HTTPS (and HTTP redirects)"]


def device_listener_mtls(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """The device host's HTTPS listener verifies client certificates against a trust store."""
    tags = props.get("tags") or {}
    if tags.get("devicegate:listener") != "device" or str(props.get("protocol") or "").upper() != "HTTPS":
        return []
    mutual = props.get("mutualAuthentication") or {}
    problems = []
    if mutual.get("mode") != "verify":
        problems.append(f"device listener mTLS mode is {mutual.get('mode') or 'off'}: it must be verify")
    if not mutual.get("trustStoreArn"):
        problems.append("device listener has no trust store: set mutual_authentication.trust_store_arn")
    if mutual.get("ignoreClientCertificateExpiry"):
        problems.append("device listener accepts expired client certificates: ignore_client_certificate_expiry "
                        "must be false")
    return problems


def load_balancer_headers(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Application load balancers drop malformed headers (no smuggled X-Amzn-Mtls-* lookalikes)."""
    if str(props.get("loadBalancerType") or "application") != "application":
        return []
    if props.get("dropInvalidHeaderFields") is not True:
        return ["application load balancer must set drop_invalid_header_fields"]
    return []


# ----------------------------------------------------------------------------- S3


def bucket_public_access_block(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    off = [flag for flag in flags if props.get(flag) is not True]
    return [f"public access block leaves {', '.join(off)} off: all four must be true"] if off else []


def _is_everyone(principal) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, Mapping):
        return any(p == "*" for p in _list(principal.get("AWS")))
    return False


def bucket_policy_not_public(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    statements = _statements(props.get("policy"))
    problems = [f"bucket policy statement {s.get('Sid') or '(no Sid)'} allows everyone"
                for s in statements if s.get("Effect") == "Allow" and _is_everyone(s.get("Principal"))]
    tls_only = any(
        s.get("Effect") == "Deny" and _is_everyone(s.get("Principal"))
        and str(((s.get("Condition") or {}).get("Bool") or {}).get("aws:SecureTransport", "")).lower() == "false"
        for s in statements)
    if not tls_only:
        problems.append("bucket policy must deny requests without TLS (aws:SecureTransport false)")
    return problems


def object_acl_not_public(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    acl = str(props.get("acl") or "")
    return [f"ACL {acl} makes it public"] if acl in PUBLIC_ACLS else []


def bucket_encrypted(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    rules = _list(props.get("rules"))
    if not rules:
        return ["bucket encryption has no rule"]
    problems = []
    for rule in rules:
        default = rule.get("applyServerSideEncryptionByDefault") or {}
        if default.get("sseAlgorithm") not in ("aws:kms", "aws:kms:dsse") or not default.get("kmsMasterKeyId"):
            problems.append("bucket must be encrypted with a customer-managed KMS key (aws:kms + kms_master_key_id)")
    return problems


# ----------------------------------------------------------------------------- data and secrets


def table_pitr_and_sse(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    problems = []
    if (props.get("pointInTimeRecovery") or {}).get("enabled") is not True:
        problems.append("table must have point-in-time recovery enabled")
    sse = props.get("serverSideEncryption") or {}
    if sse.get("enabled") is not True or not sse.get("kmsKeyArn"):
        problems.append("table must be encrypted with a customer-managed KMS key (server_side_encryption.kms_key_arn)")
    return problems


def secret_uses_cmk(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    return [] if props.get("kmsKeyId") else ["secret must be encrypted with the stack's KMS key (kms_key_id)"]


# ----------------------------------------------------------------------------- IAM


def iam_problems(document) -> list[str]:
    problems = []
    for statement in _statements(document):
        if statement.get("Effect") != "Allow":
            continue
        sid = statement.get("Sid") or "(no Sid)"
        if "NotAction" in statement:
            problems.append(f"statement {sid} uses NotAction: list the actions")
        actions = [str(a) for a in _list(statement.get("Action"))]
        for action in actions:
            if "*" in action:
                problems.append(f"statement {sid} allows the wildcard action {action}")
        resources = [str(r) for r in _list(statement.get("Resource"))]
        data_actions = [a for a in actions if a.split(":", 1)[0] in DATA_SERVICES]
        if data_actions and any(r == "*" for r in resources):
            problems.append(f"statement {sid} allows {', '.join(data_actions)} on every resource")
    return problems


def iam_no_wildcards(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    return iam_problems(props.get("policy"))


def role_inline_policies(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    problems = []
    for inline in _list(props.get("inlinePolicies")):
        problems += iam_problems(inline.get("policy"))
    return problems


# ----------------------------------------------------------------------------- Lambda and logs


def lambda_runtime(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    problems = []
    if props.get("runtime") != RUNTIME:
        problems.append(f"function runtime is {props.get('runtime')}: use {RUNTIME} (the bundle's wheels)")
    if list(props.get("architectures") or ["x86_64"]) != ARCHITECTURES:
        problems.append(f"function architectures are {props.get('architectures') or ['x86_64']}: use {ARCHITECTURES}")
    if (props.get("tracingConfig") or {}).get("mode") != "Active":
        problems.append("function must have active X-Ray tracing (tracing_config.mode Active)")
    return problems


def log_retention(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    problems = []
    if not props.get("retentionInDays"):
        problems.append("log group must set retention_in_days (never keep logs forever by default)")
    if not props.get("kmsKeyId"):
        problems.append("log group must be encrypted with the stack's KMS key (kms_key_id)")
    return problems


# ----------------------------------------------------------------------------- the pack

RULES: dict[str, tuple[str, tuple[str, ...], Rule]] = {
    "alb-listener-modern-https": ("Listeners are HTTPS with a TLS 1.3 policy, or redirect HTTP to HTTPS",
                                  LISTENER_TYPES, listener_tls),
    "device-listener-mtls-verify": ("The device listener verifies client certificates (mTLS verify, trust store, "
                                    "no expired certificates)", LISTENER_TYPES, device_listener_mtls),
    "alb-drop-invalid-headers": ("Application load balancers drop invalid header fields", LOAD_BALANCER_TYPES,
                                 load_balancer_headers),
    "s3-public-access-blocked": ("Every public-access block setting is on",
                                 ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",), bucket_public_access_block),
    "s3-bucket-policy-private-tls": ("Bucket policies allow nobody at large and refuse non-TLS requests",
                                     ("aws:s3/bucketPolicy:BucketPolicy",), bucket_policy_not_public),
    "s3-no-public-acl": ("No public ACL on buckets or objects",
                         ("aws:s3/bucketObjectv2:BucketObjectv2", "aws:s3/bucketAcl:BucketAcl",
                          "aws:s3/bucketAclV2:BucketAclV2"), object_acl_not_public),
    "s3-encrypted-cmk": ("Buckets are encrypted with the stack's KMS key",
                         ("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                          "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2"),
                         bucket_encrypted),
    "dynamodb-pitr-sse": ("Tables have point-in-time recovery and KMS encryption", ("aws:dynamodb/table:Table",),
                          table_pitr_and_sse),
    "secrets-cmk": ("Secrets are encrypted with the stack's KMS key", ("aws:secretsmanager/secret:Secret",),
                    secret_uses_cmk),
    "iam-no-wildcard-actions": ("IAM policies list their actions (no *) and never grant data actions on *",
                                IAM_POLICY_TYPES, iam_no_wildcards),
    "iam-role-inline-no-wildcards": ("Inline role policies follow the same rule", ("aws:iam/role:Role",),
                                     role_inline_policies),
    "lambda-arm64-python312-tracing": ("Functions run python3.12 on arm64 with active tracing",
                                       ("aws:lambda/function:Function",), lambda_runtime),
    "log-retention-and-encryption": ("Log groups have a retention period and KMS encryption",
                                     ("aws:cloudwatch/logGroup:LogGroup",), log_retention),
}


def _resource_policy(name: str, description: str, types: tuple[str, ...], rule: Rule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type not in types:
            return
        for problem in rule(args.resource_type, args.props):
            report_violation(problem, None)

    return ResourceValidationPolicy(name=name, description=description, validate=validate,
                                    enforcement_level=EnforcementLevel.MANDATORY)


def buckets_fully_guarded(resources: Iterable[Any]) -> list[tuple[str, str]]:
    """(urn, problem) for every bucket without a public-access block, KMS encryption or TLS-only policy."""
    resources = list(resources)
    buckets = [r for r in resources if r.resource_type == "aws:s3/bucket:Bucket"]

    def for_bucket(type_prefix: str, bucket) -> list:
        name = bucket.props.get("bucket") or bucket.props.get("id")
        return [r for r in resources if r.resource_type.startswith(type_prefix) and r.props.get("bucket") == name]

    problems = []
    for bucket in buckets:
        if not for_bucket("aws:s3/bucketPublicAccessBlock:", bucket):
            problems.append((bucket.urn, "bucket has no public access block"))
        if not for_bucket("aws:s3/bucketServerSideEncryptionConfiguration", bucket):
            problems.append((bucket.urn, "bucket has no server-side encryption configuration"))
        if not for_bucket("aws:s3/bucketPolicy:", bucket):
            problems.append((bucket.urn, "bucket has no policy (it must at least refuse non-TLS requests)"))
    return problems


def _validate_buckets(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    for urn, problem in buckets_fully_guarded(args.resources):
        report_violation(problem, urn)


POLICIES = [_resource_policy(name, description, types, rule) for name, (description, types, rule) in RULES.items()]
POLICIES.append(StackValidationPolicy(
    name="s3-buckets-fully-guarded",
    description="Every bucket has a public-access block, KMS encryption and a TLS-only policy",
    validate=_validate_buckets,
    enforcement_level=EnforcementLevel.MANDATORY,
))
