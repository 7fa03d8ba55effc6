"""Every HTML page the IdP shows: pure functions of values, returning an `alb.Response`.

Pages are self-contained (no external assets, no web fonts, one inline <style>, at most one
inline <script>) so the Content-Security-Policy can be exact: `default-src 'none'` plus the
SHA-256 of the inline bytes, hashed once at import. Style *attributes* are never used, because
a hash-only `style-src` blocks them.

Every interpolated value goes through `_text` or `_attr` (html.escape with quote=True). In
attribute values CR and LF are also written as character references: the HTML parser turns a
literal CR into LF before tokenizing, a reference survives. (A browser still normalizes lone
CR or LF to CRLF when it *submits* a urlencoded form, per the HTML spec's entry-list
conversion; no markup can prevent that, see `auto_post`.)

Nothing here renders the SAML request or a secret it was not handed explicitly: the recheck
token and the My device URL are shown because the caller passes them for that purpose.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Sequence
from urllib.parse import quote, urlsplit

from .. import alb
from ..compliance.decision import BLOCK, UNKNOWN, Decision, PolicyResult, Reason
from ..textcheck import ALNUM, HEX, only

__all__ = [
    "CSS",
    "AUTO_SUBMIT_SCRIPT",
    "STYLE_HASH",
    "SCRIPT_HASH",
    "PALETTE",
    "auto_post",
    "block_page",
    "error_page",
    "no_certificate",
    "unknown_certificate",
    "revoked_certificate",
    "expired_certificate",
    "bad_request",
    "unavailable",
    "not_found",
]

BRAND = "Device check"
CONTENT_TYPE = "text/html; charset=utf-8"

# Colour pairs are checked against WCAG AA (4.5:1 for text) in tests/unit/test_pages.py.
PALETTE = {
    "light": {
        "bg": "#f3f5f8",
        "card": "#ffffff",
        "fg": "#1b1f24",
        "muted": "#535b66",
        "line": "#d5dae1",
        "accent": "#0b57c2",
        "accent-fg": "#ffffff",
        "danger": "#a3122a",
        "danger-fg": "#ffffff",
        "danger-soft": "#fbeaec",
        "warn-soft": "#fdf3e1",
        "warn": "#7a4b00",
    },
    "dark": {
        "bg": "#111418",
        "card": "#1b2027",
        "fg": "#e8ecf1",
        "muted": "#aab3bf",
        "line": "#343c47",
        "accent": "#8ab4ff",
        "accent-fg": "#0d1117",
        "danger": "#ff9aa8",
        "danger-fg": "#1b0a0d",
        "danger-soft": "#3a1d23",
        "warn-soft": "#3a2e17",
        "warn": "#ffd38a",
    },
}


def _vars(colours: dict[str, str]) -> str:
    return "".join(f"--{name}:{value};" for name, value in colours.items())


CSS = (
    ":root{" + _vars(PALETTE["light"]) + "color-scheme:light dark}"
    "@media (prefers-color-scheme:dark){:root{" + _vars(PALETTE["dark"]) + "}}"
    "*,*::before,*::after{box-sizing:border-box}"
    "html{-webkit-text-size-adjust:100%;text-size-adjust:100%}"
    "body{margin:0;min-height:100vh;background:var(--bg);color:var(--fg);"
    "font:16px/1.5 system-ui,-apple-system,BlinkMacSystemFont,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;"
    "padding:2rem 1rem}"
    "main{max-width:40rem;margin:0 auto;background:var(--card);border:1px solid var(--line);"
    "border-radius:12px;padding:2rem 2rem 1.5rem;overflow-wrap:anywhere}"
    ".brand{margin:0 0 1.25rem;color:var(--muted);font-size:.875rem;font-weight:600;"
    "letter-spacing:.04em;text-transform:uppercase;display:flex;align-items:center;gap:.5rem}"
    ".brand svg{width:1.25rem;height:1.25rem;flex:none}"
    "h1{font-size:1.5rem;line-height:1.25;margin:0 0 .75rem}"
    "h2{font-size:1.125rem;margin:1.75rem 0 .75rem}"
    "h3{font-size:1rem;margin:0;display:flex;flex-wrap:wrap;align-items:center;gap:.5rem}"
    "p{margin:0 0 .75rem}"
    ".lead{font-size:1.0625rem}"
    ".muted,.help{color:var(--muted)}"
    ".help{font-size:.9375rem;border-top:1px solid var(--line);margin-top:1.75rem;padding-top:1rem}"
    "dl.device{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:1.25rem 0;"
    "padding:.75rem 1rem;border:1px solid var(--line);border-radius:8px}"
    "dl.device dt{color:var(--muted)}dl.device dd{margin:0;font-weight:600}"
    "dl.device dd.id{font:600 .875rem/1.6 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}"
    "ol.policies{list-style:none;margin:0;padding:0;display:grid;gap:.75rem}"
    "ol.policies>li{border:1px solid var(--line);border-left:4px solid var(--accent);border-radius:8px;"
    "padding:.75rem 1rem}"
    "ol.policies>li.critical{border-left-color:var(--danger);background:var(--danger-soft)}"
    ".resolution{margin-top:.5rem}.resolution p:last-child{margin-bottom:0}"
    ".badge{display:inline-block;font-size:.75rem;font-weight:700;letter-spacing:.03em;"
    "text-transform:uppercase;padding:.1rem .5rem;border-radius:999px;background:var(--danger);"
    "color:var(--danger-fg)}"
    ".note{padding:.75rem 1rem;border-radius:8px;background:var(--warn-soft);color:var(--warn);margin:1rem 0}"
    ".actions{display:flex;flex-wrap:wrap;gap:.75rem;margin-top:1.5rem;align-items:center}"
    ".actions form{margin:0}"
    ".button{display:inline-block;font:inherit;font-weight:600;text-decoration:none;cursor:pointer;"
    "border-radius:8px;padding:.625rem 1.25rem;border:2px solid var(--accent);min-height:44px;"
    "background:var(--accent);color:var(--accent-fg)}"
    ".button.secondary{background:transparent;color:var(--accent)}"
    ".button:focus-visible,a:focus-visible{outline:3px solid var(--fg);outline-offset:2px}"
    "a{color:var(--accent)}"
    ".bypass{margin-top:1.75rem;padding-top:1rem;border-top:1px solid var(--line)}.bypass h2{margin-top:0}"
    "@media (max-width:480px){body{padding:0}main{border-radius:0;border-width:0;padding:1.25rem 1rem}"
    ".actions{flex-direction:column;align-items:stretch}.button{width:100%;text-align:center}"
    "dl.device{grid-template-columns:1fr}dl.device dd{margin-bottom:.5rem}}"
    ".visually-hidden{position:absolute;width:1px;height:1px;margin:-1px;padding:0;overflow:hidden;"
    "clip:rect(0 0 0 0);white-space:nowrap;border:0}"
    "@media print{body{background:#fff;padding:0}main{border:0}}"
)

# The auto-POST. `forms.f` rather than an id lookup keeps it to one statement; it runs at the
# end of <body>, after the form has been parsed.
AUTO_SUBMIT_SCRIPT = "document.forms.f.submit();"


def _sha256_source(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


STYLE_HASH = _sha256_source(CSS)
SCRIPT_HASH = _sha256_source(AUTO_SUBMIT_SCRIPT)

# A neutral shield, inline SVG (part of the DOM, so no img-src fetch), hidden from screen readers.
_ICON = (
    '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false">'
    '<path fill="currentColor" d="M12 2 4 5v6c0 5 3.4 9.7 8 11 4.6-1.3 8-6 8-11V5l-8-3zm0 2.2 6 '
    '2.25V11c0 4-2.6 7.8-6 8.9-3.4-1.1-6-4.9-6-8.9V6.45l6-2.25z"/></svg>'
)

# ----------------------------------------------------------------------------- escaping


def _clean(value: object) -> str:
    # A lone surrogate (JSON from Fleet can carry one) cannot be encoded as UTF-8; it would
    # turn a page into a 500. Everything else is kept as is.
    text = str(value)
    if text.isascii():  # nothing to replace (e.g. the base64 SAMLResponse); isascii is O(1)
        return text
    return text.encode("utf-8", "replace").decode("utf-8")


def _escape(text: str) -> str:
    """``html.escape(text, quote=True)``, the same five replacements in the same order,
    without importing html (and html.entities) on every cold start."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#x27;"))


def _text(value: object) -> str:
    return _escape(_clean(value))


def _attr(value: object) -> str:
    text = _clean(value)
    # e.g. the base64 SAMLResponse: nothing to escape. Seven substring scans of its ~9 KB take
    # about a microsecond; a regex character class took some 40 (the same test either way). The
    # seven characters that need escaping are written out: no generator per value.
    if ("&" not in text and "<" not in text and ">" not in text and '"' not in text and "'" not in text
            and "\r" not in text and "\n" not in text):
        return text
    return _escape(text).replace("\r", "&#13;").replace("\n", "&#10;")


def _paragraphs(text: str) -> str:
    """Fleet's multi-line resolution text: blank lines separate paragraphs, newlines break lines."""
    lines = _clean(text).strip("\r\n").replace("\r\n", "\n").replace("\r", "\n").split("\n")  # \r\n, \r or \n
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    return "".join(
        "<p>" + "<br>".join(_text(line) for line in lines_) + "</p>" for lines_ in paragraphs if lines_
    )


# ----------------------------------------------------------------------- CSP and headers

_CSP_PATH_SAFE = "/%-._~!$&()*+=:@"  # RFC 3986 pchar minus ";" "," "'" (CSP separators, quotes)
_LOOPBACK = {"127.0.0.1", "localhost", "[::1]"}


def _usable_host(hostname: str) -> bool:
    """A DNS name or IPv4 address ([A-Za-z0-9], inner dots and dashes), or a bracketed IPv6 one."""
    if hostname.startswith("["):
        return hostname.endswith("]") and only(hostname[1:-1], HEX + ":.")
    return only(hostname, ALNUM + ".-") and hostname[0] not in ".-" and hostname[-1] not in ".-"


def _has_controls(url: str) -> bool:
    return any(ord(c) <= 0x20 or 0x7F <= ord(c) <= 0x9F for c in url)


@functools.lru_cache(maxsize=64)  # a pure function of the URL; the ACS URL is the same every login
def _csp_source(url: str) -> str:
    """The CSP source expression matching exactly this URL's origin and path.

    CSP ignores the query, so a query in the URL is allowed and does not appear. A path
    that does not end with "/" matches that path only. Separators (";", ",") and anything
    outside RFC 3986's path characters are percent-encoded: CSP percent-decodes both sides
    before comparing.
    """
    if _has_controls(url):  # urlsplit (and browsers) would silently drop some of them
        raise ValueError(f"form target {url!r} contains whitespace or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port  # ValueError for a non-numeric or out-of-range port
    hostname = parts.hostname or ""
    if parts.username is not None or parts.password is not None:
        raise ValueError("form target must not carry credentials")
    if ":" in hostname:
        hostname = f"[{hostname}]"
    if not _usable_host(hostname):
        raise ValueError(f"form target {url!r} has no usable host")
    if scheme != "https" and not (scheme == "http" and hostname in _LOOPBACK):
        raise ValueError(f"form target {url!r} must be https")
    if parts.fragment:
        raise ValueError("form target must not have a fragment")
    default_port = 443 if scheme == "https" else 80
    authority = hostname + (f":{port}" if port is not None and port != default_port else "")
    path = quote(parts.path or "/", safe=_CSP_PATH_SAFE)
    return f"{scheme}://{authority}{path}"


def _csp(*, form_actions: Sequence[str], script: bool) -> str:
    return _csp_cached(tuple(form_actions), script)


@functools.lru_cache(maxsize=64)  # a pure function of a few configured URLs: the same every login
def _csp_cached(form_actions: tuple[str, ...], script: bool) -> str:
    directives = ["default-src 'none'", f"style-src {STYLE_HASH}"]
    if script:
        directives.append(f"script-src {SCRIPT_HASH}")
    directives += [
        "img-src data:",
        "form-action " + (" ".join(dict.fromkeys(form_actions)) if form_actions else "'none'"),
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


def _response(status: int, document: str, *, form_actions: Sequence[str] = (), script: bool = False) -> alb.Response:
    headers = {
        "Content-Security-Policy": _csp(form_actions=form_actions, script=script),
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",  # never leaves the origin; lets "check again" carry its Origin
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }
    return alb.Response(status, document.encode("utf-8"), CONTENT_TYPE, headers)


def _document(title: str, body: str, *, script: bool = False) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="same-origin">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        # "&#8211;" (an en dash) and the auto-POST page's "&#8230;" (an ellipsis) as references, so
        # that the page every login gets is ASCII: Python holds a str with one non-Latin-1 character
        # at two bytes a character, and encoding its ~14 KB (the Response) then costs ~30 times more.
        f"<title>{_text(title)} &#8211; {BRAND}</title>\n"
        # An empty data: icon stops the browser asking for /favicon.ico.
        '<link rel="icon" href="data:,">\n'
        f"<style>{CSS}</style>\n"
        "</head>\n<body>\n"
        '<main aria-labelledby="title">\n'
        f'<p class="brand">{_ICON}<span>{BRAND}</span></p>\n'
        f"{body}"
        "</main>\n"
        + (f"<script>{AUTO_SUBMIT_SCRIPT}</script>\n" if script else "")
        + "</body>\n</html>\n"
    )


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{_attr(name)}" value="{_attr(value)}">'


# ------------------------------------------------------------------------------ auto-POST


def auto_post(acs_url: str, saml_response_b64: str, relay_state: str | None) -> alb.Response:
    """The HTTP-POST binding: a form that carries the signed Response to the SP's ACS.

    The values arrive at the ACS byte for byte, with one exception browsers impose on every
    urlencoded form: a lone CR or LF in RelayState is sent as CRLF. (SAML's RelayState is an
    opaque token of at most 80 bytes; Okta's has no line breaks.)
    """
    target = _csp_source(acs_url)
    fields = _hidden("SAMLResponse", saml_response_b64)
    if relay_state is not None:
        fields += "\n" + _hidden("RelayState", relay_state)
    # The Continue button is always visible rather than inside <noscript>: <noscript> only
    # shows when JavaScript is switched off entirely, not when the one inline script is
    # blocked (a CSP-rewriting proxy, a script blocker, an old policy), and a user must never
    # be stuck on a page with nothing to press. With scripts on, the page submits at once.
    body = (
        '<h1 id="title">Signing you in</h1>\n'
        '<p class="lead">Your device passed the security check. Continuing to Okta&#8230;</p>\n'
        f'<form id="f" name="f" method="post" action="{_attr(acs_url)}">\n'
        f"{fields}\n"
        '<div class="actions"><button class="button" type="submit">Continue</button></div>\n'
        "</form>\n"
        '<p class="help">If this page does not move on by itself, select Continue.</p>\n'
    )
    return _response(200, _document("Signing you in", body, script=True), form_actions=[target], script=True)


# ----------------------------------------------------------------------------- block page

_UNKNOWN_WORDING = {
    "no_data": (
        "We can\u2019t check this device yet",
        "Fleet has no security information for this device yet, so signing in from it is blocked.",
        "This usually clears up a few minutes after the device is enrolled. Make sure the device "
        "is online and Fleet Desktop is running, wait a few minutes, then select Check again.",
    ),
    "stale": (
        "This device\u2019s security status is out of date",
        "Fleet has not reported on this device recently, so signing in from it is blocked until "
        "it does.",
        "Make sure the device is online and Fleet Desktop is running (look for its icon in the "
        "menu bar), wait a few minutes, then select Check again.",
    ),
    "not_device_user": (
        "This isn\u2019t your registered device",
        "Fleet doesn\u2019t list you as a user of this device, so signing in from it is blocked.",
        "Sign in from your own device. If this is your device, contact IT so they can assign it "
        "to you in Fleet, then select Check again.",
    ),
}
_UNKNOWN_DEFAULT = (
    "We can\u2019t verify this device",
    "devicegate could not confirm that this device meets your organization\u2019s security "
    "requirements, so signing in from it is blocked.",
    "Wait a few minutes, then select Check again. If this keeps happening, contact IT.",
)


def _is_web_url(url: str) -> bool:
    if _has_controls(url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("https", "http") and bool(parts.hostname)


def _form_target(recheck_path: str) -> tuple[str, str]:
    """(action attribute, CSP source). A bare path can only be limited to 'self' in CSP."""
    if recheck_path.startswith("/") and not recheck_path.startswith("//"):
        return recheck_path, "'self'"
    return recheck_path, _csp_source(recheck_path)


def _policy_item(policy: PolicyResult, reason: Reason | None) -> str:
    classes = ' class="critical"' if policy.critical else ""
    badge = ' <span class="badge">Critical</span>' if policy.critical else ""
    status = ""
    if reason is not None and reason.code == "policy_no_result":
        status = '<p class="muted">This check has not reported a result from your device yet.</p>'
    if policy.resolution and policy.resolution.strip():
        how = _paragraphs(policy.resolution)
    else:
        how = "<p>Contact IT to find out how to fix this.</p>"
    return (
        f"<li{classes}>\n"
        f'<h3><span class="policy-name">{_text(policy.name)}</span>{badge}</h3>\n'
        f'{status}<div class="resolution">{how}</div>\n'
        "</li>\n"
    )


def _action_form(action: str, kind: str, token: str, label: str, css: str) -> str:
    return (
        f'<form method="post" action="{_attr(action)}">'
        f"{_hidden('token', token)}{_hidden('action', kind)}"
        f'<button class="{css}" type="submit">{_text(label)}</button>'
        "</form>"
    )


def block_page(
    *,
    decision: Decision,
    hostname: str | None,
    host_uuid: str,
    okta_user: str | None,
    my_device_url: str | None,
    recheck_token: str,
    bypass_allowed: bool,
    recheck_path: str = "/saml/recheck",
) -> alb.Response:
    """403: the device may not sign in; say why, how to fix it, and offer Check again.

    Handles both ``block`` (failing policies) and ``unknown`` (no data, stale data, not a
    device user). "Bypass once" appears only when the caller allows it, the decision says a
    bypass would be enough, and no failing policy is critical (checked again here).
    """
    if decision.outcome not in (BLOCK, UNKNOWN):
        raise ValueError(f"block_page needs a block or unknown decision, not {decision.outcome!r}")
    action, csp_target = _form_target(recheck_path)
    device = _text(hostname) if hostname else "This device"
    details = [
        ("Device", f"<dd>{device}</dd>"),
    ]
    if okta_user:
        details.append(("Signed in as", f"<dd>{_text(okta_user)}</dd>"))
    details.append(("Device ID", f'<dd class="id">{_text(host_uuid)}</dd>'))
    device_list = (
        '<dl class="device">'
        + "".join(f"<dt>{label}</dt>{value}" for label, value in details)
        + "</dl>\n"
    )

    parts: list[str] = []
    critical = False
    count = 0
    if decision.outcome == BLOCK:
        reasons = {r.policy.policy_id: r for r in decision.reasons if r.policy is not None}
        failing = list(decision.failing) or [r.policy for r in decision.reasons if r.policy is not None]
        failing.sort(key=lambda p: not p.critical)  # stable: critical first, otherwise Fleet's order
        critical = any(p.critical for p in failing)
        count = len(failing)
        title = "This device is blocked from signing in"
        parts.append(f'<h1 id="title">{title}</h1>\n')
        parts.append(
            f'<p class="lead"><strong>{device}</strong> doesn\u2019t meet your organization\u2019s '
            "security requirements, so signing in to Okta from it is blocked. Fix the "
            + ("issue" if count == 1 else "issues")
            + " below, then select Check again.</p>\n"
        )
        parts.append(device_list)
        heading = "1 issue to fix" if count == 1 else f"{count} issues to fix"
        parts.append(f'<h2 id="issues">{heading}</h2>\n<ol class="policies" aria-labelledby="issues">\n')
        parts.extend(_policy_item(p, reasons.get(p.policy_id)) for p in failing)
        if not failing:  # a block without named policies: still say something useful
            parts.extend(f"<li><p>{_text(r.text)}</p></li>\n" for r in decision.reasons)
        parts.append("</ol>\n")
        if critical:
            parts.append(
                '<p class="note">Issues marked Critical must be fixed before you can sign in.</p>\n'
            )
    else:
        code = decision.reasons[0].code if decision.reasons else ""
        title, lead, todo = _UNKNOWN_WORDING.get(code, _UNKNOWN_DEFAULT)
        parts.append(f'<h1 id="title">{_text(title)}</h1>\n')
        parts.append(f'<p class="lead">{_text(lead)}</p>\n')
        parts.append(device_list)
        parts.append(f"<p>{_text(todo)}</p>\n")

    parts.append('<div class="actions">')
    parts.append(_action_form(action, "recheck", recheck_token, "Check again", "button"))
    if my_device_url and _is_web_url(my_device_url):
        parts.append(
            f'<a class="button secondary" href="{_attr(my_device_url)}" target="_blank" '
            'rel="noopener noreferrer">Open My device in Fleet<span class="visually-hidden">'
            " (opens in a new tab)</span></a>"
        )
    parts.append("</div>\n")

    show_bypass = (
        bypass_allowed and decision.outcome == BLOCK and decision.bypass_possible and not critical
    )
    if show_bypass:
        parts.append(
            '<section class="bypass" aria-labelledby="bypass-title">\n'
            '<h2 id="bypass-title">Can\u2019t fix it right now?</h2>\n'
            "<p>You can sign in this one time without fixing "
            + ("this issue" if count == 1 else "these issues")
            + ". Bypasses are recorded. Fix "
            + ("it" if count == 1 else "them")
            + " before you sign in again.</p>\n"
            '<div class="actions">'
            + _action_form(action, "bypass", recheck_token, "Bypass once", "button secondary")
            + "</div>\n</section>\n"
        )
    parts.append(
        '<p class="help">Need help? Contact IT and tell them the device ID shown above.</p>\n'
    )
    document = _document(title, "".join(parts))
    return _response(403, document, form_actions=[csp_target])


# ---------------------------------------------------------------------------- error pages


def error_page(status: int, title: str, message: str, *, hint: str | None = None) -> alb.Response:
    """A page that explains what went wrong and what to do next. No forms, no script."""
    body = f'<h1 id="title">{_text(title)}</h1>\n<p class="lead">{_text(message)}</p>\n'
    if hint:
        body += f'<h2>What to do next</h2>\n<p class="next">{_text(hint)}</p>\n'
    return _response(status, _document(title, body))


def no_certificate() -> alb.Response:
    return error_page(
        403,
        "This device isn\u2019t set up for sign-in",
        "Your browser didn\u2019t present a device certificate. Signing in to Okta from this Mac "
        "needs the devicegate profile that Fleet installs.",
        hint="Install the devicegate profile from Fleet (check System Settings \u203a Privacy & "
        "Security \u203a Profiles), quit and reopen your browser, then try again. If the profile "
        "is already installed, contact IT.",
    )


def unknown_certificate() -> alb.Response:
    return error_page(
        403,
        "This device certificate isn\u2019t recognized",
        "Your browser presented a device certificate that devicegate has no record of.",
        hint="Remove and reinstall the devicegate profile from Fleet, quit and reopen your browser, "
        "then try again. If it still fails, contact IT.",
    )


def revoked_certificate() -> alb.Response:
    return error_page(
        403,
        "This device certificate has been revoked",
        "The certificate that identifies this device is no longer valid, so signing in from it "
        "is blocked.",
        hint="Contact IT to have this device enrolled again. After the new devicegate profile is "
        "installed, quit and reopen your browser, then try again.",
    )


def expired_certificate() -> alb.Response:
    return error_page(
        403,
        "This device certificate has expired",
        "The certificate that identifies this device has expired, so signing in from it is "
        "blocked.",
        hint="Make sure the device is online so Fleet can renew the devicegate profile, quit and "
        "reopen your browser, then try again. If it still fails, contact IT.",
    )


def bad_request(reason: str) -> alb.Response:
    return error_page(
        400,
        "This sign-in request can\u2019t be used",
        f"The sign-in request from Okta was not accepted: {_clean(reason)}",
        hint="Go back to your Okta sign-in page and start again. If this keeps happening, contact "
        "IT and tell them the message above.",
    )


def unavailable(reason: str) -> alb.Response:
    response = error_page(
        503,
        "Sign-in is temporarily unavailable",
        f"devicegate can\u2019t check your device right now: {_clean(reason)}",
        hint="Wait a minute, then try signing in again. If it keeps happening, contact IT.",
    )
    response.headers["Retry-After"] = "30"
    return response


def not_found() -> alb.Response:
    return error_page(
        404,
        "Page not found",
        "There is nothing at this address.",
        hint="To sign in, start from your Okta sign-in page.",
    )


