"""Run the real Pulumi program (``infra/__main__.py``) under Pulumi's mocks and record everything.

``run(config)`` executes the program exactly as ``pulumi up`` would run it (same file, same
imports) against a mock engine that answers like AWS and Okta would: ARNs, bucket names, object
version ids, ALB DNS names, certificate validation options, real PEM keys and certificates from
pulumi-tls, Okta ids and Okta's SP metadata. The recording monitor keeps, per resource, its
type, name, inputs (as the engine sees them: camelCase), outputs, parent, dependency URNs and
options (``retainOnDelete``, ``protect``), so tests can check properties and the dependency
graph that decides the destroy order. Stack outputs are resolved, with their secretness.

The Lambda bundle is replaced by a tiny zip (the real builder downloads wheels and has its own
tests in test_bundle.py).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import runpy
import threading
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pulumi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime.settings import ROOT, SETTINGS
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "infra" / "__main__.py"
ACCOUNT = "123456789012"
REGION = "eu-west-1"
ZONE_ID = "Z0123456789ABCDEFGHIJ"
ZONE_NAME = "example.com"
OKTA_ORG = "https://example.okta.com"
OKTA_AUDIENCE = "https://www.okta.com/saml2/service-provider/spdevicegatetest00"
IDP_ID = "0oaDEVICEGATEIDP0001"
AUTHENTICATOR_ID = "autDEVICEGATE0000001"
POLICY_ID = "rstDEVICEGATEPOLICY1"
APP_ID = "0oaAPPLICATION000001"

BASE_CONFIG = {
    "devicegate:domain": "devicegate.example.com",
    "devicegate:hostedZoneName": ZONE_NAME,
    "devicegate:fleetUrl": "https://fleet.example.com",
    "devicegate:fleetApiToken": "fleet-api-token-value",
    "devicegate:idpFactorOnly": "true",
    "devicegate:oktaAppIds": json.dumps([APP_ID]),
    "okta:orgName": "example",
    "okta:baseUrl": "okta.com",
    "okta:apiToken": "okta-api-token-value",
    "aws:region": REGION,
}
SECRET_KEYS = ["devicegate:fleetApiToken", "devicegate:scepChallenge", "okta:apiToken"]


# --------------------------------------------------------------------------- key material


@functools.lru_cache(maxsize=None)
def _rsa_key(label: str, bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _key_pem(key: rsa.RSAPrivateKey, pkcs8: bool = False) -> str:
    fmt = serialization.PrivateFormat.PKCS8 if pkcs8 else serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def _self_signed(key, common_name: str, *, ca: bool, days: int) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(int(hashlib.sha256(common_name.encode()).hexdigest()[:30], 16))
               .not_valid_before(start).not_valid_after(start + timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True))
    return builder.sign(key, hashes.SHA256())


@functools.lru_cache(maxsize=None)
def okta_sp_certificate() -> x509.Certificate:
    return _self_signed(_rsa_key("okta-sp", 2048), "example.okta.com", ca=False, days=3650)


def okta_sp_certificate_base64() -> str:
    """As Okta's metadata holds it: base64 DER, wrapped (whitespace is part of the test)."""
    body = base64.b64encode(okta_sp_certificate().public_bytes(serialization.Encoding.DER)).decode()
    return "\n" + "\n".join(body[i:i + 76] for i in range(0, len(body), 76)) + "\n"


# --------------------------------------------------------------------------- records


@dataclass
class Registration:
    type: str
    name: str
    urn: str
    id: str
    inputs: dict
    raw_inputs: dict  # with secret markers: is_secret(raw_inputs[k]) tells a secret input
    outputs: dict
    parent: str
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]
    retain_on_delete: bool
    protect: bool
    custom: bool


@dataclass
class Deployment:
    resources: list[Registration]
    outputs: dict
    secret_outputs: set[str]
    calls: list[tuple[str, dict]]
    by_urn: dict[str, Registration] = field(default_factory=dict)

    def __post_init__(self):
        self.by_urn = {r.urn: r for r in self.resources}

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> Registration:
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {type_} {name or ''}, found {[r.name for r in found]}"
        return found[0]

    def named(self, name: str) -> list[Registration]:
        return [r for r in self.resources if r.name == name]

    def closure(self, urn: str) -> set[str]:
        """Every URN this resource depends on, directly or through others (destroy-before set)."""
        seen: set[str] = set()
        stack = [urn]
        while stack:
            current = self.by_urn.get(stack.pop())
            if current is None:
                continue
            for dep in current.dependencies:
                if dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
        return seen

    def depends_on(self, dependent: Registration, dependency: Registration) -> bool:
        return dependency.urn in self.closure(dependent.urn)


# --------------------------------------------------------------------------- mocks


SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
SIG_KEY = "4dabf18193072939515e22adb298388d"


def unwrap(value):
    """Inputs as the provider would see them: secret markers removed."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            return unwrap(value.get("value"))
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def is_secret(value) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


def _hex(*parts: str, length: int = 16) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


class DevicegateMocks(pulumi_mocks.Mocks):
    def __init__(self, zone_name: str = ZONE_NAME, zone_id: str = ZONE_ID, private_zone: bool = False,
                 existing_authenticator: dict | None = None, adopts_existing_authenticator: bool = False):
        self.zone_name, self.zone_id, self.private_zone = zone_name, zone_id, private_zone
        # An IdP authenticator the org already has (what getAuthenticator returns) ...
        self.existing_authenticator = existing_authenticator
        # ... and whether the provider's "create" adopts it (its find-by-name-or-key).
        self.adopts_existing_authenticator = adopts_existing_authenticator
        self.calls: list[tuple[str, dict]] = []

    def call(self, args: pulumi_mocks.MockCallArgs):
        self.calls.append((args.token, dict(args.args)))
        token = args.token
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/deployer", "userId": "AIDAEXAMPLE",
                    "id": ACCOUNT}
        if token == "aws:index/getRegion:getRegion":
            return {"name": REGION, "region": REGION, "endpoint": f"ec2.{REGION}.amazonaws.com",
                    "description": "Europe (Ireland)", "id": REGION}
        if token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "reverseDnsPrefix": "com.amazonaws",
                    "id": "aws"}
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            names = [f"{REGION}{z}" for z in "abc"]
            return {"names": names, "zoneIds": [f"euw1-az{i}" for i in (1, 2, 3)], "id": REGION,
                    "groupNames": [REGION]}
        if token == "aws:route53/getZones:getZones":
            return {"ids": [self.zone_id, "Z9PRIVATEZONE0000000"], "id": ACCOUNT}
        if token == "aws:route53/getZone:getZone":
            wanted_id, wanted_name = args.args.get("zoneId"), args.args.get("name")
            if (wanted_id and wanted_id != self.zone_id) or (wanted_name and wanted_name.rstrip(".") != self.zone_name):
                raise Exception("no matching Route 53 Hosted Zone found")
            return {"zoneId": self.zone_id, "id": self.zone_id, "name": self.zone_name,
                    "privateZone": self.private_zone, "nameServers": ["ns-1.awsdns-01.org"], "arn":
                    f"arn:aws:route53:::hostedzone/{self.zone_id}", "callerReference": "x", "comment": "",
                    "resourceRecordSetCount": 2, "tags": {}, "linkedServiceDescription": "",
                    "linkedServicePrincipal": "", "primaryNameServer": "ns-1.awsdns-01.org"}
        if token == "okta:idp/getMetadataSaml:getMetadataSaml":
            idp_id = args.args["idpId"]
            return {"id": f"{idp_id}_metadata", "idpId": idp_id, "entityId": OKTA_AUDIENCE,
                    "httpPostBinding": f"{OKTA_ORG}/sso/saml2/{idp_id}",
                    "httpRedirectBinding": f"{OKTA_ORG}/sso/saml2/{idp_id}",
                    "signingCertificate": okta_sp_certificate_base64(),
                    "encryptionCertificate": okta_sp_certificate_base64(),
                    "metadata": "<md:EntityDescriptor/>", "authnRequestSigned": True, "assertionsSigned": True}
        if token == "okta:index/getAuthenticator:getAuthenticator":
            found = self.existing_authenticator
            if not found or found["id"] != args.args.get("id"):
                raise Exception(f"the API returned an error: Not found: Resource not found: {args.args.get('id')}")
            return {"status": "ACTIVE", "type": "federated", **found}
        raise NotImplementedError(f"no mock for the call {token}")

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        typ, name, inputs = args.typ, args.name, unwrap(dict(args.inputs))
        state = dict(inputs)
        rid = f"{name}-{_hex(typ, name, length=8)}"
        arn = None
        if typ == "aws:kms/key:Key":
            rid = f"{_hex(name, length=8)}-1234-5678-9abc-{_hex(name, 'k', length=12)}"
            arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{rid}"
            state["keyId"] = rid
        elif typ == "tls:index/privateKey:PrivateKey":
            key = _rsa_key(name, int(inputs.get("rsaBits", 2048)))
            state.update(privateKeyPem=_key_pem(key), privateKeyPemPkcs8=_key_pem(key, pkcs8=True),
                         publicKeyPem=key.public_key().public_bytes(
                             serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())
        elif typ == "tls:index/selfSignedCert:SelfSignedCert":
            key = serialization.load_pem_private_key(inputs["privateKeyPem"].encode(), password=None)
            common_name = inputs.get("subject", {}).get("commonName", name)
            cert = _self_signed(key, common_name, ca=bool(inputs.get("isCaCertificate")),
                                days=int(inputs["validityPeriodHours"]) // 24)
            state["certPem"] = cert.public_bytes(serialization.Encoding.PEM).decode()
        elif typ == "random:index/randomPassword:RandomPassword":
            length = int(inputs["length"])
            state["result"] = (hashlib.sha256(name.encode()).hexdigest() * 4)[:length]
        elif typ == "aws:secretsmanager/secret:Secret":
            secret_name = f"{inputs.get('namePrefix', name)}{_hex(name, length=6)}"
            arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{secret_name}-AbCdEf"
            rid = arn
            state["name"] = secret_name
        elif typ == "aws:dynamodb/table:Table":
            state["name"] = inputs.get("name") or f"{name}-{_hex(name, length=7)}"
            rid = state["name"]
            arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{state['name']}"
        elif typ == "aws:s3/bucket:Bucket":
            state["bucket"] = inputs.get("bucket") or f"{name}-{_hex(name, length=7)}"
            rid = state["bucket"]
            arn = f"arn:aws:s3:::{rid}"
        elif typ == "aws:s3/bucketObjectv2:BucketObjectv2":
            content = str(inputs.get("content") or inputs.get("source") or "")
            state["versionId"] = f"v{_hex(name, content, length=31)}"
            state["etag"] = _hex(content, length=32)
            rid = inputs["key"]
        elif typ == "aws:lb/trustStore:TrustStore":
            arn = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:truststore/{inputs['name']}/{_hex(name)}"
        elif typ == "aws:lb/trustStoreRevocation:TrustStoreRevocation":
            state["revocationId"] = 1
        elif typ == "aws:acm/certificate:Certificate":
            arn = f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/{_hex(name, length=8)}"
            domains = [inputs["domainName"], *inputs.get("subjectAlternativeNames", [])]
            state["domainValidationOptions"] = [
                {"domainName": d, "resourceRecordName": f"_{_hex(d, length=12)}.{d}.", "resourceRecordType": "CNAME",
                 "resourceRecordValue": f"_{_hex(d, 'v', length=12)}.acm-validations.aws."} for d in domains]
        elif typ == "aws:acm/certificateValidation:CertificateValidation":
            rid = inputs["certificateArn"]
        elif typ == "aws:route53/record:Record":
            state["fqdn"] = str(inputs["name"]).rstrip(".")
        elif typ == "aws:lb/loadBalancer:LoadBalancer":
            arn = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:loadbalancer/app/{name}/{_hex(name)}"
            state.update(dnsName=f"{name}-{_hex(name, length=10)}.{REGION}.elb.amazonaws.com",
                         zoneId="Z32O12XQLNTSW2", arnSuffix=f"app/{name}/{_hex(name)}")
        elif typ == "aws:lb/listener:Listener":
            arn = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:listener/app/x/{_hex(name)}/{_hex(name, 'l')}"
        elif typ == "aws:lb/listenerRule:ListenerRule":
            arn = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:listener-rule/app/x/{_hex(name)}"
        elif typ == "aws:lb/targetGroup:TargetGroup":
            arn = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/{name[:20]}/{_hex(name)}"
        elif typ == "aws:iam/role:Role":
            state["name"] = inputs.get("name") or f"{name}-{_hex(name, length=7)}"
            rid = state["name"]
            arn = f"arn:aws:iam::{ACCOUNT}:role/{state['name']}"
        elif typ == "aws:cloudwatch/logGroup:LogGroup":
            arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{inputs['name']}"
            rid = inputs["name"]
        elif typ == "aws:lambda/function:Function":
            arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{inputs['name']}"
            rid = inputs["name"]
            state.update(invokeArn=f"arn:aws:apigateway:{REGION}:lambda:path/functions/{arn}/invocations",
                         qualifiedArn=f"{arn}:$LATEST", version="$LATEST")
        elif typ == "aws:cloudwatch/eventRule:EventRule":
            state["name"] = inputs.get("name") or f"{name}-{_hex(name, length=7)}"
            arn = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{state['name']}"
        elif typ.startswith("aws:ec2/"):
            prefix = {"aws:ec2/vpc:Vpc": "vpc", "aws:ec2/subnet:Subnet": "subnet",
                      "aws:ec2/securityGroup:SecurityGroup": "sg", "aws:ec2/internetGateway:InternetGateway": "igw",
                      "aws:ec2/routeTable:RouteTable": "rtb"}.get(typ, "ec2")
            rid = f"{prefix}-{_hex(name, length=17)}"
            arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}:{prefix}/{rid}"
        elif typ == "okta:idp/samlKey:SamlKey":
            rid = f"kid-{_hex(name, length=12)}"
            state["kid"] = rid
        elif typ == "okta:idp/saml:Saml":
            rid = IDP_ID
            state.update(audience=OKTA_AUDIENCE, acsBinding="HTTP-POST", type="SAML2")
        elif typ == "okta:index/authenticator:Authenticator":
            rid = AUTHENTICATOR_ID
            state["type"] = "federated"
            if self.adopts_existing_authenticator and self.existing_authenticator:
                rid = self.existing_authenticator["id"]
                state.update(name=self.existing_authenticator["name"], key=self.existing_authenticator["key"])
        elif typ == "okta:index/appSignonPolicy:AppSignonPolicy":
            rid = POLICY_ID
            state["defaultRuleId"] = "rulCATCHALL000000001"
        if arn is not None:
            state["arn"] = arn
        return rid, state


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: DevicegateMocks):
        super().__init__(mocks)
        self.registrations: dict[str, Registration] = {}
        self._lock = threading.Lock()

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        inputs = rpc.deserialize_properties(request.object)
        registered = self.resources.get(response.urn)
        property_deps = {key: list(value.urns) for key, value in request.propertyDependencies.items()}
        record = Registration(
            type=request.type, name=request.name, urn=response.urn, id=response.id, inputs=unwrap(dict(inputs)), raw_inputs=dict(inputs),
            outputs=unwrap(dict(registered.state)) if registered else {}, parent=request.parent,
            dependencies=sorted(set(request.dependencies) | {u for urns in property_deps.values() for u in urns}),
            property_dependencies=property_deps,
            retain_on_delete=bool(request.retainOnDelete) if request.HasField("retainOnDelete") else False,
            protect=bool(request.protect) if request.HasField("protect") else False,
            custom=bool(request.custom),
        )
        with self._lock:
            self.registrations[response.urn] = record
        return response


# --------------------------------------------------------------------------- running


def fake_bundle(directory: Path, **overrides):
    from infra.bundle import Bundle

    path = directory / "devicegate-manylinux2014_aarch64-py3.12-test.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("devicegate/__init__.py", "")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    values = dict(path=path, sha256=digest, size=path.stat().st_size, unpacked_size=0,
                  platform="manylinux2014_aarch64", python_version="3.12")
    values.update(overrides)
    return Bundle(**values)


def run(config: dict[str, str | None] | None = None, *, bundle=None, mocks: DevicegateMocks | None = None,
        replace: bool = False, stack: str = "test", secret_keys: list[str] | None = None,
        preview: bool = False) -> Deployment:
    """Run infra/__main__.py with BASE_CONFIG updated by ``config`` (None deletes a key)."""
    import infra.bundle

    values = {} if replace else dict(BASE_CONFIG)
    for key, value in (config or {}).items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    mocks = mocks or DevicegateMocks()
    monitor = RecordingMonitor(mocks)
    ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project="devicegate", stack=stack, preview=preview, monitor=monitor)
    pulumi.runtime.set_all_config(values, SECRET_KEYS if secret_keys is None else secret_keys)
    SETTINGS.rpc_manager.clear()
    SETTINGS.outputs.clear()

    original = infra.bundle.build_bundle
    if bundle is None:
        import tempfile

        bundle = fake_bundle(Path(tempfile.mkdtemp(prefix="dg-bundle-")))
    infra.bundle.build_bundle = lambda *args, **kwargs: bundle
    try:
        _sync_await(run_pulumi_func(lambda: runpy.run_path(str(MAIN), run_name="__main__")))
    finally:
        infra.bundle.build_bundle = original

    stack_resource = pulumi.runtime.get_root_resource()
    outputs, secret = {}, set()
    for key, value in stack_resource.outputs.items():
        output = pulumi.Output.from_input(value)
        outputs[key] = _sync_await(output.future())
        if _sync_await(output.is_secret()):
            secret.add(key)
    return Deployment(resources=list(monitor.registrations.values()), outputs=outputs, secret_outputs=secret,
                      calls=list(mocks.calls))


def policy_statements(document: str | dict) -> list[dict]:
    data = json.loads(document) if isinstance(document, str) else document
    statements = data.get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def as_list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)
