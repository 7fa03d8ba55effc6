"""A local stand-in for the two ALBs: real HTTPS in front of the very same Lambda handlers.

* `public` listener: plain TLS, like the `<domain>` ALB.
* `device` listener: TLS with a REQUIRED client certificate verified against the SCEP CA
  (and optionally its CRL), like the `okta.<domain>` ALB in mTLS verify mode. A failed
  handshake just closes that connection, as ALB does.

Every request becomes an ALB multi-value event (shape owned by `devicegate.alb`); the
handler's result is written back the way ALB would. Deviations from ALB, on purpose:
chunked request bodies get 411 (ALB would buffer them; no client of ours sends them) and
methods other than GET/POST/HEAD get 405 (nothing here accepts them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import socket
import socketserver
import ssl
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from devicegate import alb

log = logging.getLogger(__name__)
report_log = logging.getLogger("devicegate.lambda.report")
report_log.setLevel(logging.WARNING)  # off unless `local up --lambda-reports` (or -v) turns it on

LISTENERS = ("public", "device")
MAX_BODY_BYTES = alb.MAX_BODY_BYTES
HANDSHAKE_TIMEOUT = 10.0  # seconds; a silent client must not hold a thread forever
IDLE_TIMEOUT = 30.0  # keep-alive idle limit per connection
_DRAIN_LIMIT = 4 * MAX_BODY_BYTES  # oversize bodies up to this are read and dropped before the 413

# Headers a client must never be able to inject: ALB sets these itself.
_STRIPPED_PREFIXES = ("x-amzn-mtls", "x-amzn-tls-", "x-forwarded-")
_STRIPPED = frozenset({"x-amzn-trace-id", "connection", "keep-alive", "proxy-connection", "te", "upgrade"})
# Hop-by-hop or computed here; a handler's copy would break the framing.
_RESPONSE_DROPPED = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


def forwardable_headers(headers, keep: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """The client's headers an ALB passes on to the Lambda: lowercased, without hop-by-hop ones
    and without those the load balancer sets itself (except the names in ``keep``)."""
    return [
        (name.lower(), value)
        for name, value in headers.items()
        if name.lower() in keep or (not name.lower().startswith(_STRIPPED_PREFIXES) and name.lower() not in _STRIPPED)
    ]


def trace_id() -> str:
    return f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)}"


@dataclass
class Route:
    listener: str  # "public" or "device"
    path: str
    handler: Callable[[dict, object], dict]
    prefix: bool = False  # also match path + "/..."
    name: str | None = None  # the "function name"; derived from the path if omitted

    def __post_init__(self) -> None:
        if self.listener not in LISTENERS:
            raise ValueError(f"unknown listener {self.listener!r}")
        if not self.path.startswith("/"):
            raise ValueError(f"route path {self.path!r} must start with '/'")
        if self.name is None:
            slug = re.sub(r"[^A-Za-z0-9]+", "-", self.path).strip("-") or "root"
            self.name = f"devicegate-{slug}"

    def matches(self, path: str) -> bool:
        return path == self.path or (self.prefix and path.startswith(self.path.rstrip("/") + "/"))

    @property
    def target_group_arn(self) -> str:
        # Same shape as a real ARN (name ≤ 32 chars, 16 hex id) so nothing special-cases local.
        digest = hashlib.sha256(f"{self.listener}{self.path}".encode()).hexdigest()[:16]
        return f"arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/{self.name[:32]}/{digest}"


@dataclass
class LambdaContext:
    """The attributes of the Lambda context object that handlers and Powertools read."""

    function_name: str
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    deadline_ms: float = field(default_factory=lambda: time.time() * 1000 + 30_000)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:000000000000:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self.deadline_ms - time.time() * 1000))


class Gateway:
    def __init__(
        self,
        routes: list[Route],
        *,
        server_cert: str | os.PathLike,
        server_key: str | os.PathLike,
        device_ca: str | os.PathLike,
        device_crl: str | os.PathLike | None = None,
        host: str = "127.0.0.1",
        public_port: int = 0,
        device_port: int = 0,
    ) -> None:
        seen = set()
        for route in routes:
            if (route.listener, route.path) in seen:
                raise ValueError(f"duplicate route {route.listener} {route.path}")
            seen.add((route.listener, route.path))
        self.routes = list(routes)
        self._server_cert, self._server_key = os.fspath(server_cert), os.fspath(server_key)
        self._device_ca = os.fspath(device_ca)
        self._device_crl = None if device_crl is None else os.fspath(device_crl)
        self._host = host
        self._ports = {"public": public_port, "device": device_port}
        # Built now so bad files fail at construction, not on the first handshake.
        self._contexts = {"public": self._public_context(), "device": self._device_context()}
        self._servers: dict[str, _Server] = {}
        self._threads: list[threading.Thread] = []

    # ----------------------------------------------------------------- TLS contexts

    def _base_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self._server_cert, self._server_key)
        return ctx

    def _public_context(self) -> ssl.SSLContext:
        return self._base_context()

    def _device_context(self) -> ssl.SSLContext:
        ctx = self._base_context()
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=self._device_ca)
        if self._device_crl is not None:
            # cafile= is the only stdlib path that loads CRLs, and only PEM ones.
            with open(self._device_crl, "rb") as f:
                if b"-----BEGIN X509 CRL-----" not in f.read():
                    raise ValueError(f"{self._device_crl}: expected a PEM CRL")
            ctx.load_verify_locations(cafile=self._device_crl)
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        return ctx

    def reload_device_trust(self) -> None:
        """Re-read the device CA and CRL files; new handshakes use them, open ones are kept."""
        self._contexts["device"] = self._device_context()

    def context_for(self, listener: str) -> ssl.SSLContext:
        return self._contexts[listener]

    # ------------------------------------------------------------------- lifecycle

    def start(self) -> Gateway:
        if self._servers:
            raise RuntimeError("gateway already started")
        try:
            for listener in LISTENERS:
                self._servers[listener] = _Server((self._host, self._ports[listener]), self, listener)
        except BaseException:
            self.stop()
            raise
        for listener, server in self._servers.items():
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"gateway-{listener}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers.values():
            if self._threads:  # serve_forever was started (shutdown() would wait for it otherwise)
                server.shutdown()
            server.server_close()
            server.close_connections()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def public_port(self) -> int:
        return self._servers["public"].server_address[1]

    @property
    def device_port(self) -> int:
        return self._servers["device"].server_address[1]

    @property
    def public_url(self) -> str:
        return f"https://{self._host}:{self.public_port}"

    @property
    def device_url(self) -> str:
        return f"https://{self._host}:{self.device_port}"

    def route_for(self, listener: str, path: str) -> Route | None:
        return next((r for r in self.routes if r.listener == listener and r.matches(path)), None)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() closes connections itself instead of waiting on idle ones

    def __init__(self, address: tuple[str, int], gateway: Gateway, listener: str, handler_class=None) -> None:
        # ``gateway`` answers context_for(listener) (None: plain HTTP) and route_for(listener, path)
        self.gateway = gateway
        self.listener = listener
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        super().__init__(address, handler_class or _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), which can stall on a reverse DNS lookup.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self) -> tuple[ssl.SSLSocket, Any]:
        sock, address = self.socket.accept()
        # As ALB does: no Nagle delay on small replies (with it, a reply written after the
        # client's delayed ACK window stalls ~40 ms per request).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context = self.gateway.context_for(self.listener)
        if context is None:
            return sock, address
        # Wrap per connection so reload_device_trust() applies to the next handshake. The
        # handshake itself runs in the connection's thread (finish_request), not here.
        conn = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return conn, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._connections.add(request)
        try:
            request.settimeout(HANDSHAKE_TIMEOUT)
            try:
                if isinstance(request, ssl.SSLSocket):
                    request.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                # No certificate, wrong CA, revoked, or a port scan: ALB just drops these.
                log.debug("%s: TLS handshake with %s failed: %s", self.listener, client_address[0], exc)
                return
            super().finish_request(request, client_address)
        finally:
            with self._lock:
                self._connections.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # resets, timeouts, TLS alerts mid-connection
            log.debug("%s: connection from %s ended: %s", self.listener, client_address[0], exc)
            return
        log.exception("%s: unexpected gateway error for %s", self.listener, client_address[0])

    def close_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                # The plain-socket shutdown wakes the thread blocked reading it; SSLSocket's
                # own shutdown() would tear down its TLS state under that thread.
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    server_version = "awselb/2.0"
    timeout = IDLE_TIMEOUT
    server: _Server

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_GET
    do_HEAD = do_GET

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler answers unknown methods with 501 unless a do_<METHOD>
        # exists; this makes every other method a 405 instead.
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self) -> None:
        self._send_plain(HTTPStatus.METHOD_NOT_ALLOWED, "Method Not Allowed", [("Allow", "GET, POST, HEAD")])

    def handle_expect_100(self) -> bool:
        # Refuse an oversize body before the client sends it.
        if self._declared_length() is None:
            return False
        return super().handle_expect_100()

    def version_string(self) -> str:
        return self.server_version  # what ALB sends, without Python's version appended

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s - " + format, self.server.listener, self.client_address[0], *args)

    # ------------------------------------------------------------------ plumbing

    def _send_plain(self, status: int, text: str, extra: list[tuple[str, str]] = (), close: bool = False) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self._end_with(body)

    def _end_with(self, body: bytes) -> None:
        """End the headers and write them with the body in one write (one TLS record, one
        segment for small replies) instead of two."""
        if self.request_version == "HTTP/0.9":  # no headers at all (http.server's own rule)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(body)
        self.flush_headers()

    def _declared_length(self, *, drain: bool = False) -> int | None:
        """The body length, or None after answering 411/400/413 (connection then closes)."""
        if "Transfer-Encoding" in self.headers:  # chunked (or worse): see the module docstring
            self._send_plain(HTTPStatus.LENGTH_REQUIRED, "Length Required", close=True)
            return None
        lengths = [v.strip() for v in self.headers.get_all("Content-Length") or ["0"]]
        if len(set(lengths)) != 1 or not re.fullmatch(r"[0-9]{1,18}", lengths[0]):
            self._send_plain(HTTPStatus.BAD_REQUEST, "Bad Request", close=True)  # smuggling guard
            return None
        length = int(lengths[0])
        if length > MAX_BODY_BYTES:
            if drain and length <= _DRAIN_LIMIT:
                # Swallow (never buffer) the body so a client that sends before it reads
                # sees the 413 instead of a broken pipe.
                while length > 0 and (chunk := self.rfile.read(min(length, 65536))):
                    length -= len(chunk)
            self._send_plain(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request Entity Too Large", close=True)
            return None
        return length

    def _dispatch(self) -> None:
        length = self._declared_length(drain=True)
        if length is None:
            return
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            self.close_connection = True  # client went away mid-body
            return
        path, _, raw_query = self.path.partition("?")
        if not path.startswith("/"):
            self._send_plain(HTTPStatus.BAD_REQUEST, "Bad Request", close=True)
            return
        route = self.server.gateway.route_for(self.server.listener, path)
        if route is None:
            self._send_plain(HTTPStatus.NOT_FOUND, "Not Found")  # ALB fixed-response, no Lambda
            return
        headers = self._forwarded_headers()
        if headers is None:
            self._send_plain(HTTPStatus.BAD_REQUEST, "client certificate required", close=True)
            return
        event = alb.build_event(
            method=self.command,
            path=path,
            raw_query=raw_query,
            headers=headers,
            body=body,
            target_group_arn=route.target_group_arn,
            multi_value=True,
        )
        reply = self._invoke(route, event)
        if reply is None:
            self._send_plain(HTTPStatus.BAD_GATEWAY, "502 Bad Gateway")
            return
        self.send_response(reply.status)
        for name, value in reply.headers:
            if name.lower() not in _RESPONSE_DROPPED:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self._end_with(reply.body)

    def _forwarded_headers(self) -> list[tuple[str, str]] | None:
        headers = forwardable_headers(self.headers)
        headers += [
            ("x-forwarded-for", self.client_address[0]),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", str(self.server.server_port)),
            ("x-amzn-trace-id", trace_id()),
        ]
        if self.server.listener == "device":
            try:
                der = self.connection.getpeercert(binary_form=True)
            except ValueError:  # the client went away mid-handshake
                return None
            if not der:
                return None  # cannot happen with CERT_REQUIRED; fail closed anyway
            from cryptography import x509

            cert = x509.load_der_x509_certificate(der)
            headers += [(name.lower(), value) for name, value in alb.format_mtls_headers(cert).items()]
        return headers

    def _invoke(self, route: Route, event: dict) -> alb.HttpReply | None:
        """Run the handler as Lambda would; None where ALB would answer 502."""
        context = LambdaContext(function_name=route.name)
        try:
            # The JSON round trips give the handler exactly what Lambda delivers, and
            # reject results Lambda could not serialize (bytes, datetimes, ...).
            delivered = json.loads(json.dumps(event))
            started, cpu_started = time.perf_counter(), time.thread_time()
            try:
                answer = route.handler(delivered, context)
            finally:
                # Lambda's REPORT line, plus the handler's CPU (the handler runs in this
                # thread): what the function costs, apart from this load balancer's work.
                report_log.info("REPORT RequestId: %s Function: %s Duration: %.3f ms CPU: %.3f ms", context.aws_request_id,
                          route.name, (time.perf_counter() - started) * 1000, (time.thread_time() - cpu_started) * 1000)
            result = json.dumps(answer)
            if len(result) > alb.MAX_RESPONSE_BYTES:
                raise alb.BadResponse("response JSON exceeds ALB's 1 MB limit")
            return alb.parse_response(json.loads(result))
        except Exception:
            log.exception("%s %s: handler %s failed (502)", self.command, event["path"], route.name)
            return None
