"""RangeReader: the bytes of an object, read into a caller's buffer, whether the block cache takes the
fetched blocks (files written in place), cannot take them (memory instead), or is absent."""
from __future__ import annotations

import concurrent.futures
import fcntl
import io
import os
import threading
import time

import pytest

from storefs.errors import ProtocolError
from storefs.fs.bucket import reader as reader_module
from storefs.fs.bucket.blockcache import BLOCK, BlockCache
from storefs.fs.bucket.ranges import read_to_files, stretches
from storefs.fs.bucket.reader import RangeReader
from storefs.fs.sinks import PipeSink
from storefs.providers.local import open_provider


@pytest.fixture
def store(tmp_path):
    provider = open_provider("test-local", {"root": str(tmp_path / "buckets"), "create_buckets": "yes"})
    provider.check("bucket")
    yield provider.bucket("bucket")
    provider.close()


DATA = os.urandom(5 * BLOCK + 1234)


def read_all(reader: RangeReader, step: int) -> bytes:
    out = bytearray(len(DATA))
    view = memoryview(out)
    for offset in range(0, len(DATA), step):
        reader.read_into(offset, view[offset:offset + step])
    return bytes(out)


@pytest.mark.parametrize("cache_kind", ["files", "broken", "small", "none"])
def test_every_read_returns_the_objects_bytes(store, tmp_path, cache_kind, monkeypatch):
    info = store.put("obj", io.BytesIO(DATA), len(DATA), {})
    cache = None
    if cache_kind != "none":
        cache = BlockCache(tmp_path / "cache", (8 if cache_kind == "small" else 64) * BLOCK)
    if cache_kind == "small":   # smaller than 4 read-ahead windows: filled from memory, not in place
        monkeypatch.setattr(BlockCache, "reserve", lambda self, *args: pytest.fail("filled in place"))
    if cache_kind == "broken":   # a full cache disk: no block file can be made, reads go through memory
        monkeypatch.setattr(BlockCache, "reserve", lambda self, *args: None)
    try:
        reader = RangeReader(store, "obj", len(DATA), info.etag, 4 * BLOCK, cache, "loc")
        assert read_all(reader, 256 * 1024) == DATA                    # sequential, with read-ahead
        assert reader.read(BLOCK - 10, 20) == DATA[BLOCK - 10:BLOCK + 10]   # across two blocks
        assert reader.read(len(DATA) - 5, 100) == DATA[-5:]            # clamped at the end
        assert reader.read(len(DATA), 10) == b""
        reader.close()
        if cache_kind == "files":
            # A new handle reads the blocks from the cache files: no request at all.
            calls = []
            original = store.read_range
            monkeypatch.setattr(store, "read_range", lambda *a, **k: calls.append(a) or original(*a, **k))
            again = RangeReader(store, "obj", len(DATA), info.etag, 4 * BLOCK, cache, "loc")
            assert read_all(again, BLOCK) == DATA and calls == []
            again.close()
    finally:
        if cache is not None:
            cache.close()


def test_stretches_are_runs_of_consecutive_blocks():
    assert stretches([]) == []
    assert stretches([1, 2, 3, 7, 9, 10]) == [(1, 3), (7, 1), (9, 2)]


def test_handles_of_one_object_fetch_each_block_once(store, tmp_path, monkeypatch):
    """A random read of a block that another handle's background run is fetching waits for that GET
    (flights.py) rather than making its own; a background run leaves out blocks cached or being
    fetched by another handle. Every block of the object crosses the wire once."""
    data = os.urandom(12 * BLOCK + 99)
    info = store.put("big", io.BytesIO(data), len(data), {})
    cache = BlockCache(tmp_path / "cache", 64 * BLOCK)
    fetched: list[tuple[int, int]] = []
    release = threading.Event()

    def counted(store_, key, start, end, piece, files, **kwargs):
        fetched.append((start // BLOCK, -(-end // BLOCK)))
        if start == 0:
            assert release.wait(10)   # the background run over blocks 0-5 is slow
        return read_to_files(store_, key, start, end, piece, files, **kwargs)

    monkeypatch.setattr(reader_module, "read_to_files", counted)
    warmer = RangeReader(store, "big", len(data), info.etag, 4 * BLOCK, cache, "loc")
    randoms = RangeReader(store, "big", len(data), info.etag, 4 * BLOCK, cache, "loc")
    try:
        assert randoms.read(7 * BLOCK + 5, 100) == data[7 * BLOCK + 5:7 * BLOCK + 105]   # fetched on demand
        run = concurrent.futures.ThreadPoolExecutor(2)
        background = run.submit(warmer._fetch_uncached, 0, 6)
        deadline = time.monotonic() + 10
        while not fetched[1:] and time.monotonic() < deadline:
            time.sleep(0.01)
        waiting = run.submit(randoms.read, 2 * BLOCK + 10, 4096)   # block 2: in the slow run's flight
        time.sleep(0.3)
        assert not waiting.done() and fetched == [(7, 8), (0, 6)]
        release.set()
        assert waiting.result(10) == data[2 * BLOCK + 10:2 * BLOCK + 10 + 4096]
        background.result(10)
        warmer._fetch_uncached(0, 13)   # blocks 0-5 and 7 are cached: 6 and 8-12 are fetched
        assert fetched == [(7, 8), (0, 6), (6, 7), (8, 13)]
        assert warmer.read(0, len(data)) == data and len(fetched) == 4
        run.shutdown()
    finally:
        warmer.close()
        randoms.close()
        cache.close()


def test_random_reads_have_the_object_read_whole_again_when_they_keep_coming(store, tmp_path, monkeypatch):
    """FILL_AFTER random reads ask for the object to be read whole (the page-cache warmer); random
    reads that still reach the reader REFILL_AFTER reads later mean the kernel lost those pages
    (evicted, dropped): the object is read whole again. An object large for the cache never is."""
    monkeypatch.setattr(reader_module, "REFILL_AFTER", 10)
    data = os.urandom(24 * BLOCK)
    info = store.put("rnd", io.BytesIO(data), len(data), {})
    cache = BlockCache(tmp_path / "cache", 128 * BLOCK)
    asked: list[int] = []
    reader = RangeReader(store, "rnd", len(data), info.etag, 4 * BLOCK, cache, "loc",
                         on_random_access=lambda: asked.append(len(asked)))
    small = BlockCache(tmp_path / "small", 64 * BLOCK)   # a quarter of it is less than the object
    never = RangeReader(store, "rnd", len(data), info.etag, 4 * BLOCK, small, "loc",
                        on_random_access=lambda: pytest.fail("an object large for the cache read whole"))
    try:
        for n in range(25):
            offset = (20 * BLOCK if n % 2 == 0 else 0) + n
            assert reader.read(offset, 4096) == data[offset:offset + 4096]
            assert never.read(offset, 4096) == data[offset:offset + 4096]
            assert len(asked) == (n + 1 >= 4) + (n + 1) // 10, f"after {n + 1} random reads"
    finally:
        reader.close()
        never.close()
        cache.close()
        small.close()


@pytest.mark.parametrize("step", [BLOCK, BLOCK - 16 * 1024, 128 * 1024])
def test_the_read_ahead_window_grows_with_reads_of_any_size(store, tmp_path, monkeypatch, step):
    """Reads of 1 MiB, of just under it (libfuse 3 here: each one straddles two blocks) and of 128 KiB
    (libfuse 2) all grow the read-ahead window to full runs: a 40 MiB object is fetched in a few
    GETs, not one per block. (Just-under-1 MiB reads never start a new block, and a rule that grew
    the window only then kept it at 2 blocks: 174 GETs for 256 MiB, half the throughput.)"""
    data = os.urandom(40 * BLOCK)
    info = store.put("seq", io.BytesIO(data), len(data), {})
    cache = BlockCache(tmp_path / "cache", 512 * BLOCK)
    runs: list[int] = []
    original = RangeReader._fetch_uncached
    monkeypatch.setattr(RangeReader, "_fetch_uncached",
                        lambda self, number, count: runs.append(count) or original(self, number, count))
    try:
        reader = RangeReader(store, "seq", len(data), info.etag, 64 * BLOCK, cache, "loc")
        out = bytearray(len(data))
        for offset in range(0, len(data), step):
            reader.read_into(offset, memoryview(out)[offset:offset + step])
        reader.close()
        assert bytes(out) == data
        assert max(runs) == reader_module.RUN_BLOCKS and len(runs) <= 12, runs
    finally:
        cache.close()


def test_a_read_through_a_pipe_has_the_objects_bytes(store, tmp_path):
    """Read through a PipeSink (the FUSE edge's read_buf): cached blocks are spliced into the pipe from
    their run files, and the pipe holds exactly the bytes asked for, across two blocks."""
    info = store.put("obj", io.BytesIO(DATA), len(DATA), {})
    cache = BlockCache(tmp_path / "cache", 64 * BLOCK)
    r, w = os.pipe2(os.O_NONBLOCK)
    try:
        fcntl.fcntl(w, 1031, BLOCK)   # F_SETPIPE_SZ
        reader = RangeReader(store, "obj", len(DATA), info.etag, 4 * BLOCK, cache, "loc")
        for offset, size in ((0, BLOCK - 16 * 1024), (BLOCK - 16 * 1024, BLOCK - 16 * 1024),
                             (len(DATA) - 100, 4096)):
            sink = PipeSink(w, size)
            got = reader.read_to(offset, sink)
            assert got == sink.taken == min(size, len(DATA) - offset)
            assert _drain(r, got) == DATA[offset:offset + got]
        reader.close()
    finally:
        os.close(r)
        os.close(w)
        cache.close()


def _drain(fd: int, count: int) -> bytes:
    out = b""
    while len(out) < count:
        out += os.read(fd, count - len(out))
    return out


def test_a_block_in_memory_too_short_fails_the_read_instead_of_sending_less(store):
    """A sink is told how many bytes a read has; a block shorter than the piece asked of it must fail
    the read (EIO), not leave the rest of a reply buffer or pipe unfilled."""
    info = store.put("short", io.BytesIO(DATA), len(DATA), {})
    reader = RangeReader(store, "short", len(DATA), info.etag, 4 * BLOCK, None, "loc")
    reader._memory[0] = DATA[:100]   # as if a fetch had kept a truncated block
    with pytest.raises(ProtocolError):
        reader.read_into(0, memoryview(bytearray(4096)))
    reader.close()
