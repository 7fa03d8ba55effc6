"""A small reader of definite-length DER/BER elements, for the SCEP request path.

SCEP requests are read with this instead of a general ASN.1 library: the handler needs a dozen
fields of a fixed shape, and an object model for the whole message cost several times the RSA
operations of an enrollment. Everything here works on offsets into one ``bytes`` object and
copies only the values asked for; every length is checked against its parent's end, so no read
runs past the element it belongs to. Indefinite lengths are an error here: the caller rewrites
them first (``protocol.definite_lengths``).

An element is ``(tag, start, contents, end)``: its first identifier octet, and offsets of its
first octet, of its contents and just past it. A multi-octet (high-number) tag keeps its first
octet, which never equals a tag this module's callers ask for, so it is never taken for one.
"""

from __future__ import annotations

Element = tuple[int, int, int, int]

SEQUENCE, SET, INTEGER, OCTET_STRING, OID, NULL = 0x30, 0x31, 0x02, 0x04, 0x06, 0x05
# String types that appear in SCEP attributes and CSRs
UTF8_STRING, PRINTABLE_STRING, TELETEX_STRING, IA5_STRING, UNIVERSAL_STRING, BMP_STRING = 0x0C, 0x13, 0x14, 0x16, 0x1C, 0x1E


class DerError(ValueError):
    """The bytes are not the element they should be."""


def element(data: bytes, pos: int, limit: int) -> Element:
    """The element starting at ``pos``, which must end by ``limit``."""
    start = pos
    if pos >= limit:
        raise DerError("truncated tag")
    tag = data[pos]
    pos += 1
    if tag & 0x1F == 0x1F:
        while pos < limit and data[pos] & 0x80:
            pos += 1
        pos += 1
    if pos >= limit:
        raise DerError("truncated length")
    length = data[pos]
    pos += 1
    if length & 0x80:
        count = length & 0x7F
        if count == 0:
            raise DerError("indefinite length")
        if count > 4 or pos + count > limit:
            raise DerError("bad length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    end = pos + length
    if end > limit:
        raise DerError("length runs past its parent")
    return tag, start, pos, end


def whole(data: bytes, tag: int, what: str) -> Element:
    """``data`` as exactly one element with this tag."""
    found = element(data, 0, len(data))
    if found[3] != len(data):
        raise DerError(f"{len(data) - found[3]} bytes after the {what}")
    if found[0] != tag:
        raise DerError(f"{what} has tag 0x{found[0]:02x}, expected 0x{tag:02x}")
    return found


def children(data: bytes, parent: Element) -> list[Element]:
    """The elements inside a constructed element."""
    if not parent[0] & 0x20:
        raise DerError(f"tag 0x{parent[0]:02x} is not constructed")
    result = []
    pos, end = parent[2], parent[3]
    while pos < end:
        child = element(data, pos, end)
        result.append(child)
        pos = child[3]
    return result


def fields(data: bytes, parent: Element, tags: tuple[int, ...], what: str) -> list[Element]:
    """The children of ``parent``, which must carry exactly these tags in this order."""
    found = children(data, parent)
    if tuple(child[0] for child in found) != tags:
        raise DerError(f"{what} is not shaped as expected")
    return found


def contents(data: bytes, el: Element) -> bytes:
    return data[el[2]:el[3]]


def encoded(data: bytes, el: Element) -> bytes:
    return data[el[1]:el[3]]


def primitive(data: bytes, el: Element, tag: int, what: str) -> bytes:
    """The contents of an element that must have this (primitive) tag."""
    if el[0] != tag:
        raise DerError(f"{what} has tag 0x{el[0]:02x}, expected 0x{tag:02x}")
    return data[el[2]:el[3]]


def integer(data: bytes, el: Element, what: str) -> int:
    octets = primitive(data, el, INTEGER, what)
    if not octets:
        raise DerError(f"{what} is an empty INTEGER")
    return int.from_bytes(octets, "big", signed=True)


def algorithm(data: bytes, el: Element, what: str) -> tuple[bytes, Element | None]:
    """An AlgorithmIdentifier: (OID contents, its parameters element or None)."""
    if el[0] != SEQUENCE:
        raise DerError(f"{what} is not an AlgorithmIdentifier")
    parts = children(data, el)
    if not 1 <= len(parts) <= 2 or parts[0][0] != OID:
        raise DerError(f"{what} is not an AlgorithmIdentifier")
    return contents(data, parts[0]), (parts[1] if len(parts) == 2 else None)


def oid(dotted: str) -> bytes:
    """The contents octets of an OBJECT IDENTIFIER."""
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray()
    for arc in (arcs[0] * 40 + arcs[1], *arcs[2:]):
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return bytes(body)


def dotted(octets: bytes) -> str:
    """An OBJECT IDENTIFIER's contents as dotted text (for messages; never for decisions)."""
    arcs, value = [], 0
    for octet in octets[:64]:
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            if not arcs:
                first = min(value // 40, 2)
                arcs += [first, value - 40 * first]
            else:
                arcs.append(value)
            value = 0
    text = ".".join(str(arc) for arc in arcs) or "(empty OID)"
    return text if len(octets) <= 64 else text + "..."
