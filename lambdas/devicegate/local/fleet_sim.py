"""A simulated Fleet: the subset of Fleet's REST API (v1) devicegate reads, served over real
HTTPS (or HTTP when no certificate is given) on 127.0.0.1, with Fleet's JSON shapes, Fleet's
0-based ``page``/``per_page`` pagination, Fleet-style error bodies and a bearer token.

Routes (``/api/v1/fleet`` and ``/api/latest/fleet``):
    GET /hosts                       page, per_page, order_key, order_direction, after, team_id,
                                     policy_id + policy_response, query, populate_policies, device_mapping
    GET /hosts/{id}                  host detail with ``policies`` (response pass|fail|"") and ``end_users``
    GET /hosts/identifier/{ident}    the same, by uuid, hostname or hardware serial (first match);
                                     both with the software inventory unless exclude_software=true
    GET /hosts/{id}/device_mapping
    GET /global/policies, GET /teams, GET /teams/{id}/policies

Admin routes (same token) for the local CLI and tests, mirrored by Python methods:
    POST   /_sim/hosts               {"uuid", "hostname", "email"?, "team"?, "platform"?, "hardware_serial"?,
                                      "display_name"?}  (an existing uuid is updated, keeping its id)
    DELETE /_sim/hosts/{uuid}
    POST   /_sim/results             {"host_uuid", "policy", "result": pass|fail|none, "critical"?, "resolution"?}
    GET    /_sim/state
    GET|POST|DELETE /_sim/faults     {"path", "kind", "count", "retry_after"?, "seconds"?, "host_uuid"?}
    GET    /_sim/webhook/{policy_id} the failing-policy webhook payload Fleet would send now

Fault kinds, applied to the next ``count`` requests whose path matches ``path`` (a glob):
    500, 429 (``Retry-After``: seconds or an HTTP-date string), timeout (answer after ``seconds``),
    malformed (broken JSON), truncated (Content-Length promises more than is sent), vanish (the
    host — ``host_uuid`` or the one the path names — is deleted before the request is answered),
    repeat (serve the previous page again), unpaged (ignore page/per_page, send everything).

State lives in memory and is written atomically to ``state_path`` after every change, so a
restarted local stack finds its hosts and results again. Faults and the request log are not kept.
"""

from __future__ import annotations

import collections
import copy
import fnmatch
import hmac
import io
import json
import os
import re
import socket
import ssl
import threading
import uuid as uuidlib
from contextlib import contextmanager
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

FAULT_KINDS = ("500", "429", "timeout", "malformed", "truncated", "vanish", "repeat", "unpaged")
MAX_FAULT_SECONDS = 30.0
MAX_REQUEST_BODY = 64 * 1024
STATE_VERSION = 1
# Fleet's old listOptionsFromRequest: no paging parameters means everything; a page without a
# per_page means 20 per page.
DEFAULT_PER_PAGE = 20

_API = re.compile(r"^/api/(?:v1|latest)/fleet(/.*)$")
_ROUTES = [
    ("hosts", re.compile(r"^/hosts$")),
    ("host", re.compile(r"^/hosts/(\d+)$")),
    ("identifier", re.compile(r"^/hosts/identifier/([^/]+)$")),
    ("device_mapping", re.compile(r"^/hosts/(\d+)/device_mapping$")),
    ("global_policies", re.compile(r"^/global/policies$")),
    ("teams", re.compile(r"^/teams$")),
    ("team_policies", re.compile(r"^/teams/(\d+)/policies$")),
]
_HOST_ORDER_KEYS = {"id": int, "hostname": str, "uuid": str, "created_at": str}
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,255}$")
_SIM_UUID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


class SimError(Exception):
    """An admin request the simulator refuses (400), or names something it does not have (404)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


SOFTWARE_PER_HOST = 300  # a Mac's inventory in Fleet: applications, browser extensions, packages


def _software_inventory(host_id: int) -> list[dict]:
    """What Fleet's host detail carries unless asked for ``exclude_software=true``: one entry per
    installed title (a made-up but Fleet-shaped inventory, the same for a host every time)."""
    return [{"id": 1000 + n, "name": f"Application {n}.app", "version": f"{1 + n % 17}.{n % 7}.{host_id % 10}",
             "bundle_identifier": f"com.example.app{n}", "source": "apps", "browser": "", "generated_cpe": "",
             "vulnerabilities": None, "installed_paths": [f"/Applications/Application {n}.app"],
             "last_opened_at": None} for n in range(SOFTWARE_PER_HOST)]


def _fleet_error(message: str, reason: str) -> dict:
    return {"message": message, "errors": [{"name": "base", "reason": reason}], "uuid": str(uuidlib.uuid4())}


def _json_bytes(doc) -> bytes:
    # Fleet encodes with two-space indentation and a trailing newline.
    return (json.dumps(doc, indent=2) + "\n").encode()


def _empty_state() -> dict:
    return {"version": STATE_VERSION, "next_id": {"host": 1, "policy": 1, "team": 1},
            "teams": {}, "policies": {}, "hosts": {}, "results": {}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    ssl_context: ssl.SSLContext | None = None
    sim: "SimulatedFleet"

    def handle_error(self, request, client_address):
        # A client that hangs up or fails the TLS handshake is routine here, not a traceback.
        import sys

        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def get_request(self):
        sock, addr = super().get_request()
        # Headers and body go out in two writes; without this, Nagle + delayed ACK add ~40 ms each.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            # The handshake runs in the connection's own thread, so one stalled client cannot
            # block the accept loop.
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fleet-sim"
    sys_version = ""
    timeout = 15

    def setup(self):
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (ssl.SSLError, OSError):
                self.close_connection = True
                self.rfile = io.BytesIO()  # nothing to read: the request loop ends at once

    def log_message(self, format, *args):  # noqa: A002 - the signature is http.server's
        pass

    def _dispatch(self):
        try:
            self.server.sim._handle(self)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout):
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _dispatch


class SimulatedFleet:
    def __init__(self, state_path, *, token: str, certfile=None, keyfile=None, host: str = "127.0.0.1",
                 port: int = 0, conditional_access_flag: bool = True):
        if not isinstance(token, str) or not token:
            raise ValueError("the simulated Fleet needs a token")
        if (certfile is None) != (keyfile is None):
            raise ValueError("give both certfile and keyfile, or neither")
        self.state_path = Path(state_path)
        self.certfile, self.keyfile = certfile, keyfile
        self.host, self.port = host, port
        # Older Fleet servers have no per-policy conditional-access flag; tests flip this off.
        self.conditional_access_flag = conditional_access_flag
        self._token = token.encode()
        self._lock = threading.RLock()
        self._state = self._load()
        self._faults: list[dict] = []
        self._batch = 0
        self._dirty = False
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.requests: collections.deque = collections.deque(maxlen=20_000)  # (method, path, query)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "SimulatedFleet":
        if self._server is not None:
            return self
        server = _Server((self.host, self.port), _Handler)
        server.sim = self
        if self.certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(self.certfile, self.keyfile)
            server.ssl_context = ctx
        self._stopping.clear()
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fleet-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulated Fleet is not running")
        scheme = "https" if self.certfile else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    # ------------------------------------------------------------------ state and persistence

    def _load(self) -> dict:
        try:
            raw = self.state_path.read_text()
        except FileNotFoundError:
            return _empty_state()
        try:
            state = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"{self.state_path} is not valid JSON ({exc}); move it away to start empty") from None
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION or \
                not all(isinstance(state.get(k), dict) for k in ("next_id", "teams", "policies", "hosts", "results")):
            raise ValueError(f"{self.state_path} is not a simulated-Fleet state file (version {STATE_VERSION})")
        return state

    def _save(self) -> None:
        if self._batch:
            self._dirty = True
            return
        data = json.dumps(self._state, indent=1, sort_keys=True).encode()
        directory = self.state_path.parent
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{self.state_path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.state_path)
        try:
            dir_fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)

    @contextmanager
    def batch(self):
        """Group many changes into one write of the state file."""
        with self._lock:
            self._batch += 1
            try:
                yield self
            finally:
                self._batch -= 1
                if not self._batch and self._dirty:
                    self._dirty = False
                    self._save()

    def _next_id(self, kind: str) -> int:
        value = self._state["next_id"][kind]
        self._state["next_id"][kind] = value + 1
        return value

    def state(self) -> dict:
        with self._lock:
            return copy.deepcopy(self._state)

    # ------------------------------------------------------------------ admin operations

    def _host_by_uuid(self, host_uuid: str) -> dict | None:
        wanted = host_uuid.casefold()
        for host in self._state["hosts"].values():
            if host["uuid"].casefold() == wanted:
                return host
        return None

    def _team_by_name(self, name: str, *, create: bool) -> dict | None:
        for team in self._state["teams"].values():
            if team["name"].casefold() == name.casefold():
                return team
        if not create:
            return None
        team = {"id": self._next_id("team"), "name": name, "description": "", "created_at": _now()}
        self._state["teams"][str(team["id"])] = team
        return team

    def host_id(self, host_uuid: str) -> int | None:
        with self._lock:
            host = self._host_by_uuid(host_uuid)
            return host["id"] if host else None

    def add_host(self, uuid: str, hostname: str, email: str | None = None, team: str | None = None, *,
                 platform: str = "darwin", hardware_serial: str | None = None,
                 display_name: str | None = None) -> dict:
        """Add a host (or update the one with this UUID); a team named here is created if missing."""
        if not isinstance(uuid, str) or not _SIM_UUID.fullmatch(uuid):
            raise SimError("uuid must be 1-64 letters, digits or dashes")
        if not isinstance(hostname, str) or not _NAME.fullmatch(hostname):
            raise SimError("hostname must be 1-255 printable characters")
        if email is not None and (not isinstance(email, str) or "@" not in email or not _NAME.fullmatch(email)):
            raise SimError("email must look like an email address")
        if team is not None and (not isinstance(team, str) or not _NAME.fullmatch(team)):
            raise SimError("team must be 1-255 printable characters")
        if display_name is not None and (not isinstance(display_name, str) or not _NAME.fullmatch(display_name)):
            raise SimError("display_name must be 1-255 printable characters")
        if platform not in ("darwin", "windows", "ubuntu", "rhel", "chrome", "ios", "ipados"):
            raise SimError("platform must be a Fleet platform such as darwin")
        with self._lock:
            team_row = self._team_by_name(team, create=True) if team else None
            host = self._host_by_uuid(uuid)
            now = _now()
            if host is None:
                host_id = self._next_id("host")
                host = {"id": host_id, "uuid": uuid, "created_at": now,
                        "hardware_serial": hardware_serial or f"C02SIM{host_id:06d}",
                        "primary_ip": f"10.0.{host_id // 250 % 250}.{host_id % 250 + 1}"}
                self._state["hosts"][str(host_id)] = host
            elif hardware_serial:
                host["hardware_serial"] = hardware_serial
            host.update(hostname=hostname, computer_name=display_name or hostname.split(".")[0],
                        email=email, team_id=team_row["id"] if team_row else None,
                        platform=platform, updated_at=now, policy_updated_at=now)
            self._save()
            return self._host_json(host)

    def remove_host(self, uuid: str) -> bool:
        with self._lock:
            host = self._host_by_uuid(uuid)
            if host is None:
                return False
            self._delete_host(host)
            self._save()
            return True

    def _delete_host(self, host: dict) -> None:
        self._state["hosts"].pop(str(host["id"]), None)
        self._state["results"].pop(str(host["id"]), None)

    def set_policy(self, host_uuid: str, policy: str, result: str | None, *, critical: bool | None = None,
                   resolution: str | None = None) -> dict:
        """Set one host's result for a policy, by name: ``pass``, ``fail`` or ``none`` (no result).
        A policy not found in the host's team or among the global ones is created (conditional
        access enabled) in the host's team, or globally for a host without a team."""
        if result not in ("pass", "fail", "none", None):
            raise SimError("result must be pass, fail or none")
        if not isinstance(policy, str) or not _NAME.fullmatch(policy):
            raise SimError("policy must be a name of 1-255 printable characters")
        if critical is not None and not isinstance(critical, bool):
            raise SimError("critical must be true or false")
        if resolution is not None and (not isinstance(resolution, str) or len(resolution) > 4096):
            raise SimError("resolution must be a string of at most 4096 characters")
        with self._lock:
            host = self._host_by_uuid(host_uuid) if isinstance(host_uuid, str) else None
            if host is None:
                raise SimError(f"no host with uuid {host_uuid!r}", 404)
            row = self._find_policy(policy, host["team_id"])
            now = _now()
            if row is None:
                row = {"id": self._next_id("policy"), "name": policy,
                       "query": "SELECT 1 FROM os_version WHERE 1 = 1;",
                       "description": f"Simulated policy {policy!r}.", "critical": bool(critical),
                       "resolution": resolution or "", "platform": host["platform"], "team_id": host["team_id"],
                       "conditional_access_enabled": True, "conditional_access_bypass_enabled": True,
                       "created_at": now, "updated_at": now}
                self._state["policies"][str(row["id"])] = row
            else:
                if critical is not None:
                    row["critical"] = critical
                if resolution is not None:
                    row["resolution"] = resolution
                row["updated_at"] = now
            results = self._state["results"].setdefault(str(host["id"]), {})
            if result in ("pass", "fail"):
                results[str(row["id"])] = result
            else:
                results.pop(str(row["id"]), None)
            host["policy_updated_at"] = now
            self._save()
            return self._policy_json(row)

    def _find_policy(self, name: str, team_id: int | None) -> dict | None:
        for scope in ([team_id, None] if team_id is not None else [None]):
            for row in self._state["policies"].values():
                if row["team_id"] == scope and row["name"] == name:
                    return row
        return None

    def inject_fault(self, path: str, kind: str, count: int = 1, *, retry_after=None, seconds: float | None = None,
                     host_uuid: str | None = None) -> dict:
        if not isinstance(path, str) or not path.startswith("/"):
            raise SimError("path must be a request path (a glob is allowed), e.g. /api/v1/fleet/hosts")
        if kind not in FAULT_KINDS:
            raise SimError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10_000:
            raise SimError("count must be between 1 and 10000")
        if retry_after is not None and not isinstance(retry_after, (int, float, str)) or isinstance(retry_after, bool):
            raise SimError("retry_after must be seconds or an HTTP-date")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0):
            raise SimError("seconds must be a non-negative number")
        fault = {"path": path, "kind": kind, "count": count, "retry_after": retry_after,
                 "seconds": min(float(seconds if seconds is not None else 2.0), MAX_FAULT_SECONDS),
                 "host_uuid": host_uuid}
        with self._lock:
            self._faults.append(fault)
            return dict(fault)

    def faults(self) -> list[dict]:
        with self._lock:
            return [dict(f) for f in self._faults]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> dict | None:
        with self._lock:
            for fault in self._faults:
                if fnmatch.fnmatchcase(path, fault["path"]):
                    fault["count"] -= 1
                    if fault["count"] <= 0:
                        self._faults.remove(fault)
                    return dict(fault)
        return None

    def failing_policy_webhook(self, policy_id: int, *, server_url: str | None = None) -> dict:
        """The body Fleet's failing-policies webhook would POST now for this policy."""
        with self._lock:
            row = self._state["policies"].get(str(policy_id))
            if row is None:
                raise SimError(f"no policy {policy_id}", 404)
            base = (server_url or (self.url if self._server else "https://fleet.example.com")).rstrip("/")
            hosts = [h for h in self._sorted_hosts()
                     if self._state["results"].get(str(h["id"]), {}).get(str(policy_id)) == "fail"]
            return {
                "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z"),
                "policy": self._policy_json(row),
                "hosts": [{"id": h["id"], "hostname": h["hostname"], "display_name": h["computer_name"],
                           "url": f"{base}/hosts/{h['id']}"} for h in hosts],
            }

    # ------------------------------------------------------------------ JSON shapes (Fleet's)

    def _sorted_hosts(self) -> list[dict]:
        return sorted(self._state["hosts"].values(), key=lambda h: h["id"])

    def _host_policies(self, host: dict) -> list[tuple[dict, str]]:
        results = self._state["results"].get(str(host["id"]), {})
        rows = [p for p in self._state["policies"].values() if p["team_id"] is None or p["team_id"] == host["team_id"]]
        return [(p, results.get(str(p["id"]), "")) for p in sorted(rows, key=lambda p: p["id"])]

    def _counts(self, policy_id: int) -> tuple[int, int]:
        passing = failing = 0
        for results in self._state["results"].values():
            value = results.get(str(policy_id))
            passing += value == "pass"
            failing += value == "fail"
        return passing, failing

    def _policy_core(self, row: dict) -> dict:
        doc = {
            "id": row["id"], "name": row["name"], "query": row["query"], "description": row["description"],
            "critical": row["critical"], "author_id": 1, "author_name": "Sim Admin",
            "author_email": "admin@fleet.example.com", "team_id": row["team_id"], "resolution": row["resolution"],
            "platform": row["platform"], "created_at": row["created_at"], "updated_at": row["updated_at"],
        }
        return doc

    def _flags(self, row: dict, *, bypass: bool) -> dict:
        doc = {"calendar_events_enabled": False}
        if self.conditional_access_flag:
            doc["conditional_access_enabled"] = row["conditional_access_enabled"]
            if bypass:
                doc["conditional_access_bypass_enabled"] = row["conditional_access_bypass_enabled"]
        doc["type"] = "dynamic"
        return doc

    def _policy_json(self, row: dict) -> dict:
        passing, failing = self._counts(row["id"])
        doc = self._policy_core(row)
        doc.update(passing_host_count=passing, failing_host_count=failing, host_count_updated_at=row["updated_at"])
        doc.update(self._flags(row, bypass=True))
        return doc

    def _host_policy_json(self, row: dict, response: str) -> dict:
        doc = self._policy_core(row)
        doc.update(self._flags(row, bypass=False))
        doc["response"] = response
        return doc

    def _host_json(self, host: dict, *, policies: bool = False, device_mapping: bool = False,
                   detail: bool = False, software: bool = False) -> dict:
        team = self._state["teams"].get(str(host["team_id"])) if host["team_id"] is not None else None
        host_policies = self._host_policies(host)
        failing = sum(1 for _, r in host_policies if r == "fail")
        doc = {
            "created_at": host["created_at"], "updated_at": host["updated_at"], "id": host["id"],
            "detail_updated_at": host["updated_at"], "label_updated_at": host["updated_at"],
            "policy_updated_at": host["policy_updated_at"], "last_enrolled_at": host["created_at"],
            "seen_time": host["updated_at"], "refetch_requested": False,
            "hostname": host["hostname"], "uuid": host["uuid"], "platform": host["platform"],
            "osquery_version": "5.12.1", "os_version": "macOS 14.5" if host["platform"] == "darwin" else host["platform"],
            "build": "23F79", "platform_like": host["platform"], "code_name": "", "uptime": 86400000000000,
            "memory": 17179869184, "cpu_type": "arm64e", "cpu_brand": "Apple M1 Pro",
            "hardware_vendor": "Apple Inc.", "hardware_model": "MacBookPro18,3",
            "hardware_serial": host["hardware_serial"], "computer_name": host["computer_name"],
            "display_name": host["computer_name"], "display_text": host["hostname"],
            "public_ip": "", "primary_ip": host["primary_ip"], "primary_mac": "",
            "team_id": host["team_id"], "team_name": team["name"] if team else None, "status": "online",
            "issues": {"failing_policies_count": failing, "critical_vulnerabilities_count": 0,
                       "total_issues_count": failing},
            "mdm": {"encryption_key_available": False, "enrollment_status": "On (manual)", "name": "Fleet",
                    "connected_to_fleet": True, "server_url": "https://fleet.example.com/mdm/apple/mdm"},
        }
        if detail:
            doc["end_users"] = [] if not host["email"] else [{
                "idp_id": f"00u{host['id']:017d}", "idp_username": host["email"], "idp_full_name": "",
                "idp_info_updated_at": host["updated_at"], "idp_groups": [], "other_emails": [],
            }]
        if policies or detail:
            doc["policies"] = [self._host_policy_json(p, r) for p, r in host_policies]
        if software:
            doc["software"] = _software_inventory(host["id"])
        if device_mapping:
            doc["device_mapping"] = self._mapping(host) or None
        return doc

    @staticmethod
    def _mapping(host: dict) -> list[dict]:
        return [{"email": host["email"], "source": "custom"}] if host["email"] else []

    def _team_json(self, team: dict) -> dict:
        hosts = sum(1 for h in self._state["hosts"].values() if h["team_id"] == team["id"])
        return {"id": team["id"], "created_at": team["created_at"], "name": team["name"],
                "description": team["description"], "user_count": 0, "host_count": hosts}

    # ------------------------------------------------------------------ HTTP

    def _authorized(self, handler) -> bool:
        header = handler.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self._token)

    def _send(self, handler, status: int, body: bytes, *, ctype: str = "application/json; charset=utf-8",
              headers: dict | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    def _read_body(self, handler) -> dict | None:
        length = handler.headers.get("Content-Length")
        if length is None:
            return None
        if not length.isdigit() or int(length) > MAX_REQUEST_BODY:
            raise SimError("request body too large", 413)
        raw = handler.rfile.read(int(length))
        if not raw:
            return None
        try:
            doc = json.loads(raw)
        except ValueError:
            raise SimError("request body is not JSON") from None
        if not isinstance(doc, dict):
            raise SimError("request body must be a JSON object")
        return doc

    def _handle(self, handler) -> None:
        parts = urlsplit(handler.path)
        path, query = parts.path, {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        method = handler.command
        self.requests.append((method, path, query))
        try:
            body = self._read_body(handler) if method in ("POST", "PUT", "PATCH", "DELETE") else None
        except SimError as exc:
            handler.close_connection = True
            return self._send(handler, exc.status, _json_bytes(_fleet_error("Bad request", str(exc))))
        if path.startswith("/_sim/"):
            return self._handle_admin(handler, method, path, query, body)
        match = _API.match(path)
        route = None
        if match:
            for name, pattern in _ROUTES:
                found = pattern.match(match.group(1))
                if found:
                    route = (name, found.groups())
                    break
        if route is None:
            return self._send(handler, 404, b"404 page not found\n", ctype="text/plain; charset=utf-8")
        if method != "GET":
            return self._send(handler, 405, b"405 method not allowed\n", ctype="text/plain; charset=utf-8")
        if not self._authorized(handler):
            return self._send(handler, 401, _json_bytes(_fleet_error("Authentication required", "Authentication required")))
        fault = self._take_fault(path)
        if fault:
            if self._apply_fault(handler, fault, route, query):
                return
        status, doc, headers = self._api(route, query)
        body = _json_bytes(doc)
        if fault and fault["kind"] == "truncated":
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json; charset=utf-8")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body[: len(body) // 2])
            handler.close_connection = True
            return
        self._send(handler, status, body, headers=headers)

    def _apply_fault(self, handler, fault: dict, route, query: dict) -> bool:
        """Apply a fault; True when it answered the request itself."""
        kind = fault["kind"]
        if kind == "500":
            self._send(handler, 500, _json_bytes(_fleet_error("Unknown Error", "simulated internal server error")))
            return True
        if kind == "429":
            retry_after = fault["retry_after"] if fault["retry_after"] is not None else 1
            value = retry_after if isinstance(retry_after, str) else str(int(retry_after))
            reason = f"limit exceeded, retry after: {value}s"
            # Fleet's rate-limit answer carries no error uuid (see the fixture).
            self._send(handler, 429, _json_bytes({"message": reason, "errors": [{"name": "base", "reason": reason}]}),
                       headers={"Retry-After": value})
            return True
        if kind == "malformed":
            self._send(handler, 200, b'{\n  "hosts": [\n    {"id": 1,, "uuid": \n')
            return True
        if kind == "timeout":
            if self._stopping.wait(fault["seconds"]):
                handler.close_connection = True
                return True
            return False
        if kind == "vanish":
            with self._lock:
                host = None
                if fault["host_uuid"]:
                    host = self._host_by_uuid(fault["host_uuid"])
                elif route[0] in ("host", "device_mapping"):
                    host = self._state["hosts"].get(route[1][0])
                elif route[0] == "identifier":
                    host = self._identify(unquote(route[1][0]))
                if host is not None:
                    self._delete_host(host)
                    self._save()
            return False
        if kind == "repeat":
            if query.get("page", "").isdigit():
                query["page"] = str(max(int(query["page"]) - 1, 0))
            return False
        if kind == "unpaged":
            query.pop("page", None)
            query.pop("per_page", None)
            return False
        return False  # truncated: answered by the caller

    # ------------------------------------------------------------------ Fleet API

    def _api(self, route, query: dict) -> tuple[int, dict, dict]:
        name, args = route
        try:
            with self._lock:
                if name == "hosts":
                    return 200, self._list_hosts(query), {}
                if name in ("host", "identifier"):
                    host = self._state["hosts"].get(args[0]) if name == "host" else self._identify(unquote(args[0]))
                    if host is None:
                        return 404, _fleet_error("Resource Not Found",
                                                 f"Host {unquote(args[0])} was not found in the datastore"), {}
                    return 200, {"host": self._host_json(host, detail=True,
                                                         software=query.get("exclude_software") != "true")}, {}
                if name == "device_mapping":
                    host = self._state["hosts"].get(args[0])
                    if host is None:
                        return 404, _fleet_error("Resource Not Found", f"Host {args[0]} was not found in the datastore"), {}
                    return 200, {"host_id": host["id"], "device_mapping": self._mapping(host)}, {}
                if name == "global_policies":
                    rows = sorted((p for p in self._state["policies"].values() if p["team_id"] is None), key=lambda p: p["id"])
                    return 200, {"policies": [self._policy_json(p) for p in self._page(rows, query)]}, {}
                if name == "teams":
                    rows = sorted(self._state["teams"].values(), key=lambda t: t["id"])
                    return 200, {"teams": [self._team_json(t) for t in self._page(rows, query)]}, {}
                if name == "team_policies":
                    team_id = int(args[0])
                    if team_id != 0 and str(team_id) not in self._state["teams"]:
                        return 404, _fleet_error("Resource Not Found", f"Team {team_id} was not found in the datastore"), {}
                    own = sorted((p for p in self._state["policies"].values() if p["team_id"] == team_id), key=lambda p: p["id"])
                    inherited = sorted((p for p in self._state["policies"].values() if p["team_id"] is None), key=lambda p: p["id"])
                    return 200, {"policies": [self._policy_json(p) for p in self._page(own, query)],
                                 "inherited_policies": [self._policy_json(p) for p in inherited]}, {}
        except SimError as exc:
            return exc.status, _fleet_error("Bad request", str(exc)), {}
        raise AssertionError(name)

    def _identify(self, ident: str) -> dict | None:
        # Fleet's "get host by identifier" matches hostname, uuid or hardware serial: first match wins.
        for host in self._sorted_hosts():
            if ident and (host["uuid"].casefold() == ident.casefold() or host["hostname"] == ident
                          or host["hardware_serial"] == ident):
                return host
        return None

    @staticmethod
    def _paging(query: dict) -> tuple[int | None, int | None]:
        page = per_page = None
        if "page" in query:
            try:
                page = int(query["page"])
            except ValueError:
                raise SimError("non-int page value") from None
            if page < 0:
                raise SimError("negative page value")
        if "per_page" in query:
            try:
                per_page = int(query["per_page"])
            except ValueError:
                raise SimError("non-int per_page value") from None
            if per_page <= 0:
                raise SimError("invalid per_page value")
        if per_page is None and page is not None:
            per_page = DEFAULT_PER_PAGE
        return page, per_page

    def _page(self, rows: list, query: dict) -> list:
        page, per_page = self._paging(query)
        if per_page is None:
            return rows
        start = (page or 0) * per_page
        return rows[start:start + per_page]

    @staticmethod
    def _flag(query: dict, key: str) -> bool:
        return query.get(key, "").lower() in ("true", "1")

    def _list_hosts(self, query: dict) -> dict:
        self._paging(query)  # validate before filtering, like Fleet's request decoding
        rows = self._sorted_hosts()
        if "team_id" in query:
            try:
                team_id = int(query["team_id"])
            except ValueError:
                raise SimError("invalid team_id") from None
            rows = [h for h in rows if (h["team_id"] or 0) == team_id] if team_id == 0 else \
                [h for h in rows if h["team_id"] == team_id]
        if "policy_response" in query:
            if "policy_id" not in query:
                raise SimError("Missing policy_id (it must be present when policy_response is specified)")
            if query["policy_response"] not in ("passing", "failing"):
                raise SimError("Invalid policy_response, must be passing or failing")
        if "policy_id" in query:
            try:
                policy_id = str(int(query["policy_id"]))
            except ValueError:
                raise SimError("Invalid policy_id") from None
            wanted = {"passing": {"pass"}, "failing": {"fail"}}.get(query.get("policy_response"), {"pass", "fail"})
            rows = [h for h in rows if self._state["results"].get(str(h["id"]), {}).get(policy_id) in wanted]
        if query.get("query"):
            needle = query["query"].casefold()
            rows = [h for h in rows if any(needle in (h.get(k) or "").casefold()
                                           for k in ("hostname", "uuid", "hardware_serial", "email"))]
        order_key = query.get("order_key")
        direction = query.get("order_direction")
        if direction and not order_key:
            raise SimError("order_key must be specified with order_direction")
        if direction not in (None, "asc", "desc"):
            raise SimError(f"unknown order_direction: {direction}")
        if "after" in query and not order_key:
            raise SimError("order_key must be specified with after")
        if order_key:
            if order_key not in _HOST_ORDER_KEYS:
                raise SimError(f"invalid order_key: {order_key}")
            cast = _HOST_ORDER_KEYS[order_key]
            descending = direction == "desc"
            rows = sorted(rows, key=lambda h: h[order_key], reverse=descending)
            if "after" in query:
                try:
                    after = cast(query["after"])
                except ValueError:
                    raise SimError("invalid after value") from None
                rows = [h for h in rows if (h[order_key] < after if descending else h[order_key] > after)]
        rows = self._page(rows, query)
        return {"hosts": [self._host_json(h, policies=self._flag(query, "populate_policies"),
                                          device_mapping=self._flag(query, "device_mapping")) for h in rows]}

    # ------------------------------------------------------------------ admin HTTP

    def _handle_admin(self, handler, method: str, path: str, query: dict, body: dict | None) -> None:
        if not self._authorized(handler):
            return self._send(handler, 401, _json_bytes(_fleet_error("Authentication required", "Authentication required")))
        body = body or {}
        try:
            if path == "/_sim/hosts" and method == "POST":
                doc = {"host": self.add_host(body.get("uuid"), body.get("hostname"), body.get("email"), body.get("team"),
                                             platform=body.get("platform", "darwin"),
                                             hardware_serial=body.get("hardware_serial"),
                                             display_name=body.get("display_name"))}
            elif path.startswith("/_sim/hosts/") and method == "DELETE":
                if not self.remove_host(unquote(path[len("/_sim/hosts/"):])):
                    raise SimError("no such host", 404)
                doc = {"removed": True}
            elif path == "/_sim/results" and method == "POST":
                doc = {"policy": self.set_policy(body.get("host_uuid"), body.get("policy"), body.get("result"),
                                                 critical=body.get("critical"), resolution=body.get("resolution"))}
            elif path == "/_sim/state" and method == "GET":
                doc = self.state()
            elif path == "/_sim/faults" and method == "POST":
                doc = {"fault": self.inject_fault(body.get("path"), body.get("kind"), body.get("count", 1),
                                                  retry_after=body.get("retry_after"), seconds=body.get("seconds"),
                                                  host_uuid=body.get("host_uuid"))}
            elif path == "/_sim/faults" and method == "GET":
                doc = {"faults": self.faults()}
            elif path == "/_sim/faults" and method == "DELETE":
                self.clear_faults()
                doc = {"faults": []}
            elif path.startswith("/_sim/webhook/") and method == "GET" and path[len("/_sim/webhook/"):].isdigit():
                doc = self.failing_policy_webhook(int(path[len("/_sim/webhook/"):]))
            else:
                raise SimError(f"no admin route {method} {path}", 404)
        except SimError as exc:
            message = "Resource Not Found" if exc.status == 404 else "Bad request"
            return self._send(handler, exc.status, _json_bytes(_fleet_error(message, str(exc))))
        self._send(handler, 200, _json_bytes(doc))


# ---------------------------------------------------------------------- its own process


def serve(argv: list[str] | None = None) -> int:
    """``python -m devicegate.local.fleet_sim --state PATH --token-file PATH --ready-file PATH``:
    the simulated Fleet as a process of its own, as a real Fleet is a server of its own. Once it
    answers, its URL is written (atomically) to the ready file; SIGTERM or SIGINT stops it."""
    import argparse

    from .signals import wait_for_stop

    parser = argparse.ArgumentParser(prog="devicegate.local.fleet_sim")
    parser.add_argument("--state", required=True, help="the state file (hosts, policies, results)")
    parser.add_argument("--token-file", required=True, help="a file holding the API token")
    parser.add_argument("--ready-file", required=True, help="written with {'url': ...} once it serves")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    # SIGTERM or SIGINT before the server is up: the default action ends the process at once
    token = Path(args.token_file).read_text().strip()
    sim = SimulatedFleet(args.state, token=token, certfile=args.certfile, keyfile=args.keyfile,
                         host=args.host, port=args.port).start()
    ready = Path(args.ready_file)
    tmp = ready.with_name(f".{ready.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"url": sim.url, "pid": os.getpid()}) + "\n")
    os.replace(tmp, ready)
    # The parent's death signal (PR_SET_PDEATHSIG, set before exec) can be missed: a parent that
    # died before it was set, or before this process ran at all. A parent gone is a stop too.
    parent = int(os.environ.get("DEVICEGATE_FLEET_SIM_PARENT") or os.getppid())
    try:
        wait_for_stop(also=lambda: os.getppid() != parent)
    finally:
        sim.stop()
        if sim._lock.acquire(timeout=5):  # a state write in progress finishes first
            sim._lock.release()
    return 0


class SimulatedFleetProcess:
    """:class:`SimulatedFleet` run by :func:`serve` in a child process (the local stack's Fleet):
    its server side then costs the process that plays the Lambdas and the load balancers nothing."""

    def __init__(self, state_path, *, token_file, certfile=None, keyfile=None, host: str = "127.0.0.1"):
        self.state_path = Path(state_path)
        self.token_file = Path(token_file)
        self.certfile, self.keyfile, self.host = certfile, keyfile, host
        self.process = None
        self.url: str | None = None

    def start(self, timeout: float = 30.0) -> "SimulatedFleetProcess":
        import subprocess
        import sys
        import time

        from .dynamo import _die_with_parent

        ready = self.state_path.parent / ".fleet-sim-ready.json"
        ready.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "devicegate.local.fleet_sim", "--state", str(self.state_path),
                "--token-file", str(self.token_file), "--ready-file", str(ready), "--host", self.host]
        if self.certfile:
            argv += ["--certfile", str(self.certfile), "--keyfile", str(self.keyfile)]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        start_new_session=True, preexec_fn=_die_with_parent,
                                        env={**os.environ, "DEVICEGATE_FLEET_SIM_PARENT": str(os.getpid())})
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the simulated Fleet did not start (state {self.state_path})")
            time.sleep(0.02)
        self.url = json.loads(ready.read_text())["url"]
        ready.unlink(missing_ok=True)
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self) -> None:
        import signal
        import subprocess

        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


if __name__ == "__main__":
    raise SystemExit(serve())
