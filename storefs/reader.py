"""Reading a remote object through one open handle: ranged GETs with sequential read-ahead.

The kernel (fusepy, libfuse 2) asks for at most 128 KiB per read, so each read must not cost a
request. A handle keeps one window of bytes; on sequential access the window doubles from 1 MiB up to
`max_window` and the next window is fetched in the background while the current one is served. A
random read fetches only a small window around itself, never the whole object. Every GET carries the
ETag seen at open (If-Match), so a remote overwrite mid-read is an error (ESTALE), not mixed data.
"""
from __future__ import annotations

import concurrent.futures
import threading

from .store import ObjectStore

MIN_WINDOW = 1024 * 1024
RANDOM_WINDOW = 256 * 1024

_pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="readahead")


class RangeReader:
    def __init__(self, store: ObjectStore, key: str, size: int, etag: str | None,
                 max_window: int = 16 * 1024 * 1024) -> None:
        self.store, self.key, self.size, self.etag = store, key, size, etag
        self.max_window = max_window
        self._lock = threading.Lock()
        self._start = 0
        self._data = b""
        self._window = MIN_WINDOW
        self._next_end = 0                     # where the last read ended, to spot sequential access
        self._ahead: tuple[int, concurrent.futures.Future] | None = None

    def _fetch(self, start: int, end: int) -> bytes:
        return self.store.read_range(self.key, start, min(end, self.size), if_match=self.etag)

    def read(self, offset: int, length: int) -> bytes:
        if offset >= self.size or length <= 0:
            return b""
        length = min(length, self.size - offset)
        with self._lock:
            sequential = offset == self._next_end
            self._next_end = offset + length
            if not (self._start <= offset and offset + length <= self._start + len(self._data)):
                self._load(offset, length, sequential)
            begin = offset - self._start
            out = self._data[begin: begin + length]
            # Close to the end of the window on a sequential run: fetch the next one now.
            if sequential and self._ahead is None:
                window_end = self._start + len(self._data)
                if window_end < self.size and window_end - (offset + length) < len(self._data) // 2:
                    self._window = min(self._window * 2, self.max_window)
                    self._ahead = (window_end, _pool.submit(self._fetch, window_end, window_end + self._window))
            return out

    def _load(self, offset: int, length: int, sequential: bool) -> None:
        if self._ahead is not None:
            start, future = self._ahead
            self._ahead = None
            if sequential and start <= offset:
                data = future.result()
                if offset + length <= start + len(data):
                    self._start, self._data = start, data
                    return
            else:
                future.cancel()
        if sequential:
            window = self._window
        else:
            self._window = MIN_WINDOW
            window = RANDOM_WINDOW
        # Fetch first, then move the window: if the fetch fails (ESTALE, EIO), the old window must
        # stay consistent with its start, or a retried read would get bytes from another offset.
        data = self._fetch(offset, offset + max(window, length))
        self._start, self._data = offset, data

    def close(self) -> None:
        with self._lock:
            if self._ahead is not None:
                self._ahead[1].cancel()
                self._ahead = None
            self._data = b""
