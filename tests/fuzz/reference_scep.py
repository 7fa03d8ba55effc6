"""The SCEP request parser devicegate used before its own DER reader (asn1crypto's object
model), kept as a reference (what it shares with today's module, BER rewriting included, is
imported from there): tests/fuzz/test_fuzz_scep_reader.py checks on mutated requests that
the reader in devicegate.scep.der never accepts what this refuses, and reads what both accept
the same way. Not used by devicegate itself."""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.serialization import Encoding

from devicegate.scep.protocol import (MAX_MESSAGE_BYTES, MAX_TRANSACTION_ID_BYTES, OID_MESSAGE_TYPE, OID_SENDER_NONCE,
                                      OID_TRANSACTION_ID, UNREADABLE_ENVELOPE, FailInfo, Malformed, OpenedEnvelope,
                                      PkiMessage, Refusal, ReplyTo, _CIPHERS, _DIGESTS, _EC_SIG_NAMES, _RSA_SIG_NAMES,
                                      _REFUSED_CIPHERS, _MAX_DEPTH, _children, _read_header, _der_length, _issuer_der, _make, _set_header,
                                      _short, _ski, _verify_signature, definite_lengths)


def _single_value(attrs, oid, label, error):
    values = attrs.get(oid)
    if not values:
        raise _make(error, f"{label} attribute missing")
    if len(values) != 1:
        raise _make(error, f"{label} attribute must have exactly one value")
    return values[0]

def parse_pki_message(data: bytes) -> PkiMessage:
    """Parse and verify the outer SignedData of a request.

    Raises Malformed when nothing can be echoed back, Refusal otherwise.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise Malformed(f"pkiMessage of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        info = cms.ContentInfo.load(definite_lengths(data), strict=True)
        if info["content_type"].native != "signed_data":
            raise Malformed("pkiMessage is not a CMS SignedData")
        signed = info["content"]
        signer_infos = signed["signer_infos"]
        if len(signer_infos) != 1:
            raise Malformed(f"pkiMessage has {len(signer_infos)} signerInfos, expected 1")
        signer_info = signer_infos[0]
        attrs = _attribute_map(signer_info["signed_attrs"])
    except Malformed:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError) as exc:
        raise Malformed(f"pkiMessage is not valid DER/BER CMS: {_short(exc)}") from None

    # What we must echo in any answer comes first: without these there is no SCEP reply.
    tx_value = _single_value(attrs, OID_TRANSACTION_ID, "transactionID", Malformed)
    tx_content = _printable_contents(tx_value, "transactionID", Malformed)
    if not tx_content or len(tx_content) > MAX_TRANSACTION_ID_BYTES:
        raise Malformed("transactionID is empty or too long")
    nonce = _octets(_single_value(attrs, OID_SENDER_NONCE, "senderNonce", Malformed), "senderNonce", Malformed)
    if len(nonce) != 16:
        raise Malformed(f"senderNonce must be 16 octets, got {len(nonce)}")

    try:
        digest_name = signer_info["digest_algorithm"]["algorithm"].native
    except (ValueError, TypeError, KeyError):
        digest_name = None
    reply_to = ReplyTo(
        transaction_id=tx_value,
        transaction_id_key=hashlib.sha256(tx_content).hexdigest(),
        sender_nonce=nonce,
        digest_name=digest_name if digest_name in _DIGESTS else "sha256",
    )
    # From here on, every problem is answered with a CertRep FAILURE.
    try:
        return _verify_request(signed, signer_info, attrs, reply_to, digest_name)
    except Refusal as refusal:
        refusal.reply_to = reply_to
        raise


def _verify_request(signed, signer_info, attrs, reply_to: ReplyTo, digest_name) -> PkiMessage:
    msg_type_text = _printable_contents(
        _single_value(attrs, OID_MESSAGE_TYPE, "messageType", Refusal), "messageType", Refusal
    )
    if not msg_type_text.isdigit() or len(msg_type_text) > 3:
        raise Refusal(FailInfo.BAD_REQUEST, "messageType is not a number")
    message_type = int(msg_type_text)

    try:
        sig_name = signer_info["signature_algorithm"]["algorithm"].native
        certs = [c.chosen for c in (signed["certificates"] or []) if c.name == "certificate"]
        signer_asn1 = _find_signer(signer_info["sid"], certs)
        signer = x509.load_der_x509_certificate(signer_asn1.dump())
        encap = signed["encap_content_info"]
        content = encap["content"]
        envelope = None if content.native is None else content.native
        econtent_type = encap["content_type"].native
    except Refusal:
        raise
    except x509.InvalidVersion as exc:  # not a ValueError
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, f"the signer's certificate has an unsupported version: {_short(exc)}") from None
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError) as exc:
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, f"signed content unreadable: {_short(exc)}") from None

    if digest_name not in _DIGESTS:
        raise Refusal(FailInfo.BAD_ALG, f"digest algorithm {digest_name} is not allowed; use SHA-256")
    if econtent_type != "data":
        raise Refusal(FailInfo.BAD_REQUEST, f"encapsulated content type {econtent_type} is not data")
    _verify_signer_info(signer_info, attrs, signer, digest_name, sig_name, envelope or b"")

    return PkiMessage(message_type=message_type, reply_to=reply_to, signer=signer, envelope=envelope)


def _attribute_map(signed_attrs) -> dict[str, list]:
    if not signed_attrs:
        raise Malformed("signerInfo has no signed attributes")
    result: dict[str, list] = {}
    for attr in signed_attrs:
        oid = attr["type"].dotted
        if oid in result:
            raise Malformed(f"signed attribute {oid} appears twice")
        result[oid] = list(attr["values"])
    return result


def _universal(value, label, error):
    """Re-read an attribute value as its universal type, whatever spec asn1crypto gave it."""
    try:
        return core.load(value.dump(), strict=True)
    except (ValueError, TypeError):
        raise _make(error, f"{label} is not valid DER") from None


def _printable_contents(value, label, error) -> bytes:
    # transactionID and messageType are PrintableString; accept the other string types
    # clients use, but echo transactionID exactly as received.
    parsed = _universal(value, label, error)
    if not isinstance(parsed, (core.PrintableString, core.UTF8String, core.IA5String)):
        raise _make(error, f"{label} is not a PrintableString")
    return bytes(parsed.contents or b"")


def _octets(value, label, error) -> bytes:
    parsed = _universal(value, label, error)
    if not isinstance(parsed, core.OctetString):
        raise _make(error, f"{label} is not an OCTET STRING")
    return bytes(parsed.contents or b"")


def _find_signer(sid, certs) -> asn1_x509.Certificate:
    if sid.name == "issuer_and_serial_number":
        want_issuer = sid.chosen["issuer"]
        want_serial = sid.chosen["serial_number"].native
        want_der = want_issuer.dump()
        for cert in certs:
            if cert.serial_number == want_serial and _same_name(cert.issuer, want_issuer, want_der):
                return cert
    elif sid.name == "subject_key_identifier":
        want = sid.chosen.native
        for cert in certs:
            if cert.key_identifier == want:
                return cert
    raise Refusal(FailInfo.BAD_MESSAGE_CHECK, "the signer's certificate is not in the message")


def _same_name(name: asn1_x509.Name, other: asn1_x509.Name, other_der: bytes) -> bool:
    # The same octets are the same name; otherwise asn1crypto's comparison (RFC 5280 7.1
    # string preparation), which is costly, decides.
    return name.dump() == other_der or name == other


def _verify_signer_info(signer_info, attrs, signer, digest_name, sig_name, content: bytes):
    digest = hashlib.new(digest_name, content).digest()
    md_values = attrs.get("1.2.840.113549.1.9.4")
    ct_values = attrs.get("1.2.840.113549.1.9.3")
    if not md_values or not ct_values:
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, "contentType or messageDigest attribute missing")
    if _octets(md_values[0], "messageDigest", Refusal) != digest:
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, "messageDigest does not match the content")
    content_type = _universal(ct_values[0], "contentType", Refusal)
    if not isinstance(content_type, core.ObjectIdentifier) or content_type.dotted != "1.2.840.113549.1.7.1":
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, "contentType attribute is not data")

    # The signature covers the attributes re-tagged as SET OF, over the octets received
    # (RFC 5652 5.4); re-encoding them could change what was signed.
    signed_attrs = signer_info["signed_attrs"]
    signed_bytes = _set_header(len(signed_attrs.contents)) + signed_attrs.contents
    signature = signer_info["signature"].native
    _verify_signature(signer, sig_name, digest_name, signed_bytes, signature)


def _rewrap(element: bytes, children: list[bytes]) -> bytes:
    _, tag, _, _ = _read_header(element, 0)
    body = b"".join(children)
    return tag + _der_length(len(body)) + body


def _string_octets(element: bytes, depth: int = 0) -> bytes:
    """The octets of a primitive or constructed (chunked) OCTET STRING."""
    if depth > _MAX_DEPTH:
        raise ValueError("nesting too deep")
    first, _, length, pos = _read_header(element, 0)
    if not first & 0x20:
        return element[pos:pos + length]
    return b"".join(_string_octets(child, depth + 1) for child in _children(element))


def primitive_encrypted_content(envelope: bytes) -> bytes:
    """Make EncryptedContentInfo's [0] encryptedContent primitive.

    BER lets it be a constructed [0] of OCTET STRING chunks (micromdm scepclient sends that),
    which asn1crypto will not read as an IMPLICIT OCTET STRING.
    """
    content_info = _children(envelope)  # contentType, [0] content
    if len(content_info) != 2:
        return envelope
    explicit = content_info[1]
    enveloped = _children(explicit)[0]
    parts = _children(enveloped)
    for index, part in enumerate(parts):
        if part[0] != 0x30 or index == 0:
            continue
        eci = _children(part)
        if len(eci) == 3 and eci[2][0] == 0xA0:  # contentType, algorithm, constructed [0]
            octets = _string_octets(eci[2])
            eci[2] = b"\x80" + _der_length(len(octets)) + octets
            parts[index] = _rewrap(part, eci)
            new_enveloped = _rewrap(enveloped, parts)
            return _rewrap(envelope, [content_info[0], _rewrap(explicit, [new_enveloped])])
    return envelope


def envelope_cipher(envelope: bytes) -> str:
    """The content-encryption algorithm of an envelope, checked against the allow-list, without
    decrypting it (a CertPoll's envelope carries nothing we need)."""
    try:
        info = cms.ContentInfo.load(primitive_encrypted_content(definite_lengths(envelope)), strict=True)
        name = info["content"]["encrypted_content_info"]["content_encryption_algorithm"]["algorithm"].native
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError) as exc:
        raise Refusal(FailInfo.BAD_REQUEST, f"pkcsPKIEnvelope is not valid CMS: {_short(exc)}") from None
    if name in _REFUSED_CIPHERS or name not in _CIPHERS:
        raise Refusal(FailInfo.BAD_ALG, f"content encryption {name} is not supported; use AES")
    return name


def open_envelope(envelope: bytes, ca_cert: x509.Certificate, ca_key: rsa.RSAPrivateKey) -> OpenedEnvelope:
    """Decrypt the pkcsPKIEnvelope addressed to our CA."""
    try:
        info = cms.ContentInfo.load(primitive_encrypted_content(definite_lengths(envelope)), strict=True)
        if info["content_type"].native != "enveloped_data":
            raise Refusal(FailInfo.BAD_REQUEST, "pkcsPKIEnvelope is not a CMS EnvelopedData")
        enveloped = info["content"]
        recipients = [ri.chosen for ri in enveloped["recipient_infos"] if ri.name == "ktri"]
        eci = enveloped["encrypted_content_info"]
        cipher_name = eci["content_encryption_algorithm"]["algorithm"].native
        encrypted = eci["encrypted_content"].native
        iv_value = eci["content_encryption_algorithm"]["parameters"]
    except Refusal:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError) as exc:
        raise Refusal(FailInfo.BAD_REQUEST, f"pkcsPKIEnvelope is not valid CMS: {_short(exc)}") from None

    if cipher_name in _REFUSED_CIPHERS or cipher_name not in _CIPHERS:
        raise Refusal(FailInfo.BAD_ALG, f"content encryption {cipher_name} is not supported; use AES")
    try:  # asn1crypto parses lazily: a malformed recipient surfaces only when read
        recipient = _our_recipient(recipients, ca_cert)
        key_alg = recipient["key_encryption_algorithm"]["algorithm"].native
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError) as exc:
        raise Refusal(FailInfo.BAD_REQUEST, f"pkcsPKIEnvelope recipient is not valid CMS: {_short(exc)}") from None
    if key_alg not in ("rsaes_pkcs1v15", "rsa"):
        raise Refusal(FailInfo.BAD_ALG, f"key encryption {key_alg} is not supported; use rsaEncryption")

    factory, key_len = _CIPHERS[cipher_name]
    try:
        iv = iv_value.parse(core.OctetString).native if isinstance(iv_value, core.Any) else iv_value.native
    except (ValueError, TypeError):
        iv = None
    if not isinstance(iv, bytes) or len(iv) != factory.block_size // 8:
        raise Refusal(FailInfo.BAD_REQUEST, "content encryption IV is missing or has the wrong size")
    if not encrypted or len(encrypted) % (factory.block_size // 8):
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, UNREADABLE_ENVELOPE)

    # One answer for every decryption failure: a different one would be a padding oracle.
    try:
        content_key = ca_key.decrypt(recipient["encrypted_key"].native, asym_padding.PKCS1v15())
        if len(content_key) != key_len:
            raise ValueError("content key length")
        decryptor = Cipher(factory(content_key), modes.CBC(iv)).decryptor()
        padded = decryptor.update(encrypted) + decryptor.finalize()
        unpadder = padding.PKCS7(factory.block_size).unpadder()
        plaintext = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, UNREADABLE_ENVELOPE) from None
    return OpenedEnvelope(plaintext=plaintext, cipher_name=cipher_name)


def _our_recipient(recipients, ca_cert: x509.Certificate):
    ca_issuer, ca_issuer_der, ca_serial, ca_ski = _ca_identity(ca_cert)
    for recipient in recipients:
        rid = recipient["rid"]
        if rid.name == "issuer_and_serial_number":
            if rid.chosen["serial_number"].native == ca_serial and _same_name(rid.chosen["issuer"], ca_issuer, ca_issuer_der):
                return recipient
        elif rid.name == "subject_key_identifier" and ca_ski is not None:
            if hmac.compare_digest(rid.chosen.native, ca_ski):
                return recipient
    # Some clients address the envelope loosely; with a single key-transport recipient,
    # decryption itself is the proof that it was meant for us.
    if len(recipients) == 1:
        return recipients[0]
    raise Refusal(FailInfo.BAD_CERT_ID, "the pkcsPKIEnvelope is not addressed to this CA")


@lru_cache(maxsize=8)
def _ca_identity(certificate: x509.Certificate) -> tuple[asn1_x509.Name, bytes, int, bytes | None]:
    """The CA certificate as a RecipientIdentifier names it: (issuer, its DER, serial, SKI)."""
    issuer = _issuer_der(certificate.public_bytes(Encoding.DER))
    return asn1_x509.Name.load(issuer), issuer, certificate.serial_number, _ski(certificate)


