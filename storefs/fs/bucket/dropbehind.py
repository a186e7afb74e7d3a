"""Letting go of a local file's pages once they have done their job ("drop-behind").

A large file copied in is staged whole on the local disk, and its pages sit in the page cache until
the kernel needs the memory, although once a part is uploaded nobody reads them again: a 2 GiB copy
leaves 2 GiB of page cache behind, and every page of it is a page newly handed out. Handing out new
pages is not free: on virtual machines whose free memory goes back to the host, the first write to
each new page costs more than the copy itself (measured on the benchmark machine: a buffered write of
1 GiB into new pages 918 MiB/s and 1.2 CPU-s, into pages just freed 4,000 MiB/s and 0.25 CPU-s).
Written to disk and dropped as soon as their part is sent, the staged file's pages are freed and the
next writes reuse them, so the staged copy of a file of any size keeps a few parts' worth of page
cache, and the fsync that makes a closed file durable finds most of it on disk already.

Only clean pages are dropped: the range is written to disk first (sync_file_range, or fdatasync where
that is missing), and a page written again meanwhile stays dirty and stays. Best effort: an error only
means the pages stay cached.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from typing import Callable

log = logging.getLogger(__name__)

# sync_file_range(2): wait for writeback already under way, start it, wait for it.
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4


def _sync_file_range() -> Callable[[int, int, int], None] | None:
    """sync_file_range(fd, offset, length) writing the range to disk and waiting, or None where libc
    has none (not Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int

    def sync_range(fd: int, offset: int, length: int) -> None:
        if function(fd, offset, length, _WAIT_BEFORE | _WRITE | _WAIT_AFTER) != 0:   # GIL released
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number))
    return sync_range


_sync_range = _sync_file_range()


# The largest page-cache folio (a PMD, 2 MiB on x86-64): the kernel drops a folio only when the range
# covers it whole, so one straddling two parts would stay when each part is dropped alone.
FOLIO_MAX = 2 * 1024 * 1024


def drop_behind(fd: int, offset: int, length: int) -> None:
    """Write the part [offset, offset+length) of `fd` just sent to disk and drop its pages from the page
    cache, with those of the FOLIO_MAX bytes before it (the end of the part before, usually sent
    already: a folio across the boundary goes once both are sent; if that part is still being sent,
    its last pages are read from the disk again)."""
    start = max(0, offset - FOLIO_MAX)
    try:
        if _sync_range is not None:
            _sync_range(fd, start, offset + length - start)
        else:
            os.fdatasync(fd)
        os.posix_fadvise(fd, start, offset + length - start, os.POSIX_FADV_DONTNEED)
    except OSError as exc:
        log.debug("pages of fd %d [%d, +%d) stay cached: %s", fd, offset, length, exc)
