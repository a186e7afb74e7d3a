"""Open files: staged local copies of files being written, the handles that refer to them, and the
mount's table of both (`OpenFiles`).

A file opened for writing is staged: its bytes live in a local file under the staging directory
(never whole in memory), where random writes, appends and truncates are plain file operations. It is
filled through a `RangeReader`, the one read path for remote bytes (block cache included). The
staged copy is uploaded when the last writer flushes or closes it, and by fsync. A read-only open of a
file that nobody writes reads the remote object through a `RangeReader` instead. An OpenFile makes
its own state changes (methods below); the filesystem, its renames and the committer call them.

Locking: `OpenFile.lock` guards one file's staged data and attributes. The table lock
(`OpenFiles.lock`) is taken before it, never after.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import stat
import threading
from typing import Callable, Protocol

from ...attrs import Attrs, now_ns
from .reader import RangeReader
from ..sinks import Sink
from ...store.contract import ObjectInfo
from .staging import Staging

log = logging.getLogger(__name__)


class Follower(Protocol):
    """What hears a staged file's changes as they are made (streaming.FileStream, its upload while
    written). Called under the file's lock."""

    dead: str | None   # why it stopped following, if it did

    def wrote(self, opened: OpenFile, offset: int, length: int) -> None: ...

    def truncated(self, opened: OpenFile, length: int) -> None: ...

    def abort(self, why: str) -> None: ...


@dataclasses.dataclass
class OpenFile:
    """One path that has open handles. Shared by every handle on that path."""

    path: str
    key: str
    attrs: Attrs
    info: ObjectInfo | None              # the remote object as last seen or uploaded; None if none yet
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)
    refs: int = 0
    staged_path: str | None = None
    fd: int | None = None
    data_dirty: bool = False             # staged bytes differ from the remote object
    meta_dirty: bool = False             # attributes changed since the last upload
    unlinked: bool = False               # removed while open: nothing is uploaded at close
    staging: Staging | None = None       # where the staged copy lives, for size accounting
    writers: int = 0                     # handles open for writing
    generation: int = 0                  # bumped by every change, so an upload knows if it is current
    data_generation: int = 0             # bumped by every write and truncate: which bytes an upload sent
    base_etag: str | None = None         # remote ETag the staged copy started from (conflict check)
    journaled: int = -1                  # the generation last written to the journal
    stream: Follower | None = None       # its upload while written, if it began empty (streaming.py)
    # The staged file's size, kept by the methods below (the only writers of the staged file): an
    # fstat per getattr, write and close released the GIL each time, a hand-off between threads.
    staged_size: int = 0

    @property
    def staged(self) -> bool:
        return self.fd is not None

    @property
    def dirty(self) -> bool:
        return self.data_dirty or self.meta_dirty

    def current_attrs(self) -> Attrs:
        # No lock: an upload may hold it for long, and `ls -l` must not wait for that.
        attrs = self.attrs.copy()
        if self.fd is not None:
            attrs.size = self.staged_size
        return attrs

    @property
    def staged_id(self) -> str | None:
        return os.path.basename(self.staged_path) if self.staged_path else None

    def adopt_staged(self, staging: Staging, path: str) -> None:
        """Take over a staged file left by an earlier run (journal replay)."""
        self.staged_path, self.fd, self.staging = path, os.open(path, os.O_RDWR), staging
        self.staged_size = os.fstat(self.fd).st_size
        staging.adopt(path, self.staged_size)
        self.data_dirty = True

    # -- staging -----------------------------------------------------------------------------------

    def stage_empty(self, staging: Staging) -> None:
        with self.lock:
            if self.fd is None:
                self.staged_path, self.fd = staging.new_file()
                self.staging, self.staged_size = staging, 0
                self.data_dirty = True
                # Truncated, it still replaces the object it was opened on: that version is the one
                # its upload may replace (committer.py), not "none" (which would make it a conflict).
                self.base_etag = self.info.etag if self.info else None

    def stage_from_remote(self, staging: Staging, reader: Callable[[], RangeReader]) -> None:
        """Copy the remote object into a staged file through a reader of it (`reader()` makes one):
        the one read path for remote bytes, so cached blocks are used and fetched ones are cached."""
        with self.lock:
            if self.fd is not None:
                return
            size = self.info.size if self.info else 0
            path, fd = staging.new_file()
            try:
                staging.resize(path, size)
                if size:
                    source = reader()
                    try:
                        source.copy_to_file(fd)
                    finally:
                        source.close()
            except BaseException:
                os.close(fd)
                os.unlink(path)
                staging.forget(path)
                raise
            self.staged_path, self.fd, self.staging = path, fd, staging
            self.staged_size = os.fstat(fd).st_size
            self.base_etag = self.info.etag if self.info else None

    def write(self, data: bytes | memoryview, offset: int, append: bool) -> int:
        with self.lock:
            assert self.fd is not None
            size = self.staged_size
            if append:
                offset = size
            self._account(max(size, offset + len(data)))
            written = os.pwrite(self.fd, data, offset)
            self.staged_size = max(size, offset + written)
            self.data_dirty = True
            self.generation += 1
            self.data_generation += 1
            self.attrs.mtime_ns = self.attrs.ctime_ns = now_ns()
            if self.stream is not None:
                self.stream.wrote(self, offset, written)
            return written

    def read_staged_to(self, sink: Sink, offset: int) -> int:
        assert self.fd is not None
        return sink.take_file(self.fd, offset, sink.size)

    def truncate(self, length: int) -> None:
        with self.lock:
            assert self.fd is not None
            self._account(length)
            os.ftruncate(self.fd, length)
            self.staged_size = length
            self.data_dirty = True
            self.generation += 1
            self.data_generation += 1
            self.attrs.mtime_ns = self.attrs.ctime_ns = now_ns()
            if self.stream is not None:
                self.stream.truncated(self, length)

    # -- state changes made by the filesystem, its renames and the committer -----------------------

    def change_attrs(self, change: Callable[[Attrs], None]) -> tuple[bool, bool]:
        """Apply `change` to the attributes, to be uploaded; (staged, no writer has it open)."""
        with self.lock:
            change(self.attrs)
            self.attrs.ctime_ns = now_ns()
            self.meta_dirty = True
            self.generation += 1
            return self.staged, self.writers == 0

    def mark_unlinked(self) -> bool:
        """Removed (or replaced) while open: nothing is uploaded any more. Whether a remote object was
        behind it (one to delete)."""
        with self.lock:
            self.unlinked = True
            if self.stream is not None:
                self.stream.abort("removed")
            return self.info is not None or self.base_etag is not None

    def moved(self, path: str, key: str) -> None:
        """Renamed (alone or with its directory): uploads go to the new name."""
        self.path, self.key = path, key
        self.generation += 1
        if self.stream is not None:
            self.stream.abort("renamed")

    def follow_copy(self, copy: ObjectInfo) -> None:
        """Its remote object was copied to its new name (a directory rename): follow it, so that an
        open reader keeps reading and a staged copy is not taken for a conflict at upload (its base
        is the copy, whose ETag may differ: local, multipart S3)."""
        if self.info is not None and self.base_etag == self.info.etag:
            self.base_etag = copy.etag
        self.info = copy

    def set_remote(self, info: ObjectInfo | None) -> None:
        """The remote object under its name is now `info` (None: none); the staged copy starts from it."""
        self.info = info
        self.base_etag = info.etag if info else None

    def journal_due(self) -> bool:
        """Whether the journal lacks this generation (and note that it is being written)."""
        if self.fd is None or self.staged_id is None or self.journaled == self.generation:
            return False
        self.journaled = self.generation
        return True

    def uploaded(self, generation: int, data_generation: int, info: ObjectInfo | None) -> bool:
        """An upload of `generation` (bytes of `data_generation`) finished, as `info` (None: it went
        elsewhere, a conflict copy; the path shows the other writer's version). False if changed
        meanwhile: still dirty, uploaded again later."""
        if info is not None:
            # Even when changed meanwhile: the object just stored is ours, and the next upload
            # replaces it (If-Match its ETag), rather than finding the name taken by "someone".
            self.set_remote(info)
            if self.data_generation == data_generation:
                self.data_dirty = False   # a chmod meanwhile: only the metadata goes up again
        if self.generation != generation:
            return False
        self.data_dirty = self.meta_dirty = False
        if info is None:
            self.info = None  # base_etag stays: a later upload must still see the other writer's change
        return True

    def _account(self, new_size: int) -> None:
        if self.staging is not None and self.staged_path is not None:
            self.staging.resize(self.staged_path, new_size)

    def discard_staged(self) -> None:
        with self.lock:
            if self.staging is not None and self.staged_path:
                self.staging.forget(self.staged_path)
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
            if self.staged_path:
                try:
                    os.unlink(self.staged_path)
                except FileNotFoundError:
                    pass
                self.staged_path = None


@dataclasses.dataclass
class Handle:
    file: OpenFile
    writable: bool
    append: bool
    reader: RangeReader | None = None
    changed: bool = False     # written or truncated through this handle (see filesystem.flush)


class OpenFiles:
    """The mount's tables: path -> OpenFile (every path with open handles or a pending upload) and
    fh -> Handle. `lock` guards both and is held only for table updates, never during a request;
    a file's own lock is taken after it, never before."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_path: dict[str, OpenFile] = {}
        self.handles: dict[int, Handle] = {}
        self._next_fh = itertools.count(1)

    def get(self, path: str) -> OpenFile | None:
        with self.lock:
            return self.by_path.get(path)

    def add_handle(self, handle: Handle) -> int:
        """Register `handle` on its file: its file handle number."""
        with self.lock:
            fh = next(self._next_fh)
            self.handles[fh] = handle
            handle.file.refs += 1
            if handle.writable:
                handle.file.writers += 1
            return fh

    def remove_handle(self, fh: int) -> tuple[Handle, bool] | None:
        """Unregister a handle: it and whether it was its file's last (None if unknown)."""
        with self.lock:
            handle = self.handles.pop(fh, None)
            if handle is None:
                return None
            handle.file.refs -= 1
            if handle.writable:
                handle.file.writers -= 1
            return handle, handle.file.refs == 0

    def discard_if_clean(self, opened: OpenFile) -> None:
        """`opened` has nothing left to upload: forget it once no handle refers to it."""
        with self.lock:
            if opened.refs > 0 or (opened.dirty and not opened.unlinked):
                return
            if self.by_path.get(opened.path) is opened:
                del self.by_path[opened.path]
        opened.discard_staged()


def is_regular(attrs: Attrs) -> bool:
    return stat.S_ISREG(attrs.mode)
