"""The user-scope configuration profile (``.mobileconfig``) the admin pushes to Macs with Fleet.

It gives each Mac user a device identity from devicegate's SCEP CA and makes both browsers
present it to the device host (``okta.<domain>``) without asking:

1. ``com.apple.security.root``: the SCEP CA certificate (DER), so the identity's chain builds.
2. ``com.apple.security.scep``: enrol an RSA 2048 key (non-extractable, usable by every app so
   browsers can sign with it) with the challenge, a subject CN and the SAN URI
   ``urn:device:apple:uuid:%HardwareUUID%`` that devicegate maps to the Fleet host.
3. ``com.apple.security.identitypreference``: Safari picks that identity for the device host.
4. ``com.apple.ManagedClient.preferences`` for ``com.google.Chrome``: the
   ``AutoSelectCertificateForUrls`` policy, filtered on the CA's issuer CN.

Key names, types and semantics follow Apple's profile schema (github.com/apple/device-management,
mdm/profiles/*.yaml, published as developer.apple.com/documentation/devicemanagement); the facts
that are easy to get wrong:

* ``CAFingerprint`` is the SHA-1 of the CA certificate's DER. Apple's SCEP client tells the hash
  by the fingerprint's length and knows only MD5 (16) and SHA-1 (20) bytes
  (Security framework, SecSCEP.h: "Size indicates hash type. Recognises SHA-1 and MD5."); a
  SHA-256 fingerprint fails the enrolment.
* ``%HardwareUUID%`` is expanded by macOS itself when it installs the profile (Profile Manager's
  payload variables); Fleet's own Okta conditional-access profile uses exactly
  ``urn:device:apple:uuid:%HardwareUUID%`` in a user-scope profile (fleetdm/fleet,
  server/service/conditional_access_idp.go), and it equals Fleet's host UUID on a Mac.
* An identity preference ``Name`` is matched as an exact keychain service string against the
  request URL without its query, then each parent path down to ``https://host/``, then
  ``*.parent.domains`` (Security framework, SecIdentity.cpp ``_SecIdentityCopyPossiblePaths``).
  So the name is the device origin *with* its trailing slash: it covers every path there.
* Chrome's ``AutoSelectCertificateForUrls`` is a list of *JSON strings*
  ``{"pattern": <content-settings pattern>, "filter": {"ISSUER": {"CN": ...}}}``.

Payload UUIDs are uuid5 values of the profile identifier and the device origin, so generating the
profile again (new challenge, renewed CA) yields the same UUIDs and identifiers: macOS and Fleet
treat it as the same profile and replace it in place.

Pure: no network, no environment. ``build_profile`` returns the XML plist bytes;
``profile_summary`` reads one back for the CLI (without ever echoing the challenge).
"""

from __future__ import annotations

import hashlib
import json
import plistlib
import re
import uuid
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

SAN_URI_TEMPLATE = "urn:device:apple:uuid:%HardwareUUID%"
KEY_SIZE = 2048
KEY_USAGE = 5  # Apple's bitmask: 1 signing + 4 encryption
RETRIES = 3  # Apple's default: polls after a PENDING answer (devicegate never answers PENDING)
RETRY_DELAY = 10  # seconds, Apple's default
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://devicegate/configuration-profile")
_IDENTIFIER_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")
# XML 1.0 cannot carry these at all; plistlib would refuse them with a less helpful message.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")

PAYLOAD_TYPES = {
    "ca": "com.apple.security.root",
    "scep": "com.apple.security.scep",
    "identity": "com.apple.security.identitypreference",
    "chrome": "com.apple.ManagedClient.preferences",
}


class ProfileError(ValueError):
    """An input the profile cannot be built from; the message names it and says why."""


def _text(name: str, value: str, *, max_length: int = 1024, single_line: bool = True) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ProfileError(f"{name} must be a non-empty string")
    if value != value.strip():
        raise ProfileError(f"{name} must not start or end with white space")
    if _CONTROL_RE.search(value) or (single_line and re.search(r"[\r\n\t]", value)):
        raise ProfileError(f"{name} must not contain control characters")
    if len(value) > max_length:
        raise ProfileError(f"{name} is longer than {max_length} characters")
    return value


def _https_url(name: str, value: str) -> tuple[str, str]:
    """(the URL as given, its origin) for an https URL without credentials or fragment."""
    _text(name, value, max_length=2048)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ProfileError(f"{name} {value!r} is not a URL: {exc}") from None
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise ProfileError(f"{name} must be an https:// URL with a host name, not {value!r}")
    if parts.username is not None or parts.password is not None or parts.fragment or " " in value:
        raise ProfileError(f"{name} must not carry credentials, a fragment or spaces")
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    origin = f"https://{host}" + (f":{port}" if port not in (None, 443) else "")
    return value, origin


def _ca_certificate(ca_cert_pem: str) -> x509.Certificate:
    if not isinstance(ca_cert_pem, str) or "-----BEGIN CERTIFICATE-----" not in ca_cert_pem:
        raise ProfileError("ca_cert_pem must be the SCEP CA certificate in PEM")
    try:
        certificates = x509.load_pem_x509_certificates(ca_cert_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ProfileError(f"ca_cert_pem is not a readable PEM certificate: {exc}") from None
    if len(certificates) != 1:
        raise ProfileError(f"ca_cert_pem must hold exactly one certificate (the SCEP CA), not {len(certificates)}")
    ca = certificates[0]
    try:
        is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ProfileError("ca_cert_pem is not a CA certificate (basicConstraints cA is not set)")
    return ca


def _common_name(ca: x509.Certificate) -> str:
    names = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not str(names[0].value).strip():
        raise ProfileError("the CA certificate needs exactly one subject CN: Chrome's filter matches the issuer CN")
    return str(names[0].value)


def payload_uuid(identifier: str, device_origin: str, component: str) -> str:
    """The stable PayloadUUID of one part of the profile (uppercase, as ``uuidgen`` prints)."""
    return str(uuid.uuid5(_UUID_NAMESPACE, f"{identifier}\n{device_origin}\n{component}")).upper()


def _payload(kind: str, identifier: str, origin: str, display_name: str, description: str,
             organization: str, **keys) -> dict:
    return {
        "PayloadType": PAYLOAD_TYPES[kind],
        "PayloadIdentifier": f"{identifier}.{kind}",
        "PayloadUUID": payload_uuid(identifier, origin, kind),
        "PayloadVersion": 1,
        "PayloadDisplayName": display_name,
        "PayloadDescription": description,
        "PayloadOrganization": organization,
        **keys,
    }


def build_profile(
    *,
    scep_url: str,
    challenge: str,
    ca_cert_pem: str,
    device_url: str,
    organization: str = "devicegate",
    identifier: str = "com.devicegate.conditional-access",
    subject_cn: str = "devicegate device",
) -> bytes:
    """The unsigned XML user-scope profile; the same inputs give the same bytes."""
    scep_url, _ = _https_url("scep_url", scep_url)
    _, origin = _https_url("device_url", device_url)
    challenge = _text("challenge", challenge, max_length=255)
    organization = _text("organization", organization, max_length=256)
    subject_cn = _text("subject_cn", subject_cn, max_length=64)  # X.520 ub-common-name
    identifier = _text("identifier", identifier, max_length=255)
    if not _IDENTIFIER_RE.fullmatch(identifier):
        raise ProfileError(f"identifier {identifier!r} must be reverse-DNS (e.g. com.example.conditional-access)")
    ca = _ca_certificate(ca_cert_pem)
    ca_der = ca.public_bytes(Encoding.DER)
    ca_cn = _common_name(ca)
    common = dict(identifier=identifier, origin=origin, organization=organization)

    ca_payload = _payload(
        "ca", display_name=f"Device certificate authority: {ca_cn}",
        description="The certificate authority that issues this Mac's device certificate.",
        PayloadCertificateFileName="devicegate-scep-ca.der", PayloadContent=ca_der, **common,
    )
    scep_payload = _payload(
        "scep", display_name="devicegate device certificate",
        description=f"Requests this Mac's device certificate for signing in through {origin}.",
        PayloadContent={
            "URL": scep_url,
            "Challenge": challenge,
            "Subject": [[["CN", subject_cn]]],
            "SubjectAltName": {"uniformResourceIdentifier": SAN_URI_TEMPLATE},
            "Key Type": "RSA",
            "Keysize": KEY_SIZE,
            "Key Usage": KEY_USAGE,
            "CAFingerprint": hashlib.sha1(ca_der).digest(),  # noqa: S324 - Apple's client takes MD5 or SHA-1 only
            "Retries": RETRIES,
            "RetryDelay": RETRY_DELAY,
            "KeyIsExtractable": False,
            "AllowAllAppsAccess": True,  # browsers sign the TLS handshake with the key
        },
        **common,
    )
    identity_payload = _payload(
        "identity", display_name="devicegate identity for Safari",
        description=f"Safari presents the device certificate to {origin}.",
        Name=f"{origin}/", PayloadCertificateUUID=scep_payload["PayloadUUID"], **common,
    )
    chrome_rule = json.dumps({"pattern": origin, "filter": {"ISSUER": {"CN": ca_cn}}}, separators=(",", ":"))
    chrome_payload = _payload(
        "chrome", display_name="devicegate certificate selection for Chrome",
        description=f"Chrome presents the device certificate to {origin} without asking.",
        PayloadContent={
            "com.google.Chrome": {"Forced": [{"mcx_preference_settings": {"AutoSelectCertificateForUrls": [chrome_rule]}}]}
        },
        **common,
    )
    profile = {
        "PayloadType": "Configuration",
        "PayloadScope": "User",
        "PayloadIdentifier": identifier,
        "PayloadUUID": payload_uuid(identifier, origin, "profile"),
        "PayloadVersion": 1,
        "PayloadDisplayName": f"{organization} device sign-in",
        "PayloadDescription": (
            f"Gives this Mac a device certificate so that {organization} can check the device when you "
            f"sign in through Okta. Safari and Chrome present it to {origin} only."
        ),
        "PayloadOrganization": organization,
        "PayloadContent": [ca_payload, scep_payload, identity_payload, chrome_payload],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)


def profile_summary(data: bytes) -> dict:
    """What a profile holds, JSON-ready, for the CLI. The challenge is never repeated."""
    try:
        profile = plistlib.loads(data, fmt=plistlib.FMT_XML)
    except Exception as exc:  # plistlib raises several types for bad input  # noqa: BLE001
        raise ProfileError(f"not an XML property list: {exc}") from None
    if not isinstance(profile, dict) or profile.get("PayloadType") != "Configuration":
        raise ProfileError("not a configuration profile (top-level PayloadType is not Configuration)")
    payloads = [p for p in profile.get("PayloadContent", []) if isinstance(p, dict)]
    summary: dict = {
        "identifier": profile.get("PayloadIdentifier"),
        "uuid": profile.get("PayloadUUID"),
        "scope": profile.get("PayloadScope", "System"),
        "display_name": profile.get("PayloadDisplayName"),
        "organization": profile.get("PayloadOrganization"),
        "payloads": [
            {"type": p.get("PayloadType"), "identifier": p.get("PayloadIdentifier"), "uuid": p.get("PayloadUUID")}
            for p in payloads
        ],
    }
    for payload in payloads:
        kind = payload.get("PayloadType")
        if kind == PAYLOAD_TYPES["ca"] and isinstance(payload.get("PayloadContent"), bytes):
            try:
                ca = x509.load_der_x509_certificate(payload["PayloadContent"])
            except ValueError as exc:
                summary["ca"] = {"error": f"unreadable certificate: {exc}"}
                continue
            summary["ca"] = {
                "subject": ca.subject.rfc4514_string(),
                "sha256": hashlib.sha256(payload["PayloadContent"]).hexdigest(),
                "not_after": ca.not_valid_after_utc.isoformat(),
            }
        elif kind == PAYLOAD_TYPES["scep"] and isinstance(payload.get("PayloadContent"), dict):
            content = payload["PayloadContent"]
            fingerprint = content.get("CAFingerprint")
            summary["scep"] = {
                "url": content.get("URL"),
                "subject": content.get("Subject"),
                "subject_alt_name": content.get("SubjectAltName"),
                "key_type": content.get("Key Type"),
                "key_size": content.get("Keysize"),
                "key_usage": content.get("Key Usage"),
                "ca_fingerprint_sha1": fingerprint.hex() if isinstance(fingerprint, bytes) else None,
                "challenge_set": bool(content.get("Challenge")),
                "key_extractable": content.get("KeyIsExtractable"),
                "all_apps_access": content.get("AllowAllAppsAccess"),
            }
        elif kind == PAYLOAD_TYPES["identity"]:
            summary["identity_preference"] = {"name": payload.get("Name"), "certificate_uuid": payload.get("PayloadCertificateUUID")}
        elif kind == PAYLOAD_TYPES["chrome"]:
            summary["chrome_auto_select"] = _chrome_rules(payload)
    return summary


def _chrome_rules(payload: dict) -> list:
    content = payload.get("PayloadContent")
    chrome = content.get("com.google.Chrome") if isinstance(content, dict) else None
    rules = []
    for forced in (chrome or {}).get("Forced", []) if isinstance(chrome, dict) else []:
        settings = forced.get("mcx_preference_settings") if isinstance(forced, dict) else None
        for rule in (settings or {}).get("AutoSelectCertificateForUrls", []) if isinstance(settings, dict) else []:
            try:
                rules.append(json.loads(rule))
            except (TypeError, ValueError):
                rules.append({"unreadable": str(rule)[:200]})
    return rules
