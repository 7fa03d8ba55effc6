"""The Lambdas: one bundle, six functions, each with its own least-privilege role.

All functions run the same content-hashed bundle (``infra.bundle``: manylinux aarch64 wheels for
Python 3.12) on ``python3.12``/``arm64``; an unchanged bundle has the same hash and nothing
redeploys. Each function gets:

* its own role whose one inline policy grants exactly: writing to its own log group, X-Ray
  segments, the DynamoDB actions its code paths call (``devicegate.store``) on the table ARN,
  ``GetSecretValue`` on the secrets it reads and nothing else, and ``kms:Decrypt`` of the stack
  key only through the services it uses. No ``*`` action anywhere; the only ``*`` resources are
  the X-Ray and ``DescribeTrustStoreRevocations`` calls, which have no resource-level permissions;
* its own log group (KMS-encrypted, retention set) created before the function;
* active tracing, Powertools settings, and a reserved-concurrency cap (a guard against a flood
  running up the bill or starving the other functions; ``reservedConcurrency=false`` for
  accounts whose concurrency quota is too small to reserve any).

The sync runs every 5 minutes and the CRL publisher daily (both also on demand:
``aws lambda invoke --function-name <name> /dev/stdout``). The CRL publisher is also invoked by
the deployment itself, and again whenever the CA or the trust store changes, so the trust store
has our revocation list from the first deployment on. It owns that list (it adds the new one,
then removes every older entry); nothing else here touches it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
from devicegate.routes import ROUTES

from .data import CRL_PREFIX, TRUST_STORE_PREFIX, Data
from .network import AwsContext
from .pki import LOG_GROUP_PREFIX, Pki
from .settings import StackSettings

RUNTIME = "python3.12"
ARCHITECTURE = "arm64"
BUNDLE_PLATFORM_ARCH = "aarch64"  # the manylinux arch that runs on ARCHITECTURE
BUNDLE_PYTHON = "3.12"  # the Python the bundle's wheels are for: RUNTIME's
LOG_RETENTION_DAYS = 90
DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024  # bigger zips go through S3

SECRET_ENV = {
    "ca": "DEVICEGATE_CA_SECRET",
    "idp_key": "DEVICEGATE_IDP_KEY_SECRET",
    "scep_challenge": "DEVICEGATE_SCEP_CHALLENGE_SECRET",
    "fleet_token": "DEVICEGATE_FLEET_TOKEN_SECRET",
    "webhook_secret": "DEVICEGATE_FLEET_WEBHOOK_SECRET",
}


def _route_handlers() -> dict[str, str]:
    handlers: dict[str, str] = {}
    for route in ROUTES:
        if handlers.setdefault(route.function, route.handler) != route.handler:
            raise pulumi.RunError(f"function {route.function!r} has two handlers in devicegate.routes")
    return handlers


HANDLERS = {
    **_route_handlers(),
    "sync": "devicegate.compliance.sync:lambda_handler",
    "crl": "devicegate.crl:lambda_handler",
}


@dataclass(frozen=True)
class FunctionSpec:
    short: str
    description: str
    memory: int  # MB
    timeout: int  # seconds (the Fleet client alone may take ~15 s: 5 s timeout, retries)
    concurrency: int
    secrets: tuple[str, ...] = ()
    table_actions: tuple[str, ...] = ()
    schedule: str | None = None

    @property
    def handler(self) -> str:
        """Lambda's spelling of ``module:function``: ``module.function``."""
        module, _, name = HANDLERS[self.short].partition(":")
        return f"{module}.{name}"

    @property
    def uses_fleet(self) -> bool:
        return "fleet_token" in self.secrets


SPECS: tuple[FunctionSpec, ...] = (
    FunctionSpec("scep", "SCEP enrollment (/scep)", 512, 30, 20,
                 secrets=("ca", "scep_challenge", "fleet_token"),
                 table_actions=("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query",
                                "dynamodb:TransactWriteItems")),
    FunctionSpec("idp", "SAML IdP (/saml/metadata, /saml/sso, /saml/recheck)", 512, 30, 50,
                 secrets=("ca", "idp_key", "fleet_token"),
                 # BatchGetItem: a login reads its certificate and its host's compliance in one call
                 table_actions=("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem",
                                "dynamodb:DeleteItem", "dynamodb:UpdateItem")),
    FunctionSpec("webhook", "Fleet policy webhook (/fleet/webhook)", 256, 30, 10,
                 secrets=("fleet_token", "webhook_secret"),
                 table_actions=("dynamodb:GetItem", "dynamodb:PutItem")),
    FunctionSpec("sync", "Compliance sync from Fleet (scheduled)", 512, 300, 1,
                 secrets=("fleet_token",),
                 # Scan: the superseded-certificate pass reads every active certificate once a run
                 table_actions=("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Query",
                                "dynamodb:UpdateItem", "dynamodb:Scan"),
                 schedule="rate(5 minutes)"),
    FunctionSpec("health", "Health (/healthz on both hosts)", 128, 3, 5),
    FunctionSpec("crl", "CRL publisher: S3 and the ALB trust store (daily and on demand)", 256, 60, 1,
                 secrets=("ca",),
                 table_actions=("dynamodb:Query", "dynamodb:Scan", "dynamodb:GetItem"),
                 schedule="rate(1 day)"),
)


@dataclass(frozen=True)
class OktaValues:
    """What the IdP must know about Okta, read back from Okta's metadata."""

    acs_url: pulumi.Input[str]
    audience: pulumi.Input[str]
    sp_cert_pem: pulumi.Input[str]


def source_code_hash(bundle) -> str:
    """Lambda's CodeSha256 form of the bundle's digest (base64 of the raw SHA-256)."""
    digest = bundle.sha256
    return base64.b64encode(bytes.fromhex(digest)).decode() if len(digest) == 64 else digest


def check_bundle(bundle) -> None:
    if not str(bundle.platform).endswith(BUNDLE_PLATFORM_ARCH) or bundle.python_version != BUNDLE_PYTHON:
        raise pulumi.RunError(
            f"the bundle is for {bundle.platform} / Python {bundle.python_version}, but the functions run "
            f"{RUNTIME} on {ARCHITECTURE}: build it with platform manylinux2014_{BUNDLE_PLATFORM_ARCH} and "
            f"python_version {BUNDLE_PYTHON}")
    if not Path(bundle.path).is_file():
        raise pulumi.RunError(f"the bundle {bundle.path} does not exist")


def _statement(sid: str, actions, resources, condition: dict | None = None) -> dict:
    statement = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


class Functions(pulumi.ComponentResource):
    functions: dict[str, aws.lambda_.Function]
    roles: dict[str, aws.iam.Role]
    policies: dict[str, aws.iam.RolePolicy]
    log_groups: dict[str, aws.cloudwatch.LogGroup]
    schedules: dict[str, aws.cloudwatch.EventRule]
    crl_publish: aws.lambda_.Invocation

    def __init__(self, name: str, cfg: StackSettings, ctx: AwsContext, pki: Pki, data: Data,
                 trust_store: aws.lb.TrustStore, okta: OktaValues, bundle,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("devicegate:index:Functions", name, None, opts)
        check_bundle(bundle)
        child = pulumi.ResourceOptions(parent=self)
        tags = {"devicegate:stack": cfg.stack}
        self.functions, self.roles, self.policies, self.log_groups, self.schedules = {}, {}, {}, {}, {}

        code = self._code(cfg, data, bundle, child)
        assume = json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})

        for spec in SPECS:
            function_name = cfg.function_name(spec.short)
            log_group = aws.cloudwatch.LogGroup(
                spec.short, name=f"{LOG_GROUP_PREFIX}{function_name}", retention_in_days=LOG_RETENTION_DAYS,
                kms_key_id=pki.kms_key.arn, tags=tags, opts=child)
            role = aws.iam.Role(spec.short, description=f"devicegate {spec.short} function ({cfg.stack})",
                                assume_role_policy=assume, tags=tags, opts=child)
            policy = aws.iam.RolePolicy(
                spec.short, role=role.id, policy=self._policy(spec, cfg, ctx, pki, data, trust_store, log_group),
                opts=child)
            function = aws.lambda_.Function(
                spec.short,
                name=function_name,
                description=spec.description,
                role=role.arn,
                runtime=RUNTIME,
                architectures=[ARCHITECTURE],
                handler=spec.handler,
                memory_size=spec.memory,
                timeout=spec.timeout,
                reserved_concurrent_executions=spec.concurrency if cfg.reserved_concurrency else -1,
                tracing_config={"mode": "Active"},
                logging_config={"log_format": "JSON", "log_group": log_group.name,
                                "application_log_level": "INFO", "system_log_level": "WARN"},
                environment={"variables": self._environment(spec, cfg, pki, data, trust_store, okta)},
                tags=tags,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group, policy]),
                **code,
            )
            if spec.schedule:
                rule = aws.cloudwatch.EventRule(
                    spec.short, description=f"devicegate {spec.short}: {spec.schedule}",
                    schedule_expression=spec.schedule, tags=tags, opts=child)
                permission = aws.lambda_.Permission(
                    f"{spec.short}-schedule", action="lambda:InvokeFunction", function=function.name,
                    principal="events.amazonaws.com", source_arn=rule.arn, opts=child)
                aws.cloudwatch.EventTarget(
                    spec.short, rule=rule.name, arn=function.arn,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[permission]))
                # A run that could not start in time is dropped, not queued behind the next one.
                aws.lambda_.FunctionEventInvokeConfig(
                    spec.short, function_name=function.name, maximum_retry_attempts=0,
                    maximum_event_age_in_seconds=max(60, min(spec.timeout, 3600)), opts=child)
                self.schedules[spec.short] = rule
            self.functions[spec.short] = function
            self.roles[spec.short] = role
            self.policies[spec.short] = policy
            self.log_groups[spec.short] = log_group
        # The trust store's revocation list, published by its one owner as soon as it can run.
        self.crl_publish = aws.lambda_.Invocation(
            "crl-publish",
            function_name=self.functions["crl"].name,
            input=json.dumps({"source": "pulumi", "reason": "deployment"}),
            triggers={
                "ca": pki.ca_cert_pem.apply(lambda pem: hashlib.sha256(pem.encode()).hexdigest()),
                "trust_store": trust_store.arn,
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.functions["crl"], self.policies["crl"]]),
        )
        self.register_outputs({short: f.name for short, f in self.functions.items()})

    # ------------------------------------------------------------------ code, env, policy

    @staticmethod
    def _code(cfg: StackSettings, data: Data, bundle, child: pulumi.ResourceOptions) -> dict:
        code_hash = source_code_hash(bundle)
        if bundle.size <= DIRECT_UPLOAD_LIMIT:
            return {"code": pulumi.FileArchive(str(bundle.path)), "source_code_hash": code_hash}
        # Over Lambda's 50 MB direct-upload limit: one S3 object, shared by every function.
        obj = aws.s3.BucketObjectv2(
            "lambda-bundle", bucket=data.bucket.id, key=f"lambda/{bundle.sha256}.zip",
            source=pulumi.FileAsset(str(bundle.path)), opts=child)
        return {"s3_bucket": data.bucket.id, "s3_key": obj.key, "s3_object_version": obj.version_id,
                "source_code_hash": code_hash}

    @staticmethod
    def _environment(spec: FunctionSpec, cfg: StackSettings, pki: Pki, data: Data,
                     trust_store: aws.lb.TrustStore, okta: OktaValues) -> dict:
        env: dict[str, pulumi.Input[str]] = {
            "POWERTOOLS_SERVICE_NAME": f"devicegate-{spec.short}",
            "POWERTOOLS_METRICS_NAMESPACE": "devicegate",
            "LOG_LEVEL": "INFO",
        }
        if spec.table_actions:
            env["DEVICEGATE_TABLE"] = data.table.name
        for secret in spec.secrets:
            env[SECRET_ENV[secret]] = pki.secrets[secret].arn
        if spec.uses_fleet:
            env["DEVICEGATE_FLEET_URL"] = cfg.fleet_url
            if cfg.enforced_policies:
                env["DEVICEGATE_ENFORCED_POLICIES"] = cfg.enforced_policies
        if spec.short == "scep":
            env["DEVICEGATE_CERT_VALIDITY_DAYS"] = str(cfg.cert_validity_days)
            env["DEVICEGATE_ACCEPT_CN_UUID"] = "false"  # only the SAN URI names a host in AWS
        if spec.short == "idp":
            env.update({
                "DEVICEGATE_IDP_ENTITY_ID": cfg.metadata_url,
                "DEVICEGATE_SSO_URL": cfg.sso_url,
                "DEVICEGATE_OKTA_ACS_URL": okta.acs_url,
                "DEVICEGATE_OKTA_AUDIENCE": okta.audience,
                "DEVICEGATE_OKTA_SP_CERT": okta.sp_cert_pem,
                "DEVICEGATE_FAIL_MODE": cfg.fail_mode,
            })
        if spec.short == "crl":
            env["DEVICEGATE_CRL_BUCKET"] = data.bucket.id
            env["DEVICEGATE_TRUST_STORE_ARN"] = trust_store.arn
        return env

    @staticmethod
    def _policy(spec: FunctionSpec, cfg: StackSettings, ctx: AwsContext, pki: Pki, data: Data,
                trust_store: aws.lb.TrustStore, log_group: aws.cloudwatch.LogGroup) -> pulumi.Output[str]:
        secret_arns = [pki.secrets[s].arn for s in spec.secrets]
        needs_bucket = spec.short == "crl"
        via = [ctx.service_host(s) for s, used in (("secretsmanager", bool(spec.secrets)),
                                                   ("dynamodb", bool(spec.table_actions)),
                                                   ("s3", needs_bucket)) if used]

        def document(args: list) -> str:
            log_arn, table_arn, key_arn, bucket_arn, store_arn, *secrets = args
            statements = [
                _statement("OwnLogGroup", ["logs:CreateLogStream", "logs:PutLogEvents"],
                           [log_arn, f"{log_arn}:*"]),
                # X-Ray has no resource-level permissions.
                _statement("Tracing", ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], ["*"]),
            ]
            if spec.table_actions:
                statements.append(_statement("Table", spec.table_actions, [table_arn]))
            if secrets:
                statements.append(_statement("Secrets", ["secretsmanager:GetSecretValue"], secrets))
            if via:
                statements.append(_statement("StackKeyThroughServices", ["kms:Decrypt", "kms:GenerateDataKey"],
                                             [key_arn], {"StringEquals": {"kms:ViaService": via}}))
            if needs_bucket:
                # Exactly what devicegate.crl calls: put_object (DER and PEM), then
                # describe/add/remove_trust_store_revocations.
                statements += [
                    _statement("PublishRevocationLists", ["s3:PutObject"], [f"{bucket_arn}/{CRL_PREFIX}*"]),
                    # AddTrustStoreRevocations reads the CRL object with the caller's rights.
                    _statement("ReadRevocationLists", ["s3:GetObject", "s3:GetObjectVersion"],
                               [f"{bucket_arn}/{CRL_PREFIX}*"]),
                    _statement("ReplaceTrustStoreRevocations", ["elasticloadbalancing:AddTrustStoreRevocations",
                                                                "elasticloadbalancing:RemoveTrustStoreRevocations"],
                               [store_arn]),
                    # Describe calls have no resource-level permissions.
                    _statement("ListTrustStoreRevocations", ["elasticloadbalancing:DescribeTrustStoreRevocations"],
                               ["*"]),
                ]
            return json.dumps({"Version": "2012-10-17", "Statement": statements}, indent=2)

        return pulumi.Output.all(log_group.arn, data.table.arn, pki.kms_key.arn, data.bucket.arn,
                                 trust_store.arn, *secret_arns).apply(document)


__all__ = ["Functions", "FunctionSpec", "OktaValues", "SPECS", "HANDLERS", "RUNTIME", "ARCHITECTURE",
           "TRUST_STORE_PREFIX"]
