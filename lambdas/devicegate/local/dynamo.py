"""The local stack's AWS endpoint: a moto server process on loopback, over real HTTP.

DynamoDB and Secrets Manager calls go to it exactly as they would go to AWS. moto keeps its
state in memory, so the stack turns on moto's request recorder: every request is appended to
``<state>/aws-requests.jsonl`` as it is served, and the log is replayed into a fresh server on
the next start. That makes a restart (even after SIGKILL) keep what was recorded.

moto's backends are not thread-safe (TransactWriteItems deep-copies every table for its
rollback while other threads write: "dictionary changed size during iteration", HTTP 500), so
the server is run by :func:`serve` here, which hands moto one AWS request at a time. That
server also replaces the deep copy itself (O(table size) per transaction) with an undo of the
items the transaction targets: :func:`install_item_undo`.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import io
import json
import logging
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "devicegate-local",
    "AWS_SECRET_ACCESS_KEY": "devicegate-local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _die_with_parent() -> None:
    """In the child before exec: end with the stack even when it is killed with SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: a clean stop still ends the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    def __init__(self, log_path: Path | None = None, port: int | None = None):
        self.log_path = log_path
        self.port = port
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "MotoServer":
        env = {**os.environ, **LOCAL_CREDENTIALS}
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path.touch()
            env["MOTO_ENABLE_RECORDING"] = "True"
            env["MOTO_RECORDER_FILEPATH"] = str(self.log_path)
        wanted = self.port
        for _attempt in range(5):  # a free port can be taken between probe and bind
            self.port = wanted or free_port()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "devicegate.local.dynamo", "-H", "127.0.0.1", "-p", str(self.port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            if self._wait_ready(timeout):
                break
            self.stop()
        else:
            raise RuntimeError(f"moto server did not start on 127.0.0.1 (last port tried {self.port})")
        if self.log_path is not None and self.log_path.stat().st_size:
            self._replay()
        return self

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return True
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        return False

    def _replay(self) -> None:
        # The server replays its own log (it rewrites the recorded host to the new port) and
        # does not record the replay itself.
        request = urllib.request.Request(f"{self.endpoint}/moto-api/recorder/replay-recording", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()

    def replayed_requests(self) -> int:
        if self.log_path is None or not self.log_path.exists():
            return 0
        with self.log_path.open() as handle:
            return sum(1 for line in handle if line.strip() and json.loads(line))

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def serialized(app):
    """WSGI middleware: one AWS request at a time through moto (whose backends are not
    thread-safe). ``/moto-api/`` passes unlocked: its replay calls back into this server."""
    lock = threading.Lock()

    def serve_one(environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/moto-api/"):
            return app(environ, start_response)
        with lock:
            result = app(environ, start_response)
            try:
                return [b"".join(result)]
            finally:
                if hasattr(result, "close"):
                    result.close()

    return serve_one


# moto's DynamoDBBackend.transact_write_items as read for transact_with_item_undo: its version
# and the sha256 of the method's source. Anything else keeps moto's own table snapshot.
ITEM_UNDO_FOR = ("5.2.5", "81db2cb7d94e39c90b3a2077e1f4bb41a449c558ef9b1b1e2910fdaa39978ad4")

log = logging.getLogger(__name__)


class _Kept:
    """What moto keeps as its snapshot of a table for the transaction: the live table itself.
    moto puts the snapshot back into ``backend.tables`` exactly when it rolls back, which is how
    :func:`transact_with_item_undo` learns that (and of which tables) it must undo items."""

    __slots__ = ("table",)

    def __init__(self, table):
        self.table = table


class _KeepTables:
    """Stands in for the ``copy`` module inside moto's DynamoDB models during one transaction:
    ``copy.deepcopy(table)`` in the transacting thread gives a :class:`_Kept`, everything else is
    the real ``copy``."""

    def __init__(self, table_type):
        self.table_type = table_type
        self.thread = threading.get_ident()

    def deepcopy(self, obj, memo=None):
        if isinstance(obj, self.table_type) and threading.get_ident() == self.thread:
            return _Kept(obj)
        return copy.deepcopy(obj, memo)

    def __getattr__(self, name):
        return getattr(copy, name)


def _targeted_items(backend, transact_items) -> list | None:
    """``(table, hash key, range key, attributes or None)`` of every item a Put, Update or Delete
    of the transaction writes, as they are before it, looked up as moto's transaction looks them
    up. None when a target table has a stream: a rollback must also drop the stream records the
    cancelled writes added, which only moto's own table snapshot does."""
    before: dict = {}
    for entry in transact_items:
        try:
            op_type, op = next(iter(entry.items()))
            if op_type not in ("Put", "Update", "Delete"):
                continue  # ConditionCheck writes nothing
            table = backend.get_table(op["TableName"])
            if op_type == "Put":
                attrs = op["Item"]
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]
            hash_key, range_key = backend.get_keys_value(table, key)  # as backend.get_item does
            current = table.get_item(hash_key, range_key)
        except Exception:
            # moto's own lookup for this op fails the same way, before the op writes anything
            continue
        if table.stream_shard is not None:
            return None
        attributes = None if current is None else current.to_json()["Attributes"]
        before.setdefault((id(table), hash_key, range_key), (table, hash_key, range_key, attributes))
    return list(before.values())


def transact_with_item_undo(original, backend, transact_items):
    """moto's ``transact_write_items`` (``original``) without its deep copy of every target table.

    Before the transaction, the items it writes are read (:func:`_targeted_items`); moto's
    ``copy.deepcopy(table)`` snapshot is handed the live table instead (:class:`_KeepTables`).
    Where moto then rolls a table back (it puts the snapshot back: a cancelled transaction, a
    duplicate item, a validation error), the table is put back in place and those items are
    restored: old attributes put back, items that did not exist deleted. moto's own code decides
    what fails, when it rolls back and what the client is told; only the snapshot is cheaper
    (O(items in the transaction) instead of O(items in the tables)). Not thread-safe: the caller
    runs one transaction at a time (:func:`serialized`)."""
    from moto.dynamodb import models

    before = _targeted_items(backend, transact_items)
    if before is None:
        return original(backend, transact_items)
    models.copy = _KeepTables(models.Table)
    try:
        return original(backend, transact_items)
    finally:
        models.copy = copy
        rolled_back = set()
        for name, table in list(backend.tables.items()):
            if isinstance(table, _Kept):
                backend.tables[name] = table.table
                rolled_back.add(id(table.table))
        for table, hash_key, range_key, attributes in before:
            if id(table) not in rolled_back:
                continue
            if attributes is None:
                table.delete_item(hash_key, range_key)
            else:
                table.put_item(attributes, overwrite=True)


def install_item_undo() -> bool:
    """In this (server) process: moto's TransactWriteItems through :func:`transact_with_item_undo`.
    Only for the moto code that function was written against (``ITEM_UNDO_FOR``): any other
    keeps moto's own behaviour, logged once here."""
    import moto
    from moto.dynamodb.models import DynamoDBBackend

    original = DynamoDBBackend.transact_write_items
    try:
        digest = hashlib.sha256(inspect.getsource(original).encode()).hexdigest()
    except (OSError, TypeError):
        digest = None
    if (moto.__version__, digest) != ITEM_UNDO_FOR:
        log.warning("moto %s: TransactWriteItems is not the one devicegate.local.dynamo was written for "
                    "(source sha256 %s); keeping moto's deep copy of each table per transaction",
                    moto.__version__, digest)
        return False

    def transact_write_items(self, transact_items):
        return transact_with_item_undo(original, self, transact_items)

    transact_write_items.__wrapped__ = original
    DynamoDBBackend.transact_write_items = transact_write_items
    return True


class _WsgiHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive in front of moto's WSGI app, as AWS endpoints keep connections
    alive. (werkzeug's development server closes every connection after one request, so each
    AWS call paid a new TCP connection on both sides; and it cannot keep one alive, because it
    drains whatever follows a response.) The request body is read whole before the app runs,
    so nothing it leaves unread can spoil the next request on the connection."""

    protocol_version = "HTTP/1.1"
    server: "_WsgiServer"
    timeout = 120  # an idle kept-alive connection gives its thread back
    MAX_BODY = 16 * 1024 * 1024

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    class _Unframed(Exception):
        def __init__(self, status: int, reason: str):
            super().__init__(reason)
            self.status, self.reason = status, reason

    def _exactly(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) != n:
            raise self._Unframed(400, "body cut short")
        return data

    def _body(self) -> bytes:
        """The whole body, framed strictly (one Content-Length, or chunked and nothing else), or
        _Unframed: the connection then closes, so nothing left over is read as a request."""
        encodings = self.headers.get_all("Transfer-Encoding") or []
        lengths = self.headers.get_all("Content-Length") or []
        if encodings:
            if [e.strip().lower() for e in encodings] != ["chunked"] or lengths:
                raise self._Unframed(400, "unsupported Transfer-Encoding")
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(66)
                size_text = line.split(b";")[0].strip()
                if not line.endswith(b"\n") or not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
                    raise self._Unframed(400, "bad chunk size")
                size = int(size_text, 16)
                total += size
                if total > self.MAX_BODY:
                    raise self._Unframed(413, "body too large")
                if size == 0:
                    while (trailer := self.rfile.readline(8192)) not in (b"\r\n", b"\n"):
                        if not trailer.endswith(b"\n"):
                            raise self._Unframed(400, "bad trailer")
                    return b"".join(chunks)
                chunks.append(self._exactly(size))
                if self._exactly(2) != b"\r\n":
                    raise self._Unframed(400, "chunk not followed by CRLF")
        if not lengths:
            return b""
        if len(lengths) != 1 or not lengths[0].isascii() or not lengths[0].strip().isdigit():
            raise self._Unframed(400, "bad Content-Length")
        length = int(lengths[0])
        if length > self.MAX_BODY:
            raise self._Unframed(413, "body too large")
        return self._exactly(length)

    def _serve(self) -> None:
        try:
            body = self._body()
        except self._Unframed as exc:
            self.close_connection = True
            self.send_error(exc.status, exc.reason)
            return
        path, _, query = self.path.partition("?")
        if "://" in path:  # absolute-form target
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        host, port = self.server.server_address[:2]
        environ = {
            "REQUEST_METHOD": self.command, "SCRIPT_NAME": "", "PATH_INFO": urllib.parse.unquote(path, "latin-1"),
            "QUERY_STRING": query, "REQUEST_URI": self.path, "RAW_URI": self.path,
            "SERVER_NAME": host, "SERVER_PORT": str(port), "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0], "REMOTE_PORT": str(self.client_address[1]),
            "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING"):
                continue
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        reply: dict = {}

        def start_response(status, headers, exc_info=None):
            reply["status"], reply["headers"] = status, headers
            return lambda data: reply.setdefault("early", []).append(data)

        try:
            result = self.server.app(environ, start_response)
            try:
                data = b"".join([*reply.get("early", ()), *result])
            finally:
                if hasattr(result, "close"):
                    result.close()
        except Exception:  # noqa: BLE001 - as werkzeug did: a 500, and this connection ends
            self.close_connection = True
            self.send_error(500, "moto failed")
            return
        code, _, reason = reply["status"].partition(" ")
        lines = [f"HTTP/1.1 {code} {reason}".encode("latin-1")]
        for name, value in reply["headers"]:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                lines.append(f"{name}: {value}".encode("latin-1"))
        if not (code in ("204", "304") or code.startswith("1")):  # these have no body, nor a length
            lines.append(f"Content-Length: {len(data)}".encode("latin-1"))
        if self.close_connection:
            lines.append(b"Connection: close")
        if self.command == "HEAD" or code in ("204", "304") or code.startswith("1"):
            data = b""
        self.wfile.write(b"\r\n".join(lines) + b"\r\n\r\n" + data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _serve


class _WsgiServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, app):
        self.app = app
        super().__init__(address, _WsgiHandler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # without HTTPServer's getfqdn() (a reverse lookup)
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self):
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address


def serve(argv: list[str] | None = None) -> None:
    """``python -m devicegate.local.dynamo -H HOST -p PORT``: moto's server, serialized."""
    import argparse

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    parser = argparse.ArgumentParser(prog="devicegate.local.dynamo")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    # Exit at once: the journal is written before each request is served, and a graceful
    # exit would wait for every kept-alive client connection to go idle.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    logging.basicConfig(format="devicegate.local.dynamo: %(message)s")
    install_item_undo()
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # as moto.server runs it
    _WsgiServer((args.host, args.port), serialized(app)).serve_forever()


if __name__ == "__main__":
    serve()
