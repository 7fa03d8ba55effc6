"""devicegate.http11 against a raw socket server that answers with exactly the bytes a test
scripts: well-formed responses in every framing it accepts, and malformed ones, each refused
with BadResponse (and through awsjson: retried, then a TransportError)."""

from __future__ import annotations

import socket
import time
import threading

import pytest

from devicegate import awsjson, http11

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class CLOSE(bytes):
    """Bytes after which the server closes the connection."""


class RawServer:
    """Each accepted connection reads requests (head + Content-Length body) and answers each
    with the next scripted bytes; None closes the connection instead of answering, CLOSE(bytes)
    answers and then closes it."""

    def __init__(self, *script):
        self.script = list(script)
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), b"0"))
                while len(buf) < length:
                    buf += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + buf[:length])
                buf = buf[length:]
                answer = self.script.pop(0) if self.script else OK
                if answer is None:
                    return
                conn.sendall(bytes(answer))
                if isinstance(answer, CLOSE):
                    return

    def connection(self, timeout=2.0):
        conn = http11.Connection("127.0.0.1", self.port, timeout=timeout)
        conn.connect()
        return conn

    def close(self):
        self.sock.close()


@pytest.fixture
def serve():
    servers = []

    def make(*script):
        servers.append(RawServer(*script))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def _post(server, body=b"{}", **kw):
    conn = server.connection(**kw)
    try:
        return conn.request("POST", "/", {"Host": "h", "X-A": "1"}, body)
    finally:
        conn.close()


def test_the_request_is_one_well_formed_write(serve):
    server = serve(OK)
    assert _post(server, b'{"a":1}')[0] == 200
    assert server.requests == [b'POST / HTTP/1.1\r\nContent-Length: 7\r\nHost: h\r\nX-A: 1\r\n\r\n{"a":1}']


def test_a_header_that_would_split_the_request_is_refused(serve):
    conn = serve().connection()
    try:
        for name, value in (("X-A", "1\r\nX-B: 2"), ("X-A\n", "1"), ("X:A", "1"), ("content-length", "1"),
                            ("Transfer-Encoding", "chunked")):
            with pytest.raises(ValueError, match="invalid request header"):
                conn.request("POST", "/", {name: value}, b"")
        for path in ("/a b", "/a\r\nX: y", "/\x00", "/\x7f"):
            with pytest.raises(ValueError, match="invalid request line"):
                conn.request("POST", path, {}, b"")
    finally:
        conn.close()


def test_content_length_framing_and_keep_alive(serve):
    server = serve(OK, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\nX-Amzn-RequestId: r\r\n\r\nerror")
    conn = server.connection()
    try:
        assert conn.request("POST", "/", {}, b"") == (200, [("Content-Type", "application/json"),
                                                          ("Content-Length", "2")], b"{}", False)
        status, headers, body, will_close = conn.request("POST", "/", {}, b"")
        assert (status, body, will_close, headers[-1]) == (400, b"error", False, ("X-Amzn-RequestId", "r"))
    finally:
        conn.close()
    assert server.connections == 1 and len(server.requests) == 2


@pytest.mark.parametrize("answer, body, will_close", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\n",
     b"Wikipedia", False),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n", b"", False),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\nX: y\r\n\r\n" + OK, b"{}", False),
    (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\n{}", b"{}", True),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", b"{}", True),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}", b"{}", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}", b"{}", False),
    (b"HTTP/1.1 200\r\nContent-Length:2\r\n\r\n{}", b"{}", False),  # no reason phrase, no space: both fine
    (b"HTTP/1.1 204 No Content\r\n\r\n", b"", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}junk", b"{}", True),  # out of step: not reused
])
def test_accepted_framings(serve, answer, body, will_close):
    status, _, got, closing = _post(serve(answer))
    assert (got, closing) == (body, will_close) and status in (200, 204)


def test_a_body_delimited_by_the_end_of_the_connection(serve):
    status, _, body, will_close = _post(serve(CLOSE(b"HTTP/1.1 200 OK\r\n\r\n{\"x\": 1}")))
    assert (status, body, will_close) == (200, b'{"x": 1}', True)


@pytest.mark.parametrize("answer, message", [
    (None, "closed before the response head"),
    (b"HTTP/1.1 200 OK\r\nContent-Le", "closed before the response head"),
    (b"HTTP/2 200 OK\r\n\r\n", "not an HTTP/1.x status line"),
    (b"ICY 200 OK\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 20 OK\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1  200 OK\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 600 Nope\r\n\r\n", "out of range"),
    (b"HTTP/1.1 099 Nope\r\n\r\n", "out of range"),
    (b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\n{}", "bare CR or LF"),
    (b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", "bare CR or LF"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * (70 * 1024) + b"\r\n\r\n", "longer than"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * (70 * 1024), "longer than"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 101 + b"\r\n", "more than 100"),
    (b"HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\nContent-Length: 0\r\n\r\n", "malformed response header"),
    (b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\n{}", "malformed response header"),
    (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "malformed response header"),
    (b"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n", "malformed response header"),
    (b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n", "NUL"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n{}", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n{}", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}x", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: \xd9\xa3\r\n\r\n{}x", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", "exceeds"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "short of the body"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "unsupported Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     "unsupported Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n0\r\n\r\n", "both"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n", "invalid chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n", "invalid chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n\r\n", "invalid chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 17 + b"\r\n", "invalid chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n", "does not end with CRLF"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffff\r\n", "more than"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}", "short of the body"),
    (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "unexpected interim response"),
    (b"HTTP/1.1 100 Continue\r\n\r\n" * 9 + OK, "too many 100 Continue"),
    (b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\n{}", "a 204 response with a body"),
    (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "a 304 response with a body"),
])
def test_malformed_responses_are_refused(serve, answer, message):
    server = serve(None if answer is None else CLOSE(answer))
    with pytest.raises(http11.BadResponse, match=message):
        _post(server)


def test_a_body_beyond_the_limit_is_refused_in_every_framing(serve, monkeypatch):
    monkeypatch.setattr(http11, "MAX_BODY", 10)
    for answer in (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n" + b"x" * 11,
                   b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nxxxxxx\r\n6\r\nxxxxxx\r\n0\r\n\r\n",
                   b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 11):
        with pytest.raises(http11.BadResponse, match="exceeds|more than"):
            _post(serve(CLOSE(answer)))


def test_a_silent_server_times_out(serve):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        conn = http11.Connection("127.0.0.1", silent.getsockname()[1], timeout=0.2)
        conn.connect()
        with pytest.raises(OSError, match="timed out"):
            conn.request("POST", "/", {}, b"")
        conn.close()
        assert conn.sock is None
    finally:
        silent.close()


def test_awsjson_retries_a_malformed_response_then_gives_a_transport_error(serve):
    env = {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret"}
    garbage = b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"
    server = serve(garbage, garbage, b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"Item\": {}}\n")
    c = awsjson.Client("dynamodb", "us-east-1", f"http://127.0.0.1:{server.port}", env=env, backoff_base=0.001)
    assert c.get_item(TableName="t", Key={})["ResponseMetadata"]["RetryAttempts"] == 2
    assert server.connections == 3  # a refused response drops its connection
    server.script = [garbage] * 3
    with pytest.raises(awsjson.TransportError, match="BadResponse: invalid Content-Length"):
        c.get_item(TableName="t", Key={})


def test_ascii_host_names_skip_the_idna_codec():
    """What the bytes host name is for: connecting loads no encodings.idna (http.client's did)."""
    import subprocess
    import sys

    code = ("import socket, sys\n"
            "from devicegate import http11\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
            "c = http11.Connection('localhost', s.getsockname()[1], timeout=2); c.connect(); c.close()\n"
            "print('encodings.idna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_get_without_content_says_nothing_of_its_length(serve):
    server = serve(OK, OK)
    conn = server.connection()
    conn.request("GET", "/a", {"Host": "x"}, b"")
    conn.request("POST", "/b", {"Host": "x"}, b"")
    get, post = server.requests
    assert b"content-length" not in get.lower() and b"\r\nContent-Length: 0\r\n" in post


def test_a_connection_can_have_a_smaller_body_cap(serve):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n"
    long = b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n" + b"x" * 20
    for answer in (chunked, long, CLOSE(b"HTTP/1.1 200 OK\r\n\r\n" + b"y" * 30)):
        server = serve(answer)
        conn = http11.Connection("127.0.0.1", server.port, timeout=2.0, max_body=10)
        conn.connect()
        with pytest.raises(http11.BodyTooLarge, match="10"):
            conn.request("GET", "/", {}, b"")
    assert http11.Connection("h", 1, timeout=1, max_body=10 ** 12).max_body == http11.MAX_BODY


def test_nothing_at_all_is_told_apart_from_a_broken_head(serve):
    for answer, kind in ((None, http11.ClosedBeforeResponse), (CLOSE(b"HTTP/1.1 200"), http11.BadResponse)):
        conn = serve(answer).connection()
        with pytest.raises(kind) as info:
            conn.request("POST", "/", {}, b"{}")
        assert (type(info.value) is http11.ClosedBeforeResponse) == (kind is http11.ClosedBeforeResponse)


def test_a_kept_alive_connection_is_reusable_until_the_server_closes_it(serve):
    server = serve(OK, CLOSE(OK))
    conn = server.connection()
    conn.request("POST", "/", {}, b"{}")
    assert conn.reusable()
    _, _, _, will_close = conn.request("POST", "/", {}, b"{}")  # the server answers, then closes
    assert not will_close  # it did not say so in the response: only the socket tells
    for _ in range(100):
        if not conn.reusable():
            break
        time.sleep(0.01)
    assert not conn.reusable()
    conn.close()
    assert not conn.reusable()


def test_a_body_cut_short_is_told_apart(serve):
    for answer in (CLOSE(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}"),
                   CLOSE(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}")):
        conn = serve(answer).connection()
        with pytest.raises(http11.TruncatedBody, match="short of the body"):
            conn.request("POST", "/", {}, b"{}")
