"""Runtime settings: environment variables (set by infra, or by the local stack) plus secrets
from Secrets Manager, fetched once per container and cached.

Every problem is a ConfigError that names the variable and says how to fix it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

MAX_CERT_VALIDITY_DAYS = 398


class ConfigError(RuntimeError):
    def __init__(self, key: str, problem: str, fix: str):
        super().__init__(f"{key}: {problem}. Fix: {fix}")
        self.key = key


@dataclass(frozen=True)
class Settings:
    table: str
    ca_secret_id: str
    scep_challenge_secret_id: str
    cert_validity_days: int = 365
    accept_cn_uuid: bool = False


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


def from_env(env=None) -> Settings:
    env = os.environ if env is None else env
    return Settings(
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


@lru_cache(maxsize=1)
def load() -> Settings:
    return from_env()


# ---------------------------------------------------------------------------- secrets


class Secrets:
    """Secrets Manager values, cached. Short TTL where rotation must take effect."""

    def __init__(self, client=None):
        self._client = client
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def _secrets_client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "secretsmanager", config=Config(connect_timeout=2, read_timeout=3, retries={"mode": "standard"})
            )
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


@dataclass(frozen=True)
class CertificateAuthority:
    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey


def parse_ca_secret(secret_id: str, text: str) -> CertificateAuthority:
    """The CA secret is JSON: {"certificate": PEM, "private_key": PEM}."""
    try:
        data = json.loads(text)
        cert = x509.load_pem_x509_certificate(data["certificate"].encode())
        key = serialization.load_pem_private_key(data["private_key"].encode(), password=None)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            secret_id,
            f"the CA secret is not JSON with PEM 'certificate' and 'private_key' ({type(exc).__name__})",
            "store the CA as {\"certificate\": PEM, \"private_key\": PEM}",
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(secret_id, "the CA key is not RSA", "SCEP clients encrypt to the CA: use an RSA key")
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise ConfigError(secret_id, "the CA certificate and key do not match", "store the key of that certificate")
    return CertificateAuthority(certificate=cert, private_key=key)
