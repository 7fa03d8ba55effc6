"""The host a device certificate names: ``urn:device:apple:uuid:<UUID>`` in its SAN.

Kept apart from the authority so that readers of certificates (``/healthz``) import only this,
not the SCEP protocol stack (nor, until a certificate arrives, cryptography).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

from ..textcheck import HEX, only

UUID_URI_PREFIX = "urn:device:apple:uuid:"


def canonical_uuid(text: str) -> str | None:
    parts = text.split("-")  # 8-4-4-4-12 hex digits
    if [len(p) for p in parts] == [8, 4, 4, 4, 12] and all(only(p, HEX) for p in parts):
        return text.upper()
    return None


def host_uuid_of(cert: x509.Certificate) -> str | None:
    from cryptography import x509  # loaded already: the caller holds a parsed certificate

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(UUID_URI_PREFIX):
            return canonical_uuid(uri[len(UUID_URI_PREFIX):])
    return None
