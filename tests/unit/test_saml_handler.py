"""The IdP handler with ALB events: device identity, decisions, replay, recheck, bypass."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from signxml import SignatureConfiguration, XMLVerifier

from devicegate.local import pki
from tests.idp_helpers import ACS, AUDIENCE, ENTITY, IdpWorld, form_value, response_xml

SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
PASSING = [("1", "Disk encryption", "pass", True), ("2", "Firewall", "pass", False)]
FAILING = [("1", "Disk encryption", "fail", True), ("2", "Firewall", "pass", False)]
SOFT_FAIL = [("1", "Disk encryption", "pass", True), ("2", "Firewall", "fail", False)]


@pytest.fixture
def world(moto_server, scep_ca, monkeypatch):
    return IdpWorld(moto_server, scep_ca, monkeypatch)


def test_compliant_device_gets_a_signed_response(world):
    host, cert = world.device(results=PASSING)
    request_id, event = world.redirect_event(cert, relay="https://example.okta.com/home?x=1&y=2")
    status, headers, page = world.call(event)
    assert status == 200, page
    assert "form-action" in headers["content-security-policy"]
    assert form_value(page, "RelayState") == "https://example.okta.com/home?x=1&y=2"
    root = response_xml(page)
    assert root.get("Destination") == ACS and root.get("InResponseTo") == request_id
    config = SignatureConfiguration(location="./", expect_references=1, ignore_ambiguous_key_info=True)
    assertion = XMLVerifier().verify(root.find(f"{{{SAML}}}Assertion"), x509_cert=world.idp_cert,
                                     expect_config=config).signed_xml
    assert assertion.find(f"{{{SAML}}}Subject/{{{SAML}}}NameID").text == "alice@example.com"
    assert assertion.find(f".//{{{SAML}}}Audience").text == AUDIENCE
    assert assertion.find(f"{{{SAML}}}Issuer").text == ENTITY
    # Signature comes right after Issuer, in both the Assertion and the Response
    assert root[1].tag.endswith("Signature") and root.find(f"{{{SAML}}}Assertion")[1].tag.endswith("Signature")


def test_failing_device_gets_the_block_page_and_no_response(world):
    host, cert = world.device(results=FAILING, hostname="alice-mbp")
    _, event = world.redirect_event(cert)
    status, headers, page = world.call(event)
    assert status == 403 and "SAMLResponse" not in page
    assert "Disk encryption" in page and "How to fix Disk encryption." in page and "alice-mbp" in page
    assert form_value(page, "token")


def test_check_again_resumes_the_same_login_once_fixed(world):
    host, cert = world.device(results=FAILING)
    request_id, event = world.redirect_event(cert, relay="keep-me")
    _, _, page = world.call(event)
    token = form_value(page, "token")
    status, _, page = world.call(world.post_event(cert, "/saml/recheck", {"token": token, "action": "recheck"}))
    assert status == 403 and "Disk encryption" in page  # still failing
    world.set_compliance(host, PASSING)
    status, _, page = world.call(world.post_event(cert, "/saml/recheck", {"token": token, "action": "recheck"}))
    assert status == 200, page
    assert response_xml(page).get("InResponseTo") == request_id and form_value(page, "RelayState") == "keep-me"
    status, _, page = world.call(world.post_event(cert, "/saml/recheck", {"token": token, "action": "recheck"}))
    assert status == 400, "a pending login is used once"


def test_check_again_from_another_device_is_refused(world):
    _, cert = world.device(results=FAILING)
    _, other = world.device(results=PASSING)
    _, _, page = world.call(world.redirect_event(cert)[1])
    status, _, page = world.call(world.post_event(other, "/saml/recheck", {"token": form_value(page, "token")}))
    assert status == 400 and "another device" in page


def test_unknown_token_and_bad_forms(world):
    _, cert = world.device(results=PASSING)
    assert world.call(world.post_event(cert, "/saml/recheck", {"token": "nope"}))[0] == 400
    assert world.call(world.post_event(cert, "/saml/recheck", {"token": "x", "evil": "1"}))[0] == 400
    assert world.call(world.post_event(cert, "/saml/recheck", {"token": "x", "action": "delete"}))[0] == 400


def test_bypass_once_only_for_non_critical(monkeypatch, moto_server, scep_ca):
    world = IdpWorld(moto_server, scep_ca, monkeypatch, DEVICEGATE_ALLOW_BYPASS="true")
    host, cert = world.device(results=SOFT_FAIL)
    _, _, page = world.call(world.redirect_event(cert)[1])
    assert 'value="bypass"' in page
    token = form_value(page, "token")
    status, _, page = world.call(world.post_event(cert, "/saml/recheck", {"token": token, "action": "bypass"}))
    assert status == 200 and response_xml(page) is not None
    # the host's bypass is spent for the window
    _, _, page = world.call(world.redirect_event(cert)[1])
    assert 'value="bypass"' not in page
    status, _, page = world.call(world.post_event(cert, "/saml/recheck", {"token": form_value(page, "token"),
                                                                          "action": "bypass"}))
    assert status == 400 and "already used" in page
    # never for a critical failure
    _, critical = world.device(results=FAILING)
    _, _, page = world.call(world.redirect_event(critical)[1])
    assert 'value="bypass"' not in page
    status, _, page = world.call(world.post_event(critical, "/saml/recheck", {"token": form_value(page, "token"),
                                                                              "action": "bypass"}))
    assert status == 400 and "critical" in page


def test_bypass_disabled_by_default(world):
    _, cert = world.device(results=SOFT_FAIL)
    _, _, page = world.call(world.redirect_event(cert)[1])
    assert 'value="bypass"' not in page
    status, _, _ = world.call(world.post_event(cert, "/saml/recheck", {"token": form_value(page, "token"), "action": "bypass"}))
    assert status == 400


def test_replayed_request_is_refused(world):
    _, cert = world.device(results=PASSING)
    _, event = world.redirect_event(cert)
    assert world.call(event)[0] == 200
    status, _, page = world.call(event)
    assert status == 400 and "already used" in page and "SAMLResponse" not in page


def test_no_client_certificate(world):
    status, _, page = world.call(world.redirect_event(None)[1])
    assert status == 403 and "profile" in page and "SAMLResponse" not in page


def test_unknown_serial(world):
    key = pki.new_key()
    from tests import scep_helpers as h
    from devicegate.scep.authority import build_certificate, inspect_csr
    facts = inspect_csr(h.make_csr(key, host_uuid=h.new_uuid()), accept_cn_uuid=False)
    stray = build_certificate(facts, facts.host_uuid, ca_cert=world.ca_cert, ca_key=world.ca_key, validity_days=5,
                              now=datetime.now(timezone.utc), serial=424242)
    status, _, page = world.call(world.redirect_event(stray)[1])
    assert status == 403 and "no record" in page


def test_revoked_certificate(world):
    _, cert = world.device(status="revoked", results=PASSING)
    status, _, page = world.call(world.redirect_event(cert)[1])
    assert status == 403 and "revoked" in page and "SAMLResponse" not in page


def test_expired_certificate(world):
    _, cert = world.device(days=1, not_before=datetime.now(timezone.utc) - timedelta(days=3), results=PASSING)
    status, _, page = world.call(world.redirect_event(cert)[1])
    assert status == 403 and "expired" in page


def test_serial_header_must_match_the_leaf(world):
    _, cert = world.device(results=PASSING)
    _, event = world.redirect_event(cert, headers={"x-amzn-mtls-clientcert-serial-number": "01"})
    status, _, page = world.call(event)
    assert status == 400 and "SAMLResponse" not in page


def _refusal_reasons(world, event, times):
    from devicegate import telemetry

    lines = []
    telemetry.add_sink(lines.append)
    try:
        statuses = [world.call(event() if callable(event) else event)[:3:2] for _ in range(times)]
    finally:
        telemetry.remove_sink(lines.append)
    return statuses, [json.loads(line)["reasons"][0]["message"] for line in lines]


def test_leaf_not_signed_by_the_ca_is_refused_every_time(world):
    _, good = world.device(results=PASSING)
    assert world.call(world.redirect_event(good)[1])[0] == 200  # a verified leaf (remembered as such)
    _, forged = world.device(results=PASSING, ca_key=pki.new_key())  # the CA's name, another key's signature
    statuses, reasons = _refusal_reasons(world, lambda: world.redirect_event(forged)[1], 3)
    assert [status for status, _ in statuses] == [403] * 3
    assert all("SAMLResponse" not in page for _, page in statuses)
    assert reasons == ["the certificate is not signed by the CA"] * 3
    assert world.call(world.redirect_event(good)[1])[0] == 200


def test_a_verified_leaf_is_checked_again_against_another_ca(world, monkeypatch):
    from devicegate.saml import handler

    _, cert = world.device(results=PASSING)
    assert world.call(world.redirect_event(cert)[1])[0] == 200
    other_key = pki.new_key()
    monkeypatch.setattr(handler._idp(), "ca_cert", pki.self_signed_ca("another CA", other_key, scep=True))
    statuses, reasons = _refusal_reasons(world, lambda: world.redirect_event(cert)[1], 2)
    assert [status for status, _ in statuses] == [403, 403]
    assert reasons == ["the presented certificate differs from the issued one"] * 2


def test_request_without_subject(world, monkeypatch, moto_server, scep_ca):
    _, cert = world.device(results=PASSING)
    status, _, page = world.call(world.redirect_event(cert, user=None)[1])
    assert status == 400 and "did not say who" in page
    lenient = IdpWorld(moto_server, scep_ca, monkeypatch, DEVICEGATE_NAMEID_FROM_DEVICE_USER="true")
    _, cert = lenient.device(results=PASSING, users=("bob@example.com",))
    status, _, page = lenient.call(lenient.redirect_event(cert, user=None)[1])
    assert status == 200
    assert response_xml(page).find(f".//{{{SAML}}}NameID").text == "bob@example.com"
    _, cert = lenient.device(results=PASSING, users=("bob@example.com", "carol@example.com"))
    assert lenient.call(lenient.redirect_event(cert, user=None)[1])[0] == 400, "never guessed among several"


def test_stale_data_fails_closed(world):
    _, cert = world.device(results=PASSING, synced_at=datetime.now(timezone.utc) - timedelta(days=1))
    status, _, page = world.call(world.redirect_event(cert)[1])
    assert status == 403 and "out of date" in page


def test_no_compliance_data_fails_closed(world):
    _, cert = world.device(results=None)
    assert world.call(world.redirect_event(cert)[1])[0] == 403


def test_storage_down_fails_closed_with_a_page(world, monkeypatch):
    _, cert = world.device(results=PASSING)
    from devicegate.saml import handler
    from devicegate.store import Store
    idp = handler._idp()
    monkeypatch.setattr(idp, "store", Store("gone", endpoint="http://127.0.0.1:9"))
    status, headers, page = world.call(world.redirect_event(cert)[1])
    assert status == 503 and "SAMLResponse" not in page and headers.get("retry-after")


def test_metadata(world):
    event = world._event("GET", "/saml/metadata", {}, b"", None, {})
    status, headers, body = world.call(event)
    assert status == 200 and headers["content-type"] == "application/samlmetadata+xml"
    assert 'WantAuthnRequestsSigned="true"' in body and f'entityID="{ENTITY}"' in body


def test_misconfiguration_is_a_503_naming_nothing_secret(monkeypatch):
    from devicegate.saml import handler
    monkeypatch.delenv("DEVICEGATE_OKTA_SP_CERT", raising=False)
    monkeypatch.setenv("DEVICEGATE_TABLE", "t")
    handler.reset()
    result = handler.lambda_handler({"httpMethod": "GET", "path": "/saml/metadata", "multiValueHeaders": {}}, None)
    assert result["statusCode"] == 503
    assert "misconfigured" in result["body"] and "starting up" not in result["body"]  # the ConfigError answer
    handler.reset()


def test_check_again_must_be_a_same_origin_form(world):
    _, cert = world.device(results=FAILING)
    _, _, page = world.call(world.redirect_event(cert)[1])
    token = form_value(page, "token")
    event = world.post_event(cert, "/saml/recheck", {"token": token}, headers={"content-type": "application/json"})
    assert world.call(event)[0] == 400
    event = world.post_event(cert, "/saml/recheck", {"token": token}, headers={"origin": "https://evil.example.com"})
    status, _, page = world.call(event)
    assert status == 400 and "this sign-in page" in page
    event = world.post_event(cert, "/saml/recheck", {"token": token}, headers={"origin": "https://okta.devicegate.example.com"})
    assert world.call(event)[0] == 403  # same origin: still blocked, but the form is accepted


def test_a_login_reads_its_certificate_and_compliance_in_one_call(world, monkeypatch):
    from devicegate.store import Store

    host, cert = world.device(results=PASSING)
    assert world.call(world.redirect_event(cert)[1])[0] == 200  # the first login also records the first use
    calls = []
    real = Store._call
    monkeypatch.setattr(Store, "_call", lambda self, op, **kw: (calls.append(op), real(self, op, **kw))[1])
    status, _, page = world.call(world.redirect_event(cert)[1])
    assert status == 200 and "SAMLResponse" in page
    assert calls == ["batch_get_item", "put_item"]  # 2 reads in one round trip + the replay guard
    _, failing = world.device(results=FAILING)
    calls.clear()
    # blocked: the same two reads in one call, the replay guard, then the pending sign-in "check again" resumes
    assert world.call(world.redirect_event(failing)[1])[0] == 403 and calls == ["batch_get_item", "put_item", "put_item"]


def test_compliance_read_along_with_the_certificate_counts_only_for_the_recorded_host(world):
    # Found by review: nothing checked that the compliance prefetched for the leaf's SAN host is
    # dropped when the certificate's record names another host (the record is authoritative).
    from devicegate.store import serial_key

    host_a, cert = world.device(results=PASSING)
    host_b, _ = world.device(results=FAILING, hostname="other-mbp")
    item = world.store._get(f"CERT#{serial_key(cert.serial_number)}", "CERT")
    item["host_uuid"] = {"S": host_b}
    world.store._call("put_item", TableName=world.store.table, Item=item)
    status, _, page = world.call(world.redirect_event(cert)[1])
    assert status == 403 and "other-mbp" in page and "Disk encryption" in page  # host B's results, not A's
