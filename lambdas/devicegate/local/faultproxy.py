"""A fault-injecting HTTP proxy in front of the local AWS endpoint (moto), for failure tests.

    devicegate local up --state-dir DIR --aws-fault-proxy

routes the handlers' AWS calls through this proxy; ``endpoints.json`` then names it under
``aws_fault_proxy`` (``url``, ``admin_url``), while ``dynamodb.endpoint`` stays moto itself so a
test can read the table whatever the proxy does. The mode is switched at run time:

    GET  <admin_url>   {"mode", "seconds", "service", "code", "counts"}
    POST <admin_url>   {"mode": "pass" | "stop" | "slow" | "throttle",
                        "seconds": N (slow: delay before forwarding), "service": "dynamodb" | "all",
                        "code": the throttling error (default ProvisionedThroughputExceededException)}

* ``pass``      forward every request unchanged;
* ``stop``      reset the connection (RST) without an answer, as a dead endpoint does;
* ``slow``      wait ``seconds`` (at most 60), then forward: a request the client gave up on
  may still be carried out, as with a real endpoint behind a slow network;
* ``throttle``  answer HTTP 400 with the JSON error DynamoDB (or Secrets Manager:
  ``ThrottlingException``) sends when it throttles, without forwarding.

``service`` picks which calls a fault applies to (by the X-Amz-Target header); the others pass.
Loopback only: it listens on 127.0.0.1 and forwards only to the target given.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("pass", "stop", "slow", "throttle")
SERVICES = ("dynamodb", "all")
ADMIN_PATH = "/_faultproxy"
MAX_DELAY = 60.0
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "te",
               "trailer", "upgrade"}


def _service(target: str) -> str:
    prefix = target.split(".", 1)[0].lower()
    if prefix.startswith("dynamodb"):
        return "dynamodb"
    return prefix or "unknown"


class FaultProxy:
    def __init__(self, target: str, host: str = "127.0.0.1", port: int = 0):
        parts = urllib.parse.urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the proxy forwards to an http:// endpoint, not {target!r}")
        self.target_host, self.target_port = parts.hostname, parts.port or 80
        self._lock = threading.Lock()
        self._fault = {"mode": "pass", "seconds": 0.0, "service": "dynamodb",
                       "code": "ProvisionedThroughputExceededException"}
        self.counts: dict[str, int] = {m: 0 for m in MODES}
        self.stopping = threading.Event()
        self._server = _Server((host, port), _Handler)
        self._server.proxy = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def admin_url(self) -> str:
        return self.url + ADMIN_PATH

    def start(self) -> "FaultProxy":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="aws-fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # wakes requests sleeping in slow mode
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def set_fault(self, mode: str, seconds: float = 0.0, service: str = "dynamodb", code: str | None = None) -> dict:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if service not in SERVICES:
            raise ValueError(f"service {service!r} is not one of {', '.join(SERVICES)}")
        seconds = float(seconds or 0)
        if not 0 <= seconds <= MAX_DELAY:
            raise ValueError(f"seconds must be 0..{MAX_DELAY:g}")
        if code is not None and code not in ("ProvisionedThroughputExceededException", "ThrottlingException",
                                             "RequestLimitExceeded"):
            raise ValueError(f"code {code!r} is not a throttling error")
        with self._lock:
            self._fault = {"mode": mode, "seconds": seconds, "service": service,
                           "code": code or "ProvisionedThroughputExceededException"}
            return self.state()

    def state(self) -> dict:
        return {**self._fault, "counts": dict(self.counts)}

    def fault_for(self, service: str) -> dict:
        with self._lock:
            fault = dict(self._fault)
            applies = fault["service"] == "all" or fault["service"] == service
            mode = fault["mode"] if applies else "pass"
            self.counts[mode] += 1
        fault["mode"] = mode
        return fault


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    proxy: FaultProxy

    def handle_error(self, request, client_address):
        pass  # resets are what this server is for


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        pass

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        proxy = self.server.proxy
        if self.path.split("?")[0] == ADMIN_PATH:
            return self._admin(proxy, body)
        fault = proxy.fault_for(_service(self.headers.get("X-Amz-Target", "")))
        if fault["mode"] == "stop":
            # SO_LINGER 0: close() sends RST, so the client sees a reset, not an answer
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if fault["mode"] == "throttle":
            service = _service(self.headers.get("X-Amz-Target", ""))
            code = fault["code"] if service == "dynamodb" else "ThrottlingException"
            prefix = "com.amazonaws.dynamodb.v20120810#" if service == "dynamodb" else ""
            doc = {"__type": prefix + code, "message": "Rate of requests exceeds the allowed throughput."}
            ctype = self.headers.get("Content-Type") or "application/x-amz-json-1.0"
            return self._reply(400, json.dumps(doc).encode(), [("Content-Type", ctype), ("x-amzn-ErrorType", code)])
        if fault["mode"] == "slow" and proxy.stopping.wait(fault["seconds"]):
            self.close_connection = True
            return
        self._forward(proxy, body)

    def _forward(self, proxy: FaultProxy, body: bytes) -> None:
        conn = http.client.HTTPConnection(proxy.target_host, proxy.target_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
        except OSError:
            self.send_error(502, "the AWS endpoint behind the fault proxy did not answer")
            return
        finally:
            conn.close()
        self._reply(response.status, data, kept)

    def _admin(self, proxy: FaultProxy, body: bytes) -> None:
        status = 200
        try:
            if self.command == "POST":
                doc = json.loads(body or b"{}")
                state = proxy.set_fault(doc.get("mode", "pass"), doc.get("seconds", 0), doc.get("service", "dynamodb"),
                                        doc.get("code"))
            elif self.command == "GET":
                state = proxy.state()
            else:
                status, state = 405, {"error": "GET or POST"}
        except (ValueError, TypeError, AttributeError) as exc:
            status, state = 400, {"error": str(exc)}
        self._reply(status, json.dumps(state).encode(), [("Content-Type", "application/json")])
