"""A headless Chromium for tests: real TLS, real client certificates, real HTML and forms.

    with Chromium(trusted_cas=[ca_pem], client_cert=ClientCertificate(cert, key),
                  auto_select_origins=["https://127.0.0.1:8443"]) as browser:
        page = browser.load("https://127.0.0.1:8443/saml/sso?...")
        page.url, page.status, page.text, page.html, page.screenshot   # PNG bytes
        page = browser.click("button[type=submit]")                    # and wait again
        browser.is_visible("form button")

How it drives Chromium, and why:

* The DevTools protocol over ``--remote-debugging-pipe`` (fd 3 = commands in, fd 4 = replies
  out, each JSON message ended by a NUL byte). No TCP port to race for or leave open to other
  local users, no websocket code, no pip dependency, and Chromium exits when the pipe closes.
  ``--dump-dom``/``--screenshot`` cannot follow an auto-POST, disable JavaScript per page or
  click; Playwright needs its own browser build (its download is blocked here).
* The real binary ``/usr/lib/chromium/chromium`` is started, not the ``/usr/bin/chromium``
  shell wrapper: the wrapper sources ``/etc/chromium.d/*`` (adds flags and Google API key
  variables, and its /dev/shm probe errors with ``[: unexpected operator``). We pass every flag
  ourselves.
* "Settled" means: the main frame has stopped loading and nothing new happened on it (no
  navigation requested or started, no document request) for ``quiet`` seconds. That follows an
  auto-POST, which starts a second navigation from a script during the first load.

Client certificates on Linux (Chromium 156, Debian 12; observed, see the self-check test):

* Chromium reads NSS's *shared* database ``sql:$HOME/.pki/nssdb``; ``--user-data-dir`` does not
  move it. So each instance gets its own ``HOME`` in a temp dir (the profile lives under it too),
  and that database gets the TLS CA (``certutil -A -t "C,,"``: a trust anchor for servers, so no
  ``--ignore-certificate-errors``) and the client certificate + key (``pk12util``).
* Headless Chromium has no certificate picker. Without a matching ``AutoSelectCertificateForUrls``
  policy the request that needs a client certificate never completes (the page load hangs until
  our timeout); with it, the certificate is sent without asking.
* The policy is machine-wide: a JSON file in ``/etc/chromium/policies/managed/`` (needs root).
  Chromium reads the directory at start-up. It does not merge one policy across files -- the
  file that sorts last wins -- so two harnesses each writing their own file would silently break
  each other's selection. The harness therefore holds an exclusive ``flock`` on
  ``/run/lock/devicegate-chromium-policy.lock`` from writing its file until its browser has
  exited and the file is removed. Browsers without a client certificate take no lock and write
  no file.

Everything started here (the browser and its process group, ``certutil``/``pk12util``) is
stopped by PID/PGID, and every wait has a timeout.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import errno
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

__all__ = [
    "BrowserError",
    "BrowserTimeout",
    "ClientCertificate",
    "Chromium",
    "Page",
    "CHROMIUM_BINARY",
    "POLICY_DIR",
    "missing",
]

CHROMIUM_BINARY = Path("/usr/lib/chromium/chromium")
POLICY_DIR = Path("/etc/chromium/policies/managed")
POLICY_LOCK = Path("/run/lock/devicegate-chromium-policy.lock")

# PEERS.md's flags, plus what keeps a fresh profile quiet and deterministic.
BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # ours:
    "--no-default-browser-check",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--password-store=basic",
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
    "--hide-scrollbars",
    "--mute-audio",
    "--force-color-profile=srgb",
    "--lang=en-US",
    "--remote-debugging-pipe",
)


class BrowserError(RuntimeError):
    """Chromium or a DevTools command failed."""


class BrowserTimeout(BrowserError):
    """Something did not happen in time (a page never settled, a command got no reply)."""


def missing(client_certs: bool = True) -> list[str]:
    """What is not installed (for pytest.skip)."""
    out = []
    if not (CHROMIUM_BINARY.exists() or shutil.which("chromium")):
        out.append("chromium")
    if client_certs:
        out += [p for p in ("certutil", "pk12util") if shutil.which(p) is None]
    return out


# ------------------------------------------------------------------------------ processes

_PR_SET_PDEATHSIG = 1
try:  # looked up once here: between fork and exec the child should only make system calls
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover
    _prctl = None


def _die_with_parent() -> None:
    # Runs in the child before exec: SIGKILL it if the test process dies, however it dies.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _run(argv: Sequence[str], *, env: Mapping[str, str], timeout: float = 30) -> str:
    """Run a short tool in its own process group; kill that group on timeout."""
    proc = subprocess.Popen(
        list(argv), env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise BrowserTimeout(f"{argv[0]} did not finish within {timeout}s") from None
    text = out.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise BrowserError(f"{' '.join(argv)} exited {proc.returncode}: {text.strip()}")
    return text


def _stop_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, our child's process group (pgid == its pid); then reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Renderer/utility processes are in the same group; sweep them even if the browser is gone.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


# --------------------------------------------------------------------------- the CDP pipe


class _Pipe:
    """DevTools protocol over Chromium's --remote-debugging-pipe: NUL-framed JSON both ways."""

    def __init__(self, write_fd: int, read_fd: int):
        self._write_fd, self._read_fd = write_fd, read_fd
        os.set_blocking(write_fd, False)  # writes wait in select(), with the caller's timeout
        self._next_id = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._replies: dict[int, dict] = {}
        self.events: list[dict] = []  # every event, in arrival order
        self.closed = False
        self._reader = threading.Thread(target=self._read_loop, name="cdp-pipe", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = os.read(self._read_fd, 1 << 16)
                if not chunk:
                    break
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for raw in messages:
                    message = json.loads(raw)
                    with self._cond:
                        if "id" in message:
                            self._replies[message["id"]] = message
                        else:
                            self.events.append(message)
                        self._cond.notify_all()
        except OSError:
            pass
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def send(self, method: str, params: Mapping[str, Any] | None = None, *,
             session: str | None = None, timeout: float = 30) -> dict:
        with self._lock:
            self._next_id += 1
            message_id = self._next_id
        message: dict[str, Any] = {"id": message_id, "method": method, "params": dict(params or {})}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        deadline = time.monotonic() + timeout
        with self._lock:  # one message at a time on the wire
            while data:
                _, writable, _ = select.select([], [self._write_fd], [], max(0.0, deadline - time.monotonic()))
                if not writable:
                    raise BrowserTimeout(f"could not send {method} within {timeout}s")
                try:
                    data = data[os.write(self._write_fd, data):]
                except BlockingIOError:
                    continue
                except (BrokenPipeError, OSError) as exc:
                    raise BrowserError(f"Chromium closed the DevTools pipe (sending {method}): {exc}") from None
        with self._cond:
            while message_id not in self._replies:
                remaining = deadline - time.monotonic()
                if self.closed:
                    raise BrowserError(f"Chromium closed the DevTools pipe (waiting for {method})")
                if remaining <= 0:
                    raise BrowserTimeout(f"no reply to {method} within {timeout}s")
                self._cond.wait(remaining)
            reply = self._replies.pop(message_id)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')} ({reply['error']})")
        return reply.get("result", {})

    def wait(self, timeout: float) -> None:
        """Block until something arrives or ``timeout`` passes."""
        with self._cond:
            self._cond.wait(timeout)

    def close(self) -> None:
        for fd in (self._write_fd, self._read_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


# ------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Navigation:
    method: str
    url: str
    status: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Page:
    url: str  # the final URL of the main frame
    title: str
    status: int | None  # HTTP status of the last main-frame document (None: no response)
    html: str  # the live DOM, serialized
    text: str  # what a reader sees (innerText, or the HTML's text when JS is off)
    screenshot: bytes  # PNG of the whole page
    navigations: tuple[Navigation, ...]  # every main-frame document request, in order
    error: str | None = None  # net::ERR_... when the last navigation failed
    console: tuple[str, ...] = ()  # console and browser log lines (CSP violations show here)

    def save_screenshot(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_bytes(self.screenshot)
        return path


@dataclass(frozen=True)
class ClientCertificate:
    """A client certificate (cryptography objects) to put into the browser's NSS database."""

    certificate: Any  # cryptography.x509.Certificate
    private_key: Any  # a cryptography private key
    chain: tuple[Any, ...] = ()  # intermediates to import with it
    nickname: str = "devicegate test client"

    def pkcs12(self, password: bytes) -> bytes:
        from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

        return pkcs12.serialize_key_and_certificates(
            self.nickname.encode(), self.private_key, self.certificate, list(self.chain) or None,
            BestAvailableEncryption(password),
        )

    @property
    def issuer_cn(self) -> str:
        from cryptography.x509.oid import NameOID

        names = self.certificate.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names:
            raise ValueError("client certificate issuer has no CN to filter on")
        return str(names[0].value)


class _TextOnly(HTMLParser):
    _SKIP = {"script", "style", "head", "title", "template"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self._skipping += 1

    def handle_endtag(self, tag):
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data):
        if not self._skipping:
            self.parts.append(data)


def _text_of(html: str) -> str:
    parser = _TextOnly()
    parser.feed(html)
    parser.close()
    return "\n".join(line.strip() for line in "".join(parser.parts).splitlines() if line.strip())


# ------------------------------------------------------------------------------- browser

_STUCK_HINT = (
    "headless Chromium waits forever when a server asks for a client certificate, a matching one "
    "is in NSS and no AutoSelectCertificateForUrls policy selects it"
)


class Chromium:
    """One headless Chromium with a fresh profile, driven over the DevTools pipe.

    ``trusted_cas``: PEM CA certificates Chromium trusts for TLS servers (via NSS).
    ``client_cert`` + ``auto_select_origins``: the certificate to import and the https origins
    (``https://host:port``) for which the managed policy selects it without asking, filtered on
    its issuer CN (``issuer_cn`` overrides). ``policies``: any further managed policies.
    """

    def __init__(
        self,
        *,
        trusted_cas: Sequence[bytes] = (),
        client_cert: ClientCertificate | None = None,
        auto_select_origins: Sequence[str] = (),
        issuer_cn: str | None = None,
        policies: Mapping[str, Any] | None = None,
        viewport: tuple[int, int] = (1280, 900),
        timeout: float = 30.0,
        policy_lock_timeout: float = 120.0,
        extra_flags: Sequence[str] = (),
        binary: str | os.PathLike | None = None,
        keep_dir: bool = False,
    ):
        self.trusted_cas = list(trusted_cas)
        self.client_cert = client_cert
        self.auto_select_origins = list(auto_select_origins)
        self.issuer_cn = issuer_cn
        self.extra_policies = dict(policies or {})
        self.viewport = viewport
        self.timeout = timeout
        self.policy_lock_timeout = policy_lock_timeout
        self.extra_flags = list(extra_flags)
        self.binary = Path(binary) if binary else (
            CHROMIUM_BINARY if CHROMIUM_BINARY.exists() else Path(shutil.which("chromium") or "chromium"))
        self.keep_dir = keep_dir
        self.dir: Path | None = None
        self.policy_file: Path | None = None
        self.process: subprocess.Popen | None = None
        self._pipe: _Pipe | None = None
        self._session: str | None = None
        self._frame_id: str | None = None
        self._lock_fd: int | None = None
        self._created_policy_dirs: list[Path] = []
        self._css_on = False
        self._javascript = True

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> Chromium:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def home(self) -> Path:
        assert self.dir is not None
        return self.dir / "home"

    @property
    def nssdb(self) -> Path:
        return self.home / ".pki" / "nssdb"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "chromium.log"

    def _env(self) -> dict[str, str]:
        home = self.home
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "TMPDIR": str(self.dir / "tmp"),
            "LANG": "en_US.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TZ": "UTC",
        }

    def _start(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="devicegate-chromium-"))
        for sub in ("home", "tmp", "profile"):
            (self.dir / sub).mkdir()
        self._make_nssdb()
        if self.client_cert is not None and self.auto_select_origins:
            self._write_policy()
        elif self.extra_policies:
            self._write_policy()
        self._launch()
        self._open_page()

    def _make_nssdb(self) -> None:
        if not self.trusted_cas and self.client_cert is None:
            return
        env = self._env()
        self.nssdb.mkdir(parents=True)
        db = f"sql:{self.nssdb}"
        _run(["certutil", "-N", "-d", db, "--empty-password"], env=env)
        for index, pem in enumerate(self.trusted_cas):
            ca_file = self.dir / f"ca{index}.pem"
            ca_file.write_bytes(pem)
            _run(["certutil", "-A", "-d", db, "-n", f"devicegate test CA {index}", "-t", "C,,",
                  "-a", "-i", str(ca_file)], env=env)
        if self.client_cert is not None:
            password = uuid.uuid4().hex
            p12 = self.dir / "client.p12"
            p12.write_bytes(self.client_cert.pkcs12(password.encode()))
            _run(["pk12util", "-i", str(p12), "-d", db, "-W", password, "-K", ""], env=env)
            p12.unlink()

    # ------------------------------------------------------------------- policy

    def _acquire_policy_lock(self) -> None:
        POLICY_LOCK.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(POLICY_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.policy_lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() > deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                    os.close(fd)
                    raise BrowserTimeout(
                        f"{POLICY_LOCK} held for over {self.policy_lock_timeout}s by {holder or '?'}") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} {self.dir}\n".encode(), 0)
        self._lock_fd = fd

    def _write_policy(self) -> None:
        policy: dict[str, Any] = dict(self.extra_policies)
        if self.client_cert is not None and self.auto_select_origins:
            issuer = self.issuer_cn or self.client_cert.issuer_cn
            # Each entry is itself a JSON string (Chromium's documented format).
            policy["AutoSelectCertificateForUrls"] = [
                json.dumps({"pattern": origin, "filter": {"ISSUER": {"CN": issuer}}})
                for origin in self.auto_select_origins
            ]
        self._acquire_policy_lock()
        missing_dirs = []
        for parent in (POLICY_DIR, *POLICY_DIR.parents):
            if parent.exists():
                break
            missing_dirs.append(parent)
        POLICY_DIR.mkdir(parents=True, exist_ok=True)
        self._created_policy_dirs = missing_dirs  # deepest first, removed if still empty
        name = f"devicegate-test-{os.getpid()}-{uuid.uuid4().hex[:12]}.json"
        temp = POLICY_DIR / f".{name}.tmp"  # not *.json while half-written
        temp.write_text(json.dumps(policy, indent=2))
        temp.chmod(0o644)
        self.policy_file = POLICY_DIR / name
        os.replace(temp, self.policy_file)

    def _remove_policy(self) -> None:
        if self.policy_file is not None:
            with contextlib.suppress(FileNotFoundError):
                self.policy_file.unlink()
            self.policy_file = None
        for directory in self._created_policy_dirs:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if empty: someone else may use it now
        self._created_policy_dirs = []
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # ------------------------------------------------------------------- browser

    def _launch(self) -> None:
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        width, height = self.viewport
        argv = [
            str(self.binary),
            *BASE_FLAGS,
            f"--user-data-dir={self.dir / 'profile'}",
            f"--window-size={width},{height}",
            *self.extra_flags,
            "about:blank",
        ]

        def child() -> None:
            _die_with_parent()
            # Chromium's pipe protocol wants its input on fd 3 and output on fd 4. Move both
            # out of the way first, so neither dup2 overwrites the other.
            a, b = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        log = open(self.log_path, "wb")
        try:
            self.process = subprocess.Popen(
                argv, env=self._env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=child, pass_fds=(3, 4),
            )
        finally:
            log.close()
            os.close(to_browser_r)
            os.close(from_browser_w)
        self._pipe = _Pipe(to_browser_w, from_browser_r)
        try:
            self._pipe.send("Browser.getVersion", timeout=self.timeout)
        except BrowserError as exc:
            raise BrowserError(f"Chromium did not start: {exc}\n{self.log_tail()}") from None

    def _open_page(self) -> None:
        pipe = self._pipe
        assert pipe is not None
        target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=self.timeout)["targetId"]
        self._session = pipe.send(
            "Target.attachToTarget", {"targetId": target, "flatten": True}, timeout=self.timeout
        )["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log", "DOM"):
            self.cdp(f"{domain}.enable")
        self._frame_id = self.cdp("Page.getFrameTree")["frameTree"]["frame"]["id"]
        self.set_viewport(*self.viewport)

    def close(self) -> None:
        if self._pipe is not None and self.process is not None and self.process.poll() is None:
            with contextlib.suppress(BrowserError):
                self._pipe.send("Browser.close", timeout=5)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
        if self.process is not None:
            _stop_group(self.process)
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
        self._remove_policy()
        if self.dir is not None and not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ----------------------------------------------------------------- commands

    def cdp(self, method: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = None) -> dict:
        """A DevTools command to the page (``Page.navigate``, ``Emulation.…``)."""
        if self._pipe is None:
            raise BrowserError("browser is not running")
        return self._pipe.send(method, params, session=self._session, timeout=timeout or self.timeout)

    def set_viewport(self, width: int, height: int) -> None:
        self.cdp("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})

    def set_javascript(self, enabled: bool) -> None:
        self.cdp("Emulation.setScriptExecutionDisabled", {"value": not enabled})
        self._javascript = enabled

    def load(self, url: str, *, javascript: bool = True, quiet: float = 0.5,
             timeout: float | None = None) -> Page:
        """Navigate, wait until the page (and whatever it auto-submits) has settled, snapshot it."""
        self.set_javascript(javascript)
        start = self._mark()
        try:
            # Page.navigate answers once the navigation commits (or fails), so a TLS handshake
            # stuck in client-certificate selection keeps it from answering at all.
            result = self.cdp("Page.navigate", {"url": url}, timeout=timeout)
        except BrowserTimeout as exc:
            raise BrowserTimeout(f"{exc} ({url}); {_STUCK_HINT}") from None
        return self._settle_and_snapshot(start, quiet=quiet, timeout=timeout,
                                         error=result.get("errorText") or None, javascript=javascript)

    def click(self, selector: str, *, quiet: float = 0.5, timeout: float | None = None) -> Page:
        """Click the centre of the first element matching ``selector``, as a mouse would."""
        x, y = self._centre(selector)
        start = self._mark()
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.cdp("Input.dispatchMouseEvent",
                     {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})
        return self._settle_and_snapshot(start, quiet=quiet, timeout=timeout, error=None,
                                         javascript=self._javascript_enabled(), navigating=False)

    def is_visible(self, selector: str) -> bool:
        """The element exists and is rendered with a non-empty box (display/visibility honoured)."""
        node = self._query(selector)
        if not node:
            return False
        try:
            quads = self.cdp("DOM.getContentQuads", {"nodeId": node})["quads"]
        except BrowserError:  # "Could not compute content quads": not rendered
            return False
        if not quads:
            return False
        if not self._css_on:
            self.cdp("CSS.enable")
            self._css_on = True
        style = self.cdp("CSS.getComputedStyleForNode", {"nodeId": node})["computedStyle"]
        values = {p["name"]: p["value"] for p in style}
        if values.get("visibility") == "hidden" or values.get("opacity") == "0":
            return False
        xs, ys = quads[0][0::2], quads[0][1::2]
        return max(xs) - min(xs) > 0 and max(ys) - min(ys) > 0

    def snapshot(self, *, javascript: bool | None = None) -> Page:
        return self._snapshot((), None, self._javascript_enabled() if javascript is None else javascript)

    # ---------------------------------------------------------------- internals

    def _javascript_enabled(self) -> bool:
        return self._javascript

    def _mark(self) -> int:
        assert self._pipe is not None
        with self._pipe._cond:
            return len(self._pipe.events)

    def _query(self, selector: str) -> int:
        root = self.cdp("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        return self.cdp("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]

    def _centre(self, selector: str) -> tuple[float, float]:
        node = self._query(selector)
        if not node:
            raise BrowserError(f"no element matches {selector!r}")
        self.cdp("DOM.scrollIntoViewIfNeeded", {"nodeId": node})
        quads = self.cdp("DOM.getContentQuads", {"nodeId": node})["quads"]
        if not quads:
            raise BrowserError(f"{selector!r} is not rendered")
        xs, ys = quads[0][0::2], quads[0][1::2]
        return sum(xs) / 4, sum(ys) / 4

    def _settle_and_snapshot(self, start: int, *, quiet: float, timeout: float | None,
                             error: str | None, javascript: bool, navigating: bool = True) -> Page:
        navigations, error = self._settle(start, quiet=quiet, timeout=timeout or self.timeout,
                                          error=error, navigating=navigating)
        return self._snapshot(navigations, error, javascript, start)

    def _settle(self, start: int, *, quiet: float, timeout: float, error: str | None,
                navigating: bool) -> tuple[list[Navigation], str | None]:
        """Wait until the main frame is idle for ``quiet`` seconds.

        ``navigating``: a navigation is under way (after Page.navigate), so wait for it to stop
        loading; otherwise (after a click) only wait for one to start within ``quiet``.
        """
        pipe = self._pipe
        assert pipe is not None
        frame = self._frame_id
        deadline = time.monotonic() + timeout
        requests: dict[str, Navigation] = {}  # requestId@n -> navigation, in order
        loading = navigating and error is None
        seen_stop = not loading
        last = time.monotonic()
        cursor = start
        while True:
            with pipe._cond:
                new = pipe.events[cursor:]
                cursor = len(pipe.events)
            for event in new:
                if event.get("sessionId") != self._session:
                    continue
                method, params = event.get("method"), event.get("params", {})
                if params.get("frameId", (params.get("frame") or {}).get("id")) != frame:
                    continue
                if method in ("Page.frameStartedLoading", "Page.frameRequestedNavigation",
                              "Page.frameStartedNavigating"):
                    loading, last = True, time.monotonic()
                elif method == "Page.frameStoppedLoading":
                    loading, seen_stop, last = False, True, time.monotonic()
                elif method == "Page.frameNavigated":
                    last = time.monotonic()
                elif method == "Network.requestWillBeSent" and params.get("type") == "Document":
                    request = params["request"]
                    requests[params["requestId"] + f"@{len(requests)}"] = Navigation(request["method"], request["url"])
                    last = time.monotonic()
                elif method == "Network.responseReceived" and params.get("type") == "Document":
                    key = self._latest(requests, params["requestId"])
                    if key:
                        nav = requests[key]
                        requests[key] = Navigation(nav.method, nav.url, params["response"]["status"])
                elif method == "Network.loadingFailed" and params.get("type") == "Document":
                    key = self._latest(requests, params["requestId"])
                    if key:
                        nav = requests[key]
                        requests[key] = Navigation(nav.method, nav.url, nav.status, params.get("errorText"))
                    error, last = params.get("errorText"), time.monotonic()
            now = time.monotonic()
            if seen_stop and not loading and now - last >= quiet:
                return list(requests.values()), error
            if now > deadline:
                navs = ", ".join(f"{n.method} {n.url} -> {n.status or n.error or 'pending'}"
                                 for n in requests.values())
                raise BrowserTimeout(
                    f"page did not settle within {timeout}s (navigations: {navs or 'none'}); {_STUCK_HINT}")
            pipe.wait(min(quiet, max(0.01, deadline - now)))

    @staticmethod
    def _latest(requests: dict[str, Navigation], request_id: str) -> str | None:
        keys = [k for k in requests if k.rsplit("@", 1)[0] == request_id]
        return keys[-1] if keys else None

    def _snapshot(self, navigations: Sequence[Navigation], error: str | None, javascript: bool,
                  start: int | None = None) -> Page:
        history = self.cdp("Page.getNavigationHistory")
        entry = history["entries"][history["currentIndex"]]
        root = self.cdp("DOM.getDocument", {"depth": -1})["root"]
        html = self.cdp("DOM.getOuterHTML", {"nodeId": root["nodeId"]})["outerHTML"]
        text = None
        if javascript:
            with contextlib.suppress(BrowserError):
                value = self.cdp("Runtime.evaluate", {
                    "expression": "document.body ? document.body.innerText : ''", "returnByValue": True})
                text = value.get("result", {}).get("value")
        if text is None:
            text = _text_of(html)
        metrics = self.cdp("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = self.cdp("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": max(1, size["width"]), "height": max(1, size["height"]), "scale": 1},
        })
        status = None
        for nav in reversed(navigations):
            if nav.status is not None or nav.error is not None:
                status = nav.status
                break
        return Page(
            url=entry["url"],
            title=entry.get("title", ""),
            status=status,
            html=html,
            text=text,
            screenshot=base64.b64decode(shot["data"]),
            navigations=tuple(navigations),
            error=error,
            console=tuple(self._console_lines(start)),
        )

    def _console_lines(self, start: int | None) -> list[str]:
        assert self._pipe is not None
        with self._pipe._cond:
            events = list(self._pipe.events[start or 0:])
        lines = []
        for event in events:
            if event.get("sessionId") != self._session:
                continue
            params = event.get("params", {})
            if event.get("method") == "Log.entryAdded":
                entry = params["entry"]
                lines.append(f"{entry.get('level')}: {entry.get('text')}")
            elif event.get("method") == "Runtime.consoleAPICalled":
                args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                lines.append(f"console.{params.get('type')}: {args}")
        return lines
