"""Warming the kernel's page cache with a whole object, for random access.

A FUSE read costs a Python process tens of microseconds at best, so a program reading 4 KiB at random
(a database, fio, a VM image) is bound by the round trip long after the bytes are local. The kernel's
page cache has no such cost, but fills one page per random miss. So once a handle reads at random and
the object is in the block cache (reader.py's background fill), the daemon reads the file through its
own mount, sequentially and in large requests: the kernel keeps those pages (storefs opens with
keep_cache while the ETag is unchanged), and later random reads never reach us.

The warmer reopens the file every REOPEN seconds, so it never holds the mount busy for long: an
unmount that finds it busy retries for two seconds (mounting.unmount).
"""
from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger(__name__)

CHUNK = 8 * 1024 * 1024
MAX_WARMERS = 2
REOPEN = 0.5  # seconds one open of the file may last


class PageCacheWarmer:
    def __init__(self, mountpoint: str) -> None:
        self.mountpoint = mountpoint.rstrip("/")
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._slots = threading.BoundedSemaphore(MAX_WARMERS)

    def warm(self, path: str) -> None:
        """Read mount `path` through the kernel in the background (once at a time per path)."""
        with self._lock:
            if path in self._running or self.stopping.is_set():
                return
            if not self._slots.acquire(blocking=False):
                return  # enough warming going on; random reads still work, just slower
            self._running.add(path)
        threading.Thread(target=self._run, args=(path,), name="pagecache", daemon=True).start()

    def _run(self, path: str) -> None:
        target = self.mountpoint + path
        offset, fd = 0, -1
        try:
            while not self.stopping.is_set():
                if fd < 0:
                    fd, opened = os.open(target, os.O_RDONLY), time.monotonic()
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                got = len(os.pread(fd, CHUNK, offset))
                offset += got
                if got < CHUNK:
                    break
                if time.monotonic() - opened > REOPEN:
                    os.close(fd)
                    fd = -1
            log.debug("page cache warmed with %s (%d bytes)", path, offset)
        except OSError as exc:  # renamed, removed, changed (ESTALE) or unmounted: nothing to warm
            log.debug("page cache warming of %s stopped: %s", path, exc)
        finally:
            if fd >= 0:
                os.close(fd)
            with self._lock:
                self._running.discard(path)
            self._slots.release()

    def stop(self) -> None:
        self.stopping.set()
