"""The fuzz targets: a world of real handlers (moto for DynamoDB and Secrets Manager, a SCEP CA,
an IdP, the webhook receiver, a Fleet client on a canned transport), valid seed inputs, and one
``check_*`` per entry point that runs an input and asserts the properties in tests/fuzz/README.md.

Shared by the hypothesis tests (tests/fuzz/test_*.py) and the atheris harnesses (bench/fuzz/).
A check raises AssertionError for a property violation; any other exception escaping a check is
a crash of the code under test.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import uuid as uuid_mod
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

import boto3
from lxml import etree

from devicegate import alb, routes
from devicegate.compliance import fleet as fleet_mod
from devicegate.compliance import sync as sync_mod
from devicegate.compliance import webhook
from devicegate.compliance.enforcement import Enforcement
from devicegate.local import okta
from devicegate.saml import handler as saml_handler
from devicegate.scep import handler as scep_handler
from devicegate.scep import protocol
from devicegate.scep.protocol import PkiStatus
from tests import scep_helpers as h
from tests.fuzz.harness import bounded, no_errors_logged
from tests.idp_helpers import ACS, IdpWorld

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fleet"
PASSING = [("1", "Disk encryption", "pass", True), ("2", "Firewall", "pass", False)]
WEBHOOK_SECRET = "fuzz-webhook-secret-0123456789"
CHALLENGE = "secret"
SAML = "{urn:oasis:names:tc:SAML:2.0:assertion}"
DS = "{http://www.w3.org/2000/09/xmldsig#}"
INTERNAL_ERROR_TEXT = "internal error; retry later"


class Env:
    """monkeypatch.setenv's shape over os.environ (for the atheris harnesses)."""

    def setenv(self, name, value):
        os.environ[name] = value

    def delenv(self, name, raising=True):
        os.environ.pop(name, None)


# ------------------------------------------------------------------------------ the world


class World:
    """One table, one CA, one IdP, one webhook secret: every Lambda configured at once."""

    def __init__(self, moto_server, scep_ca, env):
        self.idp = IdpWorld(moto_server, scep_ca, env)
        self.ca_cert, self.ca_key = scep_ca
        suffix = uuid_mod.uuid4().hex[:8]
        sm = boto3.client("secretsmanager", endpoint_url=moto_server.endpoint, region_name="us-east-1")
        sm.create_secret(Name=f"ch-{suffix}", SecretString=CHALLENGE)
        sm.create_secret(Name=f"wh-{suffix}", SecretString=WEBHOOK_SECRET)
        ca_secret = os.environ["DEVICEGATE_CA_SECRET"]
        for name, value in {"DEVICEGATE_SCEP_CHALLENGE_SECRET": f"ch-{suffix}", "DEVICEGATE_CA_SECRET": ca_secret,
                            "DEVICEGATE_ACCEPT_CN_UUID": "false", "DEVICEGATE_FLEET_WEBHOOK_SECRET": f"wh-{suffix}"}.items():
            env.setenv(name, value)
        env.delenv("DEVICEGATE_FLEET_URL", raising=False)
        for module in (scep_handler, saml_handler, webhook):
            module.reset()
        self.store = self.idp.store
        self.requester_key = h.key()
        self.requester_cert = h.self_signed(self.requester_key)
        self.fleet = CannedFleet()
        self.client = self.fleet.client()
        sync_mod.sync_once(self.client, self.store, Enforcement())  # FLEETHOST mappings for the webhook
        # After the sync: a later sync removes (and revokes) this host, which Fleet does not list.
        self.host, self.device_cert = self.idp.device(results=PASSING)

    def close(self):
        for module in (scep_handler, saml_handler, webhook):
            module.reset()


# ------------------------------------------------------------------------------ SCEP


def scep_message(world: World, *, csr: bytes | None = None, transaction_id: str | None = None, **kwargs) -> bytes:
    csr = csr if csr is not None else h.make_csr(world.requester_key, host_uuid=h.new_uuid(), challenge=CHALLENGE)
    message, _ = protocol.build_pki_message(
        message_type=kwargs.pop("message_type", protocol.MessageType.PKCS_REQ), inner=csr, recipient=world.ca_cert,
        signer_cert=world.requester_cert, signer_key=world.requester_key,
        transaction_id=transaction_id or uuid_mod.uuid4().hex, **kwargs)
    return message


def scep_event(message: bytes, *, via: str = "post") -> dict:
    if via == "post":
        return alb.build_event(method="POST", path="/scep", raw_query="operation=PKIOperation",
                               headers=[("content-type", "application/x-pki-message")], body=message,
                               target_group_arn="arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/scep/1")
    query = "operation=PKIOperation&message=" + base64.b64encode(message).decode().replace("+", "%2B").replace("=", "%3D")
    return alb.build_event(method="GET", path="/scep", raw_query=query, headers=[], body=b"",
                           target_group_arn="arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/scep/1")


def check_scep(world: World, message: bytes, *, via: str = "post", original: bytes | None = None,
               may_succeed: bool = False, trace_memory: bool = True):
    """A PKIOperation: HTTP 200 with a CertRep signed by the CA (FAILURE with a failInfo unless the
    signed request is intact), or a 4xx. Never a 5xx, never a swallowed internal error."""
    with no_errors_logged():
        result = bounded(scep_handler.lambda_handler, scep_event(message, via=via), None, trace_memory=trace_memory)
    reply = alb.parse_response(result)
    assert reply.status == 200 or 400 <= reply.status < 500, (reply.status, reply.body[:300])
    if reply.status != 200:
        return reply.status, None
    rep = protocol.parse_cert_rep(reply.body, ca_cert=world.ca_cert, requester_key=world.requester_key)
    assert len(rep.recipient_nonce) == 16 and rep.transaction_id
    if rep.status is PkiStatus.SUCCESS:
        assert may_succeed or _same_signed_request(message, original), "a damaged request was granted a certificate"
    else:
        assert rep.status is PkiStatus.FAILURE and rep.fail_info is not None
        assert rep.fail_text != INTERNAL_ERROR_TEXT, "the authority hit an internal error"
    return reply.status, rep


def _same_signed_request(message: bytes, original: bytes | None) -> bool:
    """Damage that left what is signed (attributes, envelope) and the signer's key as they were. (A
    PKCSReq's self-signed certificate only carries the key; its other fields are not checked.)"""
    if original is None:
        return False
    got, want = protocol.parse_pki_message(message), protocol.parse_pki_message(original)
    return (got.envelope, got.signer_spki_sha256, got.message_type) == (
        want.envelope, want.signer_spki_sha256, want.message_type)


# ------------------------------------------------------------------------------ SAML


def authn_xml(world: World, **kw) -> tuple[str, bytes]:
    return world.idp.authn_xml(**kw)


def redirect_params(xml: bytes, sp_key, relay: str | None = None) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for part in okta.redirect_query(xml, sp_key, relay).split("&"):
        name, _, value = part.partition("=")
        params.setdefault(name, []).append(value)
    return params


def redirect_event(world: World, params: dict[str, list[str]], cert=None) -> dict:
    return world.idp._event("GET", "/saml/sso", params, b"", world.device_cert if cert is None else cert, {})


def signed_post_b64(world: World, xml: bytes, request_id: str) -> str:
    return okta.signed_post_form(xml, world.idp.sp_key, pki_pem(world.idp.sp_cert), request_id)


def pki_pem(cert) -> str:
    from devicegate.local import pki

    return pki.pem_cert(cert)


def post_event(world: World, body: bytes, content_type: str = "application/x-www-form-urlencoded") -> dict:
    return world.idp._event("POST", "/saml/sso", {}, body, world.device_cert, {"content-type": content_type})


def check_saml(world: World, event: dict, *, expect=None, trace_memory: bool = True):
    """An SSO request: a 400 page with a reason, or (only when ``expect`` accepts what was asked)
    a signed Response for exactly that request. Never a 5xx."""
    with no_errors_logged():
        result = bounded(saml_handler.lambda_handler, event, None, trace_memory=trace_memory)
    reply = alb.parse_response(result)
    page = reply.body.decode("utf-8")
    assert reply.status < 500, (reply.status, page[:500])
    if "SAMLResponse" not in page:
        assert reply.status in (400, 403), reply.status
        if reply.status == 400:
            assert "was not accepted:" in page or "unusable" in page, page[:500]
        return reply.status, None
    assert reply.status == 200
    from tests.idp_helpers import response_xml

    root = response_xml(page)
    assert root.get("Destination") == ACS
    assert expect is not None, "a signed Response for a damaged request"
    expect(root)
    return reply.status, root


def response_answers(request_xml: bytes):
    """An ``expect`` for check_saml: the Response answers this request ID and names this NameID."""
    def verify(root):
        # Parsed only once a Response was issued, so the request did parse (no DTD, no entities).
        request = etree.fromstring(request_xml, etree.XMLParser(resolve_entities=False, no_network=True))
        name_ids = [n.text for n in request.iter(f"{SAML}NameID")]
        assert root.get("InResponseTo") == request.get("ID"), (root.get("InResponseTo"), request.get("ID"))
        got = [n.text for n in root.iter(f"{SAML}NameID")]
        assert got and got[0].strip() == (name_ids[0] or "").strip(), (got, name_ids)

    return verify


def signed_content(xml: bytes) -> bytes | None:
    """Exclusive c14n of the document without its root's ds:Signature: what an enveloped signature
    covers. (KeyInfo sits inside the Signature and is neither signed nor read.)"""
    try:
        root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False))
        for signature in root.findall(f"{DS}Signature"):
            root.remove(signature)
        return etree.tostring(root, method="c14n", exclusive=True)
    except Exception:  # noqa: BLE001 - not XML: cannot be the same document
        return None


# ------------------------------------------------------------------------------ ALB events


def seed_events(world: World) -> list[dict]:
    """Real ALB events for every route, in both header styles."""
    arn = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/fuzz/1"
    _, xml = authn_xml(world)
    params = redirect_params(xml, world.idp.sp_key, relay="https://example.okta.com/app")
    raw_query = "&".join(f"{k}={v}" for k, vs in params.items() for v in vs)
    mtls = list(alb.format_mtls_headers(world.device_cert).items())
    webhook_body = json.dumps(webhook_payload()).encode()
    form = [("content-type", "application/x-www-form-urlencoded")]
    events = []
    for multi in (True, False):
        def ev(method, path, query="", headers=(), body=b""):
            return alb.build_event(method=method, path=path, raw_query=query, headers=list(headers), body=body,
                                   target_group_arn=arn, multi_value=multi)
        events += [
            ev("GET", "/scep", "operation=GetCACaps"),
            ev("GET", "/scep", "operation=GetCACert"),
            ev("POST", "/scep", "operation=PKIOperation", [("content-type", "application/x-pki-message")],
               scep_message(world)),
            ev("GET", "/saml/sso", raw_query, [("x-forwarded-for", "203.0.113.9"), *mtls]),
            ev("POST", "/saml/sso", "", [*form, *mtls], urlencode({"SAMLRequest": base64.b64encode(xml)}).encode()),
            ev("POST", "/saml/recheck", "", [*form, *mtls], b"token=abc&action=recheck"),
            ev("GET", "/saml/metadata"),
            ev("GET", "/healthz", "", mtls),
            ev("POST", "/fleet/webhook", f"secret={WEBHOOK_SECRET}", [("content-type", "application/json")],
               webhook_body),
        ]
    return events


_HANDLERS = {route.path: route.load_handler() for route in routes.ROUTES}


def check_event(world: World, event, *, trace_memory: bool = True):
    """Any event to the Lambda for its path: an ALB-valid result (a BadEvent becomes a 4xx),
    never an exception, never a 5xx."""
    try:
        request = alb.Request.from_event(event)
    except alb.BadEvent:
        request = None
    if request is not None:
        try:
            alb.client_cert(request)
        except alb.MtlsHeaderError:
            pass
    path = event.get("path") if isinstance(event, dict) else None
    handler = _HANDLERS.get(path) if isinstance(path, str) else None
    handlers = [handler] if handler else [_HANDLERS["/scep"], _HANDLERS["/saml/sso"], _HANDLERS["/fleet/webhook"]]
    statuses = []
    for handle in handlers:
        with no_errors_logged():
            result = bounded(handle, copy.deepcopy(event), None, trace_memory=trace_memory)
        reply = alb.parse_response(result)  # BadResponse here is ALB's 502
        assert reply.status < 500, (reply.status, reply.body[:300])
        statuses.append(reply.status)
    return statuses


# ------------------------------------------------------------------------------ Fleet


def fixture(name: str):
    return json.loads((FIXTURES / name).read_text())


def webhook_payload() -> dict:
    doc = fixture("webhook_failing_policy.json")
    doc["timestamp"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    return doc


class CannedFleet:
    """Fleet's answers from the fixtures, served without a network; ``override`` replaces the
    answer for one endpoint (by path prefix) with fuzzed bytes."""

    def __init__(self):
        populated = fixture("hosts_list_populated.json")
        self.answers = {
            "/api/v1/fleet/hosts/identifier/": (200, fixture("host_detail.json")),
            "/api/v1/fleet/hosts?": (200, populated),
            "/api/v1/fleet/hosts/": (200, fixture("host_detail.json")),
            "/api/v1/fleet/global/policies": (200, fixture("global_policies.json")),
            "/api/v1/fleet/teams/": (200, fixture("team_policies.json")),
            "/api/v1/fleet/teams?": (200, fixture("teams.json")),
        }
        self.override: tuple[str, int, dict, bytes] | None = None

    def send(self, url_path: str):
        if self.override and url_path.startswith(self.override[0]):
            _, status, headers, body = self.override
            return status, headers, body
        for prefix, (status, doc) in self.answers.items():
            if url_path.startswith(prefix):
                if prefix == "/api/v1/fleet/hosts?" and "page=0" not in url_path:
                    return 200, {}, b'{"hosts": []}'
                if prefix == "/api/v1/fleet/teams/" and "page=0" not in url_path:
                    return 200, {}, b'{"policies": []}'
                if prefix == "/api/v1/fleet/global/policies" and "page=0" not in url_path:
                    return 200, {}, b'{"policies": []}'
                if prefix == "/api/v1/fleet/teams?" and "page=0" not in url_path:
                    return 200, {}, b'{"teams": []}'
                return status, {}, json.dumps(doc).encode()
        return 404, {}, b'{"message": "not found"}'

    def client(self) -> fleet_mod.FleetClient:
        client = fleet_mod.FleetClient("https://fleet.example.com", "fuzz-token", sleep=lambda s: None, max_attempts=2)
        client._send = self.send
        return client


IDENTIFIER_UUID = fixture("host_detail.json")["host"]["uuid"]
ENDPOINTS = {
    "hosts": "/api/v1/fleet/hosts?",
    "host": "/api/v1/fleet/hosts/",
    "identifier": "/api/v1/fleet/hosts/identifier/",
    "global_policies": "/api/v1/fleet/global/policies",
    "team_policies": "/api/v1/fleet/teams/",
    "teams": "/api/v1/fleet/teams?",
}
SEED_BODIES = {
    "hosts": "hosts_list_populated.json", "host": "host_detail.json", "identifier": "host_detail.json",
    "global_policies": "global_policies.json", "team_policies": "team_policies.json", "teams": "teams.json",
}


def check_fleet_client(world: World, endpoint: str, body: bytes, status: int = 200, headers: dict | None = None,
                       *, trace_memory: bool = True):
    """Every client call on a fuzzed answer: well-typed objects or a FleetError, nothing else."""
    world.fleet.override = (ENDPOINTS[endpoint], status, headers or {}, body)
    client = world.client
    calls = {
        "hosts": lambda: list(client.host_details()) + list(client.hosts()),
        "host": lambda: client.host(3),
        "identifier": lambda: client.host_by_uuid(IDENTIFIER_UUID),
        "global_policies": lambda: client.global_policies(),
        "team_policies": lambda: client.team_policies(2),
        "teams": lambda: client.teams(),
    }
    try:
        try:
            result = bounded(calls[endpoint], trace_memory=trace_memory)
        except fleet_mod.FleetError as exc:
            assert isinstance(exc.message, str) and exc.message
            return exc
        _check_fleet_types(result)
        return result
    finally:
        world.fleet.override = None


def _check_fleet_types(result):
    items = result if isinstance(result, list) else [result]
    for item in items:
        if item is None:
            continue
        if isinstance(item, tuple):
            assert isinstance(item[0], int) and isinstance(item[1], str)
            continue
        host = item.host if isinstance(item, fleet_mod.FleetHostDetail) else item
        if isinstance(host, fleet_mod.FleetHost):
            assert isinstance(host.id, int) and isinstance(host.uuid, str) and isinstance(host.hostname, str)
            _utf8(host.uuid, host.hostname, host.display_name or "", host.platform or "")
        if isinstance(item, fleet_mod.FleetHostDetail):
            for policy in item.policies:
                assert policy.response in ("pass", "fail", None) and isinstance(policy.name, str)
                _utf8(policy.name, policy.resolution or "")
            for email in item.emails:
                assert isinstance(email, str)
                _utf8(email)
        if isinstance(item, fleet_mod.FleetPolicy):
            assert isinstance(item.id, int) and isinstance(item.name, str)
            _utf8(item.name, item.resolution or "")


def _utf8(*texts):
    for text in texts:
        text.encode("utf-8")  # a lone surrogate cannot be stored, logged as UTF-8 or shown


def check_sync(world: World, endpoint: str, body: bytes, status: int = 200, *, trace_memory: bool = True):
    """A sync on one fuzzed answer: a report, never an exception; a failed fetch changes nothing."""
    before = world.store.all_compliance()
    world.fleet.override = (ENDPOINTS[endpoint], status, {}, body)
    try:
        with no_errors_logged():
            report = bounded(sync_mod.sync_once, world.client, world.store, Enforcement(), trace_memory=trace_memory)
    finally:
        world.fleet.override = None
    assert isinstance(report, sync_mod.SyncReport)
    if any(e.startswith("Fleet catalogue or host list") for e in report.errors):
        assert world.store.all_compliance() == before, "a failed fetch changed the stored compliance"
    return report


def webhook_event(body: bytes, *, secret: str | None = WEBHOOK_SECRET) -> dict:
    return alb.build_event(method="POST", path="/fleet/webhook", raw_query=f"secret={secret}" if secret else "",
                           headers=[("content-type", "application/json")], body=body,
                           target_group_arn="arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/wh/1")


def check_webhook(world: World, body: bytes, *, trace_memory: bool = True):
    """An authenticated webhook POST: 200 or a 400 with a JSON error; a 400 changes nothing."""
    before = world.store.all_compliance()
    with no_errors_logged():
        result = bounded(webhook.lambda_handler, webhook_event(body), None, trace_memory=trace_memory)
    reply = alb.parse_response(result)
    assert reply.status in (200, 400), (reply.status, reply.body[:300])
    answer = json.loads(reply.body)
    if reply.status == 400:
        assert isinstance(answer.get("error"), str) and answer["error"]
        assert world.store.all_compliance() == before, "a refused payload changed the stored compliance"
    return reply.status, answer
