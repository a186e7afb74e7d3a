"""Connection settings every HTTP transport obeys, endpoint validation, and how a failed TLS handshake
is told to the user. Shared by both transports and by every provider's configuration."""
from __future__ import annotations

import dataclasses
import ssl
from urllib.parse import SplitResult, urlsplit

from ..errors import AccessDenied, ConfigError, StoreError, Transient


@dataclasses.dataclass(frozen=True)
class HttpSettings:
    connect_timeout: float = 10.0
    read_timeout: float = 60.0     # between bytes, not for the whole body
    pool_size: int = 32
    verify: bool | str = True      # False never by default; a path names a CA bundle


def host_of(url: str) -> str:
    """`scheme://host[:port]` of a URL: the only part of a URL that messages may carry (paths and
    queries may hold signatures)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


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


def tls_error(exc: BaseException, settings: HttpSettings, method: str, url: str) -> StoreError:
    """The StoreError for a failed TLS handshake. A certificate problem is not transient: retrying
    cannot fix it. The message says what failed and names the fix (ca_file); never str(exc): HTTP
    libraries put the URL and its query in it."""
    refused, reason = _tls_reason(exc)
    host = host_of(url)
    if refused:
        if "mismatch" in reason.lower():
            fix = "the endpoint must name a host the certificate is for"
        elif isinstance(settings.verify, str):
            fix = f"ca_file = {settings.verify} does not vouch for it"
        else:
            fix = ("if the server's certificate comes from a private CA, set ca_file = /path/to/ca.pem in "
                   "the remote's section")
        return AccessDenied(f"TLS certificate verification failed for {host} ({reason}); {fix}")
    if "EOF" in reason.upper():
        # The server hung up mid-handshake (an overloaded balancer): that one is worth a retry.
        return Transient(f"{method} {host}: TLS connection closed ({reason})")
    return AccessDenied(f"TLS handshake with {host} failed ({reason}); is it an https endpoint?")


def _tls_reason(exc: BaseException) -> tuple[bool, str]:
    """(the peer's certificate was refused, OpenSSL's reason) from an exception chain (the transports
    wrap the ssl module's errors in their own). Only the ssl module's own fields are used: the outer
    exceptions' texts carry the request URL."""
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
        # urllib3 keeps the underlying error in `reason` (MaxRetryError, ProtocolError's args).
        linked = [*current.args, vars(current).get("reason"), current.__cause__, current.__context__]
        stack += [v for v in linked if isinstance(v, BaseException)]
    return False, exc.__class__.__name__
