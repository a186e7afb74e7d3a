"""The s3 provider and its per-bucket store: the store contract mapped onto S3 calls, each a Request
sent through the endpoint's S3Client (client.py), its answer parsed by xml.py and meta.py.

Fast paths (declared in the store's Capabilities): HEADs batched by the fast transport (stat_many),
ranges read as pieces straight off the answer (read_range_pieces) or spliced from the socket into
block-cache files (read_range_to_files), and parts and staged files sent from the file
(upload_part_from_file, put() of a FileSlice).
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import math
import time
from typing import BinaryIO, Mapping, Sequence
from urllib.parse import quote

from ...errors import InvalidArgument, NotFound, NotSupported, ProtocolError, StoreError, Throttled, Transient
from ...store.contract import ListPage, MultipartUpload, ObjectInfo, UploadedPart
from ...store.conditions import ConditionalWrites, WriteCondition
from ...store.features import Capabilities
from ...wire.answer import Answer, strip_etag
from ...wire.body import EMPTY, Body, FileRegion
from ...wire.ranges import RangeRead
from ...wire.retry import RetryPolicy
from .client import S3Client
from .config import (INLINE_BODY_MAX, MAX_LIST_PAGES, S3_ARCHIVE_CLASSES, S3_MAX_PART, S3_MAX_PARTS, S3_MAX_PUT,
                     S3_MIN_PART)
from .errors import error_from_response
from .probe import PROBE_PREFIX, condition_headers, is_probe_key, probe_conditional_writes
from .meta import info_from_head, meta_headers, parse_http_date, user_meta
from .xml import (child_text, complete_multipart_xml, parse_iso8601, parse_list_buckets, parse_list_parts,
                  parse_list_uploads, parse_list_v2, parse_upload_id, parse_xml, required_text, restore_xml)

log = logging.getLogger(__name__)


class S3Provider:
    def __init__(self, remote: str, options: Mapping[str, str]) -> None:
        self.remote = remote
        self.client = S3Client(remote, options)

    def __repr__(self) -> str:
        return f"S3Provider({self.remote!r})"

    def check(self, bucket: str | None) -> None:
        """ListObjectsV2 max-keys=1 on the bucket (or ListBuckets): proves endpoint, key and bucket."""
        quick = RetryPolicy(attempts=2, base_delay=0.5, deadline=15.0)
        opts = self.client.options
        if bucket:
            request = self.client.request("GET", bucket, None, what=f"bucket {bucket!r} check",
                                          params=[("list-type", "2"), ("max-keys", "1")])
        else:
            request = self.client.request("GET", None, None, what="list buckets")
        try:
            self.client.call(request, policy=quick)
        except Throttled as exc:
            raise Throttled(f"[{self.remote}] S3 endpoint {opts.host_port} asks us to slow down: {exc}",
                            detail=exc.detail) from None
        except NotFound as exc:
            raise NotFound(f"[{self.remote}] bucket {bucket!r} does not exist at {opts.endpoint}",
                           detail=exc.detail) from None
        except Transient as exc:
            raise Transient(f"[{self.remote}] cannot reach S3 endpoint {opts.host_port}: {exc}",
                            detail=exc.detail) from None
        except StoreError as exc:
            raise type(exc)(f"[{self.remote}] {exc}", detail=exc.detail) from None

    def list_buckets(self) -> list[str]:
        answer = self.client.call(self.client.request("GET", None, None, what="list buckets"))
        return parse_list_buckets(answer.content)

    def bucket(self, name: str) -> S3Store:
        return S3Store(self.client, name)

    def close(self) -> None:
        self.client.close()


class S3Store:
    """One bucket. Stateless apart from the shared client: safe to call from many threads."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client = client
        self.name = bucket
        self.capabilities = Capabilities(min_part_size=S3_MIN_PART, max_part_size=S3_MAX_PART,
                                         max_parts=S3_MAX_PARTS, single_put_max=client.options.single_put_max,
                                         server_side_copy=True, server_side_move=False,
                                         list_page_size=1000, archive_classes=S3_ARCHIVE_CLASSES,
                                         ranged_pieces=True, ranged_into_files=True, batched_stat=True,
                                         parts_from_files=True, streamed_uploads=True,
                                         multipart_dated_at_start=client.options.is_aws,
                                         # A part's ETag is its MD5, except under SSE-KMS/SSE-C (a bucket's
                                         # default encryption): such parts fail the check and go again.
                                         resume="list", part_etag="md5")

    def __repr__(self) -> str:
        return f"S3Store({self.client.remote!r}, {self.name!r})"

    def _call(self, method: str, key: str | None, *, what: str, params: Sequence[tuple[str, str]] = (),
              headers: Mapping[str, str] | None = None, body: Body = EMPTY,
              error_in_body: bool = False) -> Answer:
        request = self.client.request(method, self.name, key, what=what, params=params, headers=headers,
                                      body=body)
        return self.client.call(request, error_in_body=error_in_body)

    def _new_object_headers(self, key: str, meta: Mapping[str, str]) -> dict[str, str]:
        """The headers of a request that creates an object: metadata, type, storage class."""
        headers = meta_headers(meta)
        headers["Content-Type"] = "application/x-directory" if key.endswith("/") else "application/octet-stream"
        if self.client.options.storage_class:
            headers["x-amz-storage-class"] = self.client.options.storage_class
        return headers

    def _new_info(self, key: str, size: int, etag: str, answer: Answer, meta: Mapping[str, str]) -> ObjectInfo:
        """The ObjectInfo of an object this store just wrote, dated by the server's answer."""
        return ObjectInfo(key=key, size=size, etag=etag,
                          mtime=parse_http_date(answer.headers.get("Date")) or time.time(),
                          meta=dict(meta), storage_class=self.client.options.storage_class or "STANDARD")

    # -- reading ---------------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo:
        what = f"stat {key!r}"
        return info_from_head(key, self._call("HEAD", key, what=what).headers, what)

    def stat_many(self, keys: list[str], parallel: int) -> list[ObjectInfo | StoreError]:
        """stat() of every key, `parallel` HEADs at a time from this thread (the fast transport), each
        tried once: a StoreError (NotFound, Transient, …) in place of a failed one, for the caller to
        retry through stat()."""
        requests = [self.client.request("HEAD", self.name, key, what=f"stat {key!r}") for key in keys]
        results: list[ObjectInfo | StoreError] = []
        for key, request, answer in zip(keys, requests, self.client.wire.head_many(requests, parallel)):
            if isinstance(answer, StoreError):
                results.append(answer)
            elif answer.status >= 300:
                results.append(error_from_response(answer, request.what))
            else:
                try:
                    results.append(info_from_head(key, answer.headers, request.what))
                except StoreError as exc:
                    results.append(exc)
        return results

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        return self._read(key, start, end, 0, if_match).data

    def read_range_pieces(self, key: str, start: int, end: int, piece: int, *,
                          if_match: str | None = None) -> list[bytes]:
        """read_range as pieces of `piece` bytes, each read off the answer into its own bytes object
        (no copy of the whole range cut up afterwards: a cold sequential read moves every byte once
        fewer)."""
        return self._read(key, start, end, piece, if_match).pieces

    def _read(self, key: str, start: int, end: int, piece: int, if_match: str | None) -> RangeRead:
        request = self.client.request("GET", self.name, key, what=f"read {key!r} [{start}, {end})")
        return self.client.wire.read_range(request, start, end, piece=piece, if_match=strip_etag(if_match) or None)

    def read_range_to_files(self, key: str, start: int, end: int, piece: int, files: Sequence[int], *,
                            if_match: str | None = None) -> bool:
        """Bytes [start, end) into `files`, `piece` bytes each, over the fast transport, whose
        plain-HTTP path splices them from the socket without copying them through Python. False, with
        nothing written, when the answer is not exactly that range (the object is shorter, or the
        server ignores Range): then the caller reads the pieces its usual way."""
        offsets = range(start, end, piece)
        if start < 0 or len(offsets) != len(files):
            raise InvalidArgument(f"bad range [{start}, {end}) in {len(files)} files for {key!r}")
        if not files:
            return True
        request = self.client.request("GET", self.name, key, what=f"read {key!r} [{start}, {end})")
        sized = [(fd, min(piece, end - offset)) for fd, offset in zip(files, offsets)]
        return self.client.wire.read_range_into_files(request, start, end, sized,
                                                      if_match=strip_etag(if_match) or None)

    def list(self, prefix: str, *, delimiter: str = "/", token: str | None = None,
             limit: int | None = None) -> ListPage:
        params = [("list-type", "2"), ("encoding-type", "url"), ("prefix", prefix),
                  ("max-keys", str(min(max(1, limit or 1000), 1000)))]
        if delimiter:
            params.append(("delimiter", delimiter))
        if token:
            params.append(("continuation-token", token))
        what = f"list {prefix!r}"
        page = parse_list_v2(self._call("GET", None, what=what, params=params).content, what)
        if PROBE_PREFIX.startswith(prefix):   # a listing that may hold a probe object: never shown
            page = dataclasses.replace(page, objects=[o for o in page.objects if not is_probe_key(o.key)])
        return page

    # -- writing ---------------------------------------------------------------------------------

    def put(self, key: str, body: BinaryIO, size: int, meta: Mapping[str, str], *,
            condition: WriteCondition | None = None) -> ObjectInfo:
        """PutObject. A staged file (FileSlice) is sent from the file, a small body from memory, both
        signed with their SHA-256; a larger file object streams, UNSIGNED-PAYLOAD."""
        if size > S3_MAX_PUT:
            raise InvalidArgument(f"put {key!r}: {size} bytes is over S3's 5 GiB single-PUT limit")
        headers = self._new_object_headers(key, meta) | condition_headers(condition)
        answer = self._call("PUT", key, what=f"put {key!r}", headers=headers,
                            body=Body.upload(body, size, in_memory_max=INLINE_BODY_MAX))
        return self._new_info(key, size, strip_etag(answer.headers.get("ETag")), answer, meta)

    def create_multipart(self, key: str, size: int, part_size: int, meta: Mapping[str, str], *,
                         condition: WriteCondition | None = None) -> MultipartUpload:
        # `condition` belongs on CompleteMultipartUpload (S3 checks it there). The configured part_size is a floor: the caller may ask for more, never for less.
        part_size = max(part_size, self.client.options.part_size, S3_MIN_PART,
                        math.ceil(size / S3_MAX_PARTS) if size > 0 else 0)
        if part_size > S3_MAX_PART:
            raise InvalidArgument(f"multipart {key!r}: {size} bytes need parts over 5 GiB")
        return self._initiate(key, part_size, meta)

    def _initiate(self, key: str, part_size: int, meta: Mapping[str, str]) -> MultipartUpload:
        """CreateMultipartUpload of `key` with parts of `part_size` bytes."""
        what = f"start multipart {key!r}"
        answer = self._call("POST", key, what=what, params=[("uploads", "")],
                            headers=self._new_object_headers(key, meta))
        return MultipartUpload(key=key, upload_id=parse_upload_id(answer.content, what), part_size=part_size,
                               state={"meta": dict(meta)})

    def upload_part(self, upload: MultipartUpload, number: int, offset: int, data: bytes) -> UploadedPart:
        return self._upload_part(upload, number, Body(data=bytes(data)))

    def upload_part_from_file(self, upload: MultipartUpload, number: int, fd: int, offset: int,
                              size: int) -> UploadedPart:
        """upload_part of bytes [offset, offset+size) of an open file, sent from the file
        (uploader.py: memory stays flat whatever the part size)."""
        return self._upload_part(upload, number, Body(region=FileRegion(fd, offset, size)))

    def _upload_part(self, upload: MultipartUpload, number: int, body: Body) -> UploadedPart:
        if not 1 <= number <= S3_MAX_PARTS:
            raise InvalidArgument(f"part number {number} outside 1..{S3_MAX_PARTS}")
        what = f"upload part {number} of {upload.key!r}"
        answer = self._call("PUT", upload.key, what=what, body=body,
                            params=[("partNumber", str(number)), ("uploadId", upload.upload_id)])
        etag = strip_etag(answer.headers.get("ETag"))
        if not etag:
            raise ProtocolError(f"{what}: no ETag in the answer")
        return UploadedPart(number=number, etag=etag, size=body.size)

    def complete_multipart(self, upload: MultipartUpload, parts: list[UploadedPart], *,
                           condition: WriteCondition | None = None) -> ObjectInfo:
        ordered = sorted(parts, key=lambda p: p.number)
        what = f"complete multipart {upload.key!r}"
        request = self.client.request("POST", self.name, upload.key, what=what,
                                      params=[("uploadId", upload.upload_id)],
                                      headers={"Content-Type": "application/xml"} | condition_headers(condition),
                                      body=Body(data=complete_multipart_xml(ordered)))
        attempt = self.client.checked_attempt(request)
        tries = 0

        def complete() -> Answer:
            nonlocal tries
            tries += 1
            return attempt()

        try:
            answer = self.client.wire.retried(complete, what)
        except NotFound as exc:
            # A retry after a lost answer finds the upload gone because the first try completed it.
            # (A conditional one may instead be refused with PreconditionFailed: that is left to the
            # caller as a conflict, since another writer's object cannot be told from ours here.)
            if tries > 1 and exc.code == "NoSuchUpload":
                done = self.stat(upload.key)
                if done.etag.endswith(f"-{len(ordered)}"):
                    return done
            raise
        etag = strip_etag(child_text(parse_xml(answer.content, what), "ETag", "") or "")
        return self._new_info(upload.key, sum(p.size for p in ordered), etag, answer,
                              upload.state.get("meta") or {})

    def conditional_writes(self, key: str) -> ConditionalWrites:
        """Probed once per remote (probe.py), in the first bucket that needs it."""
        return self.client.conditional.get(lambda: probe_conditional_writes(self, self.client.remote))

    def abort_multipart(self, upload: MultipartUpload) -> None:
        try:
            self._call("DELETE", upload.key, what=f"abort multipart {upload.key!r}",
                       params=[("uploadId", upload.upload_id)])
        except NotFound as exc:
            if exc.code == "NoSuchBucket":
                raise
            # Already aborted or completed: aborting is idempotent.

    def list_multipart(self) -> list[MultipartUpload]:
        uploads: list[MultipartUpload] = []
        markers: list[tuple[str, str]] = []
        for _ in range(MAX_LIST_PAGES):
            answer = self._call("GET", None, what="list multipart uploads",
                                params=[("uploads", ""), ("encoding-type", "url"), *markers])
            page, markers = parse_list_uploads(answer.content, self.client.options.part_size)
            uploads += page
            if not markers:
                return uploads
        log.warning("%s: more than %d pages of multipart uploads; listed the first ones",
                    self.name, MAX_LIST_PAGES)
        return uploads

    def list_parts(self, upload: MultipartUpload) -> list[UploadedPart]:
        """ListParts, every page (1000 parts each). NotFound (NoSuchUpload) when the upload is gone."""
        parts: list[UploadedPart] = []
        marker: str | None = None
        what = f"list parts of {upload.key!r}"
        for _ in range(S3_MAX_PARTS // 1000 + 1):
            params = [("uploadId", upload.upload_id), ("max-parts", "1000")]
            if marker:
                params.append(("part-number-marker", marker))
            page, marker = parse_list_parts(self._call("GET", upload.key, what=what, params=params).content, what)
            parts += page
            if marker is None:
                break
        return sorted(parts, key=lambda p: p.number)

    def delete(self, key: str) -> None:
        try:
            self._call("DELETE", key, what=f"delete {key!r}")
        except NotFound as exc:
            if exc.code == "NoSuchBucket":
                raise

    # -- server-side copies ------------------------------------------------------------------------

    def copy(self, src: str, dst: str, meta: Mapping[str, str] | None = None) -> ObjectInfo:
        source = self.stat(src)
        if source.size > self.client.options.copy_cutoff:
            return self._multipart_copy(source, dst, meta)
        headers = self._copy_headers(source)
        if meta is not None:
            headers.update(self._new_object_headers(dst, meta))
            headers["x-amz-metadata-directive"] = "REPLACE"
        elif self.client.options.storage_class:
            headers["x-amz-storage-class"] = self.client.options.storage_class
        what = f"copy {src!r} to {dst!r}"
        root = parse_xml(self._call("PUT", dst, what=what, headers=headers, error_in_body=True).content, what)
        mtime_text = child_text(root, "LastModified")
        return ObjectInfo(key=dst, size=source.size, etag=strip_etag(child_text(root, "ETag", "")),
                          mtime=parse_iso8601(mtime_text) if mtime_text else time.time(),
                          meta=dict(meta) if meta is not None else user_meta(source.meta),
                          storage_class=self.client.options.storage_class or source.storage_class)

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
        new_meta = dict(meta) if meta is not None else user_meta(source.meta)
        part_size = min(max(self.client.options.copy_part_size, math.ceil(source.size / S3_MAX_PARTS)),
                        S3_MAX_PART)
        upload = self._initiate(dst, part_size, new_meta)
        parts: list[UploadedPart] = []
        try:
            for number, first in enumerate(range(0, source.size, upload.part_size), start=1):
                last = min(first + upload.part_size, source.size) - 1
                what = f"copy part {number} of {source.key!r} to {dst!r}"
                headers = {**self._copy_headers(source), "x-amz-copy-source-range": f"bytes={first}-{last}"}
                answer = self._call("PUT", dst, what=what, headers=headers, error_in_body=True,
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
        body = restore_xml(days, tier)
        headers = {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode("ascii"),
                   "Content-Type": "application/xml"}
        try:
            answer = self._call("POST", key, what=what, params=[("restore", "")], headers=headers,
                                body=Body(data=body))
        except StoreError as exc:
            if exc.code == "RestoreAlreadyInProgress":
                return False
            if exc.code == "InvalidObjectState":  # here it means: not in an archive storage class
                raise InvalidArgument(f"{what}: the object is not in an archive storage class") from None
            raise
        return answer.status == 202


def open_provider(remote: str, options: Mapping[str, str]) -> S3Provider:
    return S3Provider(remote, options)
