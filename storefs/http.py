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

from .errors import ProtocolError, Transient

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
        # A certificate problem is not transient: retrying cannot fix it.
        from .errors import AccessDenied
        raise AccessDenied(f"TLS verification failed for {_host(url)}: {exc.__class__.__name__}") from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError) as exc:
        raise Transient(f"{method} {_host(url)}: {exc.__class__.__name__}") from None
    except requests.exceptions.RequestException as exc:
        # e.g. InvalidHeader on a duplicated Content-Length: the server's answer is malformed.
        raise ProtocolError(f"{method} {_host(url)}: {exc.__class__.__name__}") from None


def read_body(response: requests.Response) -> bytes:
    """The whole body, with a truncated or reset transfer turned into Transient."""
    try:
        # 1 MiB chunks: response.content reads 10 KiB at a time, ~3x the CPU on large bodies.
        return b"".join(response.iter_content(1 << 20))
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
            requests.exceptions.Timeout) as exc:
        raise Transient(f"body of {response.request.method} {_host(response.url)} cut short: "
                        f"{exc.__class__.__name__}") from None


def check_endpoint(remote: str, endpoint: str) -> SplitResult:
    """An endpoint URL or bare host name (https assumed), validated: http(s), a host, no credentials,
    no path or query. ConfigError naming the remote otherwise."""
    from .errors import ConfigError
    text = endpoint.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"[{remote}] endpoint {endpoint!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise ConfigError(f"[{remote}] put credentials in their own keys, not in the endpoint URL")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"[{remote}] endpoint {endpoint!r} must not have a path or query")
    return parts


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
        from .errors import InvalidArgument
        remaining = self._size
        while remaining > 0:
            chunk = self._fileobj.read(min(STREAM_CHUNK, remaining))
            if not chunk:
                # Our own input ran short: not retryable, and the server must not get a short object.
                raise InvalidArgument(f"upload body ended {remaining} bytes before its declared size")
            remaining -= len(chunk)
            yield chunk
