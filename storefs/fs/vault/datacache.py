"""The vault download cache's bound: least recently used data evicted first, never data being read.

Downloaded archives and ranges live in one vault's data directory (state.py). Each open of a data
file takes a shared `flock` on it for as long as the reader keeps it (`open_pinned`) and sets its
mtime to now (the "last used" time; atime is unreliable under relatime/noatime). Before a download
is committed, `make_room` evicts the least recently used data files until the new one fits in the
bound: a file is evicted only under an exclusive, non-blocking `flock`, so one that any thread or
process has open is skipped. A reader that opened a file the moment it was evicted sees its link
count at 0 once it holds the lock, and treats it as absent (the next attempt downloads again).

The bound is `limit` bytes of data per vault (`-o vault_cache_size`); without one, data is evicted
only when the disk lacks room for the next download (`headroom` bytes are kept free either way).
A download that cannot fit even with everything unpinned evicted is refused with CacheFull (ENOSPC).
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import logging
import os
import shutil
import threading
from pathlib import Path

from ...errors import CacheFull

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Entry:
    data: Path
    meta: Path
    size: int
    used: float         # mtime: last open


def open_pinned(path: Path) -> int | None:
    """An fd of the data file at `path` holding a shared lock that keeps it from eviction, and
    marked used now; None if it is gone (evicted, or never there)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        if os.fstat(fd).st_nlink == 0:  # evicted between our look-up and our lock
            os.close(fd)
            return None
        try:
            os.utime(fd)
        except OSError:
            pass  # a read-only cache still serves; only the eviction order suffers
        return fd
    except BaseException:
        os.close(fd)
        raise


class DataCache:
    """The bound of one vault's data directory."""

    def __init__(self, data_dir: Path, limit: int | None, headroom: int) -> None:
        self.data_dir = Path(data_dir)
        self.limit = limit
        self.headroom = headroom
        # Bytes promised to downloads in flight in this process: counted as used, so two downloads
        # that start together cannot both take the same free room (each calls release() when done).
        self._reserved = 0
        self._lock = threading.Lock()

    def _entries(self) -> list[_Entry]:
        entries = []
        for meta in self.data_dir.glob("*.json"):
            data = meta.with_suffix("")
            try:
                st = os.stat(data)
            except FileNotFoundError:
                continue
            entries.append(_Entry(data, meta, st.st_size, st.st_mtime))
        return entries

    def used_bytes(self) -> int:
        return sum(e.size for e in self._entries())

    def _short(self, need: int, used: int) -> int:
        """Bytes to free before `need` more fit: over the limit, or over what the disk holds."""
        short = 0
        if self.limit is not None:
            short = used + need - self.limit
        free = shutil.disk_usage(self.data_dir).free
        return max(short, need + self.headroom - free)

    def make_room(self, need: int, what: str) -> None:
        """Evict least recently used data until `need` bytes fit, and reserve them until release(need)
        (call it when the download is committed or has failed); CacheFull if they cannot fit."""
        with self._lock:
            self._make_room(need, what)
            self._reserved += need

    def release(self, need: int) -> None:
        with self._lock:
            self._reserved -= need

    def _make_room(self, need: int, what: str) -> None:
        if self.limit is not None and need > self.limit:
            raise CacheFull(f"{what} needs {need} bytes; vault_cache_size is {self.limit}")
        entries = sorted(self._entries(), key=lambda e: e.used)
        used = sum(e.size for e in entries) + self._reserved
        short = self._short(need, used)
        for entry in entries:
            if short <= 0:
                break
            if self._evict(entry):
                short -= entry.size
                used -= entry.size
        if self._short(need, used) > 0:
            limit = f"vault_cache_size is {self.limit}" if self.limit is not None else "the disk is full"
            raise CacheFull(f"{what} needs {need} bytes; {limit} and the cached data left is being read")

    def _evict(self, entry: _Entry) -> bool:
        try:
            fd = os.open(entry.data, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return False  # someone is reading it
                raise
            entry.meta.unlink(missing_ok=True)   # the record first: data without one counts as absent
            entry.data.unlink(missing_ok=True)
        finally:
            os.close(fd)
        log.info("vault cache: evicted %s (%d bytes, least recently used)", entry.data.name[:16], entry.size)
        return True
