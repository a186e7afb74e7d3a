"""Wangsu/CDNetworks Cloud Storage (WCS) native provider ("restV1": upload, management and download
domains), speaking the wire protocol of the vendor SDKs (shared/PROTOCOLS.md §3).

Wire map (verified against wcs-python3-sdk 5.0.36 and the vendor's Go/Java SDKs and docs):
- upload domain (`put_url`): `POST /file/upload` (multipart form: token, mimeType, file) for small objects;
  `POST /mkblk/<blockSize>/<blockIndex>`, `POST /bput/<ctx>/<offsetInBlock>`, `POST /mkfile/<size>`
  (body: last ctx of each block, comma-joined, in block order) for large ones. Upload token in the form
  or in `Authorization`; `UploadBatch` names the multipart session; `MimeType` header on mkfile (Go SDK).
- management domain (`mgr_url`): `GET /stat/<EncodedEntryURI>`, `GET /list?bucket=&marker=&limit=&prefix=&mode=`,
  `POST /delete|/move|/copy/...`, `GET /bucket/list`; signed with the management token.
- download domain (`get_url`, bound to one bucket in the console): `GET /<key>` with `Range`, unsigned
  (Java SDK `OperationManager.download`; docs "Download Files"). `{bucket}` in get_url is replaced by the
  bucket name, so one setting can serve several buckets when their domains follow a pattern. Without
  get_url, reads raise NotSupported (put_url and mgr_url do not serve object bytes). Private-bucket
  download signing: no restV1 scheme was found in vendor material (CDN anti-leech is a console setting),
  so none is sent. If the download domain sends no ETag, `if_match` is checked with a stat.
- multipart: a part is one block (a multiple of 4 MiB), sent as mkblk + bput chunks of `bput_size` with
  cumulative offsets; blocks are independent, so parts upload in parallel. WCS has no initiate/abort/list
  of uploads: the uploadBatch id is made up here, abort is a no-op (the service purges unmerged blocks).

Directories are `dir/` marker objects (the project convention, and what the vendor's S3-based wcsfs
makes). Note: the restV1 "Term Description" page says a key must not start or end with "/"; whether the
live restV1 upload refuses such keys is UNVERIFIED (the emulator accepts them).

User metadata: restV1 has none (the `x:` variables of an upload only feed returnBody/callbacks and are not
stored). The one free-form attribute the service stores, returns from stat *and* from list, and keeps on
copy/move is the object's mimeType, settable on both upload paths (`mimeType` form field, `MimeType` mkfile
header). storefs therefore stores `meta` as a MIME parameter:
    application/octet-stream; x-storefs-meta=<urlsafe-base64(compact JSON)>
Verified from vendor material: mimeType is settable and is returned by stat and list. NOT verified against
the live service: that it keeps a parameterised mimeType verbatim, and its length limit (we cap the value at
MAX_MIME_LEN). Replacing metadata (set_meta, copy with new meta) has no server-side operation, so it
re-uploads the object through this client (read from the download domain, upload again): cheap for small
files, a full transfer for large ones.

Errors map once onto storefs.errors (`map_error`): 401/403 → AccessDenied, 404/612/631 → NotFound,
614 → AlreadyExists, 429/503/509 → Throttled, 408/5xx → Transient (retried with backoff, then EIO),
701 (upload context invalid/expired) → the block is uploaded again, 400 → InvalidArgument. The numeric codes
other than the HTTP ones are Qiniu heritage: **UNVERIFIED** in WCS docs; HTTP statuses are mapped first.
Uploads set `overwrite: 1` in the put policy: the service default is "do not overwrite" (docs).
putTime is read in whatever unit it comes (docs say ms; their example is in 100 ns units).

Thread-safety: one pooled requests.Session shared by all threads; no other mutable state after __init__.
"""
from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import io
import json
import logging
import secrets
import time
import zlib
from collections.abc import Callable, Mapping
from typing import BinaryIO, TypeVar
from urllib.parse import quote, urlsplit

import requests

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
from ..wire.retry import call_with_retries
from ..store.contract import Capabilities, ListPage, MultipartUpload, ObjectInfo, UploadedPart
from ..wire.tuning import HTTP_TUNING, parse_http_tuning
from ..wire.auth import wcs as wcs_auth

log = logging.getLogger(__name__)
T = TypeVar("T")

MiB = 1024 * 1024
BLOCK_UNIT = 4 * MiB            # block sizes must be multiples of 4 MiB or the ETag breaks (docs, SDK)
DEFAULT_MIME = "application/octet-stream"
META_PARAM = "x-storefs-meta"
MAX_MIME_LEN = 8192             # our own cap; the service's limit is unknown
ERROR_BODY_MAX = 64 * 1024

SPEC = ProviderSpec(
    type="wcs",
    required=("access_key", "secret_key", "put_url", "mgr_url"),
    optional={
        "get_url": "",               # download domain of the bucket; "{bucket}" is replaced by its name
        "ishttps": "false",          # scheme for hosts given without one (as the SDK's Config.ishttps)
        "bput_size": str(4 * MiB),   # chunk size inside a block (SDK Config.bput_size)
        "token_deadline": "3600",    # upload token lifetime in seconds (SDK Config.deadline)
        "upload_concurrency": "4",   # blocks in flight in upload_file()/metadata rewrites
        **HTTP_TUNING,
    },
    secrets=("secret_key",),
    doc=__doc__ or "",
)

CAPABILITIES = Capabilities(
    min_part_size=BLOCK_UNIT,
    max_part_size=256 * MiB,
    max_parts=10_000,
    single_put_max=16 * MiB,
    server_chosen_part_size=False,
    parts_in_order=False,           # blocks are independent; only the chunks inside one block chain
    server_side_copy=True,
    server_side_move=True,
    list_has_metadata=True,         # list items carry mimeType, where our metadata lives
    real_folders=False,
    list_page_size=1000,
)


class ContextExpired(StoreError):
    """WCS 701: a block context (ctx) is invalid or expired. The block must be uploaded again."""


# ----------------------------------------------------------------------------------------------
# Pure helpers: metadata in mimeType, time units, errors


def encode_meta_mime(meta: Mapping[str, str], base: str = DEFAULT_MIME) -> str:
    """`base; x-storefs-meta=<b64 json>` (just `base` when meta is empty)."""
    base = (base or DEFAULT_MIME).split(";", 1)[0].strip() or DEFAULT_MIME
    if not meta:
        return base
    payload = json.dumps({str(k): str(v) for k, v in meta.items()}, separators=(",", ":"), sort_keys=True)
    value = base64.urlsafe_b64encode(payload.encode("utf-8")).decode("ascii").rstrip("=")
    mime = f"{base}; {META_PARAM}={value}"
    if len(mime) > MAX_MIME_LEN:
        raise InvalidArgument(f"metadata too large for WCS ({len(mime)} > {MAX_MIME_LEN} bytes encoded)")
    return mime


def decode_meta_mime(mime: str | None) -> tuple[str, dict[str, str]]:
    """(base type, meta). An object written by another tool simply has no meta."""
    if not mime:
        return DEFAULT_MIME, {}
    base, _, params = mime.partition(";")
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() != META_PARAM:
            continue
        try:
            decoded = json.loads(wcs_auth.urlsafe_b64decode(value.strip().strip('"')))
        except (ValueError, UnicodeDecodeError):
            log.debug("ignoring undecodable %s parameter", META_PARAM)
            break
        if isinstance(decoded, dict):
            return base.strip() or DEFAULT_MIME, {str(k): str(v) for k, v in decoded.items()}
        break
    return base.strip() or DEFAULT_MIME, {}


def parse_put_time(value: object) -> float:
    """putTime → epoch seconds. The docs call it milliseconds, but their example (13603956734587420 =
    2013-02-09 15:41:13 +08:00) is in 100 ns units (Qiniu heritage): accept every plausible unit."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    if number >= 1e16:
        return number / 1e7
    if number >= 1e14:
        return number / 1e6
    if number >= 1e11:
        return number / 1e3
    return number


def _error_fields(body: bytes) -> tuple[int | None, str]:
    try:
        obj = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return None, body[:200].decode("utf-8", "replace")
    if not isinstance(obj, dict):
        return None, str(obj)[:200]
    code = obj.get("code")
    try:
        number = int(code) if code is not None else None
    except (TypeError, ValueError):
        number = None
    return number, str(obj.get("message") or obj.get("error") or "")[:500]


def map_error(status: int, body: bytes, what: str) -> StoreError:
    """The one translation of a WCS error answer into the storefs error classes."""
    code, message = _error_fields(body)
    detail = f"HTTP {status}, code {code if code is not None else '-'}: {message}"
    codes = {status} | ({code} if code is not None else set())
    text = f"{what}: {message or 'HTTP ' + str(status)}"
    if codes & {401, 403}:
        return AccessDenied(f"{what}: access denied ({message or status})", detail=detail)
    if codes & {404, 612, 631}:
        return NotFound(text, detail=detail)
    if 614 in codes:
        return AlreadyExists(text, detail=detail)
    if codes & {429, 503, 509}:
        return Throttled(text, detail=detail)
    if 701 in codes:
        return ContextExpired(text, detail=detail)
    if status == 408 or status >= 500:
        return Transient(text, detail=detail)
    if status == 400:
        return InvalidArgument(text, detail=detail)
    return StoreError(text, detail=detail)


def _json_object(response: requests.Response, what: str) -> dict:
    body = http.read_body(response)
    try:
        obj = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(f"{what}: reply is not JSON", detail=body[:200].decode("utf-8", "replace")) from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what}: reply is not a JSON object", detail=str(obj)[:200])
    return obj


def _to_int(value: object, what: str) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ProtocolError(f"{what}: bad number {value!r}") from None


def _read_exact(body: BinaryIO, size: int) -> bytes:
    data = body.read(size) if size else b""
    if len(data) != size:
        raise InvalidArgument(f"body gave {len(data)} bytes, {size} expected")
    return data


def _host_url(url: str, https: bool) -> str:
    """As the SDK's https_check: add a scheme when missing; drop a trailing slash."""
    url = url.strip()
    if not url.lower().startswith(("http://", "https://")):
        url = ("https://" if https else "http://") + url
    return url.rstrip("/")


# ----------------------------------------------------------------------------------------------
# Provider


class WcsProvider:
    """One WCS account: AK/SK plus its upload, management and download domains."""

    def __init__(self, remote: str, options: Mapping[str, str]) -> None:
        self.remote = remote
        missing = [k for k in SPEC.required if not str(options.get(k) or "").strip()]
        if missing:
            raise ConfigError(f"[{remote}] missing {', '.join(missing)} for type = wcs")
        opts = {**SPEC.optional, **{k: str(v) for k, v in options.items()}}
        https = opts["ishttps"].strip().lower() in ("1", "true", "yes", "on")
        self._access_key = opts["access_key"].strip()
        self._secret_key = opts["secret_key"].strip()
        self.put_url = _host_url(opts["put_url"], https)
        self.mgr_url = _host_url(opts["mgr_url"], https)
        self.get_url = _host_url(opts["get_url"], https) if opts["get_url"].strip() else ""
        for name in ("put_url", "mgr_url", "get_url"):
            url = getattr(self, name).replace("{bucket}", "bucket")
            if url and not http.is_http_url(url):  # no host, a bad port: say so now
                raise ConfigError(f"[{remote}] {name} {opts[name].strip()!r} is not an http(s) URL")
        # Management tokens sign the path as sent, which includes any path prefix of the domain.
        self._mgr_path_prefix = urlsplit(self.mgr_url).path
        try:
            self.bput_size = int(opts["bput_size"])
            self.token_deadline = int(opts["token_deadline"])
            self.upload_concurrency = max(1, int(opts["upload_concurrency"]))
        except ValueError as exc:
            raise ConfigError(f"[{remote}] bad number in wcs options: {exc}") from None
        if self.bput_size < 64 * 1024:
            raise ConfigError(f"[{remote}] bput_size must be at least 64 KiB")
        self.settings, self.retry = parse_http_tuning(remote, opts)
        self.session = http.new_session(self.settings)

    def __repr__(self) -> str:
        return f"WcsProvider(remote={self.remote!r}, mgr_url={self.mgr_url!r})"

    # -- signing
    def upload_token(self, bucket: str, key: str) -> str:
        deadline_ms = int(time.time() * 1000) + self.token_deadline * 1000
        policy = wcs_auth.upload_policy(bucket, key, deadline_ms, overwrite=True)
        return wcs_auth.upload_token(self._access_key, self._secret_key, policy)

    # -- transport
    def exchange(self, method: str, url: str, *, what: str, ok: tuple[int, ...] = (200,),
                 **kwargs) -> requests.Response:
        """One request; an answer outside `ok` becomes the mapped StoreError."""
        response = http.send(self.session, self.settings, method, url, **kwargs)
        if response.status_code in ok:
            return response
        try:
            body = response.raw.read(ERROR_BODY_MAX, decode_content=True) if kwargs.get("stream") \
                else http.read_body(response)[:ERROR_BODY_MAX]
        except (OSError, requests.RequestException, ValueError):
            body = b""
        finally:
            if kwargs.get("stream"):
                response.close()
        raise map_error(response.status_code, body or b"", what)

    def retried(self, fn: Callable[[], T], what: str) -> T:
        return call_with_retries(fn, self.retry, what=what)

    def mgr(self, method: str, path_and_query: str, *, what: str, body: bytes | None = None) -> dict:
        """A signed management request (signed afresh on each retry), its JSON reply."""
        def attempt() -> dict:
            token = wcs_auth.management_token(self._access_key, self._secret_key,
                                              self._mgr_path_prefix + path_and_query, body)
            response = self.exchange(method, self.mgr_url + path_and_query, what=what,
                                     headers={"Authorization": token}, data=body)
            return _json_object(response, what)
        return self.retried(attempt, what)

    # -- Provider contract
    def check(self, bucket: str | None) -> None:
        if bucket:
            self.mgr("GET", f"/list?bucket={quote(bucket, safe='')}&limit=1", what=f"bucket {bucket}")
        else:
            self.list_buckets()

    def list_buckets(self) -> list[str]:
        reply = self.mgr("GET", "/bucket/list", what="list buckets")
        buckets = reply.get("buckets")
        if not isinstance(buckets, list):
            raise ProtocolError("list buckets: no 'buckets' array", detail=str(reply)[:200])
        return [str(b["name"]) for b in buckets if isinstance(b, dict) and "name" in b]

    def bucket(self, name: str) -> WcsBucket:
        return WcsBucket(self, name)

    def close(self) -> None:
        self.session.close()


def open_provider(remote: str, options: Mapping[str, str]) -> WcsProvider:
    return WcsProvider(remote, options)


# ----------------------------------------------------------------------------------------------
# One bucket


@dataclasses.dataclass(frozen=True)
class _Stat:
    info: ObjectInfo
    mime: str


class WcsBucket:
    """ObjectStore for one WCS bucket."""

    capabilities = CAPABILITIES

    def __init__(self, provider: WcsProvider, name: str) -> None:
        self.p = provider
        self.name = name

    def __repr__(self) -> str:
        return f"WcsBucket({self.p.remote!r}, {self.name!r})"

    # -- metadata
    def _entry(self, key: str) -> str:
        return wcs_auth.encoded_entry(self.name, key)

    def _stat(self, key: str) -> _Stat:
        reply = self.p.mgr("GET", f"/stat/{self._entry(key)}", what=f"stat {key}")
        if str(reply.get("result", "true")).lower() == "false":
            raise map_error(_to_int(reply.get("code", 500), "stat"), json.dumps(reply).encode(), f"stat {key}")
        mime = str(reply.get("mimeType") or "")
        _, meta = decode_meta_mime(mime)
        info = ObjectInfo(key=key, size=_to_int(reply.get("fsize"), f"stat {key}"),
                          etag=str(reply.get("hash") or ""), mtime=parse_put_time(reply.get("putTime")),
                          meta=meta, storage_class=(str(reply["storageClass"]) if reply.get("storageClass")
                                                    else None))
        return _Stat(info, mime)

    def stat(self, key: str) -> ObjectInfo:
        return self._stat(key).info

    # -- listing
    def list(self, prefix: str, *, delimiter: str = "/", token: str | None = None,
             limit: int | None = None) -> ListPage:
        page_limit = max(1, min(int(limit or CAPABILITIES.list_page_size), 1000))
        if delimiter == "/" and (not prefix or prefix.endswith("/")):
            # mode=0: one directory level, files first then folders (docs "List Resources").
            return self._list_page(prefix, token, page_limit, mode=0)
        if not delimiter:
            return self._list_page(prefix, token, page_limit, mode=None)
        return self._list_grouped(prefix, delimiter, token, page_limit)

    def _list_raw(self, prefix: str, marker: str | None, limit: int, mode: int | None) -> dict:
        query = f"/list?bucket={quote(self.name, safe='')}"
        if marker:
            query += f"&marker={quote(marker, safe='=-_.~')}"
        query += f"&limit={limit}"
        if prefix:
            query += f"&prefix={wcs_auth.urlsafe_b64(prefix)}"
        if mode is not None:
            query += f"&mode={mode}"
        return self.p.mgr("GET", query, what=f"list {self.name}:{prefix}")

    def _items(self, reply: dict, what: str) -> list[ObjectInfo]:
        items = reply.get("items") or []
        if not isinstance(items, list):
            raise ProtocolError(f"{what}: 'items' is not a list")
        out = []
        for item in items:
            if not isinstance(item, dict) or "key" not in item:
                raise ProtocolError(f"{what}: bad item", detail=str(item)[:200])
            _, meta = decode_meta_mime(item.get("mimeType"))
            out.append(ObjectInfo(key=str(item["key"]), size=_to_int(item.get("fsize", 0), what),
                                  etag=str(item.get("hash") or ""), mtime=parse_put_time(item.get("putTime")),
                                  meta=meta, storage_class=(str(item["storageClass"])
                                                            if item.get("storageClass") else None)))
        return out

    def _list_page(self, prefix: str, token: str | None, limit: int, mode: int | None) -> ListPage:
        what = f"list {self.name}:{prefix}"
        reply = self._list_raw(prefix, token, limit, mode)
        prefixes = []
        for common in reply.get("commonPrefixes") or []:
            common = str(common)
            prefixes.append(common if common.endswith("/") else common + "/")
        marker = reply.get("marker")
        return ListPage(objects=self._items(reply, what), prefixes=prefixes,
                        next_token=str(marker) if marker else None)

    def _list_grouped(self, prefix: str, delimiter: str, token: str | None, limit: int) -> ListPage:
        """A delimiter the server cannot group by (anything but "/" at a directory boundary): list
        recursively and group here. The token carries the server marker and the last prefix emitted, so
        a prefix spanning several pages is reported once."""
        marker, last_prefix = None, ""
        if token:
            try:
                marker, last_prefix = json.loads(wcs_auth.urlsafe_b64decode(token))
            except (ValueError, TypeError):
                raise InvalidArgument("bad listing token") from None
        reply = self._list_raw(prefix, marker, limit, None)
        objects, prefixes = [], []
        for info in self._items(reply, f"list {self.name}:{prefix}"):
            cut = info.key.find(delimiter, len(prefix))
            if cut < 0:
                objects.append(info)
                continue
            common = info.key[: cut + len(delimiter)]
            if common != last_prefix:
                prefixes.append(common)
                last_prefix = common
        next_marker = reply.get("marker")
        next_token = (wcs_auth.urlsafe_b64(json.dumps([str(next_marker), last_prefix]))
                      if next_marker else None)
        return ListPage(objects=objects, prefixes=prefixes, next_token=next_token)

    # -- reading
    def _download_url(self, key: str) -> str:
        if not self.p.get_url:
            raise NotSupported(f"[{self.p.remote}] get_url (the bucket's download domain) is not set: "
                               "WCS serves object bytes only from a download domain")
        return self.p.get_url.replace("{bucket}", self.name) + "/" + quote(key, safe="/~")

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        if start < 0 or end < start:
            raise InvalidArgument(f"bad range [{start}, {end})")
        if end == start:
            return b""
        url = self._download_url(key)
        headers = {"Range": f"bytes={start}-{end - 1}"}
        if if_match:
            headers["If-Match"] = f'"{if_match}"'
        what = f"read {key}"

        def attempt() -> tuple[bytes, str | None]:
            response = self.p.exchange("GET", url, what=what, ok=(200, 206, 416, 412),
                                       headers=headers, stream=True)
            try:
                if response.status_code == 412:
                    raise RemoteChanged(f"{key} changed on the server")
                etag = (response.headers.get("ETag") or "").strip()
                etag = etag.removeprefix("W/")
                if response.status_code == 416:
                    return b"", etag.strip('"') or None
                if response.status_code == 206:
                    _check_content_range(response.headers.get("Content-Range"), start, what)
                    # A short 206 with a matching Content-Length would be served as data: retry it.
                    body = http.check_range_body(response, http.read_body(response)[: end - start], start, end, what)
                    return body, etag.strip('"') or None
                return _slice_stream(response, start, end - start), etag.strip('"') or None
            finally:
                response.close()

        data, etag = self.p.retried(attempt, what)
        if if_match:
            if etag is None:  # no ETag on the download domain: ask the management domain
                etag = self.stat(key).etag
            if etag != if_match:
                raise RemoteChanged(f"{key} changed on the server")
        return data[: end - start]

    # -- writing
    def put(self, key: str, body: BinaryIO, size: int, meta: Mapping[str, str]) -> ObjectInfo:
        data = _read_exact(body, size)
        return self._put_bytes(key, data, encode_meta_mime(meta), meta)

    def _put_bytes(self, key: str, data: bytes, mime: str, meta: Mapping[str, str]) -> ObjectInfo:
        what = f"upload {key}"
        local_etag = wcs_auth.etag_bytes(data)

        def attempt() -> requests.Response:
            boundary = secrets.token_hex(16)
            payload = _form(boundary, [("token", self.p.upload_token(self.name, key)), ("mimeType", mime)],
                            quote(key, safe=""), data)
            return self.p.exchange("POST", self.p.put_url + "/file/upload", what=what, data=payload,
                                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})

        response = self.p.retried(attempt, what)
        server_etag = _reply_hash(http.read_body(response))
        return ObjectInfo(key=key, size=len(data), etag=server_etag or local_etag, mtime=time.time(),
                          meta=dict(meta))

    def create_multipart(self, key: str, size: int, part_size: int,
                         meta: Mapping[str, str]) -> MultipartUpload:
        part = max(BLOCK_UNIT, -(-max(part_size, 1) // BLOCK_UNIT) * BLOCK_UNIT)
        need = -(-size // CAPABILITIES.max_parts)  # parts must fit in max_parts
        part = max(part, -(-need // BLOCK_UNIT) * BLOCK_UNIT)
        if part > CAPABILITIES.max_part_size:
            raise InvalidArgument(f"{key}: {size} bytes do not fit in {CAPABILITIES.max_parts} parts")
        # WCS has no "initiate": the session is just the uploadBatch id the SDK makes up (32 chars).
        return MultipartUpload(key=key, upload_id=secrets.token_hex(16), part_size=part,
                               state={"mime": encode_meta_mime(meta), "meta": dict(meta), "size": size})

    def upload_part(self, upload: MultipartUpload, number: int, offset: int, data: bytes) -> UploadedPart:
        if number < 1 or offset != (number - 1) * upload.part_size or len(data) > upload.part_size:
            raise InvalidArgument(f"part {number} at {offset} ({len(data)} bytes) does not fit "
                                  f"part size {upload.part_size}")
        if not data:
            raise InvalidArgument("empty part")
        what = f"upload block {number} of {upload.key}"
        ctx = self.p.retried(lambda: self._upload_block(upload, number - 1, data), what)
        return UploadedPart(number=number, etag=ctx, size=len(data))

    def _block_post(self, upload: MultipartUpload, path: str, chunk: bytes, what: str) -> dict:
        headers = {"Authorization": self.p.upload_token(self.name, upload.key),
                   "UploadBatch": upload.upload_id, "Content-Type": DEFAULT_MIME}
        response = self.p.exchange("POST", self.p.put_url + path, what=what, headers=headers, data=chunk)
        return _json_object(response, what)

    def _upload_block(self, upload: MultipartUpload, index: int, data: bytes) -> str:
        """mkblk with the first chunk, then bput the rest with cumulative offsets. One attempt of the
        whole block: a lost reply leaves a stale ctx, so a retry starts the block again."""
        what = f"block {index} of {upload.key}"
        chunk_size = self.p.bput_size
        view = memoryview(data)
        first = data if len(data) <= chunk_size else bytes(view[:chunk_size])
        try:
            reply = self._block_post(upload, f"/mkblk/{len(data)}/{index}", first, what)
            ctx, done = _check_chunk(reply, first, 0, len(data), what)
            while done < len(data):
                piece = bytes(view[done: done + chunk_size])
                reply = self._block_post(upload, f"/bput/{ctx}/{done}", piece, what)
                ctx, done = _check_chunk(reply, piece, done, len(data), what)
        except ContextExpired as exc:
            raise Transient(f"{what}: block context lost ({exc}); uploading the block again") from None
        return ctx

    def complete_multipart(self, upload: MultipartUpload, parts: list[UploadedPart]) -> ObjectInfo:
        ordered = sorted(parts, key=lambda p: p.number)
        meta = dict(upload.state.get("meta") or {})
        mime = str(upload.state.get("mime") or encode_meta_mime(meta))
        if [p.number for p in ordered] != list(range(1, len(ordered) + 1)):
            raise InvalidArgument(f"complete {upload.key}: parts {[p.number for p in ordered]} are not 1..n")
        if not ordered:
            return self._put_bytes(upload.key, b"", mime, meta)
        size = sum(p.size for p in ordered)
        body = ",".join(p.etag for p in ordered).encode("ascii")
        what = f"mkfile {upload.key}"
        tried = [False]

        def attempt() -> dict | None:
            headers = {"Authorization": self.p.upload_token(self.name, upload.key),
                       "UploadBatch": upload.upload_id, "MimeType": mime, "Content-Type": "text/plain"}
            try:
                response = self.p.exchange("POST", f"{self.p.put_url}/mkfile/{size}", what=what,
                                           headers=headers, data=body)
            except Transient:
                tried[0] = True
                raise
            except (ContextExpired, InvalidArgument):
                # A retry after a lost reply finds the blocks already merged: accept the object if it is there.
                if tried[0]:
                    return None
                raise
            return _json_object(response, what)

        reply = self.p.retried(attempt, what)
        etag = str(reply.get("hash") or "") if reply else ""
        if not etag:
            info = self.stat(upload.key)
            if info.size != size:
                raise StoreError(f"{what}: object has {info.size} bytes after mkfile, {size} expected")
            return info
        return ObjectInfo(key=upload.key, size=size, etag=etag, mtime=time.time(), meta=meta)

    def abort_multipart(self, upload: MultipartUpload) -> None:
        """Nothing to do: WCS has no abort; unmerged blocks are purged by the service (docs: ~monthly)."""

    def list_multipart(self) -> list[MultipartUpload]:
        return []  # the protocol cannot list unmerged blocks

    def upload_file(self, key: str, body: BinaryIO, size: int, meta: Mapping[str, str], *,
                    part_size: int = BLOCK_UNIT, concurrency: int | None = None) -> ObjectInfo:
        """Upload a stream of known size: one request when small, else blocks in parallel (at most
        `concurrency` in flight, so memory stays at concurrency × part_size)."""
        if size <= CAPABILITIES.single_put_max:
            return self.put(key, body, size, meta)
        upload = self.create_multipart(key, size, part_size, meta)
        return self.complete_multipart(upload, self._upload_parts(upload, size, body.read, concurrency))

    def _upload_parts(self, upload: MultipartUpload, size: int, read: Callable[[int], bytes],
                      concurrency: int | None) -> list[UploadedPart]:
        workers = concurrency or self.p.upload_concurrency
        parts: list[UploadedPart] = []
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="wcs-part") as pool:
            pending: set[concurrent.futures.Future] = set()
            for number, offset in enumerate(range(0, size, upload.part_size), start=1):
                data = read(min(upload.part_size, size - offset))
                if len(data) != min(upload.part_size, size - offset):
                    raise InvalidArgument(f"{upload.key}: source ended at {offset + len(data)} of {size}")
                pending.add(pool.submit(self.upload_part, upload, number, offset, data))
                if len(pending) >= workers:
                    done, pending = concurrent.futures.wait(pending, return_when="FIRST_COMPLETED")
                    parts += [f.result() for f in done]
            parts += [f.result() for f in pending]
        return parts

    # -- management
    def delete(self, key: str) -> None:
        try:
            self.p.mgr("POST", f"/delete/{self._entry(key)}", what=f"delete {key}")
        except NotFound:
            pass  # idempotent by contract

    def copy(self, src: str, dst: str, meta: Mapping[str, str] | None = None) -> ObjectInfo:
        if meta is not None:
            return self._rewrite(src, dst, meta)
        self.p.mgr("POST", f"/copy/{self._entry(src)}/{self._entry(dst)}", what=f"copy {src} to {dst}")
        return self.stat(dst)

    def move(self, src: str, dst: str) -> ObjectInfo:
        self.p.mgr("POST", f"/move/{self._entry(src)}/{self._entry(dst)}", what=f"move {src} to {dst}")
        return self.stat(dst)

    def set_meta(self, key: str, meta: Mapping[str, str]) -> ObjectInfo:
        return self._rewrite(key, key, meta)

    def _rewrite(self, src: str, dst: str, meta: Mapping[str, str]) -> ObjectInfo:
        """New metadata means a new mimeType, which only an upload sets: read the object back through the
        download domain (pinned to the ETag seen, so a concurrent change is detected) and upload it again."""
        current = self._stat(src)
        info = current.info
        base, _ = decode_meta_mime(current.mime)
        mime = encode_meta_mime(meta, base)
        if info.size <= CAPABILITIES.single_put_max:
            data = self.read_range(src, 0, info.size, if_match=info.etag) if info.size else b""
            if len(data) != info.size:
                raise Transient(f"rewrite {src}: read {len(data)} of {info.size} bytes")
            return self._put_bytes(dst, data, mime, meta)
        upload = self.create_multipart(dst, info.size, 2 * BLOCK_UNIT, meta)
        upload.state["mime"] = mime
        position = [0]

        def read(n: int) -> bytes:
            chunk = self.read_range(src, position[0], position[0] + n, if_match=info.etag)
            position[0] += len(chunk)
            return chunk

        return self.complete_multipart(upload, self._upload_parts(upload, info.size, read, None))


# ----------------------------------------------------------------------------------------------
# Wire helpers


def _form(boundary: str, fields: list[tuple[str, str]], filename: str, data: bytes) -> bytes:
    """multipart/form-data body: text fields, then the file part (the order the SDKs use)."""
    out = io.BytesIO()
    for name, value in fields:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode("utf-8") + b"\r\n")
    out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
              f"Content-Type: {DEFAULT_MIME}\r\n\r\n".encode())
    out.write(data)
    out.write(f"\r\n--{boundary}--\r\n".encode())
    return out.getvalue()


def _reply_hash(body: bytes) -> str:
    """The hash of a normal-upload reply. Its default shape is UNVERIFIED (the SDK treats it as text):
    take `hash` from JSON, else nothing (the caller falls back to the locally computed ETag)."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return ""
    return str(obj.get("hash") or "") if isinstance(obj, dict) else ""


def _check_chunk(reply: dict, chunk: bytes, before: int, block_size: int, what: str) -> tuple[str, int]:
    """(ctx, cumulative offset in the block) from a mkblk/bput reply, checking its crc32."""
    ctx = reply.get("ctx")
    if not isinstance(ctx, str) or not ctx:
        raise ProtocolError(f"{what}: reply without ctx", detail=str(reply)[:200])
    if reply.get("crc32") is not None and _to_int(reply["crc32"], what) != zlib.crc32(chunk) & 0xFFFFFFFF:
        raise Transient(f"{what}: crc32 mismatch, sending the block again")
    offset = _to_int(reply.get("offset", before + len(chunk)), what)
    if offset != before + len(chunk) or offset > block_size:
        raise ProtocolError(f"{what}: server offset {offset}, expected {before + len(chunk)}")
    return ctx, offset


def _check_content_range(value: str | None, start: int, what: str) -> None:
    """A 206 must start where we asked; anything else is a server we do not understand."""
    if not value:
        return
    try:
        unit, _, rest = value.partition(" ")
        first = int(rest.split("-", 1)[0])
    except ValueError:
        raise ProtocolError(f"{what}: bad Content-Range {value!r}") from None
    if unit != "bytes" or first != start:
        raise ProtocolError(f"{what}: Content-Range {value!r} for a read at {start}")


def _slice_stream(response: requests.Response, skip: int, take: int) -> bytes:
    """Bytes [skip, skip+take) of a 200 answer to a ranged GET (a server that ignored Range), read
    without holding more than the wanted bytes."""
    out = bytearray()
    try:
        for chunk in response.iter_content(1024 * 1024):
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            out += chunk[skip: skip + take - len(out)]
            skip = 0
            if len(out) >= take:
                break
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
            requests.exceptions.Timeout) as exc:
        raise Transient(f"download cut short: {exc.__class__.__name__}") from None
    return bytes(out)
