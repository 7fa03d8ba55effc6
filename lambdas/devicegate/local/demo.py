"""``devicegate demo``: the whole story on the local stack, narrated, each step checked.

A host is added to the (simulated) Fleet and enrolls over SCEP; it logs in to the local Okta
with its device certificate and is let through; a policy fails in Fleet and the next login is
blocked with a page that says why; the fix plus "check again" lets that same login through; a
revoked certificate is refused by the IdP at once and at the TLS handshake once the CRL is
published. The exit code is non-zero if any step did not behave.

The enrollment uses certmonger (FreeIPA's SCEP client, driven by :mod:`.certmonger` on a private
D-Bus and mount namespace) when it is installed and usable here, and devicegate's own SCEP
client otherwise; ``scep_client`` ("auto", "certmonger", "builtin") chooses, and the narration
says which was used and why.  Everything certmonger started or wrote goes away when the demo
ends, whether it succeeds, fails or is interrupted (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import re
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from html import unescape
from pathlib import Path

from . import certmonger, tools

POLICY = "FileVault enabled (devicegate demo)"  # its own policy: the demo changes no one else's


SCEP_CLIENTS = ("auto", "certmonger", "builtin")
CA_NAME = "devicegate-demo"


class StepFailed(AssertionError):
    pass


class _Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: unwind (cleaning up on the way) and exit."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_pending_signal: list[int] = []  # set by the handler: if its exception is swallowed (it can be raised
                                 # inside a library's `except BaseException`), the next output raises it


def _on_signal(signum, _frame):
    # One is enough: let the clean-up that follows finish undisturbed by a second Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _pending_signal.append(signum)
    raise _Interrupted(signum)


def _say(text: str) -> None:
    if _pending_signal:
        raise _Interrupted(_pending_signal[0])
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


def choose_client(scep_client: str = "auto") -> tuple[str, str]:
    """``("certmonger" | "builtin", why)``; raises ToolError when certmonger was asked for and
    cannot be used here."""
    if scep_client not in SCEP_CLIENTS:
        raise ValueError(f"scep_client must be one of {', '.join(SCEP_CLIENTS)}")
    if scep_client == "builtin":
        return "builtin", "asked for with --scep-client builtin"
    reason = certmonger.unusable_reason()
    if reason is None:
        return "certmonger", "installed and usable here"
    if scep_client == "certmonger":
        raise tools.ToolError(f"--scep-client certmonger: certmonger cannot be used here: {reason}")
    return "builtin", f"certmonger cannot be used here: {reason}"


def _certmonger_version() -> str:
    try:
        out = certmonger.run_program(["certmonger", "--version"], timeout=5, env=certmonger.base_env()).stdout
    except certmonger.ProgramError:
        return "certmonger"
    return out.strip().splitlines()[0] if out.strip() else "certmonger"


def _serial_of(cert_path: Path) -> str:
    from cryptography import x509

    return format(x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number, "x")


def _log_lines(cm: certmonger.Certmonger, lines: int = 6) -> None:
    for line in cm.log_tail(lines).splitlines():
        _say(f"      certmonger log: {line}")


def _enroll_certmonger(e: dict, work: Path, host: str, *, may_fall_back: bool) -> tools.Enrollment | None:
    """Step 2 with certmonger; ``None`` if it did not even start (nothing was sent) and
    ``may_fall_back``."""
    cm = certmonger.Certmonger(work / "certmonger", tls_ca_pem=e["tls_ca"], start_timeout=10, getcert_timeout=10)
    try:
        try:
            cm.start()
        except certmonger.ProgramError as exc:
            problem = f"certmonger did not start: {str(exc).splitlines()[0]}"
            if not may_fall_back:
                _check(False, problem)
            _say(f"   {problem}")
            return None
        key_path, cert_path = work / "device.key", work / "device.pem"
        try:
            cm.add_scep_ca(CA_NAME, e["scep_url"], e["scep_ca"], tls_ca_pem=e["tls_ca"], timeout=10)
            info = cm.enroll(CA_NAME, host, e["scep_challenge"], key_path=key_path, cert_path=cert_path,
                             timeout=15)
        except certmonger.ProgramError as exc:
            _log_lines(cm)
            _check(False, f"certmonger: {str(exc).splitlines()[0]}")
        status = info.get("status", "?")
        if status != "MONITORING":
            _check(False, f"certmonger status {status} ({info.get('ca-error', 'no ca-error')}); "
                          f"states seen: {info.get('states-seen', '?')}")
        serial = _serial_of(cert_path)
        _check(bool(serial), f"certmonger status {status}; certificate issued, serial {serial}, "
                             f"subject CN={host} (certmonger cannot send a URI SAN)")
        return tools.Enrollment(host, serial, cert_path, key_path)
    finally:
        cm.stop()  # its dbus-daemon and certmonger, by PID; their files go with the work dir


def run(state_dir: Path, scep_client: str = "auto") -> int:
    e = tools.endpoints(state_dir)
    if e["fleet"]["mode"] != "simulated":
        print("devicegate demo: this stack uses a real Fleet; run the demo on a stack with the simulated one",
              file=sys.stderr)
        return 2
    try:
        client, why = choose_client(scep_client)
    except tools.ToolError as exc:
        print(f"devicegate demo: {exc}", file=sys.stderr)
        return 2
    handlers = None
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(state_dir, e, client, why, auto=scep_client == "auto")
    except _Interrupted as exc:
        _pending_signal.clear()
        _say(f"demo: interrupted by {signal.Signals(exc.signum).name}; what it started is stopped and removed")
        return 128 + exc.signum
    finally:
        if handlers:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


def _run(state_dir: Path, e: dict, client: str, why: str, auto: bool) -> int:
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

        _say("2. The Mac enrolls over SCEP with the challenge the profile carries")
        enrolled = None
        if client == "certmonger":
            _say(f"   SCEP client: {_certmonger_version()} (FreeIPA's, C/OpenSSL 3), on a private D-Bus and mount namespace")
            enrolled = _enroll_certmonger(e, work, host, may_fall_back=auto)
            if enrolled is None:
                why = "certmonger did not start, see above"
        if enrolled is None:
            _say(f"   SCEP client: devicegate's own, which enrolls as macOS does ({why})")
            try:
                enrolled = tools.enroll(state_dir, work, host)
            except tools.ToolError as exc:
                _check(False, f"devicegate's SCEP client: {exc}")
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
        shutil.rmtree(work, ignore_errors=True)  # the device's key, and all certmonger wrote
    _say("demo: every step behaved")
    return 0
