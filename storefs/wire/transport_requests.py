"""The requests transport: one pooled requests.Session per client, timeouts on every request, streamed
answers read undecoded, and transport failures turned into `Transient` (so retries retry them).

It carries what the fast transport does not: bodies streamed from file objects, answers read as they
arrive (ranged reads in pieces, job outputs), and every call of the providers that do not use the fast
transport. This is the only module of storefs that imports requests.
"""
from __future__ import annotations

import http.cookiejar
import logging
from typing import Any, Iterator

import requests
import requests.adapters
import urllib3.exceptions

from ..errors import ProtocolError, Transient
from .answer import AnswerHeaders
from .body import Body
from .settings import HttpSettings, check_endpoint, host_of, is_http_url, tls_error  # noqa: F401

# urllib3 logs full request lines at DEBUG, and some protocols put signatures in query strings.
logging.getLogger("urllib3").setLevel(logging.WARNING)

_CUT_SHORT = (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
              requests.exceptions.Timeout, urllib3.exceptions.HTTPError, OSError)


def new_session(settings: HttpSettings) -> requests.Session:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=settings.pool_size,
                                            max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.verify = settings.verify
    # Never pick up proxies or credentials from the environment or ~/.netrc behind the user's back.
    session.trust_env = False
    # Load balancers in front of object stores set cookies; a shared jar is not thread-safe and
    # cookies are part of no protocol spoken here.
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session


class RequestsAnswer:
    """A streamed answer over requests (wire.answer.StreamedAnswer)."""

    def __init__(self, response: requests.Response, method: str) -> None:
        self._response = response
        self._method = method
        self.status = response.status_code
        self.headers = AnswerHeaders.of(response.headers.items())

    def read(self, size: int) -> bytes:
        try:
            return self._response.raw.read(size, decode_content=False) or b""
        except _CUT_SHORT as exc:
            raise self._cut_short(exc) from None

    def chunks(self, size: int) -> Iterator[bytes]:
        while True:
            chunk = self.read(size)
            if not chunk:
                return
            yield chunk

    def read_decoded(self, limit: int | None = None) -> bytes:
        """The whole body (at most `limit` bytes), content-decoded as the server encoded it (JSON
        and XML replies may come gzipped); a body shorter than its Content-Length is Transient."""
        try:
            if limit is not None:
                return self._response.raw.read(limit, decode_content=True) or b""
            data = b"".join(self._response.iter_content(1 << 20))
        except (*_CUT_SHORT, requests.exceptions.RequestException) as exc:
            raise self._cut_short(exc) from None
        return data

    def read_all(self) -> bytes:
        """The whole body as sent; shorter than its Content-Length is Transient (urllib3 returns what
        arrived when the peer closes early)."""
        data = self.read(1 << 62) if self._method != "HEAD" else b""
        declared = self.headers.get("Content-Length")
        if self._method != "HEAD" and declared is not None and declared.isdigit() and len(data) != int(declared):
            raise self._cut_short(None)
        return data

    def _cut_short(self, exc: BaseException | None) -> Transient:
        why = exc.__class__.__name__ if exc else "fewer bytes than Content-Length"
        return Transient(f"{self._method} answer from {host_of(self._response.url)} cut short: {why}")

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> RequestsAnswer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SizedChunks:
    """A body's chunks with a length, so that requests sends a Content-Length and urllib3 writes chunk
    by chunk (no slurping). Made anew for each try."""

    def __init__(self, body: Body) -> None:
        self._body = body

    def __len__(self) -> int:
        return self._body.size

    def __iter__(self) -> Iterator[bytes]:
        return self._body.chunks()


class RequestsTransport:
    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self.session = new_session(settings)

    def open(self, method: str, url: str, headers: dict[str, str], body: Body) -> RequestsAnswer:
        """Send one request; the answer comes back unread. Redirects are answers, never followed (a
        signed request must not be replayed to another host)."""
        data: Any = body.data if body.in_memory else _SizedChunks(body) if body.size else b""
        response = send(self.session, self.settings, method, url, headers=headers, data=data, stream=True,
                        allow_redirects=False)
        return RequestsAnswer(response, method)

    def close(self) -> None:
        self.session.close()


# -- the functions the providers not yet on wire.client call ----------------------------------------

def send(session: requests.Session, settings: HttpSettings, method: str, url: str,
         **kwargs: Any) -> requests.Response:
    """One HTTP exchange with timeouts; transport failures become Transient."""
    kwargs.setdefault("timeout", (settings.connect_timeout, settings.read_timeout))
    try:
        return session.request(method, url, **kwargs)
    except requests.exceptions.SSLError as exc:
        raise tls_error(exc, settings, method, url) from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError) as exc:
        raise Transient(f"{method} {host_of(url)}: {exc.__class__.__name__}") from None
    except requests.exceptions.RequestException as exc:
        # e.g. InvalidHeader on a duplicated Content-Length: the server's answer is malformed.
        raise ProtocolError(f"{method} {host_of(url)}: {exc.__class__.__name__}") from None


def read_body(response: requests.Response) -> bytes:
    """The whole body, with a truncated or reset transfer turned into Transient."""
    try:
        # 1 MiB chunks: response.content reads 10 KiB at a time, ~3x the CPU on large bodies.
        return b"".join(response.iter_content(1 << 20))
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
            requests.exceptions.Timeout) as exc:
        raise Transient(f"body of {response.request.method} {host_of(response.url)} cut short: "
                        f"{exc.__class__.__name__}") from None


def check_range_body(response: requests.Response, body: bytes, start: int, end: int, what: str) -> bytes:
    """`body` of a 206 answer to `Range: bytes=start-(end-1)`, checked to hold every byte asked for
    (fewer only where Content-Range says the object ends). A short body whose Content-Length matches
    it (a proxy or server that lost part of the object) is otherwise taken for the data and cached:
    found by tests/fuse/test_faults.py. Short is Transient, like any cut-short transfer."""
    want = end - start
    total = response.headers.get("Content-Range", "").rpartition("/")[2].strip()
    if total.isdigit():
        want = max(0, min(end, int(total)) - start)
    if len(body) != want:
        raise Transient(f"{what}: {len(body)} bytes for a {want}-byte range; reading it again")
    return body




STREAM_CHUNK = 1024 * 1024


class FileChunks:
    """Exactly `size` bytes of a file object from its current position, in 1 MiB chunks: sized and
    iterable, so requests sends a Content-Length and urllib3 writes chunk by chunk (no slurping).
    Make a new one per try, after rewinding the file."""

    def __init__(self, fileobj, size: int) -> None:
        self._fileobj = fileobj
        self._size = size

    def __len__(self) -> int:
        return self._size

    def __iter__(self):
        from ..errors import InvalidArgument
        remaining = self._size
        while remaining > 0:
            chunk = self._fileobj.read(min(STREAM_CHUNK, remaining))
            if not chunk:
                # Our own input ran short: not retryable, and the server must not get a short object.
                raise InvalidArgument(f"upload body ended {remaining} bytes before its declared size")
            remaining -= len(chunk)
            yield chunk
