"""The str-method checks that replaced the Lambdas' module-level regular expressions (compiled on
every cold start) accept and refuse exactly what the patterns did: each against its old pattern
on edge cases and on many random strings over the interesting characters."""

from __future__ import annotations

import random
import re

import pytest

from devicegate import alb, settings, textcheck
from devicegate.saml import authn_request, pages, response
from devicegate.scep import hostid

ALPHABET = "09afAFgzGZ_-.:+/=[]!#$%&'*^`|~;TZ \t\r\n\x00\x7f\u00e9\u0660\u00b2\ud800\ufffe\uffff\U0001f600"


def _strings(seed: int, n: int = 4000, longest: int = 12, alphabet: str = ALPHABET, extra=()):
    rng = random.Random(seed)
    yield from ("", *extra)
    for _ in range(n):
        yield "".join(rng.choice(alphabet) for _ in range(rng.randint(1, longest)))


def _same(old, new, strings):
    for s in strings:
        assert bool(old(s)) == bool(new(s)), repr(s)


def test_only_is_a_fullmatched_class():
    _same(re.compile(r"[0-9A-Fa-f]+").fullmatch, lambda s: textcheck.only(s, textcheck.HEX), _strings(1))
    _same(re.compile(r"[0-9]+").fullmatch, lambda s: textcheck.only(s, textcheck.DIGITS), _strings(2))


def test_token():
    old = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
    _same(old.fullmatch, lambda s: textcheck.only(s, alb._TOKEN), _strings(3, extra=("GET", "x-a", "a b", "é")))


def _accepts(fn, *args):
    try:
        fn(*args)
    except (alb.MtlsHeaderError, ValueError):
        return False
    return True


def test_header_values_and_names_as_before():
    bad = re.compile(r"[\r\n\x00]")
    for s in _strings(4):
        assert _accepts(alb._check_header, "x-a", [s]) == (not bad.search(s)), repr(s)
    token = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
    for s in _strings(5):
        assert _accepts(alb._check_header, s, ["v"]) == bool(token.fullmatch(s)), repr(s)


def test_serials():
    hex_ = re.compile(r"[0-9A-Fa-f]+(?::[0-9A-Fa-f]+)*")
    dec = re.compile(r"[0-9]+")
    extra = ("0a:1B", "0a::1b", ":0a", "0a:", "00", "1\n", "\u0660", "\u00b2")
    for s in _strings(6, alphabet="09afAFgG:\n\u0660\u00b2 ", extra=extra):
        assert _accepts(alb._parse_serial, s, "hex") == bool(hex_.fullmatch(s)), repr(s)
        assert _accepts(alb._parse_serial, s, "decimal") == bool(dec.fullmatch(s)), repr(s)


def test_validity():
    instant = r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z"
    old = re.compile(rf"NotBefore={instant};NotAfter={instant}")
    good = "NotBefore=2026-01-02T03:04:05Z;NotAfter=2027-12-31T23:59:59Z"
    rng = random.Random(7)
    cases = [good, good + "\n", good[:-1], "x" + good, good.replace("T", " "), good.replace(";", ","),
             good.replace("2026", "2\u0660\u00b26"), good.replace("2026", "+026"), good.replace("05Z", "5Z")]
    for _ in range(3000):  # one character changed, dropped or doubled
        i = rng.randrange(len(good))
        c = rng.choice("0123456789-T:Z;= x\u0660\n")
        cases.append(rng.choice((good[:i] + c + good[i + 1:], good[:i] + good[i + 1:], good[:i] + c + good[i:])))
    for s in cases:
        match = old.fullmatch(s)
        if match is None:
            assert not _accepts(alb._parse_validity, s), repr(s)
            continue
        fields = [int(g) for g in match.groups()]
        try:
            got = alb._parse_validity(s)
        except alb.MtlsHeaderError as exc:
            assert "impossible date" in str(exc), repr(s)
            continue
        assert [got[0].year, got[0].month, got[0].day, got[0].hour, got[0].minute, got[0].second,
                got[1].year, got[1].month, got[1].day, got[1].hour, got[1].minute, got[1].second] == fields


def test_base64_der():
    old = re.compile(r"MI[A-Za-z0-9+/]+={0,2}")
    prefixes = ("MI", "MII", "M", "")
    strings = [p + s for p in prefixes for s in _strings(8, n=1500, alphabet="MIaZ09+/=\n -_")]
    _same(old.fullmatch, alb._base64_der, strings + ["MIa", "MIa=", "MIa==", "MIa===", "MI=", "MI", "MIa=b"])


def test_uuid():
    old = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
    good = "5f0c3e8a-1B2C-4D5E-8F90-A1B2C3D4E5F6"
    rng = random.Random(9)
    cases = [good, good + "\n", good.upper(), good.replace("-", ""), "-" + good]
    for _ in range(3000):
        i = rng.randrange(len(good))
        c = rng.choice("0aFg-\u0660 \n")
        cases.append(rng.choice((good[:i] + c + good[i + 1:], good[:i] + good[i + 1:], good[:i] + c + good[i:])))
    for s in cases:
        assert hostid.canonical_uuid(s) == (s.upper() if old.fullmatch(s) else None), repr(s)


def test_header_name_setting():
    old = re.compile(r"[a-z0-9][a-z0-9-]*")
    _same(old.fullmatch, settings._header_name, _strings(10, alphabet="az09-A_ \n.", extra=("-a", "a-", "x-ssl")))


def test_host_of_a_form_target():
    old = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
    extra = ("a", "a.", ".a", "a-b.c", "[::1]", "[]", "[", "]", "[::1", "::1]", "[g]", "[1]x", "x[1]")
    _same(old.fullmatch, pages._usable_host, _strings(11, alphabet="aZ09.-[]:fg_ \n\u00e9", extra=extra))


def test_paragraph_lines():
    old = re.compile(r"\r\n|\r|\n")
    for s in _strings(12, alphabet="a \r\n", longest=10):
        assert pages._paragraphs(s) == _old_paragraphs(old, s), repr(s)


def _old_paragraphs(newline, text):
    lines = newline.split(pages._clean(text).strip("\r\n"))
    paragraphs = [[]]
    for line in lines:
        if line.strip():
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    return "".join("<p>" + "<br>".join(pages._text(line) for line in p) + "</p>" for p in paragraphs if p)


def test_saml_ids():
    old = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,255}$")
    extra = ("id\n", "\n", "id\n\n", "_a", "1a", "a" * 256, "a" * 257, "a" * 256 + "\n", "-a", ".a")
    _same(old.match, authn_request._ncname, _strings(13, alphabet="aZ09_.-\n :\u00e9", extra=extra))


def test_xml_text_and_attributes():
    not_xml = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
    text_special, attr_special = re.compile("[&<>\r]"), re.compile('[&<"\t\n\r]')
    text_escapes = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#xD;"}
    attr_escapes = {"&": "&amp;", "<": "&lt;", '"': "&quot;", "\t": "&#x9;", "\n": "&#xA;", "\r": "&#xD;"}
    for s in _strings(14, alphabet='a&<>"\'\t\n\r\x00\x08\x0b\x1f\x7f\ud7ff\ud800\udfff\ue000\ufffd\ufffe\uffff\U00010000é'):
        if not_xml.search(s):
            for fn in (response._text, response._attr_value):
                with pytest.raises(ValueError):
                    fn(s)
            continue
        assert response._text(s) == text_special.sub(lambda m: text_escapes[m.group()], s), repr(s)
        assert response._attr_value(s) == attr_special.sub(lambda m: attr_escapes[m.group()], s), repr(s)


def test_every_character_xml_refuses_is_unprintable():
    """What lets response._checked skip the pattern for printable values, over all of Unicode."""
    not_xml = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
    assert not any(chr(c).isprintable() and not_xml.search(chr(c)) for c in range(0x110000))


def test_aws_region_names_and_partitions():
    from devicegate import awsjson

    region = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
    iso = re.compile(r"(us|eu)-iso[a-z]*-")
    extra = ("eu-west-1", "us-gov-west-1", "cn-north-1", "eu-west-12", "eu-west-123", "eu-west-", "eu--1", "e-west-1",
             "eu-west-\u0661", "eu-west-1\n", "us-isob-east-1", "us-iso-east-1", "eu-isoe-west-1", "us-iso1-x", "us-iso")
    strings = list(_strings(15, alphabet="euswt-1\u06612A\n", longest=14, extra=extra))
    _same(region.fullmatch, awsjson._region_name, strings)
    _same(iso.match, awsjson._unknown_partition, strings + [p + s for p in ("us-iso", "eu-iso") for s in strings])


def test_operation_method_names():
    from devicegate import awsjson

    pattern = re.compile(r"(?<!^)([A-Z])")
    for name in ("GetItem", "BatchGetItem", "TransactWriteItems", "GetSecretValue", "Query", "X"):
        assert awsjson._operation(name).__name__ == pattern.sub(r"_\1", name).lower()
    assert awsjson.Client.batch_get_item.__name__ == "batch_get_item"
