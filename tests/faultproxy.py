"""A fault-injecting HTTP/1.1 reverse proxy for tests, on 127.0.0.1 only.

    with FaultProxy(upstream_port, rate=0.1, seed=1, profile="s3") as proxy:
        section["endpoint"] = proxy.url          # storefs talks to the proxy
        ...
        print(proxy.stats())                     # {"requests": …, "faults": {"http500": …, …}}

Every request is forwarded to `127.0.0.1:upstream_port` on a connection of its own (one upstream
connection per client connection, keep-alive on both sides). Bodies are streamed both ways in 64 KiB
pieces, Content-Length and chunked framing alike; only a response that a fault rewrites (garbled,
truncated or mis-sized) is read whole first. Host and every other header pass unchanged, so signatures
over the Host header stay valid.

On a share `rate` of requests (seeded RNG) one fault is injected, drawn by `weights` from KINDS:

- before the request reaches the server (it is never processed):
  `http500`, `http503`, `throttle` (the profile's "slow down" answer: S3 `503 SlowDown`, COS `-71`,
  WCS/UFile `429`), `reset_upload` (the connection is reset while the client is still sending the body;
  requests without a body get `reset_response` instead);
- after the server processed it (the client cannot know whether it took effect):
  `reset_response` (RST after the head and half the body, or before anything for an empty body),
  `stall` (half the body, or nothing, then silence for `stall_seconds`, then close), `truncate` (correct
  Content-Length, half the body, then FIN), `wrong_length` (a Content-Length half the real one and that
  many bytes, or a larger one than an empty body has, then close), `garble` (status 200 kept, the JSON/XML
  body cut in half and followed by junk so no parser accepts it; only bodies whose Content-Type says JSON
  or XML, others get `truncate`). Object data in a 200 with a correct length is never altered: no client
  can detect that without checksums.

`down()` makes the backend disappear (new connections are reset at once, open ones are cut), `up()`
brings it back, `outage(seconds)` does both on a timer. `stop()` closes everything and joins every thread
with a bounded wait. Counts are per fault kind as actually applied (after fallbacks).
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import random
import socket
import struct
import threading
import time
from typing import Callable, Optional

HOST = "127.0.0.1"
PIECE = 64 * 1024
MAX_BUFFERED = 64 << 20          # a body rewritten by a fault is read whole; bigger ones are cut instead
IDLE_TIMEOUT = 120.0             # a silent client connection is closed after this (a bound, not a feature)

PRE_KINDS = ("http500", "http503", "throttle", "reset_upload")
POST_KINDS = ("reset_response", "stall", "truncate", "wrong_length", "garble")
KINDS = PRE_KINDS + POST_KINDS
DEFAULT_WEIGHTS = {kind: 1.0 for kind in KINDS}


@dataclasses.dataclass(frozen=True)
class ErrorAnswer:
    status: int
    body: bytes
    content_type: str


def _xml_error(status: int, code: str, message: str) -> ErrorAnswer:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>faultproxy</RequestId></Error>").encode()
    return ErrorAnswer(status, body, "application/xml")


def _json(status: int, text: str) -> ErrorAnswer:
    return ErrorAnswer(status, text.encode(), "application/json")


# What each protocol answers for a server error, an unavailable service and throttling (see PROTOCOLS.md
# and storefs/providers/*.py: S3 codes; COS v4 `code` -71 (503); WCS `{"code","message"}` 429/503/509;
# UFile `{"RetCode","ErrMsg"}` 429/503).
PROFILES: dict[str, dict[str, ErrorAnswer]] = {
    "s3": {
        "http500": _xml_error(500, "InternalError", "We encountered an internal error. Please try again."),
        "http503": _xml_error(503, "ServiceUnavailable", "Please reduce your request rate."),
        "throttle": _xml_error(503, "SlowDown", "Please reduce your request rate."),
    },
    "cos": {
        "http500": _json(500, '{"code":-5997,"message":"backend error (faultproxy)","request_id":"fp"}'),
        "http503": _json(503, '{"code":-196,"message":"service unavailable (faultproxy)","request_id":"fp"}'),
        "throttle": _json(503, '{"code":-71,"message":"too many requests (faultproxy)","request_id":"fp"}'),
    },
    "wcs": {
        "http500": _json(500, '{"code":"500","message":"internal error (faultproxy)"}'),
        "http503": _json(503, '{"code":"503","message":"service unavailable (faultproxy)"}'),
        "throttle": _json(429, '{"code":"429","message":"too many requests (faultproxy)"}'),
    },
    "ufile": {
        "http500": _json(500, '{"RetCode":-1,"ErrMsg":"internal error (faultproxy)"}'),
        "http503": _json(503, '{"RetCode":-1,"ErrMsg":"service unavailable (faultproxy)"}'),
        "throttle": _json(429, '{"RetCode":-1,"ErrMsg":"too many requests (faultproxy)"}'),
    },
    "generic": {
        "http500": ErrorAnswer(500, b"internal error (faultproxy)\n", "text/plain"),
        "http503": ErrorAnswer(503, b"service unavailable (faultproxy)\n", "text/plain"),
        "throttle": ErrorAnswer(429, b"too many requests (faultproxy)\n", "text/plain"),
    },
}

_REASONS = {200: "OK", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


class _Closed(Exception):
    """The peer went away (or we were stopped): end this connection quietly."""


@dataclasses.dataclass
class Message:
    """The head of a request or response; the body is streamed separately."""

    start: str                                   # request line or status line
    headers: list[tuple[str, str]]

    def get(self, name: str) -> Optional[str]:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def without(self, *names: str) -> list[tuple[str, str]]:
        drop = {n.lower() for n in names}
        return [(k, v) for k, v in self.headers if k.lower() not in drop]

    def chunked(self) -> bool:
        return "chunked" in (self.get("Transfer-Encoding") or "").lower()

    def length(self) -> Optional[int]:
        value = self.get("Content-Length")
        return int(value) if value is not None and value.strip().isdigit() else None

    def encode(self, headers: Optional[list[tuple[str, str]]] = None) -> bytes:
        lines = [self.start] + [f"{k}: {v}" for k, v in (self.headers if headers is None else headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _read_head(reader) -> Optional[Message]:
    """The next message head, or None at a clean end of stream before one starts."""
    line = reader.readline(65537)
    while line in (b"\r\n", b"\n"):      # stray CRLF between messages is allowed (RFC 9112 2.2)
        line = reader.readline(65537)
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise _Closed("head line cut short")
    headers: list[tuple[str, str]] = []
    while True:
        raw = reader.readline(65537)
        if not raw or not raw.endswith(b"\n"):
            raise _Closed("headers cut short")
        if raw in (b"\r\n", b"\n"):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
        if len(headers) > 200:
            raise _Closed("too many headers")
    return Message(line.decode("latin-1").rstrip("\r\n"), headers)


def _body_pieces(reader, head: Message, *, has_body: bool, until_close: bool):
    """The body of `head` as raw wire pieces (chunk framing kept) and as payload bytes: yields
    (wire, payload) pairs. Ends at the message's end; raises _Closed if the stream ends first."""
    if not has_body:
        return
    if head.chunked():
        while True:
            size_line = reader.readline(4096)
            if not size_line.endswith(b"\n"):
                raise _Closed("chunk size cut short")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                trailer = b""
                while True:
                    line = reader.readline(65537)
                    if not line.endswith(b"\n"):
                        raise _Closed("trailer cut short")
                    trailer += line
                    if line in (b"\r\n", b"\n"):
                        break
                yield size_line + trailer, b""
                return
            data = _read_exact(reader, size)
            crlf = _read_exact(reader, 2)
            yield size_line + data + crlf, data
        return
    length = head.length()
    if length is not None:
        remaining = length
        while remaining > 0:
            data = reader.read(min(PIECE, remaining))
            if not data:
                raise _Closed("body cut short")
            remaining -= len(data)
            yield data, data
        return
    if until_close:
        while True:
            data = reader.read1(PIECE) if hasattr(reader, "read1") else reader.read(PIECE)
            if not data:
                return
            yield data, data


def _read_exact(reader, size: int) -> bytes:
    data = reader.read(size)
    if len(data) != size:
        raise _Closed("cut short")
    return data


def _reset(sock: Optional[socket.socket]) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed server or a middlebox does."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _close(sock: Optional[socket.socket]) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    """See the module docstring. Thread-safe; every public method may be called from any thread."""

    def __init__(self, upstream_port: int, *, rate: float = 0.0, seed: int = 0, profile: str = "generic",
                 weights: Optional[dict[str, float]] = None, stall_seconds: float = 5.0,
                 when: Optional[Callable[[str, str], bool]] = None) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r} (known: {', '.join(PROFILES)})")
        self.upstream_port = upstream_port
        self.profile = profile
        self.stall_seconds = stall_seconds
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._rate = rate
        self._weights = dict(DEFAULT_WEIGHTS)
        self._when = when
        if weights is not None:
            self.configure(weights=weights)
        self._requests = 0
        self._forwarded = 0
        self._methods: collections.Counter[str] = collections.Counter()
        # The last exchanges (method, target without query, status or None, fault or None), for debugging.
        self.history: collections.deque = collections.deque(maxlen=5000)
        self._faults: collections.Counter[str] = collections.Counter()
        self._stopping = threading.Event()
        self._down = threading.Event()
        self._conns: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._timers: list[threading.Timer] = []
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"faultproxy-{self.port}", daemon=True)
        self._acceptor.start()

    # -- configuration and figures ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def configure(self, *, rate: Optional[float] = None, weights: Optional[dict[str, float]] = None,
                  when: Optional[Callable[[str, str], bool]] = ..., stall_seconds: Optional[float] = None,
                  seed: Optional[int] = None) -> None:
        """Change the fault mix while running. `weights` replaces the whole mix (missing kinds: 0)."""
        with self._lock:
            if seed is not None:
                self._rng.seed(seed)
            if rate is not None:
                if not 0.0 <= rate <= 1.0:
                    raise ValueError("rate must be in [0, 1]")
                self._rate = rate
            if weights is not None:
                unknown = set(weights) - set(KINDS)
                if unknown:
                    raise ValueError(f"unknown fault kind(s) {sorted(unknown)} (known: {', '.join(KINDS)})")
                if not any(w > 0 for w in weights.values()):
                    raise ValueError("at least one fault kind needs a positive weight")
                self._weights = {kind: float(weights.get(kind, 0.0)) for kind in KINDS}
            if when is not ...:
                self._when = when
            if stall_seconds is not None:
                self.stall_seconds = stall_seconds

    def stats(self) -> dict:
        with self._lock:
            return {"requests": self._requests, "forwarded": self._forwarded, "methods": dict(self._methods),
                    "faults": dict(sorted(self._faults.items())), "faults_total": sum(self._faults.values())}

    def reset_stats(self) -> None:
        with self._lock:
            self._requests = self._forwarded = 0
            self._faults.clear()
            self._methods.clear()
            self.history.clear()

    # -- outages ---------------------------------------------------------------------------------

    def down(self) -> None:
        """The backend disappears: open connections are cut, new ones reset as soon as accepted."""
        self._down.set()
        with self._lock:
            conns = list(self._conns)
        for sock in conns:
            _reset_quietly(sock)

    def up(self) -> None:
        self._down.clear()

    @property
    def is_down(self) -> bool:
        return self._down.is_set()

    def outage(self, seconds: float) -> None:
        """down() now and up() after `seconds` (on a timer; stop() cancels it)."""
        self.down()
        timer = threading.Timer(seconds, self.up)
        timer.daemon = True
        with self._lock:
            self._timers.append(timer)
        timer.start()

    # -- lifecycle -------------------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, cut every connection and join every thread (bounded)."""
        self._stopping.set()
        with self._lock:
            timers, conns = list(self._timers), list(self._conns)
        for timer in timers:
            timer.cancel()
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in conns:
            _reset_quietly(sock)
        deadline = time.monotonic() + timeout
        self._acceptor.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()] + (["acceptor"] if self._acceptor.is_alive() else [])
        if alive:
            raise RuntimeError(f"faultproxy threads still running after stop(): {alive}")

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self._down.is_set() or self._stopping.is_set():
                _reset(client)
                continue
            thread = threading.Thread(target=self._serve, args=(client,), name=f"faultproxy-conn-{self.port}",
                                      daemon=True)
            with self._lock:
                self._threads = {t for t in self._threads if t.is_alive()}
                self._threads.add(thread)
                self._conns.add(client)
            thread.start()

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(sock)
        if add and (self._down.is_set() or self._stopping.is_set()):
            _reset_quietly(sock)    # raced with down()/stop(): cut it too

    def _draw(self, method: str, target: str) -> Optional[str]:
        with self._lock:
            self._requests += 1
            self._methods[method] += 1
            if self._rate <= 0 or (self._when is not None and not self._when(method, target)):
                return None
            if self._rng.random() >= self._rate:
                return None
            kinds = [k for k in KINDS if self._weights[k] > 0]
            return self._rng.choices(kinds, weights=[self._weights[k] for k in kinds])[0]

    def _count(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    def _note(self, method: str, target: str, status: Optional[int], kind: Optional[str]) -> None:
        self.history.append((method, target.split("?")[0], status, kind))

    def _serve(self, client: socket.socket) -> None:
        upstream: Optional[socket.socket] = None
        up_reader = None
        try:
            client.settimeout(IDLE_TIMEOUT)
            # Heads and bodies go out in separate writes: without NODELAY, Nagle plus delayed ACKs
            # would add ~40 ms to every exchange.
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = client.makefile("rb", buffering=PIECE)
            while not self._stopping.is_set():
                head = _read_head(reader)
                if head is None:
                    return
                if upstream is None:
                    upstream = socket.create_connection((HOST, self.upstream_port), timeout=IDLE_TIMEOUT)
                    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self._track(upstream, True)
                    up_reader = upstream.makefile("rb", buffering=PIECE)
                keep, upstream_ok = self._exchange(head, reader, client, upstream, up_reader)
                if not upstream_ok:
                    self._track(upstream, False)
                    _close(upstream)
                    upstream = up_reader = None
                if not keep:
                    return
        except (_Closed, OSError, ValueError):
            pass                      # a peer went away, or we cut it (down/stop/fault): nothing to report
        finally:
            if upstream is not None:
                self._track(upstream, False)
                _close(upstream)
            self._track(client, False)
            _close(client)

    def _exchange(self, head: Message, reader, client: socket.socket, upstream: socket.socket,
                  up_reader) -> tuple[bool, bool]:
        """One request/response. Returns (keep the client connection, keep the upstream connection)."""
        method, target = (head.start.split(" ") + ["", ""])[:2]
        request_has_body = head.chunked() or bool(head.length())
        kind = self._draw(method, target)
        if (head.get("Expect") or "").lower() == "100-continue":
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            head.headers = head.without("Expect")
        body = _body_pieces(reader, head, has_body=request_has_body, until_close=False)

        if kind in ("http500", "http503", "throttle"):
            for _ in body:            # drain the request so the connection stays usable
                pass
            self._count(kind)
            self._note(method, target, None, kind)
            answer = PROFILES[self.profile][kind]
            client.sendall(_simple_response(answer))
            return _client_keeps(head), True
        if kind == "reset_upload":
            if request_has_body:
                self._count(kind)
                self._note(method, target, None, kind)
                total = head.length() or 0
                sent = 0
                for wire, _ in body:   # forward about half, then cut both sides mid-body
                    upstream.sendall(head.encode() if sent == 0 else b"")
                    upstream.sendall(wire)
                    sent += len(wire)
                    if sent * 2 >= total:
                        break
                _reset(client)
                raise _Closed("reset while uploading")
            kind = "reset_response"

        upstream.sendall(head.encode())
        for wire, _ in body:
            upstream.sendall(wire)
        response = _read_head(up_reader)
        while response is not None and response.start.split(" ")[1:2] and response.start.split(" ")[1].startswith("1"):
            response = _read_head(up_reader)   # interim 1xx: we answered 100-continue ourselves
        if response is None:
            raise _Closed("upstream closed without an answer")
        with self._lock:
            self._forwarded += 1
        status = int(response.start.split(" ")[1])
        has_body = method != "HEAD" and status not in (204, 304) and not (100 <= status < 200)
        until_close = has_body and not response.chunked() and response.length() is None
        pieces = _body_pieces(up_reader, response, has_body=has_body, until_close=until_close)
        if kind is None:
            self._note(method, target, status, None)
            client.sendall(response.encode())
            for wire, _ in pieces:
                client.sendall(wire)
            keep = _client_keeps(head) and not until_close and \
                (response.get("Connection") or "").lower() != "close"
            return keep, keep
        if not has_body:
            # A bodiless answer (HEAD, 204, 304) carries sizes the client cannot check against a body: a
            # changed Content-Length there would be undetectable corruption. Only cut such answers.
            kind = kind if kind in ("reset_response", "stall") else "reset_response"
        self._post_fault(kind, response, pieces, client, status, (method, target))
        return False, False

    def _post_fault(self, kind: str, response: Message, pieces, client: socket.socket, status: int,
                    request: tuple[str, str]) -> None:
        """Answer the processed request with fault `kind`; the connections are closed afterwards."""
        ctype = (response.get("Content-Type") or "").lower()
        if kind == "garble" and not (status == 200 and ("json" in ctype or "xml" in ctype)):
            kind = "truncate"
        payload = b""
        for _, data in pieces:             # read whole: we rewrite framing and lengths below
            payload += data
            if len(payload) > MAX_BUFFERED:
                break
        if not payload and kind in ("truncate", "garble"):
            kind = "wrong_length"
        self._count(kind)
        self._note(*request, status, kind)
        framing = response.without("Content-Length", "Transfer-Encoding", "Connection")
        half = payload[: len(payload) // 2]
        if kind == "reset_response":
            if payload:
                client.sendall(_with_length(response, framing, len(payload)) + half)
            _reset(client)
        elif kind == "stall":
            if payload:
                client.sendall(_with_length(response, framing, len(payload)) + half)
            self._stopping.wait(self.stall_seconds)   # silence past the client's read timeout
            _close(client)
        elif kind == "truncate":
            client.sendall(_with_length(response, framing, len(payload)) + half)
            _close(client)
        elif kind == "wrong_length":
            if payload:
                client.sendall(_with_length(response, framing, len(half)) + half)
            else:
                client.sendall(_with_length(response, framing, 16))
            _close(client)
        elif kind == "garble":
            junk = half + b"\x00\xff<<garbled by faultproxy>>{[\"" + bytes(range(1, 32))
            client.sendall(_with_length(response, framing, len(junk)) + junk)
            _close(client)
        raise _Closed(kind)


def _reset_quietly(sock: socket.socket) -> None:
    """Cut a connection another thread is using: shutdown wakes its blocked recv; RST on close."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _with_length(response: Message, headers: list[tuple[str, str]], length: int) -> bytes:
    return response.encode(headers + [("Content-Length", str(length)), ("Connection", "close")])


def _simple_response(answer: ErrorAnswer) -> bytes:
    reason = _REASONS.get(answer.status, "Error")
    head = (f"HTTP/1.1 {answer.status} {reason}\r\nContent-Type: {answer.content_type}\r\n"
            f"Content-Length: {len(answer.body)}\r\nX-Faultproxy: injected\r\n\r\n")
    return head.encode("latin-1") + answer.body


def _client_keeps(head: Message) -> bool:
    connection = (head.get("Connection") or "").lower()
    return "close" not in connection and not head.start.endswith("HTTP/1.0")
