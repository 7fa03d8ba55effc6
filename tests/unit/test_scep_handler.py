"""The /scep Lambda handler, driven with ALB events, against moto (DynamoDB + Secrets Manager)."""

from __future__ import annotations

import base64
import json
import uuid

import boto3
import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devicegate import store as store_mod
from devicegate.local import pki
from devicegate.scep import handler, protocol
from devicegate.scep.protocol import PkiStatus
from tests import scep_helpers as h


@pytest.fixture
def lambda_env(moto_server, scep_ca, monkeypatch):
    cert, key = scep_ca
    suffix = uuid.uuid4().hex[:8]
    table, ca_secret, challenge_secret = f"h-{suffix}", f"ca-{suffix}", f"ch-{suffix}"
    kwargs = {"endpoint_url": moto_server.endpoint, "region_name": "us-east-1"}
    store_mod.create_table(boto3.client("dynamodb", **kwargs), table)
    sm = boto3.client("secretsmanager", **kwargs)
    sm.create_secret(Name=ca_secret, SecretString=json.dumps({"certificate": pki.pem_cert(cert), "private_key": pki.pem_key(key)}))
    sm.create_secret(Name=challenge_secret, SecretString="secret")
    for name, value in {
        "AWS_ENDPOINT_URL": moto_server.endpoint, "DEVICEGATE_TABLE": table, "DEVICEGATE_CA_SECRET": ca_secret,
        "DEVICEGATE_SCEP_CHALLENGE_SECRET": challenge_secret, "DEVICEGATE_ACCEPT_CN_UUID": "false",
    }.items():
        monkeypatch.setenv(name, value)
    handler.reset()
    yield cert
    handler.reset()


def event(method="GET", query=None, body=None, b64=False, multi=True):
    e = {"requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/scep/1"}},
         "httpMethod": method, "path": "/scep", "body": body or "", "isBase64Encoded": b64}
    if multi:
        e["multiValueQueryStringParameters"] = {k: [v] for k, v in (query or {}).items()}
        e["multiValueHeaders"] = {"host": ["devicegate.example.com"]}
    else:
        e["queryStringParameters"] = query or {}
        e["headers"] = {"host": "devicegate.example.com"}
    return e


@pytest.mark.parametrize("multi", [True, False])
def test_caps_and_ca_cert(lambda_env, multi):
    caps = handler.lambda_handler(event(query={"operation": "GetCACaps"}, multi=multi), None)
    assert caps["statusCode"] == 200 and "SCEPStandard" in caps["body"] and not caps["isBase64Encoded"]
    assert ("multiValueHeaders" in caps) == multi
    ca = handler.lambda_handler(event(query={"operation": "GetCACert", "message": "anything"}, multi=multi), None)
    assert ca["statusCode"] == 200 and ca["isBase64Encoded"]
    assert x509.load_der_x509_certificate(base64.b64decode(ca["body"])) == lambda_env


def test_pki_operation_post_and_get(lambda_env):
    key = h.key()
    for via in ("post", "get"):
        message, nonce, _, _ = h.pkcs_req(lambda_env, private_key=key)
        if via == "post":
            e = event("POST", {"operation": "PKIOperation"}, base64.b64encode(message).decode(), b64=True)
        else:  # literal '+' and '/' as macOS sends them; ALB leaves them encoded as received
            e = event("GET", {"operation": "PKIOperation", "message": base64.b64encode(message).decode().replace("=", "%3D")})
        result = handler.lambda_handler(e, None)
        assert result["statusCode"] == 200 and result["isBase64Encoded"]
        headers = {k: v[0] for k, v in result["multiValueHeaders"].items()}
        assert headers["content-type"] == "application/x-pki-message"
        rep = protocol.parse_cert_rep(base64.b64decode(result["body"]), ca_cert=lambda_env, requester_key=key)
        assert rep.status is PkiStatus.SUCCESS and rep.recipient_nonce == nonce


def test_configuration_error_names_the_key(monkeypatch):
    monkeypatch.delenv("DEVICEGATE_TABLE", raising=False)
    handler.reset()
    result = handler.lambda_handler(event(query={"operation": "GetCACert"}), None)
    assert result["statusCode"] == 503 and "misconfigured" in result["body"]
    from devicegate import settings as settings_mod
    with pytest.raises(settings_mod.ConfigError, match="DEVICEGATE_TABLE.*Fix"):
        settings_mod.from_env({})
    with pytest.raises(settings_mod.ConfigError, match="DEVICEGATE_CERT_VALIDITY_DAYS"):
        settings_mod.from_env({"DEVICEGATE_TABLE": "t", "DEVICEGATE_CA_SECRET": "c",
                               "DEVICEGATE_SCEP_CHALLENGE_SECRET": "s", "DEVICEGATE_CERT_VALIDITY_DAYS": "400"})
    handler.reset()


def test_bad_event_is_400():
    assert handler.lambda_handler({"httpMethod": 5}, None)["statusCode"] == 400
    assert handler.lambda_handler(None, None)["statusCode"] == 400


_events = st.fixed_dictionaries({
    "httpMethod": st.sampled_from(["GET", "POST", "PUT"]),
    "path": st.just("/scep"),
    "multiValueQueryStringParameters": st.dictionaries(
        st.sampled_from(["operation", "message", "x"]),
        st.lists(st.one_of(st.sampled_from(["GetCACaps", "GetCACert", "PKIOperation"]), st.text(max_size=200)), min_size=1, max_size=2),
        max_size=3),
    "multiValueHeaders": st.just({}),
    "body": st.one_of(st.just(""), st.binary(max_size=500).map(lambda b: base64.b64encode(b).decode())),
    "isBase64Encoded": st.just(True),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_events)
def test_fuzz_events_never_500(lambda_env, e):
    result = handler.lambda_handler(e, None)
    assert result["statusCode"] in (200, 400, 405, 413), result
