"""splicedread.read_buf, the FUSE edge's read_buf: what it hands libfuse (a struct fuse_bufvec of one
buffer: this thread's pipe, or malloc'd memory), for large reads, small ones, a spoiled pipe and a
failing read. libfuse is not involved: the test reads the bufvec back as libfuse would."""
from __future__ import annotations

import ctypes
import errno
import os

import pytest

from storefs.fs.sinks import PipeSink, SinkSpoiled
from storefs.fuse import splicedread
from storefs.fuse.splicedread import FUSE_BUF_IS_FD, SPLICE_MIN, _BufVec

PIPE = 1 << 20
DATA = os.urandom(3 << 20)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(DATA)
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)
    splicedread._close_pipe()


def _serve(read_to_pipe, read_into, size: int) -> tuple[_BufVec, bytes]:
    """Call read_buf, then take the bufvec back as libfuse does: its bytes, and free it."""
    slot = ctypes.c_void_p()
    assert splicedread.read_buf(read_to_pipe, read_into, ctypes.pointer(slot), size, PIPE) == 0
    vec = _BufVec.from_address(slot.value)
    assert (vec.count, vec.idx, vec.off) == (1, 0, 0)
    if vec.flags & FUSE_BUF_IS_FD:
        data = b""
        while len(data) < vec.size:
            data += os.read(vec.fd, vec.size - len(data))
    else:
        data = ctypes.string_at(vec.mem, vec.size)
        splicedread._libc.free(vec.mem)
    copy = _BufVec.from_buffer_copy(vec)
    splicedread._libc.free(slot.value)
    return copy, data


def _pipe_inode() -> int:
    """Which pipe this thread has (descriptor numbers are reused, inodes are not)."""
    return os.fstat(splicedread._thread.pipe[0]).st_ino


def _from_file(fd: int, offset: int):
    def to_pipe(sink: PipeSink) -> int:
        return sink.take_file(fd, offset, sink.size)

    def into(view: memoryview) -> int:
        return os.preadv(fd, [view], offset)
    return to_pipe, into


def test_a_large_read_hands_over_the_pipe_holding_its_bytes(source):
    for offset, size in ((0, PIPE - 16 * 1024), (12345, PIPE - 16 * 1024), (len(DATA) - 5000, 9000)):
        vec, data = _serve(*_from_file(source, offset), size)
        assert vec.flags == FUSE_BUF_IS_FD and vec.fd == splicedread._thread.pipe[0]
        assert data == DATA[offset:offset + size]


def test_a_small_read_goes_through_memory(source):
    vec, data = _serve(*_from_file(source, 100), SPLICE_MIN - 1)
    assert not vec.flags & FUSE_BUF_IS_FD and data == DATA[100:100 + SPLICE_MIN - 1]


def test_a_spoiled_pipe_is_read_again_through_memory_and_replaced(source):
    to_pipe, into = _from_file(source, 0)
    _serve(to_pipe, into, 64 * 1024)
    old = _pipe_inode()

    def spoiled(sink: PipeSink) -> int | None:
        sink.take_file(source, 0, 100)
        sink.undo_to(0)   # an abandoned piece in a pipe: SinkSpoiled, which FuseOps turns into None
        raise AssertionError("undo_to should have raised")

    def spoiled_as_ops_reports_it(sink: PipeSink) -> int | None:
        try:
            return spoiled(sink)
        except SinkSpoiled:
            return None

    vec, data = _serve(spoiled_as_ops_reports_it, into, 64 * 1024)
    assert not vec.flags & FUSE_BUF_IS_FD and data == DATA[:64 * 1024]
    assert splicedread._thread.pipe is None   # closed: a new, empty one next time
    vec, data = _serve(to_pipe, into, 64 * 1024)
    assert vec.flags & FUSE_BUF_IS_FD and data == DATA[:64 * 1024] and _pipe_inode() != old


def test_a_pipe_left_with_bytes_is_replaced_before_the_next_read(source):
    to_pipe, into = _from_file(source, 0)
    slot = ctypes.c_void_p()
    splicedread.read_buf(to_pipe, into, ctypes.pointer(slot), 64 * 1024, PIPE)   # libfuse never takes it
    splicedread._libc.free(slot.value)
    left = _pipe_inode()
    vec, data = _serve(*_from_file(source, 4096), 64 * 1024)
    assert data == DATA[4096:4096 + 64 * 1024] and _pipe_inode() != left


def test_a_failing_read_raises_and_leaves_no_bytes_behind(source):
    def failing(sink: PipeSink) -> int:
        sink.take_file(source, 0, 10000)
        raise OSError(errno.EIO, "the store failed")

    slot = ctypes.c_void_p()
    with pytest.raises(OSError):
        splicedread.read_buf(failing, lambda view: 0, ctypes.pointer(slot), 64 * 1024, PIPE)
    assert slot.value is None and splicedread._thread.pipe is None
    vec, data = _serve(*_from_file(source, 0), 64 * 1024)
    assert data == DATA[:64 * 1024]


def test_a_pipe_too_small_for_the_read_spoils_it_instead_of_blocking(source):
    r, w = os.pipe2(os.O_NONBLOCK)
    try:
        sink = PipeSink(w, 2 * PIPE)   # the default pipe (64 KiB) cannot hold it
        with pytest.raises(SinkSpoiled):
            sink.take_file(source, 0, 2 * PIPE)
    finally:
        os.close(r)
        os.close(w)
