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
from .settings import HttpSettings, host_of, tls_error

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

    def _cut_short(self, exc: BaseException) -> Transient:
        return Transient(f"{self._method} answer from {host_of(self._response.url)} cut short: "
                         f"{exc.__class__.__name__}")

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
        try:
            response = self.session.request(method, url, headers=headers, data=data, stream=True,
                                            allow_redirects=False,
                                            timeout=(self.settings.connect_timeout, self.settings.read_timeout))
        except requests.exceptions.SSLError as exc:
            raise tls_error(exc, self.settings, method, url) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            raise Transient(f"{method} {host_of(url)}: {exc.__class__.__name__}") from None
        except requests.exceptions.RequestException as exc:
            # e.g. InvalidHeader on a duplicated Content-Length: the server's answer is malformed.
            raise ProtocolError(f"{method} {host_of(url)}: {exc.__class__.__name__}") from None
        return RequestsAnswer(response, method)

    def close(self) -> None:
        self.session.close()
