"""Crashes the fuzzers found, each with the exact input that triggered it, kept as regressions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devicegate import alb
from devicegate.compliance import fleet as fleet_mod
from devicegate.compliance import webhook
from devicegate.scep import protocol
from devicegate.scep.protocol import FailInfo, PkiStatus
from tests import scep_helpers as h
from tests.fuzz import mutate
from tests.fuzz.targets import check_event, check_fleet_client, check_scep, webhook_event, webhook_payload


def _envelope_with_broken_recipient_issuer(envelope: bytes) -> bytes:
    """The KeyTransRecipientInfo's issuer Name with its first AttributeTypeAndValue missing the
    value: found by test_envelope_mutants_resigned ("drop" on that node)."""
    tree = mutate.der_parse(envelope)
    enveloped = tree[0][1][1][1][0]  # ContentInfo > [0] > EnvelopedData
    ktri = enveloped[1][1][1][0]  # recipientInfos > ktri
    name = ktri[1][1][1][0]  # rid (IssuerAndSerialNumber) > issuer
    atv = name[1][0][1][0]  # first RDN > first AttributeTypeAndValue
    del atv[1][1]
    return mutate.der_encode(tree)


def test_scep_recipient_with_malformed_issuer_is_a_refusal_not_an_internal_error(world):
    # Before the fix: asn1crypto's lazy parse raised ValueError ('Field "value" is missing from
    # structure') in _our_recipient, which the authority logged as "scep internal error".
    message = h.pkcs_req(world.ca_cert)[0]
    broken = _envelope_with_broken_recipient_issuer(h.envelope_of(message))
    with pytest.raises(protocol.Refusal) as refusal:
        protocol.open_envelope(broken, world.ca_cert, world.ca_key)
    assert refusal.value.fail_info is FailInfo.BAD_REQUEST
    resigned = h.resign_with_envelope(message, broken, world.requester_cert, world.requester_key)
    status, rep = check_scep(world, resigned)
    assert status == 200 and rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_REQUEST
    assert "recipient" in rep.fail_text


def test_fleet_error_body_nested_too_deeply_is_a_fleet_error(world):
    # Before the fix: _fleet_reason's json.loads raised RecursionError out of the client.
    body = b"[" * 100_000
    assert isinstance(fleet_mod._fleet_reason(body), str)
    error = check_fleet_client(world, "global_policies", body, status=400)
    assert isinstance(error, fleet_mod.FleetError) and error.status == 400


@pytest.mark.parametrize("where", ["header", "query", "single-value header"])
def test_lone_surrogate_in_event_strings_is_a_bad_event(world, where):
    # Before the fix: the webhook's secret check did .encode("utf-8") on "\ud800" (JSON can escape
    # a lone surrogate) and the Lambda raised UnicodeEncodeError: ALB answers 502.
    event = webhook_event(json.dumps(webhook_payload()).encode(), secret=None)
    if where == "header":
        event["multiValueHeaders"]["authorization"] = ["Bearer \ud800"]
    elif where == "query":
        event["multiValueQueryStringParameters"] = {"secret": ["\ud800"]}
    else:
        event = {"httpMethod": "POST", "path": "/fleet/webhook", "headers": {"authorization": "Bearer \ud800"},
                 "body": "{}"}
    with pytest.raises(alb.BadEvent, match="not valid Unicode"):
        alb.Request.from_event(event)
    result = webhook.lambda_handler(event, None)
    assert alb.parse_response(result).status == 400


CRASHES = Path(__file__).parent / "crashes"


def test_healthz_leaf_with_malformed_extension_is_a_400(world):
    # Found by bench/fuzz/fuzz_alb.py (the exact input, replayed): the leaf's BasicConstraints
    # value is `04 02 d4 00` (tag 0x30 changed to 0xd4). cryptography parses extensions lazily, so
    # client_cert accepted the leaf and /healthz raised ValueError reading its SAN: ALB's 502.
    event = json.loads((CRASHES / "alb-healthz-leaf-bad-basic-constraints.json").read_text())
    request = alb.Request.from_event(event)
    with pytest.raises(alb.MtlsHeaderError, match="malformed"):
        alb.client_cert(request)
    assert check_event(world, event) == [400]


def test_signer_certificate_with_an_unsupported_version_is_a_refusal(world):
    # Found by tests/unit/test_scep_protocol.py's mutation fuzzer: a signer certificate whose
    # version field says v2 (INTEGER 1) made cryptography raise x509.InvalidVersion (not a
    # ValueError), which escaped parse_pki_message.
    from cryptography.hazmat.primitives.serialization import Encoding

    message = h.pkcs_req(world.ca_cert, private_key=world.requester_key, signer_cert=world.requester_cert)[0]
    der = world.requester_cert.public_bytes(Encoding.DER)
    assert der[8:13] == b"\xa0\x03\x02\x01\x02" and message.count(der) == 1  # tbs: [0] EXPLICIT INTEGER 2 (v3)
    mutated = message.replace(der, der[:12] + b"\x01" + der[13:])
    with pytest.raises(protocol.Refusal) as refusal:
        protocol.parse_pki_message(mutated)
    assert refusal.value.fail_info is FailInfo.BAD_MESSAGE_CHECK and "version" in refusal.value.text
    status, rep = check_scep(world, mutated)
    assert status == 200 and rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_MESSAGE_CHECK


def test_csr_with_an_unsupported_version_is_the_unreadable_envelope_answer(world):
    # Same exception class inside the envelope: a PKCS#10 version other than 0 made
    # load_der_x509_csr raise InvalidVersion, which the authority answered as an internal error.
    der = h.make_csr(world.requester_key, host_uuid=h.new_uuid())
    at = der.index(b"\x02\x01\x00")  # CertificationRequestInfo's version INTEGER 0
    bad = der[:at] + b"\x02\x01\x01" + der[at + 3:]
    message = h.pkcs_req(world.ca_cert, private_key=world.requester_key, signer_cert=world.requester_cert, csr=bad)[0]
    status, rep = check_scep(world, message)
    assert status == 200 and rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_MESSAGE_CHECK
    assert rep.fail_text == protocol.UNREADABLE_ENVELOPE
