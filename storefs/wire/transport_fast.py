"""The fast transport: HTTP/1.1 framed by hand over keep-alive sockets pooled per client (S3 uses it).

Through a requests Session every request costs about 0.8 ms of CPU (request preparation, hooks,
adapters, urllib3's pool) under the GIL; through http.client about 0.2 ms, most of it parsing headers
with the email package. Here the exchange is framed directly: one sendall, and the answer's head split
into lines. That is most of the cost of the requests a mount makes by the thousand: the HEAD per entry
of an `ls -l` (head_many, 64 at a time) and the PUT per small file of a `cp -r` or an untar. Every S3 request whose
body is in memory and whose answer is read whole goes this way, and so do ranged reads into the block
cache (`get_into`: the bytes go from the socket into cache files with splice(2)); other streamed
answers and bodies streamed from a file object go over the requests transport (wire.client chooses).

What is spoken: HTTP/1.1 requests with the caller's headers (Host, Content-Length and the signature
included); answers with Content-Length, chunked, or ended by close; 1xx answers skipped; keep-alive
unless the server says close. Answers over ANSWER_MAX bytes are refused (ProtocolError) unread.

Same rules as the requests transport: timeouts on every request (connect_timeout, then read_timeout between bytes),
certificates always verified (the remote's `ca_file` or certifi's bundle, as requests does), transport
failures and malformed answers are Transient, and messages name only scheme and host.
"""
from __future__ import annotations

import dataclasses
import fcntl
import os
import select
import selectors
import socket
import ssl
import struct
import threading
from typing import Callable, Mapping, Sequence, TypeVar

import certifi

from ..errors import InvalidArgument, LocalWriteError, ProtocolError, StoreError, Transient
from .answer import AnswerHeaders
from .body import FileRegion
from .settings import HttpSettings, tls_error
from ..localfiles import write_file

ANSWER_MAX = 64 << 20   # the largest answer read whole (a LIST page is about 1 MiB at most)
HEAD_MAX = 64 << 10     # status line and headers
RECV_SIZE = 256 << 10
SCRATCH = 64 << 10      # a connection's receive buffer for answers read into memory (see _Connection.fill)
HEAD_RECV = 4 << 10     # what get_into reads at a time until the answer's head is complete
INLINE_SEND = 64 << 10  # bodies up to this go out in the same send as the head
PIPE_SIZE = 1 << 20     # splice's pipe (the kernel's default is 64 KiB; larger moves more per call)
F_SETPIPE_SZ = 1031     # fcntl.F_SETPIPE_SZ, named in the module from Python 3.10 on Linux only

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class LeanAnswer:
    status: int
    headers: AnswerHeaders
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
        self.recv_size = SCRATCH   # get_into lowers it while reading a head: the body goes elsewhere
        self._scratch: memoryview | None = None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def fill(self) -> bool:
        """Append what the socket has (at most recv_size bytes) to the buffer; False at its end.
        Received into a buffer kept with the connection: a fresh bytes object per recv() cost an mmap,
        an mremap and a munmap per answer (glibc maps allocations of RECV_SIZE on their own)."""
        if self._scratch is None:
            self._scratch = memoryview(bytearray(SCRATCH))
        got = self.sock.recv_into(self._scratch, min(self.recv_size, SCRATCH))
        if not got:
            return False
        self.buffer += self._scratch[:got]
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
            if not self.fill():
                if answer_start and not self.buffer:
                    raise _ClosedBeforeAnswer()
                raise _CutShort()

    def read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self.fill():
                raise _CutShort()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_to_close(self) -> bytes:
        while self.fill():
            if len(self.buffer) > ANSWER_MAX:
                raise ProtocolError(f"an answer of over {ANSWER_MAX} bytes")
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


# Empty pipes for splice, shared by all threads (not threading.local: see LeanClient).
_pipes: list[tuple[int, int]] = []
_pipes_lock = threading.Lock()
PIPES_KEPT = 16


def _body_into_file(conn: _Connection, fd: int, size: int) -> None:
    """The next `size` bytes of the answer's body into `fd`, from offset 0: what the answer head's
    read left in the buffer first, then straight off the socket."""
    done = min(len(conn.buffer), size)
    if done:
        write_file(fd, bytes(conn.buffer[:done]), 0)
        del conn.buffer[:done]
    if done < size:
        if isinstance(conn.sock, ssl.SSLSocket):
            _receive_into_file(conn.sock, fd, done, size)
        else:
            _splice_into_file(conn.sock, fd, done, size)


def _splice_into_file(sock: socket.socket, fd: int, offset: int, size: int) -> None:
    """Bytes [offset, size) of `fd` from the socket through a pipe (one of a pool): the kernel
    moves them, Python never holds them."""
    with _pipes_lock:
        pipe = _pipes.pop() if _pipes else None
    if pipe is None:
        pipe = os.pipe()
        try:
            fcntl.fcntl(pipe[1], F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass   # a smaller pipe only means more calls
    read_end, write_end = pipe
    try:
        while offset < size:
            try:
                moved = os.splice(sock.fileno(), write_end, min(size - offset, PIPE_SIZE))
            except BlockingIOError:
                _wait_for(sock, write=False)
                continue
            if moved == 0:
                raise _CutShort()
            while moved:
                try:
                    put = os.splice(read_end, fd, moved, offset_dst=offset)
                except OSError as exc:
                    raise LocalWriteError(exc) from None
                offset, moved = offset + put, moved - put
    except BaseException:
        # The pipe may still hold bytes of this answer; the next answer must not start with them.
        os.close(read_end)
        os.close(write_end)
        raise
    with _pipes_lock:
        if len(_pipes) < PIPES_KEPT:
            _pipes.append(pipe)
            return
    os.close(read_end)
    os.close(write_end)


def _send_region(sock: socket.socket, region: FileRegion) -> None:
    """A file region as the request body: with sendfile(2) on plain HTTP (the kernel hands the file's
    pages to the socket), through a small buffer over TLS. A file that turned out shorter is
    InvalidArgument (the connection is then dropped: the server still waits for the rest)."""
    offset, end = region.offset, region.offset + region.size
    while offset < end:
        if isinstance(sock, ssl.SSLSocket):
            chunk = os.pread(region.fd, min(RECV_SIZE, end - offset), offset)
            if chunk:
                sock.sendall(chunk)
            sent = len(chunk)
        else:
            try:
                sent = os.sendfile(sock.fileno(), region.fd, offset, end - offset)
            except BlockingIOError:
                _wait_for(sock, write=True)
                continue
        if not sent:
            raise InvalidArgument(f"the file ended {end - offset} bytes before the request body did")
        offset += sent


def _wait_for(sock: socket.socket, *, write: bool) -> None:
    """After EAGAIN from splice or sendfile: on a socket with a Python timeout (non-blocking underneath),
    wait at most that long until it can be written (or read) again; on a blocking one (plain HTTP, see
    _kernel_timeouts) the kernel's timeout has already run out."""
    timeout = sock.gettimeout()
    wanted = ([], [sock]) if write else ([sock], [])
    if timeout is None or not any(select.select(*wanted, [], timeout)[:2]):
        raise socket.timeout("the server " + ("took" if write else "sent") + " no bytes within the read timeout")


def _kernel_timeouts(sock: socket.socket, seconds: float) -> None:
    """Make `sock` blocking, with its reads and writes timed out by the kernel (SO_RCVTIMEO,
    SO_SNDTIMEO) after `seconds` without progress. With a Python timeout instead, CPython polls before
    every recv and send: two more syscalls, and GIL hand-offs, per request. A timed-out call fails
    with EAGAIN (BlockingIOError), reported as a timeout. Not for TLS: the ssl module takes EAGAIN on a
    blocking socket for a protocol error."""
    sock.settimeout(None)
    whole = int(seconds)
    interval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, interval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, interval)


def _receive_into_file(sock: socket.socket, fd: int, offset: int, size: int) -> None:
    """Bytes [offset, size) of `fd` from a TLS socket (no splice: the bytes need decrypting), through
    one buffer."""
    buffer = memoryview(bytearray(min(RECV_SIZE, size - offset)))
    while offset < size:
        got = sock.recv_into(buffer, min(len(buffer), size - offset))
        if not got:
            raise _CutShort()
        write_file(fd, buffer[:got], offset)
        offset += got


def _failure_name(exc: BaseException) -> str:
    """How a transport failure is named in messages: EAGAIN on a blocking socket is its kernel
    timeout running out (_kernel_timeouts)."""
    return "TimeoutError" if isinstance(exc, BlockingIOError) else exc.__class__.__name__


def _split_host(host: str, default_port: int) -> tuple[str, int]:
    """("name", port) of a Host value: name, name:port, [v6] or [v6]:port."""
    if host.startswith("["):
        end = host.index("]")
        rest = host[end + 1:]
        return host[1:end], int(rest[1:]) if rest.startswith(":") else default_port
    name, sep, port = host.rpartition(":")
    return (name, int(port)) if sep else (host, default_port)


def _request_head(method: str, target: str, headers: Mapping[str, str]) -> bytes:
    """The request line and headers, ready to send. A value with a line break is refused (it would
    smuggle a header or a second request in)."""
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    for name, value in headers.items():
        if "\n" in value or "\r" in value:
            raise InvalidArgument(f"header {name} has a line break")
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def _keeps_alive(headers: Mapping[str, str], http10: bool) -> bool:
    """Whether the connection may carry the next request after this answer."""
    connection = headers.get("Connection", "").lower()
    return "close" not in connection and (not http10 or "keep-alive" in connection)


def _parse_head(head: bytes) -> tuple[int, bool, AnswerHeaders]:
    """(status, HTTP/1.0?, headers) of an answer head."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise _Malformed("not an HTTP/1.x status line")
    headers = AnswerHeaders()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name[-1] in " \t" or line[0] in " \t":
            raise _Malformed("bad header line")
        headers[name.lower()] = value.strip(" \t")
    return int(code), version == "HTTP/1.0", headers


class LeanClient:
    """Connections are kept alive in one pool per client, not per thread: FUSE callbacks run on
    libfuse's threads, where ctypes makes a new Python thread state (and so a new threading.local)
    for every call, so a per-thread connection would last one request."""

    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self._idle: dict[tuple[str, str], list[_Connection]] = {}
        self._idle_lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        self._tls_lock = threading.Lock()

    def _context(self) -> ssl.SSLContext:
        with self._tls_lock:
            if self._tls is None:
                cafile = self.settings.verify if isinstance(self.settings.verify, str) else certifi.where()
                self._tls = ssl.create_default_context(cafile=cafile)  # verifies chain and host name
            return self._tls

    def open_connection(self, scheme: str, host: str) -> _Connection:
        """A new connection (TLS handshake done), with the read timeout set."""
        name, port = _split_host(host, 443 if scheme == "https" else 80)
        sock = socket.create_connection((name, port), timeout=self.settings.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._context().wrap_socket(sock, server_hostname=name)
                sock.settimeout(self.settings.read_timeout)
            elif self.settings.read_timeout and self.settings.read_timeout > 0:
                _kernel_timeouts(sock, self.settings.read_timeout)
            else:
                sock.settimeout(self.settings.read_timeout)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)

    def _take(self, scheme: str, host: str) -> _Connection | None:
        """The connection to `host` that was idle the shortest time, if any."""
        with self._idle_lock:
            idle = self._idle.get((scheme, host))
            return idle.pop() if idle else None

    def _give_back(self, scheme: str, host: str, conn: _Connection) -> None:
        with self._idle_lock:
            idle = self._idle.setdefault((scheme, host), [])
            if len(idle) < self.settings.pool_size:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close the idle connections (ones in use close when their request ends)."""
        with self._idle_lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for conn in connections:
                conn.close()

    def exchange(self, method: str, scheme: str, host: str, target: str, headers: Mapping[str, str],
                 body: bytes | FileRegion = b"") -> LeanAnswer:
        """One request and its whole answer. `method` must be idempotent (S3's are, for one key and
        body): a kept-alive connection that turns out closed by the server is retried once on a fresh
        one, as that is not a failure of the request. Other transport failures are Transient."""
        return self._round_trip(method, scheme, host, target, headers, body,
                                lambda conn: self._answer(conn, method))

    def get_into(self, scheme: str, host: str, target: str, headers: Mapping[str, str],
                 files: Sequence[tuple[int, int]]) -> LeanAnswer | None:
        """A GET whose body goes into local files: its first files[0][1] bytes at the start of file
        descriptor files[0][0], the next files[1][1] into files[1][0], and so on (a ranged read into
        block-cache files). For a 206 answer of exactly that many bytes, the answer comes back with
        empty content. On plain HTTP the bytes move socket -> pipe -> file with splice(2), never
        through Python's memory (the copy into user space, the page faults of fresh buffers and the
        copy back out are what a cold sequential read through a mount spends its CPU on); over TLS
        they go through one buffer of RECV_SIZE.

        An error answer (>= 300) comes back whole, as from exchange(). Any other answer (a 200 with
        the whole object: the server ignored Range) returns None with the connection dropped unread,
        for the caller to read another way. Transport failures are Transient; a failed write to a
        file raises LocalWriteError and is not retried here."""
        total = sum(size for _fd, size in files)

        def read(conn: _Connection) -> tuple[LeanAnswer | None, bool]:
            conn.recv_size = HEAD_RECV   # so that little of the body is read into memory with the head
            try:
                status, answer_headers, keep = self._answer_head(conn)
            finally:
                conn.recv_size = SCRATCH
            if status >= 300:
                return self._answer_body(conn, "GET", status, answer_headers, keep)
            length = answer_headers.get("Content-Length", "")
            if status != 206 or length != str(total) \
                    or "chunked" in answer_headers.get("Transfer-Encoding", "").lower():
                return None, False
            for fd, size in files:
                _body_into_file(conn, fd, size)
            return LeanAnswer(status, answer_headers, b""), keep

        return self._round_trip("GET", scheme, host, target, headers, b"", read)

    def _round_trip(self, method: str, scheme: str, host: str, target: str, headers: Mapping[str, str],
                    body: bytes | FileRegion, read: Callable[[_Connection], tuple[_T, bool]]) -> _T:
        """Send one request on an idle connection (or a new one) and `read` its answer (which says
        whether the connection may be kept), with exchange()'s retry of a connection found closed."""
        head = _request_head(method, target, headers)
        for attempt in (1, 2):
            conn = self._take(scheme, host) if attempt == 1 else None
            reused = conn is not None
            try:
                if conn is None:
                    conn = self.open_connection(scheme, host)
                if isinstance(body, FileRegion):
                    conn.sock.sendall(head)
                    _send_region(conn.sock, body)
                elif len(body) <= INLINE_SEND:
                    conn.sock.sendall(head + body)
                else:
                    conn.sock.sendall(head)
                    conn.sock.sendall(body)
                answer, keep = read(conn)
            except BaseException as exc:
                if conn is not None:
                    conn.close()
                if isinstance(exc, (_ClosedBeforeAnswer, ConnectionResetError, BrokenPipeError)) \
                        and reused and attempt == 1:
                    continue  # the server closed an idle connection: once more on a new one
                raise self._failure(exc, method, scheme, host) from None
            if keep:
                self._give_back(scheme, host, conn)
            else:
                conn.close()
            return answer
        raise AssertionError("unreachable")

    def _failure(self, exc: BaseException, method: str, scheme: str, host: str) -> BaseException:
        """The exception to raise for a failed exchange: transport failures are Transient."""
        if isinstance(exc, ssl.SSLError):
            return tls_error(exc, self.settings, method, f"{scheme}://{host}/")
        if isinstance(exc, ProtocolError):
            return ProtocolError(f"{method} {scheme}://{host}: {exc}")
        if isinstance(exc, (OSError, _Malformed, _CutShort, _ClosedBeforeAnswer, ValueError)):
            return Transient(f"{method} {scheme}://{host}: {_failure_name(exc)}")
        return exc   # LocalWriteError, InvalidArgument, KeyboardInterrupt, ...

    @staticmethod
    def _answer_head(conn: _Connection) -> tuple[int, AnswerHeaders, bool]:
        """(status, headers, whether the connection may be kept) of the final answer."""
        for interim in range(8):   # a few 1xx interim answers at most
            head = conn.read_until(b"\r\n\r\n", HEAD_MAX, answer_start=interim == 0)
            status, http10, headers = _parse_head(head)
            if status >= 200:
                return status, headers, _keeps_alive(headers, http10)
        raise _Malformed("too many interim answers")

    @staticmethod
    def _answer(conn: _Connection, method: str) -> tuple[LeanAnswer, bool]:
        """The answer and whether the connection may be kept."""
        status, headers, keep = LeanClient._answer_head(conn)
        return LeanClient._answer_body(conn, method, status, headers, keep)

    @staticmethod
    def _answer_body(conn: _Connection, method: str, status: int, headers: AnswerHeaders,
                     keep: bool) -> tuple[LeanAnswer, bool]:
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


# -- many HEADs from one thread -----------------------------------------------------------------------


class _HeadSlot:
    """One connection of head_many() and the request it is waiting on."""

    def __init__(self) -> None:
        self.conn: _Connection | None = None   # opened when the first request goes out
        self.index: int | None = None   # the request in flight
        self.resent = False             # in flight a second time after the connection dropped


def head_many(client: LeanClient, scheme: str, host: str, requests: list[tuple[str, Mapping[str, str]]],
              parallel: int) -> list[LeanAnswer | StoreError]:
    """HEAD every (target, headers) of `requests` on `host`, `parallel` at a time over as many fresh
    connections, all from the calling thread: the answer (any status) or the Transient exception of
    each, in order.

    Why: the stat-ahead of a listing makes thousands of HEADs, and 32 threads each waiting on one
    costs more CPU in thread switches and GIL hand-offs than the requests themselves (about 200 us a
    HEAD against SeaweedFS, where the server needs about 170). Here a selector waits for whichever
    answer comes first. A connection the server closes is reopened and its request sent again once
    (HEAD is idempotent); failures are returned, for the caller to retry its usual way.
    """
    results: list[LeanAnswer | StoreError | None] = [None] * len(requests)
    pending = iter(range(len(requests)))
    selector = selectors.DefaultSelector()
    slots: list[_HeadSlot] = []

    def fail(index: int, exc: Exception) -> None:
        if isinstance(exc, ssl.SSLError):
            results[index] = tls_error(exc, client.settings, "HEAD", f"{scheme}://{host}/")
        elif isinstance(exc, InvalidArgument):
            results[index] = exc
        else:
            results[index] = Transient(f"HEAD {scheme}://{host}: {_failure_name(exc)}")

    def send_next(slot: _HeadSlot, index: int | None = None) -> None:
        """Send request `index` (or the next pending one) on `slot`, opening a connection if needed."""
        while True:
            if index is None:
                index = next(pending, None)
                if index is None:
                    slot.index = None
                    return
            try:
                if slot.conn is None:
                    slot.conn = client.open_connection(scheme, host)
                    selector.register(slot.conn.sock, selectors.EVENT_READ, slot)
                slot.conn.sock.sendall(_request_head("HEAD", *requests[index]))
                slot.index = index
                return
            except (OSError, InvalidArgument) as exc:
                drop(slot)
                fail(index, exc)
                index = None

    def drop(slot: _HeadSlot) -> None:
        if slot.conn is not None:
            try:
                selector.unregister(slot.conn.sock)
            except (KeyError, ValueError):
                pass
            slot.conn.close()
            slot.conn = None

    def answered(slot: _HeadSlot) -> bool:
        """Parse a complete answer head from the slot's buffer, if there is one."""
        buffer = slot.conn.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > HEAD_MAX:
                raise _Malformed("answer head too long")
            return False
        head = bytes(buffer[:end])
        del buffer[:end + 4]
        status, http10, headers = _parse_head(head)
        if status < 200:
            return answered(slot)   # an interim answer: the real one follows
        results[slot.index] = LeanAnswer(status, headers, b"")
        if not _keeps_alive(headers, http10):
            drop(slot)
        return True

    try:
        for _ in range(min(parallel, len(requests))):
            slot = _HeadSlot()
            slots.append(slot)
            send_next(slot)
        while any(slot.index is not None for slot in slots):
            ready = selector.select(timeout=client.settings.read_timeout)
            if not ready:   # nothing answered within the read timeout: the server is stuck; fail
                # what is in flight and send nothing more (the caller retries its usual way)
                pending = iter(())
                for slot in slots:
                    if slot.index is not None:
                        fail(slot.index, socket.timeout())
                        drop(slot)
                        slot.index = None
                continue
            for key, _events in ready:
                slot = key.data
                if slot.conn is None or slot.index is None:
                    continue
                try:
                    if not slot.conn.fill():
                        raise _ClosedBeforeAnswer() if not slot.conn.buffer else _CutShort()
                    sock = slot.conn.sock
                    while isinstance(sock, ssl.SSLSocket) and sock.pending():   # decrypted, not signalled
                        slot.conn.fill()
                    if answered(slot):
                        slot.resent = False
                        send_next(slot)
                except _ClosedBeforeAnswer:
                    index, again = slot.index, not slot.resent
                    drop(slot)
                    if again:   # the server dropped a kept-alive connection: once more, afresh
                        slot.resent = True
                        send_next(slot, index)
                    else:
                        fail(index, ConnectionResetError())
                        slot.resent = False
                        send_next(slot)
                except (OSError, _Malformed, _CutShort, ValueError) as exc:
                    index = slot.index
                    drop(slot)
                    fail(index, exc)
                    slot.resent = False
                    send_next(slot)
    finally:
        for slot in slots:
            drop(slot)
        selector.close()
    return [result if result is not None else Transient(f"HEAD {scheme}://{host}: not sent")
            for result in results]
