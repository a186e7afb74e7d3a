"""The `s3` provider: any S3-compatible endpoint (AWS, MinIO, SeaweedFS, COS v5, WCS S3, US3 S3, moto).

Our own SigV4 signer (`sigv4.py`) over two HTTP clients; no SDK at runtime. fasthttp's LeanClient
carries what the mount does most (HEADs, LISTs, small PUTs, parts sent from staged files, ranged reads
into block-cache files); a pooled `requests` session the rest (other streamed bodies and answers).
Both are per provider, shared by its buckets and safe to use from many threads (the signer caches its
derived key under a lock; nothing else is mutable after construction).

Wire choices, and why:
- Listing is ListObjectsV2 with `encoding-type=url`, so keys holding characters XML 1.0 cannot carry
  still round-trip; keys are decoded only when the answer says `<EncodingType>url</EncodingType>`
  (servers that ignore the parameter send raw keys).
- Bodies in memory and regions of staged files (small PUTs, parts, PUTs up to 16 MiB) are signed with
  their SHA-256, so the server checks their integrity; other file objects are streamed and sent
  UNSIGNED-PAYLOAD.
- Every request runs through `call_with_retries`, and is signed *inside* the retried function, so each
  try carries a fresh date and signature; a file body is rewound before each try.
- Reads ask for `Accept-Encoding: identity` and never decode content: the bytes of the object are the
  bytes of the file, even for objects stored with `Content-Encoding: gzip`.

User metadata travels in `x-amz-meta-<name>` headers. Header values must be ASCII, so a value that is
not printable ASCII (or that HTTP would alter: leading/trailing blanks, or one that itself looks like an
encoded word) is sent as an RFC 2047 encoded word, `=?UTF-8?B?<base64 of the UTF-8 bytes>?=`, the form
AWS itself uses for non-ASCII metadata. Reading decodes RFC 2047 B and Q words, and recovers raw UTF-8
that another client put in a header. Names must be HTTP tokens and are lower-cased (S3 does the same).

Archive storage classes (GLACIER, DEEP_ARCHIVE; COS v5's ARCHIVE): `stat()` keeps the `x-amz-restore`
header in `meta["x-amz-restore"]`, `restore()` is RestoreObject, and a GET refused with
InvalidObjectState raises ArchiveNotReady.

Keys with a `.` or `..` path segment are refused (InvalidArgument): the HTTP stack (urllib3) removes
dot segments from URLs, so such a request would address a different key.
"""
from __future__ import annotations

import base64
import binascii
import calendar
import dataclasses
import email.utils
import hashlib
import http.cookiejar
import logging
import math
import os
import quopri
import re
import time
import xml.etree.ElementTree as ET
from typing import Any, BinaryIO, Callable, Collection, Mapping, Sequence
from urllib.parse import quote, unquote_plus, urlsplit

import requests
import urllib3.exceptions

from .. import __version__, isotime
from ..wire import transport_requests as storefs_http
from ..errors import (
    AccessDenied,
    ArchiveNotReady,
    ConfigError,
    InvalidArgument,
    NameTooLong,
    NotFound,
    NotSupported,
    ProtocolError,
    RemoteChanged,
    StoreError,
    Throttled,
    Transient,
)
from ..wire.body import Body, FileRegion, FileSlice
from ..wire.transport_fast import LeanClient, head_many
from ..store.registry import ProviderSpec
from ..wire.retry import NO_RETRY, RetryPolicy, call_with_retries
from ..store.contract import Capabilities, ListPage, MultipartUpload, ObjectInfo, UploadedPart, cut_pieces, piece_sizes
from ..wire.tuning import HTTP_TUNING, parse_http_tuning
from ..wire.auth.sigv4 import (
    EMPTY_SHA256,
    UNSIGNED_PAYLOAD,
    SigV4Signer,
    build_query,
    encode_path,
    sha256_hex,
)

log = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB

SPEC = ProviderSpec(
    type="s3",
    required=("endpoint", "access_key", "secret_key"),
    optional={
        "region": "us-east-1",
        "addressing": "",            # path | virtual; empty: virtual for *.amazonaws.com, path elsewhere
        "session_token": "",         # temporary credentials (STS)
        "storage_class": "",         # x-amz-storage-class for new objects; empty: the bucket's default
        "part_size": str(8 * MiB),   # preferred multipart part size
        "single_put_max": str(16 * MiB),
        "copy_cutoff": str(5 * GiB),  # larger objects are copied with UploadPartCopy
        "copy_part_size": str(512 * MiB),
        **HTTP_TUNING,
    },
    secrets=("secret_key", "session_token"),
    doc="Any S3-compatible endpoint (AWS, MinIO, SeaweedFS, Tencent COS, Wangsu WCS, UCloud US3). "
        "`endpoint` is a URL such as https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:9000; "
        "`addressing = path|virtual`. Full user metadata (x-amz-meta-*); non-ASCII values are stored "
        "RFC 2047-encoded. TLS certificates are always verified (`ca_file` adds a CA bundle).",
)

# GLACIER_IR and the intelligent-tiering classes read without a restore; COS v5 names its classes
# ARCHIVE and DEEP_ARCHIVE.
S3_ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE", "ARCHIVE"})
S3_MIN_PART = 5 * MiB
S3_MAX_PART = 5 * GiB
S3_MAX_PARTS = 10_000
S3_MAX_PUT = 5 * GiB
# Bodies up to this size are read into memory and signed with their SHA-256; larger ones stream.
INLINE_BODY_MAX = 1 * MiB
ERROR_BODY_MAX = 64 * 1024
MAX_LIST_PAGES = 1000  # bound on paging loops (10^6 multipart uploads)

_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_ENCODED_WORD_RE = re.compile(r"^=\?([A-Za-z0-9_.:-]+)\?([BbQq])\?([^?]*)\?=$")


# ------------------------------------------------------------------------------------------------
# Metadata and small parsers


def encode_meta_value(value: str) -> str:
    """A header-safe form of a metadata value (see the module docstring)."""
    if (value.isascii() and value.isprintable() and value == value.strip(" \t")
            and not value.startswith("=?")):
        return value
    return "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8", "surrogatepass")).decode("ascii") + "?="


def decode_meta_value(raw: str) -> str:
    """Inverse of encode_meta_value(); also RFC 2047 Q words and raw UTF-8 read as Latin-1."""
    match = _ENCODED_WORD_RE.match(raw)
    if match:
        charset, kind, text = match.groups()
        try:
            if kind in "Bb":
                data = base64.b64decode(text, validate=True)
            else:
                data = quopri.decodestring(text.replace("_", " ").encode("ascii"), header=True)
            return data.decode(charset, "surrogatepass")
        except (binascii.Error, LookupError, UnicodeError, ValueError):
            return raw
    if not raw.isascii():
        # http.client decodes header bytes as Latin-1; another client may have sent raw UTF-8.
        try:
            return raw.encode("latin-1").decode("utf-8")
        except UnicodeError:
            return raw
    return raw


def meta_headers(meta: Mapping[str, str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in meta.items():
        lname = name.lower()
        if not _TOKEN_RE.match(lname):
            raise InvalidArgument(f"metadata name {name!r} cannot be sent as an HTTP header")
        headers[f"x-amz-meta-{lname}"] = encode_meta_value(str(value))
    return headers


def meta_from_headers(headers: Mapping[str, str]) -> dict[str, str]:
    meta = {}
    # requests' CaseInsensitiveDict has its lower-cased items at hand (a HEAD per `ls -l` entry).
    items = headers.lower_items() if hasattr(headers, "lower_items") else headers.items()
    for name, value in items:
        lname = name.lower()
        if lname.startswith("x-amz-meta-"):
            meta[lname[len("x-amz-meta-"):]] = decode_meta_value(value)
    return meta


def parse_iso8601(text: str) -> float:
    """`2009-10-12T17:50:30.000Z` → epoch seconds. ProtocolError when it is not a timestamp."""
    try:
        return isotime.parse_iso8601(text)
    except ValueError:
        raise ProtocolError(f"bad timestamp {text[:40]!r} in S3 answer") from None


_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}


def parse_http_date(text: str | None) -> float | None:
    if not text:
        return None
    parts = text.split()
    if len(parts) == 6 and parts[5] == "GMT" and parts[2] in _MONTHS:
        # IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), what servers send: parsed directly, as the
        # email package takes several times longer (a Last-Modified per `ls -l` entry).
        try:
            day, year = int(parts[1]), int(parts[3])
            hour, minute, second = (int(n) for n in parts[4].split(":"))
            if 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61:
                return float(calendar.timegm((year, _MONTHS[parts[2]], day, hour, minute, second)))
        except ValueError:
            pass
    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def parse_content_range(text: str, what: str) -> tuple[int, int, int | None]:
    """`bytes 0-9/10` → (0, 9, 10); the total may be `*`."""
    match = re.match(r"^bytes (\d+)-(\d+)/(\d+|\*)$", text.strip())
    if not match or int(match.group(2)) < int(match.group(1)):
        raise ProtocolError(f"{what}: bad Content-Range {text[:60]!r}")
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)), total


def strip_etag(etag: str | None) -> str:
    return (etag or "").strip().removeprefix("W/").strip('"')


def parse_xml(body: bytes, what: str) -> ET.Element:
    """The root element with namespaces removed. Malformed XML is a ProtocolError."""
    try:
        root = ET.fromstring(body)
    except (ET.ParseError, ValueError) as exc:
        raise ProtocolError(f"{what}: malformed XML from server ({exc})",
                            detail=body[:200].decode("utf-8", "replace")) from None
    for element in root.iter():
        if isinstance(element.tag, str) and "}" in element.tag:
            element.tag = element.tag.rsplit("}", 1)[1]
    return root


def child_text(element: ET.Element, tag: str, default: str | None = None) -> str | None:
    found = element.find(tag)
    if found is None:
        return default
    return found.text or ""


def required_text(element: ET.Element, tag: str, what: str) -> str:
    value = child_text(element, tag)
    if value is None:
        raise ProtocolError(f"{what}: <{tag}> missing from the server's answer")
    return value


def _int(text: str | None, what: str) -> int:
    try:
        return int(text or "")
    except ValueError:
        raise ProtocolError(f"{what}: {text!r} is not a number") from None


# ------------------------------------------------------------------------------------------------
# Errors


_CODE_ERRORS: dict[str, type[StoreError]] = {
    "NoSuchKey": NotFound, "NoSuchUpload": NotFound, "NoSuchVersion": NotFound, "NoSuchBucket": NotFound,
    "AccessDenied": AccessDenied, "InvalidAccessKeyId": AccessDenied, "SignatureDoesNotMatch": AccessDenied,
    "AllAccessDisabled": AccessDenied, "AccountProblem": AccessDenied, "ExpiredToken": AccessDenied,
    "InvalidToken": AccessDenied, "TokenRefreshRequired": AccessDenied, "RequestTimeTooSkewed": AccessDenied,
    "AuthorizationHeaderMalformed": AccessDenied, "InvalidSecurity": AccessDenied,
    "MissingSecurityHeader": AccessDenied, "RequestIsNotMultiPartContent": InvalidArgument,
    "SlowDown": Throttled, "ServiceUnavailable": Throttled, "Throttling": Throttled,
    "TooManyRequests": Throttled, "RequestLimitExceeded": Throttled,
    "InternalError": Transient, "RequestTimeout": Transient, "OperationAborted": Transient,
    "BadGateway": Transient, "GatewayTimeout": Transient,
    "InvalidObjectState": ArchiveNotReady,
    "ObjectNotInActiveTierError": ArchiveNotReady,  # CopyObject of an archived, unrestored source
    "PreconditionFailed": RemoteChanged,
    "NotImplemented": NotSupported, "MethodNotAllowed": NotSupported,
    "KeyTooLongError": NameTooLong,
    "InvalidArgument": InvalidArgument, "InvalidRequest": InvalidArgument, "EntityTooSmall": InvalidArgument,
    "EntityTooLarge": InvalidArgument, "InvalidPart": InvalidArgument, "InvalidPartOrder": InvalidArgument,
    "MetadataTooLarge": InvalidArgument, "InvalidStorageClass": InvalidArgument,
    "InvalidDigest": Transient, "BadDigest": Transient, "IncompleteBody": Transient,
    "XAmzContentSHA256Mismatch": Transient,
}

_STATUS_ERRORS: dict[int, type[StoreError]] = {
    400: InvalidArgument, 403: AccessDenied, 404: NotFound, 405: NotSupported, 408: Transient,
    412: RemoteChanged, 429: Throttled, 500: Transient, 501: NotSupported, 502: Transient, 503: Throttled,
    504: Transient,
}


def error_from_response(status: int, headers: Mapping[str, str], body: bytes, *, what: str,
                        bucket: str | None = None) -> StoreError:
    """The one translation of an S3 error answer into a StoreError (code first, then status)."""
    code = message = request_id = ""
    if body:
        try:
            root = parse_xml(body, what)
            if root.tag == "Error":
                code = child_text(root, "Code", "") or ""
                message = child_text(root, "Message", "") or ""
                request_id = child_text(root, "RequestId", "") or ""
        except ProtocolError:
            pass  # the status still says enough; a proxy's HTML error page lands here
    request_id = request_id or headers.get("x-amz-request-id", "")
    cls = _CODE_ERRORS.get(code) or _STATUS_ERRORS.get(status)
    if cls is None:
        cls = Transient if status >= 500 else StoreError
    label = code or f"HTTP {status}"
    text = f"{what}: {label}"
    if message:
        text += f": {message[:300]}"
    if code == "NoSuchBucket" or (code == "" and status == 404 and what.startswith("bucket ")):
        text = f"{what}: bucket {bucket!r} does not exist ({label})"
    elif cls is ArchiveNotReady:
        text = f"{what}: object is in an archive storage class and not restored ({label})"
    elif status in (301, 307) or code in ("PermanentRedirect", "TemporaryRedirect"):
        endpoint = headers.get("x-amz-bucket-region") or ""
        text = f"{what}: the bucket lives at another endpoint/region {endpoint!r} ({label})"
    detail = f"status={status} code={code} message={message[:500]} request_id={request_id}"
    return cls(text, detail=detail, code=code)


# ------------------------------------------------------------------------------------------------
# Request bodies


def _range_request(key: str, start: int, end: int, if_match: str | None) -> tuple[dict[str, str], str]:
    """The headers of a GET of bytes [start, end) (If-Match: the ETag it must still have), and what
    to call it in messages."""
    headers = {"Range": f"bytes={start}-{end - 1}"}
    if if_match:
        headers["If-Match"] = f'"{strip_etag(if_match)}"'
    return headers, f"read {key!r} [{start}, {end})"


def sha256_of_region(region: FileRegion) -> str:
    """The payload hash of a file region, read 1 MiB at a time (memory stays flat)."""
    digest = hashlib.sha256()
    offset, end = region.offset, region.offset + region.size
    while offset < end:
        chunk = os.pread(region.fd, min(MiB, end - offset), offset)
        if not chunk:
            raise InvalidArgument(f"the file ended {end - offset} bytes before the request body did")
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


class _Body:
    """What a request sends: nothing, bytes, a region of a file (sent from the file by fasthttp,
    signed with its SHA-256 like bytes), or a window of a file object (rewound per try)."""

    def __init__(self, data: bytes | None = None, *, fileobj: BinaryIO | None = None, size: int = 0,
                 region: FileRegion | None = None) -> None:
        self.data = data
        self.fileobj = fileobj
        self.region = region
        self.size = size if fileobj is not None else region.size if region else len(data or b"")
        self.start: int | None = None
        self.payload_hash = sha256_hex(data) if data else EMPTY_SHA256
        if region is not None and region.size:
            self.payload_hash = sha256_of_region(region)
        if fileobj is not None:
            self.payload_hash = UNSIGNED_PAYLOAD
            try:
                self.start = fileobj.tell() if fileobj.seekable() else None
            except (OSError, ValueError, AttributeError):  # a minimal reader: sent once, not retried
                self.start = None

    @property
    def retryable(self) -> bool:
        return self.fileobj is None or self.start is not None

    def for_attempt(self) -> Any:
        if self.fileobj is None:
            return self.data or b""
        if self.start is not None:
            self.fileobj.seek(self.start)
        return storefs_http.FileChunks(self.fileobj, self.size) if self.size else b""


# ------------------------------------------------------------------------------------------------
# The connection


class S3Client:
    """Endpoint, credentials, session and the signed, retried request primitive."""

    def __init__(self, remote: str, options: Mapping[str, str]) -> None:
        opts = {**SPEC.optional, **{k: v for k, v in options.items() if v is not None}}
        missing = [k for k in SPEC.required if not str(opts.get(k, "")).strip()]
        if missing:
            raise ConfigError(f"[{remote}] type = s3 needs {', '.join(missing)}")
        parts = storefs_http.check_endpoint(remote, opts["endpoint"])
        self.remote = remote
        self.scheme = parts.scheme
        self.netloc = parts.netloc.lower()
        self.host_port = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        addressing = opts["addressing"].strip().lower()
        if not addressing:
            addressing = "virtual" if (parts.hostname or "").endswith(".amazonaws.com") else "path"
        if addressing not in ("path", "virtual"):
            raise ConfigError(f"[{remote}] addressing must be 'path' or 'virtual', not {addressing!r}")
        self.addressing = addressing
        self.storage_class = opts["storage_class"].strip()
        try:
            self.part_size = int(opts["part_size"])
            self.single_put_max = min(int(opts["single_put_max"]), S3_MAX_PUT)
            self.copy_cutoff = min(int(opts["copy_cutoff"]), S3_MAX_PUT)
            self.copy_part_size = min(max(int(opts["copy_part_size"]), S3_MIN_PART), S3_MAX_PART)
        except ValueError as exc:
            raise ConfigError(f"[{remote}] a numeric s3 option is not a number: {exc}") from None
        self.settings, self.retry = parse_http_tuning(remote, opts)
        self.signer = SigV4Signer(opts["access_key"].strip(), opts["secret_key"], opts["region"].strip(),
                                  "s3", session_token=opts["session_token"].strip() or None)
        self.session = storefs_http.new_session(self.settings)
        self.lean = LeanClient(self.settings)  # requests with in-memory bodies and whole answers
        # Load balancers in front of S3-compatible stores set cookies; a shared jar is not thread-safe
        # and cookies are not part of the protocol.
        self.session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self.user_agent = f"storefs/{__version__}"

    def __repr__(self) -> str:
        return f"S3Client({self.remote!r}, {self.scheme}://{self.netloc}, addressing={self.addressing})"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    def close(self) -> None:
        self.session.close()
        self.lean.close()

    # -- addressing ------------------------------------------------------------------------------

    def locate(self, bucket: str | None, key: str | None) -> tuple[str, str]:
        """(Host header, wire path) of a bucket, an object, or the service (bucket None)."""
        if key is not None and any(seg in (".", "..") for seg in key.split("/")):
            raise InvalidArgument(f"key {key!r} has a '.' or '..' segment, which HTTP clients rewrite")
        if bucket is None:
            return self.netloc, "/"
        if self.addressing == "virtual":
            return f"{bucket}.{self.netloc}", encode_path("/" + (key or ""))
        return self.netloc, encode_path(f"/{bucket}" + ("" if key is None else f"/{key}"))

    # -- the request primitive -------------------------------------------------------------------

    def request(self, method: str, bucket: str | None, key: str | None, *, what: str,
                params: Sequence[tuple[str, str]] = (), headers: Mapping[str, str] | None = None,
                body: _Body | None = None, check_body: bool = False,
                policy: RetryPolicy | None = None) -> Answer:
        """One S3 call with its whole answer: signed, sent and read inside call_with_retries.

        An error answer raises StoreError. `check_body`: the call may answer 200 with an <Error>
        document (CompleteMultipartUpload, CopyObject, UploadPartCopy), so the body is checked too.
        """
        attempt = self.attempt(method, bucket, key, what=what, params=params, headers=headers, body=body,
                               check_body=check_body)
        return call_with_retries(attempt, self._policy(policy, body), what=f"{self.remote}: {what}")

    def head(self, bucket: str, key: str, *, what: str) -> Mapping[str, str]:
        """HEAD of an object: its headers, retried like every request."""
        return self.request("HEAD", bucket, key, what=what).headers

    def attempt(self, method: str, bucket: str | None, key: str | None, *, what: str,
                params: Sequence[tuple[str, str]] = (), headers: Mapping[str, str] | None = None,
                body: _Body | None = None, check_body: bool = False) -> Callable[[], Answer]:
        """The function request() retries: one signed try, whole answer read. For callers that need
        to see each try (complete_multipart). A body in memory, a file region (or none) goes over
        fasthttp's lean connections; a body streamed from a file object over requests."""
        if body is not None and body.fileobj is not None:
            send = self._sender(method, bucket, key, what=what, params=params, headers=headers, body=body)

            def exchange() -> Answer:
                response = send()
                return Answer(response.status_code, response.headers, read_all(response))
        else:
            exchange = self._lean_sender(method, bucket, key, what=what, params=params, headers=headers,
                                         body=body)

        def attempt() -> Answer:
            answer = exchange()
            if check_body and b"<Error" in answer.content[:512]:
                root = parse_xml(answer.content, what)
                if root.tag == "Error":
                    raise error_from_response(500, answer.headers, answer.content, what=what, bucket=bucket)
            return answer

        return attempt

    def _lean_sender(self, method: str, bucket: str | None, key: str | None, *, what: str,
                     params: Sequence[tuple[str, str]] = (), headers: Mapping[str, str] | None = None,
                     body: _Body | None = None) -> Callable[[], Answer]:
        """Like _sender, over fasthttp.LeanClient, with the whole answer read."""
        host, wire_path = self.locate(bucket, key)
        query = build_query(params)
        target = wire_path + (f"?{query}" if query else "")
        data: bytes | FileRegion = b""
        if body is not None:
            data = body.region or body.data or b""
        payload_hash = body.payload_hash if body is not None else EMPTY_SHA256
        base_headers = {"Host": host, **(headers or {})}

        def send() -> Answer:
            signed = self.signed_headers(method, wire_path, query, base_headers, payload_hash)
            if data or method in ("PUT", "POST"):
                signed["Content-Length"] = str(data.size if isinstance(data, FileRegion) else len(data))
            answer = self.lean.exchange(method, self.scheme, host, target, signed, data)
            if answer.status >= 300:
                content = answer.content if method != "HEAD" else b""
                raise error_from_response(answer.status, answer.headers, content[:ERROR_BODY_MAX],
                                          what=what, bucket=bucket)
            return Answer(answer.status, answer.headers, answer.content)

        return send

    def open(self, method: str, bucket: str | None, key: str | None, *, what: str,
             headers: Mapping[str, str] | None = None, accept: Collection[int] = ()) -> requests.Response:
        """One try of a streamed call (no retry: the caller retries around reading the body too).

        The caller must close the response. Statuses in `accept` are returned instead of raised.
        """
        return self._sender(method, bucket, key, what=what, headers=headers, accept=accept)()

    def _policy(self, policy: RetryPolicy | None, body: _Body | None) -> RetryPolicy:
        if body is not None and not body.retryable:
            return NO_RETRY  # a stream we cannot rewind can be sent once only
        return policy or self.retry

    def signed_headers(self, method: str, wire_path: str, query: str, headers: Mapping[str, str],
                       payload_hash: str) -> dict[str, str]:
        """`headers` (Host included) signed afresh, with what every request of ours carries."""
        signed = dict(headers)
        signed.update(self.signer.sign(method, wire_path, query, signed, payload_hash=payload_hash))
        signed["User-Agent"] = self.user_agent
        signed.setdefault("Accept-Encoding", "identity")
        return signed

    def _sender(self, method: str, bucket: str | None, key: str | None, *, what: str,
                params: Sequence[tuple[str, str]] = (), headers: Mapping[str, str] | None = None,
                body: _Body | None = None, accept: Collection[int] = ()) -> Callable[[], requests.Response]:
        """A function that signs afresh and sends once; called once per try."""
        host, wire_path = self.locate(bucket, key)
        query = build_query(params)
        url = f"{self.scheme}://{host}{wire_path}" + (f"?{query}" if query else "")
        request_body = body or _Body()
        base_headers = {"Host": host, **(headers or {})}

        def send() -> requests.Response:
            signed = self.signed_headers(method, wire_path, query, base_headers, request_body.payload_hash)
            # http.send turns transport failures into Transient and malformed answers into ProtocolError.
            response = storefs_http.send(self.session, self.settings, method, url, headers=signed,
                                         data=request_body.for_attempt(), stream=True, allow_redirects=False)
            if response.status_code >= 300 and response.status_code not in accept:
                raise self._error(response, what, bucket)
            return response

        return send

    @staticmethod
    def _error(response: requests.Response, what: str, bucket: str | None) -> StoreError:
        content = b""
        if response.request.method != "HEAD":
            try:
                content = response.raw.read(ERROR_BODY_MAX, decode_content=True) or b""
            except (urllib3.exceptions.HTTPError, OSError, requests.exceptions.RequestException):
                content = b""  # the status alone still says what happened
        response.close()
        return error_from_response(response.status_code, response.headers, content, what=what, bucket=bucket)


@dataclasses.dataclass(frozen=True)
class Answer:
    """A complete (non-streamed) S3 answer."""

    status: int
    headers: Mapping[str, str]  # case-insensitive (CaseInsensitiveDict or fasthttp.AnswerHeaders)
    content: bytes


def _declared_length(response: requests.Response) -> int | None:
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _cut_short(response: requests.Response, exc: BaseException | None = None) -> Transient:
    why = exc.__class__.__name__ if exc else "fewer bytes than Content-Length"
    return Transient(f"{response.request.method} answer from {urlsplit(response.url).netloc} cut short: {why}")


def read_all(response: requests.Response) -> bytes:
    """The whole body of a streamed response; a cut-short transfer is Transient.

    urllib3 returns what arrived when the peer closes early, so the length is checked here.
    """
    try:
        data = response.raw.read(decode_content=False) or b""
    except (urllib3.exceptions.HTTPError, OSError, requests.exceptions.RequestException) as exc:
        raise _cut_short(response, exc) from None
    finally:
        response.close()
    declared = _declared_length(response)
    if declared is not None and response.request.method != "HEAD" and len(data) != declared:
        raise _cut_short(response)
    return data


def read_window(response: requests.Response, expected: int, piece: int = 0) -> list[bytes]:
    """Exactly `expected` bytes from the start of a streamed body, undecoded, in pieces of `piece`
    bytes (one piece if 0), then close it (the rest of an over-long body is dropped with the
    connection). Fewer is a Transient cut-short transfer. Each piece is read straight into its own
    bytes object."""
    pieces = []
    remaining = expected
    try:
        while remaining > 0:
            want = min(piece or remaining, remaining)
            data = response.raw.read(want, decode_content=False) or b""
            if len(data) != want:
                break
            pieces.append(data)
            remaining -= want
    except (urllib3.exceptions.HTTPError, OSError, requests.exceptions.RequestException) as exc:
        raise _cut_short(response, exc) from None
    finally:
        response.close()
    if remaining:
        raise _cut_short(response)
    return pieces


# ------------------------------------------------------------------------------------------------
# The provider


def s3_code(exc: StoreError) -> str:
    """The S3 error code a StoreError came from ('' if none)."""
    return exc.code


class S3Provider:
    def __init__(self, remote: str, options: Mapping[str, str]) -> None:
        self.remote = remote
        self.client = S3Client(remote, options)

    def __repr__(self) -> str:
        return f"S3Provider({self.remote!r})"

    def check(self, bucket: str | None) -> None:
        """ListObjectsV2 max-keys=1 on the bucket (or ListBuckets): proves endpoint, key and bucket."""
        quick = RetryPolicy(attempts=2, base_delay=0.5, deadline=15.0)
        try:
            if bucket:
                self.client.request("GET", bucket, None, what=f"bucket {bucket!r} check",
                                    params=[("list-type", "2"), ("max-keys", "1")], policy=quick)
            else:
                self.client.request("GET", None, None, what="list buckets", policy=quick)
        except Throttled as exc:
            raise Throttled(f"[{self.remote}] S3 endpoint {self.client.host_port} asks us to slow down: {exc}",
                            detail=exc.detail) from None
        except NotFound as exc:
            raise NotFound(f"[{self.remote}] bucket {bucket!r} does not exist at {self.client.endpoint}",
                           detail=exc.detail) from None
        except Transient as exc:
            raise Transient(f"[{self.remote}] cannot reach S3 endpoint {self.client.host_port}: {exc}",
                            detail=exc.detail) from None
        except StoreError as exc:
            raise type(exc)(f"[{self.remote}] {exc}", detail=exc.detail) from None

    def list_buckets(self) -> list[str]:
        answer = self.client.request("GET", None, None, what="list buckets")
        root = parse_xml(answer.content, "list buckets")
        if root.tag != "ListAllMyBucketsResult":
            raise ProtocolError(f"list buckets: unexpected answer <{root.tag}>")
        buckets = root.find("Buckets")
        names = [] if buckets is None else [required_text(b, "Name", "list buckets") for b in buckets]
        return sorted(names)

    def bucket(self, name: str) -> "S3Store":
        return S3Store(self.client, name)

    def close(self) -> None:
        self.client.close()


class S3Store:
    """One bucket. Stateless apart from the shared client: safe to call from many threads."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client = client
        self.name = bucket
        self.capabilities = Capabilities(min_part_size=S3_MIN_PART, max_part_size=S3_MAX_PART,
                                         max_parts=S3_MAX_PARTS, single_put_max=client.single_put_max,
                                         server_side_copy=True, server_side_move=False,
                                         list_page_size=1000, archive_classes=S3_ARCHIVE_CLASSES,
                                         ranged_pieces=True, ranged_into_files=True, batched_stat=True,
                                         parts_from_files=True)

    def __repr__(self) -> str:
        return f"S3Store({self.client.remote!r}, {self.name!r})"

    def _call(self, method: str, key: str | None, **kwargs: Any) -> Answer:
        return self.client.request(method, self.name, key, **kwargs)

    def _retry(self, fn: Callable[[], Any], what: str) -> Any:
        return call_with_retries(fn, self.client.retry, what=f"{self.client.remote}: {what}")

    def _new_object_headers(self, key: str, meta: Mapping[str, str]) -> dict[str, str]:
        headers = meta_headers(meta)
        headers["Content-Type"] = "application/x-directory" if key.endswith("/") else "application/octet-stream"
        if self.client.storage_class:
            headers["x-amz-storage-class"] = self.client.storage_class
        return headers

    # -- reading ---------------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo:
        what = f"stat {key!r}"
        return self._info_from_head(key, self.client.head(self.name, key, what=what), what)

    def stat_many(self, keys: list[str], parallel: int) -> list[ObjectInfo | StoreError]:
        """stat() of every key, `parallel` HEADs at a time from this thread (fasthttp.head_many), each
        tried once: a StoreError (NotFound, Transient, …) in place of a failed one, for the caller to
        retry through stat()."""
        requests = []
        for key in keys:
            host, wire_path = self.client.locate(self.name, key)
            requests.append((wire_path, self.client.signed_headers("HEAD", wire_path, "", {"Host": host},
                                                                   EMPTY_SHA256)))
        if not requests:
            return []
        host = self.client.locate(self.name, keys[0])[0]   # one host for every key of a bucket
        answers = head_many(self.client.lean, self.client.scheme, host, requests, parallel)
        results: list[ObjectInfo | StoreError] = []
        for key, answer in zip(keys, answers):
            what = f"stat {key!r}"
            if isinstance(answer, StoreError):
                results.append(answer)
            elif answer.status >= 300:
                results.append(error_from_response(answer.status, answer.headers, b"", what=what,
                                                   bucket=self.name))
            else:
                try:
                    results.append(self._info_from_head(key, answer.headers, what))
                except StoreError as exc:
                    results.append(exc)
        return results

    def _info_from_head(self, key: str, h: Mapping[str, str], what: str) -> ObjectInfo:
        meta = meta_from_headers(h)
        if "x-amz-restore" in h:
            meta["x-amz-restore"] = h["x-amz-restore"]
        return ObjectInfo(key=key, size=_int(h.get("Content-Length", "0"), what),
                          etag=strip_etag(h.get("ETag")), mtime=parse_http_date(h.get("Last-Modified")) or 0.0,
                          meta=meta, storage_class=h.get("x-amz-storage-class") or "STANDARD")

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        return b"".join(self._ranged(key, start, end, if_match, read_window))

    def read_range_pieces(self, key: str, start: int, end: int, piece: int, *,
                          if_match: str | None = None) -> list[bytes]:
        """read_range as pieces of `piece` bytes, each read off the answer into its own bytes object
        (no copy of the whole range cut up afterwards: a cold sequential read moves every byte once
        fewer)."""
        pieces = self._ranged(key, start, end, if_match, lambda response, n: read_window(response, n, piece))
        if any(len(p) != piece for p in pieces[:-1]):   # a whole-object (200) answer: cut it here
            pieces = cut_pieces(b"".join(pieces), piece)
        return pieces

    def read_range_to_files(self, key: str, start: int, end: int, piece: int, files: Sequence[int], *,
                            if_match: str | None = None) -> bool:
        """store.read_to_files over fasthttp, whose plain-HTTP path splices the bytes from the socket
        into the files without copying them through Python. False, with nothing written, when the
        answer is not exactly that range (the object is shorter, or the server ignores Range): then
        read_to_files reads the pieces its usual way."""
        sizes = piece_sizes(start, end, piece)
        if start < 0 or len(sizes) != len(files):
            raise InvalidArgument(f"bad range [{start}, {end}) in {len(files)} files for {key!r}")
        if not files:
            return True
        host, wire_path = self.client.locate(self.name, key)
        range_headers, what = _range_request(key, start, end, if_match)
        headers = {"Host": host, **range_headers}

        def fetch() -> bool:
            signed = self.client.signed_headers("GET", wire_path, "", headers, EMPTY_SHA256)
            answer = self.client.lean.get_into(self.client.scheme, host, wire_path, signed,
                                               list(zip(files, sizes)))
            if answer is None or answer.status == 416:
                return False   # not a 206 of that length
            if answer.status >= 300:
                raise error_from_response(answer.status, answer.headers, answer.content[:ERROR_BODY_MAX],
                                          what=what, bucket=self.name)
            first, last, _total = parse_content_range(answer.headers.get("Content-Range", ""), what)
            if (first, last) != (start, end - 1):
                raise ProtocolError(f"{what}: server answered range {first}-{last}")
            return True

        return self._retry(fetch, what)

    def _ranged(self, key: str, start: int, end: int, if_match: str | None,
                take: Callable[[requests.Response, int], list[bytes]]) -> list[bytes]:
        if start < 0 or end < start:
            raise InvalidArgument(f"bad range [{start}, {end}) for {key!r}")
        if end == start:
            return []
        headers, what = _range_request(key, start, end, if_match)

        def fetch() -> list[bytes]:
            response = self.client.open("GET", self.name, key, what=what, headers=headers, accept=(416,))
            if response.status_code == 416:
                response.close()
                return []  # the range starts at or past the end of the object
            declared = _declared_length(response)
            if response.status_code == 206:
                first, last, _total = parse_content_range(response.headers.get("Content-Range", ""), what)
                if first != start or last >= end:
                    response.close()
                    raise ProtocolError(f"{what}: server answered range {first}-{last}")
                return take(response, last - first + 1)
            # 200: the server ignored Range and sends the whole object. Take what we asked for.
            if declared is None:
                response.close()
                raise ProtocolError(f"{what}: whole-object answer without Content-Length")
            return [b"".join(read_window(response, min(end, declared)))[start:end]]

        # The retry wraps reading the body too: a cut-short body is as Transient as a reset.
        return self._retry(fetch, what)

    def list(self, prefix: str, *, delimiter: str = "/", token: str | None = None,
             limit: int | None = None) -> ListPage:
        params = [("list-type", "2"), ("encoding-type", "url"), ("prefix", prefix),
                  ("max-keys", str(min(max(1, limit or 1000), 1000)))]
        if delimiter:
            params.append(("delimiter", delimiter))
        if token:
            params.append(("continuation-token", token))
        what = f"list {prefix!r}"
        return parse_list_v2(self._call("GET", None, what=what, params=params).content, what)

    # -- writing ---------------------------------------------------------------------------------

    def put(self, key: str, body: BinaryIO, size: int, meta: Mapping[str, str]) -> ObjectInfo:
        if size > S3_MAX_PUT:
            raise InvalidArgument(f"put {key!r}: {size} bytes is over S3's 5 GiB single-PUT limit")
        headers = self._new_object_headers(key, meta)
        if size <= INLINE_BODY_MAX:
            data = body.read(size) if size else b""
            if len(data) != size:
                raise InvalidArgument(f"put {key!r}: body has {len(data)} bytes, not {size}")
            request_body = _Body(data)
        elif isinstance(body, FileSlice):   # a staged file (the uploader's): sent from the file
            request_body = _Body(region=Body.upload(body, size).region)
        else:
            request_body = _Body(fileobj=body, size=size)
        answer = self._call("PUT", key, what=f"put {key!r}", headers=headers, body=request_body)
        return ObjectInfo(key=key, size=size, etag=strip_etag(answer.headers.get("ETag")),
                          mtime=parse_http_date(answer.headers.get("Date")) or time.time(),
                          meta=dict(meta), storage_class=self.client.storage_class or "STANDARD")

    def create_multipart(self, key: str, size: int, part_size: int,
                         meta: Mapping[str, str]) -> MultipartUpload:
        # The configured part_size is a floor: the caller may ask for more, never for less.
        part_size = max(part_size, self.client.part_size, S3_MIN_PART,
                        math.ceil(size / S3_MAX_PARTS) if size > 0 else 0)
        if part_size > S3_MAX_PART:
            raise InvalidArgument(f"multipart {key!r}: {size} bytes need parts over 5 GiB")
        return self._initiate(key, part_size, meta)

    def _initiate(self, key: str, part_size: int, meta: Mapping[str, str]) -> MultipartUpload:
        what = f"start multipart {key!r}"
        answer = self._call("POST", key, what=what, params=[("uploads", "")],
                            headers=self._new_object_headers(key, meta))
        upload_id = required_text(parse_xml(answer.content, what), "UploadId", what)
        if not upload_id:
            raise ProtocolError(f"{what}: empty UploadId")
        return MultipartUpload(key=key, upload_id=upload_id, part_size=part_size, state={"meta": dict(meta)})

    def upload_part(self, upload: MultipartUpload, number: int, offset: int, data: bytes) -> UploadedPart:
        return self._upload_part(upload, number, _Body(bytes(data)))

    def upload_part_from_file(self, upload: MultipartUpload, number: int, fd: int, offset: int,
                              size: int) -> UploadedPart:
        """upload_part of bytes [offset, offset+size) of an open file, sent from the file
        (uploader.py: memory stays flat whatever the part size)."""
        return self._upload_part(upload, number, _Body(region=FileRegion(fd, offset, size)))

    def _upload_part(self, upload: MultipartUpload, number: int, body: _Body) -> UploadedPart:
        if not 1 <= number <= S3_MAX_PARTS:
            raise InvalidArgument(f"part number {number} outside 1..{S3_MAX_PARTS}")
        what = f"upload part {number} of {upload.key!r}"
        answer = self._call("PUT", upload.key, what=what, body=body,
                            params=[("partNumber", str(number)), ("uploadId", upload.upload_id)])
        etag = strip_etag(answer.headers.get("ETag"))
        if not etag:
            raise ProtocolError(f"{what}: no ETag in the answer")
        return UploadedPart(number=number, etag=etag, size=body.size)

    def complete_multipart(self, upload: MultipartUpload, parts: list[UploadedPart]) -> ObjectInfo:
        ordered = sorted(parts, key=lambda p: p.number)
        xml = "".join(f"<Part><PartNumber>{p.number}</PartNumber><ETag>\"{_xml_escape(p.etag)}\"</ETag></Part>"
                      for p in ordered)
        payload = f"<CompleteMultipartUpload>{xml}</CompleteMultipartUpload>".encode("utf-8")
        what = f"complete multipart {upload.key!r}"
        tries = 0

        attempt = self.client.attempt("POST", self.name, upload.key, what=what, check_body=True,
                                      params=[("uploadId", upload.upload_id)],
                                      headers={"Content-Type": "application/xml"}, body=_Body(payload))

        def complete() -> Answer:
            nonlocal tries
            tries += 1
            return attempt()

        try:
            answer = self._retry(complete, what)
        except NotFound as exc:
            # A retry after a lost answer finds the upload gone because the first try completed it.
            if tries > 1 and s3_code(exc) == "NoSuchUpload":
                done = self.stat(upload.key)
                if done.etag.endswith(f"-{len(ordered)}"):
                    return done
            raise
        etag = strip_etag(child_text(parse_xml(answer.content, what), "ETag", "") or "")
        return ObjectInfo(key=upload.key, size=sum(p.size for p in ordered), etag=etag,
                          mtime=parse_http_date(answer.headers.get("Date")) or time.time(),
                          meta=dict(upload.state.get("meta") or {}),
                          storage_class=self.client.storage_class or "STANDARD")

    def abort_multipart(self, upload: MultipartUpload) -> None:
        try:
            self._call("DELETE", upload.key, what=f"abort multipart {upload.key!r}",
                       params=[("uploadId", upload.upload_id)])
        except NotFound as exc:
            if s3_code(exc) == "NoSuchBucket":
                raise
            # Already aborted or completed: aborting is idempotent.

    def list_multipart(self) -> list[MultipartUpload]:
        uploads: list[MultipartUpload] = []
        markers: list[tuple[str, str]] = []
        for _ in range(MAX_LIST_PAGES):
            answer = self._call("GET", None, what="list multipart uploads",
                                params=[("uploads", ""), ("encoding-type", "url"), *markers])
            page, markers = parse_list_uploads(answer.content, self.client.part_size)
            uploads += page
            if not markers:
                return uploads
        log.warning("%s: more than %d pages of multipart uploads; listed the first ones",
                    self.name, MAX_LIST_PAGES)
        return uploads

    def delete(self, key: str) -> None:
        try:
            self._call("DELETE", key, what=f"delete {key!r}")
        except NotFound as exc:
            if s3_code(exc) == "NoSuchBucket":
                raise

    # -- server-side copies ------------------------------------------------------------------------

    def copy(self, src: str, dst: str, meta: Mapping[str, str] | None = None) -> ObjectInfo:
        source = self.stat(src)
        if source.size > self.client.copy_cutoff:
            return self._multipart_copy(source, dst, meta)
        headers = self._copy_headers(source)
        if meta is not None:
            headers.update(self._new_object_headers(dst, meta))
            headers["x-amz-metadata-directive"] = "REPLACE"
        elif self.client.storage_class:
            headers["x-amz-storage-class"] = self.client.storage_class
        what = f"copy {src!r} to {dst!r}"
        root = parse_xml(self._call("PUT", dst, what=what, headers=headers, check_body=True).content, what)
        mtime_text = child_text(root, "LastModified")
        return ObjectInfo(key=dst, size=source.size, etag=strip_etag(child_text(root, "ETag", "")),
                          mtime=parse_iso8601(mtime_text) if mtime_text else time.time(),
                          meta=dict(meta) if meta is not None else _user_meta(source.meta),
                          storage_class=self.client.storage_class or source.storage_class)

    def _copy_headers(self, source: ObjectInfo) -> dict[str, str]:
        # Conditional on the ETag stat() saw: a source replaced meanwhile gives RemoteChanged.
        headers = {"x-amz-copy-source": quote(f"{self.name}/{source.key}", safe="/~")}
        if source.etag:
            headers["x-amz-copy-source-if-match"] = f'"{source.etag}"'
        return headers

    def _multipart_copy(self, source: ObjectInfo, dst: str, meta: Mapping[str, str] | None) -> ObjectInfo:
        """UploadPartCopy for sources over copy_cutoff (S3 refuses CopyObject above 5 GiB).

        UploadPartCopy copies no metadata: the new upload is created with the source's metadata (or
        `meta`). Every part is conditional on the source ETag, so a source replaced mid-copy fails
        with RemoteChanged instead of producing a mixed object; any failure aborts the upload.
        """
        new_meta = dict(meta) if meta is not None else _user_meta(source.meta)
        part_size = min(max(self.client.copy_part_size, math.ceil(source.size / S3_MAX_PARTS)), S3_MAX_PART)
        upload = self._initiate(dst, part_size, new_meta)
        parts: list[UploadedPart] = []
        try:
            for number, first in enumerate(range(0, source.size, upload.part_size), start=1):
                last = min(first + upload.part_size, source.size) - 1
                what = f"copy part {number} of {source.key!r} to {dst!r}"
                headers = {**self._copy_headers(source), "x-amz-copy-source-range": f"bytes={first}-{last}"}
                answer = self._call("PUT", dst, what=what, headers=headers, check_body=True,
                                    params=[("partNumber", str(number)), ("uploadId", upload.upload_id)])
                etag = strip_etag(required_text(parse_xml(answer.content, what), "ETag", what))
                parts.append(UploadedPart(number=number, etag=etag, size=last - first + 1))
            return self.complete_multipart(upload, parts)
        except BaseException:
            try:
                self.abort_multipart(upload)
            except StoreError as exc:
                log.warning("could not abort multipart copy to %r: %s", dst, exc)
            raise

    def move(self, src: str, dst: str) -> ObjectInfo:
        raise NotSupported("S3 has no server-side move; copy and delete instead")

    def set_meta(self, key: str, meta: Mapping[str, str]) -> ObjectInfo:
        return self.copy(key, key, meta=meta)

    # -- archive storage classes -------------------------------------------------------------------

    def restore(self, key: str, *, days: int, tier: str) -> bool:
        """RestoreObject: a temporary readable copy of an archived object for `days` days.

        True if a restore started now; False if one was already running or the copy is already
        there (S3 answers 409 RestoreAlreadyInProgress, or 200 instead of 202)."""
        what = f"restore {key!r}"
        body = (f"<RestoreRequest><Days>{int(days)}</Days><GlacierJobParameters><Tier>{tier}</Tier>"
                f"</GlacierJobParameters></RestoreRequest>").encode("ascii")
        headers = {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode("ascii"),
                   "Content-Type": "application/xml"}
        try:
            answer = self._call("POST", key, what=what, params=[("restore", "")], headers=headers,
                                body=_Body(body))
        except StoreError as exc:
            code = exc.code
            if code == "RestoreAlreadyInProgress":
                return False
            if code == "InvalidObjectState":  # here it means: not in an archive storage class
                raise InvalidArgument(f"{what}: the object is not in an archive storage class") from None
            raise
        return answer.status == 202


def _user_meta(meta: Mapping[str, str]) -> dict[str, str]:
    """stat() metadata without the server-state entries it carries (x-amz-restore)."""
    return {k: v for k, v in meta.items() if k != "x-amz-restore"}


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ------------------------------------------------------------------------------------------------
# Listing parsers (pure functions, unit-tested)


def parse_list_v2(body: bytes, what: str = "list") -> ListPage:
    root = parse_xml(body, what)
    if root.tag != "ListBucketResult":
        raise ProtocolError(f"{what}: unexpected answer <{root.tag}>")
    encoded = (child_text(root, "EncodingType", "") or "").lower() == "url"

    def key_of(text: str) -> str:
        return unquote_plus(text) if encoded else text

    objects: list[ObjectInfo] = []
    for entry in root.findall("Contents"):
        key = key_of(required_text(entry, "Key", what))
        modified = child_text(entry, "LastModified")
        objects.append(ObjectInfo(key=key, size=_int(child_text(entry, "Size", "0"), what),
                                  etag=strip_etag(child_text(entry, "ETag", "")),
                                  mtime=parse_iso8601(modified) if modified else 0.0,
                                  storage_class=child_text(entry, "StorageClass") or None,
                                  meta_complete=False))
    prefixes = [key_of(required_text(p, "Prefix", what)) for p in root.findall("CommonPrefixes")]
    truncated = (child_text(root, "IsTruncated", "false") or "").strip().lower() == "true"
    token = child_text(root, "NextContinuationToken") if truncated else None
    if truncated and not token:
        raise ProtocolError(f"{what}: truncated listing without a NextContinuationToken")
    return ListPage(objects=objects, prefixes=prefixes, next_token=token or None)


def parse_list_uploads(body: bytes, part_size: int) -> tuple[list[MultipartUpload], list[tuple[str, str]]]:
    """(uploads on this page, the marker params of the next page or [])."""
    what = "list multipart uploads"
    root = parse_xml(body, what)
    if root.tag != "ListMultipartUploadsResult":
        raise ProtocolError(f"{what}: unexpected answer <{root.tag}>")
    encoded = (child_text(root, "EncodingType", "") or "").lower() == "url"
    uploads = []
    for entry in root.findall("Upload"):
        key = required_text(entry, "Key", what)
        uploads.append(MultipartUpload(key=unquote_plus(key) if encoded else key,
                                       upload_id=required_text(entry, "UploadId", what), part_size=part_size))
    truncated = (child_text(root, "IsTruncated", "false") or "").strip().lower() == "true"
    if not truncated:
        return uploads, []
    key_marker = child_text(root, "NextKeyMarker") or ""
    id_marker = child_text(root, "NextUploadIdMarker") or ""
    if not key_marker and not id_marker:
        raise ProtocolError(f"{what}: truncated listing without next markers")
    if encoded:
        key_marker = unquote_plus(key_marker)
    return uploads, [("key-marker", key_marker), ("upload-id-marker", id_marker)]


def open_provider(remote: str, options: Mapping[str, str]) -> S3Provider:
    return S3Provider(remote, options)


__all__ = ["SPEC", "open_provider", "S3Provider", "S3Store", "S3Client", "encode_meta_value",
           "decode_meta_value", "parse_list_v2", "parse_list_uploads", "error_from_response"]
