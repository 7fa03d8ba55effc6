"""The host a device certificate names: ``urn:device:apple:uuid:<UUID>`` in its SAN.

Kept apart from the authority so that readers of certificates (``/healthz``) import only this,
not the SCEP protocol stack (nor, until a certificate arrives, cryptography).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

UUID_URI_PREFIX = "urn:device:apple:uuid:"
_UUID_RE = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


def canonical_uuid(text: str) -> str | None:
    return text.upper() if _UUID_RE.fullmatch(text) else None


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
