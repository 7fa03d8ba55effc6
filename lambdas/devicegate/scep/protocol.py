"""SCEP messages (RFC 8894): parse a pkiMessage, open its envelope, build CertRep replies.

Pure functions of bytes and keys: no storage, no HTTP, no environment. Everything that
arrives here is hostile until checked; every refusal that can still be answered in SCEP is
raised as :class:`Refusal` (the handler turns it into a CertRep FAILURE), and bytes too broken
to answer at all (no signer, no transactionID, no nonce) raise :class:`Malformed` (HTTP 400).

asn1crypto parses the structure (it reads BER: indefinite lengths, constructed OCTET STRINGs);
cryptography does every key and cipher operation.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from enum import IntEnum
from functools import lru_cache

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..record import named_tuple  # immutable records without namedtuple's compile per import

# SCEP attribute OIDs (RFC 8894 section 3.2.1 and 3.2.1.4.2).
OID_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
OID_PKI_STATUS = "2.16.840.1.113733.1.9.3"
OID_FAIL_INFO = "2.16.840.1.113733.1.9.4"
OID_SENDER_NONCE = "2.16.840.1.113733.1.9.5"
OID_RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
OID_TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
OID_FAIL_INFO_TEXT = "1.3.6.1.5.5.7.24.1"

# A pkiMessage is a few KB; anything much bigger is not SCEP.
MAX_MESSAGE_BYTES = 64 * 1024
MAX_TRANSACTION_ID_BYTES = 256
MAX_FAIL_INFO_TEXT = 200


class MessageType(IntEnum):
    CERT_REP = 3
    RENEWAL_REQ = 17
    PKCS_REQ = 19
    CERT_POLL = 20  # GetCertInitial in older drafts
    GET_CERT = 21
    GET_CRL = 22


class PkiStatus(IntEnum):
    SUCCESS = 0
    FAILURE = 2
    PENDING = 3


class FailInfo(IntEnum):
    BAD_ALG = 0
    BAD_MESSAGE_CHECK = 1
    BAD_REQUEST = 2
    BAD_TIME = 3
    BAD_CERT_ID = 4


class Malformed(ValueError):
    """The bytes cannot be answered in SCEP (no signer, nonce or transactionID to echo)."""


class Refusal(Exception):
    """A request we can answer, with a CertRep FAILURE carrying this failInfo and text.

    ``reply_to`` is filled in by the parser once it knows what to echo.
    """

    def __init__(self, fail_info: FailInfo, text: str):
        super().__init__(f"{fail_info.name}: {text}")
        self.fail_info = fail_info
        self.text = text[:MAX_FAIL_INFO_TEXT]
        self.reply_to: ReplyTo | None = None


@named_tuple
class ReplyTo(tuple):
    """What every CertRep to a request must echo."""

    __slots__ = ()
    transaction_id: core.Asn1Value  # the attribute value as received, echoed byte-for-byte
    transaction_id_key: str  # sha256 of its content octets: a bounded, stable storage key
    sender_nonce: bytes
    digest_name: str  # the request's digest when allowed, else SHA-256

    def __new__(cls, transaction_id: core.Asn1Value, transaction_id_key: str, sender_nonce: bytes, digest_name: str):
        return tuple.__new__(cls, (transaction_id, transaction_id_key, sender_nonce, digest_name))


# Digest allow-list for every signature we verify or make. SHA-1 and MD5 are refused.
_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

# Content-encryption allow-list: name -> (cryptography algorithm factory, key bytes).
_CIPHERS = {
    "aes128_cbc": (algorithms.AES, 16),
    "aes192_cbc": (algorithms.AES, 24),
    "aes256_cbc": (algorithms.AES, 32),
    "tripledes_3key": (TripleDES, 24),
}
_REFUSED_CIPHERS = {"des", "rc2", "rc5"}

# Signature algorithms a signerInfo may name, mapped to the key type they need. Some
# clients put the bare key algorithm (rsaEncryption), others the combined one.
_RSA_SIG_NAMES = {"rsassa_pkcs1v15", "sha256_rsa", "sha384_rsa", "sha512_rsa"}
_EC_SIG_NAMES = {"ecdsa", "sha256_ecdsa", "sha384_ecdsa", "sha512_ecdsa"}


@named_tuple
class PkiMessage(tuple):
    """A pkiMessage whose outer signature has been verified."""

    __slots__ = ()
    message_type: int
    reply_to: ReplyTo
    signer: x509.Certificate
    envelope: bytes | None  # the pkcsPKIEnvelope (ContentInfo of EnvelopedData), if any

    def __new__(cls, message_type: int, reply_to: ReplyTo, signer: x509.Certificate, envelope: bytes | None):
        return tuple.__new__(cls, (message_type, reply_to, signer, envelope))

    @property
    def signer_spki_sha256(self) -> str:
        return spki_sha256(self.signer.public_key())


@named_tuple
class OpenedEnvelope(tuple):
    __slots__ = ()
    plaintext: bytes
    cipher_name: str

    def __new__(cls, plaintext: bytes, cipher_name: str):
        return tuple.__new__(cls, (plaintext, cipher_name))


# ---------------------------------------------------------------------------- parsing


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


def _single_value(attrs, oid, label, error):
    values = attrs.get(oid)
    if not values:
        raise _make(error, f"{label} attribute missing")
    if len(values) != 1:
        raise _make(error, f"{label} attribute must have exactly one value")
    return values[0]


def _make(error, text):
    return error(text) if error is Malformed else Refusal(FailInfo.BAD_REQUEST, text)


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
    hash_alg = _DIGESTS[digest_name]()
    try:
        key = signer.public_key()
    except (UnsupportedAlgorithm, ValueError):
        raise Refusal(FailInfo.BAD_ALG, "the signer's key type is not supported; use RSA or EC P-256/P-384") from None
    try:
        if isinstance(key, rsa.RSAPublicKey) and sig_name in _RSA_SIG_NAMES:
            key.verify(signature, signed_bytes, asym_padding.PKCS1v15(), hash_alg)
        elif isinstance(key, ec.EllipticCurvePublicKey) and sig_name in _EC_SIG_NAMES:
            key.verify(signature, signed_bytes, ec.ECDSA(hash_alg))
        else:
            raise Refusal(FailInfo.BAD_ALG, f"signature algorithm {sig_name} is not allowed for this key")
    except InvalidSignature:
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, "the pkiMessage signature does not verify") from None


# ---------------------------------------------------------------------------- BER lengths

_MAX_DEPTH = 40


def definite_lengths(data: bytes) -> bytes:
    """Rewrite indefinite lengths as definite ones and chunked (constructed) OCTET STRINGs as
    primitive ones, leaving every other octet as received; refuse nesting deeper than
    ``_MAX_DEPTH`` (this walk runs on every message, before asn1crypto sees it).

    asn1crypto reads indefinite lengths at the top of a structure but not inside every CHOICE
    (a SignerIdentifier, for one); streaming encoders emit them anywhere. Subtrees without
    either form come back byte-identical, so signatures over them still verify.
    """
    out, end, _ = _definite_one(data, 0, 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} bytes of trailing data")
    return out


def _read_header(data: bytes, offset: int) -> tuple[int, bytes, int | None, int]:
    """(first tag octet, tag bytes, length or None if indefinite, offset of contents)."""
    start = offset
    if offset >= len(data):
        raise ValueError("truncated tag")
    first = data[offset]
    offset += 1
    if first & 0x1F == 0x1F:
        while offset < len(data) and data[offset] & 0x80:
            offset += 1
        offset += 1
    if offset >= len(data):
        raise ValueError("truncated length")
    tag = data[start:offset]
    octet = data[offset]
    offset += 1
    if octet == 0x80:
        return first, tag, None, offset
    if octet & 0x80:
        count = octet & 0x7F
        if count > 4 or offset + count > len(data):
            raise ValueError("bad length")
        length = int.from_bytes(data[offset:offset + count], "big")
        offset += count
    else:
        length = octet
    if offset + length > len(data):
        raise ValueError("length runs past the data")
    return first, tag, length, offset


def _definite_one(data: bytes, offset: int, depth: int) -> tuple[bytes, int, bool]:
    """(re-encoded element, offset after it in data, whether anything changed)."""
    if depth > _MAX_DEPTH:
        raise ValueError("nesting too deep")
    start = offset
    first, tag, length, contents = _read_header(data, offset)
    constructed = bool(first & 0x20)
    if length is None and not constructed:
        raise ValueError("indefinite length on a primitive element")
    children, pos, changed = [], contents, length is None
    end = None if length is None else contents + length
    while (pos < end) if end is not None else data[pos:pos + 2] != b"\x00\x00":
        if not constructed:
            pos = end
            break
        child, pos, child_changed = _definite_one(data, pos, depth + 1)
        children.append(child)
        changed |= child_changed
    if end is None:
        pos += 2  # the end-of-contents octets
    elif pos != end:
        raise ValueError("child runs past its parent")
    if first == 0x24:  # a chunked OCTET STRING: its value is the concatenation of the chunks
        octets = b"".join(_primitive_octets(child) for child in children)
        return b"\x04" + _der_length(len(octets)) + octets, pos, True
    if not changed:
        return data[start:pos], pos, False
    body = b"".join(children)
    return tag + _der_length(len(body)) + body, pos, True


def _primitive_octets(element: bytes) -> bytes:
    first, _, length, contents = _read_header(element, 0)
    if first != 0x04:
        raise ValueError("a chunked OCTET STRING holds something other than OCTET STRINGs")
    return element[contents:contents + length]

def _children(data: bytes) -> list[bytes]:
    """The encoded children of one definite-length constructed element."""
    _, _, length, pos = _read_header(data, 0)
    end = pos + length
    result = []
    while pos < end:
        _, _, child_len, child_contents = _read_header(data, pos)
        result.append(data[pos:child_contents + child_len])
        pos = child_contents + child_len
    return result


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


def _set_header(length: int) -> bytes:
    return b"\x31" + _der_length(length)


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


# ---------------------------------------------------------------------------- envelopes


# One answer for every failure from decryption up to a CSR whose self-signature verifies:
# anything finer would let an attacker learn, block by block, whether a forged ciphertext
# decrypted to valid padding (a padding oracle).
UNREADABLE_ENVELOPE = "could not decrypt the pkcsPKIEnvelope"


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


def _ski(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def seal_envelope(plaintext: bytes, recipient: x509.Certificate, cipher_name: str) -> bytes:
    """Encrypt to the requester's certificate (key transport, PKCS#1 v1.5)."""
    factory, key_len = _CIPHERS[cipher_name]
    public_key = recipient.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise Refusal(FailInfo.BAD_ALG, "the signer's key is not RSA, so the reply cannot be encrypted to it")
    content_key = os.urandom(key_len)
    iv = os.urandom(factory.block_size // 8)
    padder = padding.PKCS7(factory.block_size).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(factory(content_key), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(padded) + encryptor.finalize()
    ktri = _seq(  # KeyTransRecipientInfo v0, addressed by issuer and serial
        _INTEGER_0,
        _issuer_and_serial(recipient.public_bytes(Encoding.DER), recipient.serial_number),
        _ALG_RSA_ENCRYPTION,
        _tlv(0x04, public_key.encrypt(content_key, asym_padding.PKCS1v15())),
    )
    encrypted_content_info = _seq(
        _OID_DATA,
        _seq(_CIPHER_OIDS[cipher_name], _tlv(0x04, iv)),
        _tlv(0x80, encrypted),  # [0] IMPLICIT OCTET STRING
    )
    enveloped = _seq(_INTEGER_0, _set_of([ktri]), encrypted_content_info)
    return _seq(_OID_ENVELOPED_DATA, _tlv(0xA0, enveloped))


def degenerate_certs_only(certificates: list[x509.Certificate]) -> bytes:
    """A certs-only SignedData (no signers, no content) holding exactly these certificates."""
    signed = _seq(
        _INTEGER_1,
        _EMPTY_SET,  # digestAlgorithms
        _seq(_OID_DATA),  # encapContentInfo without content
        _tlv(0xA0, b"".join(sorted(c.public_bytes(Encoding.DER) for c in certificates))),
        _EMPTY_SET,  # signerInfos
    )
    return _seq(_OID_SIGNED_DATA, _tlv(0xA0, signed))


# ---------------------------------------------------------------------------- replies


def build_cert_rep(
    reply_to: ReplyTo,
    *,
    status: PkiStatus,
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    issued: x509.Certificate | None = None,
    recipient: x509.Certificate | None = None,
    cipher_name: str = "aes256_cbc",
    fail_info: FailInfo | None = None,
    fail_text: str | None = None,
) -> bytes:
    """A CertRep signed by the CA.

    SUCCESS carries the issued certificate alone, in a certs-only SignedData encrypted to the
    requester. The nonce rules of RFC 8894 3.2.1.5: recipientNonce is the request's
    senderNonce and senderNonce is fresh.
    """
    if status is PkiStatus.SUCCESS:
        if issued is None or recipient is None:
            raise ValueError("SUCCESS needs the issued certificate and the requester's certificate")
        content = seal_envelope(degenerate_certs_only([issued]), recipient, cipher_name)
    else:
        # No pkcsPKIEnvelope, but an empty eContent rather than none: OpenSSL's PKCS7_verify
        # (certmonger) treats absent content as detached and refuses the reply.
        content = b""
    digest_name = reply_to.digest_name
    attrs = [
        _attribute(_OID_CONTENT_TYPE_ATTR, _OID_DATA),
        _attribute(_OID_MESSAGE_DIGEST_ATTR, _tlv(0x04, hashlib.new(digest_name, content).digest())),
        _attribute(_SCEP_OIDS[OID_MESSAGE_TYPE], _printable(str(int(MessageType.CERT_REP)))),
        _attribute(_SCEP_OIDS[OID_PKI_STATUS], _printable(str(int(status)))),
        _attribute(_SCEP_OIDS[OID_SENDER_NONCE], _tlv(0x04, os.urandom(16))),
        _attribute(_SCEP_OIDS[OID_RECIPIENT_NONCE], _tlv(0x04, reply_to.sender_nonce)),
        _attribute(_SCEP_OIDS[OID_TRANSACTION_ID], reply_to.transaction_id.dump()),  # as received
    ]
    if status is PkiStatus.FAILURE:
        code = FailInfo.BAD_REQUEST if fail_info is None else fail_info
        attrs.append(_attribute(_SCEP_OIDS[OID_FAIL_INFO], _printable(str(int(code)))))
        if fail_text:
            text = fail_text[:MAX_FAIL_INFO_TEXT].encode("utf-8")
            attrs.append(_attribute(_SCEP_OIDS[OID_FAIL_INFO_TEXT], _tlv(0x0C, text)))
    return _sign(attrs, content, digest_name, ca_cert, ca_key)


def _sign(attrs: list[bytes], content, digest_name, signer_cert: x509.Certificate, signer_key, extra_certs=()) -> bytes:
    """A SignedData over ``content`` with these signed attributes: encoded Attributes, or
    asn1crypto CMSAttribute values (the tests build unusual ones that way)."""
    signed_attrs = b"".join(sorted(a if isinstance(a, bytes) else a.dump() for a in attrs))  # SET OF, DER order
    to_sign = _set_header(len(signed_attrs)) + signed_attrs
    hash_alg = _DIGESTS[digest_name]()
    if isinstance(signer_key, rsa.RSAPrivateKey):
        signature = signer_key.sign(to_sign, asym_padding.PKCS1v15(), hash_alg)
        sig_alg = _ALG_RSA_ENCRYPTION  # rsaEncryption, as clients expect
    else:
        signature = signer_key.sign(to_sign, ec.ECDSA(hash_alg))
        sig_alg = _ECDSA_ALGS[digest_name]
    signer_der, signer_id = _signer_parts(signer_cert)
    digest_alg = _DIGEST_ALGS[digest_name]
    encap = _seq(_OID_DATA) if content is None else _seq(_OID_DATA, _tlv(0xA0, _tlv(0x04, content)))
    certificates = [signer_der, *(c.public_bytes(Encoding.DER) for c in extra_certs)]
    signer_info = _seq(_INTEGER_1, signer_id, digest_alg, _tlv(0xA0, signed_attrs), sig_alg, _tlv(0x04, signature))
    signed = _seq(
        _INTEGER_1,
        _set_of([digest_alg]),
        encap,
        _tlv(0xA0, b"".join(sorted(certificates))),  # [0] IMPLICIT SET OF Certificate
        _set_of([signer_info]),
    )
    return _seq(_OID_SIGNED_DATA, _tlv(0xA0, signed))


# ---------------------------------------------------------------------------- DER building
# Replies are written as DER directly: their shape is fixed, and building them through
# asn1crypto's object model cost several times the RSA operations of an enrollment.


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + _der_length(len(body)) + body


def _seq(*parts: bytes) -> bytes:
    return _tlv(0x30, b"".join(parts))


def _set_of(encodings) -> bytes:
    return _tlv(0x31, b"".join(sorted(encodings)))  # DER: a SET OF in ascending order


def _attribute(oid: bytes, value: bytes) -> bytes:
    return _seq(oid, _tlv(0x31, value))


def _printable(text: str) -> bytes:
    return _tlv(0x13, text.encode("latin-1"))  # PrintableString, as asn1crypto encodes it


def _oid(dotted: str) -> bytes:
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray()
    for arc in (arcs[0] * 40 + arcs[1], *arcs[2:]):
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _der_integer(value: int) -> bytes:
    size = (value if value >= 0 else ~value).bit_length() // 8 + 1  # minimal two's complement
    return _tlv(0x02, value.to_bytes(size, "big", signed=True))


def _issuer_der(certificate_der: bytes) -> bytes:
    """A certificate's issuer Name, as encoded in it."""
    fields = _children(_children(certificate_der)[0])  # TBSCertificate
    return fields[3] if fields[0][0] == 0xA0 else fields[2]  # after [0] version, serial, signature


def _issuer_and_serial(certificate_der: bytes, serial: int) -> bytes:
    return _seq(_issuer_der(certificate_der), _der_integer(serial))


@lru_cache(maxsize=8)
def _signer_parts(certificate: x509.Certificate) -> tuple[bytes, bytes]:
    """(DER, IssuerAndSerialNumber) of a signing certificate: the CA's, once per container."""
    der = certificate.public_bytes(Encoding.DER)
    return der, _issuer_and_serial(der, certificate.serial_number)


@lru_cache(maxsize=8)
def _ca_identity(certificate: x509.Certificate) -> tuple[asn1_x509.Name, bytes, int, bytes | None]:
    """The CA certificate as a RecipientIdentifier names it: (issuer, its DER, serial, SKI)."""
    issuer = _issuer_der(_signer_parts(certificate)[0])
    return asn1_x509.Name.load(issuer), issuer, certificate.serial_number, _ski(certificate)


_INTEGER_0 = _der_integer(0)
_INTEGER_1 = _der_integer(1)
_EMPTY_SET = b"\x31\x00"
_OID_DATA = _oid("1.2.840.113549.1.7.1")
_OID_SIGNED_DATA = _oid("1.2.840.113549.1.7.2")
_OID_ENVELOPED_DATA = _oid("1.2.840.113549.1.7.3")
_OID_CONTENT_TYPE_ATTR = _oid("1.2.840.113549.1.9.3")
_OID_MESSAGE_DIGEST_ATTR = _oid("1.2.840.113549.1.9.4")
_SCEP_OIDS = {oid: _oid(oid) for oid in (OID_MESSAGE_TYPE, OID_PKI_STATUS, OID_FAIL_INFO, OID_SENDER_NONCE,
                                         OID_RECIPIENT_NONCE, OID_TRANSACTION_ID, OID_FAIL_INFO_TEXT)}
_ALG_RSA_ENCRYPTION = _seq(_oid("1.2.840.113549.1.1.1"), b"\x05\x00")
_DIGEST_ALGS = {
    "sha256": _seq(_oid("2.16.840.1.101.3.4.2.1"), b"\x05\x00"),
    "sha384": _seq(_oid("2.16.840.1.101.3.4.2.2"), b"\x05\x00"),
    "sha512": _seq(_oid("2.16.840.1.101.3.4.2.3"), b"\x05\x00"),
}
_ECDSA_ALGS = {
    "sha256": _seq(_oid("1.2.840.10045.4.3.2")),
    "sha384": _seq(_oid("1.2.840.10045.4.3.3")),
    "sha512": _seq(_oid("1.2.840.10045.4.3.4")),
}
_CIPHER_OIDS = {
    "aes128_cbc": _oid("2.16.840.1.101.3.4.1.2"),
    "aes192_cbc": _oid("2.16.840.1.101.3.4.1.22"),
    "aes256_cbc": _oid("2.16.840.1.101.3.4.1.42"),
    "tripledes_3key": _oid("1.2.840.113549.3.7"),
}


def _attr(name, value):
    return cms.CMSAttribute({"type": name, "values": [value]})


def _scep_attr(oid: str, value: core.Asn1Value):
    return cms.CMSAttribute({"type": oid, "values": [value]})


# ---------------------------------------------------------------------------- client side
# The requester's half of the protocol: used by the demo when no SCEP client program is
# installed, and by the tests to build every shape of request a real client might send.


def build_pki_message(
    *,
    message_type: MessageType,
    inner: bytes,
    recipient: x509.Certificate,
    signer_cert: x509.Certificate,
    signer_key,
    transaction_id: str,
    sender_nonce: bytes | None = None,
    cipher_name: str = "aes256_cbc",
    digest_name: str = "sha256",
) -> tuple[bytes, bytes]:
    """A signed, enveloped request. Returns (message DER, senderNonce)."""
    nonce = sender_nonce if sender_nonce is not None else os.urandom(16)
    envelope = seal_envelope(inner, recipient, cipher_name)
    attrs = [
        _attribute(_OID_CONTENT_TYPE_ATTR, _OID_DATA),
        _attribute(_OID_MESSAGE_DIGEST_ATTR, _tlv(0x04, hashlib.new(digest_name, envelope).digest())),
        _attribute(_SCEP_OIDS[OID_MESSAGE_TYPE], _printable(str(int(message_type)))),
        _attribute(_SCEP_OIDS[OID_SENDER_NONCE], _tlv(0x04, nonce)),
        _attribute(_SCEP_OIDS[OID_TRANSACTION_ID], _printable(transaction_id)),
    ]
    return _sign(attrs, envelope, digest_name, signer_cert, signer_key), nonce


@named_tuple
class CertRep(tuple):
    __slots__ = ()
    status: PkiStatus
    fail_info: FailInfo | None
    fail_text: str | None
    transaction_id: bytes
    recipient_nonce: bytes
    sender_nonce: bytes
    certificates: list[x509.Certificate]
    signer: x509.Certificate
    cipher_name: str | None

    def __new__(cls, status: PkiStatus, fail_info: FailInfo | None, fail_text: str | None, transaction_id: bytes,
                recipient_nonce: bytes, sender_nonce: bytes, certificates: list[x509.Certificate],
                signer: x509.Certificate, cipher_name: str | None):
        return tuple.__new__(cls, (status, fail_info, fail_text, transaction_id, recipient_nonce, sender_nonce,
                                   certificates, signer, cipher_name))


def parse_cert_rep(
    data: bytes, *, ca_cert: x509.Certificate, requester_key=None
) -> CertRep:
    """Verify a CertRep against the CA certificate we trust and open it with our key."""
    info = cms.ContentInfo.load(data, strict=True)
    signed = info["content"]
    signer_info = signed["signer_infos"][0]
    attrs = _attribute_map(signer_info["signed_attrs"])
    certs = [c.chosen for c in (signed["certificates"] or []) if c.name == "certificate"]
    signer = x509.load_der_x509_certificate(_find_signer(signer_info["sid"], certs).dump())
    if signer.public_bytes(Encoding.DER) != ca_cert.public_bytes(Encoding.DER):
        raise ValueError("CertRep is not signed by the CA we trust")
    content = signed["encap_content_info"]["content"].native
    digest_name = signer_info["digest_algorithm"]["algorithm"].native
    sig_name = signer_info["signature_algorithm"]["algorithm"].native
    _verify_signer_info(signer_info, attrs, ca_cert, digest_name, sig_name, content or b"")

    def text(oid):
        values = attrs.get(oid)
        return bytes(values[0].contents) if values else None

    status = PkiStatus(int(text(OID_PKI_STATUS)))
    fail_info = FailInfo(int(text(OID_FAIL_INFO))) if text(OID_FAIL_INFO) is not None else None
    fail_text = text(OID_FAIL_INFO_TEXT)
    issued: list[x509.Certificate] = []
    cipher_name = None
    if status is PkiStatus.SUCCESS:
        env = cms.ContentInfo.load(content)["content"]
        ri = env["recipient_infos"][0].chosen
        key = requester_key.decrypt(ri["encrypted_key"].native, asym_padding.PKCS1v15())
        eci = env["encrypted_content_info"]
        cipher_name = eci["content_encryption_algorithm"]["algorithm"].native
        factory, _ = _CIPHERS[cipher_name]
        iv = eci["content_encryption_algorithm"]["parameters"].native
        decryptor = Cipher(factory(key), modes.CBC(iv)).decryptor()
        padded = decryptor.update(eci["encrypted_content"].native) + decryptor.finalize()
        unpadder = padding.PKCS7(factory.block_size).unpadder()
        degenerate = cms.ContentInfo.load(unpadder.update(padded) + unpadder.finalize())["content"]
        issued = [x509.load_der_x509_certificate(c.chosen.dump()) for c in degenerate["certificates"]]
    return CertRep(
        status=status,
        fail_info=fail_info,
        fail_text=fail_text.decode("utf-8") if fail_text is not None else None,
        transaction_id=text(OID_TRANSACTION_ID),
        recipient_nonce=_octets(attrs[OID_RECIPIENT_NONCE][0], "recipientNonce", Malformed),
        sender_nonce=_octets(attrs[OID_SENDER_NONCE][0], "senderNonce", Malformed),
        certificates=issued,
        signer=signer,
        cipher_name=cipher_name,
    )


# ---------------------------------------------------------------------------- helpers



def spki_sha256(public_key) -> str:
    return hashlib.sha256(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


# Digest names accepted, exposed for the authority's CSR checks.
ALLOWED_DIGESTS = frozenset(_DIGESTS)
ALLOWED_CIPHERS = frozenset(_CIPHERS)
