"""`REMOTE:` mounts: every bucket of a provider as a top-level directory.

`AllBuckets` is an ObjectStore whose keys are `<bucket>/<key>`, delegating to one store per bucket, so
the filesystem core needs no special case. Creating or removing buckets through the mount is refused
(EPERM), and rename between two buckets answers EXDEV so that `mv` copies instead.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import BinaryIO, Mapping, Sequence

from ..errors import CrossDevice, NotFound, NotPermitted
from .conditions import ConditionalWrites, WriteCondition
from .contract import (
    ListPage,
    MultipartUpload,
    ObjectInfo,
    ObjectStore,
    Provider,
    UploadedPart,
)


class AllBuckets:
    name = ""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self._stores: dict[str, ObjectStore] = {}
        self._lock = threading.Lock()
        # The buckets' own features, fast paths included (delegated below), except batched stats: a
        # batch may span buckets, and it is not worth splitting for the top level's few entries.
        self.capabilities = dataclasses.replace(provider.bucket("storefs-probe").capabilities,
                                                root_writable=False, batched_stat=False)

    def _store(self, bucket: str) -> ObjectStore:
        with self._lock:
            store = self._stores.get(bucket)
            if store is None:
                store = self._stores[bucket] = self.provider.bucket(bucket)
            return store

    def _split(self, key: str, *, writing: bool = False) -> tuple[ObjectStore, str, str]:
        bucket, sep, rest = key.partition("/")
        if not sep or (writing and not rest):
            raise NotPermitted("buckets cannot be created, changed or removed through the mount")
        return self._store(bucket), bucket, rest

    @staticmethod
    def _outer(bucket: str, info: ObjectInfo) -> ObjectInfo:
        return dataclasses.replace(info, key=f"{bucket}/{info.key}")

    def stat(self, key: str) -> ObjectInfo:
        store, bucket, rest = self._split(key)
        if not rest:
            if bucket not in self.provider.list_buckets():
                raise NotFound(key)
            return ObjectInfo(key=key, size=0, etag="bucket", mtime=0.0, meta={})
        return self._outer(bucket, store.stat(rest))

    def list(self, prefix: str, *, delimiter: str = "/", token: str | None = None,
             limit: int | None = None) -> ListPage:
        if "/" not in prefix:
            names = [b for b in self.provider.list_buckets() if b.startswith(prefix)]
            return ListPage([], [f"{b}/" for b in names], None)
        store, bucket, rest = self._split(prefix)
        page = store.list(rest, delimiter=delimiter, token=token, limit=limit)
        return ListPage([self._outer(bucket, o) for o in page.objects],
                        [f"{bucket}/{p}" for p in page.prefixes], page.next_token)

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        store, _, rest = self._split(key)
        return store.read_range(rest, start, end, if_match=if_match)

    def read_range_pieces(self, key: str, start: int, end: int, piece: int, *,
                          if_match: str | None = None) -> list[bytes]:
        store, _, rest = self._split(key)
        return store.read_range_pieces(rest, start, end, piece, if_match=if_match)

    def read_range_to_files(self, key: str, start: int, end: int, piece: int, files: Sequence[int], *,
                            if_match: str | None = None) -> bool:
        store, _, rest = self._split(key)
        return store.read_range_to_files(rest, start, end, piece, files, if_match=if_match)

    def restore(self, key: str, *, days: int, tier: str) -> bool:
        store, _, rest = self._split(key, writing=True)
        return store.restore(rest, days=days, tier=tier)  # type: ignore[attr-defined]

    def conditional_writes(self, key: str) -> ConditionalWrites:
        store, _, rest = self._split(key, writing=True)
        return store.conditional_writes(rest)

    def put(self, key: str, body: BinaryIO, size: int, meta: Mapping[str, str], *,
            condition: WriteCondition | None = None) -> ObjectInfo:
        store, bucket, rest = self._split(key, writing=True)
        return self._outer(bucket, store.put(rest, body, size, meta, condition=condition))

    def delete(self, key: str) -> None:
        store, _, rest = self._split(key, writing=True)
        store.delete(rest)

    def _same_bucket(self, src: str, dst: str) -> tuple[ObjectStore, str, str, str]:
        store, bucket, src_rest = self._split(src, writing=True)
        _, dst_bucket, dst_rest = self._split(dst, writing=True)
        if dst_bucket != bucket:
            raise CrossDevice("cannot move or copy between buckets inside the mount")
        return store, bucket, src_rest, dst_rest

    def copy(self, src: str, dst: str, meta: Mapping[str, str] | None = None) -> ObjectInfo:
        store, bucket, src_rest, dst_rest = self._same_bucket(src, dst)
        return self._outer(bucket, store.copy(src_rest, dst_rest, meta))

    def move(self, src: str, dst: str) -> ObjectInfo:
        store, bucket, src_rest, dst_rest = self._same_bucket(src, dst)
        return self._outer(bucket, store.move(src_rest, dst_rest))

    def set_meta(self, key: str, meta: Mapping[str, str]) -> ObjectInfo:
        store, bucket, rest = self._split(key, writing=True)
        return self._outer(bucket, store.set_meta(rest, meta))

    # multipart: the inner upload carries the inner key; we hand out a copy with the outer key.
    def create_multipart(self, key: str, size: int, part_size: int, meta: Mapping[str, str], *,
                         condition: WriteCondition | None = None) -> MultipartUpload:
        store, _, rest = self._split(key, writing=True)
        inner = store.create_multipart(rest, size, part_size, meta, condition=condition)
        return dataclasses.replace(inner, key=key)

    def _inner(self, upload: MultipartUpload) -> tuple[ObjectStore, str, MultipartUpload]:
        store, bucket, rest = self._split(upload.key, writing=True)
        return store, bucket, dataclasses.replace(upload, key=rest)

    def upload_part(self, upload: MultipartUpload, number: int, offset: int, data: bytes) -> UploadedPart:
        store, _, inner = self._inner(upload)
        part = store.upload_part(inner, number, offset, data)
        upload.state = inner.state  # providers may record per-part state (WCS contexts)
        return part

    def upload_part_from_file(self, upload: MultipartUpload, number: int, fd: int, offset: int,
                              size: int) -> UploadedPart:
        store, _, inner = self._inner(upload)
        part = store.upload_part_from_file(inner, number, fd, offset, size)
        upload.state = inner.state
        return part

    def complete_multipart(self, upload: MultipartUpload, parts: list[UploadedPart], *,
                           condition: WriteCondition | None = None) -> ObjectInfo:
        store, bucket, inner = self._inner(upload)
        return self._outer(bucket, store.complete_multipart(inner, parts, condition=condition))

    def abort_multipart(self, upload: MultipartUpload) -> None:
        store, _, inner = self._inner(upload)
        store.abort_multipart(inner)

    def list_parts(self, upload: MultipartUpload) -> list[UploadedPart]:
        store, _, inner = self._inner(upload)
        return store.list_parts(inner)

    def list_multipart(self) -> list[MultipartUpload]:
        return []
