"""devicegate's DER reader for SCEP requests against the asn1crypto parser it replaced.

On valid requests (DER and BER forms) damaged by the mutators: the reader never accepts what
the reference refuses (the outer SignedData, the envelope's decryption, a poll's cipher check),
reads what both accept identically, and raises nothing but Malformed or Refusal. Where the two
refuse differently (the reader is stricter about fields SCEP does not use, and answers with a
CertRep more often), that is allowed.
"""

from __future__ import annotations

from functools import lru_cache

from hypothesis import given
from hypothesis import strategies as st

from devicegate.local import pki
from devicegate.scep import protocol as reader
from tests import scep_helpers as h
from tests.fuzz import mutate
from tests.fuzz import reference_scep as reference
from tests.fuzz.harness import fuzz_settings


@lru_cache(maxsize=None)
def _world():
    ca_key = pki.new_key()
    ca = pki.self_signed_ca("reader fuzz CA", ca_key, scep=True)
    key = h.key()
    plain, _, _, signer = h.pkcs_req(ca, private_key=key)
    poll = h.pkcs_req(ca, private_key=key, message_type=reader.MessageType.CERT_POLL, signer_cert=signer, signer_key=key)[0]
    ber_envelope = h.resign_with_envelope(plain, h.to_indefinite(h.envelope_of(plain)), signer, key)
    chunked = h.resign_with_envelope(plain, h.constructed_encrypted_content(h.envelope_of(plain), chunk=64), signer, key)
    seeds = (plain, poll, h.to_indefinite(plain, keep=h.der_islands(plain)), ber_envelope, chunked)
    return ca, ca_key, key, signer, seeds


def _outcome(module, call, *args):
    # ours may raise only Malformed or Refusal; the reference's other errors (it let some
    # ValueErrors out) count as refusals
    refusals = (reader.Malformed, reader.Refusal) if module is reader else Exception
    try:
        return "ok", call(module)(*args)
    except refusals as exc:
        return "refused", exc


def _compare(message: bytes) -> None:
    ca, ca_key, _, _, _ = _world()
    ours = _outcome(reader, lambda m: m.parse_pki_message, message)
    theirs = _outcome(reference, lambda m: m.parse_pki_message, message)
    if ours[0] != "ok":
        return
    assert theirs[0] == "ok", f"the reader accepted a request the reference refuses: {theirs[1]}"
    a, b = ours[1], theirs[1]
    assert (a.message_type, a.reply_to.transaction_id, a.reply_to.transaction_id_key, a.reply_to.sender_nonce,
            a.reply_to.digest_name, a.signer, a.envelope) == \
        (b.message_type, b.reply_to.transaction_id.dump(), b.reply_to.transaction_id_key, b.reply_to.sender_nonce,
         b.reply_to.digest_name, b.signer, b.envelope)
    if a.envelope is None:
        return
    opened = _outcome(reader, lambda m: m.open_envelope, a.envelope, ca, ca_key)
    if opened[0] == "ok":
        expected = _outcome(reference, lambda m: m.open_envelope, a.envelope, ca, ca_key)
        assert expected[0] == "ok", f"the reader opened an envelope the reference refuses: {expected[1]}"
        assert opened[1] == expected[1]
    cipher = _outcome(reader, lambda m: m.envelope_cipher, a.envelope)
    if cipher[0] == "ok":
        assert _outcome(reference, lambda m: m.envelope_cipher, a.envelope) == cipher


def test_the_seeds_read_the_same():
    for seed in _world()[4]:
        assert _outcome(reader, lambda m: m.parse_pki_message, seed)[0] == "ok"
        _compare(seed)


@fuzz_settings(300)
@given(data=st.data(), index=st.integers(0, 4))
def test_byte_mutants(data, index):
    _compare(data.draw(mutate.byte_mutants(_world()[4][index])))


@fuzz_settings(300)
@given(data=st.data(), index=st.integers(0, 1))
def test_der_mutants(data, index):
    _compare(data.draw(mutate.der_mutants(_world()[4][index])))


@fuzz_settings(200)
@given(data=st.data())
def test_envelope_mutants_signed_again(data):
    ca, _, key, signer, seeds = _world()
    envelope = h.envelope_of(seeds[0])
    damaged = data.draw(mutate.der_mutants(envelope) | mutate.byte_mutants(envelope, max_ops=2))
    _compare(h.resign_with_envelope(seeds[0], damaged, signer, key))
