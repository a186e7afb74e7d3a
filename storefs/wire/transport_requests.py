"""Shared HTTP plumbing for providers: one pooled requests.Session, timeouts on every request, and the
translation of transport failures into `Transient` (so `call_with_retries` retries them).

Providers still map HTTP *answers* (status codes, error bodies) themselves: that is protocol knowledge.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any
from urllib.parse import SplitResult, urlsplit

import requests
import requests.adapters

from ..errors import ProtocolError, StoreError, Transient

# urllib3 logs full request lines at DEBUG, and some protocols put signatures in query strings.
logging.getLogger("urllib3").setLevel(logging.WARNING)


@dataclasses.dataclass(frozen=True)
class HttpSettings:
    connect_timeout: float = 10.0
    read_timeout: float = 60.0     # between bytes, not for the whole body
    pool_size: int = 32
    verify: bool | str = True      # False never by default; a path names a CA bundle


def new_session(settings: HttpSettings) -> requests.Session:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=settings.pool_size,
                                            max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.verify = settings.verify
    # Never pick up proxies or credentials from the environment or ~/.netrc behind the user's back.
    session.trust_env = False
    return session


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
        raise Transient(f"{method} {_host(url)}: {exc.__class__.__name__}") from None
    except requests.exceptions.RequestException as exc:
        # e.g. InvalidHeader on a duplicated Content-Length: the server's answer is malformed.
        raise ProtocolError(f"{method} {_host(url)}: {exc.__class__.__name__}") from None


def tls_error(exc: BaseException, settings: HttpSettings, method: str, url: str) -> StoreError:
    """The StoreError for a failed TLS handshake. A certificate problem is not transient: retrying
    cannot fix it. The message says what failed and names the fix (ca_file); never str(exc): requests
    puts the URL and its query in it."""
    from ..errors import AccessDenied
    refused, reason = _tls_reason(exc)
    if refused:
        if "mismatch" in reason.lower():
            fix = "the endpoint must name a host the certificate is for"
        elif isinstance(settings.verify, str):
            fix = f"ca_file = {settings.verify} does not vouch for it"
        else:
            fix = ("if the server's certificate comes from a private CA, set ca_file = /path/to/ca.pem in "
                   "the remote's section")
        return AccessDenied(f"TLS certificate verification failed for {_host(url)} ({reason}); {fix}")
    if "EOF" in reason.upper():
        # The server hung up mid-handshake (an overloaded balancer): that one is worth a retry.
        return Transient(f"{method} {_host(url)}: TLS connection closed ({reason})")
    return AccessDenied(f"TLS handshake with {_host(url)} failed ({reason}); is it an https endpoint?")


def read_body(response: requests.Response) -> bytes:
    """The whole body, with a truncated or reset transfer turned into Transient."""
    try:
        # 1 MiB chunks: response.content reads 10 KiB at a time, ~3x the CPU on large bodies.
        return b"".join(response.iter_content(1 << 20))
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
            requests.exceptions.Timeout) as exc:
        raise Transient(f"body of {response.request.method} {_host(response.url)} cut short: "
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


def is_http_url(url: str) -> bool:
    """An http(s) URL with a host and, if any, a numeric port. urlsplit() raises ValueError for a bad
    IPv6 literal and `.port` for a port that is no number or out of range: caught here, at config time,
    not as a traceback from the mount process (`http://host:notaport` used to exit 1 that way)."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - evaluated for its ValueError
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def check_endpoint(remote: str, endpoint: str) -> SplitResult:
    """An endpoint URL or bare host name (https assumed), validated: http(s), a host, no credentials,
    no path or query. ConfigError naming the remote otherwise."""
    from ..errors import ConfigError
    text = endpoint.strip()
    if "://" not in text:
        text = "https://" + text
    if not is_http_url(text):
        raise ConfigError(f"[{remote}] endpoint {endpoint!r} is not an http(s) URL (http[s]://HOST[:PORT])")
    parts = urlsplit(text)
    if parts.username or parts.password:
        raise ConfigError(f"[{remote}] put credentials in their own keys, not in the endpoint URL")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"[{remote}] endpoint {endpoint!r} must not have a path or query")
    return parts


def _tls_reason(exc: BaseException) -> tuple[bool, str]:
    """(the peer's certificate was refused, OpenSSL's reason) from requests' exception chain. Only the
    ssl module's own fields are used: the outer exceptions' texts carry the request URL."""
    import ssl
    stack, seen = [exc], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True, str(current.verify_message or current.reason or "certificate not trusted").rstrip(".")
        if isinstance(current, ssl.SSLError):
            return False, str(current.reason or current.__class__.__name__)
        if isinstance(current, (ConnectionError, EOFError)):
            return False, f"EOF ({current.__class__.__name__})"
        stack += [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        stack += [v for v in (getattr(current, "reason", None), current.__cause__, current.__context__)
                  if isinstance(v, BaseException)]
    return False, exc.__class__.__name__


def _host(url: str) -> str:
    # Only scheme and host in messages: paths and queries may carry signatures.
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


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
