"""The block-cache run files one reader is reading from, kept open between reads.

A cold sequential read serves each 1 MiB FUSE read from the run file its GET wrote (blockcache.reserve,
8 blocks per file). Opening and closing the file around every read cost two more system calls per
read, and each gives up the GIL (another thread's turn, a hand-off) on the mount's busiest path. So a
reader keeps its last few run files open. A descriptor is closed only when no read is using it: one
evicted from the set while a read is in it is closed by that read when it ends, so no read can ever
meet a descriptor number closed (and perhaps reused) under it.

A run file the cache evicts while it is open here keeps its disk space until it leaves the set (at
most KEPT files of up to 8 MiB per open handle); its bytes stay the run's (run files are never
modified, only removed).
"""
from __future__ import annotations

import collections
import os
import threading

from ..sinks import Sink

KEPT = 4   # run files kept open per reader: a sequential read is in one or two at a time


class _Open:
    __slots__ = ("fd", "users", "kept")

    def __init__(self, fd: int) -> None:
        self.fd, self.users, self.kept = fd, 1, True


class OpenRuns:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: collections.OrderedDict[str, _Open] = collections.OrderedDict()
        self._closed = False

    def read_to(self, place: tuple[str, int], start: int, length: int, sink: Sink) -> int | None:
        """Bytes [start, start+length) of the block at `place` (run file, offset) to `sink`: how many,
        or None if the file is gone (evicted: the reader looks elsewhere)."""
        path, offset = place
        opened = self._borrow(path)
        if opened is None:
            return None
        try:
            return sink.take_file(opened.fd, offset + start, length)
        except OSError:
            return None
        finally:
            self._give_back(opened)

    def _borrow(self, path: str) -> _Open | None:
        with self._lock:
            opened = self._files.get(path)
            if opened is not None:
                opened.users += 1
                self._files.move_to_end(path)
                return opened
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        opened, extra = _Open(fd), []
        with self._lock:
            if self._closed or path in self._files:   # closed meanwhile, or opened by another read
                opened.kept = False
            else:
                self._files[path] = opened
                extra = self._trim_locked()
        for fd in extra:
            os.close(fd)
        return opened

    def _trim_locked(self) -> list[int]:
        """Leave the oldest files beyond KEPT: their descriptors, to close (those no read is using;
        a busy one is closed by its last reader)."""
        closing = []
        while len(self._files) > KEPT:
            _path, oldest = self._files.popitem(last=False)
            oldest.kept = False
            if not oldest.users:
                closing.append(oldest.fd)
        return closing

    def _give_back(self, opened: _Open) -> None:
        with self._lock:
            opened.users -= 1
            done = not opened.users and not opened.kept
        if done:
            os.close(opened.fd)

    def close(self) -> None:
        """The reader is closed: files no read is using are closed now, the others by their reads."""
        with self._lock:
            self._closed = True
            files, self._files = list(self._files.values()), collections.OrderedDict()
            closing = []
            for opened in files:
                opened.kept = False
                if not opened.users:
                    closing.append(opened.fd)
        for fd in closing:
            os.close(fd)
