"""The staging area: the directory holding staged files' data, an optional cap on its size, and the
empty files kept ready for the next creates (spares).

Sizes are accounted per staged file as they grow, so checking the cap costs no directory scan; a
write that would pass the cap fails with ENOSPC (CacheFull) and staged data is never evicted.

Spares are made ahead, together, with one fsync of the directory for all of them: a close then
journals a file whose name is already durable (`named`; the journal needs no directory fsync for it),
and a create makes no file. Spares left by a crash have no journal entry: the next mount removes them
as files that were never closed.

Not done, measured: reusing a finished staged file as a spare (emptied, renamed to a new id) instead
of unlinking it. ext4 without a journal skips, at every inode it allocates, the inodes freed in the
last seconds (`recently_deleted`: a fifth of the mount's CPU for 4 KiB files on the benchmark machine),
but the fsync a reused file needs first (the removal of its journal entry made durable before its bytes
go) cost more than that saved: 0.89-0.97x the durable small-file rate in an A/B (without the fsync,
which is unsafe, 1.03-1.10x).
"""
from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path

from ...errors import CacheFull

log = logging.getLogger(__name__)

# Empty staged files made ahead per batch. Measured on ext4 with a bash loop of 4 KiB files: the
# directory fsync was a third of the fsyncs on the way of every close when each create made its own.
SPARE_BATCH = 32
# Below this many spares, a thread makes the next batch: a create then never waits for the batch's
# file creations and directory fsync (about 20 ms every 32 files on a busy disk), unless files are
# created faster than the thread makes them.
SPARE_LOW = 12


class Staging:
    """The staging directory: new staged files, spares, and their sizes against the cap."""

    def __init__(self, directory: Path, max_bytes: int | None = None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}
        self._spares: list[tuple[str, int]] = []   # (path, open fd) of empty files, names durable
        self._refill: threading.Thread | None = None   # making the next batch of spares
        # The ids (file names) whose directory entry is known durable, shared with the journal.
        self.named: set[str] = set()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def new_file(self) -> tuple[str, int]:
        """An empty staged file (path, fd open for reading and writing), its name already durable."""
        while True:
            with self._lock:
                refill = self._refill if not self._spares else None
            if refill is None:
                break
            refill.join()   # the batch being made comes sooner than one of our own (and no spare twice)
        with self._lock:
            if not self._spares:
                self._spares = self._make_spares(SPARE_BATCH)
            path, fd = self._spares.pop()
            self._sizes[path] = 0
            if len(self._spares) < SPARE_LOW and self._refill is None:
                self._refill = threading.Thread(target=self._make_more, name="spares", daemon=True)
                self._refill.start()
        return path, fd

    def _make_more(self) -> None:
        try:
            made = self._make_spares(SPARE_BATCH)
        except OSError as exc:   # a full or failing disk: the next create makes its own, and says so
            log.warning("cannot make spare staged files in %s: %s", self.directory, exc)
            made = []
        with self._lock:
            self._spares[:0] = made
            self._refill = None

    def _make_spares(self, count: int) -> list[tuple[str, int]]:
        """`count` new empty files, their names made durable with one fsync of the directory."""
        made = []
        try:
            for _ in range(count):
                path = str(self.directory / uuid.uuid4().hex)
                made.append((path, os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)))
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            for path, fd in made:
                _remove(path, fd)
            raise
        self.named.update(os.path.basename(path) for path, _fd in made)
        return made

    def close(self) -> None:
        """Remove the spare files (unmount): nothing was ever written to them."""
        with self._lock:
            refill = self._refill
        if refill is not None:
            refill.join()
        with self._lock:
            spares, self._spares = self._spares, []
        for path, fd in spares:
            self.named.discard(os.path.basename(path))
            _remove(path, fd)

    def used_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def resize(self, path: str, new_size: int) -> None:
        """Account `path` at `new_size` bytes, or raise CacheFull if that would pass the cap."""
        with self._lock:
            old = self._sizes.get(path, 0)
            if (self.max_bytes is not None and new_size > old
                    and sum(self._sizes.values()) + new_size - old > self.max_bytes):
                raise CacheFull(f"staging area {self.directory} is full ({self.max_bytes} bytes)")
            self._sizes[path] = new_size

    def adopt(self, path: str, size: int) -> None:
        """Account a staged file left by an earlier run; never refused (its data must not be lost)."""
        with self._lock:
            self._sizes[path] = size

    def forget(self, path: str) -> None:
        with self._lock:
            self._sizes.pop(path, None)
        self.named.discard(os.path.basename(path))

    def check_room(self, extra: int) -> None:
        if self.max_bytes is not None and self.used_bytes() + extra > self.max_bytes:
            raise CacheFull(f"staging area {self.directory} is full ({self.max_bytes} bytes)")


def _remove(path: str, fd: int) -> None:
    try:
        os.close(fd)
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
