"""SCEP messages (RFC 8894): parse a pkiMessage, open its envelope, build CertRep replies.

Pure functions of bytes and keys: no storage, no HTTP, no environment. Everything that
arrives here is hostile until checked; every refusal that can still be answered in SCEP is
raised as :class:`Refusal` (the handler turns it into a CertRep FAILURE), and bytes too broken
to answer at all (no signer, no transactionID, no nonce) raise :class:`Malformed` (HTTP 400).

Requests are read with the small DER reader in ``der`` (after ``definite_lengths`` has rewritten
BER's indefinite lengths and constructed OCTET STRINGs), replies are written as DER directly;
cryptography does every key and cipher operation.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from enum import IntEnum
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..record import named_tuple  # immutable records without namedtuple's compile per import
from . import der

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
    transaction_id: bytes  # the attribute value (a whole element) as received, echoed byte-for-byte
    transaction_id_key: str  # sha256 of its content octets: a bounded, stable storage key
    sender_nonce: bytes
    digest_name: str  # the request's digest when allowed, else SHA-256

    def __new__(cls, transaction_id: bytes, transaction_id_key: str, sender_nonce: bytes, digest_name: str):
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
# Requests are read with devicegate.scep.der over the octets received (after definite_lengths):
# offsets, not objects, and only the fields SCEP needs.

_OID_DATA_BODY = der.oid("1.2.840.113549.1.7.1")
_OID_SIGNED_DATA_BODY = der.oid("1.2.840.113549.1.7.2")
_OID_ENVELOPED_DATA_BODY = der.oid("1.2.840.113549.1.7.3")
_OID_RSA_ENCRYPTION_BODY = der.oid("1.2.840.113549.1.1.1")
_CONTENT_TYPE_ATTR, _MESSAGE_DIGEST_ATTR = "1.2.840.113549.1.9.3", "1.2.840.113549.1.9.4"


def _names(*pairs: tuple[str, str]) -> dict[bytes, str]:
    return {der.oid(dotted): name for dotted, name in pairs}


# The names messages use for algorithms and content types (those clients have always seen).
_CONTENT_TYPE_NAMES = _names(("1.2.840.113549.1.7.1", "data"), ("1.2.840.113549.1.7.2", "signed_data"),
                             ("1.2.840.113549.1.7.3", "enveloped_data"), ("1.2.840.113549.1.7.5", "digested_data"),
                             ("1.2.840.113549.1.7.6", "encrypted_data"))
_DIGEST_NAMES = _names(("2.16.840.1.101.3.4.2.1", "sha256"), ("2.16.840.1.101.3.4.2.2", "sha384"),
                       ("2.16.840.1.101.3.4.2.3", "sha512"), ("2.16.840.1.101.3.4.2.4", "sha224"),
                       ("1.3.14.3.2.26", "sha1"), ("1.2.840.113549.2.5", "md5"))
_SIGNATURE_NAMES = _names(("1.2.840.113549.1.1.1", "rsassa_pkcs1v15"), ("1.2.840.113549.1.1.11", "sha256_rsa"),
                          ("1.2.840.113549.1.1.12", "sha384_rsa"), ("1.2.840.113549.1.1.13", "sha512_rsa"),
                          ("1.2.840.113549.1.1.5", "sha1_rsa"), ("1.2.840.113549.1.1.4", "md5_rsa"),
                          ("1.2.840.113549.1.1.10", "rsassa_pss"), ("1.2.840.10045.4", "ecdsa"),
                          ("1.2.840.10045.4.3.2", "sha256_ecdsa"), ("1.2.840.10045.4.3.3", "sha384_ecdsa"),
                          ("1.2.840.10045.4.3.4", "sha512_ecdsa"), ("1.2.840.10045.4.1", "sha1_ecdsa"))
_CIPHER_NAMES = _names(("2.16.840.1.101.3.4.1.2", "aes128_cbc"), ("2.16.840.1.101.3.4.1.22", "aes192_cbc"),
                       ("2.16.840.1.101.3.4.1.42", "aes256_cbc"), ("1.2.840.113549.3.7", "tripledes_3key"),
                       ("1.3.14.3.2.7", "des"), ("1.2.840.113549.3.2", "rc2"), ("1.2.840.113549.3.9", "rc5"))
_KEY_ENCRYPTION_NAMES = _names(("1.2.840.113549.1.1.1", "rsaes_pkcs1v15"), ("1.2.840.113549.1.1.7", "rsaes_oaep"))
# Attribute types by their OID octets, so the common ones need no decoding.
_ATTRIBUTE_OIDS = {der.oid(dotted): dotted for dotted in (
    _CONTENT_TYPE_ATTR, _MESSAGE_DIGEST_ATTR, "1.2.840.113549.1.9.5", OID_MESSAGE_TYPE, OID_PKI_STATUS, OID_FAIL_INFO,
    OID_SENDER_NONCE, OID_RECIPIENT_NONCE, OID_TRANSACTION_ID, OID_FAIL_INFO_TEXT)}
_STRING_TAGS = (der.PRINTABLE_STRING, der.UTF8_STRING, der.IA5_STRING)
_PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError)
# What cryptography raises, besides ValueError, when it reads a certificate's or CSR's extensions
# (neither is a ValueError): two extensions of one type, an x400Address or ediPartyName.
EXTENSION_ERRORS = (x509.DuplicateExtension, x509.UnsupportedGeneralNameType)


def _name(names: dict[bytes, str], oid_octets: bytes) -> str:
    return names.get(oid_octets) or der.dotted(oid_octets)


@named_tuple
class _Signed(tuple):
    """A SignedData ContentInfo read down to its one signerInfo's attributes: offsets into
    ``data``, nothing verified yet. Of the other fields only the positions are known;
    ``check_shape`` checks them (a request is answered in SCEP from the attributes alone)."""

    __slots__ = ()
    data: bytes
    fields: list  # SignedData: version, digestAlgorithms, encapContentInfo, [0]?, [1]?, signerInfos
    signer: list  # signerInfo: version, sid, digestAlgorithm, [0] signedAttrs, signatureAlgorithm, signature, [1]?
    attrs: dict  # dotted OID -> its values (list of bytes), each a whole element as received

    def __new__(cls, data: bytes, fields: list, signer: list, attrs: dict):
        return tuple.__new__(cls, (data, fields, signer, attrs))

    @property
    def signed_attrs(self) -> der.Element:
        return self.signer[3]

    def check_shape(self) -> None:
        tags = tuple(f[0] for f in self.fields)
        if tags[:3] != (der.INTEGER, der.SET, der.SEQUENCE) or tags[3:-1] not in ((), (0xA0,), (0xA1,), (0xA0, 0xA1)):
            raise der.DerError("SignedData is not version, digestAlgorithms, encapContentInfo, [0], [1], signerInfos")
        tags = tuple(f[0] for f in self.signer)
        if tags[0] != der.INTEGER or tags[2] != der.SEQUENCE or tags[4:6] != (der.SEQUENCE, der.OCTET_STRING) or \
                tags[6:] not in ((), (0xA1,)):
            raise der.DerError("signerInfo is not shaped as a SignerInfo")

    def certificates(self) -> list[bytes]:
        """The certificates (and nothing of the other CertificateChoices) in [0], as received."""
        return _certificates(self.data, self.fields)


def _content_fields(data: bytes, what: str, content_type: bytes, other_type) -> list[der.Element]:
    """The fields of the SEQUENCE a ContentInfo (all of ``data``, named ``what``) holds, which
    must be of ``content_type`` (OID octets); ``other_type()`` is raised for another one."""
    parts = der.children(data, der.whole(data, der.SEQUENCE, what))
    if not parts or parts[0][0] != der.OID:
        raise der.DerError("ContentInfo has no contentType")
    if der.contents(data, parts[0]) != content_type:
        raise other_type()
    if len(parts) != 2 or parts[1][0] != 0xA0:
        raise der.DerError("ContentInfo has no [0] content")
    return der.children(data, der.fields(data, parts[1], (der.SEQUENCE,), "ContentInfo content")[0])


def _signed_data_fields(data: bytes) -> list[der.Element]:
    """The fields of a ContentInfo holding a SignedData (the last one a SET: the signerInfos);
    Malformed if it holds something else."""
    fields = _content_fields(data, "ContentInfo", _OID_SIGNED_DATA_BODY,
                             lambda: Malformed("pkiMessage is not a CMS SignedData"))
    if len(fields) < 4 or fields[-1][0] != der.SET:
        raise der.DerError("SignedData has no signerInfos")
    return fields


def _certificates(data: bytes, fields: list[der.Element]) -> list[bytes]:
    certs = next((f for f in fields[3:-1] if f[0] == 0xA0), None)
    return [der.encoded(data, c) for c in der.children(data, certs) if c[0] == der.SEQUENCE] if certs else []


def _read_signed(data: bytes) -> _Signed:
    """DerError for bytes not shaped as a SignedData with one signerInfo and its signed
    attributes; Malformed for the shapes SCEP refuses by name."""
    fields = _signed_data_fields(data)
    signer_infos = der.children(data, fields[-1])
    if len(signer_infos) != 1:
        raise Malformed(f"pkiMessage has {len(signer_infos)} signerInfos, expected 1")
    if signer_infos[0][0] != der.SEQUENCE:
        raise der.DerError("signerInfo is not a SEQUENCE")
    signer = der.children(data, signer_infos[0])
    if len(signer) < 6 or signer[3][0] != 0xA0:
        raise Malformed("signerInfo has no signed attributes")
    attrs: dict[str, list[bytes]] = {}
    for attr in der.children(data, signer[3]):
        if attr[0] != der.SEQUENCE:
            raise der.DerError("a signed attribute is not a SEQUENCE")
        kind, values = der.fields(data, attr, (der.OID, der.SET), "a signed attribute")
        octets = der.contents(data, kind)
        oid = _ATTRIBUTE_OIDS.get(octets) or der.dotted(octets)
        if oid in attrs:
            raise Malformed(f"signed attribute {oid} appears twice")
        attrs[oid] = [der.encoded(data, value) for value in der.children(data, values)]
    if not attrs:
        raise Malformed("signerInfo has no signed attributes")
    return _Signed(data, fields, signer, attrs)


def parse_pki_message(data: bytes) -> PkiMessage:
    """Parse and verify the outer SignedData of a request.

    Raises Malformed when nothing can be echoed back, Refusal otherwise.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise Malformed(f"pkiMessage of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        signed = _read_signed(definite_lengths(data))
    except Malformed:
        raise
    except _PARSE_ERRORS as exc:
        raise Malformed(f"pkiMessage is not valid DER/BER CMS: {_short(exc)}") from None
    attrs = signed.attrs

    # What we must echo in any answer comes first: without these there is no SCEP reply.
    tx_value = _single_value(attrs, OID_TRANSACTION_ID, "transactionID", Malformed)
    tx_content = _string_contents(tx_value, "transactionID", Malformed)
    if not tx_content or len(tx_content) > MAX_TRANSACTION_ID_BYTES:
        raise Malformed("transactionID is empty or too long")
    nonce = _octet_contents(_single_value(attrs, OID_SENDER_NONCE, "senderNonce", Malformed), "senderNonce", Malformed)
    if len(nonce) != 16:
        raise Malformed(f"senderNonce must be 16 octets, got {len(nonce)}")

    try:
        digest_name = _name(_DIGEST_NAMES, der.algorithm(signed.data, signed.signer[2], "digestAlgorithm")[0])
    except _PARSE_ERRORS:
        digest_name = None
    reply_to = ReplyTo(
        transaction_id=tx_value,
        transaction_id_key=hashlib.sha256(tx_content).hexdigest(),
        sender_nonce=nonce,
        digest_name=digest_name if digest_name in _DIGESTS else "sha256",
    )
    # From here on, every problem is answered with a CertRep FAILURE.
    try:
        return _verify_request(signed, reply_to, digest_name)
    except Refusal as refusal:
        refusal.reply_to = reply_to
        raise


def _verify_request(signed: _Signed, reply_to: ReplyTo, digest_name) -> PkiMessage:
    msg_type_text = _string_contents(
        _single_value(signed.attrs, OID_MESSAGE_TYPE, "messageType", Refusal), "messageType", Refusal
    )
    if not msg_type_text.isdigit() or len(msg_type_text) > 3:
        raise Refusal(FailInfo.BAD_REQUEST, "messageType is not a number")
    message_type = int(msg_type_text)

    data = signed.data
    try:
        signed.check_shape()
        sig_name = _name(_SIGNATURE_NAMES, der.algorithm(data, signed.signer[4], "signatureAlgorithm")[0])
        signer = x509.load_der_x509_certificate(_find_signer(data, signed.signer[1], signed.certificates()))
        econtent_type, envelope = _encapsulated(data, signed.fields[2])
    except Refusal:
        raise
    except x509.InvalidVersion as exc:  # not a ValueError
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, f"the signer's certificate has an unsupported version: {_short(exc)}") from None
    except EXTENSION_ERRORS as exc:  # a certificate's extensions, read to match a subjectKeyIdentifier sid
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, f"a certificate's extensions are unreadable: {_short(exc)}") from None
    except _PARSE_ERRORS as exc:
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, f"signed content unreadable: {_short(exc)}") from None

    if digest_name not in _DIGESTS:
        raise Refusal(FailInfo.BAD_ALG, f"digest algorithm {digest_name} is not allowed; use SHA-256")
    if econtent_type != "data":
        raise Refusal(FailInfo.BAD_REQUEST, f"encapsulated content type {econtent_type} is not data")
    _verify_signer_info(signed, signer, digest_name, sig_name, envelope or b"")

    return PkiMessage(message_type=message_type, reply_to=reply_to, signer=signer, envelope=envelope)


def _encapsulated(data: bytes, encap: der.Element) -> tuple[str, bytes | None]:
    """(eContentType's name, the eContent octets or None when absent). The content of a type
    other than data is not read: it is refused by its type."""
    parts = der.children(data, encap)
    if not 1 <= len(parts) <= 2 or parts[0][0] != der.OID or (len(parts) == 2 and parts[1][0] != 0xA0):
        raise der.DerError("encapContentInfo is not shaped as one")
    name = _name(_CONTENT_TYPE_NAMES, der.contents(data, parts[0]))
    if len(parts) == 1 or name != "data":
        return name, None
    inner = der.fields(data, parts[1], (der.OCTET_STRING,), "eContent")[0]
    return name, der.contents(data, inner)


def _single_value(attrs, oid, label, error) -> bytes:
    values = attrs.get(oid)
    if not values:
        raise _make(error, f"{label} attribute missing")
    if len(values) != 1:
        raise _make(error, f"{label} attribute must have exactly one value")
    return values[0]


def _make(error, text):
    return error(text) if error is Malformed else Refusal(FailInfo.BAD_REQUEST, text)


def _value(encoded: bytes, label, error) -> tuple[int, bytes]:
    """(tag, contents) of one attribute value, as received."""
    try:
        tag, _, start, end = der.element(encoded, 0, len(encoded))
    except der.DerError:
        raise _make(error, f"{label} is not valid DER") from None
    if end != len(encoded):
        raise _make(error, f"{label} is not valid DER")
    return tag, encoded[start:end]


def _string_contents(encoded: bytes, label, error) -> bytes:
    # transactionID and messageType are PrintableString; accept the other string types
    # clients use, but echo transactionID exactly as received.
    tag, octets = _value(encoded, label, error)
    if tag not in _STRING_TAGS:
        raise _make(error, f"{label} is not a PrintableString")
    return octets


def _octet_contents(encoded: bytes, label, error) -> bytes:
    tag, octets = _value(encoded, label, error)
    if tag != der.OCTET_STRING:
        raise _make(error, f"{label} is not an OCTET STRING")
    return octets


def _issuer_and_serial_of(data: bytes, certificate: der.Element) -> tuple[bytes, int]:
    """A certificate's issuer Name (as encoded) and serial number."""
    tbs = der.children(data, certificate)[0]
    fields = der.children(data, tbs)
    at = 1 if fields and fields[0][0] == 0xA0 else 0  # after the [0] version, when present
    if len(fields) < at + 3 or fields[at + 2][0] != der.SEQUENCE:
        raise der.DerError("a certificate's TBSCertificate is not shaped as one")
    return der.encoded(data, fields[at + 2]), der.integer(data, fields[at], "certificate serialNumber")


def _find_signer(data: bytes, sid: der.Element, certs: list[bytes]) -> bytes:
    if sid[0] == der.SEQUENCE:  # issuerAndSerialNumber
        issuer, serial = der.fields(data, sid, (der.SEQUENCE, der.INTEGER), "issuerAndSerialNumber")
        want_issuer, want_serial = _SameName(der.encoded(data, issuer)), der.integer(data, serial, "serialNumber")
        for cert in certs:
            cert_issuer, cert_serial = _issuer_and_serial_of(cert, der.whole(cert, der.SEQUENCE, "certificate"))
            if cert_serial == want_serial and want_issuer(cert_issuer):
                return cert
    elif sid[0] == 0x80:  # [0] subjectKeyIdentifier
        want = der.contents(data, sid)
        for cert in certs:
            if _ski(x509.load_der_x509_certificate(cert)) == want:
                return cert
    raise Refusal(FailInfo.BAD_MESSAGE_CHECK, "the signer's certificate is not in the message")


class _SameName:
    """Whether a Name is this one: the same octets are the same name; otherwise RFC 5280 7.1
    comparison (string preparation: case, spaces, string types), which is costly and rare,
    decides. This name is parsed and its strings prepared once, however many candidates it is
    compared with: a message can hold thousands of certificates or recipients with the serial
    asked for, and preparing a 30 KB name again for each took minutes."""

    __slots__ = ("der", "_parsed")

    def __init__(self, name_der: bytes):
        self.der = name_der
        self._parsed = None

    def __call__(self, other_der: bytes) -> bool:
        if other_der == self.der:
            return True
        from asn1crypto import x509 as asn1_x509

        if self._parsed is None:
            self._parsed = asn1_x509.Name.load(self.der)
        return asn1_x509.Name.load(other_der) == self._parsed


def _verify_signer_info(signed: _Signed, signer, digest_name, sig_name, content: bytes):
    digest = hashlib.new(digest_name, content).digest()
    md_values = signed.attrs.get(_MESSAGE_DIGEST_ATTR)
    ct_values = signed.attrs.get(_CONTENT_TYPE_ATTR)
    if not md_values or not ct_values:
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, "contentType or messageDigest attribute missing")
    if _octet_contents(md_values[0], "messageDigest", Refusal) != digest:
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, "messageDigest does not match the content")
    if _value(ct_values[0], "contentType", Refusal) != (der.OID, _OID_DATA_BODY):
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, "contentType attribute is not data")

    # The signature covers the attributes re-tagged as SET OF, over the octets received
    # (RFC 5652 5.4); re-encoding them could change what was signed.
    attrs_body = der.contents(signed.data, signed.signed_attrs)
    signed_bytes = _set_header(len(attrs_body)) + attrs_body
    signature = der.contents(signed.data, signed.signer[5])
    _verify_signature(signer, sig_name, digest_name, signed_bytes, signature)


def _verify_signature(signer: x509.Certificate, sig_name: str, digest_name: str, signed_bytes: bytes, signature: bytes):
    """The signer's signature over the signed attributes, with an allowed key and algorithm."""
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
    ``_MAX_DEPTH`` (this walk runs on every message, before the reader in ``der`` sees it).

    Streaming encoders emit indefinite lengths anywhere; the reader takes definite lengths
    only. Subtrees without either form come back byte-identical, so signatures over them still
    verify. Most messages have neither: a first walk that copies nothing finds that out and
    returns the bytes as they are (raising what the rewriting walk would raise).
    """
    if not _has_ber_forms(data):
        return data
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


def _has_ber_forms(data: bytes) -> bool:
    """Whether an indefinite length or a constructed OCTET STRING occurs anywhere; ValueError
    for what ``_definite_one`` refuses (depth, lengths, trailing data) when it occurs first.
    The header reading of ``_read_header`` inline (it runs on every element of every message);
    a multi-octet tag goes through ``_read_header`` itself."""
    size = len(data)
    ends: list[int] = []  # the ends of the open constructed elements
    pos, started = 0, False
    while True:
        if ends:
            if pos == ends[-1]:
                ends.pop()
                continue
            if len(ends) > _MAX_DEPTH:
                raise ValueError("nesting too deep")
        elif started:  # the top element has been read
            if pos != size:
                raise ValueError(f"{size - pos} bytes of trailing data")
            return False
        started = True
        if pos + 1 >= size or data[pos] & 0x1F == 0x1F:
            first, _, length, at = _read_header(data, pos)  # raises for a truncated header
            if length is None:
                return True
        else:
            first, length, at = data[pos], data[pos + 1], pos + 2
            if length & 0x80:
                if length == 0x80:
                    return True
                count = length & 0x7F
                if count > 4 or at + count > size:
                    raise ValueError("bad length")
                length = int.from_bytes(data[at:at + count], "big")
                at += count
            if at + length > size:
                raise ValueError("length runs past the data")
        if first == 0x24:
            return True
        end = at + length
        if ends and end > ends[-1]:
            raise ValueError("child runs past its parent")
        if first & 0x20:
            ends.append(end)
            pos = at
        else:
            pos = end


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


@named_tuple
class _Enveloped(tuple):
    """An EnvelopedData ContentInfo read down to its recipients and encrypted content."""

    __slots__ = ()
    data: bytes
    recipients: list  # the KeyTransRecipientInfos (the other RecipientInfo kinds are skipped)
    cipher_name: str
    parameters: tuple | None  # of the content-encryption algorithm (a der element): the IV
    encrypted: bytes | None

    def __new__(cls, data: bytes, recipients: list, cipher_name: str, parameters: tuple | None, encrypted: bytes | None):
        return tuple.__new__(cls, (data, recipients, cipher_name, parameters, encrypted))


def _read_enveloped(envelope: bytes) -> _Enveloped:
    """DerError for bytes not shaped as an EnvelopedData; Refusal if it is another content type."""
    data = definite_lengths(envelope)
    fields = _content_fields(data, "pkcsPKIEnvelope", _OID_ENVELOPED_DATA_BODY,
                             lambda: Refusal(FailInfo.BAD_REQUEST, "pkcsPKIEnvelope is not a CMS EnvelopedData"))
    # version, [0] originatorInfo (optional), recipientInfos, encryptedContentInfo, [1] unprotectedAttrs
    tags = tuple(f[0] for f in fields)
    at = 2 if len(tags) > 1 and tags[1] == 0xA0 else 1
    if tags[:1] != (der.INTEGER,) or tags[at:at + 2] != (der.SET, der.SEQUENCE) or tags[at + 2:] not in ((), (0xA1,)):
        raise der.DerError("EnvelopedData is not version, [0], recipientInfos, encryptedContentInfo, [1]")
    recipients = [r for r in der.children(data, fields[at]) if r[0] == der.SEQUENCE]
    eci = der.children(data, fields[at + 1])
    if not 2 <= len(eci) <= 3 or eci[0][0] != der.OID or (len(eci) == 3 and eci[2][0] not in (0x80, 0xA0)):
        raise der.DerError("EncryptedContentInfo is not shaped as one")
    cipher_oid, parameters = der.algorithm(data, eci[1], "contentEncryptionAlgorithm")
    encrypted = None
    if len(eci) == 3:
        # [0] IMPLICIT OCTET STRING; BER lets it be constructed, of OCTET STRING chunks
        # (micromdm scepclient sends that), which definite_lengths has made primitive
        encrypted = der.contents(data, eci[2]) if eci[2][0] == 0x80 else b"".join(
            der.primitive(data, chunk, der.OCTET_STRING, "an encryptedContent chunk") for chunk in der.children(data, eci[2]))
    return _Enveloped(data, recipients, _name(_CIPHER_NAMES, cipher_oid), parameters, encrypted)


def envelope_cipher(envelope: bytes) -> str:
    """The content-encryption algorithm of an envelope, checked against the allow-list, without
    decrypting it (a CertPoll's envelope carries nothing we need)."""
    try:
        name = _read_enveloped(envelope).cipher_name
    except Refusal:
        raise
    except _PARSE_ERRORS as exc:
        raise Refusal(FailInfo.BAD_REQUEST, f"pkcsPKIEnvelope is not valid CMS: {_short(exc)}") from None
    if name in _REFUSED_CIPHERS or name not in _CIPHERS:
        raise Refusal(FailInfo.BAD_ALG, f"content encryption {name} is not supported; use AES")
    return name


def open_envelope(envelope: bytes, ca_cert: x509.Certificate, ca_key: rsa.RSAPrivateKey) -> OpenedEnvelope:
    """Decrypt the pkcsPKIEnvelope addressed to our CA."""
    try:
        enveloped = _read_enveloped(envelope)
    except Refusal:
        raise
    except _PARSE_ERRORS as exc:
        raise Refusal(FailInfo.BAD_REQUEST, f"pkcsPKIEnvelope is not valid CMS: {_short(exc)}") from None
    cipher_name, encrypted = enveloped.cipher_name, enveloped.encrypted
    if cipher_name in _REFUSED_CIPHERS or cipher_name not in _CIPHERS:
        raise Refusal(FailInfo.BAD_ALG, f"content encryption {cipher_name} is not supported; use AES")
    try:
        key_alg, encrypted_key = _our_recipient(enveloped.data, enveloped.recipients, ca_cert)
    except Refusal:
        raise
    except _PARSE_ERRORS as exc:
        raise Refusal(FailInfo.BAD_REQUEST, f"pkcsPKIEnvelope recipient is not valid CMS: {_short(exc)}") from None
    if key_alg != _OID_RSA_ENCRYPTION_BODY:
        name = _name(_KEY_ENCRYPTION_NAMES, key_alg)
        raise Refusal(FailInfo.BAD_ALG, f"key encryption {name} is not supported; use rsaEncryption")

    factory, key_len = _CIPHERS[cipher_name]
    iv = _iv(enveloped)
    if iv is None or len(iv) != factory.block_size // 8:
        raise Refusal(FailInfo.BAD_REQUEST, "content encryption IV is missing or has the wrong size")
    if not encrypted or len(encrypted) % (factory.block_size // 8):
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, UNREADABLE_ENVELOPE)

    # One answer for every decryption failure: a different one would be a padding oracle.
    try:
        content_key = ca_key.decrypt(encrypted_key, asym_padding.PKCS1v15())
        if len(content_key) != key_len:
            raise ValueError("content key length")
        plaintext = _decrypt(factory, content_key, iv, encrypted)
    except ValueError:
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, UNREADABLE_ENVELOPE) from None
    return OpenedEnvelope(plaintext=plaintext, cipher_name=cipher_name)


def _iv(enveloped: _Enveloped) -> bytes | None:
    """The CBC IV: the algorithm's parameters, an OCTET STRING."""
    parameters = enveloped.parameters
    if parameters is None or parameters[0] != der.OCTET_STRING:
        return None
    return der.contents(enveloped.data, parameters)


def _decrypt(factory, key: bytes, iv: bytes, encrypted: bytes) -> bytes:
    """CBC decryption and PKCS#7 unpadding; ValueError for a wrong key or padding."""
    decryptor = Cipher(factory(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(encrypted) + decryptor.finalize()
    unpadder = padding.PKCS7(factory.block_size).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def _recipient_fields(data: bytes, recipient: der.Element) -> tuple[der.Element, bytes, bytes]:
    """A KeyTransRecipientInfo's (rid, key-encryption algorithm OID, encryptedKey)."""
    parts = der.children(data, recipient)
    if len(parts) != 4 or parts[0][0] != der.INTEGER or parts[1][0] not in (der.SEQUENCE, 0x80) or \
            parts[3][0] != der.OCTET_STRING:  # rid: issuerAndSerialNumber or [0] subjectKeyIdentifier
        raise der.DerError("a KeyTransRecipientInfo is not shaped as one")
    return parts[1], der.algorithm(data, parts[2], "keyEncryptionAlgorithm")[0], der.contents(data, parts[3])


def _our_recipient(data: bytes, recipients: list, ca_cert: x509.Certificate) -> tuple[bytes, bytes]:
    """(key-encryption algorithm OID, encrypted key) of the recipient that is our CA."""
    ca_issuer_der, ca_serial, ca_ski = _ca_identity(ca_cert)
    ca_issuer = _SameName(ca_issuer_der)
    for recipient in recipients:
        rid, key_alg, encrypted_key = _recipient_fields(data, recipient)
        if rid[0] == der.SEQUENCE:  # issuerAndSerialNumber
            issuer, serial = der.fields(data, rid, (der.SEQUENCE, der.INTEGER), "issuerAndSerialNumber")
            if der.integer(data, serial, "serialNumber") == ca_serial and ca_issuer(der.encoded(data, issuer)):
                return key_alg, encrypted_key
        elif ca_ski is not None:  # [0] subjectKeyIdentifier
            if hmac.compare_digest(der.contents(data, rid), ca_ski):
                return key_alg, encrypted_key
    # Some clients address the envelope loosely; with a single key-transport recipient,
    # decryption itself is the proof that it was meant for us.
    if len(recipients) == 1:
        return _recipient_fields(data, recipients[0])[1:]
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
        _attribute(_SCEP_OIDS[OID_TRANSACTION_ID], reply_to.transaction_id),  # as received
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
    return _tlv(0x06, der.oid(dotted))


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
def _ca_identity(certificate: x509.Certificate) -> tuple[bytes, int, bytes | None]:
    """The CA certificate as a RecipientIdentifier names it: (issuer DER, serial, SKI)."""
    return _issuer_der(_signer_parts(certificate)[0]), certificate.serial_number, _ski(certificate)


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
    """An asn1crypto CMSAttribute, for tests that sign unusual attributes with ``_sign``."""
    from asn1crypto import cms

    return cms.CMSAttribute({"type": name, "values": [value]})


_scep_attr = _attr  # by dotted OID


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
    signed = _read_signed(definite_lengths(data))
    signed.check_shape()
    attrs = signed.attrs
    signer = x509.load_der_x509_certificate(_find_signer(signed.data, signed.signer[1], signed.certificates()))
    if signer.public_bytes(Encoding.DER) != ca_cert.public_bytes(Encoding.DER):
        raise ValueError("CertRep is not signed by the CA we trust")
    _, content = _encapsulated(signed.data, signed.fields[2])
    digest_name = _name(_DIGEST_NAMES, der.algorithm(signed.data, signed.signer[2], "digestAlgorithm")[0])
    sig_name = _name(_SIGNATURE_NAMES, der.algorithm(signed.data, signed.signer[4], "signatureAlgorithm")[0])
    if digest_name not in _DIGESTS:
        raise ValueError(f"CertRep digest {digest_name} is not allowed")
    _verify_signer_info(signed, ca_cert, digest_name, sig_name, content or b"")

    def text(oid):
        values = attrs.get(oid)
        return _value(values[0], oid, Malformed)[1] if values else None

    status = PkiStatus(int(text(OID_PKI_STATUS)))
    fail_info = FailInfo(int(text(OID_FAIL_INFO))) if text(OID_FAIL_INFO) is not None else None
    fail_text = text(OID_FAIL_INFO_TEXT)
    issued: list[x509.Certificate] = []
    cipher_name = None
    if status is PkiStatus.SUCCESS:
        enveloped = _read_enveloped(content or b"")
        _, _, encrypted_key = _recipient_fields(enveloped.data, enveloped.recipients[0])
        cipher_name = enveloped.cipher_name
        factory, _ = _CIPHERS[cipher_name]
        plaintext = _decrypt(factory, requester_key.decrypt(encrypted_key, asym_padding.PKCS1v15()), _iv(enveloped),
                             enveloped.encrypted)
        degenerate = definite_lengths(plaintext)
        issued = [x509.load_der_x509_certificate(c) for c in _certificates(degenerate, _signed_data_fields(degenerate))]
    return CertRep(
        status=status,
        fail_info=fail_info,
        fail_text=fail_text.decode("utf-8") if fail_text is not None else None,
        transaction_id=text(OID_TRANSACTION_ID),
        recipient_nonce=_octet_contents(attrs[OID_RECIPIENT_NONCE][0], "recipientNonce", Malformed),
        sender_nonce=_octet_contents(attrs[OID_SENDER_NONCE][0], "senderNonce", Malformed),
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
