"""Uploading a local file as one object: one PUT for small files, parallel multipart for large ones.

Part size for a known size is `max(provider minimum, configured size, ceil(size / max parts))`
(ARCHITECTURE.md), unless the server chooses it (UFile). At most `workers` parts are in memory at once,
so memory is bounded whatever the file size; a provider with `upload_part_from_file` (S3) sends each
part from the file and holds none. A multipart upload interrupted by a transient failure is kept on
the server for the next try to resume (resume.py); any other failure aborts it. The local file's
bytes are never changed here (a staged file's sent parts leave the page cache: UploadSettings.drop_sent).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import logging
import math
import os
import threading
from typing import Callable, Mapping

from ...errors import NotFound, StoreError, Transient
from ...wire.body import FileSlice
from ...store.conditions import WriteCondition
from ...store.contract import Capabilities, MultipartUpload, ObjectInfo, ObjectStore, UploadedPart
from .dropbehind import drop_behind
from .resume import UploadTracker, verified_parts

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class UploadSettings:
    part_size: int = 8 * 1024 * 1024
    workers: int = 4
    # The file is the mount's staged copy: each part's pages are dropped from the page cache once it
    # is sent (dropbehind.py). A user's own file (a raw upload) keeps its pages cached.
    drop_sent: bool = False


def part_size_for(size: int, caps: Capabilities, wanted: int) -> int:
    size_needed = math.ceil(size / caps.max_parts) if size else 0
    return min(max(caps.min_part_size, wanted, size_needed), caps.max_part_size)


def is_multipart(caps: Capabilities, size: int) -> bool:
    """Whether a file of `size` bytes goes up as a multipart upload rather than one PUT."""
    return size > caps.single_put_max


def upload_file(store: ObjectStore, key: str, path: str, meta: Mapping[str, str], settings: UploadSettings,
                *, tracker: UploadTracker | None = None,
                progress: Callable[[int], None] | None = None,
                condition: WriteCondition | None = None) -> ObjectInfo:
    """Upload the local file at `path` as `key`. `tracker` (the journal's side) hears of a multipart
    upload as soon as it exists and holds the one to resume (resume.py); `progress` gets the bytes
    done so far (parts found on the server count as done). `condition` goes with the PUT or the
    multipart completion: PreconditionFailed (a multipart upload aborted) if it does not hold."""
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        size = st.st_size
        caps = store.capabilities
        if not is_multipart(caps, size):
            if tracker is not None and tracker.record is not None:
                _abandon(store, tracker, "the file is now small enough for one PUT")
            info = store.put(key, FileSlice(fd, 0, size), size, meta, condition=condition)
            if progress:
                progress(size)
            return info
        return _multipart(store, key, fd, size, st.st_mtime_ns, meta, settings, tracker, progress, condition)
    finally:
        os.close(fd)


def _abandon(store: ObjectStore, tracker: UploadTracker, why: str) -> None:
    """Abort the upload the tracker holds (the file changed, or its parts cannot be used)."""
    record = tracker.record
    assert record is not None
    log.info("not resuming the upload of %r: %s", record.key, why)
    try:
        store.abort_multipart(record.upload())
    except StoreError as exc:  # the ledger keeps it: the next mount tries again
        log.warning("could not abort the old multipart upload of %r: %s", record.key, exc)
        tracker.record = None
        return
    tracker.ended()


def _resumed(store: ObjectStore, key: str, fd: int, size: int, mtime_ns: int,
             tracker: UploadTracker | None) -> tuple[MultipartUpload | None, dict[int, UploadedPart]]:
    """The upload to go on with and its parts already on the server (verified), or (None, {})."""
    record = tracker.record if tracker is not None else None
    if tracker is None or record is None:
        return None, {}
    if not store.capabilities.resume:
        _abandon(store, tracker, "this provider cannot resume uploads")
        return None, {}
    if not record.same_file(key, size, mtime_ns):
        _abandon(store, tracker, "the file or its name changed since the upload began")
        return None, {}
    upload = record.upload()
    try:
        parts = verified_parts(store, upload, fd, size, record)
    except NotFound:
        log.info("the multipart upload of %r is gone from the server: starting again", key)
        tracker.ended()
        return None, {}
    except StoreError as exc:
        if isinstance(exc, Transient):
            raise   # the record stays: the next try lists again
        _abandon(store, tracker, f"its parts cannot be listed ({exc})")
        return None, {}
    done = sum(p.size for p in parts.values())
    log.warning("resuming the upload of %r: %d of %d parts (%d of %d bytes) are on the server and match",
                key, len(parts), math.ceil(size / upload.part_size), done, size)
    return upload, parts


def _multipart(store: ObjectStore, key: str, fd: int, size: int, mtime_ns: int, meta: Mapping[str, str],
               settings: UploadSettings, tracker: UploadTracker | None,
               progress: Callable[[int], None] | None, condition: WriteCondition | None) -> ObjectInfo:
    caps = store.capabilities
    upload, reused = _resumed(store, key, fd, size, mtime_ns, tracker)
    if upload is None:
        token = tracker.intent(key) if tracker is not None else ""
        upload = store.create_multipart(key, size, part_size_for(size, caps, settings.part_size), meta,
                                        condition=condition)
        if tracker is not None:
            tracker.started(token, upload, size, mtime_ns)
    part_size = upload.part_size
    offsets = [(n, off) for n, off in enumerate(range(0, size, part_size), start=1) if n not in reused]
    sent = sum(p.size for p in reused.values())
    sent_lock = threading.Lock()
    if progress and sent:
        progress(sent)
    # A store that sends a part straight from the file (S3) keeps no part in memory at all.
    from_file = caps.parts_from_files
    # WCS lists no parts: each finished one is journaled with the MD5 of what was sent.
    journal_parts = caps.resume == "journal" and tracker is not None

    def send(number: int, offset: int) -> UploadedPart:
        nonlocal sent
        length = min(part_size, size - offset)
        if from_file:
            part = store.upload_part_from_file(upload, number, fd, offset, length)
        else:
            data = os.pread(fd, length, offset)
            part = store.upload_part(upload, number, offset, data)
            if journal_parts:
                tracker.part_done(part, hashlib.md5(data).hexdigest(), upload.state)
        if settings.drop_sent:
            drop_behind(fd, offset, length)
        if progress:
            with sent_lock:
                sent += length
                progress(sent)
        return part

    try:
        parts = list(reused.values())
        if caps.parts_in_order or settings.workers <= 1:
            parts += [send(n, off) for n, off in offsets]
        else:
            with concurrent.futures.ThreadPoolExecutor(settings.workers, thread_name_prefix="part") as pool:
                # Submit lazily, `workers` at a time, so no more than that many parts sit in memory.
                pending: dict[concurrent.futures.Future, int] = {}
                for number, offset in offsets:
                    pending[pool.submit(send, number, offset)] = number
                    if len(pending) >= settings.workers:
                        done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                        for future in done:
                            parts.append(future.result())
                            del pending[future]
                for future in concurrent.futures.as_completed(pending):
                    parts.append(future.result())
        parts.sort(key=lambda p: p.number)
        info = store.complete_multipart(upload, parts, condition=condition)
    except BaseException as exc:
        if tracker is not None and caps.resume and isinstance(exc, Transient):
            # The server keeps the parts sent: the next try (or the next mount) resumes from them.
            log.info("multipart upload of %r interrupted (%s); kept for resuming", key, exc)
            raise
        try:
            store.abort_multipart(upload)
            if tracker is not None:
                tracker.ended()
        except Exception as abort_error:  # the original failure matters more; the ledger remembers it
            log.warning("could not abort multipart upload of %r: %s", key, abort_error)
            if tracker is not None:
                tracker.record = None   # not to be resumed; the next mount aborts it (ledger)
        raise
    if tracker is not None:
        tracker.ended()
    return info
