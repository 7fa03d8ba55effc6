"""SCEP message parsing and building: BER, failInfo paths, nonce and transactionID rules, fuzzing."""

from __future__ import annotations

import os
import time

import pytest
from asn1crypto import cms, core
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devicegate.scep import protocol
from devicegate.scep.authority import Authority
from devicegate.scep.protocol import FailInfo, Malformed, PkiStatus, Refusal
from tests import scep_helpers as h


@pytest.fixture
def authority(store, scep_ca):
    cert, key = scep_ca
    return Authority(ca_cert=cert, ca_key=key, store=store, challenge=lambda: "secret", validity_days=30, accept_cn_uuid=False)


def reply_of(authority, message, key):
    return protocol.parse_cert_rep(authority.respond(message), ca_cert=authority.ca_cert, requester_key=key)


# ----------------------------------------------------------------------------- BER


def test_indefinite_length_ber_everywhere_but_the_signed_attributes(authority, scep_ca):
    ca_cert, _ = scep_ca
    key = h.key()
    message, nonce, _, signer = h.pkcs_req(ca_cert, private_key=key)
    # BER inside the envelope too: the envelope is re-encoded and the request re-signed
    envelope = h.to_indefinite(h.envelope_of(message))
    message = h.resign_with_envelope(message, envelope, signer, key)
    ber = h.to_indefinite(message, keep=h.der_islands(message))
    assert ber != message and b"\x30\x80" in ber
    rep = reply_of(authority, ber, key)
    assert rep.status is PkiStatus.SUCCESS, rep.fail_text
    assert rep.recipient_nonce == nonce


@pytest.mark.parametrize("indefinite", [False, True])
def test_constructed_encrypted_content(authority, scep_ca, indefinite):
    ca_cert, _ = scep_ca
    key = h.key()
    message, _, _, signer = h.pkcs_req(ca_cert, private_key=key)
    envelope = h.constructed_encrypted_content(h.envelope_of(message), chunk=100, indefinite=indefinite)
    assert b"\xa0" in envelope
    message = h.resign_with_envelope(message, envelope, signer, key)
    assert reply_of(authority, message, key).status is PkiStatus.SUCCESS


# ----------------------------------------------------------------------------- echo rules


def test_transaction_id_is_echoed_byte_for_byte(authority, scep_ca):
    ca_cert, _ = scep_ca
    key = h.key()
    decimal_77 = "1" + "".join(str(d % 10) for d in range(76))  # certmonger's shape
    for tx in (decimal_77, "AbC/+=xyz=="):  # scepclient's base64 shape
        message, nonce, _, _ = h.pkcs_req(ca_cert, private_key=key, transaction_id=tx)
        reply = authority.respond(message)
        got = _attr_value(reply, protocol.OID_TRANSACTION_ID)
        sent = _attr_value(message, protocol.OID_TRANSACTION_ID)
        assert got == sent and got.endswith(tx.encode())


def test_nonces(authority, scep_ca):
    ca_cert, _ = scep_ca
    key = h.key()
    seen = set()
    for _ in range(3):
        nonce = os.urandom(16)
        message, _, _, _ = h.pkcs_req(ca_cert, private_key=key, sender_nonce=nonce)
        rep = reply_of(authority, message, key)
        assert rep.recipient_nonce == nonce
        assert rep.sender_nonce != nonce and rep.sender_nonce not in seen
        seen.add(rep.sender_nonce)


def test_failure_reply_shape(authority, scep_ca):
    ca_cert, _ = scep_ca
    key = h.key()
    message = h.pkcs_req(ca_cert, private_key=key, csr=h.make_csr(key, host_uuid=h.new_uuid(), challenge="nope"))[0]
    reply = authority.respond(message)
    signed = cms.ContentInfo.load(reply)["content"]
    # FAILURE carries no envelope, but an empty eContent (OpenSSL refuses absent content)
    assert signed["encap_content_info"]["content"].native == b""
    assert _attr_value(reply, protocol.OID_PKI_STATUS) == core.PrintableString("2").dump()
    assert _attr_value(reply, protocol.OID_FAIL_INFO) == core.PrintableString("2").dump()
    assert b"challenge" in _attr_value(reply, protocol.OID_FAIL_INFO_TEXT)


def _attr_value(message: bytes, oid: str) -> bytes:
    signer_info = cms.ContentInfo.load(message)["content"]["signer_infos"][0]
    for attr in signer_info["signed_attrs"]:
        if attr["type"].dotted == oid:
            return attr["values"][0].dump()
    raise AssertionError(f"{oid} missing")


# ----------------------------------------------------------------------------- failInfo paths


def _swap_cipher(envelope: bytes, oid_name: str) -> bytes:
    info = cms.ContentInfo.load(envelope)
    env = info["content"]
    eci = env["encrypted_content_info"]
    iv = os.urandom(8)
    new_eci = cms.EncryptedContentInfo({
        "content_type": "data",
        "content_encryption_algorithm": {"algorithm": oid_name, "parameters": core.OctetString(iv)},
        "encrypted_content": eci["encrypted_content"].native,
    })
    new_env = cms.EnvelopedData({"version": env["version"], "recipient_infos": env["recipient_infos"],
                                 "encrypted_content_info": new_eci})
    return cms.ContentInfo({"content_type": "enveloped_data", "content": new_env}).dump()


@pytest.mark.parametrize("cipher_oid", ["des", "1.2.840.113549.3.4", "1.2.3.4.5"])  # DES, RC4, unknown
def test_weak_or_unknown_cipher_is_bad_alg(authority, scep_ca, cipher_oid):
    ca_cert, _ = scep_ca
    key = h.key()
    message, _, _, signer = h.pkcs_req(ca_cert, private_key=key)
    envelope = _swap_cipher(h.envelope_of(message), cipher_oid)
    rep = reply_of(authority, h.resign_with_envelope(message, envelope, signer, key), key)
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_ALG
    assert "AES" in rep.fail_text


def test_sha1_message_digest_is_bad_alg(scep_ca):
    ca_cert, ca_key = scep_ca
    key = h.key()
    message, _, _, signer = h.pkcs_req(ca_cert, private_key=key)
    sha1 = _sign_sha1(message, signer, key)
    with pytest.raises(Refusal) as info:
        protocol.parse_pki_message(sha1)
    assert info.value.fail_info is FailInfo.BAD_ALG and info.value.reply_to is not None


def _sign_sha1(message, signer, key):
    """A SHA-1 signed request, built by hand (our builder refuses SHA-1)."""
    import hashlib

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    info = cms.ContentInfo.load(message)
    signed = info["content"]
    si = signed["signer_infos"][0]
    envelope = h.envelope_of(message)
    attrs = [a for a in si["signed_attrs"] if a["type"].native != "message_digest"]
    attrs.append(cms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha1(envelope).digest()]}))
    signed_attrs = cms.CMSAttributes(attrs)
    to_sign = b"\x31" + protocol._der_length(len(signed_attrs.contents)) + signed_attrs.contents
    new_si = cms.SignerInfo({
        "version": "v1", "sid": si["sid"], "digest_algorithm": {"algorithm": "sha1"},
        "signed_attrs": signed_attrs, "signature_algorithm": {"algorithm": "rsassa_pkcs1v15"},
        "signature": key.sign(to_sign, padding.PKCS1v15(), hashes.SHA1()),
    })
    new_signed = cms.SignedData({
        "version": "v1", "digest_algorithms": [{"algorithm": "sha1"}],
        "encap_content_info": signed["encap_content_info"], "certificates": signed["certificates"],
        "signer_infos": [new_si],
    })
    return cms.ContentInfo({"content_type": "signed_data", "content": new_signed}).dump()


def test_bad_signature_is_bad_message_check(authority, scep_ca):
    ca_cert, _ = scep_ca
    key = h.key()
    message = bytearray(h.pkcs_req(ca_cert, private_key=key)[0])
    message[-5] ^= 0x01  # inside the signature value, the last element
    rep = reply_of(authority, bytes(message), key)
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_MESSAGE_CHECK


def test_signed_by_someone_else_is_bad_message_check(authority, scep_ca):
    ca_cert, _ = scep_ca
    key, other = h.key(), h.key(slot=3)
    message = h.pkcs_req(ca_cert, private_key=key, signer_cert=h.self_signed(key), signer_key=other)[0]
    assert reply_of(authority, message, key).fail_info is FailInfo.BAD_MESSAGE_CHECK


def test_content_swapped_after_signing_is_bad_message_check(authority, scep_ca):
    ca_cert, _ = scep_ca
    key = h.key()
    message, _, _, _ = h.pkcs_req(ca_cert, private_key=key)
    other, _, _, _ = h.pkcs_req(ca_cert, private_key=key)
    env_a, env_b = h.envelope_of(message), h.envelope_of(other)
    assert len(env_a) == len(env_b)
    tampered = message.replace(env_a, env_b)
    assert reply_of(authority, tampered, key).fail_info is FailInfo.BAD_MESSAGE_CHECK


def test_envelope_for_another_ca_is_bad_message_check(authority, scep_ca):
    from devicegate.local import pki

    other_ca = pki.self_signed_ca("other", h.key(slot=4), scep=True)
    key = h.key()
    message = h.pkcs_req(other_ca, private_key=key)[0]
    rep = reply_of(authority, message, key)
    assert rep.status is PkiStatus.FAILURE and rep.fail_info in (FailInfo.BAD_MESSAGE_CHECK, FailInfo.BAD_CERT_ID)


def test_no_padding_oracle_between_decryption_and_csr(authority, scep_ca):
    """Bad padding, good padding around garbage, and a CSR whose signature fails all get the
    same failInfo and text: nothing tells a forged ciphertext's padding apart."""
    ca_cert, _ = scep_ca
    key = h.key()
    garbage = protocol.build_pki_message(message_type=protocol.MessageType.PKCS_REQ, inner=b"not a csr", recipient=ca_cert,
                                         signer_cert=h.self_signed(key), signer_key=key, transaction_id="g")[0]
    message, _, _, signer = h.pkcs_req(ca_cert, private_key=key)
    info = cms.ContentInfo.load(h.envelope_of(message))
    eci = info["content"]["encrypted_content_info"]
    broken = bytearray(eci["encrypted_content"].native)
    broken[-1] ^= 0x55  # the last block's padding no longer decrypts
    bad_padding_env = h._replace_nested(h.envelope_of(message), eci["encrypted_content"].dump(),
                                        b"\x80" + protocol._der_length(len(broken)) + bytes(broken))
    bad_padding = h.resign_with_envelope(message, bad_padding_env, signer, key)
    csr = bytearray(h.make_csr(key, host_uuid=h.new_uuid()))
    csr[-3] ^= 0x01  # the CSR's own signature fails
    bad_sig = protocol.build_pki_message(message_type=protocol.MessageType.PKCS_REQ, inner=bytes(csr), recipient=ca_cert,
                                         signer_cert=h.self_signed(key), signer_key=key, transaction_id="s")[0]
    answers = {(r.fail_info, r.fail_text) for r in (reply_of(authority, m, key) for m in (garbage, bad_padding, bad_sig))}
    assert answers == {(FailInfo.BAD_MESSAGE_CHECK, protocol.UNREADABLE_ENVELOPE)}


def test_cert_poll_never_decrypts(authority, scep_ca):
    ca_cert, _ = scep_ca
    key = h.key()
    message, _, _, signer = h.pkcs_req(ca_cert, private_key=key, transaction_id="poll-nodecrypt")
    issued = reply_of(authority, message, key).certificates[0]
    poll = protocol.build_pki_message(message_type=protocol.MessageType.CERT_POLL, inner=b"x", recipient=ca_cert,
                                      signer_cert=signer, signer_key=key, transaction_id="poll-nodecrypt")[0]
    info = cms.ContentInfo.load(h.envelope_of(poll))
    eci = info["content"]["encrypted_content_info"]
    junk = os.urandom(len(eci["encrypted_content"].native))
    env = h._replace_nested(h.envelope_of(poll), eci["encrypted_content"].dump(), b"\x80" + protocol._der_length(len(junk)) + junk)
    rep = reply_of(authority, h.resign_with_envelope(poll, env, signer, key), key)
    assert rep.status is PkiStatus.SUCCESS and rep.certificates[0].serial_number == issued.serial_number


def test_chunked_econtent_is_accepted(authority, scep_ca):
    ca_cert, _ = scep_ca
    key = h.key()
    message, _, _, signer = h.pkcs_req(ca_cert, private_key=key)
    envelope = h.envelope_of(message)
    primitive = b"\x04" + protocol._der_length(len(envelope)) + envelope
    chunks = b"".join(b"\x04" + protocol._der_length(len(envelope[i:i + 500])) + envelope[i:i + 500]
                      for i in range(0, len(envelope), 500))
    chunked = b"\x24" + protocol._der_length(len(chunks)) + chunks  # a streaming encoder's OCTET STRING
    rewritten = h._replace_nested(message, primitive, chunked)
    assert rewritten != message
    assert reply_of(authority, rewritten, key).status is PkiStatus.SUCCESS


def test_message_type_must_be_digits(scep_ca):
    ca_cert, _ = scep_ca
    key = h.key()
    message = protocol.build_pki_message(message_type=protocol.MessageType.PKCS_REQ, inner=b"x", recipient=ca_cert,
                                         signer_cert=h.self_signed(key), signer_key=key, transaction_id="m")[0]
    patched = message.replace(b"\x13\x0219", b"\x13\x02 9")
    assert patched != message
    with pytest.raises(Refusal):
        protocol.parse_pki_message(patched)


def test_deep_nesting_without_indefinite_lengths_is_malformed(authority):
    deep = b""
    for _ in range(3000):
        deep = b"\x30" + protocol._der_length(len(deep)) + deep
    with pytest.raises(Malformed):
        authority.respond(b"\x30" + protocol._der_length(len(deep)) + deep)


@pytest.mark.parametrize("cut", [1, 10, 100, 1000])
def test_truncated_messages_are_malformed(authority, scep_ca, cut):
    message = h.pkcs_req(scep_ca[0])[0]
    with pytest.raises(Malformed):
        authority.respond(message[:-cut])


@pytest.mark.parametrize("data", [b"", b"\x00", b"garbage" * 10, b"\x30\x80" * 50, b"\x30\x03\x02\x01\x01"])
def test_garbage_is_malformed(authority, data):
    with pytest.raises(Malformed):
        authority.respond(data)


def test_oversized_message_is_refused_before_parsing(authority):
    started = time.process_time()
    with pytest.raises(Malformed, match="exceeds"):
        authority.respond(b"\x30\x84" + b"\xff" * (protocol.MAX_MESSAGE_BYTES + 10))
    assert time.process_time() - started < 5  # generous: this is a sanity bound, not a benchmark


def test_missing_transaction_id_is_malformed(scep_ca):
    ca_cert, _ = scep_ca
    key = h.key()
    message = h.pkcs_req(ca_cert, private_key=key)[0]
    info = cms.ContentInfo.load(message)
    si = info["content"]["signer_infos"][0]
    attrs = [a for a in si["signed_attrs"] if a["type"].dotted != protocol.OID_TRANSACTION_ID]
    stripped = protocol._sign(attrs, h.envelope_of(message), "sha256", h.self_signed(key), key)
    with pytest.raises(Malformed, match="transactionID"):
        protocol.parse_pki_message(stripped)


# ----------------------------------------------------------------------------- the signer lookup
# It runs before the signature is checked: anyone can send these.


def _with_signer_lookup(message: bytes, sid: bytes, certificates: bytes) -> bytes:
    """The request with this (encoded) SignerIdentifier and this [0] certificates content."""
    fields = protocol._children(protocol._children(protocol._children(message)[1])[0])  # SignedData
    signer_info = protocol._children(protocol._children(fields[-1])[0])
    signer_info[1] = sid
    signed = [*fields[:3], protocol._tlv(0xA0, certificates), protocol._tlv(0x31, protocol._seq(*signer_info))]
    return protocol._seq(protocol._OID_SIGNED_DATA, protocol._tlv(0xA0, protocol._seq(*signed)))


def _certificate_with_extensions(private_key, extensions: list) -> bytes:
    """A certificate carrying these asn1crypto Extensions, as cryptography would never write them."""
    from asn1crypto import x509 as asn1_x509

    cert = asn1_x509.Certificate.load(h.self_signed(private_key).public_bytes(protocol.Encoding.DER))
    tbs = cert["tbs_certificate"]
    tbs["extensions"] = asn1_x509.Extensions(extensions)
    return asn1_x509.Certificate({"tbs_certificate": tbs, "signature_algorithm": cert["signature_algorithm"],
                                  "signature_value": cert["signature_value"]}).dump(force=True)


@pytest.mark.parametrize("damage", ["duplicate extension", "x400Address SAN"])
def test_a_certificate_whose_extensions_cryptography_refuses_is_a_refusal(authority, scep_ca, damage):
    # Before the fix: matching a subjectKeyIdentifier sid read each certificate's extensions with
    # cryptography, whose DuplicateExtension and UnsupportedGeneralNameType are not ValueErrors:
    # they left parse_pki_message and Authority.respond, and the handler answered 503.
    from asn1crypto import core
    from asn1crypto import x509 as asn1_x509

    ca_cert, _ = scep_ca
    key = h.key()
    message = h.pkcs_req(ca_cert, private_key=key)[0]
    if damage == "duplicate extension":
        constraints = asn1_x509.Extension({"extn_id": "basic_constraints", "critical": True, "extn_value": {"ca": False}})
        extensions = [constraints, constraints]
    else:
        extensions = [asn1_x509.Extension({"extn_id": "subject_alt_name", "critical": False,
                                           "extn_value": core.ParsableOctetString(b"\x30\x04\xa3\x02\x30\x00")})]
    broken = _certificate_with_extensions(key, extensions)
    tampered = _with_signer_lookup(message, protocol._tlv(0x80, b"\x01" * 20), broken)
    with pytest.raises(Refusal) as refusal:
        protocol.parse_pki_message(tampered)
    assert refusal.value.fail_info is FailInfo.BAD_MESSAGE_CHECK and refusal.value.reply_to is not None
    rep = protocol.parse_cert_rep(authority.respond(tampered), ca_cert=ca_cert)
    assert rep.status is PkiStatus.FAILURE and rep.fail_info is FailInfo.BAD_MESSAGE_CHECK


def test_many_certificates_with_the_serial_asked_for_prepare_the_wanted_issuer_once(scep_ca):
    # Before the fix: each certificate whose serial matched but whose issuer octets differed
    # parsed and string-prepared the sid's issuer again: a 30 KB issuer and 1,400 tiny
    # certificates (a 64 KB request, unsigned) took about 90 s of CPU.
    ca_cert, _ = scep_ca
    message = h.pkcs_req(ca_cert)[0]

    def name(value: bytes) -> bytes:
        common_name = protocol._seq(protocol._oid("2.5.4.3"), protocol._tlv(0x0C, value))
        return protocol._seq(protocol._tlv(0x31, common_name))

    serial = protocol._der_integer(7)
    tiny = protocol._seq(protocol._seq(serial, protocol._seq(), name(b"a")))  # all the lookup reads of one
    tampered = _with_signer_lookup(message, protocol._seq(name(b"A" * 30_000), serial), tiny * 1_400)
    assert len(tampered) <= protocol.MAX_MESSAGE_BYTES
    started = time.process_time()
    with pytest.raises(Refusal, match="not in the message"):
        protocol.parse_pki_message(tampered)
    assert time.process_time() - started < 3  # ~0.1 s; a sanity bound, not a benchmark


# ----------------------------------------------------------------------------- fuzzing


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes_never_escape(scep_ca, data):
    try:
        protocol.parse_pki_message(data)
    except (Malformed, Refusal):
        pass


_VALID: dict = {}


def _valid_message(ca_cert):
    if "m" not in _VALID:
        _VALID["m"] = h.pkcs_req(ca_cert)[0]
    return _VALID["m"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_mutated_valid_messages_never_escape(scep_ca, data):
    ca_cert, ca_key = scep_ca
    message = bytearray(_valid_message(ca_cert))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(message) - 1))
        message[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        message = message[: data.draw(st.integers(0, len(message)))]
    started = time.process_time()
    try:
        parsed = protocol.parse_pki_message(bytes(message))
        if parsed.envelope is not None:
            protocol.open_envelope(parsed.envelope, ca_cert, ca_key)
    except (Malformed, Refusal):
        pass
    assert time.process_time() - started < 2  # bounded work per message (sanity, not a benchmark)
