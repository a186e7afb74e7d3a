"""FUSE reads answered through a pipe (libfuse 3's read_buf): cached bytes go from the cache file to
the kernel without a copy in the daemon.

A plain read callback fills libfuse's buffer (a preadv from a cache file) and libfuse writes that
buffer to /dev/fuse: two copies per byte, and the kernel pins the buffer's pages for the second. With
read_buf the filesystem splices the pieces of a read into a pipe of this worker thread (page
references, no copy: sinks.PipeSink) and hands libfuse the pipe's read end; libfuse splices it on to
/dev/fuse, where the kernel copies each page once into the reader's page cache. On a cold sequential
read that copy and the pinning were ~12% of the mount's CPU (perf).

libfuse splices only when the connection wants FUSE_CAP_SPLICE_WRITE and its own pipe can hold the
reply; otherwise it reads our pipe into memory and writes that, which is still correct. Small reads,
and any read whose pipe was spoiled (sinks.SinkSpoiled) or could not be made, are served through a
buffer instead, as libfuse itself would for a plain read callback.
"""
from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import termios
import threading
from typing import Any, Callable

from ..fs.sinks import PipeSink

log = logging.getLogger(__name__)

FUSE_CAP_SPLICE_WRITE = 1 << 7   # libfuse 3: fuse_conn_info.want: replies may be spliced
FUSE_BUF_IS_FD = 1 << 1
SPLICE_MIN = 2 * 4096            # libfuse copies replies smaller than two pages anyway
F_SETPIPE_SZ = 1031


class _BufVec(ctypes.Structure):
    """libfuse's struct fuse_bufvec with its one struct fuse_buf inline (mfusepy declares the array
    as a pointer, which is not libfuse's layout)."""
    _fields_ = [("count", ctypes.c_size_t), ("idx", ctypes.c_size_t), ("off", ctypes.c_size_t),
                ("size", ctypes.c_size_t), ("flags", ctypes.c_int), ("mem", ctypes.c_void_p),
                ("fd", ctypes.c_int), ("pos", ctypes.c_int64)]


_libc = ctypes.CDLL(None)
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]


class _ThreadPipe(threading.local):
    pipe: tuple[int, int] | None = None
    unusable = False   # this thread could not make a pipe large enough: buffers only


_thread = _ThreadPipe()


def _unread(fd: int) -> int:
    count = ctypes.c_int()
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count.value


def _close_pipe() -> None:
    if _thread.pipe is not None:
        for fd in _thread.pipe:
            os.close(fd)
        _thread.pipe = None


def _empty_pipe(capacity: int) -> tuple[int, int] | None:
    """This worker thread's pipe, empty, holding at least `capacity` bytes; None if it cannot be had.
    Non-blocking at both ends: a piece that does not fit spoils the read instead of blocking it, and
    libfuse never waits on a pipe that holds less than it was told."""
    if _thread.unusable:
        return None
    if _thread.pipe is not None and _unread(_thread.pipe[0]):
        _close_pipe()   # a reply libfuse did not take whole (its own failure): start clean
    if _thread.pipe is None:
        pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(pipe[1], F_SETPIPE_SZ, capacity)
        except OSError as exc:   # above /proc/sys/fs/pipe-max-size without CAP_SYS_RESOURCE
            for fd in pipe:
                os.close(fd)
            _thread.unusable = True
            log.info("reads are answered from memory (no pipe of %d bytes: %s)", capacity, exc)
            return None
        _thread.pipe = pipe
    return _thread.pipe


def _hand_over(bufpp: Any, *, size: int, fd: int = -1, mem: int | None = None) -> None:
    """Give libfuse a bufvec of one buffer (a pipe's read end, or malloc'd memory); libfuse frees it
    (and the memory) after the reply."""
    address = _libc.malloc(ctypes.sizeof(_BufVec))
    if not address:
        raise MemoryError("malloc failed")
    vec = _BufVec.from_address(address)
    vec.count, vec.idx, vec.off = 1, 0, 0
    vec.size, vec.pos = size, 0
    vec.flags, vec.fd, vec.mem = (FUSE_BUF_IS_FD, fd, None) if mem is None else (0, -1, mem)
    ctypes.cast(bufpp, ctypes.POINTER(ctypes.c_void_p))[0] = address


def read_buf(read_to_pipe: Callable[[PipeSink], int | None], read_into: Callable[[memoryview], int],
             bufpp: Any, size: int, pipe_capacity: int) -> int:
    """Serve one read_buf: through this thread's pipe when the read is large enough (`read_to_pipe`
    returns the bytes it put there, None if the sink was spoiled), else (or after a spoiled pipe)
    through a malloc'd buffer filled by `read_into`. 0, or raises the callbacks' OSError."""
    pipe = _empty_pipe(pipe_capacity) if size >= SPLICE_MIN else None
    if pipe is not None:
        sink = PipeSink(pipe[1], size)
        try:
            got = read_to_pipe(sink)
        except BaseException:
            _close_pipe()
            raise
        if got is not None and got == sink.taken:
            _hand_over(bufpp, size=got, fd=pipe[0])
            return 0
        if got is not None:
            log.error("read_buf: %d bytes reported, %d in the pipe; read again from memory", got, sink.taken)
        _close_pipe()
    mem = _libc.malloc(max(size, 1))
    if not mem:
        raise MemoryError("malloc failed")
    try:
        got = read_into(memoryview((ctypes.c_char * size).from_address(mem)).cast("B")) if size else 0
        _hand_over(bufpp, size=got, mem=mem)
    except BaseException:
        _libc.free(mem)
        raise
    return 0
