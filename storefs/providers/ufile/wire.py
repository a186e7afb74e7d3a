"""UFile's wire mapping on the wire layer: the request of a bucket call, its two signers (a header on
the upload host, the URL query for downloads), the one error decoder, answer parsing helpers, and the
body of a PUT (hashed for UFile's ETag on the way, so the server's ETag can be checked end to end).

Errors: `{"RetCode": <int>, "ErrMsg": "..."}` plus header `X-SessionId`. They are mapped by HTTP status
first (404 NotFound, 401/403 AccessDenied, 409 AlreadyExists, 412 RemoteChanged, 429/503 Throttled, 5xx
Transient); RetCode -30010 "bucket not exist" (official docs) and -148654 "file not exist" (seen in a
client's recorded US3 answer) are NotFound whatever the status. Throttling and auth RetCodes are
UNVERIFIED.
"""
from __future__ import annotations

import email.utils
import hashlib
import http
import io
import json
import time
from collections.abc import Collection, Mapping
from typing import BinaryIO
from urllib.parse import quote

from ...errors import AccessDenied, AlreadyExists, InvalidArgument, NotFound, ProtocolError, RemoteChanged
from ...errors import StoreError, Throttled, Transient
from ...store.contract import ObjectInfo
from ...wire.answer import Answer, AnswerHeaders
from ...wire.auth import ufile as auth
from ...wire.auth.ufile import meta_from_headers, quote_key, strip_etag
from ...wire.body import EMPTY, Body, read_exactly
from ...wire.client import Request, Signer, WireClient
from .config import UfileConfig

MiB = 1024 * 1024
# UFile's archive storage class (`X-Ufile-Storage-Class: ARCHIVE`, the SDK's restore example).
ARCHIVE_CLASSES = frozenset({"ARCHIVE"})
RESTORE_META = "x-amz-restore"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# RetCodes known to mean "not found" (see module docstring for where they come from).
RET_BUCKET_NOT_EXIST = -30010
RET_FILE_NOT_EXIST = -148654
NOT_FOUND_RETCODES = {RET_BUCKET_NOT_EXIST, RET_FILE_NOT_EXIST}
# Bucket-management API RetCodes from the official table (ufile-api/error_code.md).
API_NOT_FOUND_RETCODES = {15010, 15039}
API_AUTH_RETCODES = {171, 172}  # UCloud API "signature"/"public key" errors: UNVERIFIED
# Bodies up to this size are read into memory so they can carry a Content-MD5.
_BUFFER_LIMIT = 16 * MiB


def q(value: str) -> str:
    """A query value, percent-encoded."""
    return quote(value, safe="~", encoding="utf-8", errors="surrogatepass")


def http_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def parse_json(body: bytes, what: str) -> dict:
    try:
        data = json.loads(body.decode("utf-8")) if body else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolError(f"ufile {what}: answer is not JSON", detail=body[:200].decode("utf-8", "replace")) from None
    if not isinstance(data, dict):
        raise ProtocolError(f"ufile {what}: answer is not a JSON object", detail=repr(data)[:200])
    return data


# -- errors ---------------------------------------------------------------------------------------


def error_info(answer: Answer) -> tuple[int | None, str]:
    """(RetCode, ErrMsg) of an error answer; (None, snippet) when the body is not the JSON error shape."""
    body = answer.content[:4096]
    if not body:
        return None, ""
    try:
        data = json.loads(body.decode("utf-8"))
        if isinstance(data, dict):
            code = data.get("RetCode")
            return (int(code) if code is not None else None), str(data.get("ErrMsg") or data.get("Message") or "")
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError):
        pass
    return None, body[:200].decode("utf-8", "replace")


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return str(status)


_STATUS_ERRORS: dict[int, type[StoreError]] = {
    400: InvalidArgument, 401: AccessDenied, 403: AccessDenied, 408: Transient, 409: AlreadyExists,
    412: RemoteChanged, 429: Throttled, 503: Throttled,
}


def decode_error(answer: Answer, what: str) -> StoreError:
    """The StoreError for an error answer: the provider's one error hook."""
    status = answer.status
    ret_code, message = error_info(answer)
    detail = f"HTTP {status}, RetCode {ret_code}, ErrMsg {message!r}, X-SessionId {answer.headers.get('X-SessionId')}"
    text = f"ufile {what}: {message or _reason(status)}"
    if status == 404 or ret_code in NOT_FOUND_RETCODES:
        cls: type[StoreError] = NotFound
    else:
        cls = _STATUS_ERRORS.get(status) or (Transient if status >= 500 else StoreError)
    return cls(text, detail=detail, code="" if ret_code is None else str(ret_code))


def api_error(data: dict, action: str) -> StoreError | None:
    """The StoreError of a bucket-management API answer whose RetCode is not 0 (they come with 200)."""
    code = data.get("RetCode")
    if code in (0, "0"):
        return None
    detail = f"RetCode {code}, Message {data.get('Message') or data.get('ErrMsg')!r}"
    text = f"ufile {action}: {data.get('Message') or data.get('ErrMsg') or code}"
    if code in API_NOT_FOUND_RETCODES:
        return NotFound(text, detail=detail)
    if code in API_AUTH_RETCODES:
        return AccessDenied(text, detail=detail)
    return StoreError(text, detail=detail)


# -- the body of a PUT -------------------------------------------------------------------------------


class UploadBody:
    """What one PUT sends, with what is known of it before it goes: small (or unseekable) sources are
    read into memory with their MD5 and ETag; larger ones are streamed from the source and hashed on the
    way (rewound, and hashed afresh, for each try)."""

    def __init__(self, source: BinaryIO, size: int, *, hash_md5: bool) -> None:
        self._reader: _HashingReader | None = None
        self.md5 = ""
        self._etag = ""
        if size <= _BUFFER_LIMIT or not source.seekable():
            data = read_exactly(source, size)
            self.body = Body(data=data)
            self.md5 = hashlib.md5(data).hexdigest() if hash_md5 else ""
            self._etag = auth.etag_of(data)
        else:
            self._reader = _HashingReader(source, size)
            self.body = Body(stream=self._reader, size=size)

    def local_etag(self) -> str:
        """The UFile ETag of the bytes sent (by the last try), "" when they were not all sent."""
        reader = self._reader
        if reader is None:
            return self._etag
        return reader.hasher.etag() if reader.hasher.size == self.body.size else ""


class _HashingReader(io.RawIOBase):
    """Exactly `size` bytes of a stream from its current position, fed to the UFile ETag hasher as they
    are read. Seekable to its start only: the wire body rewinds it for each try, and hashing starts over."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        super().__init__()
        self._stream = stream
        self._start = stream.tell()
        self._size = size
        self._pos = 0
        self.hasher = auth.EtagHasher()

    def seekable(self) -> bool:
        return True   # to its start: see seek()

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if (pos, whence) != (0, io.SEEK_SET):
            raise io.UnsupportedOperation("a hashing reader rewinds to its start only")
        self._stream.seek(self._start)
        self._pos = 0
        self.hasher = auth.EtagHasher()
        return 0

    def read(self, n: int | None = -1) -> bytes:
        left = self._size - self._pos
        if left <= 0:
            return b""
        n = left if n is None or n < 0 else min(n, left)
        chunk = self._stream.read(n)
        if not chunk:
            raise InvalidArgument(f"ufile: body ended {left} bytes early")
        self._pos += len(chunk)
        self.hasher.update(chunk)
        return chunk


# -- a bucket's requests -------------------------------------------------------------------------------


class UfileBucketWire:
    """The requests of one bucket: calls go to `<bucket><upload_suffix>` signed in a header, reads to
    `<bucket><download_suffix>` signed in the URL. With `endpoint` set, every request is sent there, the
    Host header still naming the bucket's host."""

    def __init__(self, client: WireClient, config: UfileConfig, name: str) -> None:
        self.client = client
        self.name = name
        self._cfg = config
        self._upload_host = f"{name}{config.upload_suffix}"
        self._download_host = f"{name}{config.download_suffix}"
        self._upload_base = config.endpoint or f"https://{self._upload_host}"
        self._download_base = config.endpoint or f"https://{self._download_host}"

    def _request(self, method: str, key: str, what: str, *, query: str = "",
                 headers: Mapping[str, str] | None = None, body: Body = EMPTY, content_type: str = "",
                 content_md5: str = "") -> Request:
        """A request to the upload host. Content-Type and Content-MD5 are signed (by _signer)."""
        all_headers = {"Host": self._upload_host}
        if content_type:
            all_headers["Content-Type"] = content_type
        if content_md5:
            all_headers["Content-MD5"] = content_md5
        all_headers.update(headers or {})
        return Request(method, self._upload_base, "/" + quote_key(key), query, all_headers, body, what)

    def _signer(self, key: str, list_params: Mapping[str, str] | None = None) -> Signer:
        """Signs a request to the upload host for `key` (raw: the signature covers the key unencoded)."""
        cfg = self._cfg

        def sign(request: Request) -> None:
            data = auth.string_to_sign(request.method, self.name, key,
                                       content_md5=request.headers.get("Content-MD5", ""),
                                       content_type=request.headers.get("Content-Type", ""),
                                       list_params=list_params)
            request.headers["Authorization"] = auth.authorization(cfg.public_key, cfg.private_key, data)

        return sign

    def _download_request(self, key: str, what: str) -> Request:
        return Request("GET", self._download_base, "/" + quote_key(key), headers={"Host": self._download_host},
                       what=what)

    def _download_signer(self, key: str) -> Signer:
        """Signs a download URL, valid `expires` seconds from each try."""
        cfg = self._cfg

        def sign(request: Request) -> None:
            expires = int(time.time()) + cfg.expires
            request.query = auth.signed_url_query(cfg.public_key, cfg.private_key, "GET", self.name, key, expires)

        return sign

    def _call(self, method: str, key: str, what: str, *, query: str = "",
              headers: Mapping[str, str] | None = None, body: Body = EMPTY, content_type: str = "",
              content_md5: str = "", accept: Collection[int] = (),
              list_params: Mapping[str, str] | None = None) -> Answer:
        """One call to the upload host, signed, sent and retried as one."""
        request = self._request(method, key, what, query=query, headers=headers, body=body,
                                content_type=content_type, content_md5=content_md5)
        return self.client.call(request, sign=self._signer(key, list_params), accept=accept)

    def stat(self, key: str) -> ObjectInfo:
        answer = self._call("HEAD", key, f"stat {key}")
        return info_from_headers(key, answer.headers)


def info_from_headers(key: str, headers: AnswerHeaders) -> ObjectInfo:
    try:
        size = int(headers.get("Content-Length") or "")
    except ValueError:
        raise ProtocolError(f"ufile stat {key}: no Content-Length") from None
    mtime = http_time(headers.get("Last-Modified")) or 0.0
    meta = meta_from_headers(headers)
    restore = headers.get("X-Ufile-Restore")
    if restore:
        # The restore state of an ARCHIVE file, in S3's `x-amz-restore` form: where the archive gate
        # (retrieval/gate.py) reads it for every store.
        meta[RESTORE_META] = restore
    return ObjectInfo(key=key, size=size, etag=strip_etag(headers.get("ETag")), mtime=mtime,
                      meta=meta, storage_class=headers.get("X-Ufile-Storage-Class"),
                      meta_complete=True)
