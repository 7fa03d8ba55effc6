"""``devicegate rotate idp-key``: a two-key rollover of the SAML signing key through Okta.

1. **stage**: a new key and certificate go into the signing-key secret as ``next``; the IdP
   keeps signing with the current key and its metadata publishes both.
2. **activate**: the IdP starts signing with the new key (the secret's ``certificate`` and
   ``private_key``; the old certificate stays in the metadata as ``previous``), and as soon as
   it does, Okta's IdP is switched to trust the new certificate. Okta trusts exactly one
   certificate per IdP, so logins that cross the switch fail once: at most the IdP's key
   refresh interval (DEVICEGATE_KEY_REFRESH_SECONDS, 60 s in AWS) — run it at a quiet time.
3. **finish**: the old certificate leaves the metadata.

With no ``--step`` it does stage and activate, waiting for the IdP in between, then reports.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from .targets import OpsError, _same_cert

VALIDITY = timedelta(days=3 * 365)


def _fingerprint(pem: str | None) -> str | None:
    if not pem:
        return None
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex(":")[:47]


def _new_pair(now: datetime) -> tuple[str, str]:
    from ..local import pki

    key = pki.new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"devicegate IdP signing key {now:%Y-%m-%d}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return pki.pem_cert(cert), pki.pem_key(key)


def _read(target) -> dict:
    try:
        return json.loads(target.secret(target.idp_key_secret_id))
    except OpsError:
        raise
    except Exception as exc:  # noqa: BLE001 - say which secret and why
        raise OpsError(f"cannot read the IdP signing-key secret {target.idp_key_secret_id}: {exc}") from None


def _write(target, data: dict) -> None:
    text = json.dumps(data)
    target.put_secret(target.idp_key_secret_id, text)
    if target.kind == "local":  # the stack loads its key material from the state dir on the next start
        from ..local import pki
        from ..local.stack import ROTATED_IDP_SECRET

        pki.write_private(target.state_dir / ROTATED_IDP_SECRET, text)


def status(target) -> dict:
    data = _read(target)
    try:
        trusted = target.okta_trust()[0]
    except OpsError as exc:
        trusted, okta_note = None, str(exc)
    else:
        okta_note = None
    out = {
        "current": _fingerprint(data.get("certificate")),
        "next": _fingerprint(data.get("next_certificate")),
        "previous": _fingerprint(data.get("previous_certificate")),
        "okta_trusts": _fingerprint(trusted),
        "stage": _stage(data, trusted),
    }
    if okta_note:
        out["okta_note"] = okta_note
    return out


def _stage(data: dict, trusted: str | None) -> str:
    if data.get("next_certificate"):
        return "staged"
    if trusted is not None and not _same_cert(trusted, data["certificate"]):
        return "activating (the IdP signs with the new key, Okta not switched yet: run --step activate)"
    return "activated (run --step finish)" if data.get("previous_certificate") else "steady"


def stage(target, now: datetime | None = None) -> dict:
    data = _read(target)
    if data.get("next_certificate"):
        raise OpsError("a next key is already staged: run --step activate (or remove next_* from the secret)")
    if data.get("previous_certificate") and not _same_cert(target.okta_trust()[0], data["certificate"]):
        raise OpsError("an activation is unfinished (Okta does not trust the signing key yet): run --step activate")
    cert_pem, key_pem = _new_pair(now or datetime.now(timezone.utc))
    data.update(next_certificate=cert_pem, next_private_key=key_pem)
    data.pop("previous_certificate", None)
    _write(target, data)
    return {"step": "stage", "next": _fingerprint(cert_pem)}


def activate(target, *, wait_seconds: float | None = None, progress=lambda message: None) -> dict:
    data = _read(target)
    if data.get("next_certificate") and data.get("next_private_key"):
        new_cert, old_cert = data["next_certificate"], data["certificate"]
        _write(target, {"certificate": new_cert, "private_key": data["next_private_key"],
                        "previous_certificate": old_cert})
    elif data.get("previous_certificate"):  # promoted before, Okta not switched yet: resume
        new_cert, old_cert = data["certificate"], data["previous_certificate"]
    else:
        raise OpsError("no key is staged: run --step stage first")
    progress("the IdP signs with the new key once it re-reads its secret; waiting for its metadata to say so")
    waited = _wait_for_metadata(target, new_cert, wait_seconds)
    progress("switching Okta to the new certificate")
    okta = target.set_okta_trust(new_cert)
    return {"step": "activate", "current": _fingerprint(new_cert), "previous": _fingerprint(old_cert),
            "idp_switched_after_seconds": round(waited, 1), **okta}


def finish(target) -> dict:
    data = _read(target)
    if data.get("next_certificate"):
        raise OpsError("a key is staged but not active: run --step activate first")
    trusted = target.okta_trust()[0]
    if not _same_cert(trusted, data["certificate"]):
        raise OpsError("Okta does not trust the current signing certificate yet: run --step activate")
    removed = data.pop("previous_certificate", None)
    _write(target, data)
    return {"step": "finish", "removed_previous": _fingerprint(removed)}


def rotate(target, *, progress=lambda message: None, wait_seconds: float | None = None) -> dict:
    staged = stage(target)
    progress(f"staged a new key ({staged['next']}); the metadata publishes it next to the current one")
    activated = activate(target, wait_seconds=wait_seconds, progress=progress)
    return {**staged, **activated, "step": "rotate (stage + activate); run --step finish later"}


def _wait_for_metadata(target, cert_pem: str, wait_seconds: float | None) -> float:
    """Until the IdP's metadata lists ``cert_pem`` first (it signs with it)."""
    from ..saml import xmlsafe
    from .doctor import fetch, metadata_certificates

    deployment = target.deployment()
    limit = wait_seconds if wait_seconds is not None else (20.0 if target.kind == "local" else 150.0)
    started = time.monotonic()
    want = x509.load_pem_x509_certificate(cert_pem.encode())
    while True:
        try:
            _, _, body = fetch(deployment.metadata_url, deployment.tls_ca_pem)
            if metadata_certificates(xmlsafe.parse(body))[:1] == [want]:
                return time.monotonic() - started
        except Exception:  # noqa: BLE001 - keep polling until the limit
            pass
        if time.monotonic() - started > limit:
            raise OpsError(f"the IdP did not start signing with the new key within {limit:.0f} s; Okta was NOT "
                           "switched. Check the idp function's log, then run --step activate again")
        time.sleep(0.5)
