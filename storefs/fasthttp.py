"""Small S3 requests without `requests`: HTTP/1.1 over per-thread keep-alive sockets.

Through a requests Session every request costs about 0.8 ms of CPU (request preparation, hooks,
adapters, urllib3's pool) under the GIL; through http.client about 0.2 ms, most of it parsing headers
with the email package. Here the exchange is framed directly: one sendall, and the answer's head split
into lines. That is most of the cost of the requests a mount makes by the thousand: the HEAD per entry
of an `ls -l` (32 at a time) and the PUT per small file of a `cp -r` or an untar. Every S3 request whose
body is in memory and whose answer is read whole goes this way; streamed answers (object reads) and
bodies streamed from a file stay on `http.send` (requests).

What is spoken: HTTP/1.1 requests with the caller's headers (Host, Content-Length and the signature
included); answers with Content-Length, chunked, or ended by close; 1xx answers skipped; keep-alive
unless the server says close. Answers over ANSWER_MAX bytes are refused (ProtocolError) unread.

Same rules as http.send: timeouts on every request (connect_timeout, then read_timeout between bytes),
certificates always verified (the remote's `ca_file` or certifi's bundle, as requests does), transport
failures and malformed answers are Transient, and messages name only scheme and host.
"""
from __future__ import annotations

import dataclasses
import socket
import ssl
import threading
from typing import Mapping

import certifi
from requests.structures import CaseInsensitiveDict

from .errors import InvalidArgument, ProtocolError, Transient
from .http import HttpSettings, tls_error

ANSWER_MAX = 64 << 20   # the largest answer read whole (a LIST page is about 1 MiB at most)
HEAD_MAX = 64 << 10     # status line and headers
RECV_SIZE = 256 << 10
INLINE_SEND = 64 << 10  # bodies up to this go out in the same send as the head


@dataclasses.dataclass(frozen=True)
class LeanAnswer:
    status: int
    headers: CaseInsensitiveDict
    content: bytes


class _Malformed(Exception):
    """The answer is not HTTP/1.x as spoken here (Transient to the caller: a retry may fare better)."""


class _ClosedBeforeAnswer(Exception):
    """The server closed the connection without a byte of answer (an idle keep-alive it dropped)."""


class _CutShort(Exception):
    """The connection ended inside an answer."""


class _Connection:
    """One socket and the bytes read from it but not consumed yet."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.used = False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self) -> bool:
        chunk = self.sock.recv(RECV_SIZE)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def read_until(self, marker: bytes, limit: int, *, answer_start: bool = False) -> bytes:
        """Bytes up to `marker` (consumed, not returned), at most `limit` of them. `answer_start`:
        the first read of an answer, where an immediate close means the server dropped the
        connection before it saw the request."""
        start = 0
        while True:
            end = self.buffer.find(marker, start)
            if end >= 0:
                data = bytes(self.buffer[:end])
                del self.buffer[:end + len(marker)]
                return data
            if len(self.buffer) > limit:
                raise _Malformed("answer head too long")
            start = max(0, len(self.buffer) - len(marker) + 1)
            if not self._fill():
                if answer_start and not self.buffer:
                    raise _ClosedBeforeAnswer()
                raise _CutShort()

    def read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise _CutShort()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_to_close(self) -> bytes:
        while self._fill():
            if len(self.buffer) > ANSWER_MAX:
                raise ProtocolError(f"an answer of over {ANSWER_MAX} bytes")
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def _split_host(host: str, default_port: int) -> tuple[str, int]:
    """("name", port) of a Host value: name, name:port, [v6] or [v6]:port."""
    if host.startswith("["):
        end = host.index("]")
        rest = host[end + 1:]
        return host[1:end], int(rest[1:]) if rest.startswith(":") else default_port
    name, sep, port = host.rpartition(":")
    return (name, int(port)) if sep else (host, default_port)


def _parse_head(head: bytes) -> tuple[int, bool, CaseInsensitiveDict]:
    """(status, HTTP/1.0?, headers) of an answer head."""
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise _Malformed("not an HTTP/1.x status line")
    headers: CaseInsensitiveDict = CaseInsensitiveDict()
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name[-1:] in (b" ", b"\t") or line[:1] in (b" ", b"\t"):
            raise _Malformed("bad header line")
        headers[name.decode("latin-1")] = value.strip(b" \t").decode("latin-1")
    return int(code), version == b"HTTP/1.0", headers


class LeanClient:
    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self._local = threading.local()
        self._tls: ssl.SSLContext | None = None
        self._tls_lock = threading.Lock()

    def _context(self) -> ssl.SSLContext:
        with self._tls_lock:
            if self._tls is None:
                cafile = self.settings.verify if isinstance(self.settings.verify, str) else certifi.where()
                self._tls = ssl.create_default_context(cafile=cafile)  # verifies chain and host name
            return self._tls

    def _connection(self, scheme: str, host: str) -> _Connection:
        pool: dict[tuple[str, str], _Connection] = self._local.__dict__.setdefault("pool", {})
        conn = pool.get((scheme, host))
        if conn is None:
            name, port = _split_host(host, 443 if scheme == "https" else 80)
            sock = socket.create_connection((name, port), timeout=self.settings.connect_timeout)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if scheme == "https":
                    sock = self._context().wrap_socket(sock, server_hostname=name)
                sock.settimeout(self.settings.read_timeout)
            except BaseException:
                sock.close()
                raise
            conn = pool[(scheme, host)] = _Connection(sock)
        return conn

    def _drop(self, scheme: str, host: str) -> None:
        conn = self._local.__dict__.get("pool", {}).pop((scheme, host), None)
        if conn is not None:
            conn.close()

    def exchange(self, method: str, scheme: str, host: str, target: str, headers: Mapping[str, str],
                 body: bytes = b"") -> LeanAnswer:
        """One request and its whole answer. `method` must be idempotent (S3's are, for one key and
        body): a kept-alive connection that turns out closed by the server is retried once on a fresh
        one, as that is not a failure of the request. Other transport failures are Transient."""
        lines = [f"{method} {target} HTTP/1.1\r\n"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value:
                raise InvalidArgument(f"header {name} has a line break")
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        for attempt in (1, 2):
            reused = False
            try:
                conn = self._connection(scheme, host)
                reused = conn.used
                conn.used = True
                if len(body) <= INLINE_SEND:
                    conn.sock.sendall(head + body)
                else:
                    conn.sock.sendall(head)
                    conn.sock.sendall(body)
                answer, keep = self._answer(conn, method)
                if not keep:
                    self._drop(scheme, host)
                return answer
            except ssl.SSLError as exc:
                self._drop(scheme, host)
                raise tls_error(exc, self.settings, method, f"{scheme}://{host}/") from None
            except (_ClosedBeforeAnswer, ConnectionResetError, BrokenPipeError) as exc:
                self._drop(scheme, host)
                if reused and attempt == 1:
                    continue  # the server closed an idle connection
                raise Transient(f"{method} {scheme}://{host}: {exc.__class__.__name__}") from None
            except ProtocolError as exc:
                self._drop(scheme, host)
                raise ProtocolError(f"{method} {scheme}://{host}: {exc}") from None
            except (OSError, _Malformed, _CutShort, ValueError) as exc:
                self._drop(scheme, host)
                raise Transient(f"{method} {scheme}://{host}: {exc.__class__.__name__}") from None
        raise AssertionError("unreachable")

    @staticmethod
    def _answer(conn: _Connection, method: str) -> tuple[LeanAnswer, bool]:
        """The answer and whether the connection may be kept."""
        for interim in range(8):   # a few 1xx interim answers at most
            head = conn.read_until(b"\r\n\r\n", HEAD_MAX, answer_start=interim == 0)
            status, http10, headers = _parse_head(head)
            if status >= 200:
                break
        else:
            raise _Malformed("too many interim answers")
        connection = headers.get("Connection", "").lower()
        keep = "close" not in connection and (not http10 or "keep-alive" in connection)
        if method == "HEAD" or status in (204, 304):
            return LeanAnswer(status, headers, b""), keep
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            return LeanAnswer(status, headers, LeanClient._chunked(conn)), keep
        length = headers.get("Content-Length")
        if length is None:
            return LeanAnswer(status, headers, conn.read_to_close()), False
        if not length.isdigit():
            raise _Malformed("bad Content-Length")
        if int(length) > ANSWER_MAX:
            raise ProtocolError(f"a {length}-byte answer")
        return LeanAnswer(status, headers, conn.read_exact(int(length))), keep

    @staticmethod
    def _chunked(conn: _Connection) -> bytes:
        parts, total = [], 0
        while True:
            size_line = conn.read_until(b"\r\n", 1024)
            size = int(size_line.split(b";")[0].strip(), 16)   # ValueError: malformed
            if size == 0:
                while conn.read_until(b"\r\n", HEAD_MAX):   # trailers, up to the empty line
                    pass
                return b"".join(parts)
            total += size
            if total > ANSWER_MAX:
                raise ProtocolError(f"an answer of over {ANSWER_MAX} bytes")
            parts.append(conn.read_exact(size))
            if conn.read_exact(2) != b"\r\n":
                raise _Malformed("bad chunk end")
