"""Runtime settings: environment variables (set by infra, or by the local stack) plus secrets
from Secrets Manager, fetched once per container and cached.

Every problem is a ConfigError that names the variable and says how to fix it.
"""

from __future__ import annotations

import json
import os
import time
from _thread import allocate_lock  # threading.Lock itself, without importing threading
from functools import lru_cache
from typing import TYPE_CHECKING

from .record import frozen, named_tuple
from .textcheck import DIGITS, LOWER, only

if TYPE_CHECKING:  # imported where a certificate or key is parsed: the webhook, the sync and
    # /healthz read settings but never parse one, and need not load cryptography at all
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

MAX_CERT_VALIDITY_DAYS = 398


def _header_name(name: str) -> bool:
    """``[a-z0-9][a-z0-9-]*``"""
    return only(name, DIGITS + LOWER + "-") and name[0] != "-"


class ConfigError(RuntimeError):
    def __init__(self, key: str, problem: str, fix: str):
        super().__init__(f"{key}: {problem}. Fix: {fix}")
        self.key = key


@frozen
class ScepSettings:
    table: str
    ca_secret_id: str
    scep_challenge_secret_id: str
    cert_validity_days: int = 365
    accept_cn_uuid: bool = False

    def __init__(self, table: str, ca_secret_id: str, scep_challenge_secret_id: str, cert_validity_days: int = 365,
                 accept_cn_uuid: bool = False):
        self.__dict__.update(table=table, ca_secret_id=ca_secret_id,
                             scep_challenge_secret_id=scep_challenge_secret_id,
                             cert_validity_days=cert_validity_days, accept_cn_uuid=accept_cn_uuid)


@frozen
class IdpSettings:
    table: str
    ca_secret_id: str  # the CA certificate: device certificates must chain to it
    idp_key_secret_id: str
    entity_id: str  # = the metadata URL
    sso_url: str
    okta_audience: str
    okta_acs_url: str
    okta_sp_cert_pem: str
    require_signed_requests: bool = True
    clock_skew_seconds: int = 120
    key_refresh_seconds: int = 60  # how soon a rotated signing key (devicegate rotate idp-key) is used
    sign_response: bool = True
    name_id_from_device_user: bool = False
    fail_mode: str = "closed"
    max_data_age_seconds: int = 7200
    strict_policies: bool = False
    require_device_user: bool = False
    allow_bypass: bool = False
    bypass_window_seconds: int = 86400
    my_device_url: str | None = None
    serial_header: str = "x-amzn-mtls-clientcert-serial-number"
    serial_format: str = "hex"
    leaf_header: str = "x-amzn-mtls-clientcert-leaf"

    def __init__(self, table: str, ca_secret_id: str, idp_key_secret_id: str, entity_id: str, sso_url: str,
                 okta_audience: str, okta_acs_url: str, okta_sp_cert_pem: str,
                 require_signed_requests: bool = True, clock_skew_seconds: int = 120,
                 key_refresh_seconds: int = 60, sign_response: bool = True, name_id_from_device_user: bool = False,
                 fail_mode: str = "closed", max_data_age_seconds: int = 7200, strict_policies: bool = False,
                 require_device_user: bool = False, allow_bypass: bool = False, bypass_window_seconds: int = 86400,
                 my_device_url: str | None = None, serial_header: str = "x-amzn-mtls-clientcert-serial-number",
                 serial_format: str = "hex", leaf_header: str = "x-amzn-mtls-clientcert-leaf"):
        self.__dict__.update(table=table, ca_secret_id=ca_secret_id, idp_key_secret_id=idp_key_secret_id,
                             entity_id=entity_id, sso_url=sso_url, okta_audience=okta_audience,
                             okta_acs_url=okta_acs_url, okta_sp_cert_pem=okta_sp_cert_pem,
                             require_signed_requests=require_signed_requests,
                             clock_skew_seconds=clock_skew_seconds, key_refresh_seconds=key_refresh_seconds,
                             sign_response=sign_response, name_id_from_device_user=name_id_from_device_user,
                             fail_mode=fail_mode, max_data_age_seconds=max_data_age_seconds,
                             strict_policies=strict_policies, require_device_user=require_device_user,
                             allow_bypass=allow_bypass, bypass_window_seconds=bypass_window_seconds,
                             my_device_url=my_device_url, serial_header=serial_header, serial_format=serial_format,
                             leaf_header=leaf_header)


def _required(env, key: str, fix: str) -> str:
    value = env.get(key, "").strip()
    if not value:
        raise ConfigError(key, "is not set", fix)
    return value


def _bool(env, key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(key, f"{raw!r} is not a boolean", "use true or false")


def _int(env, key: str, default: int, low: int, high: int) -> int:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(key, f"{raw!r} is not a whole number", f"use a number from {low} to {high}") from None
    if not low <= value <= high:
        raise ConfigError(key, f"{value} is out of range", f"use a number from {low} to {high}")
    return value


def _choice(env, key: str, default: str, choices: tuple[str, ...]) -> str:
    value = (env.get(key) or default).strip().lower()
    if value not in choices:
        raise ConfigError(key, f"{value!r} is not one of {', '.join(choices)}", f"use one of {', '.join(choices)}")
    return value


def _https_url(env, key: str, fix: str) -> str:
    value = _required(env, key, fix)
    if not value.startswith("https://"):
        raise ConfigError(key, f"{value!r} is not an https:// URL", fix)
    return value


def _certificate_pem(env, key: str, fix: str) -> str:
    value = _required(env, key, fix)
    from cryptography import x509

    try:
        x509.load_pem_x509_certificate(value.encode())
    except ValueError:
        raise ConfigError(key, "is not a PEM certificate", fix) from None
    return value


def table_name(env=None) -> str:
    env = os.environ if env is None else env
    return _required(env, "DEVICEGATE_TABLE", "set it to the DynamoDB table name (infra sets it)")


def from_env(env=None) -> ScepSettings:
    env = os.environ if env is None else env
    return ScepSettings(
        table=_required(env, "DEVICEGATE_TABLE", "set it to the DynamoDB table name (infra sets it)"),
        ca_secret_id=_required(
            env, "DEVICEGATE_CA_SECRET", "set it to the Secrets Manager id of the CA certificate and key"
        ),
        scep_challenge_secret_id=_required(
            env, "DEVICEGATE_SCEP_CHALLENGE_SECRET", "set it to the Secrets Manager id of the SCEP challenge"
        ),
        cert_validity_days=_int(env, "DEVICEGATE_CERT_VALIDITY_DAYS", 365, 1, MAX_CERT_VALIDITY_DAYS),
        accept_cn_uuid=_bool(env, "DEVICEGATE_ACCEPT_CN_UUID", False),
    )


def idp_from_env(env=None) -> IdpSettings:
    env = os.environ if env is None else env
    my_device = env.get("DEVICEGATE_MY_DEVICE_URL", "").strip() or None
    if my_device is not None and not my_device.startswith("https://"):
        raise ConfigError("DEVICEGATE_MY_DEVICE_URL", "is not an https:// URL", "use Fleet's https URL or unset it")
    return IdpSettings(
        table=_required(env, "DEVICEGATE_TABLE", "set it to the DynamoDB table name (infra sets it)"),
        ca_secret_id=_required(env, "DEVICEGATE_CA_SECRET", "set it to the Secrets Manager id of the CA"),
        idp_key_secret_id=_required(
            env, "DEVICEGATE_IDP_KEY_SECRET", "set it to the Secrets Manager id of the IdP signing key and certificate"
        ),
        entity_id=_https_url(env, "DEVICEGATE_IDP_ENTITY_ID", "set it to https://<domain>/saml/metadata"),
        sso_url=_https_url(env, "DEVICEGATE_SSO_URL", "set it to https://okta.<domain>/saml/sso"),
        okta_audience=_required(env, "DEVICEGATE_OKTA_AUDIENCE", "set it to the Audience URI of the Okta IdP"),
        okta_acs_url=_https_url(env, "DEVICEGATE_OKTA_ACS_URL", "set it to the ACS URL of the Okta IdP"),
        okta_sp_cert_pem=_certificate_pem(
            env, "DEVICEGATE_OKTA_SP_CERT", "set it to Okta's SP signing certificate (PEM) from the IdP's metadata"
        ),
        require_signed_requests=_bool(env, "DEVICEGATE_REQUIRE_SIGNED_REQUESTS", True),
        clock_skew_seconds=_int(env, "DEVICEGATE_CLOCK_SKEW_SECONDS", 120, 0, 600),
        key_refresh_seconds=_int(env, "DEVICEGATE_KEY_REFRESH_SECONDS", 60, 1, 3600),
        sign_response=_bool(env, "DEVICEGATE_SIGN_RESPONSE", True),
        name_id_from_device_user=_bool(env, "DEVICEGATE_NAMEID_FROM_DEVICE_USER", False),
        fail_mode=_choice(env, "DEVICEGATE_FAIL_MODE", "closed", ("closed", "open")),
        max_data_age_seconds=_int(env, "DEVICEGATE_MAX_DATA_AGE_SECONDS", 7200, 60, 30 * 86400),
        strict_policies=_bool(env, "DEVICEGATE_STRICT_POLICIES", False),
        require_device_user=_bool(env, "DEVICEGATE_REQUIRE_DEVICE_USER", False),
        allow_bypass=_bool(env, "DEVICEGATE_ALLOW_BYPASS", False),
        bypass_window_seconds=_int(env, "DEVICEGATE_BYPASS_WINDOW_SECONDS", 86400, 60, 30 * 86400),
        my_device_url=my_device,
        **cert_headers_from_env(env),
    )


def cert_headers_from_env(env=None) -> dict[str, str]:
    """Where the TLS terminator puts the verified client certificate: ALB's headers unless a
    self-hosted proxy is configured (``alb.client_cert``'s keyword arguments)."""
    env = os.environ if env is None else env
    names = {}
    for key, field_name, default in (
        ("DEVICEGATE_SERIAL_HEADER", "serial_header", "x-amzn-mtls-clientcert-serial-number"),
        ("DEVICEGATE_LEAF_HEADER", "leaf_header", "x-amzn-mtls-clientcert-leaf"),
    ):
        name = (env.get(key) or default).strip().lower()
        if not _header_name(name):
            raise ConfigError(key, f"{name!r} is not an HTTP header name", "use a header name such as x-ssl-client-serial")
        names[field_name] = name
    return {**names, "serial_format": _choice(env, "DEVICEGATE_SERIAL_FORMAT", "hex", ("hex", "decimal"))}


@frozen
class FleetSettings:
    """Fleet, for the sync, the webhook, "check again" and SCEP's "is this host known"."""

    url: str | None  # None: no Fleet configured (compliance comes only from the store)
    token_secret_id: str | None
    ca_bundle: str | None = None
    enforced_policies: str = ""
    webhook_secret_id: str | None = None
    require_known_host: bool = True
    sync_concurrency: int = 8
    max_data_age_seconds: int = 7200
    max_delete_fraction: float = 0.1
    superseded_grace_hours: float = 24.0  # older certificates of a host live this long after a newer one is used

    def __init__(self, url: str | None, token_secret_id: str | None, ca_bundle: str | None = None,
                 enforced_policies: str = "", webhook_secret_id: str | None = None,
                 require_known_host: bool = True, sync_concurrency: int = 8, max_data_age_seconds: int = 7200,
                 max_delete_fraction: float = 0.1, superseded_grace_hours: float = 24.0):
        self.__dict__.update(url=url, token_secret_id=token_secret_id, ca_bundle=ca_bundle,
                             enforced_policies=enforced_policies, webhook_secret_id=webhook_secret_id,
                             require_known_host=require_known_host, sync_concurrency=sync_concurrency,
                             max_data_age_seconds=max_data_age_seconds, max_delete_fraction=max_delete_fraction,
                             superseded_grace_hours=superseded_grace_hours)

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def enforcement(self):
        from .compliance.enforcement import Enforcement

        return Enforcement.parse(self.enforced_policies)


def fleet_from_env(env=None) -> FleetSettings:
    env = os.environ if env is None else env
    url = (env.get("DEVICEGATE_FLEET_URL") or "").strip().rstrip("/") or None
    if url is not None and not url.startswith("https://"):
        raise ConfigError("DEVICEGATE_FLEET_URL", f"{url!r} is not an https:// URL", "use your Fleet server's https URL")
    token = (env.get("DEVICEGATE_FLEET_TOKEN_SECRET") or "").strip() or None
    if url is not None and token is None:
        raise ConfigError("DEVICEGATE_FLEET_TOKEN_SECRET", "is not set while DEVICEGATE_FLEET_URL is",
                          "set it to the Secrets Manager id of a Fleet API token (an API-only user)")
    enforced = env.get("DEVICEGATE_ENFORCED_POLICIES", "")
    try:
        from .compliance.enforcement import Enforcement

        Enforcement.parse(enforced)
    except ValueError as exc:
        raise ConfigError("DEVICEGATE_ENFORCED_POLICIES", "is not understood", str(exc)) from None
    return FleetSettings(
        url=url,
        token_secret_id=token,
        ca_bundle=(env.get("DEVICEGATE_FLEET_CA_BUNDLE") or "").strip() or None,
        enforced_policies=enforced,
        webhook_secret_id=(env.get("DEVICEGATE_FLEET_WEBHOOK_SECRET") or "").strip() or None,
        require_known_host=_bool(env, "DEVICEGATE_REQUIRE_KNOWN_HOST", True),
        sync_concurrency=_int(env, "DEVICEGATE_SYNC_CONCURRENCY", 8, 1, 64),
        max_data_age_seconds=_int(env, "DEVICEGATE_MAX_DATA_AGE_SECONDS", 7200, 60, 30 * 86400),
        max_delete_fraction=_int(env, "DEVICEGATE_SYNC_MAX_DELETE_PERCENT", 10, 0, 100) / 100,
        superseded_grace_hours=_int(env, "DEVICEGATE_SUPERSEDED_GRACE_HOURS", 24, 0, 24 * 90),
    )


@lru_cache(maxsize=1)
def load_fleet() -> FleetSettings:
    return fleet_from_env()


def fleet_client(config: FleetSettings, secrets: "Secrets", *, interactive: bool = False):
    """A FleetClient for these settings, or None when no Fleet is configured. ``interactive``:
    someone is waiting (enrollment, "check again"): fail fast and fall back, never queue."""
    if not config.enabled:
        return None
    from .compliance.fleet import FleetClient

    if interactive:
        return FleetClient(config.url, secrets.get(config.token_secret_id), ca_bundle=config.ca_bundle,
                           timeout=3.0, max_attempts=2, max_backoff=1.0, retry_after_cap=2.0)
    return FleetClient(config.url, secrets.get(config.token_secret_id), ca_bundle=config.ca_bundle)


@lru_cache(maxsize=1)
def load() -> ScepSettings:
    return from_env()


@lru_cache(maxsize=1)
def load_idp() -> IdpSettings:
    return idp_from_env()


# ---------------------------------------------------------------------------- secrets


class Secrets:
    """Secrets Manager values, cached. Short TTL where rotation must take effect."""

    def __init__(self, client=None):
        self._client = client
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = allocate_lock()

    def _secrets_client(self):
        if self._client is None:
            from . import awsjson  # boto3 only where the environment has no credentials

            self._client = awsjson.client("secretsmanager", connect_timeout=2, read_timeout=3, max_attempts=3)
        return self._client

    def get(self, secret_id: str, ttl: float = 300.0) -> str:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(secret_id)
            if cached and now - cached[0] < ttl:
                return cached[1]
        value = self._secrets_client().get_secret_value(SecretId=secret_id)["SecretString"]
        with self._lock:
            self._cache[secret_id] = (now, value)
        return value


@named_tuple
class CertificateAuthority(tuple):
    __slots__ = ()
    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey

    def __new__(cls, certificate: x509.Certificate, private_key: rsa.RSAPrivateKey):
        return tuple.__new__(cls, (certificate, private_key))


@named_tuple
class SigningKey(tuple):
    __slots__ = ()
    certificate_pem: str
    private_key: rsa.RSAPrivateKey
    next_certificate_pem: str | None = None  # published in metadata during a rotation
    previous_certificate_pem: str | None = None  # still published for a while after one

    def __new__(cls, certificate_pem: str, private_key: rsa.RSAPrivateKey, next_certificate_pem: str | None = None,
                previous_certificate_pem: str | None = None):
        return tuple.__new__(cls, (certificate_pem, private_key, next_certificate_pem, previous_certificate_pem))

    def metadata_certificates(self) -> list[str]:
        """Current first, then next and previous (a verifier may hold either during a rollover)."""
        return [self.certificate_pem] + [p for p in (self.next_certificate_pem, self.previous_certificate_pem) if p]


def parse_idp_secret(secret_id: str, text: str) -> SigningKey:
    """The IdP key secret is JSON: {"certificate": PEM, "private_key": PEM, "next_certificate": PEM?,
    "previous_certificate": PEM?}. Next and previous are published in the metadata during a
    rollover (devicegate rotate idp-key); only "private_key" signs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca = parse_ca_secret(secret_id, text, what="IdP signing key")
    data = json.loads(text)
    extra = {}
    for name in ("next_certificate", "previous_certificate"):
        pem = data.get(name) or None
        if pem is not None:
            try:
                x509.load_pem_x509_certificate(pem.encode())
            except (ValueError, AttributeError):
                raise ConfigError(secret_id, f"{name} is not a PEM certificate", "store a PEM or remove it") from None
        extra[f"{name}_pem"] = pem
    return SigningKey(
        certificate_pem=ca.certificate.public_bytes(serialization.Encoding.PEM).decode(),
        private_key=ca.private_key,
        **extra,
    )


def parse_ca_secret(secret_id: str, text: str, what: str = "CA") -> CertificateAuthority:
    """The CA secret is JSON: {"certificate": PEM, "private_key": PEM}."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        data = json.loads(text)
        cert = x509.load_pem_x509_certificate(data["certificate"].encode())
        # OpenSSL's RSA key check (primality of p and q: ~35 ms of a cold start for a 2048-bit
        # key) is skipped, as cryptography allows for keys from a trusted source: the secret is
        # written by our own tooling, and whoever can write it can replace the CA outright. The
        # key must still match the certificate and sign (below), and OpenSSL still verifies
        # every CRT result, so a damaged key cannot leak through a faulty signature.
        key = serialization.load_pem_private_key(data["private_key"].encode(), password=None,
                                                 unsafe_skip_rsa_key_validation=True)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            secret_id,
            f"the {what} secret is not JSON with PEM 'certificate' and 'private_key' ({type(exc).__name__})",
            f"store the {what} as {{\"certificate\": PEM, \"private_key\": PEM}}",
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(secret_id, f"the {what} key is not RSA", "use an RSA key (SCEP clients encrypt to the CA)")
    if cert.public_key().public_numbers() != key.public_key().public_numbers() or not _signs(key, cert):
        raise ConfigError(secret_id, f"the {what} certificate and key do not match", "store the key of that certificate")
    return CertificateAuthority(certificate=cert, private_key=key)


def _signs(key: rsa.RSAPrivateKey, cert: x509.Certificate) -> bool:
    """One signature by the key verifies under the certificate (a fraction of a millisecond):
    a key whose private half is damaged fails here, at start-up, not on a client."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    probe = b"devicegate key check"
    try:
        cert.public_key().verify(key.sign(probe, padding.PKCS1v15(), hashes.SHA256()), probe, padding.PKCS1v15(),
                                 hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def parse_ca_certificate(secret_id: str, text: str) -> x509.Certificate:
    """The certificate alone from the CA secret, for readers that only check chains (the IdP):
    the private key stays unparsed."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(json.loads(text)["certificate"].encode())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            secret_id,
            f"the CA secret is not JSON with a PEM 'certificate' ({type(exc).__name__})",
            'store the CA as {"certificate": PEM, "private_key": PEM}',
        ) from None
