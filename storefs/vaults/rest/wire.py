"""The vault REST API's wire mapping for one account: paths, the request of a call (dialect headers,
Content-Length), its signature (Dialect.sign, per try, so each try carries a fresh one), and the one
error hook, all through one WireClient.

An error answer is decoded by `dialect.error_from_answer`. The few statuses that mean something
only to a dialect for one operation (moto's 500 for a missing job) are taken as answers for that
operation and decoded with the operation in hand, inside the retried try like any other error.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar
from urllib.parse import parse_qsl, quote

from ... import __version__
from ...errors import StoreError
from ...wire.answer import Answer, StreamedAnswer
from ...wire.auth.sigv4 import build_query
from ...wire.body import EMPTY, Body
from ...wire.client import ERROR_BODY_MAX, Request, WireClient
from ...wire.ranges import RangeRead
from ...wire.retry import NO_RETRY, RetryPolicy
from ...wire.settings import HttpSettings
from .dialect import Dialect, decode_answer

T = TypeVar("T")


class RestWire:
    """The requests of one CAS or Glacier account. Thread-safe: the dialect's signer is stateless or
    locks its caches, and the client pools its connections."""

    def __init__(self, remote: str, dialect: Dialect, *, scheme: str, netloc: str, account: str,
                 settings: HttpSettings, retry: RetryPolicy) -> None:
        self.dialect = dialect
        self.base = f"{scheme}://{netloc}"
        self.netloc = netloc
        self.account = account
        self.client = WireClient(remote, settings, retry, self._decode, sign=self._sign,
                                 user_agent=f"storefs/{__version__}")

    def close(self) -> None:
        self.client.close()

    def path(self, *segments: str) -> str:
        """The wire path /<account>/vaults/... with every segment percent-encoded."""
        return "/" + "/".join(quote(s, safe="") for s in (self.account, "vaults", *segments))

    def request(self, method: str, wire_path: str, *, what: str, params: Sequence[tuple[str, str]] = (),
                headers: Mapping[str, str] | None = None, body: Body | None = None) -> Request:
        """The request of one call. A call with a body (even an empty one) declares its length, which
        CAS signs."""
        all_headers = {"Host": self.netloc, **self.dialect.extra_headers, **(headers or {})}
        if body is not None:
            all_headers["Content-Length"] = str(body.size)
        return Request(method, self.base, wire_path, build_query(params), all_headers, body or EMPTY, what)

    def _sign(self, request: Request) -> None:
        # The payload hash: the one the call declares (a streamed body cannot be hashed again), else
        # the body's own.
        payload_hash = request.headers.get(self.dialect.h("content-sha256")) or request.body.sha256_hex()
        params = parse_qsl(request.query, keep_blank_values=True)
        request.headers.update(self.dialect.sign(request.method, self.netloc, request.path, params,
                                                 request.headers, payload_hash))
        # Unsigned: the bytes of an archive are the bytes stored, never re-encoded on the way.
        request.headers.setdefault("Accept-Encoding", "identity")

    def _decode(self, answer: Answer, what: str) -> StoreError:
        return decode_answer(self.dialect, answer, what)

    # -- calls -------------------------------------------------------------------------------------

    def call(self, request: Request, op: str) -> Answer:
        """The request's whole answer, signed, sent and retried as one."""
        quirks = self.dialect.quirk_statuses(op)
        if not quirks:
            return self.client.call(request)
        once = self.client.attempt(request, accept=quirks)

        def attempt() -> Answer:
            answer = once()
            if answer.status >= 300:
                raise decode_answer(self.dialect, answer, request.what, op)
            return answer

        # A stream that cannot be rewound is sent once, as client.call() would.
        return self.client.retried(attempt, request.what, None if request.body.retryable else NO_RETRY)

    def stream(self, request: Request, op: str, read: Callable[[StreamedAnswer], T],
               policy: RetryPolicy | None = None) -> T:
        """`read` applied to the streamed answer inside the retried try (client.stream)."""
        quirks = self.dialect.quirk_statuses(op)

        def checked(answer: StreamedAnswer) -> T:
            if answer.status >= 300:
                content = answer.read(ERROR_BODY_MAX)
                raise decode_answer(self.dialect, Answer(answer.status, answer.headers, content), request.what, op)
            return read(answer)

        return self.client.stream(request, checked, accept=quirks, policy=policy)

    def read_range(self, request: Request, start: int, end: int) -> RangeRead:
        """Bytes [start, end) by the wire layer's range rules (servers that answer ranges)."""
        return self.client.read_range(request, start, end)
