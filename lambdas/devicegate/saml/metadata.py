"""The IdP's SAML 2.0 metadata: what Okta (or an admin) needs to trust this IdP."""

from __future__ import annotations

from lxml import etree

MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"
REDIRECT_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
POST_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
CONTENT_TYPE = "application/samlmetadata+xml"
NAME_ID_FORMATS = (
    "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
    "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
)


def _cert_base64(pem: str) -> str:
    lines = [line.strip() for line in pem.strip().splitlines()]
    return "".join(line for line in lines if line and not line.startswith("-----"))


def build_metadata(*, entity_id: str, sso_url: str, signing_certs: list[str]) -> bytes:
    """``signing_certs``: the current certificate first, then the next one during a rotation."""
    root = etree.Element(f"{{{MD}}}EntityDescriptor", nsmap={"md": MD, "ds": DS}, entityID=entity_id)
    idp = etree.SubElement(
        root, f"{{{MD}}}IDPSSODescriptor", WantAuthnRequestsSigned="true", protocolSupportEnumeration=PROTOCOL
    )
    for pem in signing_certs:
        descriptor = etree.SubElement(idp, f"{{{MD}}}KeyDescriptor", use="signing")
        key_info = etree.SubElement(descriptor, f"{{{DS}}}KeyInfo")
        data = etree.SubElement(key_info, f"{{{DS}}}X509Data")
        etree.SubElement(data, f"{{{DS}}}X509Certificate").text = _cert_base64(pem)
    for name_format in NAME_ID_FORMATS:
        etree.SubElement(idp, f"{{{MD}}}NameIDFormat").text = name_format
    for binding in (REDIRECT_BINDING, POST_BINDING):
        etree.SubElement(idp, f"{{{MD}}}SingleSignOnService", Binding=binding, Location=sso_url)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
