"""``devicegate demo``: the whole story on the local stack, narrated, each step checked.

A host is added to the (simulated) Fleet and enrolls over SCEP; it logs in to the local Okta
with its device certificate and is let through; a policy fails in Fleet and the next login is
blocked with a page that says why; the fix plus "check again" lets that same login through; a
revoked certificate is refused by the IdP at once and at the TLS handshake once the CRL is
published. The exit code is non-zero if any step did not behave.
"""

from __future__ import annotations

import re
import shutil
import ssl
import sys
import tempfile
import time
import urllib.parse
import uuid
from html import unescape
from pathlib import Path

from . import tools

POLICY = "FileVault enabled (devicegate demo)"  # its own policy: the demo changes no one else's


class StepFailed(AssertionError):
    pass


def _say(text: str) -> None:
    print(text, flush=True)


def _check(ok: bool, what: str) -> None:
    _say(f"   {'ok ' if ok else 'FAILED'}  {what}")
    if not ok:
        raise StepFailed(what)


def _device_ctx(e: dict, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=e["tls_ca"])
    ctx.load_cert_chain(cert, key)
    return ctx


def _sso(e: dict, ctx, user: str):
    status, headers, _ = tools.https_request(f"{e['okta']['login_url']}?user={urllib.parse.quote(user)}",
                                             ssl.create_default_context(cadata=e["tls_ca"]))
    parts = urllib.parse.urlsplit(headers["location"])
    return tools.https_request(headers["location"], ctx, raw_path=f"{parts.path}?{parts.query}")


def run(state_dir: Path) -> int:
    e = tools.endpoints(state_dir)
    if e["fleet"]["mode"] != "simulated":
        print("devicegate demo: this stack uses a real Fleet; run the demo on a stack with the simulated one",
              file=sys.stderr)
        return 2
    host = str(uuid.uuid4()).upper()
    user = "ada@example.com"
    work = Path(tempfile.mkdtemp(prefix="devicegate-demo-"))
    try:
        _say(f"1. Fleet knows the Mac {host} (user {user}), and it passes '{POLICY}'")
        tools.fleet_add_host(state_dir, host, "ada-mbp", user)
        tools.fleet_set_policy(state_dir, host, POLICY, "pass", critical=True,
                               resolution="Open System Settings > Privacy & Security > FileVault and turn it on.")
        report = tools.sync_now(state_dir)
        _check(report["complete"], f"sync: {report['hosts_seen']} hosts seen, {report['written']} written")

        _say("2. The Mac enrolls over SCEP (devicegate's own SCEP client, as the profile makes macOS do)")
        enrolled = tools.enroll(state_dir, work, host)
        _check(bool(enrolled.serial), f"certificate issued, serial {enrolled.serial}")

        _say("3. It signs in to Okta: the device factor is checked and the signed Response accepted")
        login = tools.login(state_dir, enrolled.cert_path, enrolled.key_path, user)
        details = dict(login.summary)
        _check(login.outcome == "allowed", f"allowed; local Okta verified the assertion for {details.get('NameID')}")

        _say(f"4. '{POLICY}' fails in Fleet; after the next sync the login is blocked, and the page says why")
        tools.fleet_set_policy(state_dir, host, POLICY, "fail")
        tools.sync_now(state_dir)
        ctx = _device_ctx(e, enrolled.cert_path, enrolled.key_path)
        status, _, page = _sso(e, ctx, user)
        text = page.decode()
        _check(status == 403 and unescape(text).count(POLICY) > 0 and "FileVault and turn it on" in text,
               "blocked (403): the page names the policy and how to fix it")
        token = unescape(re.search(r'name="token"\s+value="([^"]+)"', text).group(1))

        _say("5. The user fixes it and presses 'Check again': the host is refreshed from Fleet, the same login resumes")
        tools.fleet_set_policy(state_dir, host, POLICY, "pass")
        status, _, page = tools.https_request(
            e["device_url"] + "/saml/recheck", ctx, "POST",
            urllib.parse.urlencode({"token": token, "action": "recheck"}).encode(),
            {"Content-Type": "application/x-www-form-urlencoded", "Origin": e["device_url"]})
        _check(status == 200 and b"SAMLResponse" in page, "let through: the auto-POST form carries a signed Response")

        _say("6. IT revokes the certificate: refused by the IdP at once, and at the TLS handshake once the CRL is out")
        tools.revoke(state_dir, serial=enrolled.serial, publish=False)
        login = tools.login(state_dir, enrolled.cert_path, enrolled.key_path, user)
        _check(login.status == 403 and "revoked" in login.page_text, "the IdP refuses the revoked certificate")
        tools.publish_crl(state_dir)
        refused = False
        for _ in range(40):
            try:
                tools.https_request(e["device_url"] + "/healthz", _device_ctx(e, enrolled.cert_path, enrolled.key_path))
            except (ssl.SSLError, ConnectionError, OSError):
                refused = True
                break
            time.sleep(0.25)
        _check(refused, "the device listener refuses the handshake (CRL published)")
    except StepFailed:
        _say("demo: a step did not behave (see above)")
        return 1
    except tools.ToolError as exc:
        _say(f"demo: {exc}")
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the demo device's key goes with it
    _say("demo: every step behaved")
    return 0
