"""SCEP PKIOperation fuzzing: valid signed requests, damaged at every layer, through the Lambda.

Layers: the outer SignedData as received (bytes, DER structure, BER forms); the signed
attributes, re-signed by the requester; the pkcsPKIEnvelope, re-signed; the CSR inside it,
re-signed, re-encrypted and re-signed. Properties: HTTP 200 with a CA-signed CertRep (FAILURE
with a failInfo, unless what the requester signed is intact and acceptable) or a 4xx; no 5xx, no
internal error, within the time and memory bounds.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache

from asn1crypto import core
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from hypothesis import given
from hypothesis import strategies as st

from devicegate.scep import authority, protocol
from devicegate.scep.protocol import MessageType, PkiStatus
from tests import scep_helpers as h
from tests.fuzz import mutate
from tests.fuzz.harness import fuzz_settings
from tests.fuzz.targets import CHALLENGE, check_scep, scep_message


@lru_cache(maxsize=None)
def _seeds(world) -> tuple[bytes, ...]:
    plain = scep_message(world)
    return (
        plain,
        scep_message(world, cipher_name="tripledes_3key", digest_name="sha512"),
        scep_message(world, message_type=MessageType.CERT_POLL),
        h.to_indefinite(plain, h.der_islands(plain)),
    )


seed_index = st.integers(0, 3)


@fuzz_settings(60)
@given(data=st.data(), index=seed_index, via=st.sampled_from(["post", "get"]))
def test_pki_message_byte_mutants(world, data, index, via):
    original = _seeds(world)[index]
    check_scep(world, data.draw(mutate.byte_mutants(original)), via=via, original=original)


@fuzz_settings(60)
@given(data=st.data(), index=st.integers(0, 2))
def test_pki_message_der_mutants(world, data, index):
    original = _seeds(world)[index]
    check_scep(world, data.draw(mutate.der_mutants(original)), original=original)


@fuzz_settings(25)
@given(raw=st.binary(max_size=600) | st.sampled_from([b"0", b"\x30\x80" * 5000, b"\x30\x84\xff\xff\xff\xff",
                                                    b"\x30\x81", b"\x24\x80" + b"\x04\x01A" * 100 + b"\x00\x00"]))
def test_arbitrary_bytes(world, raw):
    check_scep(world, raw)


def _resigned(world, envelope: bytes, **kw) -> bytes:
    return h.resign_with_envelope(_seeds(world)[0], envelope, world.requester_cert, world.requester_key, **kw)


@fuzz_settings(40)
@given(data=st.data())
def test_envelope_mutants_resigned(world, data):
    """The requester signs a damaged pkcsPKIEnvelope: everything after the signature check runs."""
    envelope = h.envelope_of(_seeds(world)[0])
    damaged = data.draw(mutate.der_mutants(envelope) | mutate.byte_mutants(envelope, max_ops=2)
                        | st.builds(lambda n: h.constructed_encrypted_content(envelope, n, indefinite=True),
                                    st.integers(1, 40)))
    check_scep(world, _resigned(world, damaged), may_succeed=True)


_SIG_ALG = bytes.fromhex("300d06092a864886f70d01010b0500")  # sha256WithRSAEncryption


def _sign_cri(world, cri: bytes) -> bytes:
    signature = world.requester_key.sign(cri, padding.PKCS1v15(), hashes.SHA256())
    body = cri + _SIG_ALG + b"\x03" + mutate.der_length(len(signature) + 1) + b"\x00" + signature
    return b"\x30" + mutate.der_length(len(body)) + body


@fuzz_settings(40)
@given(data=st.data())
def test_csr_mutants_resigned(world, data):
    """A CSR whose info is damaged but whose self-signature verifies, in a valid envelope."""
    csr = h.make_csr(world.requester_key, host_uuid=h.new_uuid(), challenge=CHALLENGE)
    cri = mutate.der_encode([mutate.der_parse(csr)[0][1][0]])
    damaged = data.draw(mutate.der_mutants(cri))
    status, rep = check_scep(world, scep_message(world, csr=_sign_cri(world, damaged)), may_succeed=True)
    if rep is not None and rep.status is PkiStatus.SUCCESS:
        (issued,) = rep.certificates
        assert authority.host_uuid_of(issued) is not None, "issued without a device UUID"


_attr_values = st.one_of(
    st.builds(core.PrintableString, st.text("0123456789abc -", max_size=6)),
    st.builds(core.UTF8String, st.text(max_size=8)),
    st.builds(core.OctetString, st.binary(max_size=40)),
    st.builds(core.Integer, st.integers(-(2**70), 2**70)),
    st.builds(core.IA5String, st.text("abc", max_size=300)),
    st.just(core.Null()),
)


@fuzz_settings(40)
@given(
    message_type=st.none() | _attr_values | st.sampled_from([core.PrintableString(str(int(t))) for t in MessageType]),
    transaction_id=st.none() | _attr_values,
    nonce=st.none() | _attr_values | st.builds(core.OctetString, st.binary(min_size=16, max_size=16)),
    digest=st.sampled_from(["sha256", "sha384", "sha512"]),
    good_digest=st.booleans(),
    extra=st.lists(st.tuples(st.sampled_from([protocol.OID_PKI_STATUS, protocol.OID_FAIL_INFO,
                                              protocol.OID_RECIPIENT_NONCE, protocol.OID_TRANSACTION_ID,
                                              "1.2.3.4"]), _attr_values), max_size=2),
)
def test_signed_attribute_mutants(world, message_type, transaction_id, nonce, digest, good_digest, extra):
    """Signed attributes of every type and presence, correctly signed by the requester."""
    envelope = h.envelope_of(_seeds(world)[0])
    digest_value = hashlib.new(digest, envelope).digest() if good_digest else os.urandom(32)
    attrs = [protocol._attr("content_type", "data"), protocol._attr("message_digest", digest_value)]
    for oid, value in ((protocol.OID_MESSAGE_TYPE, message_type), (protocol.OID_TRANSACTION_ID, transaction_id),
                       (protocol.OID_SENDER_NONCE, nonce), *extra):
        if value is not None:
            attrs.append(protocol._scep_attr(oid, value))
    try:
        message = protocol._sign(attrs, envelope, digest, world.requester_cert, world.requester_key)
    except (ValueError, TypeError):
        return  # asn1crypto will not even encode it: no client can send it either
    check_scep(world, message, may_succeed=True)
