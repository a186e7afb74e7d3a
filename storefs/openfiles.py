"""Open files: staged local copies of files being written, and the handles that refer to them.

A file opened for writing is staged: its bytes live in a local file under the staging directory
(never whole in memory), where random writes, appends and truncates are plain file operations. The
staged copy is uploaded when the last writer flushes or closes it, and by fsync. A read-only open of a
file that nobody writes reads the remote object through a `RangeReader` instead.

Locking: `OpenFile.lock` guards one file's staged data and attributes. The filesystem's table lock
(in filesystem.py) is taken before it, never after.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import stat
import threading
import uuid
from pathlib import Path

from .attrs import Attrs, now_ns
from .errors import CacheFull
from .reader import RangeReader
from .store import ObjectInfo, ObjectStore

log = logging.getLogger(__name__)

DOWNLOAD_CHUNK = 8 * 1024 * 1024


class Staging:
    """The directory holding staged file data, with an optional size cap (ENOSPC past it)."""

    def __init__(self, directory: Path, max_bytes: int | None = None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def new_file(self) -> tuple[str, int]:
        path = str(self.directory / uuid.uuid4().hex)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        return path, fd

    def used_bytes(self) -> int:
        total = 0
        with os.scandir(self.directory) as it:
            for entry in it:
                try:
                    total += entry.stat().st_blocks * 512
                except FileNotFoundError:
                    pass
        return total

    def check_room(self, extra: int) -> None:
        if self.max_bytes is not None and self.used_bytes() + extra > self.max_bytes:
            raise CacheFull(f"staging area {self.directory} is full ({self.max_bytes} bytes)")


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

    @property
    def staged(self) -> bool:
        return self.fd is not None

    @property
    def dirty(self) -> bool:
        return self.data_dirty or self.meta_dirty

    def current_attrs(self) -> Attrs:
        with self.lock:
            if self.fd is not None:
                self.attrs.size = os.fstat(self.fd).st_size
            return self.attrs.copy()

    # -- staging -----------------------------------------------------------------------------------

    def stage_empty(self, staging: Staging) -> None:
        with self.lock:
            if self.fd is None:
                self.staged_path, self.fd = staging.new_file()
                self.data_dirty = True

    def stage_from_remote(self, staging: Staging, store: ObjectStore) -> None:
        """Copy the remote object into a staged file, chunk by chunk (bounded memory)."""
        with self.lock:
            if self.fd is not None:
                return
            size = self.info.size if self.info else 0
            staging.check_room(size)
            path, fd = staging.new_file()
            try:
                offset = 0
                while offset < size:
                    chunk = store.read_range(self.key, offset, min(size, offset + DOWNLOAD_CHUNK),
                                             if_match=self.info.etag if self.info else None)
                    if not chunk:
                        break
                    os.pwrite(fd, chunk, offset)
                    offset += len(chunk)
            except BaseException:
                os.close(fd)
                os.unlink(path)
                raise
            self.staged_path, self.fd = path, fd

    def write(self, data: bytes, offset: int, append: bool) -> int:
        with self.lock:
            assert self.fd is not None
            if append:
                offset = os.fstat(self.fd).st_size
            written = os.pwrite(self.fd, data, offset)
            self.data_dirty = True
            self.attrs.mtime_ns = self.attrs.ctime_ns = now_ns()
            return written

    def read_staged(self, size: int, offset: int) -> bytes:
        assert self.fd is not None
        return os.pread(self.fd, size, offset)

    def truncate(self, length: int) -> None:
        with self.lock:
            assert self.fd is not None
            os.ftruncate(self.fd, length)
            self.data_dirty = True
            self.attrs.mtime_ns = self.attrs.ctime_ns = now_ns()

    def discard_staged(self) -> None:
        with self.lock:
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


def is_regular(attrs: Attrs) -> bool:
    return stat.S_ISREG(attrs.mode)
