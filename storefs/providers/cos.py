"""Tencent COS v4 (the deprecated JSON API with real folders) as a storefs bucket provider.

Wire facts: /work/shared/PROTOCOLS.md §2 and tencentyun/cos-python-sdk-v4 (`qcloud_cos/cos_op.py`).

- API:      <scheme>://<region>.file.myqcloud.com/files/v2/<appid>/<bucket><quoted cos path>
- Download: <scheme>://<bucket>-<appid>.cos<region>.myqcloud.com<quoted path>?sign=<sign_download>
  With `endpoint` set (an emulator, a proxy) both go to that base URL; downloads then carry the bucket and
  appid in the Host header (`<bucket>-<appid>.<download_host>`), so one endpoint serves many buckets.
- Replies are JSON `{"code": 0|<negative>, "message", "data", "request_id"}`; errors are mapped onto
  `storefs.errors` once, in `_error_for`.
- Form posts are multipart/form-data in which every field is a file part named after itself
  (`filename="op"`), exactly what the SDK's `requests.post(files=...)` sends.

Mapping onto the ObjectStore contract (see SPEC.doc for the user-facing version):
- A key ending in "/" is a real COS folder: put("d/") creates it (op=create), stat/list/delete work on it.
  Files may live under folders that were never created ("virtual" folders): listings still show them.
- User metadata is a JSON object in `biz_attr`, sent with the upload itself (single upload and
  upload_slice_init), so data and metadata land in one request. Stat also reads `custom_headers`
  `x-cos-meta-*` (what cosfs/COS v5 write), with `biz_attr` winning on conflicts.
- COS v4 forbids `? * : | \\ < > "` and whitespace-only path segments: such characters are stored as
  look-alikes (rclone's encoder convention) and turned back on the way out.
- Recursive listing (delimiter "") walks folders depth-first, one page per request; the walk state rides
  in the continuation token.

Thread safety: one pooled requests.Session; all per-call state is local. The only shared mutable state
is `_gates` (serial slice uploads, guarded by `_gates_lock`) and `_page_cap` (an int, set once).
"""
from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import re
import secrets
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from typing import BinaryIO
from urllib.parse import urlsplit

import requests

from ..wire import transport_requests as http
from ..errors import (
    AccessDenied,
    AlreadyExists,
    ConfigError,
    InvalidArgument,
    NotEmpty,
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
from ..wire.auth.cos import Credentials, Signer, quote_path

log = logging.getLogger(__name__)

USER_AGENT = "storefs-cos-v4"
SLICE_SIZES = (512 * 1024, 1024 * 1024, 2 * 1024 * 1024, 3 * 1024 * 1024)  # docs: valid slice sizes
SINGLE_UPLOAD_MAX = 8 * 1024 * 1024  # the SDK switches to slices at 8 MiB (its hard limit is 20 MiB)
LIST_NUM_MAX = 1000
_SHA1_HEX = re.compile(r"[0-9a-f]{40}")
LIST_NUM_OLD_MAX = 199  # -165 "单次拉取目录最大支持199" on old servers
WALK_REQUESTS_PER_CALL = 8

SPEC = ProviderSpec(
    type="cos",
    required=("appid", "secret_id", "secret_key"),
    one_of=(("region", "endpoint"),),
    optional={
        "region": "",            # sh, gz, tj, sgp (or any region short name)
        "endpoint": "",          # base URL for API and downloads, e.g. http://127.0.0.1:9000
        "download_endpoint": "", # base URL for downloads only (default: endpoint, else the region's host)
        "download_host": "",     # host suffix after "<bucket>-<appid>." (default cos<region>.myqcloud.com)
        "scheme": "https",       # for the region's API host
        "download_scheme": "http",  # the SDK downloads over http only
        "sign_expire": "300",    # seconds a multi-use signature lives
        "slice_size": str(3 * 1024 * 1024),
        "upload_concurrency": "4",  # slices in flight for put() of large bodies
        "list_page_size": str(LIST_NUM_MAX),
        **HTTP_TUNING,
    },
    secrets=("secret_key",),
    doc="""Tencent COS v4 (JSON API). Keys: appid, secret_id, secret_key, and region (sh, gz, tj, sgp)
or endpoint (a base URL such as http://127.0.0.1:9000 serving both API and downloads).
Folders are real COS folders: mkdir creates one, rmdir deletes it; files may also sit under folders
that were never created, which listings still show.
Metadata (mtime, mode, uid, gid, symlink ...) is stored as a JSON object in the object's biz_attr, set
in the same request as the upload (folders keep theirs in the folder's biz_attr); x-cos-meta-* headers
written by other tools (cosfs, COS v5) are read too.
COS v4 forbids ? * : | \\ < > " and whitespace-only path segments: storefs stores these characters as
full-width look-alikes (? as U+FF1F ...), spaces of such segments as U+2420, and quotes genuine
look-alikes with U+201B, so every name round-trips. Listings come back in the server's order of the
stored names, which differs from plain key order only for names with such characters.
Large files go up as 3 MiB slices in parallel (unless the server asks for serial upload); there is no
abort call in COS v4, so an abandoned upload session simply expires on the server.
Recursive listings walk the folder tree page by page (COS v4 has no recursive list).""",
)


# ----------------------------------------------------------------------------------------------
# Name encoding: COS v4 path rules (qcloud_cos/cos_params_check.py::check_cos_path_valid)

_FORBIDDEN = '?*:|\\<>"'
_TO_LOOKALIKE = {c: chr(ord(c) + 0xFEE0) for c in _FORBIDDEN}  # full-width forms, U+FF01..U+FF5E
_WHITESPACE = " \t\n\r\f\v"  # `\s` of the SDK's py2 byte-string regex
_WS_PICTURE = {" ": "\u2420", **{c: chr(0x2400 + ord(c)) for c in "\t\n\r\f\v"}}
_QUOTE = "\u201b"
_FROM_LOOKALIKE = {v: k for k, v in {**_TO_LOOKALIKE, **_WS_PICTURE}.items()}
_RESERVED = set(_FROM_LOOKALIKE) | {_QUOTE}


def encode_key(key: str) -> str:
    """A storefs key as a COS v4 path (without the leading '/'). Reversible with `decode_name`."""
    segments = key.split("/")
    out: list[str] = []
    for i, segment in enumerate(segments):
        followed_by_slash = i < len(segments) - 1
        if followed_by_slash and segment == "":
            raise InvalidArgument(f"empty path segment in {key!r}: COS v4 cannot store it")
        ws_only = followed_by_slash and all(c in _WHITESPACE for c in segment)
        chars = []
        for c in segment:
            if c in _RESERVED:
                chars.append(_QUOTE + c)
            elif c in _TO_LOOKALIKE:
                chars.append(_TO_LOOKALIKE[c])
            elif ws_only:
                chars.append(_WS_PICTURE[c])
            else:
                chars.append(c)
        out.append("".join(chars))
    return "/".join(out)


def decode_name(name: str) -> str:
    """The inverse of `encode_key`, for names coming back from the server."""
    if not any(c in _RESERVED for c in name):
        return name
    out: list[str] = []
    it = iter(name)
    for c in it:
        if c == _QUOTE:
            out.append(next(it, ""))
        else:
            out.append(_FROM_LOOKALIKE.get(c, c))
    return "".join(out)


# ----------------------------------------------------------------------------------------------
# Metadata in biz_attr


def meta_to_biz_attr(meta: Mapping[str, str]) -> str:
    if not meta:
        return ""
    return json.dumps({str(k).lower(): str(v) for k, v in meta.items()}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)


def meta_from_wire(biz_attr: object, custom_headers: object) -> dict[str, str]:
    """User metadata from a stat reply: x-cos-meta-* headers, overlaid by our JSON in biz_attr."""
    meta: dict[str, str] = {}
    if isinstance(custom_headers, dict):
        for name, value in custom_headers.items():
            lname = str(name).lower()
            if lname.startswith("x-cos-meta-") and len(lname) > len("x-cos-meta-"):
                meta[lname[len("x-cos-meta-"):]] = str(value)
    if isinstance(biz_attr, str) and biz_attr:
        try:
            parsed = json.loads(biz_attr)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and all(isinstance(v, str) for v in parsed.values()):
            meta.update({str(k).lower(): v for k, v in parsed.items()})
        else:
            meta["biz_attr"] = biz_attr  # someone else's free text: keep it visible, untouched
    return meta


# ----------------------------------------------------------------------------------------------
# Errors: the one place where COS v4 codes become storefs errors

_NOT_FOUND = {-197, -166, -133, -4017}  # -4017: upload session unknown/expired (emulator's code)
_EXISTS = {-177, -178, -176}
_THROTTLED = {-71, -143}  # -143: "writing too fast on a single dir" (clients retry it like -71)
_AUTH = {-47, -48, -59, -61, -63, -70, -96, -97}
_BACKEND = {-181, -195, -196, -5997, -4016}  # -4016 sha mismatch: the body was damaged in transit
_BAD_REQUEST = {-5999, -5965, -175, -284, -170, -165, -180, -4019, -4020, -29094}


def _error_for(code: int, message: str, status: int, request_id: str, what: str) -> StoreError:
    detail = f"code={code} message={message!r} http={status} request_id={request_id}"
    text = f"{what}: COS error {code} ({message})"
    if code in _NOT_FOUND:
        cls: type[StoreError] = NotFound
    elif code in _EXISTS:
        cls = AlreadyExists
    elif code == -173:
        cls = NotEmpty
    elif code in _THROTTLED:
        cls = Throttled
    elif code in _AUTH:
        cls = AccessDenied
    elif code in _BACKEND:
        cls = Transient
    elif code in _BAD_REQUEST:
        cls = InvalidArgument
    else:
        cls = _class_for_status(status)
    return cls(text, detail=detail, code=str(code))


def _class_for_status(status: int) -> type[StoreError]:
    if status == 404:
        return NotFound
    if status in (401, 403):
        return AccessDenied
    if status == 409:
        return AlreadyExists
    if status == 412:
        return RemoteChanged
    if status in (429, 503):
        return Throttled
    if status >= 500:
        return Transient
    if status >= 400:
        return InvalidArgument
    return ProtocolError


def _parse_reply(resp: requests.Response, body: bytes, what: str) -> dict:
    """The `data` of a successful API reply; raises the mapped error otherwise."""
    status = resp.status_code
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or "code" not in doc:
        if status >= 300:
            raise _class_for_status(status)(f"{what}: HTTP {status}", detail=body[:200].decode("utf-8", "replace"))
        raise ProtocolError(f"{what}: reply is not COS JSON", detail=body[:200].decode("utf-8", "replace"))
    try:
        code = int(doc["code"])
    except (TypeError, ValueError):
        raise ProtocolError(f"{what}: bad code in reply", detail=str(doc.get("code"))[:100]) from None
    if code != 0:
        raise _error_for(code, str(doc.get("message", "")), status, str(doc.get("request_id", "")), what)
    if status >= 300:
        raise ProtocolError(f"{what}: code 0 with HTTP {status}")
    data = doc.get("data")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProtocolError(f"{what}: `data` is not an object")
    return data


def _num(value: object, what: str, default: float | None = None) -> float:
    if value is None or value == "":
        if default is not None:
            return default
        raise ProtocolError(f"{what}: missing number")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ProtocolError(f"{what}: not a number: {str(value)[:40]!r}") from None


def encode_form(fields: list[tuple[str, bytes | str]]) -> tuple[bytes, str]:
    """multipart/form-data where every field is a file part named after itself (the SDK's shape)."""
    boundary = secrets.token_hex(16)
    chunks: list[bytes] = []
    for name, value in fields:
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                      f'filename="{name}"\r\n\r\n'.encode())
        chunks.append(value if isinstance(value, bytes) else value.encode("utf-8"))
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


# ----------------------------------------------------------------------------------------------
# Configuration, parsed once


_REGIONS = {"sh": "sh", "shanghai": "sh", "gz": "gz", "guangzhou": "gz", "tj": "tj", "tianjing": "tj",
            "tianjin": "tj", "sgp": "sgp", "singapore": "sgp"}


@dataclasses.dataclass(frozen=True)
class CosConfig:
    creds: Credentials
    api_base: str                 # up to, not including, /files/v2
    download_base: str | None     # base URL when downloads go to a fixed endpoint, else None
    download_host: str            # "<bucket>-<appid>." + this is the download host
    download_scheme: str
    sign_expire: int
    slice_size: int
    upload_concurrency: int
    list_page_size: int
    http: http.HttpSettings
    retry: RetryPolicy

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> CosConfig:
        opts = {**SPEC.optional, **{k: v for k, v in options.items() if v is not None}}
        for key in SPEC.required:
            if not opts.get(key):
                raise ConfigError(f"cos: {key} is required")
        appid = opts["appid"].strip()
        if not appid.isdigit():
            raise ConfigError("cos: appid must be the numeric APPID (e.g. 1250000000)")
        region = _REGIONS.get(opts["region"].strip().lower(), opts["region"].strip().lower())
        endpoint = opts["endpoint"].strip().rstrip("/")
        if not region and not endpoint:
            raise ConfigError("cos: give region (sh, gz, tj, sgp) or endpoint")
        for name in ("endpoint", "download_endpoint"):
            value = opts[name].strip()
            if value and not value.lower().startswith(("http://", "https://")):
                raise ConfigError(f"cos: {name} must start with http:// or https://")
            if value and not http.is_http_url(value):  # no host, a bad port: say so now, not at a request
                raise ConfigError(f"cos: {name} {value!r} is not an http(s) URL (http[s]://HOST[:PORT])")
        api_base = endpoint or f"{opts['scheme']}://{region}.file.myqcloud.com"
        download_base = opts["download_endpoint"].strip().rstrip("/") or endpoint or None
        download_host = opts["download_host"].strip() or (
            f"cos{region}.myqcloud.com" if region else urlsplit(endpoint).netloc)
        settings, retry = parse_http_tuning("cos", opts)
        try:
            slice_size = _pick_slice(int(opts["slice_size"]))
            return cls(
                creds=Credentials(appid, opts["secret_id"].strip(), opts["secret_key"].strip()),
                api_base=api_base, download_base=download_base, download_host=download_host,
                download_scheme=opts["download_scheme"], sign_expire=max(30, int(opts["sign_expire"])),
                slice_size=slice_size, upload_concurrency=max(1, int(opts["upload_concurrency"])),
                list_page_size=min(LIST_NUM_MAX, max(1, int(opts["list_page_size"]))),
                http=settings, retry=retry,
            )
        except ValueError as exc:
            raise ConfigError(f"cos: bad numeric option: {exc}") from None


def _pick_slice(wanted: int) -> int:
    """The smallest documented slice size >= wanted (capped at the 3 MiB maximum)."""
    for size in SLICE_SIZES:
        if size >= wanted:
            return size
    return SLICE_SIZES[-1]


# ----------------------------------------------------------------------------------------------
# Serial slice uploads: the server may demand offsets in order (serial_upload=1)


class _SerialGate:
    """Lets upload_part calls of one session through in offset order, whatever thread they run on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.next_offset = 0

    def wait_turn(self, offset: int, timeout: float) -> None:
        with self._cond:
            # On timeout we go ahead anyway and let the server judge (a caller may resend a slice).
            self._cond.wait_for(lambda: offset <= self.next_offset, timeout=timeout)

    def done(self, offset: int, length: int) -> None:
        with self._cond:
            self.next_offset = max(self.next_offset, offset + length)
            self._cond.notify_all()


# ----------------------------------------------------------------------------------------------
# The store


class CosStore:
    """One COS v4 bucket."""

    capabilities = Capabilities(
        min_part_size=SLICE_SIZES[1],
        max_part_size=SLICE_SIZES[-1],
        max_parts=1_000_000,  # slices are addressed by offset; no documented count limit
        single_put_max=SINGLE_UPLOAD_MAX,
        server_chosen_part_size=True,
        parts_in_order=False,  # serial_upload sessions are ordered inside the provider
        server_side_copy=True,
        server_side_move=True,
        list_has_metadata=False,
        real_folders=True,
        list_page_size=LIST_NUM_MAX,
    )

    def __init__(self, provider: CosProvider, name: str) -> None:
        self._p = provider
        self._cfg = provider.config
        self.name = name
        self._base = f"{self._cfg.api_base}/files/v2/{self._cfg.creds.appid}/{name}"

    def __repr__(self) -> str:
        return f"CosStore({self.name!r})"

    # --- plumbing ---------------------------------------------------------------------------

    def _cos_path(self, key: str) -> str:
        if key.startswith("/"):
            raise InvalidArgument(f"key {key!r} starts with '/'")
        return "/" + encode_key(key)

    def _call(self, method: str, cos_path: str, what: str, *, once: bool = False,
              params: dict | None = None, form: list | None = None, json_body: dict | None = None,
              on_retry_error: Callable[[StoreError, int], dict | None] | None = None) -> dict:
        """One API request with retries; each try is signed afresh (single-use signs cannot repeat)."""
        url = self._base + quote_path(cos_path)
        attempt = 0

        def once_try() -> dict:
            nonlocal attempt
            attempt += 1
            signer = self._p.signer
            sign = (signer.sign_once(self.name, cos_path) if once else
                    signer.sign_more(self.name, cos_path, int(time.time()) + self._cfg.sign_expire))
            headers = {"Authorization": sign, "User-Agent": USER_AGENT}
            data: bytes | None = None
            if form is not None:
                data, headers["Content-Type"] = encode_form(form)
            elif json_body is not None:
                data = json.dumps(json_body).encode()
                headers["Content-Type"] = "application/json"
            resp = http.send(self._p.session, self._cfg.http, method, url, headers=headers,
                             params=params, data=data)
            body = http.read_body(resp)
            try:
                return _parse_reply(resp, body, what)
            except StoreError as exc:
                # A retried request may find its own earlier, unanswered success.
                if attempt > 1 and on_retry_error is not None and not isinstance(exc, Transient):
                    recovered = on_retry_error(exc, attempt)
                    if recovered is not None:
                        return recovered
                raise

        return call_with_retries(once_try, self._cfg.retry, what=what)

    def _info_from_stat(self, key: str, data: dict) -> ObjectInfo:
        meta = meta_from_wire(data.get("biz_attr"), data.get("custom_headers"))
        mtime = _num(data.get("mtime") or data.get("ctime"), f"stat {key}", 0.0)
        if key.endswith("/") or key == "":
            return ObjectInfo(key=key, size=0, etag="", mtime=mtime, meta=meta)
        size = int(_num(data.get("filesize"), f"stat {key} filesize"))
        filelen = data.get("filelen")
        if filelen not in (None, "") and int(_num(filelen, f"stat {key} filelen")) < size:
            raise NotFound(f"stat {key}: upload not finished ({filelen}/{size} bytes)")
        sha = data.get("sha")
        etag = sha if isinstance(sha, str) and sha else f"{size}-{int(mtime)}"
        return ObjectInfo(key=key, size=size, etag=etag, mtime=mtime, meta=meta)

    # --- reading ------------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo:
        data = self._call("GET", self._cos_path(key), f"stat {key!r}", params={"op": "stat"})
        return self._info_from_stat(key, data)

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        if key.endswith("/") or not key:
            raise NotFound(f"{key!r} is a folder")
        if end <= start:
            return b""
        cos_path = self._cos_path(key)
        cfg = self._cfg
        bucket_host = f"{self.name}-{cfg.creds.appid}.{cfg.download_host}"
        headers = {"Range": f"bytes={start}-{end - 1}", "User-Agent": USER_AGENT}
        if cfg.download_base:
            base = cfg.download_base
            headers["Host"] = bucket_host
        else:
            base = f"{cfg.download_scheme}://{bucket_host}"
        # No If-Match on the wire: the download host's own ETag need not be the v4 `sha` we use as
        # etag (it may be an MD5), and a server honouring If-Match would then refuse every read.
        what = f"read {key!r}"

        def once_try() -> tuple[bytes, str | None]:
            sign = self._p.signer.sign_download(self.name, cos_path, int(time.time()) + cfg.sign_expire)
            # The SDK appends the base64 sign unencoded; '+', '/' and '=' are legal in a query.
            url = f"{base}{quote_path(cos_path)}?sign={sign}"
            resp = http.send(self._p.session, cfg.http, "GET", url, headers=headers)
            body = http.read_body(resp)
            if resp.status_code == 416:
                return b"", resp.headers.get("ETag")
            if resp.status_code == 412:
                raise RemoteChanged(f"{what}: changed since etag {if_match}")
            if resp.status_code not in (200, 206):
                _parse_reply(resp, body, what)  # raises the mapped error
                raise ProtocolError(f"{what}: HTTP {resp.status_code}")
            if resp.status_code == 200:  # server ignored the Range
                body = body[start:end]
            elif len(body) > end - start:
                raise ProtocolError(f"{what}: {len(body)} bytes for a {end - start}-byte range")
            else:  # a short 206 with a matching Content-Length would be served as data: retry it
                http.check_range_body(resp, body, start, end, what)
            return body, resp.headers.get("ETag")

        body, etag = call_with_retries(once_try, cfg.retry, what=what)
        if if_match:
            current = (etag or "").strip().strip('"').lower()
            if not (_SHA1_HEX.fullmatch(current) and _SHA1_HEX.fullmatch(if_match)):
                current = self.stat(key).etag  # not comparable with our etag: ask for the sha
            if current != if_match:
                raise RemoteChanged(f"{what}: etag is now {current}, expected {if_match}")
        return body

    def list(self, prefix: str, *, delimiter: str = "/", token: str | None = None,
             limit: int | None = None) -> ListPage:
        num = min(limit or self._cfg.list_page_size, self._p.page_cap)
        if delimiter == "/":
            return self._list_level(prefix, token, num)
        if delimiter == "":
            return self._list_walk(prefix, token, num)
        raise NotSupported("COS v4 lists folders: only '/' or '' (recursive) as delimiter")

    def _list_page(self, folder: str, name_prefix: str, context: str, num: int) -> tuple[list, str, bool]:
        """One op=list request: (infos, next context, listover)."""
        list_path = self._cos_path(folder) + encode_key(name_prefix) if folder else \
            "/" + encode_key(name_prefix)
        what = f"list {folder + name_prefix!r}"
        try:
            data = self._call("GET", list_path, what, params={"op": "list", "num": str(num), "context": context})
        except InvalidArgument as exc:
            if exc.code not in ("-165", "-170") or num <= LIST_NUM_OLD_MAX:
                raise
            self._p.page_cap = LIST_NUM_OLD_MAX  # an older server: remember its smaller page
            return self._list_page(folder, name_prefix, context, LIST_NUM_OLD_MAX)
        infos = data.get("infos") or []
        listover = data.get("listover")
        next_context = data.get("context") or ""
        if not isinstance(infos, list) or not isinstance(next_context, str):
            raise ProtocolError(f"{what}: malformed listing")
        if isinstance(listover, str):
            listover = listover.lower() in ("true", "1")
        if not listover and not next_context:
            raise ProtocolError(f"{what}: listover is false but no context to continue")
        return infos, next_context, bool(listover)

    def _entry(self, folder: str, info: object) -> tuple[str, ObjectInfo | None]:
        """(key, ObjectInfo) for a file entry, (key ending in '/', None) for a folder entry."""
        if not isinstance(info, dict) or not isinstance(info.get("name"), str) or not info["name"]:
            raise ProtocolError(f"list {folder!r}: entry without a name")
        name = info["name"]
        if name.endswith("/") or "filesize" not in info:
            return folder + decode_name(name.rstrip("/")) + "/", None
        key = folder + decode_name(name)
        size = int(_num(info.get("filesize"), f"list entry {key}"))
        mtime = _num(info.get("mtime") or info.get("ctime"), f"list entry {key}", 0.0)
        sha = info.get("sha")
        etag = sha if isinstance(sha, str) and sha else f"{size}-{int(mtime)}"
        return key, ObjectInfo(key=key, size=size, etag=etag, mtime=mtime, meta={}, meta_complete=False)

    def _list_level(self, prefix: str, token: str | None, num: int) -> ListPage:
        cut = prefix.rfind("/") + 1
        folder, name_prefix = prefix[:cut], prefix[cut:]
        infos, context, listover = self._list_page(folder, name_prefix, token or "", num)
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        for info in infos:
            key, obj = self._entry(folder, info)
            if obj is None:
                prefixes.append(key)
            else:
                objects.append(obj)
        return ListPage(objects=objects, prefixes=prefixes, next_token=None if listover else context)

    def _list_walk(self, prefix: str, token: str | None, num: int) -> ListPage:
        """Depth-first walk in name order: a folder's entries come where the folder sorts."""
        if token:
            stack = _decode_walk(token)
        else:
            cut = prefix.rfind("/") + 1
            stack = [{"d": prefix[:cut], "p": prefix[cut:], "c": "", "x": False, "b": []}]
        objects: list[ObjectInfo] = []
        requests_made = 0
        while stack and len(objects) < num:
            top = stack[-1]
            if top["b"]:
                kind, key, size, mtime, etag = top["b"].pop(0)
                if kind == "d":
                    # The folder itself is reported as a `d/` marker, as real folders are objects here;
                    # the layers above need it to carry empty folders along on a directory rename.
                    objects.append(ObjectInfo(key=key, size=0, etag="folder", mtime=0.0, meta={},
                                              meta_complete=False))
                    stack.append({"d": key, "p": "", "c": "", "x": False, "b": []})
                else:
                    objects.append(ObjectInfo(key=key, size=size, etag=etag, mtime=mtime, meta={},
                                              meta_complete=False))
                continue
            if top["x"]:
                stack.pop()
                continue
            if requests_made >= WALK_REQUESTS_PER_CALL:
                break  # bounded work per call; the caller continues with the token
            infos, top["c"], top["x"] = self._list_page(top["d"], top["p"], top["c"], num)
            requests_made += 1
            for info in infos:
                key, obj = self._entry(top["d"], info)
                top["b"].append(["d", key, 0, 0.0, ""] if obj is None else
                                ["f", key, obj.size, obj.mtime, obj.etag])
        return ListPage(objects=objects, prefixes=[], next_token=_encode_walk(stack) if stack else None)

    # --- writing ------------------------------------------------------------------------------

    def put(self, key: str, body: BinaryIO, size: int, meta: Mapping[str, str]) -> ObjectInfo:
        if key.endswith("/"):
            if size:
                raise InvalidArgument(f"{key!r} is a folder: it cannot hold data")
            return self._put_folder(key, meta)
        if not key:
            raise InvalidArgument("empty key")
        if size > SINGLE_UPLOAD_MAX:
            return self._put_sliced(key, body, size, meta)
        data = _read_exactly(body, size, key)
        sha = hashlib.sha1(data).hexdigest()
        form = [("op", "upload"), ("filecontent", data), ("sha", sha), ("biz_attr", meta_to_biz_attr(meta)),
                ("insertOnly", "0")]
        self._call("POST", self._cos_path(key), f"upload {key!r}", form=form)
        return ObjectInfo(key=key, size=size, etag=sha, mtime=time.time(), meta=dict(meta))

    def _put_folder(self, key: str, meta: Mapping[str, str]) -> ObjectInfo:
        cos_path = self._cos_path(key)
        biz_attr = meta_to_biz_attr(meta)
        try:
            self._call("POST", cos_path, f"create folder {key!r}", json_body={"op": "create", "biz_attr": biz_attr})
        except AlreadyExists:
            # put replaces: an existing folder takes the new metadata.
            self._call("POST", cos_path, f"update folder {key!r}", once=True,
                       json_body={"op": "update", "biz_attr": biz_attr})
        return ObjectInfo(key=key, size=0, etag="", mtime=time.time(), meta=dict(meta))

    def _put_sliced(self, key: str, body: BinaryIO, size: int, meta: Mapping[str, str]) -> ObjectInfo:
        """A large put: slices read in order, uploaded by a few threads, memory bounded."""
        upload = self.create_multipart(key, size, self._cfg.slice_size, meta)
        window = self._cfg.upload_concurrency
        parts: list[UploadedPart] = []
        pending: deque[concurrent.futures.Future] = deque()
        with concurrent.futures.ThreadPoolExecutor(window, thread_name_prefix="cos-slice") as pool:
            try:
                for number, offset in enumerate(range(0, size, upload.part_size), start=1):
                    chunk = _read_exactly(body, min(upload.part_size, size - offset), key)
                    pending.append(pool.submit(self.upload_part, upload, number, offset, chunk))
                    while len(pending) > window:
                        parts.append(pending.popleft().result())
                while pending:
                    parts.append(pending.popleft().result())
            except BaseException:
                for future in pending:
                    future.cancel()
                self.abort_multipart(upload)
                raise
        return self.complete_multipart(upload, parts)

    def create_multipart(self, key: str, size: int, part_size: int,
                         meta: Mapping[str, str]) -> MultipartUpload:
        if key.endswith("/") or not key:
            raise InvalidArgument(f"{key!r} is not a file key")
        slice_size = _pick_slice(max(part_size, self._cfg.slice_size))
        form = [("op", "upload_slice_init"), ("filesize", str(size)), ("slice_size", str(slice_size)),
                ("biz_attr", meta_to_biz_attr(meta)), ("insertOnly", "0")]
        data = self._call("POST", self._cos_path(key), f"upload_slice_init {key!r}", form=form)
        if "access_url" in data and "session" not in data:  # instant upload: the file is already there
            return MultipartUpload(key=key, upload_id="", part_size=slice_size,
                                   state={"done": True, "size": size})
        session = data.get("session")
        if not isinstance(session, str) or not session:
            raise ProtocolError(f"upload_slice_init {key!r}: no session in reply")
        chosen = int(_num(data.get("slice_size"), "slice_size", slice_size))
        if chosen <= 0:
            raise ProtocolError(f"upload_slice_init {key!r}: slice_size {chosen}")
        serial = str(data.get("serial_upload", "0")) == "1"
        if serial:
            with self._p.gates_lock:
                self._p.gates[session] = _SerialGate()
        return MultipartUpload(key=key, upload_id=session, part_size=chosen,
                               state={"session": session, "size": size, "serial": serial, "done": False})

    def upload_part(self, upload: MultipartUpload, number: int, offset: int, data: bytes) -> UploadedPart:
        size = int(upload.state.get("size", 0))
        if upload.state.get("done"):
            return UploadedPart(number=number, etag=f"slice-{offset}", size=len(data))
        if offset != (number - 1) * upload.part_size or offset >= max(size, 1):
            raise InvalidArgument(f"part {number} of {upload.key!r} cannot start at {offset}")
        if len(data) != min(upload.part_size, size - offset):
            raise InvalidArgument(f"part {number} of {upload.key!r} has {len(data)} bytes")
        gate = self._p.gates.get(upload.upload_id) if upload.state.get("serial") else None
        if gate is not None:
            gate.wait_turn(offset, timeout=2 * self._cfg.http.read_timeout)
        form = [("op", "upload_slice_data"), ("filecontent", data), ("session", upload.upload_id),
                ("offset", str(offset))]
        self._call("POST", self._cos_path(upload.key), f"upload_slice_data {upload.key!r}@{offset}", form=form)
        if gate is not None:
            gate.done(offset, len(data))
        return UploadedPart(number=number, etag=f"slice-{offset}", size=len(data))

    def complete_multipart(self, upload: MultipartUpload, parts: list[UploadedPart]) -> ObjectInfo:
        size = int(upload.state.get("size", 0))
        with self._p.gates_lock:
            self._p.gates.pop(upload.upload_id, None)
        if upload.state.get("done"):
            return self.stat(upload.key)
        numbers = sorted(p.number for p in parts)
        if numbers != list(range(1, len(numbers) + 1)) or sum(p.size for p in parts) != size:
            raise InvalidArgument(f"complete {upload.key!r}: parts do not cover {size} bytes")

        def finished_before(exc: StoreError, _attempt: int) -> dict | None:
            # The first finish may have succeeded with its answer lost: the session is then gone.
            if isinstance(exc, NotFound):
                try:
                    if self.stat(upload.key).size == size:
                        return {}
                except NotFound:
                    pass
            return None

        form = [("op", "upload_slice_finish"), ("session", upload.upload_id), ("filesize", str(size))]
        self._call("POST", self._cos_path(upload.key), f"upload_slice_finish {upload.key!r}", form=form,
                   on_retry_error=finished_before)
        return self.stat(upload.key)

    def abort_multipart(self, upload: MultipartUpload) -> None:
        # COS v4 has no abort: the server drops unfinished sessions on its own, and a new
        # upload_slice_init of the same path replaces one. Deleting the path instead would destroy
        # the previous version of the file, so nothing is sent.
        with self._p.gates_lock:
            self._p.gates.pop(upload.upload_id, None)

    def list_multipart(self) -> list[MultipartUpload]:
        return []  # upload_slice_list is per path; there is no bucket-wide listing

    def delete(self, key: str) -> None:
        if not key:
            raise InvalidArgument("empty key")
        try:
            self._call("POST", self._cos_path(key), f"delete {key!r}", once=True, json_body={"op": "delete"})
        except NotFound:
            pass  # idempotent (also: a retried delete that had worked)

    def _transfer(self, op: str, src: str, dst: str) -> None:
        if src.endswith("/") or dst.endswith("/") or not src or not dst:
            raise NotSupported(f"COS v4 {op} works on files only")
        dest = self._cos_path(dst)

        def done_before(exc: StoreError, _attempt: int) -> dict | None:
            if op == "move" and isinstance(exc, NotFound):  # the source is gone: did we move it?
                try:
                    self.stat(dst)
                    return {}
                except NotFound:
                    return None
            return None

        # As the SDK does: params in the query string, no body; to_over_write=1 gives rename() semantics.
        self._call("POST", self._cos_path(src), f"{op} {src!r} -> {dst!r}", once=True,
                   params={"op": op, "dest_fileid": dest, "to_over_write": "1"}, on_retry_error=done_before)

    def move(self, src: str, dst: str) -> ObjectInfo:
        self._transfer("move", src, dst)
        return self.stat(dst)

    def copy(self, src: str, dst: str, meta: Mapping[str, str] | None = None) -> ObjectInfo:
        self._transfer("copy", src, dst)
        if meta is not None:
            return self.set_meta(dst, meta)
        return self.stat(dst)

    def set_meta(self, key: str, meta: Mapping[str, str]) -> ObjectInfo:
        self._call("POST", self._cos_path(key), f"update {key!r}", once=True,
                   json_body={"op": "update", "biz_attr": meta_to_biz_attr(meta)})
        return self.stat(key)


def _read_exactly(body: BinaryIO, size: int, key: str) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = body.read(remaining)
        if not chunk:
            raise InvalidArgument(f"put {key!r}: body ended {remaining} bytes short of {size}")
        chunks.append(chunk)
        remaining -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _encode_walk(stack: list[dict]) -> str:
    raw = json.dumps(stack, separators=(",", ":"), ensure_ascii=False).encode()
    return "w1:" + base64.urlsafe_b64encode(zlib.compress(raw)).decode()


def _decode_walk(token: str) -> list[dict]:
    try:
        if not token.startswith("w1:"):
            raise ValueError("not a walk token")
        stack = json.loads(zlib.decompress(base64.urlsafe_b64decode(token[3:])))
        if not isinstance(stack, list) or not all(isinstance(f, dict) and {"d", "p", "c", "x", "b"} <= set(f)
                                                  for f in stack):
            raise ValueError("bad walk state")
        return stack
    except (ValueError, zlib.error, TypeError) as exc:
        raise InvalidArgument(f"bad continuation token for a recursive listing: {exc}") from None


# ----------------------------------------------------------------------------------------------
# The provider


class CosProvider:
    """One COS v4 account (appid + key pair)."""

    def __init__(self, remote: str, config: CosConfig) -> None:
        self.remote = remote
        self.config = config
        self.signer = Signer(config.creds)
        self.session = http.new_session(config.http)
        self.session.headers.pop("Accept-Encoding", None)  # bodies are binary slices; skip gzip talk
        self.gates: dict[str, _SerialGate] = {}
        self.gates_lock = threading.Lock()
        self.page_cap = LIST_NUM_MAX

    def __repr__(self) -> str:
        return f"CosProvider({self.remote!r}, appid={self.config.creds.appid})"

    def check(self, bucket: str | None) -> None:
        if bucket is None:
            raise NotSupported("COS v4 has no account-wide request: name a bucket to check")
        self.bucket(bucket).list("", limit=1)

    def list_buckets(self) -> list[str]:
        raise NotSupported("COS v4 cannot list buckets")

    def bucket(self, name: str) -> CosStore:
        if not name or "/" in name:
            raise InvalidArgument(f"bad bucket name {name!r}")
        return CosStore(self, name)

    def close(self) -> None:
        self.session.close()


def open_provider(remote: str, options: Mapping[str, str]) -> CosProvider:
    return CosProvider(remote, CosConfig.from_options(options))
