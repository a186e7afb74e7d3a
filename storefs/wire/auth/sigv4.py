"""AWS Signature Version 4, written from the AWS spec with hashlib/hmac only (no botocore at runtime).

Reused by every SigV4 dialect: S3 (service "s3"), Glacier (service "glacier"), and any other AWS-shaped
API. The caller builds the request; this module only computes what to add to it.

Encoding rules (AWS "Create a canonical request"):
- URI encoding leaves only the unreserved characters A-Z a-z 0-9 - _ . ~ as they are; everything else is
  %XX of its UTF-8 bytes with upper-case hex. In a path, '/' is kept.
- S3 signs the path exactly as sent (each key segment encoded once, no normalisation: `a//b` and
  `./x` are real keys). Every other service signs the normalised path encoded a second time.
- The canonical query is every name=value pair, both encoded, sorted by name then value; a parameter
  without a value is `name=`.
- Header names are lower-cased; values trimmed, inner runs of whitespace collapsed to one space.

`build_query()` produces the wire query string with the same encoding as the canonical one, so what is
sent is what was signed, byte for byte.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import threading
import time
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence
from urllib.parse import quote

if TYPE_CHECKING:
    from ..client import Request

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

# Headers that proxies or the HTTP stack may change on the way: never signed (botocore does the same).
_UNSIGNABLE = frozenset({
    "authorization", "baggage", "connection", "expect", "keep-alive", "proxy-authenticate",
    "proxy-authorization", "te", "traceparent", "tracestate", "trailer", "transfer-encoding", "upgrade",
    "user-agent", "x-amzn-trace-id",
    # requests adds its own default when the caller does not set one; we only sign what we set.
    "accept-encoding",
})


def uri_encode(value: str, *, keep_slash: bool = False) -> str:
    """AWS URI encoding: only unreserved characters stay literal (quote() already upper-cases hex)."""
    return quote(value, safe="/~" if keep_slash else "~")


def encode_path(key_path: str) -> str:
    """The wire (and S3 canonical) form of a decoded path like `/bucket/dir/a b.txt`."""
    return uri_encode(key_path, keep_slash=True)


def build_query(params: Iterable[tuple[str, str]]) -> str:
    """Canonical query string, also used verbatim on the wire (sorted, RFC 3986 encoded)."""
    pairs = sorted((uri_encode(k), uri_encode(v)) for k, v in params)
    return "&".join(f"{k}={v}" for k, v in pairs)


def amz_date(now: _dt.datetime | None = None) -> str:
    """ISO 8601 basic format in UTC, e.g. 20130524T000000Z."""
    if now is None:
        return _amz_now()
    if now.tzinfo is not None:
        now = now.astimezone(_dt.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ")


_last_second: tuple[int, str] = (-1, "")


def _amz_now() -> str:
    """amz_date() of the current second, formatted once per second (strftime was ~4% of an upload
    thread's time under the GIL during a burst of small files)."""
    global _last_second
    second = int(time.time())
    cached = _last_second
    if cached[0] != second:
        cached = _last_second = (second, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second)))
    return cached[1]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def _canonical_header_value(value: str) -> str:
    # "Trimall": strip, and collapse inner whitespace runs to one space (as botocore does).
    return " ".join(str(value).split())


class SigV4Signer:
    """Signs requests for one access key, region and service. Thread-safe.

    The secret stays in this object and never shows in repr() or messages; derived signing keys are
    cached per day (they only depend on date, region and service).
    """

    def __init__(self, access_key: str, secret_key: str, region: str, service: str, *,
                 session_token: str | None = None, unsigned_regions_over_http: bool = False) -> None:
        """`unsigned_regions_over_http`: file regions go UNSIGNED-PAYLOAD over plain http too (the s3
        option `unsigned_payload = always`, for trusted networks); by default they are signed there."""
        self.access_key = access_key
        self._unsigned_regions_over_http = unsigned_regions_over_http
        self.region = region
        self.service = service
        self._secret = secret_key
        self._session_token = session_token or None
        self._lock = threading.Lock()
        self._key_cache: tuple[str, bytes] | None = None

    def __repr__(self) -> str:
        return f"SigV4Signer(access_key={self.access_key!r}, region={self.region!r}, service={self.service!r})"

    # -- the four steps of the spec ----------------------------------------------------------------

    def canonical_uri(self, wire_path: str) -> str:
        """`wire_path` is the path as sent (already URI-encoded once)."""
        if not wire_path:
            return "/"
        if self.service == "s3":
            return wire_path
        # Other services: drop dot segments and empty segments (RFC 3986 5.2.4 plus AWS's rule that
        # consecutive slashes collapse), keep a leading and a trailing slash, then encode again.
        out: list[str] = []
        for segment in wire_path.split("/"):
            if segment == "..":
                if out:
                    out.pop()
            elif segment and segment != ".":
                out.append(segment)
        normalised = ("/" if wire_path.startswith("/") else "") + "/".join(out)
        if wire_path.endswith("/") and out:
            normalised += "/"
        return uri_encode(normalised, keep_slash=True)

    @staticmethod
    def canonical_headers(headers: Mapping[str, str]) -> tuple[str, str]:
        """(canonical header block, signed header list) over every signable header given."""
        merged: dict[str, list[str]] = {}
        for name, value in headers.items():
            lname = name.lower().strip()
            if lname in _UNSIGNABLE:
                continue
            merged.setdefault(lname, []).append(_canonical_header_value(value))
        names = sorted(merged)
        block = "".join(f"{n}:{','.join(merged[n])}\n" for n in names)
        return block, ";".join(names)

    def canonical_request(self, method: str, wire_path: str, query: str, headers: Mapping[str, str],
                          payload_hash: str) -> tuple[str, str]:
        """(canonical request, signed header list)."""
        block, signed = self.canonical_headers(headers)
        text = "\n".join([method.upper(), self.canonical_uri(wire_path), query, block, signed, payload_hash])
        return text, signed

    def scope(self, date_stamp: str) -> str:
        return f"{date_stamp}/{self.region}/{self.service}/aws4_request"

    def string_to_sign(self, timestamp: str, canonical_request: str) -> str:
        return "\n".join([ALGORITHM, timestamp, self.scope(timestamp[:8]),
                          sha256_hex(canonical_request.encode("utf-8"))])

    def signing_key(self, date_stamp: str) -> bytes:
        with self._lock:
            if self._key_cache and self._key_cache[0] == date_stamp:
                return self._key_cache[1]
        key = _hmac(("AWS4" + self._secret).encode("utf-8"), date_stamp)
        for part in (self.region, self.service, "aws4_request"):
            key = _hmac(key, part)
        with self._lock:
            self._key_cache = (date_stamp, key)
        return key

    def signature(self, timestamp: str, canonical_request: str) -> str:
        key = self.signing_key(timestamp[:8])
        return hmac.new(key, self.string_to_sign(timestamp, canonical_request).encode("utf-8"),
                        hashlib.sha256).hexdigest()

    # -- what callers use --------------------------------------------------------------------------

    def sign(self, method: str, wire_path: str, query: str, headers: Mapping[str, str], *,
             payload_hash: str = EMPTY_SHA256, content_sha256_header: bool | None = None,
             now: _dt.datetime | None = None) -> dict[str, str]:
        """Headers to add to a request: x-amz-date, (x-amz-content-sha256), (token), Authorization.

        `headers` must hold every header that will be sent and should be signed, `host` included
        (with `:port` when the URL has a non-default port, exactly as the HTTP client sends it).
        `query` is the wire query string from `build_query()`. S3 and Glacier want the payload hash in
        an x-amz-content-sha256 header as well; other services do not (default: s3 and glacier only).
        An `x-amz-date` (or `date`) already in `headers` is kept, so fixed-time vectors reproduce.
        """
        lower = {k.lower(): v for k, v in headers.items()}
        added: dict[str, str] = {}
        timestamp = lower.get("x-amz-date") or amz_date(now)
        if "x-amz-date" not in lower:
            added["x-amz-date"] = timestamp
        if content_sha256_header is None:
            content_sha256_header = self.service in ("s3", "glacier")
        if content_sha256_header and "x-amz-content-sha256" not in lower:
            added["x-amz-content-sha256"] = payload_hash
        if self._session_token and "x-amz-security-token" not in lower:
            added["x-amz-security-token"] = self._session_token
        creq, signed = self.canonical_request(method, wire_path, query, {**headers, **added}, payload_hash)
        sig = self.signature(timestamp, creq)
        added["Authorization"] = (f"{ALGORITHM} Credential={self.access_key}/{self.scope(timestamp[:8])}, "
                                  f"SignedHeaders={signed}, Signature={sig}")
        return added

    def sign_request(self, request: Request) -> None:
        """The wire layer's Signer (wire.client): signs `request` in place. Its headers must hold Host
        (see sign()). The payload hash is the body's SHA-256 (bytes, or a file region read once).
        S3 sends UNSIGNED-PAYLOAD instead where hashing is impossible or redundant:
        - a stream cannot be hashed before it is sent;
        - a file region (a staged file, a multipart part) over HTTPS: TLS already protects the bytes
          in transit, and hashing them first costs a read of the file and ~0.7 s of CPU per GiB (as
          the AWS SDKs do: payloads are signed over plain HTTP only), or over plain HTTP too when
          the remote says the network is trusted (`unsigned_payload = always`, as s3fs's
          enable_unsigned_payload and rclone's --s3-use-unsigned-payload).
        Small bodies in memory are always signed: their hash costs next to nothing."""
        body = request.body
        if self.service == "s3" and (body.stream is not None
                                     or (body.region is not None
                                         and (request.scheme == "https" or self._unsigned_regions_over_http))):
            payload_hash = UNSIGNED_PAYLOAD
        else:
            payload_hash = body.sha256_hex()
        request.headers.update(self.sign(request.method, request.path, request.query, request.headers,
                                         payload_hash=payload_hash))

    def presign(self, method: str, host: str, wire_path: str, params: Sequence[tuple[str, str]] = (),
                *, expires: int = 3600, now: _dt.datetime | None = None,
                payload_hash: str | None = None) -> str:
        """A query string (everything after '?') that authorises this request for `expires` seconds.

        Only `host` is signed, so the URL works from any HTTP client. S3 presigns UNSIGNED-PAYLOAD.
        """
        if not 1 <= expires <= 604800:
            raise ValueError("presigned URLs live between 1 second and 7 days")
        timestamp = amz_date(now)
        auth = [("X-Amz-Algorithm", ALGORITHM),
                ("X-Amz-Credential", f"{self.access_key}/{self.scope(timestamp[:8])}"),
                ("X-Amz-Date", timestamp),
                ("X-Amz-Expires", str(expires)),
                ("X-Amz-SignedHeaders", "host")]
        if self._session_token:
            auth.append(("X-Amz-Security-Token", self._session_token))
        query = build_query([*params, *auth])
        if payload_hash is None:
            payload_hash = UNSIGNED_PAYLOAD if self.service == "s3" else EMPTY_SHA256
        creq, _ = self.canonical_request(method, wire_path, query, {"host": host}, payload_hash)
        return f"{query}&X-Amz-Signature={self.signature(timestamp, creq)}"
