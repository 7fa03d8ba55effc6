"""The Lambdas: runtime, bundle, roles, environment and schedules."""

import base64
import hashlib
import json

import pytest

from devicegate import settings as runtime_settings
from devicegate.routes import ROUTES
from infra.functions import HANDLERS, SPECS
from tests.infra import harness
from tests.infra.harness import as_list, policy_statements

FUNCTION = "aws:lambda/function:Function"
SHORTS = {spec.short for spec in SPECS}


def functions(d):
    return {r.name: r for r in d.of_type(FUNCTION)}


def role_policies(d):
    roles = {r.outputs["name"]: r.name for r in d.of_type("aws:iam/role:Role")}
    return {roles[r.inputs["role"]]: policy_statements(r.inputs["policy"])
            for r in d.of_type("aws:iam/rolePolicy:RolePolicy")}


def allowed(statements, prefix: str) -> dict[str, set[str]]:
    """action -> resources, for the Allow statements whose actions start with prefix."""
    found: dict[str, set[str]] = {}
    for statement in statements:
        if statement["Effect"] != "Allow":
            continue
        for action in as_list(statement["Action"]):
            if action.startswith(prefix):
                found.setdefault(action, set()).update(as_list(statement["Resource"]))
    return found


def test_runtime_architecture_tracing_and_handlers(deployment):
    fns = functions(deployment)
    assert set(fns) == SHORTS == {"scep", "idp", "webhook", "sync", "health", "crl"}
    for short, fn in fns.items():
        assert fn.inputs["runtime"] == "python3.12"
        assert fn.inputs["architectures"] == ["arm64"]
        assert fn.inputs["tracingConfig"] == {"mode": "Active"}
        assert fn.inputs["reservedConcurrentExecutions"] > 0
        module, name = HANDLERS[short].split(":")
        assert fn.inputs["handler"] == f"{module}.{name}"
    for route in ROUTES:  # the handler each route names is the one its function runs
        module, name = route.handler.split(":")
        assert fns[route.function].inputs["handler"] == f"{module}.{name}"
    assert fns["sync"].inputs["handler"] == "devicegate.compliance.sync.lambda_handler"
    assert fns["crl"].inputs["handler"] == "devicegate.crl.lambda_handler"


def test_every_function_runs_the_one_bundle_with_its_content_hash(deployment):
    hashes = {fn.inputs["sourceCodeHash"] for fn in functions(deployment).values()}
    assert len(hashes) == 1
    (code_hash,) = hashes
    assert len(base64.b64decode(code_hash)) == 32  # Lambda's CodeSha256 form


def test_a_bundle_over_the_direct_upload_limit_goes_through_s3(tmp_path):
    bundle = harness.fake_bundle(tmp_path, size=60 * 1024 * 1024)
    d = harness.run(bundle=bundle)
    code = d.one("aws:s3/bucketObjectv2:BucketObjectv2", "lambda-bundle")
    assert code.inputs["key"] == f"lambda/{bundle.sha256}.zip"
    for fn in functions(d).values():
        assert fn.inputs["s3Key"] == code.inputs["key"]
        assert fn.inputs["s3ObjectVersion"] == code.outputs["versionId"]
        assert fn.inputs["sourceCodeHash"] == base64.b64encode(bytes.fromhex(bundle.sha256)).decode()
        assert "code" not in fn.inputs


def test_a_bundle_for_another_platform_is_refused(tmp_path):
    bundle = harness.fake_bundle(tmp_path, platform="manylinux2014_x86_64")
    with pytest.raises(Exception, match="manylinux2014_aarch64"):
        harness.run(bundle=bundle)


def test_each_function_has_its_own_role_and_log_group(deployment):
    d = deployment
    fns = functions(d)
    roles = {r.outputs["arn"]: r for r in d.of_type("aws:iam/role:Role")}
    assert len({fn.inputs["role"] for fn in fns.values()}) == len(fns) == len(roles)
    for short, fn in fns.items():
        role = roles[fn.inputs["role"]]
        trust = policy_statements(role.inputs["assumeRolePolicy"])
        assert trust == [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                          "Action": "sts:AssumeRole"}]
        log_group = d.one("aws:cloudwatch/logGroup:LogGroup", short)
        assert log_group.inputs["name"] == f"/aws/lambda/{fn.inputs['name']}"
        assert fn.inputs["loggingConfig"]["logGroup"] == log_group.inputs["name"]
        assert log_group.inputs["retentionInDays"] == 90
        assert log_group.inputs["kmsKeyId"] == d.one("aws:kms/key:Key").outputs["arn"]
        assert log_group.urn in fn.dependencies  # the group exists before the function can log
        statements = role_policies(d)[short]
        assert allowed(statements, "logs:") == {
            "logs:CreateLogStream": {log_group.outputs["arn"], log_group.outputs["arn"] + ":*"},
            "logs:PutLogEvents": {log_group.outputs["arn"], log_group.outputs["arn"] + ":*"}}


def test_no_wildcard_actions_and_table_actions_scoped_to_the_table(deployment):
    d = deployment
    table_arn = d.one("aws:dynamodb/table:Table").outputs["arn"]
    expected = {spec.short: set(spec.table_actions) for spec in SPECS}
    for short, statements in role_policies(d).items():
        for statement in statements:
            assert statement["Effect"] == "Allow"
            assert "NotAction" not in statement and "NotResource" not in statement
            for action in as_list(statement["Action"]):
                assert "*" not in action, (short, action)
                if action.split(":")[0] in ("dynamodb", "secretsmanager", "s3", "kms"):
                    assert "*" not in as_list(statement["Resource"]), (short, action)
        table = allowed(statements, "dynamodb:")
        assert set(table) == expected[short], short
        for resources in table.values():
            assert resources == {table_arn}
    assert not allowed(role_policies(d)["health"], "dynamodb:")
    assert expected["scep"] == {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query",
                                "dynamodb:TransactWriteItems"}
    assert expected["crl"] == {"dynamodb:Query", "dynamodb:Scan", "dynamodb:GetItem"}


def test_each_secret_is_readable_by_exactly_the_functions_that_need_it(deployment):
    d = deployment
    secrets = {r.name: r.outputs["arn"] for r in d.of_type("aws:secretsmanager/secret:Secret")}
    readers: dict[str, set[str]] = {name: set() for name in secrets}
    by_arn = {arn: name for name, arn in secrets.items()}
    for short, statements in role_policies(d).items():
        for action, resources in allowed(statements, "secretsmanager:").items():
            assert action == "secretsmanager:GetSecretValue"
            for arn in resources:
                readers[by_arn[arn]].add(short)
    assert readers == {
        "ca": {"scep", "idp", "crl"},
        "idp-key": {"idp"},
        "scep-challenge": {"scep"},
        "fleet-token": {"scep", "idp", "sync", "webhook"},
        "fleet-webhook-secret": {"webhook"},
    }


def test_only_the_crl_function_touches_the_bucket_and_the_trust_store(deployment):
    d = deployment
    bucket_arn = d.one("aws:s3/bucket:Bucket").outputs["arn"]
    store_arn = d.one("aws:lb/trustStore:TrustStore").outputs["arn"]
    policies = role_policies(d)
    for short, statements in policies.items():
        if short != "crl":
            assert not allowed(statements, "s3:") and not allowed(statements, "elasticloadbalancing:"), short
    crl = policies["crl"]
    # Exactly what devicegate.crl calls: put_object, describe/add/remove_trust_store_revocations.
    assert allowed(crl, "s3:") == {
        "s3:PutObject": {f"{bucket_arn}/crl/*"},
        "s3:GetObject": {f"{bucket_arn}/crl/*"},
        "s3:GetObjectVersion": {f"{bucket_arn}/crl/*"},
    }
    assert allowed(crl, "elasticloadbalancing:") == {
        "elasticloadbalancing:AddTrustStoreRevocations": {store_arn},
        "elasticloadbalancing:RemoveTrustStoreRevocations": {store_arn},
        "elasticloadbalancing:DescribeTrustStoreRevocations": {"*"},  # no resource-level permissions
    }
    import devicegate.crl as crl_module

    assert crl_module.CRL_KEY.startswith("crl/")  # inside what the role may write and ELB may read


def test_kms_use_only_through_the_services_each_function_calls(deployment):
    d = deployment
    key_arn = d.one("aws:kms/key:Key").outputs["arn"]
    for short, statements in role_policies(d).items():
        kms = [s for s in statements if any(a.startswith("kms:") for a in as_list(s["Action"]))]
        if short == "health":
            assert not kms
            continue
        (statement,) = kms
        assert statement["Resource"] == [key_arn]
        services = set(as_list(statement["Condition"]["StringEquals"]["kms:ViaService"]))
        assert services <= {"secretsmanager.eu-west-1.amazonaws.com", "dynamodb.eu-west-1.amazonaws.com",
                            "s3.eu-west-1.amazonaws.com"}
        assert ("s3.eu-west-1.amazonaws.com" in services) == (short == "crl")


def _env(d, short):
    return functions(d)[short].inputs["environment"]["variables"]


def test_environments_satisfy_the_runtime_settings_parsers(deployment):
    """Each function's env, fed to the very parsers the handlers use, parses without error."""
    d = deployment
    secrets = {r.name: r.outputs["arn"] for r in d.of_type("aws:secretsmanager/secret:Secret")}
    table = d.one("aws:dynamodb/table:Table").outputs["name"]

    scep = runtime_settings.from_env(_env(d, "scep"))
    assert (scep.table, scep.ca_secret_id, scep.scep_challenge_secret_id) == (
        table, secrets["ca"], secrets["scep-challenge"])
    assert scep.accept_cn_uuid is False and scep.cert_validity_days == 365

    idp = runtime_settings.idp_from_env(_env(d, "idp"))
    assert idp.entity_id == "https://devicegate.example.com/saml/metadata"
    assert idp.sso_url == "https://okta.devicegate.example.com/saml/sso"
    assert idp.okta_audience == harness.OKTA_AUDIENCE
    assert idp.okta_acs_url == f"{harness.OKTA_ORG}/sso/saml2/{harness.IDP_ID}"
    assert idp.idp_key_secret_id == secrets["idp-key"] and idp.ca_secret_id == secrets["ca"]
    assert idp.fail_mode == "closed"
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    sp_cert = x509.load_pem_x509_certificate(idp.okta_sp_cert_pem.encode())
    assert sp_cert.public_bytes(Encoding.DER) == harness.okta_sp_certificate().public_bytes(Encoding.DER)

    for short in ("scep", "idp", "webhook", "sync"):
        fleet = runtime_settings.fleet_from_env(_env(d, short))
        assert fleet.url == "https://fleet.example.com"
        assert fleet.token_secret_id == secrets["fleet-token"]
        assert runtime_settings.table_name(_env(d, short)) == table
    assert runtime_settings.fleet_from_env(_env(d, "webhook")).webhook_secret_id == secrets["fleet-webhook-secret"]

    crl = _env(d, "crl")
    assert crl["DEVICEGATE_TABLE"] == table and crl["DEVICEGATE_CA_SECRET"] == secrets["ca"]
    assert crl["DEVICEGATE_CRL_BUCKET"] == d.one("aws:s3/bucket:Bucket").outputs["bucket"]
    assert crl["DEVICEGATE_TRUST_STORE_ARN"] == d.one("aws:lb/trustStore:TrustStore").outputs["arn"]
    health = _env(d, "health")
    assert not [k for k in health if k.startswith("DEVICEGATE_")]


def test_no_secret_value_is_in_any_environment(deployment):
    d = deployment
    values = {r.outputs["result"] for r in d.of_type("random:index/randomPassword:RandomPassword")}
    values.add(harness.BASE_CONFIG["devicegate:fleetApiToken"])
    for fn in functions(d).values():
        text = json.dumps(fn.inputs["environment"])
        assert not [v for v in values if v in text]
        assert "PRIVATE KEY" not in text


def test_powertools_settings(deployment):
    for short, fn in functions(deployment).items():
        env = fn.inputs["environment"]["variables"]
        assert env["POWERTOOLS_SERVICE_NAME"] == f"devicegate-{short}"
        assert env["LOG_LEVEL"] == "INFO"


def test_schedules(deployment):
    d = deployment
    fns = functions(d)
    expected = {"sync": "rate(5 minutes)", "crl": "rate(1 day)"}
    rules = {r.name: r for r in d.of_type("aws:cloudwatch/eventRule:EventRule")}
    assert {name: r.inputs["scheduleExpression"] for name, r in rules.items()} == expected
    targets = {t.inputs["rule"]: t.inputs["arn"] for t in d.of_type("aws:cloudwatch/eventTarget:EventTarget")}
    for short in expected:
        assert targets[rules[short].outputs["name"]] == fns[short].outputs["arn"]
        (permission,) = [p for p in d.of_type("aws:lambda/permission:Permission")
                         if p.inputs["principal"] == "events.amazonaws.com"
                         and p.inputs["sourceArn"] == rules[short].outputs["arn"]]
        assert permission.inputs["function"] == fns[short].inputs["name"]
    configs = {c.inputs["functionName"]: c.inputs for c in
               d.of_type("aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig")}
    assert configs[fns["sync"].inputs["name"]]["maximumRetryAttempts"] == 0


def test_reserved_concurrency_can_be_turned_off():
    d = harness.run({"devicegate:reservedConcurrency": "false"})
    assert {fn.inputs["reservedConcurrentExecutions"] for fn in d.of_type(FUNCTION)} == {-1}


def test_the_bundle_digest_is_the_source_code_hash(deployment, tmp_path):
    bundle = harness.fake_bundle(tmp_path)
    assert hashlib.sha256(bundle.path.read_bytes()).hexdigest() == bundle.sha256
    from infra.functions import source_code_hash

    assert base64.b64decode(source_code_hash(bundle)).hex() == bundle.sha256
