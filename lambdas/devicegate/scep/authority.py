"""The SCEP certificate authority: issuance policy, certificate building, idempotent issuance.

``Authority.respond`` takes the bytes of a PKIOperation and returns CertRep bytes. It never
raises for anything a client sent, except :class:`protocol.Malformed` (the handler's 400).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import datetime, timedelta, timezone
from typing import Callable

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .. import logs, store as store_mod
from ..record import named_tuple
from . import der as der_reader
from . import protocol
from .hostid import UUID_URI_PREFIX, canonical_uuid, host_uuid_of  # noqa: F401 - host_uuid_of: public here too
from .protocol import FailInfo, MessageType, PkiStatus, Refusal

log = logs.getLogger(__name__)

MAX_VALIDITY_DAYS = 398
BACKDATE = timedelta(minutes=5)  # tolerate clients whose clocks run a little behind
_ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)
_MIN_RSA_BITS, _MAX_RSA_BITS = 2048, 8192
# Subject attributes copied from the CSR; everything else is dropped.
_SUBJECT_KEEP = (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME)


@named_tuple
class CsrFacts(tuple):
    __slots__ = ()
    csr: x509.CertificateSigningRequest
    der: bytes
    host_uuid: str | None  # canonical upper-case, from the SAN URI (or the CN when allowed)
    challenge: str | None
    subject: x509.Name

    def __new__(cls, csr: x509.CertificateSigningRequest, der: bytes, host_uuid: str | None, challenge: str | None,
                subject: x509.Name):
        return tuple.__new__(cls, (csr, der, host_uuid, challenge, subject))


def inspect_csr(der: bytes, *, accept_cn_uuid: bool) -> CsrFacts:
    """Parse the PKCS#10 request and apply the policy that needs no context."""
    # Until the self-signature verifies, every failure gets the decryption failure's answer
    # (see protocol.UNREADABLE_ENVELOPE): the bytes may be a forged ciphertext's plaintext.
    try:
        csr = x509.load_der_x509_csr(der)
    except (ValueError, x509.InvalidVersion):  # InvalidVersion is not a ValueError
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, protocol.UNREADABLE_ENVELOPE) from None
    try:
        hash_alg = csr.signature_hash_algorithm
        oid = csr.signature_algorithm_oid.dotted_string
    except (UnsupportedAlgorithm, ValueError):
        hash_alg, oid = None, None
    if oid is None:
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, protocol.UNREADABLE_ENVELOPE)
    if hash_alg is None or hash_alg.name not in protocol.ALLOWED_DIGESTS:
        name = hash_alg.name if hash_alg else oid
        raise Refusal(FailInfo.BAD_ALG, f"the CSR is signed with {name}; use SHA-256 or stronger")
    try:
        valid = csr.is_signature_valid
    except (UnsupportedAlgorithm, ValueError):
        valid = False
    if not valid:
        raise Refusal(FailInfo.BAD_MESSAGE_CHECK, protocol.UNREADABLE_ENVELOPE)
    _check_key(csr.public_key())
    try:
        subject = csr.subject  # its strings are decoded here: bad UTF-8 in one is a ValueError
    except ValueError as exc:
        raise Refusal(FailInfo.BAD_REQUEST, f"the CSR subject is malformed: {protocol._short(exc)}") from None
    return CsrFacts(
        csr=csr,
        der=der,
        host_uuid=_host_uuid(csr, accept_cn_uuid),
        challenge=_challenge(der),
        subject=_sanitised_subject(subject),
    )


def _check_key(key) -> None:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise Refusal(
                FailInfo.BAD_REQUEST,
                f"RSA key of {key.key_size} bits is too small; set Keysize to 2048 or more in the SCEP payload",
            )
        if key.key_size > _MAX_RSA_BITS:
            raise Refusal(FailInfo.BAD_REQUEST, f"RSA key of {key.key_size} bits is larger than {_MAX_RSA_BITS}")
        return
    if isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, _ALLOWED_CURVES):
            return
        raise Refusal(FailInfo.BAD_REQUEST, f"EC curve {key.curve.name} is not allowed; use P-256 or P-384")
    raise Refusal(FailInfo.BAD_REQUEST, "the CSR key must be RSA (2048+) or EC P-256/P-384")


def _host_uuid(csr: x509.CertificateSigningRequest, accept_cn_uuid: bool) -> str | None:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    except (ValueError, *protocol.EXTENSION_ERRORS) as exc:
        raise Refusal(FailInfo.BAD_REQUEST, f"the CSR extensions are malformed: {protocol._short(exc)}") from None
    if san is not None:
        device_uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.lower().startswith(UUID_URI_PREFIX)]
        if len(device_uris) > 1:
            raise Refusal(FailInfo.BAD_REQUEST, "the CSR has more than one device UUID SAN URI")
        if device_uris:
            uuid = canonical_uuid(device_uris[0][len(UUID_URI_PREFIX):])
            if uuid is None:
                raise Refusal(FailInfo.BAD_REQUEST, f"SAN URI {device_uris[0][:80]!r} does not hold a well-formed UUID")
            for cn in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
                named = canonical_uuid(str(cn.value).strip())
                if named is not None and named != uuid:
                    raise Refusal(FailInfo.BAD_REQUEST, "the CSR's subject CN names a different host than its SAN URI")
            return uuid
    if accept_cn_uuid:
        cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(cns) == 1 and isinstance(cns[0].value, str):
            return canonical_uuid(cns[0].value)
    return None


_CHALLENGE_PASSWORD = der_reader.oid("1.2.840.113549.1.9.7")
# DirectoryString (RFC 2985 5.4.1) as SCEP clients send it: tag -> (name, codec)
_DIRECTORY_STRINGS = {der_reader.PRINTABLE_STRING: ("printable_string", "latin-1"),
                      der_reader.UTF8_STRING: ("utf8_string", "utf-8"), der_reader.BMP_STRING: ("bmp_string", "utf-16-be")}
_OTHER_STRINGS = {der_reader.TELETEX_STRING: "teletex_string", der_reader.UNIVERSAL_STRING: "universal_string",
                  der_reader.IA5_STRING: "ia5_string"}


def _challenge(der: bytes) -> str | None:
    """The CSR's challengePassword. cryptography hides its string type; we accept exactly
    the DirectoryString forms SCEP clients use. ``der`` has been parsed by cryptography."""
    try:
        request = der_reader.whole(der, der_reader.SEQUENCE, "CertificationRequest")
        info = der_reader.children(der, der_reader.children(der, request)[0])
        attributes = next((f for f in info[3:] if f[0] == 0xA0), None)  # after version, subject, key
        if attributes is None:
            return None
        for attribute in der_reader.children(der, attributes):
            kind, values = der_reader.fields(der, attribute, (der_reader.OID, der_reader.SET), "a CSR attribute")
            if der_reader.contents(der, kind) != _CHALLENGE_PASSWORD:
                continue
            values = der_reader.children(der, values)
            if len(values) != 1:
                raise Refusal(FailInfo.BAD_REQUEST, "challengePassword must have exactly one value")
            tag = values[0][0]
            if tag not in _DIRECTORY_STRINGS:
                name = _OTHER_STRINGS.get(tag, f"tag 0x{tag:02x}")
                raise Refusal(FailInfo.BAD_REQUEST, f"challengePassword as {name} is not supported")
            try:
                return der_reader.contents(der, values[0]).decode(_DIRECTORY_STRINGS[tag][1])
            except UnicodeDecodeError:
                raise Refusal(FailInfo.BAD_REQUEST, "challengePassword is not a valid string") from None
    except der_reader.DerError as exc:
        raise Refusal(FailInfo.BAD_REQUEST, f"the CSR attributes are malformed: {protocol._short(exc)}") from None
    return None


def _sanitised_subject(subject: x509.Name) -> x509.Name:
    kept = []
    for attribute in subject:
        if attribute.oid in _SUBJECT_KEEP and isinstance(attribute.value, str):
            value = "".join(ch for ch in attribute.value if ch.isprintable()).strip()[:64]
            if value:
                kept.append(x509.NameAttribute(attribute.oid, value))
    return x509.Name(kept)


def challenge_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison; the lengths of the two may leak, their contents do not."""
    if given is None or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def random_serial() -> int:
    # 159 bits: positive in 20 DER octets, with the top bit set so it always has 158 random bits.
    # secrets.randbits(158) is this: 20 bytes from os.urandom, shifted down to 158 bits.
    return (int.from_bytes(os.urandom(20), "big") >> 2) | (1 << 158)


def build_certificate(
    facts: CsrFacts,
    host_uuid: str,
    *,
    ca_cert: x509.Certificate,
    ca_key,
    validity_days: int,
    now: datetime,
    serial: int,
) -> x509.Certificate:
    if not 1 <= validity_days <= MAX_VALIDITY_DAYS:
        raise ValueError(f"validity_days must be 1..{MAX_VALIDITY_DAYS}")
    subject = facts.subject
    if not subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        subject = x509.Name([*subject, x509.NameAttribute(NameOID.COMMON_NAME, host_uuid)])
    not_before = now - BACKDATE
    public_key = facts.csr.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(UUID_URI_PREFIX + host_uuid)]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
    )
    return builder.sign(ca_key, hashes.SHA256())


class Authority:
    def __init__(
        self,
        *,
        ca_cert: x509.Certificate,
        ca_key,
        store: store_mod.Store,
        challenge: Callable[[], str],
        validity_days: int,
        accept_cn_uuid: bool,
        host_known: Callable[[str], bool] = lambda uuid: True,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ):
        self.ca_cert = ca_cert
        self.ca_key = ca_key
        self.store = store
        self.challenge = challenge
        self.validity_days = validity_days
        self.accept_cn_uuid = accept_cn_uuid
        self.host_known = host_known
        self.clock = clock

    def respond(self, message: bytes) -> bytes:
        """CertRep bytes for a PKIOperation message. Raises protocol.Malformed only."""
        try:
            request = protocol.parse_pki_message(message)
        except Refusal as refusal:
            return self._failure(refusal.reply_to, refusal)
        try:
            return self._handle(request)
        except Refusal as refusal:
            return self._failure(request.reply_to, refusal)
        except store_mod.StoreUnavailable as exc:
            log.error("scep storage unavailable: %s", exc)
            text = "the CA cannot record certificates right now; retry later"
            return self._failure(request.reply_to, Refusal(FailInfo.BAD_REQUEST, text))
        except Exception:  # a bug of ours: answer in SCEP anyway, and hand out nothing
            log.exception("scep internal error")
            return self._failure(request.reply_to, Refusal(FailInfo.BAD_REQUEST, "internal error; retry later"))

    def _success(self, request: protocol.PkiMessage, issued: x509.Certificate, cipher: str) -> bytes:
        return protocol.build_cert_rep(
            request.reply_to,
            status=PkiStatus.SUCCESS,
            ca_cert=self.ca_cert,
            ca_key=self.ca_key,
            issued=issued,
            recipient=request.signer,
            cipher_name=cipher,
        )

    def _failure(self, reply_to, refusal: Refusal) -> bytes:
        log.info("scep refusal: %s", refusal)
        return protocol.build_cert_rep(
            reply_to,
            status=PkiStatus.FAILURE,
            ca_cert=self.ca_cert,
            ca_key=self.ca_key,
            fail_info=refusal.fail_info,
            fail_text=refusal.text,
        )

    @staticmethod
    def _transaction_key(request: protocol.PkiMessage) -> str:
        # Scoped to the requester's key: nobody can claim, or replay into, another key's
        # transactionID (clients such as certmonger derive it from the public key).
        scoped = f"{request.signer_spki_sha256}:{request.reply_to.transaction_id_key}"
        return hashlib.sha256(scoped.encode("ascii")).hexdigest()

    def _handle(self, request: protocol.PkiMessage) -> bytes:
        if request.message_type not in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ, MessageType.CERT_POLL):
            raise Refusal(FailInfo.BAD_REQUEST, f"messageType {request.message_type} is not supported")
        if request.envelope is None:
            raise Refusal(FailInfo.BAD_REQUEST, "the request has no pkcsPKIEnvelope")
        # The reply is encrypted to the signer: find out now, before anything is issued.
        if not isinstance(request.signer.public_key(), rsa.RSAPublicKey):
            raise Refusal(FailInfo.BAD_ALG, "sign the request with an RSA key: the reply is encrypted to the signer")
        if request.message_type == MessageType.CERT_POLL:
            # Nothing in a poll's envelope is needed, so it is never decrypted (no oracle).
            return self._success(request, self._poll(request), protocol.envelope_cipher(request.envelope))
        opened = protocol.open_envelope(request.envelope, self.ca_cert, self.ca_key)
        facts = inspect_csr(opened.plaintext, accept_cn_uuid=self.accept_cn_uuid)
        return self._issue(request, facts, opened.cipher_name)

    def _poll(self, request: protocol.PkiMessage) -> x509.Certificate:
        transaction = self.store.get_transaction(self._transaction_key(request))
        if transaction is None:
            raise Refusal(FailInfo.BAD_CERT_ID, "no request with this transactionID from this requester")
        return self._recorded_certificate(transaction)

    def _recorded_certificate(self, transaction: store_mod.Transaction) -> x509.Certificate:
        record = self.store.get_certificate(transaction.serial)
        if record is None:
            raise store_mod.StoreUnavailable("transaction recorded without its certificate")
        return x509.load_der_x509_certificate(record.der)

    def _issue(self, request: protocol.PkiMessage, facts: CsrFacts, cipher: str) -> bytes:
        """The CertRep for a PKCSReq or RenewalReq that passed the message checks."""
        csr_sha256 = hashlib.sha256(facts.der).hexdigest()
        key = self._transaction_key(request)
        # A retried request (same requester, transactionID and CSR) gets what it got before and
        # nothing new; the same key with a new CSR (a re-enrollment) is a new issuance. The
        # transaction is looked up only when it matters: when the checks refuse (a retry
        # still gets its certificate after the challenge rotated or Fleet dropped the host)
        # and when recording finds it exists; a first request costs one write, no read.
        try:
            host_uuid, renewed_from = self._requested_host(request, facts)
        except Refusal as refusal:
            return self._answer_if_retry(request, key, csr_sha256, cipher, refusal)

        now = self.clock()
        certificate = build_certificate(
            facts,
            host_uuid,
            ca_cert=self.ca_cert,
            ca_key=self.ca_key,
            validity_days=self.validity_days,
            now=now,
            serial=random_serial(),
        )
        # The reply is built before the two waits (Fleet, the store): work right after a wait
        # costs more CPU (the vCPU idled; bench.scep_waits measures it), and nothing built here
        # leaves unless both say yes. A refused request wastes the signatures, no more.
        reply = self._success(request, certificate, cipher)
        try:
            self._check_known(host_uuid)
        except Refusal as refusal:
            return self._answer_if_retry(request, key, csr_sha256, cipher, refusal)
        transaction = store_mod.Transaction(
            key=key,
            csr_sha256=csr_sha256,
            requester_spki_sha256=request.signer_spki_sha256,
            serial=certificate.serial_number,
        )
        record = store_mod.CertificateRecord(
            serial=certificate.serial_number,
            host_uuid=host_uuid,
            status="active",
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            issued_at=now,
            der=certificate.public_bytes(Encoding.DER),
            subject=certificate.subject.rfc4514_string(),
            transaction_key=key,
            kind="renewal" if renewed_from is not None else "enroll",
            renewed_from=renewed_from,
        )
        # The certificate leaves only once it is recorded. The write is conditional on the
        # transaction being new, or on it still holding the CSR we read (a re-enrollment
        # replaces it); a concurrent request that changed it first wins, and a retry of the
        # request that won is answered with its certificate.
        replaces = None
        for _attempt in range(2):
            try:
                self.store.record_issuance(transaction, record, replaces=replaces)
                break
            except store_mod.AlreadyRecorded:
                existing = self.store.get_transaction(key)
                if existing is not None and hmac.compare_digest(existing.csr_sha256, csr_sha256):
                    return self._success(request, self._recorded_certificate(existing), cipher)
                if existing is None or replaces is not None:
                    raise Refusal(FailInfo.BAD_REQUEST, "a concurrent request with this transactionID won; retry") from None
                replaces = existing.csr_sha256  # a re-enrollment: supersede that transaction
        log.info("issued certificate serial=%x host=%s kind=%s", certificate.serial_number, host_uuid, record.kind)
        return reply

    def _answer_if_retry(self, request: protocol.PkiMessage, key: str, csr_sha256: str, cipher: str,
                         refusal: Refusal) -> bytes:
        """A refused request that repeats one already answered gets that certificate again;
        anything else gets the refusal. StoreUnavailable from this read is the answer then
        ("retry later"): it may be a retry that would have got its certificate."""
        previous = self.store.get_transaction(key)
        if previous is not None and hmac.compare_digest(previous.csr_sha256, csr_sha256):
            return self._success(request, self._recorded_certificate(previous), cipher)
        raise refusal

    def _requested_host(self, request: protocol.PkiMessage, facts: CsrFacts) -> tuple[str, int | None]:
        """The host the certificate is for (and the serial a renewal renews), once the request
        may have it: challenge (or renewing certificate) right and a host named."""
        renewed_from = None
        if request.message_type == MessageType.RENEWAL_REQ:
            host_uuid, renewed_from = self._check_renewal(request, facts)
        else:
            try:
                expected = self.challenge()
            except Exception as exc:  # Secrets Manager unreachable: fail closed, say why
                log.warning("reading the SCEP challenge failed: %s", exc)
                raise Refusal(FailInfo.BAD_REQUEST, "the CA cannot check the challenge right now; retry later") from None
            if not challenge_matches(facts.challenge, expected):
                raise Refusal(FailInfo.BAD_REQUEST, "the challenge password is wrong or missing")
            host_uuid = facts.host_uuid
        if host_uuid is None:
            raise Refusal(
                FailInfo.BAD_REQUEST,
                f"the CSR has no SAN URI {UUID_URI_PREFIX}<hardware UUID> naming the host",
            )
        return host_uuid, renewed_from

    def _check_known(self, host_uuid: str) -> None:
        """Fleet knows the host (when Fleet is configured)."""
        try:
            known = self.host_known(host_uuid)
        except Exception as exc:  # Fleet unreachable: fail closed, say why
            log.warning("checking host %s with Fleet failed: %s", host_uuid, exc)
            raise Refusal(FailInfo.BAD_REQUEST, "the CA cannot check this host with Fleet right now; retry later") from None
        if not known:
            raise Refusal(FailInfo.BAD_REQUEST, f"host {host_uuid} is not known to Fleet")

    def _check_renewal(self, request: protocol.PkiMessage, facts: CsrFacts) -> tuple[str, int]:
        """A RenewalReq is signed by a current certificate of ours; it renews that host."""
        signer = request.signer
        if signer.issuer != self.ca_cert.subject:
            raise Refusal(FailInfo.BAD_REQUEST, "a RenewalReq must be signed by a certificate this CA issued")
        try:
            signer.verify_directly_issued_by(self.ca_cert)
        except (InvalidSignature, ValueError, TypeError):
            raise Refusal(FailInfo.BAD_REQUEST, "the renewing certificate was not issued by this CA") from None
        record = self.store.get_certificate(signer.serial_number)
        if record is None or not record.is_active(self.clock()):
            raise Refusal(FailInfo.BAD_REQUEST, "the renewing certificate is revoked, expired or unknown")
        if record.der != signer.public_bytes(Encoding.DER):
            raise Refusal(FailInfo.BAD_REQUEST, "the renewing certificate does not match our record")
        if facts.host_uuid is not None and facts.host_uuid != record.host_uuid:
            raise Refusal(FailInfo.BAD_REQUEST, "the renewal CSR names a different host than the renewing certificate")
        return record.host_uuid, record.serial
