"""The wire layer's one way to make a request: a `Request`, signed afresh for every try by the
provider's signer, sent by a transport, answered with the one answer type (`wire.answer`), error
answers decoded by the provider's one error hook, and the whole try retried on Transient under the
remote's RetryPolicy.

A provider is then its wire mapping (which request a store call is), its signer, its error decoder and
its parsing of answers. Nothing here knows the store contract.

Transports: every provider has the requests transport; a provider opened with `fast=True` (S3) also
has the fast one (wire.transport_fast), which the client uses for every request whose body is in
memory or a region of a file and whose answer is read whole, for ranged reads into local files and
for batches of HEADs. Streamed bodies and answers read as they arrive go over requests.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Collection, Sequence, TypeVar

from ..errors import RemoteChanged, StoreError, Transient
from .answer import Answer, AnswerHeaders, StreamedAnswer
from .body import EMPTY, Body
from .ranges import RangeRead, check_exact_range, check_range, range_header, take_range
from .retry import NO_RETRY, RetryPolicy, call_with_retries
from .settings import HttpSettings
from .transport_fast import LeanClient, head_many
from .transport_requests import RequestsTransport

T = TypeVar("T")
ERROR_BODY_MAX = 64 * 1024   # what is read of an error answer for its decoder


@dataclasses.dataclass
class Request:
    """One request as the provider maps it. `base` is where to connect (`scheme://host[:port]`);
    a `Host` header, when set, names the virtual host sent (UFile's bucket host on an endpoint, COS's
    download host). `path` and `query` are already percent-encoded, exactly as sent (and signed)."""

    method: str
    base: str
    path: str = "/"
    query: str = ""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: Body = EMPTY
    what: str = ""   # names the call in messages: "read 'a/b' [0, 10)"

    @property
    def scheme(self) -> str:
        return self.base.partition("://")[0]

    @property
    def host(self) -> str:
        """The Host header's value: the one set, else the host connected to."""
        return self.headers.get("Host") or self.base.partition("://")[2]

    @property
    def target(self) -> str:
        return self.path + (f"?{self.query}" if self.query else "")

    @property
    def url(self) -> str:
        return self.base + self.target

    def copy(self) -> Request:
        # Made once per try of every request: spelled out, as dataclasses.replace costs several
        # times more (it inspects the fields each call).
        return Request(self.method, self.base, self.path, self.query, dict(self.headers), self.body, self.what)


# The provider's signer: adds its signature to a fresh copy of the request (headers or query), once
# per try, so that each try carries a fresh date and signature.
Signer = Callable[[Request], None]
# The provider's one error hook: the StoreError for an answer of status >= 300.
ErrorDecoder = Callable[[Answer, str], StoreError]


def no_signature(request: Request) -> None:
    """For requests whose authority is in the URL already (pre-signed download links)."""


class WireClient:
    """One remote's requests: shared by its stores, safe to use from many threads."""

    def __init__(self, remote: str, settings: HttpSettings, retry: RetryPolicy, decode_error: ErrorDecoder,
                 *, sign: Signer = no_signature, user_agent: str = "", fast: bool = False) -> None:
        self.remote = remote
        self.settings = settings
        self.retry = retry
        self.decode_error = decode_error
        self.sign = sign
        self.user_agent = user_agent
        self.requests = RequestsTransport(settings)
        self.fast = LeanClient(settings) if fast else None

    def close(self) -> None:
        self.requests.close()
        if self.fast is not None:
            self.fast.close()

    # -- building blocks ---------------------------------------------------------------------------

    def signed(self, request: Request, sign: Signer | None = None) -> Request:
        """A fresh copy of `request`, signed, with what every request of ours carries."""
        fresh = request.copy()
        (sign or self.sign)(fresh)
        if self.user_agent:
            fresh.headers.setdefault("User-Agent", self.user_agent)
        return fresh

    def retried(self, fn: Callable[[], T], what: str, policy: RetryPolicy | None = None) -> T:
        """`fn` retried on Transient under the remote's policy (or `policy`)."""
        return call_with_retries(fn, policy or self.retry, what=f"{self.remote}: {what}")

    def _policy(self, request: Request, policy: RetryPolicy | None) -> RetryPolicy:
        if not request.body.retryable:
            return NO_RETRY   # a stream we cannot rewind can be sent once only
        return policy or self.retry

    def _error(self, status: int, headers: AnswerHeaders, content: bytes, what: str) -> StoreError:
        return self.decode_error(Answer(status, headers, content[:ERROR_BODY_MAX]), what)

    # -- whole answers -----------------------------------------------------------------------------

    def call(self, request: Request, *, sign: Signer | None = None, accept: Collection[int] = (),
             policy: RetryPolicy | None = None) -> Answer:
        """The request signed, sent and its whole answer read, retried as one. An answer of status
        >= 300 raises the provider's decoded error, unless its status is in `accept`."""
        return self.retried(self.attempt(request, sign=sign, accept=accept), request.what,
                            self._policy(request, policy))

    def attempt(self, request: Request, *, sign: Signer | None = None,
                accept: Collection[int] = ()) -> Callable[[], Answer]:
        """One try of call(), for callers that must see each try."""
        if self.fast is not None and request.body.stream is None:
            return lambda: self._fast_exchange(self.signed(request, sign), accept)
        return lambda: self._requests_exchange(self.signed(request, sign), accept)

    def _fast_exchange(self, request: Request, accept: Collection[int]) -> Answer:
        assert self.fast is not None
        headers = {"Host": request.host, **request.headers}
        if request.body.size or request.method in ("PUT", "POST"):
            headers["Content-Length"] = str(request.body.size)
        payload = request.body.region if request.body.region is not None else request.body.data
        answer = self.fast.exchange(request.method, request.scheme, request.host, request.target, headers, payload)
        if answer.status >= 300 and answer.status not in accept:
            raise self._error(answer.status, answer.headers, answer.content if request.method != "HEAD" else b"",
                              request.what)
        return Answer(answer.status, answer.headers, answer.content)

    def _requests_exchange(self, request: Request, accept: Collection[int]) -> Answer:
        with self.open(request, accept=accept, signed=True) as answer:
            content = answer.read_decoded() if request.method != "HEAD" else b""
        return Answer(answer.status, answer.headers, content)

    # -- streamed answers --------------------------------------------------------------------------

    def open(self, request: Request, *, sign: Signer | None = None, accept: Collection[int] = (),
             signed: bool = False) -> StreamedAnswer:
        """One try, the answer left unread for the caller (who closes it). Error answers raise the
        decoded error, unless their status is in `accept`."""
        ready = request if signed else self.signed(request, sign)
        answer = self.requests.open(ready.method, ready.url, ready.headers, ready.body)
        if answer.status >= 300 and answer.status not in accept:
            with answer:
                try:
                    content = answer.read_decoded(ERROR_BODY_MAX) if request.method != "HEAD" else b""
                except Transient:
                    content = b""   # the status alone still says what happened
            raise self._error(answer.status, answer.headers, content, request.what)
        return answer

    def stream(self, request: Request, read: Callable[[StreamedAnswer], T], *, sign: Signer | None = None,
               accept: Collection[int] = (), policy: RetryPolicy | None = None) -> T:
        """`read` applied to the streamed answer inside the retried try, so that a body cut short is
        retried like a reset connection."""
        def attempt() -> T:
            with self.open(request, sign=sign, accept=accept) as answer:
                return read(answer)
        return self.retried(attempt, request.what, self._policy(request, policy))

    # -- ranged reads (every rule in wire.ranges) ----------------------------------------------------

    def read_range(self, request: Request, start: int, end: int, *, sign: Signer | None = None,
                   piece: int = 0, if_match: str | None = None, policy: RetryPolicy | None = None) -> RangeRead:
        """Bytes [start, end) of the GET `request` names, by wire.ranges' rules, retried as one (a
        body cut short is Transient too). `if_match`: the ETag the object must still have (412 is
        RemoteChanged). The answer's headers come back for the provider's own checks."""
        check_range(start, end, request.what)
        if end == start:
            return RangeRead([], 206, AnswerHeaders(), None)
        ranged = self._ranged(request, start, end, if_match)

        def attempt() -> RangeRead:
            with self.open(ranged, sign=sign, accept=(412, 416)) as answer:
                if answer.status == 412:
                    raise RemoteChanged(f"{request.what}: the object changed (ETag is no longer {if_match})")
                return take_range(answer, start, end, request.what, piece)

        return self.retried(attempt, request.what, policy)

    @staticmethod
    def _ranged(request: Request, start: int, end: int, if_match: str | None) -> Request:
        ranged = request.copy()
        # identity: the bytes of the object are the bytes of the file, even when it is stored gzipped.
        ranged.headers.update({"Range": range_header(start, end), "Accept-Encoding": "identity"})
        if if_match:
            ranged.headers["If-Match"] = f'"{if_match}"'
        return ranged

    def read_range_into_files(self, request: Request, start: int, end: int, files: Sequence[tuple[int, int]],
                              *, sign: Signer | None = None, if_match: str | None = None) -> bool:
        """Bytes [start, end) into local files (fast transport only): the first files[0][1] bytes at
        the start of fd files[0][0], and so on; on plain HTTP they are spliced from the socket and
        never pass through Python. False, with nothing written, when the answer is not exactly that
        range (the object is shorter, or the server ignores Range): read it another way then."""
        assert self.fast is not None, "read_range_into_files needs the fast transport"
        check_range(start, end, request.what)
        ranged = self._ranged(request, start, end, if_match)

        def attempt() -> bool:
            signed = self.signed(ranged, sign)
            headers = {"Host": signed.host, **signed.headers}
            answer = self.fast.get_into(signed.scheme, signed.host, signed.target, headers, list(files))
            if answer is None or answer.status == 416:
                return False   # not a 206 of that length
            if answer.status == 412:
                raise RemoteChanged(f"{request.what}: the object changed (ETag is no longer {if_match})")
            if answer.status >= 300:
                raise self._error(answer.status, answer.headers, answer.content, request.what)
            check_exact_range(answer.headers, start, end, request.what)
            return True

        return self.retried(attempt, request.what)

    # -- many HEADs ------------------------------------------------------------------------------------

    def head_many(self, requests: Sequence[Request], parallel: int, *,
                  sign: Signer | None = None) -> list[Answer | StoreError]:
        """HEAD every request (all to one host), `parallel` at a time from this thread (fast transport),
        each tried once: its answer (any status), or the StoreError of a failed one."""
        assert self.fast is not None, "head_many needs the fast transport"
        if not requests:
            return []
        signed = [self.signed(request, sign) for request in requests]
        first = signed[0]
        batch = [(r.target, {"Host": r.host, **r.headers}) for r in signed]
        answers = head_many(self.fast, first.scheme, first.host, batch, parallel)
        return [a if isinstance(a, StoreError) else Answer(a.status, a.headers, b"") for a in answers]
