"""Fleet's REST API (v1), the subset devicegate reads: hosts, one host with its policy results,
the host's device users, policies (global and per team) and teams.

Stdlib only (``ssl`` and devicegate.http11, the strict HTTP/1.1 client awsjson uses too): it
runs in Lambda, and it must stay cheap to import, so ``ssl``, ``http11`` and ``email.utils`` are
imported on first use.

What the client guarantees:

* TLS is always verified (an optional CA bundle replaces the system roots, for the local
  simulator); plain ``http://`` is accepted for loopback addresses only.
* Redirects are never followed: urllib would replay the ``Authorization`` header to wherever the
  redirect points.
* Connection errors, timeouts, truncated or malformed bodies, 5xx and 429 are retried with
  exponential backoff and full jitter; 429/503 honour ``Retry-After`` (bounded). Other 4xx are
  final.
* Responses are capped in size and parsed strictly (UTF-8, no NaN/Infinity, no duplicate keys);
  anything not shaped like Fleet's answer is a ``FleetError``, never a half-filled object.
* The token never appears in an error, a log line or ``repr``.

Shapes follow Fleet's REST API documentation; see tests/fixtures/fleet/README.md for sources.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import quote, urlencode, urlsplit

log = logging.getLogger(__name__)

API = "/api/v1/fleet"
MAX_RESPONSE_BYTES = 20 * 1024 * 1024
# A host's detail without its software inventory (hundreds of titles, each with paths and maybe
# vulnerabilities): nothing here reads it. Fleet versions without the parameter ignore it.
_NO_SOFTWARE = {"exclude_software": "true"}
RETRY_AFTER_CAP = 30.0  # seconds; a server asking for longer gets retried after this
DETAIL_PAGE_SIZE = 20  # hosts per populated listing page
MAX_PAGES = 10_000

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_UUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
_TOKEN = re.compile(r"^[\x21-\x7e]{1,4096}$")  # visible ASCII: nothing that could split a header


class FleetError(Exception):
    """A Fleet request failed. ``retryable`` says whether trying again later may help."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable

    def __repr__(self) -> str:
        return f"FleetError({self.message!r}, status={self.status!r}, retryable={self.retryable!r})"


@dataclass(frozen=True)
class FleetHost:
    id: int
    uuid: str  # upper-cased: the form in the certificate SAN and the store keys
    hostname: str
    display_name: str | None
    team_id: int | None
    platform: str | None


@dataclass(frozen=True)
class FleetPolicy:
    id: int
    name: str
    critical: bool
    resolution: str | None
    team_id: int | None
    conditional_access: bool | None  # None: this Fleet does not have the flag
    # Fleet's per-policy "a bypass may let this host through" flag; None when absent.
    conditional_access_bypass: bool | None = None
    platform: str | None = None


@dataclass(frozen=True)
class HostPolicy:
    policy_id: int
    name: str
    response: str | None  # "pass" | "fail" | None (the host has not run it yet)
    critical: bool
    resolution: str | None


@dataclass(frozen=True)
class FleetHostDetail:
    host: FleetHost
    policies: list[HostPolicy]
    emails: list[str]


class _Shape(Exception):
    """The answer is JSON but not shaped like Fleet's (internal; becomes a FleetError)."""


# ------------------------------------------------------------------------------ parsing


def _reject_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def _no_duplicate_keys(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _parse_json(body: bytes, what: str) -> dict:
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # A truncated or garbled body is usually a proxy or a dropped connection: worth a retry.
        raise FleetError(f"Fleet sent malformed JSON for {what} ({_short(str(exc))})", retryable=True) from None
    if not isinstance(doc, dict):
        raise FleetError(f"Fleet sent a JSON {type(doc).__name__} for {what}, not an object", retryable=True)
    return doc


def _field(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, dict):
        raise _Shape(f"{where} is not an object")
    if key not in obj:
        raise _Shape(f"{where} has no {key!r}")
    return obj[key]


def _int(obj: Any, key: str, where: str) -> int:
    value = _field(obj, key, where)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Shape(f"{where}.{key} is not a non-negative integer")
    return value


def _str(obj: Any, key: str, where: str) -> str:
    value = _field(obj, key, where)
    if not isinstance(value, str):
        raise _Shape(f"{where}.{key} is not a string")
    return value


def _opt_str(obj: dict, key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _Shape(f"{where}.{key} is not a string")
    return value


def _opt_bool(obj: dict, key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _Shape(f"{where}.{key} is not a boolean")
    return value


def _team_id(obj: dict, where: str) -> int | None:
    # Newer Fleet renames team → fleet and sends both keys; older servers send only team_id.
    for key in ("team_id", "fleet_id"):
        value = obj.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise _Shape(f"{where}.{key} is not a non-negative integer")
            return value
    return None


def _list(doc: dict, key: str, where: str, *, nullable: bool = False) -> list:
    value = _field(doc, key, where)
    if value is None and nullable:
        return []
    if not isinstance(value, list):
        raise _Shape(f"{where}.{key} is not a list")
    return value


def _host(raw: Any, where: str) -> FleetHost:
    return FleetHost(
        id=_int(raw, "id", where),
        uuid=_str(raw, "uuid", where).strip().upper(),
        hostname=_str(raw, "hostname", where),
        display_name=_opt_str(raw, "display_name", where),
        team_id=_team_id(raw, where),
        platform=_opt_str(raw, "platform", where),
    )


def _host_policy(raw: Any, where: str) -> HostPolicy:
    response = _field(raw, "response", where)
    if response in ("", None):
        response = None
    elif response not in ("pass", "fail"):
        raise _Shape(f"{where}.response is {_short(repr(response))}, not pass, fail or empty")
    return HostPolicy(
        policy_id=_int(raw, "id", where),
        name=_str(raw, "name", where),
        response=response,
        critical=bool(_opt_bool(raw, "critical", where)),  # Fleet Free has no "critical"
        resolution=_opt_str(raw, "resolution", where),
    )


def _policy(raw: Any, where: str) -> FleetPolicy:
    return FleetPolicy(
        id=_int(raw, "id", where),
        name=_str(raw, "name", where),
        critical=bool(_opt_bool(raw, "critical", where)),
        resolution=_opt_str(raw, "resolution", where),
        team_id=_team_id(raw, where),
        conditional_access=_opt_bool(raw, "conditional_access_enabled", where),
        conditional_access_bypass=_opt_bool(raw, "conditional_access_bypass_enabled", where),
        platform=_opt_str(raw, "platform", where),
    )


def _emails_from_mapping(entries: list, where: str) -> list[str]:
    found = []
    for i, entry in enumerate(entries):
        found.append(_str(entry, "email", f"{where}[{i}]"))
    return found


def _emails_from_host(raw: dict, where: str) -> list[str]:
    """Emails Fleet ties to the host: ``end_users`` (IdP username, other emails) on newer servers,
    ``device_mapping`` when the list was asked for it."""
    found: list[str] = []
    end_users = raw.get("end_users")
    if end_users is not None:
        if not isinstance(end_users, list):
            raise _Shape(f"{where}.end_users is not a list")
        for i, user in enumerate(end_users):
            at = f"{where}.end_users[{i}]"
            if not isinstance(user, dict):
                raise _Shape(f"{at} is not an object")
            username = _opt_str(user, "idp_username", at)
            if username and "@" in username:
                found.append(username)
            others = user.get("other_emails")
            if others is not None:
                if not isinstance(others, list):
                    raise _Shape(f"{at}.other_emails is not a list")
                found.extend(_emails_from_mapping(others, f"{at}.other_emails"))
    if "device_mapping" in raw:
        found.extend(_emails_from_mapping(_list(raw, "device_mapping", where, nullable=True), f"{where}.device_mapping"))
    return _dedupe(found)


def _dedupe(emails: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for email in emails:
        email = email.strip()
        if email and email.casefold() not in seen:
            seen[email.casefold()] = email
    return list(seen.values())


def _detail(raw: Any, where: str) -> FleetHostDetail:
    host = _host(raw, where)
    policies = [_host_policy(p, f"{where}.policies[{i}]") for i, p in enumerate(_list(raw, "policies", where, nullable=True))]
    return FleetHostDetail(host=host, policies=policies, emails=_emails_from_host(raw, where))


def _host_item(raw: Any, where: str) -> tuple[int, FleetHost]:
    host = _host(raw, where)
    return host.id, host


def _detail_item(raw: Any, where: str) -> tuple[int, FleetHostDetail]:
    detail = _detail(raw, where)
    return detail.host.id, detail


def _short(text: str, limit: int = 200) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fleet_reason(body: bytes) -> str:
    """Fleet's ``{"message": ..., "errors": [{"name": ..., "reason": ...}]}``, as one short line."""
    try:
        doc = json.loads(body[:65536].decode("utf-8", "replace"))
    except (ValueError, RecursionError):  # a deeply nested error body must not escape as RecursionError
        return _short(body[:200].decode("utf-8", "replace"))
    if not isinstance(doc, dict):
        return ""
    parts = []
    if isinstance(doc.get("message"), str):
        parts.append(doc["message"])
    errors = doc.get("errors")
    if isinstance(errors, list):
        for err in errors[:3]:
            if isinstance(err, dict) and isinstance(err.get("reason"), str) and err["reason"] not in parts:
                parts.append(err["reason"])
    return _short(": ".join(parts))


def retry_after_seconds(value: str | None, *, now: Callable[[], float] = time.time, cap: float = RETRY_AFTER_CAP) -> float | None:
    """``Retry-After`` as delay-seconds or an HTTP-date, clamped to [0, cap]; None when absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > 64:
        return None
    if value.isdigit():
        seconds = float(int(value))
    else:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - now()
    return min(max(seconds, 0.0), cap)


# ------------------------------------------------------------------------------ the client


class FleetClient:
    """A small, strict client for Fleet's REST API. One persistent connection, reused across
    pages; safe to share between threads (requests are serialised)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 5.0,
        max_attempts: int = 4,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        ca_bundle: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        per_page: int = 100,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        retry_after_cap: float = RETRY_AFTER_CAP,
    ):
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("the Fleet URL must be https://host[:port][/path]")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("the Fleet URL must not carry credentials, a query or a fragment")
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
            raise ValueError("the Fleet URL must be https:// (plain http is only for a local simulator on 127.0.0.1)")
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise ValueError("the Fleet API token must be non-empty visible ASCII")
        if not (timeout > 0 and max_attempts >= 1 and backoff >= 0 and max_backoff >= 0):
            raise ValueError("timeout must be > 0, max_attempts >= 1, backoff and max_backoff >= 0")
        if not 1 <= per_page <= 10_000:
            raise ValueError("per_page must be between 1 and 10000")
        if max_response_bytes < 1:
            raise ValueError("max_response_bytes must be positive")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the Fleet URL has an invalid port") from None
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port
        bracketed = f"[{self._host}]" if ":" in self._host else self._host  # an IPv6 literal
        self._host_header = bracketed if port in (None, 443 if self._https else 80) else f"{bracketed}:{port}"
        self._prefix = parts.path.rstrip("/")
        self.base_url = f"{parts.scheme}://{parts.netloc}{self._prefix}"
        self._token = token
        self.timeout = float(timeout)
        self.max_attempts = int(max_attempts)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.per_page = int(per_page)
        self.max_response_bytes = int(max_response_bytes)
        self.retry_after_cap = float(retry_after_cap)
        self._ca_bundle = ca_bundle
        self._sleep = sleep
        self._random = random.Random()
        self._ssl_context = None
        self._conn = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FleetClient({self.base_url!r})"

    # -- public API

    def hosts(self, team_id: int | None = None, policy_id: int | None = None,
              policy_response: str | None = None) -> Iterator[FleetHost]:
        """Every host (optionally of one team, or passing/failing one policy), page by page."""
        params = self._host_filters(team_id, policy_id, policy_response)  # bad arguments fail here, not mid-loop
        return (host for _, host in self._paginate("/hosts", "hosts", params, _host_item))

    def host_details(self, team_id: int | None = None) -> Iterator[FleetHostDetail]:
        """Every host with its policy results and device-mapping emails, from the list endpoint
        (``populate_policies`` + ``device_mapping``): one request per page instead of one per host."""
        params = self._host_filters(team_id, None, None)
        # Populated pages carry every policy's query and texts per host: keep them small enough
        # to stay far below the response cap even with many long policies.
        params.update(populate_policies="true", device_mapping="true", per_page=str(min(self.per_page, DETAIL_PAGE_SIZE)))
        return (detail for _, detail in self._paginate("/hosts", "hosts", params, _detail_item))

    def host(self, host_id: int) -> FleetHostDetail:
        """One host with its policy results. A host Fleet no longer has is a FleetError(status=404)."""
        host_id = self._id(host_id, "host id")
        doc = self._get(f"/hosts/{host_id}", _NO_SOFTWARE, what=f"host {host_id}")
        return self._parsed(lambda: _detail(_field(doc, "host", "response"), "host"), f"host {host_id}")

    def host_by_uuid(self, uuid: str) -> FleetHostDetail | None:
        """The host with this hardware UUID, or None when Fleet has no such host.

        Fleet's identifier lookup also matches hostnames and serial numbers, so a host could name
        itself after another host's UUID; the answer is only taken when its UUID matches, and
        otherwise the host is searched for by UUID among all hosts."""
        if not isinstance(uuid, str) or not _UUID.fullmatch(uuid.strip()):
            raise ValueError("not a hardware UUID (8-4-4-4-12 hex)")
        wanted = uuid.strip().upper()
        try:
            doc = self._get(f"/hosts/identifier/{quote(uuid.strip(), safe='')}", _NO_SOFTWARE, what=f"host {wanted}")
        except FleetError as exc:
            if exc.status == 404:
                return None
            raise
        detail = self._parsed(lambda: _detail(_field(doc, "host", "response"), "host"), f"host {wanted}")
        if detail.host.uuid == wanted:
            return detail
        log.warning("Fleet's identifier lookup for %s answered host %d (uuid %s); searching by uuid",
                    wanted, detail.host.id, detail.host.uuid)
        params = {"query": wanted, "per_page": str(self.per_page), "order_key": "id", "order_direction": "asc"}
        matches = [h for _, h in self._paginate("/hosts", "hosts", params, _host_item) if h.uuid == wanted]
        if not matches:
            return None
        newest = max(matches, key=lambda h: h.id)  # a re-enrolled host keeps its UUID under a new id
        try:
            return self.host(newest.id)
        except FleetError as exc:
            if exc.status == 404:
                return None
            raise

    def device_emails(self, host_id: int) -> list[str]:
        """The emails in the host's human-device mapping (IdP, Chrome profiles, custom)."""
        host_id = self._id(host_id, "host id")
        doc = self._get(f"/hosts/{host_id}/device_mapping", what=f"device mapping of host {host_id}")
        return self._parsed(lambda: _dedupe(_emails_from_mapping(_list(doc, "device_mapping", "response", nullable=True),
                                                                 "device_mapping")), f"device mapping of host {host_id}")

    def global_policies(self) -> list[FleetPolicy]:
        return [p for _, p in self._paginate("/global/policies", "policies", {"per_page": str(self.per_page)}, self._policy_item)]

    def team_policies(self, team_id: int) -> list[FleetPolicy]:
        """The team's own policies (not the inherited global ones)."""
        team_id = self._id(team_id, "team id")
        return [p for _, p in self._paginate(f"/teams/{team_id}/policies", "policies", {"per_page": str(self.per_page)},
                                             self._policy_item, missing=f"team {team_id}")]

    def teams(self) -> list[tuple[int, str]]:
        """(id, name) of every team; [] on Fleet Free, which has no teams (HTTP 402)."""
        def item(raw, at):
            return _int(raw, "id", at), (_int(raw, "id", at), _str(raw, "name", at))
        try:
            return [t for _, t in self._paginate("/teams", "teams", {"per_page": str(self.per_page)}, item)]
        except FleetError as exc:
            if exc.status == 402:
                return []
            raise

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- helpers

    @staticmethod
    def _id(value: int, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{what} must be a non-negative integer")
        return value

    def _host_filters(self, team_id, policy_id, policy_response) -> dict:
        params = {"per_page": str(self.per_page), "order_key": "id", "order_direction": "asc"}
        if team_id is not None:
            params["team_id"] = str(self._id(team_id, "team id"))
        if policy_response is not None:
            if policy_response not in ("passing", "failing"):
                raise ValueError("policy_response must be 'passing' or 'failing'")
            if policy_id is None:
                raise ValueError("policy_response needs policy_id")
        if policy_id is not None:
            params["policy_id"] = str(self._id(policy_id, "policy id"))
            if policy_response is not None:
                params["policy_response"] = policy_response
        return params

    @staticmethod
    def _policy_item(raw, at):
        policy = _policy(raw, at)
        return policy.id, policy

    @staticmethod
    def _parsed(build, what: str):
        try:
            return build()
        except _Shape as exc:
            raise FleetError(f"Fleet's answer for {what} is not shaped as expected: {exc}") from None

    def _paginate(self, path: str, key: str, params: dict, item, *, missing: str | None = None) -> Iterator[tuple[int, Any]]:
        """Fleet pages are 0-based ``page`` + ``per_page``. Stops at a short page, at
        ``meta.has_next_results == false``, or when the server ignored ``per_page`` and sent more;
        a page holding nothing new (a server repeating itself) is an error, not an endless loop."""
        seen: set[int] = set()
        per_page = int(params.get("per_page", self.per_page))
        for page in range(MAX_PAGES):
            what = f"{path} page {page}"
            doc = self._get(path, {**params, "page": str(page)}, what=what, listing=missing or True)
            items = self._parsed(lambda: _list(doc, key, "response", nullable=True), what)
            new = 0
            for i, raw in enumerate(items):
                ident, obj = self._parsed(lambda: item(raw, f"{key}[{i}]"), what)
                if ident in seen:
                    continue  # a row shifted across a page boundary while we paged
                seen.add(ident)
                new += 1
                yield ident, obj
            if not items:
                return
            if new == 0:
                raise FleetError(f"Fleet returned {path} page {page} with nothing but items already seen; "
                                 "stopping instead of paging forever (is a proxy caching the page?)")
            meta = doc.get("meta")
            if isinstance(meta, dict) and isinstance(meta.get("has_next_results"), bool):
                if not meta["has_next_results"]:
                    return
            elif len(items) != per_page:
                return  # short page: the last one (or per_page ignored and everything sent at once)
        raise FleetError(f"{path} has more than {MAX_PAGES} pages; refusing to page further")

    def _get(self, path: str, params: dict | None = None, *, what: str, listing: bool | str = False) -> dict:
        """GET with retries. ``listing`` marks a list endpoint (a 404 there means a wrong URL), or
        names what a 404 there means instead (e.g. "team 3")."""
        target = API + path
        url_path = self._prefix + target + ("?" + urlencode(params) if params else "")
        attempt = 0
        while True:
            attempt += 1
            delay = None
            try:
                status, headers, body = self._send(url_path)
            except FleetError as exc:
                if not exc.retryable:
                    raise
                err = exc
            else:
                if status == 200:
                    try:
                        return _parse_json(body, what)
                    except FleetError as exc:
                        err = exc
                else:
                    err = self._status_error(status, headers, body, target, what, listing)
                    if not err.retryable:
                        raise err
                    if status in (429, 503):
                        delay = retry_after_seconds(headers.get("retry-after"), cap=self.retry_after_cap)
            if attempt >= self.max_attempts:
                raise FleetError(f"{err.message} (gave up after {attempt} attempts)", err.status, retryable=True)
            if delay is None:
                delay = self._random.uniform(0.0, min(self.max_backoff, self.backoff * (2 ** (attempt - 1))))
            log.warning("Fleet request for %s failed (%s); retry %d/%d in %.2fs",
                        what, err.message, attempt, self.max_attempts - 1, delay)
            self._sleep(delay)

    def _status_error(self, status: int, headers, body: bytes, target: str, what: str, listing: bool | str) -> FleetError:
        reason = self._redact(_fleet_reason(body))
        detail = f" ({reason})" if reason else ""
        if status in (401, 403):
            return FleetError(f"Fleet refused {what} with HTTP {status}{detail}: check the Fleet API token "
                              "(an API-only user with read access to hosts and policies)", status)
        if status == 404:
            if isinstance(listing, str):
                return FleetError(f"Fleet has no {listing} (HTTP 404{detail}); if it should, check the Fleet URL", status)
            if listing:
                return FleetError(f"Fleet answered HTTP 404 for {target}{detail}: check the Fleet URL "
                                  f"({self.base_url} should be the Fleet server's base URL)", status)
            return FleetError(f"Fleet has no {what} (HTTP 404{detail})", status)
        if 300 <= status < 400:
            location = (headers.get("location") or "").split("?")[0]
            return FleetError(f"Fleet answered {what} with a redirect (HTTP {status}) to {_short(location)!r}: "
                              "set the Fleet URL to the final https:// address", status)
        if status == 429 or status >= 500:
            return FleetError(f"Fleet answered {what} with HTTP {status}{detail}", status, retryable=True)
        return FleetError(f"Fleet rejected {what} with HTTP {status}{detail}", status)

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token in text else text

    # -- transport

    def _connection(self):
        """(connection, whether it was kept alive from an earlier request)."""
        from .. import http11

        if self._conn is not None:
            if self._conn.reusable():
                return self._conn, True
            self._drop()
        if self._https and self._ssl_context is None:
            import ssl

            try:
                ctx = ssl.create_default_context(cafile=self._ca_bundle)
            except (OSError, ssl.SSLError) as exc:
                raise FleetError(f"cannot load the CA bundle {self._ca_bundle!r}: {_short(str(exc))}") from None
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            self._ssl_context = ctx
        conn = http11.Connection(self._host, self._port, tls=self._ssl_context if self._https else None,
                                 timeout=self.timeout, max_body=self.max_response_bytes)
        conn.connect()
        self._conn = conn
        return conn, False

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    def _send(self, url_path: str):
        """One GET; (status, headers by lower-case name, body). Transport failures become
        FleetErrors."""
        import ssl

        from .. import http11

        headers = {
            "Host": self._host_header,
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
            "User-Agent": "devicegate-fleet-client/1",
        }
        with self._lock:
            for stale_retry in (False, True):
                reused = False
                try:
                    conn, reused = self._connection()
                    status, header_list, body, will_close = conn.request("GET", url_path, headers, b"")
                    if will_close:
                        self._drop()
                    return status, {name.lower(): value for name, value in header_list}, body
                except (http11.ClosedBeforeResponse, ConnectionResetError, BrokenPipeError,
                        ConnectionAbortedError) as exc:
                    self._drop()
                    # A kept-alive connection Fleet has since closed: send the GET again at once.
                    if reused and not stale_retry:
                        continue
                    raise FleetError(f"the connection to Fleet ({self._host}) broke: {type(exc).__name__}",
                                     retryable=True) from None
                except ssl.SSLCertVerificationError as exc:
                    self._drop()
                    raise FleetError(f"Fleet's TLS certificate did not verify ({_short(exc.verify_message or str(exc))}): "
                                     "check the Fleet URL and the CA bundle") from None
                except FleetError:
                    self._drop()
                    raise
                except TimeoutError:
                    self._drop()
                    raise FleetError(f"Fleet ({self._host}) did not answer within {self.timeout:g}s", retryable=True) from None
                except http11.BodyTooLarge as exc:
                    self._drop()
                    raise FleetError(f"Fleet's response is over the {self.max_response_bytes}-byte limit "
                                     f"({_short(str(exc))})") from None
                except http11.TruncatedBody:
                    self._drop()
                    raise FleetError("Fleet's response was truncated (the connection closed mid-body)",
                                     retryable=True) from None
                except http11.BadResponse as exc:
                    self._drop()
                    raise FleetError(f"Fleet's answer is not an HTTP/1.1 response we accept: {_short(str(exc))}",
                                     retryable=True) from None
                except OSError as exc:
                    self._drop()
                    raise FleetError(f"could not talk to Fleet ({self._host}): {type(exc).__name__}: "
                                     f"{self._redact(_short(str(exc)))}", retryable=True) from None
                except BaseException:
                    self._drop()
                    raise
        raise AssertionError("unreachable")
