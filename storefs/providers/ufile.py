"""UCloud UFile (US3) native API provider.

Wire facts: /work/shared/PROTOCOLS.md §4, the official API docs (UCloudDoc-Team/api `ufile-api/*.md`) and the
vendor SDKs (`ufile` 3.2.11 for Python, `ufile-gosdk`, `ufile-sdk-java`). Signing lives in `ufile_auth`.

- A bucket is a host label: requests go to `<bucket><upload_suffix>` (downloads to `<bucket><download_suffix>`).
  With `endpoint` set, every request is sent to that URL instead, with the `Host` header still naming
  `<bucket><suffix>` (how the emulator, a proxy or an internal-network address is reached).
- Reads use signed download URLs (`?UCloudPublicKey&Expires&Signature`); everything else is signed in the
  `Authorization: UCloud <pub>:<sig>` header.
- Listing is `GET /?listobjects` (prefix, marker, max-keys ≤ 1000, delimiter "/" or ""), one page per call,
  paged with `NextMarker` while `IsTruncated`. Entries carry `UserMeta`, so no per-entry HEAD is needed.
- Multipart: the server chooses the part size (`BlkSize`); part numbers count from 0 on the wire (1-based
  above this module); finish takes the part ETags, comma-joined, verbatim as the server sent them.
- User metadata is `X-Ufile-Meta-<name>` (names: letters, digits and '-'). Values that are not printable ASCII
  are sent RFC 2047-encoded (`=?UTF-8?B?...?=`) and decoded on the way back.
- Copy is `PUT` with `X-Ufile-Copy-Source`; `X-Ufile-Metadata-Directive: REPLACE` replaces the metadata,
  which is also how `set_meta` works (a copy onto itself: UNVERIFIED against the live service). There is no
  server-side move in the current API, so rename is copy + delete above this layer.

Errors: `{"RetCode": <int>, "ErrMsg": "..."}` plus header `X-SessionId`. They are mapped by HTTP status first
(404 NotFound, 401/403 AccessDenied, 409 AlreadyExists, 412 RemoteChanged, 429/503 Throttled, 5xx Transient);
RetCode -30010 "bucket not exist" (official docs) and -148654 "file not exist" (seen in a client's recorded
US3 answer) are NotFound whatever the status. Throttling and auth RetCodes are UNVERIFIED.

Thread safety: one pooled `requests.Session` per provider; stores hold only immutable config, so parts may be
uploaded from many threads at once.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import email.utils
import hashlib
import io
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote

import requests
import urllib3

from ..wire import transport_requests as http
from ..errors import (
    AccessDenied,
    AlreadyExists,
    ConfigError,
    InvalidArgument,
    NotFound,
    NotSupported,
    ProtocolError,
    RemoteChanged,
    StoreError,
    Throttled,
    Transient,
)
from ..store.registry import ProviderSpec
from ..wire.retry import RetryPolicy, call_with_retries
from ..store.contract import Capabilities, ListPage, MultipartUpload, ObjectInfo, UploadedPart
from ..wire.tuning import HTTP_TUNING, parse_http_tuning
from ..wire.auth import ufile as auth
from ..wire.auth.ufile import (
    meta_from_headers,
    meta_from_listing,
    meta_headers,
    quote_key,
    strip_etag,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

MiB = 1024 * 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# RetCodes known to mean "not found" (see module docstring for where they come from).
RET_BUCKET_NOT_EXIST = -30010
RET_FILE_NOT_EXIST = -148654
NOT_FOUND_RETCODES = {RET_BUCKET_NOT_EXIST, RET_FILE_NOT_EXIST}
# Bucket-management API RetCodes from the official table (ufile-api/error_code.md).
API_NOT_FOUND_RETCODES = {15010, 15039}
API_AUTH_RETCODES = {171, 172}  # UCloud API "signature"/"public key" errors: UNVERIFIED
# Bodies up to this size are read into memory so they can carry a Content-MD5 and be re-sent on retry.
_BUFFER_LIMIT = 16 * MiB

SPEC = ProviderSpec(
    type="ufile",
    required=("public_key", "private_key"),
    optional={
        "upload_suffix": ".cn-bj.ufileos.com",   # <bucket><upload_suffix> is the file API host
        "download_suffix": "",                   # default: upload_suffix
        "endpoint": "",                          # connect every request here (http://host:port); Host unchanged
        "bucket_host": "api.ucloud.cn",          # bucket-management API host (list_buckets)
        "project_id": "",                        # ProjectId for the bucket API (sub-accounts need it)
        "verify_upload_md5": "true",             # send Content-MD5 (hex, as the SDKs do) with bodies
        "expires": "3600",                       # lifetime of signed download URLs (s): room for clock skew
        **HTTP_TUNING,
        "pool_size": "32",
        "upload_concurrency": "8",               # parallel parts in UfileStore.upload()
    },
    secrets=("private_key",),
    doc=("UCloud UFile / US3 native API. public_key/private_key are the API key pair; upload_suffix (and "
         "download_suffix) the region's host suffix, e.g. .cn-bj.ufileos.com; endpoint optionally overrides "
         "where every connection goes (proxy, emulator, internal address) while the Host header still names "
         "<bucket><suffix> (or bucket_host for the bucket API). User metadata is stored in "
         "X-Ufile-Meta-* headers (names limited to letters, digits and '-'). No server-side move."),
)


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _suffix(value: str) -> str:
    value = value.strip()
    return value if not value or value.startswith(".") else "." + value


@dataclasses.dataclass(frozen=True)
class UfileConfig:
    """Parsed once per provider; never re-read per request."""

    public_key: str
    private_key: str = dataclasses.field(repr=False)
    upload_suffix: str = ".cn-bj.ufileos.com"
    download_suffix: str = ".cn-bj.ufileos.com"
    endpoint: str = ""
    bucket_host: str = "api.ucloud.cn"
    project_id: str = ""
    verify_upload_md5: bool = True
    expires: int = 3600
    upload_concurrency: int = 8
    http_settings: http.HttpSettings = dataclasses.field(default_factory=http.HttpSettings)
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> UfileConfig:
        def opt(name: str) -> str:
            value = options.get(name)
            return SPEC.optional[name] if value is None or value == "" else str(value)

        for name in SPEC.required:
            if not str(options.get(name) or "").strip():
                raise ConfigError(f"ufile: {name} is required")
        upload_suffix = _suffix(opt("upload_suffix"))
        endpoint = opt("endpoint").rstrip("/")
        if endpoint and not endpoint.lower().startswith(("http://", "https://")):  # (urlsplit may raise)
            raise ConfigError(f"ufile: endpoint must start with http:// or https://, not {endpoint!r}")
        if endpoint and not http.is_http_url(endpoint):  # no host, a bad port: say so now, not at a request
            raise ConfigError(f"ufile: endpoint {endpoint!r} is not an http(s) URL (http[s]://HOST[:PORT])")
        try:
            settings, retry = parse_http_tuning("ufile", options, pool_size=max(4, int(opt("pool_size"))))
            return cls(
                public_key=str(options["public_key"]).strip(),
                private_key=str(options["private_key"]).strip(),
                upload_suffix=upload_suffix,
                download_suffix=_suffix(opt("download_suffix")) or upload_suffix,
                endpoint=endpoint,
                bucket_host=opt("bucket_host").strip(),
                project_id=opt("project_id").strip(),
                verify_upload_md5=_flag(opt("verify_upload_md5")),
                expires=max(30, int(opt("expires"))),
                upload_concurrency=max(1, int(opt("upload_concurrency"))),
                http_settings=settings, retry=retry,
            )
        except ValueError as exc:
            raise ConfigError(f"ufile: bad number in options: {exc}") from None


def open_provider(remote: str, options: Mapping[str, str]) -> UfileProvider:
    return UfileProvider(remote, UfileConfig.from_options(options))


# ----------------------------------------------------------------------------------------------
# Small wire helpers (metadata, key and ETag encodings live in ufile_auth)


def _q(value: str) -> str:
    return quote(value, safe="~", encoding="utf-8", errors="surrogatepass")


def _http_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _json(resp: requests.Response, what: str) -> dict:
    body = http.read_body(resp)
    try:
        data = json.loads(body.decode("utf-8")) if body else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolError(f"ufile {what}: answer is not JSON", detail=body[:200].decode("utf-8", "replace")) from None
    if not isinstance(data, dict):
        raise ProtocolError(f"ufile {what}: answer is not a JSON object", detail=repr(data)[:200])
    return data


def error_info(resp: requests.Response) -> tuple[int | None, str]:
    """(RetCode, ErrMsg) of an error answer; (None, snippet) when the body is not the JSON error shape."""
    try:
        body = resp.content[:4096]
    except requests.RequestException:
        return None, ""
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


def error_for(resp: requests.Response, what: str) -> StoreError:
    """The StoreError for an error answer (the one place wire errors are mapped)."""
    status = resp.status_code
    ret_code, message = error_info(resp)
    detail = f"HTTP {status}, RetCode {ret_code}, ErrMsg {message!r}, X-SessionId {resp.headers.get('X-SessionId')}"
    text = f"ufile {what}: {message or resp.reason or status}"
    if status == 404 or ret_code in NOT_FOUND_RETCODES:
        return NotFound(text, detail=detail)
    if status in (401, 403):
        return AccessDenied(text, detail=detail)
    if status == 409:
        return AlreadyExists(text, detail=detail)
    if status == 412:
        return RemoteChanged(text, detail=detail)
    if status in (429, 503):
        return Throttled(text, detail=detail)
    if status >= 500 or status == 408:
        return Transient(text, detail=detail)
    if status == 400:
        return InvalidArgument(text, detail=detail)
    return StoreError(text, detail=detail)


class _Body:
    """A request body that can be produced afresh for every retry. Small (or unseekable) bodies are held in
    memory with their MD5 and ETag; larger ones are streamed from the source and hashed on the way."""

    def __init__(self, source: BinaryIO | bytes, size: int, *, hash_md5: bool) -> None:
        self.size = size
        self._stream: BinaryIO | None = None
        self._start = 0
        self._reader: _HashingReader | None = None
        self.data: bytes | None = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.data = bytes(source)
        elif size <= _BUFFER_LIMIT or not _seekable(source):
            self.data = _read_exactly(source, size)
        else:
            self._stream = source
            self._start = source.tell()
        if self.data is not None and len(self.data) != size:
            raise InvalidArgument(f"ufile: body has {len(self.data)} bytes, expected {size}")
        self.md5 = hashlib.md5(self.data).hexdigest() if hash_md5 and self.data is not None else ""
        self._etag = auth.etag_of(self.data) if self.data is not None else ""

    def payload(self) -> Any:
        if self.data is not None:
            return self.data
        assert self._stream is not None
        self._stream.seek(self._start)
        self._reader = _HashingReader(self._stream, self.size)
        return self._reader

    def local_etag(self) -> str:
        if self.data is not None:
            return self._etag
        reader = self._reader
        return reader.hasher.etag() if reader is not None and reader.hasher.size == self.size else ""


class _HashingReader(io.RawIOBase):
    """Reads exactly `size` bytes of a stream, feeding the UFile ETag hasher. `len()` lets requests send a
    Content-Length instead of chunked encoding."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        super().__init__()
        self._stream = stream
        self._left = size
        self._size = size
        self.hasher = auth.EtagHasher()

    def __len__(self) -> int:
        return self._size

    def tell(self) -> int:
        # requests' super_len() subtracts tell() from len(): without it the body would look empty.
        return self._size - self._left

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n is None or n < 0 else min(n, self._left)
        chunk = self._stream.read(n)
        if not chunk:
            raise InvalidArgument(f"ufile: body ended {self._left} bytes early")
        self._left -= len(chunk)
        self.hasher.update(chunk)
        return chunk


def _read_raw(resp: requests.Response, size: int) -> bytes:
    """Exactly the `size` body bytes of a streamed response in one read: several times cheaper in CPU than
    `response.content` (10 KiB chunks) for multi-MiB ranges. Transport failures become Transient."""
    try:
        return resp.raw.read(size, decode_content=True) or b""
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
        raise Transient(f"ufile: body cut short ({exc.__class__.__name__})") from None


def _seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable()) and stream.tell() >= 0
    except (AttributeError, OSError, ValueError):
        return False


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = stream.read(size - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


# ----------------------------------------------------------------------------------------------
# Provider


class UfileProvider:
    """One UFile account: a pooled HTTP session and the factory of per-bucket stores."""

    def __init__(self, remote: str, config: UfileConfig) -> None:
        self.remote = remote
        self.config = config
        self.session = http.new_session(config.http_settings)
        self._closed = False

    def __repr__(self) -> str:
        return f"UfileProvider({self.remote!r}, public_key={self.config.public_key!r})"

    def bucket(self, name: str) -> UfileStore:
        if not name or "/" in name:
            raise InvalidArgument(f"ufile: bad bucket name {name!r}")
        return UfileStore(self, name)

    def check(self, bucket: str | None) -> None:
        if bucket:
            self.bucket(bucket).list("", limit=1)
        else:
            self.list_buckets()

    def list_buckets(self) -> list[str]:
        names: list[str] = []
        offset, limit = 0, 100
        for _ in range(1000):  # bounded: 100 000 buckets is far beyond the per-region limit of 100
            data = self.api_call({"Action": "DescribeBucket", "Offset": str(offset), "Limit": str(limit)})
            batch = data.get("DataSet") or []
            if not isinstance(batch, list):
                raise ProtocolError("ufile DescribeBucket: DataSet is not a list")
            for entry in batch:
                if isinstance(entry, dict) and entry.get("BucketName"):
                    names.append(str(entry["BucketName"]))
            if len(batch) < limit:
                break
            offset += limit
        return sorted(set(names))

    def api_call(self, params: Mapping[str, str]) -> dict:
        """One bucket-management API call (GET api.ucloud.cn/?Action=...), RetCode checked."""
        cfg = self.config
        params = dict(params)
        if cfg.project_id:
            params["ProjectId"] = cfg.project_id
        action = params.get("Action", "?")

        def attempt() -> dict:
            signed = dict(params, PublicKey=cfg.public_key)
            signed["Signature"] = auth.api_signature(params, cfg.public_key, cfg.private_key)
            query = "&".join(f"{_q(k)}={_q(v)}" for k, v in signed.items())
            base = cfg.endpoint or f"https://{cfg.bucket_host}"
            resp = http.send(self.session, cfg.http_settings, "GET", f"{base}/?{query}",
                             headers={"Host": cfg.bucket_host})
            with resp:
                if resp.status_code != 200:
                    raise error_for(resp, action)
                data = _json(resp, action)
            code = data.get("RetCode")
            if code not in (0, "0"):
                detail = f"RetCode {code}, Message {data.get('Message') or data.get('ErrMsg')!r}"
                text = f"ufile {action}: {data.get('Message') or data.get('ErrMsg') or code}"
                if code in API_NOT_FOUND_RETCODES:
                    raise NotFound(text, detail=detail)
                if code in API_AUTH_RETCODES:
                    raise AccessDenied(text, detail=detail)
                raise StoreError(text, detail=detail)
            return data

        return call_with_retries(attempt, cfg.retry, what=f"ufile {action}")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.session.close()


class UfileStore:
    """One UFile bucket."""

    capabilities = Capabilities(
        min_part_size=4 * MiB,            # the BlkSize UFile hands out
        max_part_size=5 * 1024 * MiB,     # server-chosen anyway
        max_parts=1_310_720,              # 5 TB (the object size limit) / 4 MiB: UNVERIFIED
        single_put_max=16 * MiB,          # PutFile takes up to 512 MB; above 16 MiB parallel parts win
        server_chosen_part_size=True,
        parts_in_order=False,             # docs: parts may be uploaded independently and concurrently
        server_side_copy=True,
        server_side_move=False,
        list_has_metadata=True,
        real_folders=False,
        list_page_size=1000,
    )

    def __init__(self, provider: UfileProvider, name: str) -> None:
        self.provider = provider
        self.name = name
        cfg = provider.config
        self._cfg = cfg
        self._upload_host = f"{name}{cfg.upload_suffix}"
        self._download_host = f"{name}{cfg.download_suffix}"
        self._upload_base = cfg.endpoint or f"https://{self._upload_host}"
        self._download_base = cfg.endpoint or f"https://{self._download_host}"

    def __repr__(self) -> str:
        return f"UfileStore({self.name!r})"

    # ------------------------------------------------------------------ plumbing

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        return call_with_retries(fn, self._cfg.retry, what=f"ufile {what}")

    def _send(self, method: str, key: str, *, query: str = "", headers: Mapping[str, str] | None = None,
              content_type: str = "", content_md5: str = "", body: Any = None,
              list_params: Mapping[str, str] | None = None, stream: bool = False) -> requests.Response:
        """One signed request to the upload host (no retries, no status check)."""
        cfg = self._cfg
        data = auth.string_to_sign(method, self.name, key, content_md5=content_md5, content_type=content_type,
                                   list_params=list_params)
        all_headers = {"Host": self._upload_host, "Authorization": auth.authorization(cfg.public_key,
                                                                                       cfg.private_key, data)}
        if content_type:
            all_headers["Content-Type"] = content_type
        if content_md5:
            all_headers["Content-MD5"] = content_md5
        all_headers.update(headers or {})
        url = f"{self._upload_base}/{quote_key(key)}" + (f"?{query}" if query else "")
        return http.send(self.provider.session, cfg.http_settings, method, url, headers=all_headers, data=body,
                         stream=stream)

    def _expect(self, resp: requests.Response, what: str, ok: tuple[int, ...] = (200, 204, 206)) -> None:
        if resp.status_code not in ok:
            with resp:
                raise error_for(resp, what)

    # ------------------------------------------------------------------ metadata

    def stat(self, key: str) -> ObjectInfo:
        def attempt() -> ObjectInfo:
            resp = self._send("HEAD", key)
            with resp:
                self._expect(resp, f"stat {key}")
                return self._info_from_headers(key, resp.headers)
        return self._retry(attempt, f"stat {self.name}/{key}")

    def _info_from_headers(self, key: str, headers: Mapping[str, str]) -> ObjectInfo:
        try:
            size = int(headers.get("Content-Length", ""))
        except ValueError:
            raise ProtocolError(f"ufile stat {key}: no Content-Length") from None
        mtime = _http_time(headers.get("Last-Modified")) or 0.0
        return ObjectInfo(key=key, size=size, etag=strip_etag(headers.get("ETag")), mtime=mtime,
                          meta=meta_from_headers(headers), storage_class=headers.get("X-Ufile-Storage-Class"),
                          meta_complete=True)

    def list(self, prefix: str, *, delimiter: str = "/", token: str | None = None,
             limit: int | None = None) -> ListPage:
        if delimiter not in ("", "/"):
            raise InvalidArgument("ufile: listobjects only supports the delimiters '/' and ''")
        max_keys = max(1, min(self.capabilities.list_page_size, limit or self.capabilities.list_page_size))
        params = {"prefix": prefix, "marker": token or "", "max-keys": str(max_keys), "delimiter": delimiter}
        query = "listobjects&" + "&".join(f"{name}={_q(value)}" for name, value in params.items())

        def attempt() -> dict:
            resp = self._send("GET", "", query=query, list_params=params)
            with resp:
                self._expect(resp, f"list {prefix!r}")
                return _json(resp, "listobjects")
        data = self._retry(attempt, f"list {self.name}/{prefix}")
        return self._parse_listing(data, prefix)

    def _parse_listing(self, data: dict, prefix: str) -> ListPage:
        contents = data.get("Contents") or []
        common = data.get("CommonPrefixes") or []
        if not isinstance(contents, list) or not isinstance(common, list):
            raise ProtocolError("ufile listobjects: Contents/CommonPrefixes are not lists")
        objects: list[ObjectInfo] = []
        try:
            for entry in contents:
                etag = entry.get("ETag") if entry.get("ETag") is not None else entry.get("Etag")
                objects.append(ObjectInfo(
                    key=str(entry["Key"]), size=int(entry.get("Size") or 0), etag=strip_etag(etag),
                    mtime=float(entry.get("LastModified") or entry.get("ModifyTime") or 0),
                    meta=meta_from_listing(entry.get("UserMeta")),
                    storage_class=entry.get("StorageClass") or None,
                    # A server that sends no UserMeta at all tells us nothing about the metadata.
                    meta_complete="UserMeta" in entry))
            prefixes = [str(item["Prefix"]) for item in common]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(f"ufile listobjects: malformed entry ({exc.__class__.__name__}: {exc})") from None
        truncated = data.get("IsTruncated")
        truncated = truncated if isinstance(truncated, bool) else str(truncated).lower() == "true"
        next_token = None
        if truncated:
            next_token = str(data.get("NextMarker") or "") or None
            if next_token is None:
                # Truncated without a marker: continue after the last entry we got.
                last = max([o.key for o in objects] + prefixes, default="")
                if not last:
                    raise ProtocolError("ufile listobjects: truncated page without NextMarker or entries")
                next_token = last
        return ListPage(objects=objects, prefixes=prefixes, next_token=next_token)

    # ------------------------------------------------------------------ data

    def _download_url(self, key: str) -> str:
        cfg = self._cfg
        expires = int(time.time()) + cfg.expires
        query = auth.signed_url_query(cfg.public_key, cfg.private_key, "GET", self.name, key, expires)
        return f"{self._download_base}/{quote_key(key)}?{query}"

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        if start < 0 or end < start:
            raise InvalidArgument(f"ufile: bad range [{start}, {end})")
        if end == start:
            return b""
        want = strip_etag(if_match) if if_match else ""

        def attempt() -> bytes:
            # identity: a compressed answer would break byte ranges and lengths.
            headers = {"Host": self._download_host, "Range": f"bytes={start}-{end - 1}",
                       "Accept-Encoding": "identity"}
            if want:
                headers["If-Match"] = f'"{want}"'
            resp = http.send(self.provider.session, self._cfg.http_settings, "GET", self._download_url(key),
                             headers=headers, stream=True)
            with resp:
                if resp.status_code == 416:
                    return b""
                self._expect(resp, f"read {key}")
                got = strip_etag(resp.headers.get("ETag"))
                if want and got and got != want:
                    raise RemoteChanged(f"ufile read {key}: ETag is {got}, expected {want}")
                if resp.status_code == 206:
                    return self._ranged_body(resp, key, start, end)
                return self._whole_body_slice(resp, start, end)
        return self._retry(attempt, f"read {self.name}/{key}")

    @staticmethod
    def _ranged_body(resp: requests.Response, key: str, start: int, end: int) -> bytes:
        content_range = resp.headers.get("Content-Range", "")
        match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range)
        if not match or int(match.group(1)) != start:
            raise ProtocolError(f"ufile read {key}: unexpected Content-Range {content_range!r}")
        expected = int(match.group(2)) - start + 1
        body = _read_raw(resp, expected)
        if len(body) != expected:
            raise Transient(f"ufile read {key}: got {len(body)} of {expected} bytes")
        return body[: end - start]

    @staticmethod
    def _whole_body_slice(resp: requests.Response, start: int, end: int) -> bytes:
        """A 200 answer to a ranged GET (the server ignored Range): keep only [start, end)."""
        out = bytearray()
        pos = 0
        try:
            for chunk in resp.iter_content(MiB):
                lo, hi = max(start - pos, 0), min(end - pos, len(chunk))
                if lo < hi:
                    out += chunk[lo:hi]
                pos += len(chunk)
                if pos >= end:
                    break
        except requests.RequestException as exc:
            raise Transient(f"ufile read: body cut short ({exc.__class__.__name__})") from None
        return bytes(out)

    def put(self, key: str, body: BinaryIO, size: int, meta: Mapping[str, str]) -> ObjectInfo:
        if size < 0:
            raise InvalidArgument("ufile: negative size")
        headers = meta_headers(meta)
        payload = _Body(body, size, hash_md5=self._cfg.verify_upload_md5)

        def attempt() -> ObjectInfo:
            resp = self._send("PUT", key, content_type=DEFAULT_CONTENT_TYPE, content_md5=payload.md5,
                              headers=dict(headers, **{"Content-Length": str(size)}), body=payload.payload())
            with resp:
                self._expect(resp, f"put {key}")
                etag = strip_etag(resp.headers.get("ETag"))
                self._check_etag(key, size, etag, payload.local_etag())
                mtime = _http_time(resp.headers.get("Last-Modified") or resp.headers.get("Date")) or time.time()
                return ObjectInfo(key=key, size=size, etag=etag, mtime=mtime, meta=dict(meta))
        return self._retry(attempt, f"put {self.name}/{key}")

    @staticmethod
    def _check_etag(key: str, size: int, server: str, local: str) -> None:
        """End-to-end check of a single PUT: a UFile-format ETag must match the bytes we sent."""
        if not server or not local or size == 0:
            return
        if auth.etag_block_count(server) != auth.blocks_for(size):
            return  # not a UFile-format ETag: nothing to compare with
        if server != local:
            raise Transient(f"ufile put {key}: server ETag {server} does not match the data sent ({local})")

    def delete(self, key: str) -> None:
        def attempt() -> None:
            resp = self._send("DELETE", key)
            with resp:
                if resp.status_code == 404 and error_info(resp)[0] != RET_BUCKET_NOT_EXIST:
                    return  # already gone: delete is idempotent (a missing bucket is still an error)
                self._expect(resp, f"delete {key}")
        self._retry(attempt, f"delete {self.name}/{key}")

    def copy(self, src: str, dst: str, meta: Mapping[str, str] | None = None) -> ObjectInfo:
        headers = {"X-Ufile-Copy-Source": f"/{self.name}/{quote(src, encoding='utf-8', errors='surrogatepass')}",
                   "Content-Length": "0"}
        if meta is not None:
            headers["X-Ufile-Metadata-Directive"] = "REPLACE"
            headers.update(meta_headers(meta))

        def attempt() -> None:
            resp = self._send("PUT", dst, headers=headers, body=b"")
            with resp:
                self._expect(resp, f"copy {src} to {dst}")
        self._retry(attempt, f"copy {self.name}/{src} to {dst}")
        return self.stat(dst)

    def move(self, src: str, dst: str) -> ObjectInfo:
        raise NotSupported("ufile has no server-side move; copy and delete instead")

    def set_meta(self, key: str, meta: Mapping[str, str]) -> ObjectInfo:
        return self.copy(key, key, meta=meta)

    # ------------------------------------------------------------------ multipart

    def create_multipart(self, key: str, size: int, part_size: int, meta: Mapping[str, str]) -> MultipartUpload:
        headers = dict(meta_headers(meta), **{"Content-Length": "0"})

        def attempt() -> dict:
            resp = self._send("POST", key, query="uploads", content_type=DEFAULT_CONTENT_TYPE, headers=headers,
                              body=b"")
            with resp:
                self._expect(resp, f"init multipart {key}")
                return _json(resp, "InitiateMultipartUpload")
        data = self._retry(attempt, f"init multipart {self.name}/{key}")
        try:
            upload_id, blk_size = str(data["UploadId"]), int(data["BlkSize"])
        except (KeyError, TypeError, ValueError):
            raise ProtocolError("ufile InitiateMultipartUpload: no UploadId/BlkSize", detail=str(data)[:200]) from None
        if not upload_id or blk_size <= 0:
            raise ProtocolError("ufile InitiateMultipartUpload: empty UploadId or BlkSize", detail=str(data)[:200])
        return MultipartUpload(key=key, upload_id=upload_id, part_size=blk_size,
                               state={"meta": dict(meta), "size": size})

    def upload_part(self, upload: MultipartUpload, number: int, offset: int, data: bytes) -> UploadedPart:
        if number < 1 or offset != (number - 1) * upload.part_size:
            raise InvalidArgument(f"ufile: part {number} must start at {(number - 1) * upload.part_size}, "
                                  f"not {offset} (server part size {upload.part_size})")
        if not data or len(data) > upload.part_size:
            raise InvalidArgument(f"ufile: part {number} has {len(data)} bytes (part size {upload.part_size})")
        md5 = hashlib.md5(data).hexdigest() if self._cfg.verify_upload_md5 else ""
        query = f"uploadId={_q(upload.upload_id)}&partNumber={number - 1}"

        def attempt() -> UploadedPart:
            resp = self._send("PUT", upload.key, query=query, content_type=DEFAULT_CONTENT_TYPE,
                              content_md5=md5, headers={"Content-Length": str(len(data))}, body=data)
            with resp:
                self._expect(resp, f"upload part {number} of {upload.key}")
                etag = resp.headers.get("ETag")
                if not etag:
                    raise ProtocolError(f"ufile upload part {number} of {upload.key}: no ETag")
                # Kept verbatim: the finish body must echo what the server sent.
                return UploadedPart(number=number, etag=etag.strip(), size=len(data))
        return self._retry(attempt, f"upload part {number} of {self.name}/{upload.key}")

    def complete_multipart(self, upload: MultipartUpload, parts: list[UploadedPart]) -> ObjectInfo:
        ordered = sorted(parts, key=lambda p: p.number)
        if not ordered or [p.number for p in ordered] != list(range(1, len(ordered) + 1)):
            raise InvalidArgument(f"ufile: parts of {upload.key} must be 1..n without gaps")
        body = ",".join(p.etag for p in ordered).encode("ascii", "replace")
        total = sum(p.size for p in ordered)
        meta = upload.state.get("meta") or {}
        headers = dict(meta_headers(meta), **{"Content-Length": str(len(body))})
        query = f"uploadId={_q(upload.upload_id)}"
        tries = 0

        def attempt() -> None:
            nonlocal tries
            tries += 1
            resp = self._send("POST", upload.key, query=query, content_type=DEFAULT_CONTENT_TYPE,
                              headers=headers, body=body)
            with resp:
                if resp.status_code == 404 and tries > 1:
                    # An earlier try may have finished the upload before its answer was lost.
                    info = self._stat_or_none(upload.key)
                    if info is not None and info.size == total:
                        return
                self._expect(resp, f"finish multipart {upload.key}")
        self._retry(attempt, f"finish multipart {self.name}/{upload.key}")
        info = self.stat(upload.key)
        if info.size != total:
            raise ProtocolError(f"ufile finish multipart {upload.key}: object has {info.size} bytes, sent {total}")
        return info

    def _stat_or_none(self, key: str) -> ObjectInfo | None:
        try:
            return self.stat(key)
        except NotFound:
            return None

    def abort_multipart(self, upload: MultipartUpload) -> None:
        query = f"uploadId={_q(upload.upload_id)}"

        def attempt() -> None:
            resp = self._send("DELETE", upload.key, query=query)
            with resp:
                if resp.status_code == 404:
                    return  # unknown or already aborted/finished
                self._expect(resp, f"abort multipart {upload.key}")
        self._retry(attempt, f"abort multipart {self.name}/{upload.key}")

    def list_multipart(self) -> list[MultipartUpload]:
        """Unfinished uploads (`GET /?muploadid`). The docs call this API opt-in ("灰度"): where the
        server refuses it, the answer is [] (the protocol cannot say)."""
        uploads: list[MultipartUpload] = []
        marker = ""
        for _ in range(1000):  # bounded paging
            query = f"muploadid&prefix=&marker={_q(marker)}&limit=100"

            def attempt(query: str = query) -> dict | None:
                resp = self._send("GET", "", query=query)
                with resp:
                    if resp.status_code in (400, 404, 405, 501):
                        return None
                    self._expect(resp, "list multipart uploads")
                    return _json(resp, "GetMultiUploadId")
            data = self._retry(attempt, f"list multipart {self.name}")
            if data is None or data.get("RetCode") not in (None, 0, "0"):
                return uploads
            try:
                for entry in data.get("DataSet") or []:
                    uploads.append(MultipartUpload(key=str(entry["FileName"]), upload_id=str(entry["UploadId"]),
                                                   part_size=0, state={}))
            except (KeyError, TypeError):
                raise ProtocolError("ufile GetMultiUploadId: malformed DataSet") from None
            marker = str(data.get("NextMarker") or "")
            if not marker:
                return uploads
        return uploads

    # ------------------------------------------------------------------ convenience

    def upload(self, key: str, source: BinaryIO, size: int, meta: Mapping[str, str], *,
               workers: int | None = None) -> ObjectInfo:
        """Upload a whole seekable stream: one PUT up to `single_put_max`, else the multipart flow with up to
        `workers` parts in flight (memory: about workers × BlkSize). Aborts the upload if a part fails."""
        if size <= self.capabilities.single_put_max:
            return self.put(key, source, size, meta)
        upload = self.create_multipart(key, size, self.capabilities.min_part_size, meta)
        workers = workers or self._cfg.upload_concurrency
        lock = threading.Lock()
        base = source.tell()

        def one(number: int) -> UploadedPart:
            offset = (number - 1) * upload.part_size
            length = min(upload.part_size, size - offset)
            with lock:  # one reader at a time on the shared stream
                source.seek(base + offset)
                data = _read_exactly(source, length)
            if len(data) != length:
                raise InvalidArgument(f"ufile upload {key}: source ended early at part {number}")
            return self.upload_part(upload, number, offset, data)

        count = -(-size // upload.part_size)
        parts: list[UploadedPart] = []
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ufile-part")
        pending: set[concurrent.futures.Future] = set()
        try:
            for number in range(1, count + 1):
                pending.add(pool.submit(one, number))
                # At most ~2×workers part buffers exist at once.
                if len(pending) >= 2 * workers:
                    done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                    parts += [f.result() for f in done]
            done, pending = concurrent.futures.wait(pending)
            parts += [f.result() for f in done]
            pool.shutdown()
            return self.complete_multipart(upload, parts)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            try:
                self.abort_multipart(upload)
            except StoreError as exc:
                log.warning("ufile: could not abort upload of %s: %s", key, exc)
            raise


__all__ = ["SPEC", "UfileConfig", "UfileProvider", "UfileStore", "open_provider"]
