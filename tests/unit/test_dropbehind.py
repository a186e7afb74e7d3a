"""Drop-behind (fs/bucket/dropbehind.py): a staged file's uploaded parts leave the page cache, written
to disk first, their bytes intact; a user's own file uploaded by the raw client keeps its pages.
Page-cache residency is read with mincore(2) on a mapping of the file (the test files live on the
test's tmp_path, a disk filesystem: tmpfs pages could not be dropped)."""
from __future__ import annotations

import ctypes
import mmap
import os
import time

import pytest

from storefs.fs.bucket.dropbehind import drop_behind
from storefs.fs.bucket.uploader import UploadSettings, upload_file
from tests.unit import test_streaming
from tests.unit.test_streaming import PART, _finish, _new_file, _write

setup = test_streaming.setup   # its fixture: a store with small parts, staging, journal and streams

MiB = 1024 * 1024
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]


def resident(path, offset: int, length: int) -> int:
    """How many bytes of [offset, offset+length) of the file at `path` are in the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        mapping = mmap.mmap(fd, offset + length, access=mmap.ACCESS_COPY)   # never written: shares the cache
        try:
            window = (ctypes.c_char * (offset + length)).from_buffer(mapping)
            pages = -(-length // mmap.PAGESIZE)
            vector = (ctypes.c_ubyte * pages)()
            assert _libc.mincore(ctypes.addressof(window) + offset, length, vector) == 0, ctypes.get_errno()
            del window
            return sum(v & 1 for v in vector) * mmap.PAGESIZE
        finally:
            mapping.close()
    finally:
        os.close(fd)


def _wait_dropped(path, offset: int, length: int) -> None:
    deadline = time.monotonic() + 20
    while resident(path, offset, length):
        assert time.monotonic() < deadline, f"{resident(path, offset, length)} bytes still cached"
        time.sleep(0.01)


def test_a_dropped_range_leaves_the_page_cache_and_keeps_its_bytes(tmp_path):
    path = tmp_path / "staged"
    data = os.urandom(4 * MiB)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, data)   # dirty pages: they must reach the disk before they can go
        assert resident(path, 0, 4 * MiB) == 4 * MiB
        drop_behind(fd, 0, 2 * MiB)
        assert resident(path, 0, 2 * MiB) == 0
        assert resident(path, 2 * MiB, 2 * MiB) == 2 * MiB   # the rest is not touched
        assert os.pread(fd, 4 * MiB, 0) == data
    finally:
        os.close(fd)


def test_a_bad_descriptor_is_only_a_missed_drop(tmp_path):
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    os.close(fd)
    drop_behind(fd, 0, MiB)   # no exception: the pages would merely have stayed


@pytest.mark.parametrize("staged", [True, False])
def test_an_upload_of_a_staged_file_drops_each_sent_part_and_of_a_users_file_keeps_them(tmp_path, setup, staged):
    store = setup[0]
    path = tmp_path / "file"
    data = os.urandom(3 * PART + 4096)   # whole pages: residency is counted in pages
    path.write_bytes(data)
    assert resident(path, 0, len(data)) == len(data)
    info = upload_file(store, "f", str(path), {}, UploadSettings(part_size=PART, drop_sent=staged))
    assert info.size == len(data) and store.read_range("f", 0, len(data)) == data
    assert resident(path, 0, len(data)) == (0 if staged else len(data))


def test_a_streamed_files_sent_parts_leave_the_page_cache_while_it_is_written(setup):
    store, staging, journal, streams = setup
    opened = _new_file(staging, streams)
    data = os.urandom(3 * PART + 4096)   # whole pages: residency is counted in pages
    _write(opened, data[:3 * PART])
    _wait_dropped(opened.staged_path, 0, 3 * PART)   # all three full parts sent and dropped
    _write(opened, data[3 * PART:], start=3 * PART)
    assert resident(opened.staged_path, 3 * PART, 4096) == 4096   # the tail, not sent yet, stays
    info = _finish(streams, opened)
    assert info is not None and store.read_range("big", 0, len(data)) == data
    assert os.pread(opened.fd, len(data), 0) == data   # the staged copy is whole
