"""The HTTP/1.1 client side awsjson and the Fleet client need, and no more: one request at a time on a kept-alive
connection, the request in one write, the response read strictly and within bounds.

Why not ``http.client``: it imports the ``email`` package (parser, message, header, policy:
some 5 ms of a Lambda's first request) to parse response headers, and a host name given to it
as ``str`` goes through the ``idna`` codec on every connect (``encodings.idna``, ``stringprep``,
``unicodedata``: 1 ms more). The AWS endpoints (and Fleet, for
compliance.fleet) answer JSON with a Content-Length or chunked; everything here is about refusing
anything else clearly, never guessing.

What a response must be, or :class:`BadResponse` is raised (and the connection is dropped):

* a status line ``HTTP/1.1`` or ``HTTP/1.0``, a three-digit status 100 to 599, CRLF line ends;
  ``100 Continue`` interim responses are skipped (at most a few), any other 1xx is refused;
* at most :data:`MAX_HEADERS` header lines, each at most :data:`MAX_LINE` bytes, ``name: value``
  with a token for a name (no space before the colon, no obsolete line folding, no NUL);
* a body framed by exactly one Content-Length (digits only; repeats must agree), or by
  ``Transfer-Encoding: chunked`` (and nothing else; with a Content-Length too it is refused), or,
  without either, by the server closing the connection; at most :data:`MAX_BODY` bytes in all.

Every socket operation is bounded by the socket's timeout (``socket.timeout`` is an OSError).
A connection is reused only when the response allows it (HTTP/1.1 without ``Connection:
close``, HTTP/1.0 with ``keep-alive``) and nothing arrived beyond the response.
"""

from __future__ import annotations

import errno
import select
import socket

MAX_LINE = 64 * 1024  # as http.client
MAX_HEADERS = 100  # as http.client
MAX_BODY = 64 * 1024 * 1024  # DynamoDB answers at most 16 MB (BatchGetItem)
MAX_INTERIM = 8  # "100 Continue" responses skipped before the real one
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX = frozenset(b"0123456789abcdefABCDEF")


class BadResponse(Exception):
    """The peer's bytes are not an HTTP/1.1 response we accept."""


class BodyTooLarge(BadResponse):
    """The response's body is over the connection's ``max_body``."""


class TruncatedBody(BadResponse):
    """The connection closed before the body its framing promised had all arrived."""


class ClosedBeforeResponse(BadResponse):
    """The peer closed the connection without sending a byte of a response: on a kept-alive
    connection, the server had closed it while it was idle (the request is safe to send again
    on a new one when it is idempotent)."""


class Connection:
    """One connection to ``host:port`` (``tls``: an ``ssl.SSLContext`` for https, else None)."""

    def __init__(self, host: str, port: int | None, *, tls=None, timeout: float, max_body: int = MAX_BODY):
        self.host = host
        self.port = port or (443 if tls is not None else 80)
        self.tls = tls
        self.timeout = timeout
        self.max_body = min(max_body, MAX_BODY)  # a caller's own cap, never above ours
        self.sock = None
        self._buf = bytearray()

    def connect(self) -> None:
        # ASCII names as bytes: getaddrinfo and ssl take them as they are, without the idna codec
        # (which only checks label lengths for an ASCII name; certificate checking is unchanged).
        name = self.host.encode("ascii") if self.host.isascii() else self.host
        sock = socket.create_connection((name, self.port), timeout=self.timeout)
        try:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as http.client does
            except OSError as exc:
                if exc.errno != errno.ENOPROTOOPT:
                    raise
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=name)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def reusable(self) -> bool:
        """Whether this kept-alive connection can take the next request: open, and not readable
        while idle (readable then means the server closed it, or sent bytes nobody asked for).
        poll, not select: a busy process may have descriptors above select's limit."""
        if self.sock is None:
            return False
        idle = select.poll()
        idle.register(self.sock, select.POLLIN)
        return not idle.poll(0)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        self._buf.clear()
        if sock is not None:
            sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list, bytes, bool]:
        """Send one request; return (status, [(name, value)...], body, will_close)."""
        if any(c <= " " or c == "\x7f" for c in method + path):  # as http.client refuses them
            raise ValueError(f"invalid request line {method!r} {path!r}")
        lines = [f"{method} {path} HTTP/1.1"]
        if body or method not in ("GET", "HEAD"):  # a GET without content says nothing of its length
            lines.append(f"Content-Length: {len(body)}")
        for name, value in headers.items():
            if ("\r" in name or "\n" in name or "\r" in value or "\n" in value or ":" in name
                    or name.lower() in ("content-length", "transfer-encoding")):  # the framing is ours
                raise ValueError(f"invalid request header {name!r}")
            lines.append(f"{name}: {value}")
        self.send("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body)  # headers and body in one write
        return self._response()

    # ------------------------------------------------------------------ reading

    def _recv(self) -> bool:
        chunk = self.sock.recv(65536)
        self._buf += chunk
        return bool(chunk)

    def _line(self) -> bytes:
        start = 0
        while True:
            end = self._buf.find(b"\r\n", start)
            if end >= 0:
                if end > MAX_LINE:
                    raise BadResponse(f"a line of the response is longer than {MAX_LINE} bytes")
                line = bytes(self._buf[:end])
                del self._buf[:end + 2]
                if b"\n" in line or b"\r" in line:
                    raise BadResponse("a bare CR or LF in the response head")
                return line
            if len(self._buf) > MAX_LINE:
                raise BadResponse(f"a line of the response is longer than {MAX_LINE} bytes")
            start = max(0, len(self._buf) - 1)
            if not self._recv():
                raise BadResponse("the connection closed before the response head ended")

    def _exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._recv():
                raise TruncatedBody(f"the connection closed {n - len(self._buf)} bytes short of the body")
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _status(self) -> tuple[bytes, int]:
        line = self._line()
        version, _, rest = line.partition(b" ")
        code, _, _reason = rest.partition(b" ")
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise BadResponse(f"not an HTTP/1.x status line: {line[:80]!r}")
        status = int(code)
        if not 100 <= status <= 599:
            raise BadResponse(f"status {status} is out of range")
        return version, status

    def _headers(self) -> list[tuple[str, str]]:
        headers = []
        while True:
            line = self._line()
            if not line:
                return headers
            if len(headers) >= MAX_HEADERS:
                raise BadResponse(f"more than {MAX_HEADERS} response headers")
            name, colon, value = line.partition(b":")
            if not colon or not name or not _TOKEN.issuperset(name):  # also refuses obs-fold (leading space)
                raise BadResponse(f"malformed response header line {line[:80]!r}")
            if b"\x00" in value:
                raise BadResponse("a NUL in a response header")
            headers.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))

    def _response(self) -> tuple[int, list, bytes, bool]:
        if not self._buf and not self._recv():
            raise ClosedBeforeResponse("the connection closed before the response head (nothing was received)")
        for _ in range(MAX_INTERIM + 1):
            version, status = self._status()
            headers = self._headers()
            if status != 100:
                break
        else:
            raise BadResponse("too many 100 Continue responses")
        if 100 < status < 200:
            raise BadResponse(f"unexpected interim response {status}")
        fields: dict[str, list[str]] = {}
        for name, value in headers:
            fields.setdefault(name.lower(), []).append(value)
        tokens = {t.strip().lower() for v in fields.get("connection", ()) for t in v.split(",")}
        will_close = "close" in tokens or (version == b"HTTP/1.0" and "keep-alive" not in tokens)
        lengths = fields.get("content-length")
        codings = fields.get("transfer-encoding")
        if status in (204, 304):
            if codings or (lengths and any(v != "0" for v in lengths)):
                raise BadResponse(f"a {status} response with a body")
            body = b""
        elif codings is not None:
            if lengths is not None:
                raise BadResponse("both Transfer-Encoding and Content-Length")
            if [t.strip().lower() for v in codings for t in v.split(",")] != ["chunked"]:
                raise BadResponse(f"unsupported Transfer-Encoding {', '.join(codings)!r}")
            body = self._chunked()
        elif lengths is not None:
            if len(set(lengths)) != 1 or not lengths[0].isdigit() or not lengths[0].isascii():
                raise BadResponse(f"invalid Content-Length {', '.join(lengths)!r}")
            length = int(lengths[0])
            if length > self.max_body:
                raise BodyTooLarge(f"a body of {length} bytes exceeds {self.max_body}")
            body = self._exactly(length)
        else:  # delimited by the end of the connection
            while True:
                if len(self._buf) > self.max_body:
                    raise BodyTooLarge(f"a body of more than {self.max_body} bytes")
                if not self._recv():
                    break
            body, will_close = bytes(self._buf), True
            self._buf.clear()
        if self._buf:  # bytes beyond the response: the connection is out of step
            will_close = True
        return status, headers, body, will_close

    def _chunked(self) -> bytes:
        parts, total = [], 0
        while True:
            size_text = self._line().partition(b";")[0].strip(b" \t")  # chunk extensions are ignored
            if not size_text or len(size_text) > 16 or not _HEX.issuperset(size_text):
                raise BadResponse(f"invalid chunk size {size_text[:20]!r}")
            size = int(size_text, 16)
            total += size
            if total > self.max_body:
                raise BodyTooLarge(f"a body of more than {self.max_body} bytes")
            if size == 0:
                self._headers()  # trailers (bounded like headers), then the blank line
                return b"".join(parts)
            parts.append(self._exactly(size))
            if self._exactly(2) != b"\r\n":
                raise BadResponse("a chunk does not end with CRLF")
