"""Structure-aware mutations of valid inputs, as hypothesis strategies.

Each strategy takes a valid input (DER, XML, JSON, bytes) and draws a damaged one: the point is
to start where parsers accept and step just outside, which random bytes almost never reach.
"""

from __future__ import annotations

import copy
import json
import zlib

from hypothesis import strategies as st
from lxml import etree

from devicegate.scep import protocol
from tests.scep_helpers import _tlv

# ------------------------------------------------------------------------------ bytes

_INTERESTING_BYTES = [0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0xFF, 0x30, 0x31, 0x04, 0xA0, 0x24, 0x3C, 0x26]


@st.composite
def byte_mutants(draw, data: bytes, max_ops: int = 4) -> bytes:
    """Bit flips, byte sets, deletions, insertions, duplications and truncation."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["flip", "set", "delete", "insert", "duplicate", "truncate", "append"]))
        if not out:
            out += draw(st.binary(min_size=1, max_size=8))
            continue
        at = draw(st.integers(0, len(out) - 1))
        if op == "flip":
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            out[at] = draw(st.sampled_from(_INTERESTING_BYTES) | st.integers(0, 255))
        elif op == "delete":
            del out[at:at + draw(st.integers(1, 16))]
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "duplicate":
            chunk = bytes(out[at:at + draw(st.integers(1, 64))])
            out[at:at] = chunk * draw(st.integers(1, 8))
        elif op == "truncate":
            del out[at:]
        else:
            out += draw(st.binary(min_size=1, max_size=32))
    return bytes(out)


# ------------------------------------------------------------------------------ DER / BER
# A node is [tag bytes, children list] (constructed) or [tag bytes, content bytes] (primitive).


def der_parse(data: bytes, pos: int = 0, end: int | None = None, depth: int = 0) -> list:
    """The DER elements of data[pos:end] as a list of nodes (raises on anything not DER)."""
    end = len(data) if end is None else end
    nodes = []
    while pos < end:
        tag, content, stop = _tlv(data, pos)
        if stop > end:
            raise ValueError("length past the end")
        body = data[content:stop]
        if tag[0] & 0x20 and depth < 64:
            nodes.append([tag, der_parse(data, content, stop, depth + 1)])
        else:
            nodes.append([tag, body])
        pos = stop
    return nodes


der_length = protocol._der_length  # minimal DER length octets


def der_encode(nodes: list) -> bytes:
    out = bytearray()
    for tag, body in nodes:
        if isinstance(body, list):
            body = der_encode(body)
        if isinstance(body, tuple):  # ("raw", header-and-body bytes): a deliberately bad encoding
            out += body[1]
            continue
        out += tag + der_length(len(body)) + body
    return bytes(out)


def _all_nodes(nodes: list, parent=None, out=None) -> list:
    out = [] if out is None else out
    for index, node in enumerate(nodes):
        out.append((nodes, index))
        if isinstance(node[1], list):
            _all_nodes(node[1], node, out)
    return out


_TAGS = [b"\x01", b"\x02", b"\x03", b"\x04", b"\x05", b"\x06", b"\x0c", b"\x13", b"\x16", b"\x17", b"\x18", b"\x1e",
         b"\x30", b"\x31", b"\x80", b"\xa0", b"\xa1", b"\xa3", b"\x24", b"\x1f\x81\x00", b"\x9f\xff\xff\xff\x7f"]


@st.composite
def der_mutants(draw, der: bytes, max_ops: int = 3) -> bytes:
    """Re-encoded DER with one to a few structural changes; enclosing lengths stay consistent
    unless the change is a length or an encoding form itself."""
    tree = der_parse(der)
    for _ in range(draw(st.integers(1, max_ops))):
        places = _all_nodes(tree)
        if not places:
            break
        siblings, index = places[draw(st.integers(0, len(places) - 1))]
        tag, body = siblings[index]
        if isinstance(body, tuple):  # already made a raw bad encoding by an earlier op: leave it as it is
            continue
        encoded = der_encode([[tag, body]])
        content = der_encode(body) if isinstance(body, list) else body
        op = draw(st.sampled_from(["drop", "dup", "swap", "retag", "empty", "replace", "length", "indefinite",
                                   "nest", "chunk", "int", "oid", "string"]))
        if op == "drop":
            del siblings[index]
        elif op == "dup":
            siblings[index:index] = [copy.deepcopy(siblings[index])] * draw(st.integers(1, 3))
        elif op == "swap" and len(siblings) > 1:
            other = draw(st.integers(0, len(siblings) - 1))
            siblings[index], siblings[other] = siblings[other], siblings[index]
        elif op == "retag":
            new_tag = draw(st.sampled_from(_TAGS))
            siblings[index] = [new_tag, body if isinstance(body, bytes) or new_tag[0] & 0x20 else content]
        elif op == "empty":
            siblings[index] = [tag, b"" if isinstance(body, bytes) else []]
        elif op == "replace":
            siblings[index] = [tag, draw(st.binary(max_size=40))] if isinstance(body, bytes) else [tag, []]
        elif op == "length":  # a lying length: longer, shorter, huge, non-minimal, indefinite on primitive
            bad = draw(st.sampled_from([
                bytes([min(len(content) + 1, 0x7F)]), bytes([min(max(len(content) - 1, 0), 0x7F)]), b"\x84\xff\xff\xff\xff",
                b"\x85\x01\x00\x00\x00\x00", b"\x81" + bytes([len(content) & 0xFF]), b"\x80", b"\xff",
                b"\x82\x00" + bytes([len(content) & 0xFF]),
            ]))
            siblings[index] = [tag, ("raw", tag + bad + content)]
        elif op == "indefinite":
            if tag[0] & 0x20:
                siblings[index] = [tag, ("raw", tag + b"\x80" + content + b"\x00\x00")]
            else:
                siblings[index] = [tag, ("raw", tag + b"\x80" + content)]  # indefinite primitive: illegal
        elif op == "nest":  # deep nesting, definite or indefinite
            depth = draw(st.sampled_from([8, 39, 41, 64, 200, 1000]))
            if draw(st.booleans()):
                raw = b"\x30\x80" * depth + encoded + b"\x00\x00" * depth
            else:
                raw = encoded
                for _ in range(depth):
                    raw = b"\x30" + der_length(len(raw)) + raw
            siblings[index] = [tag, ("raw", raw)]
        elif op == "chunk":  # BER constructed string of chunks
            size = draw(st.integers(1, 16))
            chunks = b"".join(b"\x04" + der_length(len(content[i:i + size])) + content[i:i + size]
                              for i in range(0, len(content), size))
            ctag = bytes([tag[0] | 0x20]) + tag[1:]
            indefinite = draw(st.booleans())
            raw = ctag + (b"\x80" + chunks + b"\x00\x00" if indefinite else der_length(len(chunks)) + chunks)
            siblings[index] = [tag, ("raw", raw)]
        elif op == "int":
            value = draw(st.sampled_from([b"", b"\x00", b"\xff", b"\x80", b"\x00\x00\x01", b"\x7f" * 40, b"\x01" * 300]))
            siblings[index] = [b"\x02", value]
        elif op == "oid":
            value = draw(st.sampled_from([b"", b"\x80", b"\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01\x80",
                                          b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02", b"\xff" * 30]))
            siblings[index] = [b"\x06", value]
        elif op == "string":
            stag = draw(st.sampled_from([b"\x0c", b"\x13", b"\x16", b"\x1e", b"\x04", b"\x1c"]))
            siblings[index] = [stag, draw(st.sampled_from([b"", b"\xff\xfe", b"\xc3\x28", b"\x00" * 5, b"A" * 300,
                                                           "\u00e9\U0001f600".encode(), b"\xd8\x00"]))]
    return der_encode(tree)


# ------------------------------------------------------------------------------ XML

BILLION_LAUGHS = (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
                  + b"".join(b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10 if i > 1 else b"&lol;" * 10)
                             for i in range(1, 10))
                  + b"]>\n")
XXE = b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
DTD_ONLY = b'<!DOCTYPE AuthnRequest SYSTEM "http://127.0.0.1:9/x.dtd">\n'


def _strip_decl(xml: bytes) -> bytes:
    if xml.startswith(b"<?xml"):
        return xml[xml.index(b"?>") + 2:].lstrip()
    return xml


@st.composite
def xml_text_mutants(draw, xml: bytes) -> bytes:
    """Text-level attacks: DTDs, entity bombs, XXE, comments, PIs, encodings, deep nesting."""
    body = _strip_decl(xml)
    op = draw(st.sampled_from(["laughs", "xxe", "dtd", "comment", "pi", "cdata", "encoding", "bom", "latin1",
                               "nest", "entity_ref", "trailing", "wide_attrs", "doctype_case", "nul"]))
    close = body.index(b">")
    if op == "laughs":
        root_tag = body[1:body.index(b" ")]
        return BILLION_LAUGHS + body[:close + 1] + b"&lol9;" + body[close + 1:] if root_tag else body
    if op == "xxe":
        return XXE + body[:close + 1] + b"&x;" + body[close + 1:]
    if op == "dtd":
        return DTD_ONLY + body
    if op == "doctype_case":
        return b"<!DocType x>" + body
    if op == "comment":
        at = draw(st.integers(close + 1, len(body) - 1))
        return body[:at] + b"<!---->" + body[at:]
    if op == "pi":
        return b"<?evil data?>" + body if draw(st.booleans()) else body + b"<?evil?>"
    if op == "cdata":
        at = body.index(b"</", close)
        return body[:at] + b"<![CDATA[x]]>" + body[at:]
    if op == "encoding":
        enc = draw(st.sampled_from(["UTF-16", "UTF-16LE", "ISO-8859-1", "EBCDIC-US", "UTF-7", "bogus"]))
        decl = f'<?xml version="1.0" encoding="{enc}"?>'.encode()
        if enc.startswith("UTF-16") and draw(st.booleans()):
            return (decl.decode() + body.decode("utf-8")).encode("utf-16")
        return decl + body
    if op == "bom":
        return b"\xef\xbb\xbf" + body
    if op == "latin1":
        at = draw(st.integers(0, len(body) - 1))
        return body[:at] + draw(st.sampled_from([b"\xe9", b"\xff\xfe", b"\xc0\x80", b"\xed\xa0\x80"])) + body[at:]
    if op == "nest":
        depth = draw(st.sampled_from([100, 255, 300, 5000]))
        at = body.index(b"</", close)
        return body[:at] + b"<a>" * depth + b"</a>" * depth + body[at:]
    if op == "entity_ref":
        at = body.index(b"</", close)
        return body[:at] + draw(st.sampled_from([b"&amp;", b"&#0;", b"&#x1F600;", b"&undefined;", b"&#xD800;"])) + body[at:]
    if op == "trailing":
        return body + draw(st.sampled_from([b"<again/>", b"\x00", b"garbage", b" "]))
    if op == "wide_attrs":
        attrs = b" ".join(b'a%d="%s"' % (i, b"x" * 10) for i in range(draw(st.sampled_from([10, 1000, 3000]))))
        return body[:close] + b" " + attrs + body[close:]
    return body.replace(b">", b">\x00", 1)


_SAML_ATTRS = ["ID", "Version", "IssueInstant", "Destination", "AssertionConsumerServiceURL", "ProtocolBinding",
               "ForceAuthn", "Format", "Algorithm", "URI"]
_ODD_VALUES = ["", " ", "2.0 ", "1.1", "0", "true", "1", "-1", "id with space", "9" * 300, "_x", "\u202e", "#",
               "0001-01-01T00:00:00Z", "9999-12-31T23:59:59+14:00", "2024-02-30T00:00:00Z", "2024-01-01T00:00:00",
               "https://evil.example.com/acs", "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect", "x" * 5000,
               "\U0001f600", "http://www.w3.org/2000/09/xmldsig#rsa-sha1", "#other"]


@st.composite
def xml_tree_mutants(draw, xml: bytes, max_ops: int = 3) -> bytes:
    """Tree-level changes: attributes, elements, text, namespaces; serialized back to bytes."""
    root = etree.fromstring(xml)
    for _ in range(draw(st.integers(1, max_ops))):
        nodes = list(root.iter())
        node = nodes[draw(st.integers(0, len(nodes) - 1))]
        op = draw(st.sampled_from(["attr", "del_attr", "text", "dup", "drop", "child", "rename", "ns", "tail",
                                   "move_up"]))
        if op == "attr":
            node.set(draw(st.sampled_from(_SAML_ATTRS)), draw(st.sampled_from(_ODD_VALUES) | st.text(max_size=30)
                                                               .filter(lambda s: all(_xml_char(c) for c in s))))
        elif op == "del_attr" and node.attrib:
            del node.attrib[draw(st.sampled_from(sorted(node.attrib)))]
        elif op == "text":
            node.text = draw(st.sampled_from(["", " ", "a" * 300, "alice@example.com ", "\u00a0bob", "evil\u200b",
                                              "x\ty", "\U0001f600"]) | st.text(max_size=20)
                             .filter(lambda s: all(_xml_char(c) for c in s)))
        elif op == "dup" and node is not root:
            node.addnext(copy.deepcopy(node))
        elif op == "drop" and node is not root:
            node.getparent().remove(node)
        elif op == "child":
            tag = draw(st.sampled_from(["{urn:oasis:names:tc:SAML:2.0:assertion}Issuer",
                                        "{urn:oasis:names:tc:SAML:2.0:assertion}Subject",
                                        "{urn:oasis:names:tc:SAML:2.0:assertion}NameID",
                                        "{urn:oasis:names:tc:SAML:2.0:protocol}Extensions",
                                        "{http://www.w3.org/2000/09/xmldsig#}Signature", "plain"]))
            etree.SubElement(node, tag).text = "x"
        elif op == "rename":
            node.tag = draw(st.sampled_from(["{urn:oasis:names:tc:SAML:2.0:protocol}AuthnRequest",
                                             "{urn:oasis:names:tc:SAML:2.0:protocol}LogoutRequest",
                                             "{urn:oasis:names:tc:SAML:1.0:protocol}AuthnRequest", "AuthnRequest"]))
        elif op == "ns":
            node.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
        elif op == "tail" and node is not root:
            node.tail = draw(st.sampled_from(["", " ", "junk", "\n\n"]))
        elif op == "move_up" and node.getparent() is not None and node.getparent() is not root:
            parent = node.getparent()
            parent.remove(node)
            parent.addprevious(node)
    return etree.tostring(root)


def _xml_char(ch: str) -> bool:
    cp = ord(ch)
    return cp in (0x9, 0xA, 0xD) or 0x20 <= cp <= 0xD7FF or 0xE000 <= cp <= 0xFFFD or 0x10000 <= cp <= 0x10FFFF


def signature_wrapping(signed_xml: bytes, forged_id: str = "forged", forged_user: str = "mallory@example.com"):
    """Classic XML signature wrapping shapes around a validly signed document (a list of bytes)."""
    ds = "{http://www.w3.org/2000/09/xmldsig#}"
    saml = "{urn:oasis:names:tc:SAML:2.0:assertion}"
    samlp = "{urn:oasis:names:tc:SAML:2.0:protocol}"
    out = []
    # 1. a forged root; the signed original hidden inside Extensions
    original = etree.fromstring(signed_xml)
    forged = copy.deepcopy(original)
    forged.set("ID", forged_id)
    forged.find(f"{ds}Signature").getparent().remove(forged.find(f"{ds}Signature"))
    for name_id in forged.iter(f"{saml}NameID"):
        name_id.text = forged_user
    ext = etree.SubElement(forged, f"{samlp}Extensions")
    ext.append(original)
    out.append(etree.tostring(forged))
    # 2. the same, but the forged root keeps the original's ID (duplicate IDs)
    forged2 = copy.deepcopy(forged)
    forged2.set("ID", original.get("ID"))
    out.append(etree.tostring(forged2))
    # 3. the original's Signature moved onto a forged root that references the original's ID
    forged3 = copy.deepcopy(original)
    for name_id in forged3.iter(f"{saml}NameID"):
        name_id.text = forged_user
    signature = forged3.find(f"{ds}Signature")
    forged3.remove(signature)
    inner = copy.deepcopy(original)
    inner.remove(inner.find(f"{ds}Signature"))
    signature.append(inner)  # signed content smuggled inside the Signature element
    forged3.insert(1, signature)
    out.append(etree.tostring(forged3))
    # 4. a second Signature element
    two = copy.deepcopy(original)
    two.find(f"{ds}Signature").addnext(copy.deepcopy(two.find(f"{ds}Signature")))
    out.append(etree.tostring(two))
    # 5. signed content edited after signing (NameID changed)
    edited = copy.deepcopy(original)
    for name_id in edited.iter(f"{saml}NameID"):
        name_id.text = forged_user
    out.append(etree.tostring(edited))
    return out


# ------------------------------------------------------------------------------ DEFLATE


def deflate(data: bytes, wbits: int = -15) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return compressor.compress(data) + compressor.flush()


def deflate_bomb(size: int = 50 * 1024 * 1024) -> bytes:
    """Raw DEFLATE of `size` zero bytes (about 1000:1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b"\x00" * (1024 * 1024)
    out = [compressor.compress(chunk) for _ in range(size // len(chunk))]
    return b"".join(out) + compressor.flush()


# ------------------------------------------------------------------------------ JSON

_WRONG_TYPES = [None, True, False, 0, -1, 1.5, 2**63, 10**40, "", "x", "\ud800", [], {}, [None], {"": None},
                "2024-01-01T00:00:00Z", "pass", "fail", "FAIL", float("nan"), float("inf"), -0.0]


def _json_paths(doc, path=()):
    yield path
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _json_paths(value, path + (key,))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from _json_paths(value, path + (index,))


def _get(doc, path):
    for step in path:
        doc = doc[step]
    return doc


@st.composite
def json_value_mutants(draw, doc, max_ops: int = 3):
    """The document with a few values replaced by wrong types, keys dropped or lists changed."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, max_ops))):
        paths = list(_json_paths(doc))
        path = paths[draw(st.integers(0, len(paths) - 1))]
        if not path:
            if draw(st.booleans()):
                doc = draw(st.sampled_from(_WRONG_TYPES))
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        op = draw(st.sampled_from(["type", "type", "drop", "dup", "deep", "long", "empty"]))
        if op == "type":
            parent[key] = draw(st.sampled_from(_WRONG_TYPES))
        elif op == "drop":
            del parent[key]
        elif op == "dup" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif op == "deep":  # deeper than this is json_text_mutants' job (Python recursion)
            value = None
            for _ in range(draw(st.sampled_from([10, 150]))):
                value = [value]
            parent[key] = value
            break
        elif op == "long":
            parent[key] = draw(st.sampled_from(["x" * 100_000, ["y"] * 20_000]))
        elif op == "empty":
            parent[key] = type(parent[key])() if isinstance(parent[key], (list, dict, str)) else None
    return doc


def json_dumps(doc) -> bytes:
    """JSON text for any Python value, including NaN/Infinity and lone surrogates (escaped)."""
    try:
        return json.dumps(doc, allow_nan=True).encode("ascii")
    except RecursionError:
        return b"[" * 3000 + b"]" * 3000


@st.composite
def json_text_mutants(draw, text: bytes):
    """Text-level JSON damage: duplicate keys, NaN, BOM, non-UTF-8, truncation, huge numbers, nesting."""
    op = draw(st.sampled_from(["dupkey", "nan", "bom", "latin1", "truncate", "bignum", "nest", "utf16", "trailing",
                               "bytes"]))
    if op == "dupkey":
        return text.replace(b'{"', b'{"id": 1, "', 1)  # a second "id" where the object has one
    if op == "nan":
        return text.replace(b"1", b"NaN", 1) if b"1" in text else b"NaN"
    if op == "bom":
        return b"\xef\xbb\xbf" + text
    if op == "latin1":
        at = draw(st.integers(0, max(len(text) - 1, 0)))
        return text[:at] + b"\xe9\xff" + text[at:]
    if op == "truncate":
        return text[:draw(st.integers(0, max(len(text) - 1, 0)))]
    if op == "bignum":
        return text.replace(b"1", b"1" + b"0" * draw(st.sampled_from([20, 400, 5000])), 1)
    if op == "nest":
        depth = draw(st.sampled_from([100, 1000, 100_000]))
        return b"[" * depth + b"]" * depth if draw(st.booleans()) else b'{"a":' * depth + b"1" + b"}" * depth
    if op == "utf16":
        return text.decode("utf-8", "replace").encode("utf-16")
    if op == "trailing":
        return text + draw(st.sampled_from([b"x", b"{}", b"\x00", b" \n"]))
    return draw(byte_mutants(text))

