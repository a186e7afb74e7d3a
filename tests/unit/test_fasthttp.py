"""fasthttp.LeanClient against a scripted HTTP server on 127.0.0.1: whole answers, kept-alive
connections, and every malformed or cut-short answer turned into the error the retry loop expects."""
from __future__ import annotations

import http.server
import os
import socket
import ssl
import threading
import time

import pytest

from storefs.errors import LocalWriteError, ProtocolError, Transient
from storefs.wire.transport_fast import ANSWER_MAX, LeanClient, head_many
from storefs.wire.settings import HttpSettings


class Scripted:
    """Accepts connections and answers each request with the next canned reply; a reply of None
    closes the connection instead, and ("close", data) sends data and then closes. Counts connections.
    Stops with the test."""

    def __init__(self, replies: list, tls: ssl.SSLContext | None = None) -> None:
        self.replies = list(replies)
        self.tls = tls
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self.replies:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except OSError:
                    continue
            with conn:
                conn.settimeout(10)
                while self.replies:
                    try:
                        request = conn.recv(65536)
                    except OSError:
                        break
                    if not request:
                        break
                    reply = self.replies.pop(0)
                    if reply is None:
                        break
                    try:
                        conn.sendall(reply[1] if isinstance(reply, tuple) else reply)
                    except OSError:   # the client hung up first (a test of a failing client)
                        break
                    if isinstance(reply, tuple):
                        break

    def close(self) -> None:
        self.replies.clear()
        self.sock.close()
        self._thread.join(timeout=10)


def _servers_of(make):
    """A fixture's body: `make(...)` starts a server (anything with close()); all close with the test."""
    servers = []

    def start(*args, **kwargs):
        servers.append(make(*args, **kwargs))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


@pytest.fixture
def serve():
    yield from _servers_of(Scripted)


def client() -> LeanClient:
    return LeanClient(HttpSettings(connect_timeout=5, read_timeout=5))


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def test_whole_answers_over_one_kept_alive_connection(serve):
    server = serve([ok(b"first"), ok(b"second")])
    lean = client()
    host = f"127.0.0.1:{server.port}"
    a = lean.exchange("PUT", "http", host, "/b/k", {"Host": host, "Content-Length": "3"}, b"abc")
    b = lean.exchange("GET", "http", host, "/b/k", {"Host": host})
    assert (a.status, a.content, a.headers["etag"]) == (200, b"first", '"e"')
    assert b.content == b"second"
    assert server.connections == 1


def test_a_connection_closed_while_idle_is_retried_once_on_a_new_one(serve):
    server = serve([ok(b"one"), None, ok(b"two")])
    lean = client()
    host = f"127.0.0.1:{server.port}"
    assert lean.exchange("GET", "http", host, "/", {"Host": host}).content == b"one"
    # The server hangs up on the next request over the kept-alive connection: not this request's fault.
    assert lean.exchange("GET", "http", host, "/", {"Host": host}).content == b"two"
    assert server.connections == 2


def test_a_cut_short_body_is_transient(serve):
    server = serve([("close", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")])
    host = f"127.0.0.1:{server.port}"
    with pytest.raises(Transient):
        client().exchange("GET", "http", host, "/", {"Host": host})


def test_garbage_instead_of_an_answer_is_transient(serve):
    server = serve([("close", b"this is not HTTP at all\r\n\r\n")])
    host = f"127.0.0.1:{server.port}"
    with pytest.raises(Transient):
        client().exchange("GET", "http", host, "/", {"Host": host})


def test_an_oversized_answer_is_refused_without_reading_it(serve):
    server = serve([b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (ANSWER_MAX + 1)])
    host = f"127.0.0.1:{server.port}"
    with pytest.raises(ProtocolError):
        client().exchange("GET", "http", host, "/", {"Host": host})


def test_head_answers_have_no_body_and_interim_answers_are_skipped(serve):
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nx-amz-meta-mode: 33188\r\n\r\n"
    server = serve([b"HTTP/1.1 100 Continue\r\n\r\n" + head, ok(b"after")])
    lean = client()
    host = f"127.0.0.1:{server.port}"
    answer = lean.exchange("HEAD", "http", host, "/", {"Host": host})
    assert answer.content == b"" and answer.headers["X-Amz-Meta-Mode"] == "33188"
    assert lean.exchange("GET", "http", host, "/", {"Host": host}).content == b"after"
    assert server.connections == 1


def test_an_answer_ended_by_close_is_read_whole_and_the_connection_dropped(serve):
    server = serve([("close", b"HTTP/1.0 200 OK\r\n\r\nuntil the end"), ok(b"next")])
    lean = client()
    host = f"127.0.0.1:{server.port}"
    assert lean.exchange("GET", "http", host, "/", {"Host": host}).content == b"until the end"
    assert lean.exchange("GET", "http", host, "/", {"Host": host}).content == b"next"
    assert server.connections == 2


def test_a_header_with_a_line_break_is_refused_before_sending():
    from storefs.errors import InvalidArgument
    with pytest.raises(InvalidArgument):
        client().exchange("PUT", "http", "127.0.0.1:9", "/", {"x-amz-meta-a": "1\r\nInjected: yes"})


def test_chunked_answers_are_read_whole(serve):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    server = serve([chunked])
    host = f"127.0.0.1:{server.port}"
    assert client().exchange("GET", "http", host, "/", {"Host": host}).content == b"abcde"


def test_nothing_listening_is_transient_and_names_only_the_host():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(Transient) as caught:
        client().exchange("GET", "http", f"127.0.0.1:{port}", "/b/secret?X-Amz-Signature=abc", {})
    assert "secret" not in str(caught.value) and "Signature" not in str(caught.value)


# -- head_many --------------------------------------------------------------------------------------

class _Heads(http.server.BaseHTTPRequestHandler):
    """Answers HEAD /n with x-amz-meta-n: n; 404 for /missing*; closes every 7th connection's answer."""

    protocol_version = "HTTP/1.1"
    served = 0
    lock = threading.Lock()

    def do_HEAD(self):  # noqa: N802 - http.server's naming
        with _Heads.lock:
            _Heads.served += 1
            close = _Heads.served % 7 == 0
        status = 404 if self.path.startswith("/missing") else 200
        self.send_response(status)
        self.send_header("Content-Length", "123")
        self.send_header("x-amz-meta-n", self.path[1:])
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def head_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Heads)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_head_many_answers_every_request_in_order(head_server):
    targets = [f"/{i}" for i in range(300)] + ["/missing"]
    answers = head_many(client(), "http", head_server, [(t, {"Host": head_server}) for t in targets], 8)
    assert [a.headers["x-amz-meta-n"] for a in answers[:-1]] == [str(i) for i in range(300)]
    assert all(a.status == 200 and a.content == b"" for a in answers[:-1])
    assert answers[-1].status == 404   # an answer, for the caller to map


def test_head_many_resends_once_when_a_kept_alive_connection_is_dropped(serve):
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    server = serve([head, None, head, head])
    host = f"127.0.0.1:{server.port}"
    answers = head_many(client(), "http", host, [("/a", {}), ("/b", {}), ("/c", {})], 1)
    assert [a.status for a in answers] == [200, 200, 200]
    assert server.connections == 2


def test_head_many_fails_garbage_alone_and_goes_on(serve):
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    server = serve([head, ("close", b"garbage\r\n\r\n"), head])
    host = f"127.0.0.1:{server.port}"
    answers = head_many(client(), "http", host, [("/a", {}), ("/b", {}), ("/c", {})], 1)
    assert answers[0].status == 200 and isinstance(answers[1], Transient) and answers[2].status == 200


def test_head_many_gives_up_on_a_server_that_never_answers():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)   # accepts connections (the kernel does), never answers
    try:
        lean = LeanClient(HttpSettings(connect_timeout=2, read_timeout=1))
        host = f"127.0.0.1:{sock.getsockname()[1]}"
        started = time.monotonic()
        answers = head_many(lean, "http", host, [(f"/{i}", {}) for i in range(50)], 4)
        assert all(isinstance(a, Transient) for a in answers)
        assert time.monotonic() - started < 5   # one read timeout, not one per batch of 4
    finally:
        sock.close()


# -- get_into: ranged answers straight into files --------------------------------------------------


def partial(body: bytes, first: int = 0, total: int = 1 << 30) -> bytes:
    return (b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n\r\n"
            % (first, first + len(body) - 1, total, len(body))) + body


@pytest.fixture
def files(tmp_path):
    opened = []

    def make(count):
        for n in range(count):
            opened.append(os.open(tmp_path / f"f{n}", os.O_RDWR | os.O_CREAT, 0o600))
        return opened[-count:]
    yield make
    for fd in opened:
        os.close(fd)


def contents(fds):
    return [os.pread(fd, 1 << 22, 0) for fd in fds]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_get_into_writes_a_ranged_answer_across_files_and_keeps_the_connection(serve, files, scheme, tmp_path):
    # Over http the body is spliced from the socket (after what came with the head); over https it is
    # received through one buffer. Either way the connection serves the next request.
    tls, settings = None, HttpSettings(connect_timeout=5, read_timeout=5)
    if scheme == "https":
        from tests.tlsserver import make_certs
        certs = make_certs(tmp_path / "certs")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(certs.cert_pem, certs.key_pem)
        settings = HttpSettings(connect_timeout=5, read_timeout=5, verify=str(certs.ca_pem))
    body = os.urandom(3 * 1024 * 1024 + 5)
    server = serve([partial(body), ok(b"next")], tls)
    lean = LeanClient(settings)
    host = f"127.0.0.1:{server.port}"
    fds = files(4)
    sizes = [1 << 20, 1 << 20, 1 << 20, 5]
    answer = lean.get_into(scheme, host, "/b/k", {"Host": host}, list(zip(fds, sizes)))
    assert answer is not None and answer.status == 206 and answer.content == b""
    assert contents(fds) == [body[:1 << 20], body[1 << 20:2 << 20], body[2 << 20:3 << 20], body[3 << 20:]]
    assert lean.exchange("GET", scheme, host, "/", {"Host": host}).content == b"next"
    assert server.connections == 1


def test_get_into_returns_other_answers_for_the_caller(serve, files):
    # An error comes back whole (for the caller's error mapping); a 200 (Range ignored: the whole
    # object follows) or a length that is not the range's comes back as None, the connection dropped.
    error = b"HTTP/1.1 412 Precondition Failed\r\nContent-Length: 7\r\n\r\n<Error>"
    whole = ok(b"the whole object")
    server = serve([error, whole, partial(b"short"), ok(b"after")])
    lean = client()
    host = f"127.0.0.1:{server.port}"
    fds = files(1)
    answer = lean.get_into("http", host, "/", {"Host": host}, [(fds[0], 10)])
    assert (answer.status, answer.content) == (412, b"<Error>")
    assert lean.get_into("http", host, "/", {"Host": host}, [(fds[0], 10)]) is None
    assert lean.get_into("http", host, "/", {"Host": host}, [(fds[0], 10)]) is None
    assert lean.exchange("GET", "http", host, "/", {"Host": host}).content == b"after"
    assert server.connections == 3
    assert contents(fds) == [b""]


def test_get_into_a_cut_short_body_is_transient_and_a_full_disk_is_not(serve, files, tmp_path):
    body = os.urandom(600_000)
    server = serve([("close", partial(body)[:-1000]), partial(body)])
    lean = client()
    host = f"127.0.0.1:{server.port}"
    with pytest.raises(Transient):
        lean.get_into("http", host, "/", {"Host": host}, [(files(1)[0], len(body))])
    read_only = os.open(tmp_path / "f0", os.O_RDONLY)   # writing to it fails as a full disk would
    try:
        with pytest.raises(LocalWriteError):
            lean.get_into("http", host, "/", {"Host": host}, [(read_only, len(body))])
    finally:
        os.close(read_only)


def test_a_connection_is_kept_for_the_next_request_whatever_thread_makes_it(serve):
    # FUSE callbacks run on libfuse's threads, where every call gets a new Python thread state: a
    # per-thread connection would be a new TCP connection per file closed.
    server = serve([ok(b"%d" % n) for n in range(4)])
    lean = client()
    host = f"127.0.0.1:{server.port}"
    got = []
    for _ in range(4):
        worker = threading.Thread(target=lambda: got.append(
            lean.exchange("GET", "http", host, "/", {"Host": host}).content))
        worker.start()
        worker.join(timeout=10)
    assert got == [b"0", b"1", b"2", b"3"]
    assert server.connections == 1
    lean.close()   # closes the idle connection
    assert lean._take("http", host) is None


# -- bodies sent from a file -----------------------------------------------------------------------


class _Digest(http.server.BaseHTTPRequestHandler):
    """Answers PUT with the SHA-256 of the body it received (read by Content-Length)."""

    protocol_version = "HTTP/1.1"

    def do_PUT(self):  # noqa: N802 - http.server's naming
        import hashlib
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = hashlib.sha256(body).hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def test_a_file_region_is_sent_as_the_body(tmp_path):
    # Multipart parts of staged files go out from the file (sendfile on plain HTTP), never whole in
    # memory; a file that turns out shorter than the region fails the request, not the connection pool.
    import hashlib

    from storefs.errors import InvalidArgument
    from storefs.wire.body import FileRegion
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Digest)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    data = os.urandom(5 * 1024 * 1024 + 3)
    (tmp_path / "staged").write_bytes(data)
    fd = os.open(tmp_path / "staged", os.O_RDONLY)
    try:
        lean = client()
        host = f"127.0.0.1:{server.server_address[1]}"
        for offset, size in ((0, len(data)), (1000, 3 * 1024 * 1024), (len(data) - 10, 10)):
            headers = {"Host": host, "Content-Length": str(size)}
            answer = lean.exchange("PUT", "http", host, "/b/part", headers, FileRegion(fd, offset, size))
            assert answer.content == hashlib.sha256(data[offset:offset + size]).hexdigest().encode()
        with pytest.raises(InvalidArgument):
            lean.exchange("PUT", "http", host, "/b/part", {"Host": host, "Content-Length": "100"},
                          FileRegion(fd, len(data) - 10, 100))
        lean.close()
    finally:
        os.close(fd)
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_answer_headers_are_looked_up_in_any_case(serve):
    server = serve([b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nX-Amz-Meta-Mode: 33188\r\nContent-Length: 0\r\n\r\n"])
    host = f"127.0.0.1:{server.port}"
    headers = client().exchange("HEAD", "http", host, "/", {"Host": host}).headers
    assert headers["etag"] == headers["ETag"] == headers.get("ETAG") == '"e"'
    assert "x-amz-meta-mode" in headers and "X-Amz-Meta-Mode" in headers and "nope" not in headers
    assert headers.get("missing", "default") == "default"
    assert dict(headers.items())["x-amz-meta-mode"] == "33188"   # stored by lower-cased name


# -- a stalled server: the read timeout, kept by the kernel on plain HTTP ----------------------------


class Stalling:
    """Accepts one connection, reads the request head, sends `reply` (maybe nothing, maybe part of an
    answer) and then neither sends nor reads until the test ends. `reads` False: reads nothing at all."""

    def __init__(self, reply: bytes = b"", reads: bool = True) -> None:
        self.reply, self.reads = reply, reads
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            if self.reads:
                conn.recv(65536)
                conn.sendall(self.reply)
            self.done.wait(20)

    def close(self) -> None:
        self.done.set()
        self.sock.close()
        self._thread.join(timeout=10)


@pytest.fixture
def stalling():
    yield from _servers_of(Stalling)


def _times_out(call) -> float:
    started = time.monotonic()
    with pytest.raises(Transient, match="TimeoutError"):
        call()
    return time.monotonic() - started


def test_a_server_that_never_answers_times_out_after_the_read_timeout(stalling):
    server = stalling()
    lean = LeanClient(HttpSettings(connect_timeout=2, read_timeout=0.5))
    host = f"127.0.0.1:{server.port}"
    elapsed = _times_out(lambda: lean.exchange("GET", "http", host, "/", {"Host": host}))
    assert 0.4 < elapsed < 5


def test_a_body_that_stops_midway_times_out_in_the_splice(stalling, files):
    # The head and part of the body come, then nothing: splice(2) from the blocking socket waits for
    # the kernel's receive timeout, and the read fails as a timeout (not a hang, not a cut-short body).
    body = os.urandom(300_000)
    server = stalling(partial(body)[:-100_000])
    lean = LeanClient(HttpSettings(connect_timeout=2, read_timeout=0.5))
    host = f"127.0.0.1:{server.port}"
    elapsed = _times_out(lambda: lean.get_into("http", host, "/", {"Host": host}, [(files(1)[0], len(body))]))
    assert 0.4 < elapsed < 5


def test_a_server_that_stops_reading_a_body_times_out_in_the_send(stalling, tmp_path):
    # A staged part goes out with sendfile(2); once the server's window and ours are full, the send
    # waits for the kernel's send timeout.
    from storefs.wire.body import FileRegion
    data = os.urandom(64 << 20)
    (tmp_path / "staged").write_bytes(data)
    server = stalling(reads=False)
    lean = LeanClient(HttpSettings(connect_timeout=2, read_timeout=0.5))
    host = f"127.0.0.1:{server.port}"
    fd = os.open(tmp_path / "staged", os.O_RDONLY)
    try:
        headers = {"Host": host, "Content-Length": str(len(data))}
        elapsed = _times_out(lambda: lean.exchange("PUT", "http", host, "/b/part", headers,
                                                   FileRegion(fd, 0, len(data))))
    finally:
        os.close(fd)
    assert 0.4 < elapsed < 5
