"""Uploading a local file as one object: one PUT for small files, parallel multipart for large ones.

Part size for a known size is `max(provider minimum, configured size, ceil(size / max parts))`
(ARCHITECTURE.md), unless the server chooses it (UFile). At most `workers` parts are in memory at once,
so memory is bounded whatever the file size; a provider with `upload_part_from_file` (S3) sends each
part from the file and holds none. A failed upload is aborted on the server; the local file
is never touched here.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import os
import threading
from typing import Callable, Mapping

from ...wire.body import FileSlice
from ...store.contract import Capabilities, MultipartUpload, ObjectInfo, ObjectStore, UploadedPart

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class UploadSettings:
    part_size: int = 8 * 1024 * 1024
    workers: int = 4


def part_size_for(size: int, caps: Capabilities, wanted: int) -> int:
    size_needed = math.ceil(size / caps.max_parts) if size else 0
    return min(max(caps.min_part_size, wanted, size_needed), caps.max_part_size)


def upload_file(store: ObjectStore, key: str, path: str, meta: Mapping[str, str], settings: UploadSettings,
                *, on_multipart: Callable[[MultipartUpload], None] | None = None,
                progress: Callable[[int], None] | None = None) -> ObjectInfo:
    """Upload the local file at `path` as `key`. `on_multipart` hears of a multipart upload as soon as
    it exists (so a journal can abort it after a crash); `progress` gets the bytes sent so far."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        caps = store.capabilities
        if size <= caps.single_put_max:
            info = store.put(key, FileSlice(fd, 0, size), size, meta)
            if progress:
                progress(size)
            return info
        return _multipart(store, key, fd, size, meta, settings, on_multipart, progress)
    finally:
        os.close(fd)


def _multipart(store: ObjectStore, key: str, fd: int, size: int, meta: Mapping[str, str],
               settings: UploadSettings, on_multipart: Callable[[MultipartUpload], None] | None,
               progress: Callable[[int], None] | None) -> ObjectInfo:
    caps = store.capabilities
    upload = store.create_multipart(key, size, part_size_for(size, caps, settings.part_size), meta)
    if on_multipart:
        on_multipart(upload)
    part_size = upload.part_size
    offsets = list(range(0, size, part_size))
    sent = 0
    sent_lock = threading.Lock()
    # A store that sends a part straight from the file (S3) keeps no part in memory at all.
    from_file = caps.parts_from_files

    def send(number: int, offset: int) -> UploadedPart:
        nonlocal sent
        length = min(part_size, size - offset)
        if from_file:
            part = store.upload_part_from_file(upload, number, fd, offset, length)
        else:
            part = store.upload_part(upload, number, offset, os.pread(fd, length, offset))
        if progress:
            with sent_lock:
                sent += length
                progress(sent)
        return part

    try:
        if caps.parts_in_order or settings.workers <= 1:
            parts = [send(n, off) for n, off in enumerate(offsets, start=1)]
        else:
            with concurrent.futures.ThreadPoolExecutor(settings.workers, thread_name_prefix="part") as pool:
                # Submit lazily, `workers` at a time, so no more than that many parts sit in memory.
                parts = []
                pending: dict[concurrent.futures.Future, int] = {}
                numbered = iter(enumerate(offsets, start=1))
                for number, offset in numbered:
                    pending[pool.submit(send, number, offset)] = number
                    if len(pending) >= settings.workers:
                        done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                        for future in done:
                            parts.append(future.result())
                            del pending[future]
                for future in concurrent.futures.as_completed(pending):
                    parts.append(future.result())
                parts.sort(key=lambda p: p.number)
        return store.complete_multipart(upload, parts)
    except BaseException:
        try:
            store.abort_multipart(upload)
        except Exception as exc:  # the original failure matters more
            log.warning("could not abort multipart upload of %r: %s", key, exc)
        raise
