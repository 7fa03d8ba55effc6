"""devicegate.scep.der (the SCEP request reader) and definite_lengths' copy-free first walk."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devicegate.scep import der, protocol
from tests import scep_helpers as h
from tests.fuzz import mutate


def test_an_element_must_end_inside_its_parent():
    data = b"\x30\x05\x04\x04abcd" + b"\x04\x01x"
    outer = der.element(data, 0, len(data))
    assert outer == (0x30, 0, 2, 7)
    with pytest.raises(der.DerError, match="runs past"):
        der.children(data, outer)  # the OCTET STRING says 4 octets, the SEQUENCE holds 3 more
    with pytest.raises(der.DerError, match="after the"):
        der.whole(data, 0x30, "thing")


@pytest.mark.parametrize("raw, reason", [
    (b"", "truncated tag"), (b"\x30", "truncated length"), (b"\x30\x80\x00\x00", "indefinite"),
    (b"\x04\x85\x01\x00\x00\x00\x00", "bad length"), (b"\x04\x82\x01", "bad length"), (b"\x04\x02a", "runs past"),
])
def test_broken_headers(raw, reason):
    with pytest.raises(der.DerError, match=reason):
        der.element(raw, 0, len(raw))


def test_a_high_tag_number_is_skipped_and_never_taken_for_a_low_one():
    data = b"\x1f\x81\x00\x01z"
    tag, _, start, end = der.element(data, 0, len(data))
    assert tag == 0x1F and data[start:end] == b"z"
    with pytest.raises(der.DerError, match="tag 0x1f"):
        der.primitive(data, (tag, 0, start, end), der.OCTET_STRING, "x")


def test_fields_and_algorithm_shapes():
    alg = b"\x30\x0d\x06\x09" + der.oid("1.2.840.113549.1.1.11") + b"\x05\x00"
    el = der.whole(alg, der.SEQUENCE, "alg")
    oid, params = der.algorithm(alg, el, "alg")
    assert der.dotted(oid) == "1.2.840.113549.1.1.11" and params[0] == der.NULL
    assert der.fields(alg, el, (der.OID, der.NULL), "alg")[0][0] == der.OID
    with pytest.raises(der.DerError, match="not shaped"):
        der.fields(alg, el, (der.OID,), "alg")
    with pytest.raises(der.DerError, match="not an AlgorithmIdentifier"):
        der.algorithm(b"\x04\x00", der.whole(b"\x04\x00", 0x04, "x"), "alg")


@pytest.mark.parametrize("dotted", ["1.2.840.113549.1.7.2", "2.16.840.1.113733.1.9.7", "0.9.2342.19200300.100.1.1",
                                    "2.999.1", "1.3.6.1.4.1.311.20.2"])
def test_oid_round_trip(dotted):
    assert der.dotted(der.oid(dotted)) == dotted


def test_integers_are_signed_and_never_empty():
    assert der.integer(b"\x02\x01\xff", (0x02, 0, 2, 3), "n") == -1
    assert der.integer(b"\x02\x02\x00\x80", (0x02, 0, 2, 4), "n") == 128
    with pytest.raises(der.DerError, match="empty"):
        der.integer(b"\x02\x00", (0x02, 0, 2, 2), "n")


def _slow(data: bytes):
    """definite_lengths without the first walk: the rewriting walk alone."""
    try:
        out, end, _ = protocol._definite_one(data, 0, 0)
        if end != len(data):
            raise ValueError("trailing")
        return "ok", out
    except ValueError:
        return "error", None


def _fast(data: bytes):
    try:
        return "ok", protocol.definite_lengths(data)
    except ValueError:
        return "error", None


@pytest.fixture(scope="module")
def request_der(scep_ca):
    return h.pkcs_req(scep_ca[0], private_key=h.key())[0]


def test_definite_input_comes_back_as_the_same_object(request_der):
    assert protocol.definite_lengths(request_der) is request_der
    ber = h.to_indefinite(request_der, keep=h.der_islands(request_der))
    assert protocol.definite_lengths(ber) == request_der


@pytest.mark.parametrize("raw", [
    b"\x30\x00" * 2, b"\x30\x03\x04\x01", b"\x30\x02\x04\x05", b"\x30\x80\x04\x00", b"\x24\x80\x04\x01a\x00\x00",
    b"\x30\x02" + b"\x30\x00" * 1, b"\x04\x80\x00\x00",
    bytes.fromhex("30") + bytes([2 * 41]) + b"\x30\x00" * 41,
])
def test_the_first_walk_refuses_what_the_rewriting_walk_refuses(raw):
    assert _fast(raw)[0] == _slow(raw)[0]


def _nested(depth: int) -> bytes:
    raw = b"\x04\x00"
    for _ in range(depth):
        raw = b"\x30" + protocol._der_length(len(raw)) + raw
    return raw


@pytest.mark.parametrize("depth", [39, 40, 41, 42])
def test_the_depth_limit_is_the_same_in_both_walks(depth):
    assert _fast(_nested(depth)) == _slow(_nested(depth))


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_both_walks_agree_on_damaged_requests(data, request_der):
    for seed in (request_der, h.to_indefinite(request_der, keep=h.der_islands(request_der))):
        damaged = data.draw(mutate.byte_mutants(seed))
        assert _fast(damaged) == _slow(damaged)
