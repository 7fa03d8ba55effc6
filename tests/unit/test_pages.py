"""The IdP's HTML pages: escaping, structure, CSP, and what each page offers."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devicegate.compliance.decision import ALLOW, BLOCK, UNKNOWN, Decision, PolicyResult, Reason
from devicegate.saml import pages

ACS = "https://acme.okta.com/sso/saml2/0oa1b2c3d4E5f6G7h8i9"
MY_DEVICE = "https://fleet.example.com/device/8f1c2b6e-token"
HOSTILE = "\"'<>&amp;&#10;</li></form><script>alert(1)</script><!-- -->\r\n\n\r\t]]>"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


# --------------------------------------------------------------------------- a strict tree


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None]
    children: list = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def walk(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.walk()

    def find_all(self, tag: str, **attrs: str) -> list[Node]:
        out = []
        for node in self.walk():
            if node.tag != tag:
                continue
            if "class_" in attrs and attrs["class_"] not in (node.attrs.get("class") or "").split():
                continue
            if any(node.attrs.get(k) != v for k, v in attrs.items() if k != "class_"):
                continue
            out.append(node)
        return out

    def find(self, tag: str, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, (tag, attrs, len(found))
        return found[0]


class StrictTreeBuilder(HTMLParser):
    """html.parser events into a tree; any mis-nested or stray end tag fails the test."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        names = [name for name, _ in attrs]
        assert len(names) == len(set(names)), f"duplicate attribute on <{tag}>: {names}"
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, dict(attrs)))

    def handle_endtag(self, tag):
        assert tag not in VOID, f"end tag for void element </{tag}>"
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data):
        self.stack[-1].children.append(data)

    def handle_comment(self, data):
        raise AssertionError(f"unexpected comment {data!r}")

    def handle_pi(self, data):
        raise AssertionError(f"unexpected processing instruction {data!r}")

    def unknown_decl(self, data):
        raise AssertionError(f"unexpected declaration {data!r}")


def parse(response) -> Node:
    body = response.body.decode("utf-8") if isinstance(response.body, bytes) else response.body
    builder = StrictTreeBuilder()
    builder.feed(body)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements: " + ", ".join(n.tag for n in builder.stack[1:])
    return builder.root


def shape(node: Node, skip_inside: tuple[str, str] | None = None) -> list:
    """The element structure (tags and attribute names, no text), for before/after comparisons."""
    out = [(node.tag, tuple(sorted(node.attrs)))]
    if skip_inside and node.tag == skip_inside[0] and skip_inside[1] in (node.attrs.get("class") or "").split():
        return out
    for child in node.children:
        if isinstance(child, Node):
            out.append(shape(child, skip_inside))
    return out


def hidden_fields(form: Node) -> dict[str, str]:
    return {i.attrs["name"]: i.attrs["value"] for i in form.find_all("input", type="hidden")}


# ----------------------------------------------------------------------------- fixtures


def policy(pid: str, name: str, *, critical: bool = False, resolution: str | None = None, result="fail"):
    return PolicyResult(pid, name, result, critical=critical, resolution=resolution)


def blocking(*failing: PolicyResult, bypass_possible: bool | None = None) -> Decision:
    reasons = tuple(
        Reason("policy_failing" if p.result == "fail" else "policy_no_result", f"{p.name} is failing.", p)
        for p in failing
    )
    if bypass_possible is None:
        bypass_possible = not any(p.critical for p in failing)
    return Decision(BLOCK, reasons, tuple(failing), bypass_possible=bypass_possible)


def block(decision: Decision | None = None, **overrides):
    args = dict(
        decision=decision or blocking(policy("1", "Firewall is on", resolution="Turn it on.")),
        hostname="ada-mbp",
        host_uuid="5F0C3E8A-1B2C-4D5E-8F90-A1B2C3D4E5F6",
        okta_user="ada@example.com",
        my_device_url=MY_DEVICE,
        recheck_token="token-123",
        bypass_allowed=False,
    )
    args.update(overrides)
    return pages.block_page(**args)


def every_page():
    yield "auto_post", pages.auto_post(ACS, "PHNhbWxwOlJlc3BvbnNlLz4=", "relay")
    yield "block", block()
    yield "block+bypass", block(bypass_allowed=True)
    for code in ("no_data", "stale", "not_device_user", "something_new"):
        yield f"unknown:{code}", block(Decision(UNKNOWN, (Reason(code, "why"),)))
    yield "error_page", pages.error_page(418, "Title", "Message", hint="Hint")
    yield "no_certificate", pages.no_certificate()
    yield "unknown_certificate", pages.unknown_certificate()
    yield "revoked_certificate", pages.revoked_certificate()
    yield "expired_certificate", pages.expired_certificate()
    yield "bad_request", pages.bad_request("the signature does not verify")
    yield "unavailable", pages.unavailable("the compliance table does not answer")
    yield "not_found", pages.not_found()


ALL_PAGES = list(every_page())


def csp(response) -> dict[str, str]:
    directives = {}
    for part in response.headers["Content-Security-Policy"].split(";"):
        name, _, value = part.strip().partition(" ")
        assert name not in directives
        directives[name] = value
    return directives


def sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# -------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name,response", ALL_PAGES, ids=[n for n, _ in ALL_PAGES])
def test_every_page_has_the_security_headers(name, response):
    assert response.content_type == "text/html; charset=utf-8"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    directives = csp(response)
    assert directives["default-src"] == "'none'"
    assert directives["img-src"] == "data:"
    assert directives["base-uri"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert set(directives) <= {"default-src", "style-src", "script-src", "img-src", "form-action",
                               "base-uri", "frame-ancestors"}
    # and the response survives the ALB contract (header values, body size, text body)
    event = response.to_event(multi_value=False)
    assert event["isBase64Encoded"] is False


@pytest.mark.parametrize("name,response", ALL_PAGES, ids=[n for n, _ in ALL_PAGES])
def test_csp_hashes_match_the_inline_bytes(name, response):
    body = response.body.decode()
    styles = re.findall(r"<style>(.*?)</style>", body, re.S)
    scripts = re.findall(r"<script>(.*?)</script>", body, re.S)
    assert len(styles) == 1
    directives = csp(response)
    assert directives["style-src"] == sha256_source(styles[0]) == pages.STYLE_HASH
    if name == "auto_post":
        assert len(scripts) == 1
        assert directives["script-src"] == sha256_source(scripts[0]) == pages.SCRIPT_HASH
    else:
        assert scripts == [] and "script-src" not in directives
    tree = parse(response)
    for node in tree.walk():
        assert "style" not in node.attrs, f"<{node.tag} style=...> is blocked by a hash-only style-src"
        assert not [a for a in node.attrs if a.startswith("on")], f"event handler on <{node.tag}>"
    assert body.count("<style") == 1 and body.count("<script") == len(scripts)


@pytest.mark.parametrize("name,response", ALL_PAGES, ids=[n for n, _ in ALL_PAGES])
def test_pages_are_self_contained_and_accessible(name, response):
    tree = parse(response)
    html = tree.find("html")
    assert html.attrs["lang"] == "en"
    assert tree.find("meta", name="viewport").attrs["content"] == "width=device-width, initial-scale=1"
    assert tree.find("title").text().strip()
    assert len(tree.find_all("h1")) == 1 and tree.find("h1").text().strip()
    assert tree.find("main").attrs["aria-labelledby"] == tree.find("h1").attrs["id"]
    for node in tree.walk():
        assert "src" not in node.attrs, f"<{node.tag} src=...> loads something"
        href = node.attrs.get("href")
        if href is not None:
            assert href in ("data:,", MY_DEVICE), href
        if node.tag == "svg":
            assert node.attrs.get("aria-hidden") == "true"
        if node.tag == "button":
            assert node.text().strip(), "a button without a label"
    for url in re.findall(r"https?://[^\s\"'<>)]+", response.body.decode()):
        assert url in (ACS, MY_DEVICE), url
    assert "@import" not in pages.CSS and "url(" not in pages.CSS and "@font-face" not in pages.CSS


def test_auto_post_round_trips_hostile_values_exactly():
    saml_response = base64.b64encode(b"<samlp:Response>\xff\xfe" * 20).decode()
    for relay in ("a\"b'c&d&amp;e<f>g", "line1\nline2\r\nline3\rline4", HOSTILE, "", " x ", "\u00e9\u2603\U0001f512"):
        response = pages.auto_post(ACS + "?a=1&b='2'", saml_response, relay)
        tree = parse(response)
        form = tree.find("form")
        assert form.attrs["method"] == "post"
        assert form.attrs["action"] == ACS + "?a=1&b='2'"
        assert hidden_fields(form) == {"SAMLResponse": saml_response, "RelayState": relay}
        raw = response.body.decode()
        assert "\r" not in raw.split("<form", 1)[1].split("</form>", 1)[0], "a literal CR would become LF"
    assert csp(response)["form-action"] == ACS


def test_auto_post_without_relay_state_has_no_field():
    form = parse(pages.auto_post(ACS, "QUJD", None)).find("form")
    assert hidden_fields(form) == {"SAMLResponse": "QUJD"}


def test_auto_post_works_without_javascript():
    tree = parse(pages.auto_post(ACS, "QUJD", "r"))
    form = tree.find("form")
    button = form.find("button")
    assert button.attrs["type"] == "submit" and button.text() == "Continue"
    assert not tree.find_all("noscript")  # always visible, see the comment in auto_post
    assert form.attrs["name"] == "f" and tree.find("script").text() == "document.forms.f.submit();"


@pytest.mark.parametrize(
    "acs,expected",
    [
        (ACS, ACS),
        ("https://ACME.okta.com:443/sso/saml2/x", "https://acme.okta.com/sso/saml2/x"),
        ("https://acme.okta.com:8443/sso/saml2/x?RelayState=1#", "https://acme.okta.com:8443/sso/saml2/x"),
        ("https://acme.okta.com/a;b,c'd", "https://acme.okta.com/a%3Bb%2Cc%27d"),
        ("https://acme.okta.com/caf\u00e9", "https://acme.okta.com/caf%C3%A9"),
        ("https://acme.okta.com", "https://acme.okta.com/"),
        ("https://[2001:db8::1]:9443/acs", "https://[2001:db8::1]:9443/acs"),
        ("http://127.0.0.1:8080/acs", "http://127.0.0.1:8080/acs"),
    ],
)
def test_form_action_is_exactly_the_acs(acs, expected):
    assert csp(pages.auto_post(acs, "QUJD", None))["form-action"] == expected


@pytest.mark.parametrize(
    "acs",
    [
        "javascript:alert(1)",
        "data:text/html,x",
        "http://acme.okta.com/sso/saml2/x",
        "https://user:pw@acme.okta.com/sso",
        "https://acme.okta.com/sso#frag",
        "https://acme.okta.com/s so",
        "https://acme.okta.com/sso\n",
        "https:///nohost",
        "https://acme.okta.com:99999/x",
        "/relative/path",
    ],
)
def test_unusable_acs_urls_are_refused(acs):
    with pytest.raises(ValueError):
        pages.auto_post(acs, "QUJD", None)


def test_block_page_lists_every_failing_policy_with_its_resolution():
    disk = policy("11", "Disk <b>encryption</b> & \"FileVault\"", critical=True,
                  resolution="Open System Settings.\nTurn on FileVault.\r\n\r\n<script>alert(1)</script>")
    update = policy("12", "macOS is up to date", resolution=None)
    pending = policy("13", "Gatekeeper", result=None)
    response = block(blocking(update, disk, pending))
    assert response.status == 403
    tree = parse(response)
    assert not tree.find_all("script") and not tree.find_all("b")
    items = tree.find("ol", class_="policies").find_all("li")
    names = [li.find("span", class_="policy-name").text() for li in items]
    assert names == [disk.name, update.name, pending.name]  # critical first, then Fleet's order
    assert [bool(li.find_all("span", class_="badge")) for li in items] == [True, False, False]
    assert items[0].find("span", class_="badge").text() == "Critical"
    assert "critical" in items[0].attrs["class"]
    resolution = items[0].find("div", class_="resolution")
    paragraphs = resolution.find_all("p")
    assert [p.text() for p in paragraphs] == ["Open System Settings.Turn on FileVault.", "<script>alert(1)</script>"]
    assert len(paragraphs[0].find_all("br")) == 1
    assert "Contact IT" in items[1].text()
    assert "not reported a result" in items[2].text()
    assert "2" not in tree.find("h2", id="issues").text() and "3 issues" in tree.find("h2", id="issues").text()
    assert "must be fixed" in tree.find("p", class_="note").text()
    text = tree.text()
    assert "ada-mbp" in text and "ada@example.com" in text and "5F0C3E8A-1B2C-4D5E-8F90-A1B2C3D4E5F6" in text
    assert "blocked" in tree.find("h1").text()


def test_check_again_form():
    response = block(recheck_token=HOSTILE)
    tree = parse(response)
    forms = tree.find_all("form")
    assert len(forms) == 1
    assert forms[0].attrs["method"] == "post" and forms[0].attrs["action"] == "/saml/recheck"
    assert hidden_fields(forms[0]) == {"token": HOSTILE, "action": "recheck"}
    assert forms[0].find("button").text() == "Check again"
    assert csp(response)["form-action"] == "'self'"  # a bare path cannot be narrower in CSP
    absolute = block(recheck_path="https://okta.corp.example/saml/recheck")
    assert csp(absolute)["form-action"] == "https://okta.corp.example/saml/recheck"
    assert parse(absolute).find("form").attrs["action"] == "https://okta.corp.example/saml/recheck"


@pytest.mark.parametrize("allowed", [True, False])
@pytest.mark.parametrize("critical", [True, False])
@pytest.mark.parametrize("possible", [True, False, None])
def test_bypass_only_when_allowed_and_nothing_critical(allowed, critical, possible):
    decision = blocking(policy("1", "Firewall", critical=critical), policy("2", "Updates"),
                        bypass_possible=possible)
    tree = parse(block(decision, bypass_allowed=allowed))
    forms = tree.find_all("form")
    kinds = [hidden_fields(f)["action"] for f in forms]
    expected = allowed and not critical and (possible is None or possible)
    assert kinds == (["recheck", "bypass"] if expected else ["recheck"])
    if expected:
        bypass = forms[1]
        assert bypass.find("button").text() == "Bypass once"
        assert hidden_fields(bypass) == {"token": "token-123", "action": "bypass"}
        assert bypass.attrs["action"] == "/saml/recheck" and bypass.attrs["method"] == "post"
    assert ("Bypass once" in tree.text()) == expected


@pytest.mark.parametrize(
    "code,words",
    [
        ("no_data", "no security information"),
        ("stale", "out of date"),
        ("not_device_user", "doesn\u2019t list you"),
        ("new_reason", "could not confirm"),
    ],
)
def test_unknown_decisions_have_their_own_wording(code, words):
    decision = Decision(UNKNOWN, (Reason(code, "internal text"),))
    response = block(decision, bypass_allowed=True)
    assert response.status == 403
    tree = parse(response)
    assert words in tree.text()
    assert "blocked" in tree.text()
    assert not tree.find_all("ol")
    assert [hidden_fields(f)["action"] for f in tree.find_all("form")] == ["recheck"]


def test_block_page_refuses_an_allow():
    with pytest.raises(ValueError):
        block(Decision(ALLOW))


def test_my_device_link():
    tree = parse(block())
    link = tree.find("a")
    assert link.attrs["href"] == MY_DEVICE
    assert link.attrs["target"] == "_blank" and "noopener" in link.attrs["rel"]
    assert "new tab" in link.text()
    for url in (None, "", "javascript:alert(1)", " javascript:alert(1)", "java\tscript:x", "data:text/html,x",
                "https://fleet.example.com/\n"):
        assert not parse(block(my_device_url=url)).find_all("a"), url


def test_missing_hostname_and_user():
    tree = parse(block(hostname=None, okta_user=None))
    assert [dt.text() for dt in tree.find_all("dt")] == ["Device", "Device ID"]
    assert tree.find_all("dd")[0].text() == "This device"


@pytest.mark.parametrize(
    "helper,status,words",
    [
        (pages.no_certificate, 403, "Install the devicegate profile from Fleet"),
        (pages.unknown_certificate, 403, "reinstall the devicegate profile"),
        (pages.revoked_certificate, 403, "Contact IT"),
        (pages.expired_certificate, 403, "contact IT"),
        (pages.not_found, 404, "Okta sign-in page"),
    ],
)
def test_error_helpers_say_what_to_do_next(helper, status, words):
    response = helper()
    assert response.status == status
    tree = parse(response)
    assert tree.find("h2").text() == "What to do next"
    assert words in tree.find("p", class_="next").text()
    assert csp(response)["form-action"] == "'none'" and not tree.find_all("form")


def test_bad_request_and_unavailable_show_the_reason_escaped():
    response = pages.bad_request(HOSTILE)
    assert response.status == 400
    tree = parse(response)
    assert tree.find("p", class_="lead").text().endswith(HOSTILE)
    assert "start again" in tree.find("p", class_="next").text()
    response = pages.unavailable("<b>dynamodb</b> timed out")
    assert response.status == 503 and response.headers["Retry-After"] == "30"
    assert "<b>dynamodb</b> timed out" in parse(response).find("p", class_="lead").text()
    assert "contact IT" in parse(response).find("p", class_="next").text()


def test_lone_surrogates_do_not_break_a_page():
    response = block(blocking(policy("1", "bad \ud800 name", resolution="x\udfff")), hostname="\udc00")
    assert "bad ? name" in parse(response).text()


def _luminance(colour: str) -> float:
    channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_colours_meet_wcag_aa(scheme):
    c = pages.PALETTE[scheme]
    pairs = [
        ("fg", "bg"), ("fg", "card"), ("muted", "card"), ("accent", "card"), ("accent-fg", "accent"),
        ("danger-fg", "danger"), ("fg", "danger-soft"), ("muted", "danger-soft"), ("warn", "warn-soft"),
    ]
    for fg, bg in pairs:
        assert _contrast(c[fg], c[bg]) >= 4.5, (scheme, fg, bg, round(_contrast(c[fg], c[bg]), 2))
    assert _contrast(c["line"], c["card"]) > 1.2  # card borders are visible at all


# ---------------------------------------------------------------------------- property tests

# Arbitrary Unicode (no surrogates), plus text built from the pieces that break naive templates.
PIECES = ["<", ">", "&", '"', "'", "=", "/", "\r", "\n", "\t", " ", "\x00", "</li>", "</dd>", "</form>",
          "<script>", "</script>", "<!--", "-->", "&amp;", "&#10;", "&lt", "]]>", "<![CDATA[", "a", "\u00e9"]
text = st.one_of(st.text(), st.lists(st.sampled_from(PIECES), max_size=30).map("".join))
nonempty = text.filter(lambda s: s != "")
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _resolution_lines(resolution: str) -> str:
    return "".join(line for line in re.split(r"\r\n|\r|\n", resolution) if line.strip())


@PROPERTY
@given(hostname=nonempty, user=nonempty, uuid=text, name=text, resolution=text, token=text, bypass=st.booleans())
def test_block_page_fields_never_escape_their_elements(hostname, user, uuid, name, resolution, token, bypass):
    def render(h, u, i, n, r, t):
        decision = blocking(policy("1", n, resolution=r), policy("2", "second"))
        return parse(block(decision, hostname=h, okta_user=u, host_uuid=i, recheck_token=t, bypass_allowed=bypass))

    tree = render(hostname, user, uuid, name, resolution, token)
    baseline = render("h", "u", "i", "n", "r", "t")
    has_resolution = bool(resolution.strip())
    if has_resolution:  # the resolution's own paragraphs vary; everything around them must not
        assert shape(tree, ("div", "resolution")) == shape(baseline, ("div", "resolution"))
    else:
        assert shape(tree, ("div", "resolution")) == shape(parse(block(
            blocking(policy("1", "n"), policy("2", "second")), bypass_allowed=bypass)), ("div", "resolution"))

    dds = tree.find_all("dd")
    assert [dd.text() for dd in dds] == [hostname, user, uuid]
    assert tree.find("strong").text() == hostname
    first = tree.find("ol", class_="policies").find_all("li")[0]
    assert first.find("span", class_="policy-name").text() == name
    if has_resolution:
        resolution_div = first.find("div", class_="resolution")
        assert {n.tag for n in resolution_div.walk()} <= {"div", "p", "br"}
        assert resolution_div.text() == _resolution_lines(resolution)
    for form in tree.find_all("form"):
        assert hidden_fields(form)["token"] == token


@PROPERTY
@given(saml_response=text, relay=st.one_of(st.none(), text), query=text)
def test_auto_post_fields_never_escape_their_elements(saml_response, relay, query):
    from urllib.parse import quote

    acs = ACS + "?q=" + quote(query, safe="&'\"<>=")
    response = pages.auto_post(acs, saml_response, relay)
    assert "\r" not in response.body.decode(), "a literal CR reaches a browser as LF"
    tree = parse(response)
    baseline = parse(pages.auto_post(ACS, "x", None if relay is None else "y"))
    assert shape(tree) == shape(baseline)
    form = tree.find("form")
    assert form.attrs["action"] == acs
    expected = {"SAMLResponse": saml_response}
    if relay is not None:
        expected["RelayState"] = relay
    assert hidden_fields(form) == expected


@PROPERTY
@given(title=text, message=text, hint=st.one_of(st.none(), nonempty), status=st.sampled_from([400, 403, 404, 503]))
def test_error_page_fields_never_escape_their_elements(title, message, hint, status):
    tree = parse(pages.error_page(status, title, message, hint=hint))
    baseline = parse(pages.error_page(status, "t", "m", hint=None if hint is None else "h"))
    assert shape(tree) == shape(baseline)
    assert tree.find("h1").text() == title
    assert tree.find("title").text() == f"{title} \u2013 {pages.BRAND}"
    assert tree.find("p", class_="lead").text() == message
    if hint is not None:
        assert tree.find("p", class_="next").text() == hint


@PROPERTY
@given(reason=text)
def test_bad_request_reason_never_escapes(reason):
    tree = parse(pages.bad_request(reason))
    assert shape(tree) == shape(parse(pages.bad_request("r")))
    assert tree.find("p", class_="lead").text().endswith(reason)


@PROPERTY
@given(suffix=text)
def test_my_device_url_is_an_exact_link_or_none(suffix):
    url = "https://fleet.example.com/device/" + suffix
    tree = parse(block(my_device_url=url))
    links = tree.find_all("a")
    if links:
        assert links[0].attrs["href"] == url
        assert shape(tree) == shape(parse(block()))
    else:
        assert shape(tree) == shape(parse(block(my_device_url=None)))
