"""Build every shape of SCEP request a real client might send, for the tests."""

from __future__ import annotations

import os
import uuid as uuid_mod

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import AttributeOID, NameOID

from devicegate.local import pki
from devicegate.scep import protocol
from devicegate.scep.protocol import MessageType

_KEYS: dict[tuple, object] = {}


def key(bits: int = 2048, slot: int = 0):
    """RSA keys are slow to make; tests share a few."""
    if (bits, slot) not in _KEYS:
        _KEYS[(bits, slot)] = pki.new_key(bits)
    return _KEYS[(bits, slot)]


def new_uuid() -> str:
    return str(uuid_mod.uuid4()).upper()


def make_csr(
    private_key,
    *,
    host_uuid: str | None = None,
    san_uris: list[str] | None = None,
    cn: str = "Fleet conditional access for Okta",
    challenge: str | None = "secret",
    challenge_type: _ASN1Type = _ASN1Type.PrintableString,
    hash_alg=None,
) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False)])
    )
    uris = list(san_uris or [])
    if host_uuid is not None:
        uris.append(f"urn:device:apple:uuid:{host_uuid}")
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False
        )
    if challenge is not None:
        value = challenge.encode("utf-16-be") if challenge_type == _ASN1Type.BMPString else challenge.encode()
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, value, _tag=challenge_type)
    der = builder.sign(private_key, hashes.SHA256()).public_bytes(Encoding.DER)
    return der if hash_alg is None else resign_csr(der, private_key, hash_alg)


def resign_csr(der: bytes, private_key, hash_alg) -> bytes:
    """cryptography refuses to make SHA-1 CSRs; old clients still do."""
    from asn1crypto import csr as asn1_csr
    from cryptography.hazmat.primitives.asymmetric import padding

    request = asn1_csr.CertificationRequest.load(der)
    info = request["certification_request_info"]
    return asn1_csr.CertificationRequest({
        "certification_request_info": info,
        "signature_algorithm": {"algorithm": f"{hash_alg.name}_rsa"},
        "signature": private_key.sign(info.dump(), padding.PKCS1v15(), hash_alg),
    }).dump()


def self_signed(private_key) -> x509.Certificate:
    return pki.signing_certificate("SCEP requester", private_key)


def pkcs_req(ca_cert, *, private_key=None, csr: bytes | None = None, transaction_id=None, **kwargs):
    """(message, sender nonce, requester key, requester cert) for a PKCSReq."""
    private_key = private_key or key()
    csr = csr if csr is not None else make_csr(private_key, host_uuid=new_uuid())
    signer_cert = kwargs.pop("signer_cert", None) or self_signed(private_key)
    message, nonce = protocol.build_pki_message(
        message_type=kwargs.pop("message_type", MessageType.PKCS_REQ),
        inner=csr,
        recipient=ca_cert,
        signer_cert=signer_cert,
        signer_key=kwargs.pop("signer_key", private_key),
        transaction_id=transaction_id or os.urandom(16).hex(),
        **kwargs,
    )
    return message, nonce, private_key, signer_cert


# ----------------------------------------------------------------------------- BER


def _tlv(data: bytes, offset: int):
    tag_start = offset
    first = data[offset]
    offset += 1
    if first & 0x1F == 0x1F:
        while data[offset] & 0x80:
            offset += 1
        offset += 1
    tag = data[tag_start:offset]
    length = data[offset]
    offset += 1
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[offset:offset + count], "big")
        offset += count
    return tag, offset, offset + length


def _length(n: int) -> bytes:
    return protocol._der_length(n)


def to_indefinite(der: bytes, keep: set[bytes] = frozenset()) -> bytes:
    """Re-encode DER with indefinite lengths on every constructed element, except the
    elements whose exact encoding is in ``keep`` (signed attributes must stay as signed)."""
    out = bytearray()
    offset = 0
    while offset < len(der):
        tag, start, end = _tlv(der, offset)
        element = der[offset:end]
        if element in keep or not tag[0] & 0x20:
            out += element
        else:
            out += tag + b"\x80" + to_indefinite(der[start:end], keep) + b"\x00\x00"
        offset = end
    return bytes(out)


def der_islands(message: bytes) -> set[bytes]:
    """What a streaming BER encoder still leaves as DER: the signed attributes (they are
    signed as DER) and the embedded certificates (copied in as they were issued)."""
    signed = cms.ContentInfo.load(message)["content"]
    keep = {signed["signer_infos"][0]["signed_attrs"].dump()}
    keep |= {c.chosen.dump() for c in signed["certificates"]}
    return keep


def constructed_encrypted_content(envelope: bytes, chunk: int = 64, indefinite: bool = False) -> bytes:
    """Rewrite EncryptedContentInfo's [0] encryptedContent as a constructed [0] of OCTET
    STRING chunks (what micromdm scepclient sends, definite length)."""
    info = cms.ContentInfo.load(envelope)
    encrypted = info["content"]["encrypted_content_info"]["encrypted_content"]
    primitive = encrypted.dump()
    data = encrypted.native
    chunks = b"".join(b"\x04" + _length(len(data[i:i + chunk])) + data[i:i + chunk] for i in range(0, len(data), chunk))
    constructed = b"\xa0" + (b"\x80" + chunks + b"\x00\x00" if indefinite else _length(len(chunks)) + chunks)
    return _replace_nested(envelope, primitive, constructed)


def _replace_nested(der: bytes, old: bytes, new: bytes) -> bytes:
    """Replace one nested element and fix every enclosing definite length."""
    if der == old:
        return new
    tag, start, end = _tlv(der, 0)
    if not tag[0] & 0x20:
        return der
    children = bytearray()
    offset = start
    while offset < end:
        _, _, child_end = _tlv(der, offset)
        children += _replace_nested(der[offset:child_end], old, new)
        offset = child_end
    return tag + _length(len(children)) + bytes(children)


def universal(value):
    """An attribute value read again as its universal type, with asn1crypto (not devicegate's reader)."""
    from asn1crypto import core

    return core.load(value.dump(), strict=True)


def resign_with_envelope(message: bytes, envelope: bytes, signer_cert, signer_key, digest_name="sha256") -> bytes:
    """The same request, carrying a different (e.g. BER) envelope, signed again."""
    info = cms.ContentInfo.load(message)
    signer_info = info["content"]["signer_infos"][0]
    attrs = {a["type"].dotted: a["values"][0] for a in signer_info["signed_attrs"]}
    tx = universal(attrs[protocol.OID_TRANSACTION_ID]).native
    nonce = universal(attrs[protocol.OID_SENDER_NONCE]).native
    mtype = int(universal(attrs[protocol.OID_MESSAGE_TYPE]).native)
    import hashlib

    from asn1crypto import core

    new_attrs = [
        protocol._attr("content_type", "data"),
        protocol._attr("message_digest", hashlib.new(digest_name, envelope).digest()),
        protocol._scep_attr(protocol.OID_MESSAGE_TYPE, core.PrintableString(str(mtype))),
        protocol._scep_attr(protocol.OID_SENDER_NONCE, core.OctetString(nonce)),
        protocol._scep_attr(protocol.OID_TRANSACTION_ID, core.PrintableString(tx)),
    ]
    return protocol._sign(new_attrs, envelope, digest_name, signer_cert, signer_key)


def envelope_of(message: bytes) -> bytes:
    return cms.ContentInfo.load(message)["content"]["encap_content_info"]["content"].native
