"""The upload that follows a file being written: a large file written sequentially from empty goes up
in parts while it is still being written (SEMANTICS.md, Uploads, "Streamed uploads").

A `FileStream` hears every write and truncate of one staged file (OpenFile calls it under the file's
lock). Once the bytes written in sequence from offset 0 pass the provider's single-PUT size by one
full part, it starts a multipart upload and sends each full part from the staged file as it fills, in
the background, at most `transfers` at a time. The staged file keeps every byte, so the durability
promise does not change: a stream that cannot be used is aborted and the file goes up whole, as a
file that never streamed does.

When the file is due for upload the committer calls `Streams.finish`: the tail and any part written
again go up and the upload is completed, or None says "upload it as before" (the stream was aborted,
never started, or the file's name, metadata or mtime are no longer those the upload began with).

The object is created without an mtime in its metadata: a streamed object's mtime is the server's
Last-Modified, read back once it is complete. The ledger (resume.UploadTracker) knows the upload
from before it exists, and a stream never writes a journal entry: a crash while the file is open
leaves an upload that no entry references, which the next mount aborts (resume.sweep_orphans); a
crash after close leaves the file's entry, which refers to the stream's upload: the next mount resumes
it from the parts the server holds (resume.py).

Locking: a stream's condition guards its state. The write hook takes it under the file's lock; the
pool's tasks take it alone, never the file's lock; no request is made while it is held.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import os
import re
import threading
from typing import Callable, Mapping

from ...errors import PreconditionFailed, StoreError
from ...paths import basename
from ...store.conditions import WriteCondition
from ...store.contract import MultipartUpload, ObjectInfo, ObjectStore, UploadedPart
from .dropbehind import drop_behind
from .journal import Journal
from .openfiles import Follower, OpenFile
from .resume import UploadRecord, UploadTracker
from .uploader import UploadSettings, part_size_for

log = logging.getLogger(__name__)

# Metadata a streamed object is created without: its times are the server's (see the module's docstring).
TIME_KEYS = frozenset({"mtime", "ctime", "storefs-mtime-ns", "storefs-ctime-ns"})


# rsync's temporary names (`.NAME.XXXXXX`, mkstemp's six characters): rsync renames such a file once it is
# written, which would abort its stream, so its parts would go up twice. They never stream.
RSYNC_TEMP = re.compile(r"\..+\.[A-Za-z0-9]{6}")


def untimed(meta: Mapping[str, str]) -> dict[str, str]:
    """`meta` without the modification and change times."""
    return {k: v for k, v in meta.items() if k not in TIME_KEYS}


class Streams:
    """The mount's streamed uploads: which files stream, and the threads that send their parts."""

    def __init__(self, store: ObjectStore, journal: Journal, settings: UploadSettings, transfers: int,
                 meta_of: Callable[[OpenFile], dict[str, str]],
                 condition_of: Callable[[str, str | None], WriteCondition | None], mode: str = "on") -> None:
        """`meta_of(file)`: the metadata its upload would have now; `condition_of(key, base_etag)`:
        the write condition the server enforces for a multipart upload of `key`, or None; `mode`:
        `-o stream_uploads` (auto: on, unless the server dates a multipart object by its start)."""
        self.store = store
        self.journal = journal
        caps = store.capabilities
        wanted = mode == "on" or (mode == "auto" and not caps.multipart_dated_at_start)
        self.enabled = wanted and caps.streamed_uploads
        self.part_size = part_size_for(0, caps, settings.part_size)
        # Small and medium files never stream: only one that is a multipart upload anyway.
        self.start_at = caps.single_put_max + self.part_size
        self.max_parts = caps.max_parts
        self.transfers = 1 if caps.parts_in_order else max(1, transfers)
        self.from_file = caps.parts_from_files
        self.meta_of = meta_of
        self.condition_of = condition_of
        self._pool = concurrent.futures.ThreadPoolExecutor(self.transfers, thread_name_prefix="stream")

    def watch(self, opened: OpenFile) -> None:
        """`opened` begins empty (created, or opened with O_TRUNC): its writes may stream."""
        if not self.enabled or opened.staged_path is None or RSYNC_TEMP.fullmatch(basename(opened.path)):
            return
        if opened.stream is None or opened.stream.dead:
            opened.stream = FileStream(self, opened.staged_path)

    def submit(self, task: Callable[..., None], *args: object) -> bool:
        """Run `task(*args)` in the pool; False once the mount is closing (nothing runs any more)."""
        try:
            self._pool.submit(task, *args)
        except RuntimeError:   # shut down: the ledger has any upload left for the next mount
            return False
        return True

    def send_part(self, upload: MultipartUpload, fd: int, number: int, offset: int, length: int) -> UploadedPart:
        if self.from_file:
            part = self.store.upload_part_from_file(upload, number, fd, offset, length)
        else:
            # Bounded memory: at most `transfers` parts are read at once.
            part = self.store.upload_part(upload, number, offset, os.pread(fd, length, offset))
        drop_behind(fd, offset, length)   # sent: its pages are not read again (dropbehind.py)
        return part

    def finish(self, stream: Follower | None, key: str, meta: Mapping[str, str], mtime_ns: int, size: int,
               condition: WriteCondition | None) -> ObjectInfo | None:
        """Complete `stream` as the upload of `size` bytes to `key` with `meta` (the upload the file
        is due for), or None: it cannot be used (aborted now if it began), upload the file as before.
        PreconditionFailed (the upload aborted) when the server refuses the condition."""
        if not isinstance(stream, FileStream):
            return None
        return stream.finish(key, untimed(meta), mtime_ns, size, condition)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def dated(store: ObjectStore, info: ObjectInfo) -> ObjectInfo:
    """A streamed object as a HEAD shows it once complete: its Last-Modified is the file's mtime."""
    try:
        stored = store.stat(info.key)
    except StoreError as exc:
        log.info("could not read back %r after its streamed upload: %s", info.key, exc)
        return info
    return stored if stored.etag == info.etag and stored.size == info.size else info


class FileStream:
    """The multipart upload that follows one staged file while it is written."""

    def __init__(self, owner: Streams, staged_path: str) -> None:
        self._owner = owner
        self._cond = threading.Condition()
        self._staged_path = staged_path
        self.seq_end = 0                       # bytes written in sequence from offset 0
        self.dead: str | None = None           # why it will not be used (then aborted, if it began)
        self.key = ""
        self.meta: dict[str, str] = {}         # the upload's metadata, times left out
        self.write_mtime_ns = 0                # the mtime the last write or truncate gave the file
        self.condition: WriteCondition | None = None
        self.upload: MultipartUpload | None = None
        self._starting = False
        self._aborting = False
        self._fd: int | None = None            # its own descriptor: the file's may close first
        self._tracker: UploadTracker | None = None
        self._next = 1                         # the first part number never sent
        self._in_flight: set[int] = set()
        self._stale: set[int] = set()          # sent parts written again since: to send again
        self._parts: dict[int, UploadedPart] = {}
        self._last: int | None = None          # finishing: the number of the last part
        self._size = 0                         # finishing: the file's size

    # -- what the file tells it (under the file's lock) -----------------------------------------------

    def wrote(self, opened: OpenFile, offset: int, length: int) -> None:
        with self._cond:
            if self.dead is not None:
                return
            try:
                self._wrote(opened, offset, length)
            except Exception as exc:   # never fails the write(2): the file goes up whole when due
                self._die(f"{exc.__class__.__name__}: {exc}")

    def _wrote(self, opened: OpenFile, offset: int, length: int) -> None:
        """Follow a write of [offset, offset+length) (the condition held)."""
        end = offset + length
        if offset > self.seq_end:   # a hole: no longer written in sequence
            self._die("written out of sequence", quiet=not self._began)
            return
        if offset < self.seq_end:
            self._rewritten(offset, end)
            if self.dead is not None:
                return
        self.seq_end = max(self.seq_end, end)
        self.write_mtime_ns = opened.attrs.mtime_ns
        if self.seq_end > self._owner.max_parts * self._part_size:
            self._die("it outgrew the provider's part count")
        elif not self._began and self.seq_end >= self._owner.start_at:
            self._start(opened)
        else:
            self._pump()

    def truncated(self, opened: OpenFile, length: int) -> None:
        with self._cond:
            if self.dead is not None:
                return
            if length < (self._next - 1) * self._part_size:
                self._die("truncated below the parts sent")
                return
            if length < self.seq_end:
                self._rewritten(length, self.seq_end)
            self.seq_end = min(self.seq_end, length)
            self.write_mtime_ns = opened.attrs.mtime_ns

    def abort(self, why: str) -> None:
        """Renamed, removed, or anything else after which the upload cannot be used."""
        with self._cond:
            self._die(why)

    def record(self, size: int, mtime_ns: int) -> UploadRecord | None:
        """The upload as the journal entry of the closed file keeps it (`size` bytes, staged file's
        mtime `mtime_ns`), so that a crash after close resumes it from the parts sent; None if none."""
        with self._cond:
            record = self._tracker.record if self._tracker is not None and self.dead is None else None
            return dataclasses.replace(record, size=size, mtime_ns=mtime_ns, streamed=True) if record else None

    # -- finishing (the committer's upload thread) --------------------------------------------------

    def finish(self, key: str, meta: dict[str, str], mtime_ns: int, size: int,
               condition: WriteCondition | None) -> ObjectInfo | None:
        with self._cond:
            while self._starting:
                self._cond.wait()
            why = self._unusable(key, meta, mtime_ns, size)
            if why is not None:
                self._die(why, quiet=not self._began)
                return None
            upload = self.upload
            assert upload is not None
            self._last, self._size = max(1, math.ceil(size / upload.part_size)), size
            self._pump()
            while self.dead is None and (self._in_flight or self._stale or self._next <= self._last):
                self._cond.wait()
            if self.dead is not None:
                return None
            parts = [self._parts[n] for n in range(1, self._last + 1)]
            self.dead = "finished"   # later writes go to the next upload, never to this one
        try:
            info = self._owner.store.complete_multipart(upload, parts, condition=condition)
        except PreconditionFailed:
            self._abort_upload()
            raise
        except StoreError as exc:
            log.warning("could not complete the streamed upload of %r (%s): it goes up whole", key, exc)
            self._abort_upload()
            return None
        self._ended()
        return dated(self._owner.store, info)

    def _unusable(self, key: str, meta: dict[str, str], mtime_ns: int, size: int) -> str | None:
        if self.dead is not None:
            return self.dead
        if self.upload is None:
            return "never started"
        if key != self.key:
            return "its name changed"
        if meta != self.meta:
            return "its mode, owner or metadata changed"
        if mtime_ns != self.write_mtime_ns:
            return "its mtime was set"
        if size < (self._next - 1) * self._part_size or math.ceil(size / self._part_size) > self._owner.max_parts:
            return "its size no longer fits the parts"
        return None

    # -- the upload (called with the condition held; requests run in the pool) -----------------------

    @property
    def _began(self) -> bool:
        return self._starting or self.upload is not None

    @property
    def _part_size(self) -> int:
        return self.upload.part_size if self.upload is not None else self._owner.part_size

    def _rewritten(self, start: int, end: int) -> None:
        """Bytes [start, end) changed: the parts sent of them go again."""
        if self._next == 1 or start >= end:
            return
        ps = self._part_size
        self._stale.update(range(start // ps + 1, min((end - 1) // ps + 1, self._next - 1) + 1))

    def _start(self, opened: OpenFile) -> None:
        self._starting = True
        self.key = opened.key
        self.meta = untimed(self._owner.meta_of(opened))
        if not self._owner.submit(self._create, opened.base_etag):
            self._starting = False
            self._die("the mount is closing", quiet=True)

    def _create(self, base_etag: str | None) -> None:
        """Create the multipart upload (the ledger first), then send what is ready."""
        owner = self._owner
        tracker = UploadTracker(owner.journal, None, lambda record: None)   # never a journal entry
        fd = upload = None
        try:
            condition = owner.condition_of(self.key, base_etag)
            token = tracker.intent(self.key)
            fd = os.open(self._staged_path, os.O_RDONLY)
            upload = owner.store.create_multipart(self.key, 0, owner.part_size, self.meta, condition=condition)
            tracker.started(token, upload, 0, 0)
        except Exception as exc:   # never fails a write: the file goes up whole at close
            log.info("not streaming the upload of %r: %s", self.key, exc)
            if fd is not None:
                os.close(fd)
            with self._cond:
                self._starting = False
                self.upload = upload
                self._tracker = tracker if upload is not None else None
                self._die(f"could not start: {exc}")
                self._cond.notify_all()
            return
        log.info("streaming the upload of %r while it is written (%s)", self.key, upload.upload_id)
        with self._cond:
            self._starting = False
            self.upload, self._tracker, self._fd, self.condition = upload, tracker, fd, condition
            if self.dead is not None:
                self._abort_when_idle()
            else:
                self._pump()
            self._cond.notify_all()

    def _pump(self) -> None:
        """Send what is ready, up to `transfers` parts at a time."""
        if self.dead is not None or self.upload is None:
            return
        while len(self._in_flight) < self._owner.transfers:
            number = self._ready()
            if number is None:
                return
            self._in_flight.add(number)
            self._stale.discard(number)
            self._next = max(self._next, number + 1)
            offset = (number - 1) * self.upload.part_size
            length = self.upload.part_size if number != self._last else self._size - offset
            if not self._owner.submit(self._send, number, offset, length):
                self._in_flight.discard(number)
                self._die("the mount is closing")
                return

    def _ready(self) -> int | None:
        """The next part to send: a full one while writing; when finishing, parts written again,
        then the rest up to the last."""
        if self._last is None:
            return self._next if self._next <= self.seq_end // self._part_size else None
        for number in sorted(self._stale - self._in_flight):
            return number
        return self._next if self._next <= self._last else None

    def _send(self, number: int, offset: int, length: int) -> None:
        assert self.upload is not None and self._fd is not None
        try:
            part = self._owner.send_part(self.upload, self._fd, number, offset, length)
        except Exception as exc:   # never fails a write: the file goes up whole at close
            with self._cond:
                self._in_flight.discard(number)
                if self.dead is None:
                    self._die(f"part {number} failed: {exc}")
                else:   # stopped while this part was on the wire: the abort waited for it
                    self._abort_when_idle()
                self._cond.notify_all()
            return
        with self._cond:
            self._in_flight.discard(number)
            self._parts[number] = part
            if self.dead is not None:
                self._abort_when_idle()
            else:
                self._pump()
            self._cond.notify_all()

    def _die(self, why: str, *, quiet: bool = False) -> None:
        if self.dead is not None:
            return
        self.dead = why
        if not quiet and self.key:   # no key: it never began (nothing sent), nothing to say
            log.info("the streamed upload of %r stops (%s): the file goes up whole", self.key, why)
        self._abort_when_idle()
        self._cond.notify_all()

    def _abort_when_idle(self) -> None:
        if self._in_flight or self._starting or self._aborting:
            return
        if self.upload is None:
            return
        self._aborting = self._owner.submit(self._abort_upload)

    def _abort_upload(self) -> None:
        assert self.upload is not None
        try:
            self._owner.store.abort_multipart(self.upload)
        except StoreError as exc:   # the ledger keeps it: the next mount aborts it
            log.warning("could not abort the streamed upload of %r: %s", self.key, exc)
            self._close_fd()
            return
        self._ended()

    def _ended(self) -> None:
        if self._tracker is not None:
            self._tracker.ended()
        self._close_fd()

    def _close_fd(self) -> None:
        with self._cond:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
