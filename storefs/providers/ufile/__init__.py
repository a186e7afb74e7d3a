"""UCloud UFile (US3) native API provider: an account (the bucket-management API) and its buckets as
object stores (the store contract).

Wire facts: /work/shared/PROTOCOLS.md §4, the official API docs (UCloudDoc-Team/api `ufile-api/*.md`) and
the vendor SDKs (`ufile` 3.2.11 for Python, `ufile-gosdk`, `ufile-sdk-java`). Signing lives in
wire/auth/ufile.py, the wire mapping and error decoding in wire.py, multipart in
multipart.py, the options in config.py.

- A bucket is a host label: requests go to `<bucket><upload_suffix>` (downloads to
  `<bucket><download_suffix>`). With `endpoint` set, every request is sent to that URL instead, with the
  `Host` header still naming `<bucket><suffix>` (how the emulator, a proxy or an internal-network address
  is reached).
- Listing is `GET /?listobjects` (prefix, marker, max-keys ≤ 1000, delimiter "/" or ""), one page per
  call, paged with `NextMarker` while `IsTruncated`. Entries carry `UserMeta`, so no per-entry HEAD.
- User metadata is `X-Ufile-Meta-<name>` (names: letters, digits and '-'). Values that are not printable
  ASCII are sent RFC 2047-encoded (`=?UTF-8?B?...?=`) and decoded on the way back.
- A single PUT's answer ETag (UFile's own SHA-1 block format) is checked against the bytes sent.
- ARCHIVE-class files are restored on open like S3's archive classes (retrieval/gate.py): stat() puts
  the `X-Ufile-Restore` header (S3's `ongoing-request=..., expiry-date=...` form) where the gate reads
  it, restore() is `PUT /<key>?restore`.
- Copy is `PUT` with `X-Ufile-Copy-Source`; `X-Ufile-Metadata-Directive: REPLACE` replaces the metadata,
  which is also how `set_meta` works (a copy onto itself: UNVERIFIED against the live service). There is
  no server-side move in the current API, so rename is copy + delete above this layer.

Thread safety: one WireClient (pooled connections) per provider; stores hold only immutable config, so
parts may be uploaded from many threads at once.
"""
from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Mapping
from typing import BinaryIO
from urllib.parse import quote

from ...errors import InvalidArgument, NotSupported, ProtocolError, RemoteChanged, StoreError, Transient
from ...store.conditions import NO_CONDITIONAL_WRITES, ConditionalWrites, WriteCondition, no_condition
from ...store.contract import Capabilities, ListPage, ObjectInfo, UploadedPart
from ...wire.auth import ufile as auth
from ...wire.auth.ufile import meta_from_listing, meta_headers, strip_etag
from ...wire.body import read_exactly
from ...wire.client import Request, WireClient
from .config import SPEC, UfileConfig
from .multipart import UfileMultipart
from .wire import (
    ARCHIVE_CLASSES,
    DEFAULT_CONTENT_TYPE,
    MiB,
    RET_BUCKET_NOT_EXIST,
    UploadBody,
    api_error,
    decode_error,
    error_info,
    http_time,
    parse_json,
    q,
)

log = logging.getLogger(__name__)


def open_provider(remote: str, options: Mapping[str, str]) -> UfileProvider:
    return UfileProvider(remote, UfileConfig.from_options(options))


class UfileProvider:
    """One UFile account: its WireClient (pooled connections), the bucket API and the factory of
    per-bucket stores."""

    def __init__(self, remote: str, config: UfileConfig) -> None:
        self.remote = remote
        self.config = config
        self.client = WireClient(remote, config.http_settings, config.retry, decode_error)
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

        def sign(request: Request) -> None:
            signed = dict(params, PublicKey=cfg.public_key)
            signed["Signature"] = auth.api_signature(params, cfg.public_key, cfg.private_key)
            request.query = "&".join(f"{q(k)}={q(v)}" for k, v in signed.items())

        request = Request("GET", cfg.endpoint or f"https://{cfg.bucket_host}", "/",
                          headers={"Host": cfg.bucket_host}, what=action)
        answer = self.client.call(request, sign=sign)
        if answer.status != 200:
            raise decode_error(answer, action)
        data = parse_json(answer.content, action)
        error = api_error(data, action)
        if error is not None:
            raise error
        return data

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.client.close()


class UfileStore(UfileMultipart):
    """One UFile bucket. Holds only immutable config: parts may be uploaded from many threads at once."""

    capabilities = Capabilities(
        min_part_size=4 * MiB,            # the BlkSize UFile hands out
        max_part_size=5 * 1024 * MiB,     # server-chosen anyway
        max_parts=1_310_720,              # 5 TB (the object size limit) / 4 MiB: UNVERIFIED
        single_put_max=16 * MiB,          # PutFile takes up to 512 MB; above 16 MiB parallel parts win
        server_chosen_part_size=True,
        resume="list",                    # GET /?muploadpart lists a part's ETag: its UFile ETag
        part_etag="ufile",
        parts_in_order=False,             # docs: parts may be uploaded independently and concurrently
        server_side_copy=True,
        server_side_move=False,
        list_has_metadata=True,
        real_folders=False,
        list_page_size=1000,
        archive_classes=ARCHIVE_CLASSES,
    )

    def __init__(self, provider: UfileProvider, name: str) -> None:
        super().__init__(provider.client, provider.config, name)
        self.provider = provider

    def __repr__(self) -> str:
        return f"UfileStore({self.name!r})"

    # -- listing -----------------------------------------------------------------------------------

    def list(self, prefix: str, *, delimiter: str = "/", token: str | None = None,
             limit: int | None = None) -> ListPage:
        if delimiter not in ("", "/"):
            raise InvalidArgument("ufile: listobjects only supports the delimiters '/' and ''")
        max_keys = max(1, min(self.capabilities.list_page_size, limit or self.capabilities.list_page_size))
        params = {"prefix": prefix, "marker": token or "", "max-keys": str(max_keys), "delimiter": delimiter}
        query = "listobjects&" + "&".join(f"{name}={q(value)}" for name, value in params.items())
        answer = self._call("GET", "", f"list {prefix!r}", query=query, list_params=params)
        return self._parse_listing(parse_json(answer.content, "listobjects"), prefix)

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

    # -- data --------------------------------------------------------------------------------------

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        want = strip_etag(if_match) if if_match else ""
        got = self.client.read_range(self._download_request(key, f"read {key}"), start, end,
                                     sign=self._download_signer(key), if_match=want or None)
        etag = strip_etag(got.headers.get("ETag"))
        if want and etag and etag != want:
            raise RemoteChanged(f"ufile read {key}: ETag is {etag}, expected {want}")
        return got.data

    def conditional_writes(self, key: str) -> ConditionalWrites:
        # Neither PROTOCOLS.md nor the UFile SDKs describe a conditional or no-overwrite upload (the old
        # rename's force=false is the only such form): the committer's HEAD check stands in.
        return NO_CONDITIONAL_WRITES

    def put(self, key: str, body: BinaryIO, size: int, meta: Mapping[str, str], *,
            condition: WriteCondition | None = None) -> ObjectInfo:
        no_condition(condition, "UFile")
        if size < 0:
            raise InvalidArgument("ufile: negative size")
        payload = UploadBody(body, size, hash_md5=self._cfg.verify_upload_md5)
        request = self._request("PUT", key, f"put {key}", content_type=DEFAULT_CONTENT_TYPE,
                                content_md5=payload.md5, body=payload.body,
                                headers=dict(meta_headers(meta), **{"Content-Length": str(size)}))
        once = self.client.attempt(request, sign=self._signer(key))

        def attempt() -> ObjectInfo:
            answer = once()
            etag = strip_etag(answer.headers.get("ETag"))
            # Inside the try: a mismatch is Transient, and the PUT is sent again.
            self._check_etag(key, size, etag, payload.local_etag())
            mtime = http_time(answer.headers.get("Last-Modified") or answer.headers.get("Date")) or time.time()
            return ObjectInfo(key=key, size=size, etag=etag, mtime=mtime, meta=dict(meta))

        return self.client.retried(attempt, request.what)

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
        answer = self._call("DELETE", key, f"delete {key}", accept=(404,))
        # Already gone: delete is idempotent (a missing bucket is still an error).
        if answer.status == 404 and error_info(answer)[0] == RET_BUCKET_NOT_EXIST:
            raise decode_error(answer, f"delete {key}")

    def copy(self, src: str, dst: str, meta: Mapping[str, str] | None = None) -> ObjectInfo:
        headers = {"X-Ufile-Copy-Source": f"/{self.name}/{quote(src, encoding='utf-8', errors='surrogatepass')}",
                   "Content-Length": "0"}
        if meta is not None:
            headers["X-Ufile-Metadata-Directive"] = "REPLACE"
            headers.update(meta_headers(meta))
        self._call("PUT", dst, f"copy {src} to {dst}", headers=headers)
        return self.stat(dst)

    def move(self, src: str, dst: str) -> ObjectInfo:
        raise NotSupported("ufile has no server-side move; copy and delete instead")

    def set_meta(self, key: str, meta: Mapping[str, str]) -> ObjectInfo:
        return self.copy(key, key, meta=meta)

    # -- archive storage class -------------------------------------------------------------------

    def restore(self, key: str, *, days: int, tier: str) -> bool:
        """`PUT /<key>?restore` (ufile-api/restore.md): makes an ARCHIVE file readable for a while. UFile's
        restore takes no duration and no tier (the service decides both), so `days` and `tier` are not
        sent. Its answer is 200 with no body whether or not a restore was running: True means "asked"."""
        self._call("PUT", key, f"restore {key}", query="restore")
        return True

    # -- convenience -------------------------------------------------------------------------------

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
                data = read_exactly(source, length)
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
