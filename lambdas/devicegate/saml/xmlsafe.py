"""Parsing XML that arrives from outside: no DTD, no entities, no network, bounded size.

Comments and processing instructions are refused too: exclusive c14n drops comments, so a
comment inside a signed text node (``user@evil.com<!---->.example.com``) would survive a valid
signature and split the text a naive reader sees. Okta never sends either.
"""

from __future__ import annotations

from _thread import _local  # threading.local itself (threading.py takes it from here), without threading

from lxml import etree

MAX_XML_BYTES = 64 * 1024


class UnsafeXml(ValueError):
    pass


_PARSER_OPTIONS = dict(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_blank_text=False,
    collect_ids=False,
)


_local = _local()


def _parser() -> etree.XMLParser:
    """One parser per thread, made on first use: an lxml parser may be reused for one document
    after another, but not by two threads at once."""
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = etree.XMLParser(**_PARSER_OPTIONS)
    return parser


def parse(data: bytes, *, max_bytes: int = MAX_XML_BYTES) -> etree._Element:
    if len(data) > max_bytes:
        raise UnsafeXml(f"XML of {len(data)} bytes exceeds {max_bytes}")
    # Refuse before parsing: a DOCTYPE is how entity expansion and external fetches start.
    lowered = data.lower()
    if b"<!doctype" in lowered or b"<!entity" in lowered:
        raise UnsafeXml("XML with a DOCTYPE or entity declaration is refused")
    parser = _parser()
    try:
        root = etree.fromstring(data, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise UnsafeXml(f"not well-formed XML: {str(exc)[:120]}") from None
    docinfo = root.getroottree().docinfo  # a new DocInfo object on every access
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise UnsafeXml("XML with a DOCTYPE is refused")
    # Only those node kinds, filtered inside lxml; the first in document order decides the message.
    for node in root.iter(etree.Comment, etree.ProcessingInstruction, etree.Entity):
        if isinstance(node, etree._Entity):
            raise UnsafeXml("XML with entity references is refused")
        raise UnsafeXml("XML with comments or processing instructions is refused")
    # Siblings of the root (comments, PIs before/after it) count too.
    for sibling in (*root.itersiblings(preceding=True), *root.itersiblings()):
        raise UnsafeXml("XML with content outside the root element is refused")
    return root


def text_of(element: etree._Element) -> str:
    """The whole text of a leaf element; elements with children are not leaves."""
    if len(element):
        raise UnsafeXml(f"{etree.QName(element).localname} must hold only text")
    return element.text or ""
