"""One WCS bucket as an ObjectStore. Directories are `dir/` marker objects; user metadata rides in the
mimeType (meta.py); replacing it re-uploads the object (`_rewrite`)."""
from __future__ import annotations

import dataclasses
import io
import json
import time
from collections.abc import Mapping
from typing import BinaryIO
from urllib.parse import quote

from ...errors import InvalidArgument, NotFound, NotSupported, ProtocolError, RemoteChanged, StoreError, Transient
from ...store.conditions import ConditionalWrites, WriteCondition, create_only, exists_refusal
from ...store.contract import ListPage, MultipartUpload, ObjectInfo, UploadedPart
from ...wire.answer import strip_etag
from ...wire.auth import wcs as wcs_auth
from ...wire.body import read_exactly
from .config import BLOCK_UNIT, CAPABILITIES
from .meta import decode_meta_mime, encode_meta_mime, parse_put_time
from .upload import WcsUploads
from .wire import WcsApi, map_error, to_int


# The upload policy's `overwrite: 0` (don't overwrite) on the form upload and on mkfile (PROTOCOLS.md
# §3.5; the docs' default). WCS has no form of If-Match: a changed file falls back to the HEAD check.
WCS_CONDITIONAL_WRITES = ConditionalWrites(absent=True, absent_multipart=True,
                                           how="WCS upload policy overwrite=0 (create only)")


@dataclasses.dataclass(frozen=True)
class _Stat:
    info: ObjectInfo
    mime: str


class WcsBucket:
    """ObjectStore for one WCS bucket."""

    capabilities = CAPABILITIES

    def __init__(self, api: WcsApi, name: str) -> None:
        self.api = api
        self.name = name
        self._uploads = WcsUploads(api, name)

    def __repr__(self) -> str:
        return f"WcsBucket({self.api.remote!r}, {self.name!r})"

    # -- metadata
    def _entry(self, key: str) -> str:
        return wcs_auth.encoded_entry(self.name, key)

    def _stat(self, key: str) -> _Stat:
        reply = self.api.mgr("GET", f"/stat/{self._entry(key)}", what=f"stat {key}")
        if str(reply.get("result", "true")).lower() == "false":
            raise map_error(to_int(reply.get("code", 500), "stat"), json.dumps(reply).encode(), f"stat {key}")
        mime = str(reply.get("mimeType") or "")
        return _Stat(self._info(key, reply, f"stat {key}", reply.get("fsize")), mime)

    @staticmethod
    def _info(key: str, item: dict, what: str, fsize: object) -> ObjectInfo:
        """An ObjectInfo from a stat reply or a list item (they carry the same fields)."""
        _, meta = decode_meta_mime(item.get("mimeType"))
        return ObjectInfo(key=key, size=to_int(fsize, what), etag=str(item.get("hash") or ""),
                          mtime=parse_put_time(item.get("putTime")), meta=meta,
                          storage_class=str(item["storageClass"]) if item.get("storageClass") else None)

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
        return self.api.mgr("GET", query, what=f"list {self.name}:{prefix}")

    def _items(self, reply: dict, what: str) -> list[ObjectInfo]:
        items = reply.get("items") or []
        if not isinstance(items, list):
            raise ProtocolError(f"{what}: 'items' is not a list")
        out = []
        for item in items:
            if not isinstance(item, dict) or "key" not in item:
                raise ProtocolError(f"{what}: bad item", detail=str(item)[:200])
            out.append(self._info(str(item["key"]), item, what, item.get("fsize", 0)))
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
    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        if start < 0 or end < start:
            raise InvalidArgument(f"bad range [{start}, {end})")
        if end == start:
            return b""
        read = self.api.download(self.name, key, start, end, if_match)
        if if_match:
            etag = strip_etag(read.headers.get("ETag")) or None
            if etag is None:  # no ETag on the download domain: ask the management domain
                etag = self.stat(key).etag
            if etag != if_match:
                raise RemoteChanged(f"{key} changed on the server")
        return read.data

    # -- writing
    def conditional_writes(self, key: str) -> ConditionalWrites:
        return WCS_CONDITIONAL_WRITES

    def put(self, key: str, body: BinaryIO, size: int, meta: Mapping[str, str], *,
            condition: WriteCondition | None = None) -> ObjectInfo:
        create = create_only(condition, "WCS")
        with exists_refusal(condition):
            return self._uploads.put_bytes(key, read_exactly(body, size), encode_meta_mime(meta), meta,
                                           overwrite=not create)

    def create_multipart(self, key: str, size: int, part_size: int, meta: Mapping[str, str], *,
                         condition: WriteCondition | None = None) -> MultipartUpload:
        # The condition goes with mkfile (complete_multipart), whose upload token carries the policy.
        return self._uploads.create(key, size, part_size, meta)

    def upload_part(self, upload: MultipartUpload, number: int, offset: int, data: bytes) -> UploadedPart:
        return self._uploads.upload_part(upload, number, offset, data)

    def complete_multipart(self, upload: MultipartUpload, parts: list[UploadedPart], *,
                           condition: WriteCondition | None = None) -> ObjectInfo:
        create = create_only(condition, "WCS")
        ordered = sorted(parts, key=lambda p: p.number)
        meta = dict(upload.state.get("meta") or {})
        mime = str(upload.state.get("mime") or encode_meta_mime(meta))
        if [p.number for p in ordered] != list(range(1, len(ordered) + 1)):
            raise InvalidArgument(f"complete {upload.key}: parts {[p.number for p in ordered]} are not 1..n")
        if not ordered:
            return self.put(upload.key, io.BytesIO(), 0, meta, condition=condition)
        size = sum(p.size for p in ordered)
        with exists_refusal(condition):
            etag = self._uploads.mkfile(upload, ordered, mime, overwrite=not create)
        if not etag:
            info = self.stat(upload.key)
            if info.size != size:
                raise StoreError(f"mkfile {upload.key}: object has {info.size} bytes after mkfile, {size} expected")
            return info
        return ObjectInfo(key=upload.key, size=size, etag=etag, mtime=time.time(), meta=meta)

    def abort_multipart(self, upload: MultipartUpload) -> None:
        """Nothing to do: WCS has no abort; unmerged blocks are purged by the service (docs: ~monthly)."""

    def list_multipart(self) -> list[MultipartUpload]:
        return []  # the protocol cannot list unmerged blocks

    def list_parts(self, upload: MultipartUpload) -> list[UploadedPart]:
        # WCS keeps no listing: the client records each block's ctx (capabilities.resume "journal").
        raise NotSupported("WCS cannot list the blocks of an upload")

    def upload_file(self, key: str, body: BinaryIO, size: int, meta: Mapping[str, str], *,
                    part_size: int = BLOCK_UNIT, concurrency: int | None = None) -> ObjectInfo:
        """Upload a stream of known size: one request when small, else blocks in parallel (at most
        `concurrency` in flight, so memory stays at concurrency × part_size)."""
        if size <= CAPABILITIES.single_put_max:
            return self.put(key, body, size, meta)
        upload = self.create_multipart(key, size, part_size, meta)
        return self.complete_multipart(upload, self._uploads.upload_parts(upload, size, body.read, concurrency))

    # -- management
    def delete(self, key: str) -> None:
        try:
            self.api.mgr("POST", f"/delete/{self._entry(key)}", what=f"delete {key}")
        except NotFound:
            pass  # idempotent by contract

    def copy(self, src: str, dst: str, meta: Mapping[str, str] | None = None) -> ObjectInfo:
        if meta is not None:
            return self._rewrite(src, dst, meta)
        self.api.mgr("POST", f"/copy/{self._entry(src)}/{self._entry(dst)}", what=f"copy {src} to {dst}")
        return self.stat(dst)

    def move(self, src: str, dst: str) -> ObjectInfo:
        self.api.mgr("POST", f"/move/{self._entry(src)}/{self._entry(dst)}", what=f"move {src} to {dst}")
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
            return self._uploads.put_bytes(dst, data, mime, meta)
        upload = self.create_multipart(dst, info.size, 2 * BLOCK_UNIT, meta)
        upload.state["mime"] = mime
        position = [0]

        def read(n: int) -> bytes:
            chunk = self.read_range(src, position[0], position[0] + n, if_match=info.etag)
            position[0] += len(chunk)
            return chunk

        return self.complete_multipart(upload, self._uploads.upload_parts(upload, info.size, read, None))
