"""Drive a private certmonger: the C/OpenSSL 3 SCEP client FreeIPA uses (0.79 on Debian 12).

:class:`Certmonger` runs its own ``dbus-daemon`` (a config with no ``<servicedir>``) and
``certmonger -s -n`` with all of its state in a work directory, and wraps ``getcert``:
:meth:`~Certmonger.add_scep_ca`, :meth:`~Certmonger.request`, :meth:`~Certmonger.wait`,
:meth:`~Certmonger.enroll`, :meth:`~Certmonger.log_tail`.  :func:`unusable_reason` says why it
cannot be used on this machine (or ``None``).  ``devicegate demo`` and the interop tests use it.
Everything it starts is stopped by PID / process group, never by name.

Facts this module relies on (observed on Debian 12, certmonger 0.79.17):

* certmonger forks/execs its helpers (``scep-submit``) and its post-processing children with a
  cleared environment, so ``OPENSSL_CONF``, ``SSL_CERT_FILE`` and friends never reach them.
  The children read the *system* files ``/usr/lib/ssl/openssl.cnf`` (a symlink to
  ``/etc/ssl/openssl.cnf``) and libcurl's compiled-in CA bundle
  ``/etc/ssl/certs/ca-certificates.crt`` (``/usr/lib/ssl/cert.pem`` is a symlink to it).
  ``getcert add-scep-ca -R`` is only applied to the first request (GetCACaps/GetCACert), so
  PKIOperation over HTTPS is verified against that system bundle.  The only way to change
  those files for certmonger alone is a private mount namespace with bind mounts, which is
  what ``Certmonger(tls_ca_pem=..., openssl_legacy=...)`` does (root, or whatever else lets
  ``unshare --mount`` and ``mount --bind`` work: :func:`namespace_problem` tries).
* OpenSSL 3 without the legacy provider cannot decrypt single-DES.  A server that always
  encrypts its CertRep with DES-CBC (micromdm scepserver) leaves plain certmonger in
  ``NEED_GUIDANCE`` (stuck) with ``error:0308010C:digital envelope routines::unsupported`` in its
  log; ``openssl_legacy=True`` bind-mounts an ``openssl.cnf`` that activates the legacy provider.
* certmonger has no URI SAN option: it can name a host only by its subject CN.
* Children are started in their own process group (stopped by group id, never by name) and with
  ``PR_SET_PDEATHSIG=SIGKILL`` so they die with this process even if it is SIGKILLed.  The
  death signal follows the *thread* that started them: start them from the main thread (or a
  thread that outlives them).

Standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence
from xml.sax.saxutils import escape as xml_escape

__all__ = [
    "ProgramError",
    "ProgramTimeout",
    "missing_programs",
    "namespace_problem",
    "unusable_reason",
    "Certmonger",
    "CERTMONGER_TERMINAL_STATES",
    "PROGRAMS",
    "NAMESPACE_PROGRAMS",
    "parse_getcert_list",
    "base_env",
    "spawn",
    "terminate",
    "run_program",
    "tail",
]

SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SYSTEM_OPENSSL_CNF = Path("/etc/ssl/openssl.cnf")
CLIENT_AUTH_EKU = "1.3.6.1.5.5.7.3.2"

# States in which certmonger will not make progress on its own soon: success, rejection, or
# something a human (or a retry timer measured in minutes) has to resolve.
CERTMONGER_TERMINAL_STATES = frozenset(
    {
        "MONITORING",
        "CA_REJECTED",
        "CA_UNREACHABLE",
        "CA_UNCONFIGURED",
        "NEED_GUIDANCE",
        "NEED_CA",
    }
)


class ProgramError(RuntimeError):
    """A program this module drives failed in a way it could not handle."""


class ProgramTimeout(ProgramError):
    """A program did not finish (or reach a state) in time."""


PROGRAMS = ("certmonger", "getcert", "dbus-daemon")  # certmonger itself, on a private bus
NAMESPACE_PROGRAMS = ("unshare", "mount", "sh")  # for the private mount namespace


def missing_programs(*names: str) -> list[str]:
    """Return the names from ``names`` that are not on PATH."""
    return [n for n in names if shutil.which(n) is None]


def namespace_problem(timeout: float = 10.0) -> str | None:
    """Why a private mount namespace with a bind mount cannot be made here, or ``None``.

    Tries exactly what :class:`Certmonger` does for ``tls_ca_pem``/``openssl_legacy``
    (``unshare --mount --propagation private`` + ``mount --bind``), on two scratch files.
    Normally this needs root (CAP_SYS_ADMIN); the answer quotes what ``unshare``/``mount`` said.
    """
    missing = missing_programs(*NAMESPACE_PROGRAMS)
    if missing:
        return f"not installed: {', '.join(missing)} (needed for a private mount namespace)"
    scratch = Path(tempfile.mkdtemp(prefix="dg-ns-probe-"))
    try:
        src, dst = scratch / "src", scratch / "dst"
        src.write_text("probe\n")
        dst.write_text("")
        argv = ["unshare", "--mount", "--propagation", "private",
                "sh", "-c", 'mount --bind "$1" "$2" && exec cat "$2"', "sh", str(src), str(dst)]
        try:
            res = run_program(argv, timeout=timeout, env=base_env())
        except ProgramTimeout:
            return f"cannot make a private mount namespace: {shlex.join(argv[:4])} did not finish in {timeout}s"
        if res.returncode != 0 or res.stdout != "probe\n":
            said = (res.stderr.strip() or res.stdout.strip() or f"exit status {res.returncode}")
            who = "" if os.geteuid() == 0 else " (not running as root)"
            return f"cannot make a private mount namespace{who}: {said.splitlines()[-1]}"
        return None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def unusable_reason(*, namespace: bool = True) -> str | None:
    """Why :class:`Certmonger` cannot run here (with a mount namespace when ``namespace``), or
    ``None`` when it can: a program is missing, or the namespace cannot be made."""
    missing = missing_programs(*PROGRAMS)
    if missing:
        return f"not installed: {', '.join(missing)}"
    return namespace_problem() if namespace else None


# --------------------------------------------------------------------------------------------
# process plumbing
# --------------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:  # runs in the child between fork and exec
    # Die with the parent even if it is SIGKILLed, so nothing outlives it.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # pragma: no cover - best effort
        pass


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }
    if extra:
        env.update(extra)
    return env


def spawn(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None,
           stdout=None, stderr=None, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    """Start a long-running child in its own process group (pgid == pid)."""
    return subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=str(cwd) if cwd else None,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        preexec_fn=_child_setup,
    )


def _exited_unreaped(pid: int) -> bool:
    """True once ``pid`` has exited; does not reap it (WNOWAIT), so its pid -- and with it its
    process-group id -- cannot be recycled while we still signal that group."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped
        return True


def terminate(proc: subprocess.Popen | None, *, grace: float = 5.0) -> None:
    """Stop a child started by :func:`spawn`: SIGTERM its group, then SIGKILL; reap it.

    Only our own child and its process group (pgid == its pid, from ``start_new_session``) are
    signalled; nothing is looked up by name.
    """
    if proc is None or proc.returncode is not None:
        return
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while not _exited_unreaped(proc.pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            deadline = time.monotonic() + grace
        time.sleep(0.01)
    # The leader is a zombie now (pgid still reserved): sweep helpers left in its group, such
    # as certmonger's scep-submit children blocked on a silent server, then reap the leader.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait(timeout=grace)


def run_program(argv: Sequence[str], *, timeout: float, env: Mapping[str, str],
         cwd: Path | None = None, input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run a short-lived command; on timeout kill its whole group and raise ProgramTimeout."""
    proc = spawn(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                  stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise ProgramTimeout(
            f"{shlex.join(argv)} did not finish within {timeout}s\n"
            f"stdout:\n{out.decode(errors='replace')}\nstderr:\n{err.decode(errors='replace')}"
        ) from None
    finally:
        if proc.returncode is None:  # e.g. KeyboardInterrupt inside communicate()
            terminate(proc, grace=1.0)
    return subprocess.CompletedProcess(
        list(argv), proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    )


def tail(path: Path, lines: int) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return f"<{path} does not exist>"
    text = data[-512 * 1024:].decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])

# --------------------------------------------------------------------------------------------
# certmonger
# --------------------------------------------------------------------------------------------

_DBUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <!-- Private session bus for one test.  Deliberately NO <servicedir>: with the stock session
       config, a getcert call would bus-activate a second certmonger-session that races ours
       on the same state directories. -->
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""

# Activates OpenSSL 3's legacy provider (single DES, RC2, ...) next to the default one.  Replaces
# Debian 12's /etc/ssl/openssl.cnf, whose [openssl_init] section is empty, for certmonger only.
_LEGACY_OPENSSL_CNF = """# written by devicegate for a certmonger mount namespace
openssl_conf = openssl_init
config_diagnostics = 1

[openssl_init]
providers = provider_sect

[provider_sect]
default = default_sect
legacy = legacy_sect

[default_sect]
activate = 1

[legacy_sect]
activate = 1
"""

def _dbus_address_escape(value: str) -> str:
    """Escape a value for a D-Bus address (``[-0-9A-Za-z_/.\\*]`` pass, the rest is %XX)."""
    ok = set("-_/.\\*0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return "".join(c if c in ok else "".join(f"%{b:02x}" for b in c.encode()) for c in value)


_BLOB_LINE = re.compile(r"^\s*[A-Za-z0-9+/=]{32,}\s*$")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def parse_getcert_list(text: str) -> dict[str, dict[str, str]]:
    """Parse ``getcert list`` output into ``{request_id: {field: value}}``.

    Fields are the lines ``<TAB>name: value`` below each ``Request ID 'X':`` header, for example
    ``status``, ``stuck``, ``ca-error``, ``CA``, ``issuer``, ``subject``, ``expires``, ``eku``.
    """
    requests: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    last_key: str | None = None
    for line in text.splitlines():
        m = re.match(r"^Request ID '(.*)':\s*$", line)
        if m:
            current = requests.setdefault(m.group(1), {"id": m.group(1)})
            last_key = None
            continue
        if current is None:
            continue
        if line.startswith("\t") and not line.startswith("\t\t"):
            key, sep, value = line[1:].partition(":")
            if sep:
                last_key = key.strip()
                current[last_key] = value.strip()
                continue
        if last_key and line.strip():  # continuation of a multi-line value (e.g. ca-error)
            current[last_key] += "\n" + line.strip()
    return requests


class Certmonger:
    """A private certmonger (session bus, no fork, debug log) living in ``work_dir``.

    ``tls_ca_pem``: extra CA certificate(s) certmonger's helpers must trust for HTTPS; they are
    appended to a copy of the system bundle which is bind-mounted over
    ``/etc/ssl/certs/ca-certificates.crt`` inside a private mount namespace (root only).
    ``openssl_legacy``: bind-mount an ``openssl.cnf`` activating OpenSSL's legacy provider (needed
    only to decrypt single-DES replies such as micromdm scepserver's; never for our server).

    Use as a context manager; ``start()``/``stop()`` are available too.
    """

    def __init__(self, work_dir: os.PathLike | str, *, tls_ca_pem: str | None = None,
                 openssl_legacy: bool = False, debug_level: int = 2,
                 start_timeout: float = 15.0, getcert_timeout: float = 20.0) -> None:
        self.work_dir = Path(work_dir).resolve()
        self.tls_ca_pem = tls_ca_pem
        self.openssl_legacy = openssl_legacy
        self.debug_level = debug_level
        self.start_timeout = start_timeout
        self.getcert_timeout = getcert_timeout
        self.log_path = self.work_dir / "certmonger.log"
        self.dbus_log_path = self.work_dir / "dbus-daemon.log"
        self.bus_address: str | None = None
        self.bind_mounts: list[tuple[Path, Path]] = []  # (source, target) inside the namespace
        self.timings: dict[str, float] = {}  # request id -> seconds from request() to wait() end
        self._dbus: subprocess.Popen | None = None
        self._certmonger: subprocess.Popen | None = None
        self._bus_dir: Path | None = None
        self._own_bus_dir = False
        self._started_at: dict[str, float] = {}
        self._counter = 0

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._certmonger.pid if self._certmonger else None

    @property
    def dbus_pid(self) -> int | None:
        return self._dbus.pid if self._dbus else None

    @property
    def uses_namespace(self) -> bool:
        return self.tls_ca_pem is not None or self.openssl_legacy

    def __enter__(self) -> "Certmonger":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self._certmonger is not None:
            raise ProgramError("certmonger already started")
        problem = unusable_reason(namespace=self.uses_namespace)
        if problem:
            raise ProgramError(f"certmonger cannot run here: {problem}")
        try:
            self._start_dbus()
            self._start_certmonger()
        except BaseException:
            self.stop()
            raise

    def _dirs(self) -> dict[str, Path]:
        d = {
            "HOME": self.work_dir / "home",
            "CERTMONGER_REQUESTS_DIR": self.work_dir / "requests",
            "CERTMONGER_CAS_DIR": self.work_dir / "cas",
            "CERTMONGER_TMPDIR": self.work_dir / "tmp",
            "CERTMONGER_CONFIG_DIR": self.work_dir / "config",
            "CERTMONGER_LOCAL_CA_DIR": self.work_dir / "local-ca",
        }
        for p in d.values():
            p.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d

    def _start_dbus(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        sock = self.work_dir / "bus.sock"
        if len(str(sock)) > 100:  # sockaddr_un.sun_path is 108 bytes
            self._bus_dir = Path(tempfile.mkdtemp(prefix="dg-bus-", dir="/tmp"))
            self._own_bus_dir = True
            sock = self._bus_dir / "bus.sock"
        config = self.work_dir / "dbus-session.conf"
        config.write_text(_DBUS_CONFIG.format(socket=xml_escape(_dbus_address_escape(str(sock)))))
        with open(self.dbus_log_path, "ab") as log:
            self._dbus = spawn(
                ["dbus-daemon", f"--config-file={config}", "--print-address", "--nofork"],
                env=base_env(), stdout=subprocess.PIPE, stderr=log,
            )
        address = self._read_line(self._dbus, self.start_timeout)
        if not address:
            raise ProgramError("dbus-daemon printed no address; log:\n"
                            + tail(self.dbus_log_path, 20))
        self.bus_address = address

    @staticmethod
    def _read_line(proc: subprocess.Popen, timeout: float) -> str:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + timeout
        try:
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProgramTimeout(f"{proc.args[0]} printed nothing within {timeout}s")
                if not sel.select(left):
                    continue
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break  # EOF: the process exited
                buf += chunk
        finally:
            sel.close()
        return buf.split(b"\n", 1)[0].decode().strip()

    def _namespace_prefix(self) -> list[str]:
        """``unshare`` + ``sh -c 'mount --bind ... && exec "$@"'`` for the bind mounts."""
        ssl_dir = self.work_dir / "ns-files"
        ssl_dir.mkdir(exist_ok=True)
        self.bind_mounts = []
        if self.tls_ca_pem is not None:
            bundle = ssl_dir / "ca-certificates.crt"
            system = SYSTEM_CA_BUNDLE.read_text() if SYSTEM_CA_BUNDLE.exists() else ""
            extra = self.tls_ca_pem if self.tls_ca_pem.endswith("\n") else self.tls_ca_pem + "\n"
            if system and not system.endswith("\n"):
                system += "\n"
            bundle.write_text(system + extra)
            # libcurl (Debian: --with-ca-bundle=/etc/ssl/certs/ca-certificates.crt) and OpenSSL's
            # default CA file (/usr/lib/ssl/cert.pem -> the same file) both end up here.
            self.bind_mounts.append((bundle, SYSTEM_CA_BUNDLE.resolve()))
        if self.openssl_legacy:
            cnf = ssl_dir / "openssl.cnf"
            cnf.write_text(_LEGACY_OPENSSL_CNF)
            # /usr/lib/ssl/openssl.cnf (OPENSSLDIR) is a symlink to /etc/ssl/openssl.cnf.
            self.bind_mounts.append((cnf, SYSTEM_OPENSSL_CNF.resolve()))
        mounts = " && ".join(
            f"mount --bind {shlex.quote(str(src))} {shlex.quote(str(dst))}"
            for src, dst in self.bind_mounts
        )
        return ["unshare", "--mount", "--propagation", "private",
                "sh", "-c", f'{mounts} && exec "$@"', "sh"]

    def _start_certmonger(self) -> None:
        dirs = self._dirs()
        env = base_env({"DBUS_SESSION_BUS_ADDRESS": self.bus_address or ""})
        env.update({k: str(v) for k, v in dirs.items()})
        self._getcert_env = dict(env)
        argv = ["certmonger", "-s", "-n", "-B", "-d", str(self.debug_level)]
        if self.uses_namespace:
            # unshare and sh both exec, so the PID we hold ends up being certmonger's own.
            argv = self._namespace_prefix() + argv
        with open(self.log_path, "ab") as log:
            self._certmonger = spawn(argv, env=env, cwd=self.work_dir, stdout=log,
                                      stderr=subprocess.STDOUT)
        # Ready when it owns its bus name, i.e. when getcert can talk to it.
        deadline = time.monotonic() + self.start_timeout
        last = None
        while True:
            if self._certmonger.poll() is not None:
                raise ProgramError(
                    f"certmonger exited with {self._certmonger.returncode}; log:\n{self.log_tail()}"
                )
            last = self._getcert_raw(["list-cas"], timeout=5.0)
            if last.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise ProgramTimeout(
                    f"certmonger not answering on its bus after {self.start_timeout}s: "
                    f"{last.stderr.strip()}\nlog:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        try:
            terminate(self._certmonger)
        finally:
            try:
                terminate(self._dbus)
            finally:
                if self._dbus is not None and self._dbus.stdout is not None:
                    self._dbus.stdout.close()
                if self._own_bus_dir and self._bus_dir is not None:
                    shutil.rmtree(self._bus_dir, ignore_errors=True)
                self._own_bus_dir = False

    def is_running(self) -> bool:
        return self._certmonger is not None and self._certmonger.poll() is None

    # ---- getcert ---------------------------------------------------------------------------

    def _getcert_raw(self, args: Sequence[str],
                     timeout: float | None = None) -> subprocess.CompletedProcess:
        return run_program(["getcert", args[0], "-s", *args[1:]], env=self._getcert_env,
                    timeout=timeout or self.getcert_timeout)

    def getcert(self, *args: str, timeout: float | None = None,
                check: bool = True) -> subprocess.CompletedProcess:
        """Run ``getcert <args[0]> -s <args[1:]>`` against this certmonger."""
        if not self.is_running():
            raise ProgramError(f"certmonger is not running; log:\n{self.log_tail()}")
        res = self._getcert_raw(args, timeout)
        if check and res.returncode != 0:
            raise ProgramError(
                f"{shlex.join(res.args)} exited {res.returncode}\nstdout: {res.stdout.strip()}\n"
                f"stderr: {res.stderr.strip()}\ncertmonger log:\n{self.log_tail(40)}"
            )
        return res

    def _write_file(self, subdir: str, name: str, content: str, mode: int = 0o644) -> Path:
        d = self.work_dir / subdir
        d.mkdir(parents=True, exist_ok=True)
        p = d / name
        p.write_text(content)
        p.chmod(mode)
        return p

    def add_scep_ca(self, name: str, url: str, ca_pem: str, tls_ca_pem: str | None = None,
                    extra_args: Iterable[str] = (), *, wait: bool = True,
                    timeout: float = 30.0) -> dict[str, str]:
        """``getcert add-scep-ca -c NAME -u URL -N <ca file> [-R <tls ca file>]``.

        ``ca_pem`` is the SCEP CA certificate certmonger must check CertRep signatures against
        (``-N``; without it a self-signed CA fails the check).  ``tls_ca_pem`` becomes ``-R``,
        which certmonger only uses for its first requests (GetCACaps/GetCACert); PKIOperation
        is checked against the system bundle, so pass the same PEM to
        ``Certmonger(tls_ca_pem=...)`` too.  For an https URL it defaults to that PEM.  The
        files must outlive the CA entry (the helper command stores their paths), so they are
        kept in the work dir.

        ``wait``: return only once certmonger has fetched GetCACaps/GetCACert (its CA record
        has ``ca_encryption_cert``).  A request made before that ends in CA_UNCONFIGURED,
        "No RA certificate (-r) given, and no default known.", stuck.  Returns :meth:`ca_info`.
        """
        if not _REQUEST_ID_RE.match(name):
            raise ValueError(f"CA name {name!r} should match {_REQUEST_ID_RE.pattern}")
        if tls_ca_pem is None and url.lower().startswith("https:"):
            # getcert refuses an https URL without -R ("HTTPS requires a CA certificate.").
            tls_ca_pem = self.tls_ca_pem
        args = ["add-scep-ca", "-c", name, "-u", url,
                "-N", str(self._write_file("ca-files", f"{name}-ca.pem", ca_pem))]
        if tls_ca_pem is not None:
            args += ["-R", str(self._write_file("ca-files", f"{name}-tls-ca.pem", tls_ca_pem))]
        self.getcert(*args, *extra_args)
        if not wait:
            return self.ca_info(name)
        deadline = time.monotonic() + timeout
        while True:
            info = self.ca_info(name)
            if info.get("ca_encryption_cert"):
                return info
            if time.monotonic() > deadline:
                raise ProgramTimeout(
                    f"certmonger did not fetch GetCACaps/GetCACert from {url} in {timeout}s; "
                    f"CA record: {info}\ncertmonger log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def ca_info(self, name: str) -> dict[str, str]:
        """certmonger's stored record for CA ``name`` (``ca_capabilities``,
        ``ca_encryption_cert``, ...), read from the file ``getcert list-cas -v`` names."""
        res = self.getcert("list-cas", "-c", name, "-v")
        m = re.search(r"^\s*config-path: (.+)$", res.stdout, re.M)
        if not m:
            return {}
        record: dict[str, str] = {}
        key = None
        try:
            lines = Path(m.group(1).strip()).read_text().splitlines()
        except FileNotFoundError:  # being rewritten right now
            return {}
        for line in lines:
            if line.startswith(" ") and key:
                record[key] += "\n" + line[1:]
            elif "=" in line:
                key, _, value = line.partition("=")
                record[key] = value
        return record

    def request(self, ca_name: str, cn: str, challenge: str | None,
                key_path: os.PathLike | str, cert_path: os.PathLike | str,
                eku: str | None = CLIENT_AUTH_EKU, extra_args: Iterable[str] = (), *,
                request_id: str | None = None, getcert_wait: bool = False) -> str:
        """``getcert request -c CA -k KEY -f CERT -N CN=<cn> -U <eku> -l <challenge file> -I ID``.

        Returns the request id (nickname).  Does not wait unless ``getcert_wait`` (``-w``); use
        :meth:`wait`, which polls with a deadline.  ``cn`` is put into ``CN=...`` verbatim (no DN
        escaping).  ``challenge=None`` sends no challengePassword.
        """
        rid = request_id or self._next_id()
        if not _REQUEST_ID_RE.match(rid):
            raise ValueError(f"request id {rid!r} should match {_REQUEST_ID_RE.pattern}")
        key_path = Path(key_path).resolve()
        cert_path = Path(cert_path).resolve()
        args = ["request", "-c", ca_name, "-I", rid, "-k", str(key_path), "-f", str(cert_path),
                "-N", f"CN={cn}"]
        if eku:
            args += ["-U", eku]
        if challenge is not None:
            args += ["-l", str(self._write_file("challenges", f"{rid}.txt", challenge, 0o600))]
        if getcert_wait:
            args.append("-w")
        args += list(extra_args)
        self._started_at[rid] = time.monotonic()
        # With -w, getcert's exit status reflects the final state (e.g. 4 for NEED_GUIDANCE).
        res = self.getcert(*args, check=not getcert_wait)
        if f'"{rid}"' not in res.stdout:
            raise ProgramError(f"unexpected getcert request output: {res.stdout!r} {res.stderr!r}")
        return rid

    def _next_id(self) -> str:
        self._counter += 1
        return f"req{self._counter}"

    def status(self, request_id: str) -> dict[str, str]:
        """``getcert list -i ID`` parsed into a dict (empty if certmonger does not know the id)."""
        res = self.getcert("list", "-i", request_id, check=False)
        return parse_getcert_list(res.stdout).get(request_id, {})

    def wait(self, request_id: str, timeout: float = 60.0, *, until: Iterable[str] = (),
             expect: str | None = None, poll: float = 0.1) -> dict[str, str]:
        """Poll ``getcert list -i ID`` until a terminal state; return the parsed fields.

        Terminal: :data:`CERTMONGER_TERMINAL_STATES`, anything in ``until``, or ``stuck: yes``.
        Raises :class:`ProgramTimeout` (with the certmonger log tail) when none is reached in
        ``timeout`` seconds, and :class:`ProgramError` if ``expect`` is given and the final status
        differs.  The elapsed time since :meth:`request` is stored in ``self.timings[id]``.
        """
        stop_states = CERTMONGER_TERMINAL_STATES | set(until)
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        seen: list[str] = []
        while True:
            if not self.is_running():
                raise ProgramError(f"certmonger died while waiting for {request_id}; log:\n"
                                f"{self.log_tail()}")
            info = self.status(request_id)
            st = info.get("status", "<unknown request>")
            if not seen or seen[-1] != st:
                seen.append(st)
            if st in stop_states or info.get("stuck") == "yes":
                break
            if time.monotonic() > deadline:
                raise ProgramTimeout(
                    f"request {request_id} did not reach a terminal state in {timeout}s; "
                    f"states seen: {' -> '.join(seen)}; last: {info}\n"
                    f"certmonger log tail:\n{self.log_tail()}"
                )
            time.sleep(poll)
        start = self._started_at.get(request_id)
        if start is not None:
            self.timings[request_id] = time.monotonic() - start
        info["states-seen"] = " -> ".join(seen)
        if expect is not None and info.get("status") != expect:
            raise ProgramError(
                f"request {request_id}: expected {expect}, got {info.get('status')} "
                f"(ca-error: {info.get('ca-error', '-')}); fields: {info}\n"
                f"certmonger log tail:\n{self.log_tail()}"
            )
        return info

    def enroll(self, ca_name: str, cn: str, challenge: str | None, *,
               key_path: os.PathLike | str | None = None,
               cert_path: os.PathLike | str | None = None, timeout: float = 60.0,
               expect: str | None = None, **request_kw) -> dict[str, str]:
        """:meth:`request` + :meth:`wait`; key/cert default to files in the work dir."""
        rid = request_kw.pop("request_id", None) or self._next_id()
        out = self.work_dir / "issued"
        out.mkdir(exist_ok=True)
        key_path = key_path or out / f"{rid}.key.pem"
        cert_path = cert_path or out / f"{rid}.cert.pem"
        rid = self.request(ca_name, cn, challenge, key_path, cert_path, request_id=rid,
                           **request_kw)
        info = self.wait(rid, timeout=timeout, expect=expect)
        info["key-file"] = str(Path(key_path).resolve())
        info["cert-file"] = str(Path(cert_path).resolve())
        return info

    def log_tail(self, lines: int = 60, *, blobs: bool = False) -> str:
        """Last ``lines`` lines of certmonger's debug log; base64/PEM body lines (CSRs,
        pkiMessages dumped at ``-d 2``) are left out unless ``blobs``."""
        text = tail(self.log_path, lines if blobs else 40 * lines)
        kept = [ln for ln in text.splitlines() if blobs or not _BLOB_LINE.match(ln)]
        return "\n".join(kept[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


