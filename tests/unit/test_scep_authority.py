"""SCEP issuance end to end in-process: protocol + policy + a real DynamoDB (moto over HTTP)."""

from __future__ import annotations

import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID

from devicegate.scep import protocol
from devicegate.scep.authority import Authority
from devicegate.scep.protocol import FailInfo, MessageType, PkiStatus
from tests import scep_helpers as h


@pytest.fixture
def authority(store, scep_ca):
    cert, key = scep_ca
    return Authority(
        ca_cert=cert, ca_key=key, store=store, challenge=lambda: "secret", validity_days=365, accept_cn_uuid=False
    )


def enroll(authority, message, requester_key):
    reply = authority.respond(message)
    return protocol.parse_cert_rep(reply, ca_cert=authority.ca_cert, requester_key=requester_key)


def test_enrollment_issues_a_client_certificate_bound_to_the_host(authority, store):
    host = h.new_uuid()
    key = h.key()
    message, nonce, _, _ = h.pkcs_req(authority.ca_cert, csr=h.make_csr(key, host_uuid=host), transaction_id="tx-1")
    rep = enroll(authority, message, key)
    assert rep.status is PkiStatus.SUCCESS
    assert rep.recipient_nonce == nonce and rep.sender_nonce != nonce and len(rep.sender_nonce) == 16
    assert rep.transaction_id == b"tx-1"
    assert len(rep.certificates) == 1, "the certs-only reply holds only the issued certificate"
    cert = rep.certificates[0]
    cert.verify_directly_issued_by(authority.ca_cert)
    assert cert.serial_number.bit_length() >= 128
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_encipherment and not ku.key_cert_sign
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"urn:device:apple:uuid:{host}"]
    assert cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = authority.ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 365
    record = store.get_certificate(cert.serial_number)
    assert record.host_uuid == host and record.status == "active" and record.der == cert.public_bytes(
        protocol.Encoding.DER
    )
    assert [r.serial for r in store.host_certificates(host)] == [cert.serial_number]


@pytest.mark.parametrize("cipher", ["aes128_cbc", "aes192_cbc", "aes256_cbc", "tripledes_3key"])
def test_reply_uses_the_request_cipher(authority, cipher):
    key = h.key()
    message, _, _, _ = h.pkcs_req(authority.ca_cert, private_key=key, cipher_name=cipher)
    rep = enroll(authority, message, key)
    assert rep.status is PkiStatus.SUCCESS and rep.cipher_name == cipher


@pytest.mark.parametrize("digest", ["sha256", "sha384", "sha512"])
def test_reply_digest_follows_the_request(authority, digest):
    from asn1crypto import cms

    key = h.key()
    message, _, _, _ = h.pkcs_req(authority.ca_cert, private_key=key, digest_name=digest)
    reply = authority.respond(message)
    signer_info = cms.ContentInfo.load(reply)["content"]["signer_infos"][0]
    assert signer_info["digest_algorithm"]["algorithm"].native == digest
    # signatureAlgorithm is plain rsaEncryption, as SCEP clients expect
    assert signer_info["signature_algorithm"]["algorithm"].dotted == "1.2.840.113549.1.1.1"
    assert enroll(authority, message, key).status is PkiStatus.SUCCESS


def test_retry_returns_the_same_certificate_and_issues_nothing_new(authority, store):
    key = h.key()
    host = h.new_uuid()
    csr = h.make_csr(key, host_uuid=host)
    first, _, _, signer = h.pkcs_req(authority.ca_cert, private_key=key, csr=csr, transaction_id="retry-me")
    second, nonce2, _, _ = h.pkcs_req(authority.ca_cert, private_key=key, csr=csr, transaction_id="retry-me", signer_cert=signer)
    a = enroll(authority, first, key)
    b = enroll(authority, second, key)
    assert a.certificates[0].serial_number == b.certificates[0].serial_number
    assert b.recipient_nonce == nonce2
    assert len(store.host_certificates(host)) == 1


def test_a_first_request_costs_one_write_and_no_read(authority, store, monkeypatch):
    calls = []
    real = type(store)._call
    monkeypatch.setattr(type(store), "_call", lambda self, op, **kw: (calls.append(op), real(self, op, **kw))[1])
    key = h.key()
    reply = enroll(authority, h.pkcs_req(authority.ca_cert, private_key=key)[0], key)
    assert reply.status is PkiStatus.SUCCESS and calls == ["transact_write_items"]


def test_a_retry_gets_its_certificate_after_the_challenge_rotated_or_fleet_dropped_the_host(store, scep_ca):
    cert, ca_key = scep_ca
    state = {"challenge": "secret", "known": True}
    auth = Authority(ca_cert=cert, ca_key=ca_key, store=store, challenge=lambda: state["challenge"], validity_days=30,
                     accept_cn_uuid=False, host_known=lambda uuid: state["known"])
    key = h.key()
    host = h.new_uuid()
    csr = h.make_csr(key, host_uuid=host)
    first, _, _, signer = h.pkcs_req(cert, private_key=key, csr=csr, transaction_id="rotated")
    issued = enroll(auth, first, key).certificates[0]
    state["challenge"] = "rotated"
    retry = h.pkcs_req(cert, private_key=key, csr=csr, transaction_id="rotated", signer_cert=signer)[0]
    assert enroll(auth, retry, key).certificates[0].serial_number == issued.serial_number
    state["known"] = False
    retry = h.pkcs_req(cert, private_key=key, csr=csr, transaction_id="rotated", signer_cert=signer)[0]
    assert enroll(auth, retry, key).certificates[0].serial_number == issued.serial_number
    # a new CSR under that transaction is a new request: the checks apply to it
    other = h.pkcs_req(cert, private_key=key, csr=h.make_csr(key, host_uuid=host, cn="new"), transaction_id="rotated",
                       signer_cert=signer)[0]
    expect_failure(auth, other, key, FailInfo.BAD_REQUEST, "challenge")
    assert len(store.host_certificates(host)) == 1


def test_a_refused_request_while_the_store_is_down_is_told_to_retry(scep_ca):
    # it may be a retry the store would have answered with its certificate: "retry later", not
    # the refusal, and nothing issued
    from devicegate import store as store_mod

    class Down:
        def get_transaction(self, key):
            raise store_mod.StoreUnavailable("down")

    cert, ca_key = scep_ca
    auth = Authority(ca_cert=cert, ca_key=ca_key, store=Down(), challenge=lambda: "secret", validity_days=30,
                     accept_cn_uuid=False)
    key = h.key()
    csr = h.make_csr(key, host_uuid=h.new_uuid(), challenge="wrong")
    expect_failure(auth, h.pkcs_req(cert, private_key=key, csr=csr)[0], key, FailInfo.BAD_REQUEST, "retry later")


def test_a_retry_gets_its_certificate_while_the_challenge_secret_is_unreadable(store, scep_ca):
    cert, ca_key = scep_ca
    state = {"down": False}

    def challenge():
        if state["down"]:
            raise ConnectionError("Secrets Manager unreachable")
        return "secret"

    auth = Authority(ca_cert=cert, ca_key=ca_key, store=store, challenge=challenge, validity_days=30,
                     accept_cn_uuid=False)
    key = h.key()
    csr = h.make_csr(key, host_uuid=h.new_uuid())
    first, _, _, signer = h.pkcs_req(cert, private_key=key, csr=csr, transaction_id="secret-down")
    issued = enroll(auth, first, key).certificates[0]
    state["down"] = True
    retry = h.pkcs_req(cert, private_key=key, csr=csr, transaction_id="secret-down", signer_cert=signer)[0]
    assert enroll(auth, retry, key).certificates[0].serial_number == issued.serial_number
    fresh_key = h.key()  # a new request cannot be checked: refused, saying why
    expect_failure(auth, h.pkcs_req(cert, private_key=fresh_key)[0], fresh_key, FailInfo.BAD_REQUEST,
                   "cannot check the challenge right now; retry later")


def test_concurrent_retries_issue_one_certificate(authority, store):
    key = h.key()
    host = h.new_uuid()
    csr = h.make_csr(key, host_uuid=host)
    messages = [h.pkcs_req(authority.ca_cert, private_key=key, csr=csr, transaction_id="race")[0] for _ in range(6)]
    results = []
    threads = [threading.Thread(target=lambda m=m: results.append(enroll(authority, m, key))) for m in messages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    serials = {r.certificates[0].serial_number for r in results}
    assert len(results) == 6 and all(r.status is PkiStatus.SUCCESS for r in results)
    assert len(serials) == 1
    assert len(store.host_certificates(host)) == 1


def test_same_key_and_transaction_id_with_a_new_csr_is_a_re_enrollment(authority, store):
    # certmonger derives its transactionID from the public key, so a resubmission reuses it
    key = h.key()
    host = h.new_uuid()
    first = enroll(authority, h.pkcs_req(authority.ca_cert, private_key=key, csr=h.make_csr(key, host_uuid=host),
                                         transaction_id="same")[0], key)
    again = enroll(authority, h.pkcs_req(authority.ca_cert, private_key=key,
                                         csr=h.make_csr(key, host_uuid=host, cn="renewed"), transaction_id="same")[0], key)
    assert first.status is again.status is PkiStatus.SUCCESS
    assert first.certificates[0].serial_number != again.certificates[0].serial_number
    assert len(store.host_certificates(host)) == 2


def test_transaction_ids_are_scoped_to_the_requester_key(authority):
    victim, attacker = h.key(), h.key(slot=9)
    csr = h.make_csr(victim, host_uuid=h.new_uuid())
    issued = enroll(authority, h.pkcs_req(authority.ca_cert, private_key=victim, csr=csr, transaction_id="tx-v")[0], victim)
    # the attacker replays the victim's CSR and transactionID under its own signature:
    # it does not get the victim's recorded answer, and cannot block the victim's retries
    theirs = h.pkcs_req(authority.ca_cert, private_key=victim, csr=csr, transaction_id="tx-v",
                        signer_cert=h.self_signed(attacker), signer_key=attacker)[0]
    other = enroll(authority, theirs, attacker)
    assert other.certificates[0].serial_number != issued.certificates[0].serial_number
    retry = enroll(authority, h.pkcs_req(authority.ca_cert, private_key=victim, csr=csr, transaction_id="tx-v")[0], victim)
    assert retry.certificates[0].serial_number == issued.certificates[0].serial_number


def test_uuid_with_a_trailing_newline_is_refused(authority):
    key = h.key()
    csr = h.make_csr(key, san_uris=[f"urn:device:apple:uuid:{h.new_uuid()}\n"])
    expect_failure(authority, h.pkcs_req(authority.ca_cert, private_key=key, csr=csr)[0], key, FailInfo.BAD_REQUEST, "UUID")


def test_cn_naming_another_host_is_refused(authority):
    key = h.key()
    csr = h.make_csr(key, host_uuid=h.new_uuid(), cn=h.new_uuid())
    expect_failure(authority, h.pkcs_req(authority.ca_cert, private_key=key, csr=csr)[0], key, FailInfo.BAD_REQUEST,
                   "different host")


def test_ec_signer_is_refused_before_anything_is_issued(authority, store):
    from cryptography.hazmat.primitives.asymmetric import ec as ec_mod

    ec_key = ec_mod.generate_private_key(ec_mod.SECP256R1())
    host = h.new_uuid()
    message = h.pkcs_req(authority.ca_cert, private_key=ec_key, csr=h.make_csr(ec_key, host_uuid=host))[0]
    reply = authority.respond(message)
    from asn1crypto import cms
    attrs = {a["type"].dotted: a["values"][0] for a in cms.ContentInfo.load(reply)["content"]["signer_infos"][0]["signed_attrs"]}
    assert h.universal(attrs[protocol.OID_PKI_STATUS]).native == "2"
    assert h.universal(attrs[protocol.OID_FAIL_INFO]).native == "0"  # badAlg
    assert store.host_certificates(host) == []


def expect_failure(authority, message, key, fail_info, text_part):
    rep = enroll(authority, message, key)
    assert rep.status is PkiStatus.FAILURE, rep
    assert rep.fail_info is fail_info, rep.fail_text
    assert text_part in rep.fail_text
    assert rep.certificates == []
    return rep


def test_wrong_challenge(authority):
    key = h.key()
    csr = h.make_csr(key, host_uuid=h.new_uuid(), challenge="wrong")
    expect_failure(authority, h.pkcs_req(authority.ca_cert, private_key=key, csr=csr)[0], key, FailInfo.BAD_REQUEST, "challenge")


def test_missing_challenge(authority):
    key = h.key()
    csr = h.make_csr(key, host_uuid=h.new_uuid(), challenge=None)
    expect_failure(authority, h.pkcs_req(authority.ca_cert, private_key=key, csr=csr)[0], key, FailInfo.BAD_REQUEST, "challenge")


@pytest.mark.parametrize("kind", [_ASN1Type.PrintableString, _ASN1Type.UTF8String, _ASN1Type.BMPString])
def test_challenge_string_types(store, scep_ca, kind):
    cert, ca_key = scep_ca
    challenge = "s3cret_!@" if kind != _ASN1Type.PrintableString else "s3cret"
    auth = Authority(ca_cert=cert, ca_key=ca_key, store=store, challenge=lambda: challenge, validity_days=30, accept_cn_uuid=False)
    key = h.key()
    csr = h.make_csr(key, host_uuid=h.new_uuid(), challenge=challenge, challenge_type=kind)
    assert enroll(auth, h.pkcs_req(cert, private_key=key, csr=csr)[0], key).status is PkiStatus.SUCCESS


def test_ia5_challenge_is_refused(authority):
    key = h.key()
    csr = h.make_csr(key, host_uuid=h.new_uuid(), challenge_type=_ASN1Type.IA5String)
    expect_failure(authority, h.pkcs_req(authority.ca_cert, private_key=key, csr=csr)[0], key, FailInfo.BAD_REQUEST, "challenge")


def test_1024_bit_key_is_refused_with_the_fix(authority):
    small = h.key(1024)
    csr = h.make_csr(small, host_uuid=h.new_uuid())
    # the requester's signing cert can still be 2048-bit: the CSR key is what gets certified
    message = h.pkcs_req(authority.ca_cert, private_key=h.key(), csr=csr)[0]
    expect_failure(authority, message, h.key(), FailInfo.BAD_REQUEST, "Keysize")


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()])
def test_ec_csr_keys_are_accepted(authority, curve):
    ec_key = ec.generate_private_key(curve)
    csr = h.make_csr(ec_key, host_uuid=h.new_uuid())
    rep = enroll(authority, h.pkcs_req(authority.ca_cert, private_key=h.key(), csr=csr)[0], h.key())
    assert rep.status is PkiStatus.SUCCESS
    assert isinstance(rep.certificates[0].public_key(), ec.EllipticCurvePublicKey)


def test_p521_is_refused(authority):
    csr = h.make_csr(ec.generate_private_key(ec.SECP521R1()), host_uuid=h.new_uuid())
    expect_failure(authority, h.pkcs_req(authority.ca_cert, private_key=h.key(), csr=csr)[0], h.key(), FailInfo.BAD_REQUEST, "P-256")


def test_missing_san_uri(authority):
    key = h.key()
    csr = h.make_csr(key, host_uuid=None)
    expect_failure(authority, h.pkcs_req(authority.ca_cert, private_key=key, csr=csr)[0], key, FailInfo.BAD_REQUEST, "SAN URI")


@pytest.mark.parametrize("uri", ["urn:device:apple:uuid:not-a-uuid", "urn:device:apple:uuid:", "urn:device:apple:uuid:1234"])
def test_malformed_san_uri(authority, uri):
    key = h.key()
    csr = h.make_csr(key, san_uris=[uri])
    expect_failure(authority, h.pkcs_req(authority.ca_cert, private_key=key, csr=csr)[0], key, FailInfo.BAD_REQUEST, "UUID")


def test_two_device_uris_are_refused(authority):
    key = h.key()
    csr = h.make_csr(key, san_uris=[f"urn:device:apple:uuid:{h.new_uuid()}", f"urn:device:apple:uuid:{h.new_uuid()}"])
    expect_failure(authority, h.pkcs_req(authority.ca_cert, private_key=key, csr=csr)[0], key, FailInfo.BAD_REQUEST, "more than one")


def test_cn_uuid_only_when_the_setting_allows_it(store, scep_ca):
    cert, ca_key = scep_ca
    key = h.key()
    host = h.new_uuid()
    csr = h.make_csr(key, cn=host.lower())
    strict = Authority(ca_cert=cert, ca_key=ca_key, store=store, challenge=lambda: "secret", validity_days=30, accept_cn_uuid=False)
    expect_failure(strict, h.pkcs_req(cert, private_key=key, csr=csr)[0], key, FailInfo.BAD_REQUEST, "SAN URI")
    lax = Authority(ca_cert=cert, ca_key=ca_key, store=store, challenge=lambda: "secret", validity_days=30, accept_cn_uuid=True)
    rep = enroll(lax, h.pkcs_req(cert, private_key=key, csr=csr)[0], key)
    assert rep.status is PkiStatus.SUCCESS
    san = rep.certificates[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"urn:device:apple:uuid:{host}"]


def test_unknown_host_is_refused(store, scep_ca):
    cert, ca_key = scep_ca
    auth = Authority(ca_cert=cert, ca_key=ca_key, store=store, challenge=lambda: "secret", validity_days=30,
                     accept_cn_uuid=False, host_known=lambda uuid: False)
    key = h.key()
    expect_failure(auth, h.pkcs_req(cert, private_key=key)[0], key, FailInfo.BAD_REQUEST, "not known")


def test_subject_is_sanitised(authority):
    key = h.key()
    csr = h.make_csr(key, host_uuid=h.new_uuid(), cn="evil\x00\x07name" + "x" * 100)
    rep = enroll(authority, h.pkcs_req(authority.ca_cert, private_key=key, csr=csr)[0], key)
    cn = rep.certificates[0].subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn.startswith("evilname") and len(cn) == 64


def test_csr_extensions_cryptography_cannot_read_are_a_refusal(authority):
    # Before the fix: DuplicateExtension (not a ValueError) left inspect_csr, and the request was
    # answered "internal error; retry later", so the client retried it forever.
    from asn1crypto import csr as asn1_csr
    from cryptography.hazmat.primitives.asymmetric import padding

    key = h.key()
    request = asn1_csr.CertificationRequest.load(h.make_csr(key, host_uuid=h.new_uuid()))
    info = request["certification_request_info"]
    for attribute in info["attributes"]:
        if attribute["type"].native == "extension_request":
            extensions = list(attribute["values"][0])
            attribute["values"] = asn1_csr.SetOfExtensions([extensions + extensions])
    csr = asn1_csr.CertificationRequest({
        "certification_request_info": info,
        "signature_algorithm": {"algorithm": "sha256_rsa"},
        "signature": key.sign(info.dump(force=True), padding.PKCS1v15(), hashes.SHA256()),
    }).dump(force=True)
    rep = enroll(authority, h.pkcs_req(authority.ca_cert, private_key=key, csr=csr)[0], key)
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_REQUEST
    assert "extensions are malformed" in rep.fail_text


def test_csr_subject_with_bad_utf8_is_a_refusal(authority):
    # Before the fix: cryptography decodes the subject's strings on first use, so the ValueError
    # left inspect_csr (after the self-signature verified) as "internal error; retry later".
    from cryptography.hazmat.primitives.asymmetric import padding

    key = h.key()
    der = h.make_csr(key, host_uuid=h.new_uuid(), cn="abcd")
    info, algorithm, _ = protocol._children(der.replace(b"\x0c\x04abcd", b"\x0c\x04ab\xff\xfe"))
    signature = key.sign(info, padding.PKCS1v15(), hashes.SHA256())
    csr = protocol._seq(info, algorithm, protocol._tlv(0x03, b"\x00" + signature))
    rep = enroll(authority, h.pkcs_req(authority.ca_cert, private_key=key, csr=csr)[0], key)
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_REQUEST
    assert "subject is malformed" in rep.fail_text


def test_sha1_csr_signature_is_bad_alg(authority):
    key = h.key()
    csr = h.make_csr(key, host_uuid=h.new_uuid(), hash_alg=hashes.SHA1())
    expect_failure(authority, h.pkcs_req(authority.ca_cert, private_key=key, csr=csr)[0], key, FailInfo.BAD_ALG, "SHA-256")


def test_renewal_signed_by_current_certificate(authority, store):
    key = h.key()
    host = h.new_uuid()
    first = enroll(authority, h.pkcs_req(authority.ca_cert, private_key=key, csr=h.make_csr(key, host_uuid=host))[0], key)
    current = first.certificates[0]
    new_key = h.key(slot=1)
    csr = h.make_csr(new_key, host_uuid=host, challenge=None)
    message = h.pkcs_req(authority.ca_cert, private_key=key, csr=csr, signer_cert=current, message_type=MessageType.RENEWAL_REQ)[0]
    rep = enroll(authority, message, key)
    assert rep.status is PkiStatus.SUCCESS, rep.fail_text
    renewed = rep.certificates[0]
    assert renewed.serial_number != current.serial_number
    record = store.get_certificate(renewed.serial_number)
    assert record.kind == "renewal" and record.renewed_from == current.serial_number and record.host_uuid == host


def test_renewal_signed_by_a_stranger_is_refused(authority):
    key = h.key()
    csr = h.make_csr(key, host_uuid=h.new_uuid(), challenge=None)
    message = h.pkcs_req(authority.ca_cert, private_key=key, csr=csr, message_type=MessageType.RENEWAL_REQ)[0]
    expect_failure(authority, message, key, FailInfo.BAD_REQUEST, "RenewalReq")


def test_renewal_for_another_host_is_refused(authority):
    key = h.key()
    first = enroll(authority, h.pkcs_req(authority.ca_cert, private_key=key)[0], key)
    csr = h.make_csr(key, host_uuid=h.new_uuid(), challenge=None)
    message = h.pkcs_req(authority.ca_cert, private_key=key, csr=csr, signer_cert=first.certificates[0],
                         message_type=MessageType.RENEWAL_REQ)[0]
    expect_failure(authority, message, key, FailInfo.BAD_REQUEST, "different host")


def test_cert_poll_returns_the_issued_certificate(authority):
    key = h.key()
    message, _, _, signer = h.pkcs_req(authority.ca_cert, private_key=key, transaction_id="poll-tx")
    issued = enroll(authority, message, key).certificates[0]
    poll = protocol.build_pki_message(message_type=MessageType.CERT_POLL, inner=b"\x30\x00", recipient=authority.ca_cert,
                                      signer_cert=signer, signer_key=key, transaction_id="poll-tx")[0]
    rep = enroll(authority, poll, key)
    assert rep.status is PkiStatus.SUCCESS and rep.certificates[0].serial_number == issued.serial_number
    unknown = protocol.build_pki_message(message_type=MessageType.CERT_POLL, inner=b"\x30\x00", recipient=authority.ca_cert,
                                         signer_cert=signer, signer_key=key, transaction_id="never-seen")[0]
    expect_failure(authority, unknown, key, FailInfo.BAD_CERT_ID, "transactionID")
    other_key = h.key(slot=2)
    stranger = protocol.build_pki_message(message_type=MessageType.CERT_POLL, inner=b"\x30\x00", recipient=authority.ca_cert,
                                          signer_cert=h.self_signed(other_key), signer_key=other_key, transaction_id="poll-tx")[0]
    expect_failure(authority, stranger, other_key, FailInfo.BAD_CERT_ID, "requester")


def test_unsupported_message_type(authority):
    key = h.key()
    message = h.pkcs_req(authority.ca_cert, private_key=key, message_type=MessageType.GET_CRL)[0]
    expect_failure(authority, message, key, FailInfo.BAD_REQUEST, "messageType")


def test_storage_down_answers_failure_and_hands_out_nothing(scep_ca):
    from devicegate.store import Store

    cert, ca_key = scep_ca
    dead = Store("nope", endpoint="http://127.0.0.1:9")  # discard port: connection refused
    auth = Authority(ca_cert=cert, ca_key=ca_key, store=dead, challenge=lambda: "secret", validity_days=30, accept_cn_uuid=False)
    key = h.key()
    expect_failure(auth, h.pkcs_req(cert, private_key=key)[0], key, FailInfo.BAD_REQUEST, "retry later")


def test_validity_is_capped():
    from devicegate.scep.authority import MAX_VALIDITY_DAYS, build_certificate
    assert MAX_VALIDITY_DAYS == 398
    with pytest.raises(ValueError):
        build_certificate(None, "X", ca_cert=None, ca_key=None, validity_days=399, now=None, serial=1)


def test_serials_are_random_and_large():
    from devicegate.scep.authority import random_serial
    serials = {random_serial() for _ in range(1000)}
    assert len(serials) == 1000
    assert all(s.bit_length() == 159 for s in serials)


def test_random_serial_is_159_bits_of_which_158_random(monkeypatch):
    from devicegate.scep import authority as authority_mod

    serials = {authority_mod.random_serial() for _ in range(200)}
    assert len(serials) == 200 and {s.bit_length() for s in serials} == {159}
    monkeypatch.setattr(authority_mod.os, "urandom", lambda n: b"\xff" * n)
    assert authority_mod.random_serial() == (1 << 159) - 1
    monkeypatch.setattr(authority_mod.os, "urandom", lambda n: b"\x00" * n)
    assert authority_mod.random_serial() == 1 << 158
