"""The block cache's own file storage (_BlockDisk): blocks written straight from their buffers into one
level of directories, private, readable whole or in pieces, and surviving their directory's removal
by eviction; and runs of blocks whose file a store wrote in place (reserve, adopt), evicted whole."""
from __future__ import annotations

import os
import shutil
import stat


from storefs.fs.bucket.blockcache import BLOCK, BlockCache
from storefs.fs.bucket.runfiles import OpenRuns
from storefs.fs.sinks import BufferSink


def _read_place(place: tuple[str, int], start: int, into: memoryview) -> int | None:
    """A block's bytes read from its place in a run file, as the reader reads them."""
    runs = OpenRuns()
    try:
        return runs.read_to(place, start, min(len(into), BLOCK - start), BufferSink(into))
    finally:
        runs.close()


def _settle(cache: BlockCache) -> None:
    cache._pending.join()   # blocks are written by the cache's writer thread


def test_blocks_round_trip_privately_and_survive_a_reopen(tmp_path):
    cache = BlockCache(tmp_path / "c", 64 * BLOCK)
    blocks = {n: os.urandom(BLOCK) for n in range(3)}
    tail = b"tail"   # small values live in SQLite, not in files
    for n, data in blocks.items():
        cache.put("loc", "key", "etag", n, data)
    cache.put("loc", "key", "etag", 3, tail)
    _settle(cache)
    files = [p for p in (tmp_path / "c").rglob("*.val")]
    assert len(files) == 3
    assert all(len(p.relative_to(tmp_path / "c").parts) == 2 for p in files)   # one directory level
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    cache.close()
    cache = BlockCache(tmp_path / "c", 64 * BLOCK)
    assert cache.get("loc", "key", "etag", 1) == blocks[1]
    piece = memoryview(bytearray(10))
    assert cache.read_to("loc", "key", "etag", 2, 4096, len(piece), BufferSink(piece)) == 10 and piece == blocks[2][4096:4106]
    assert cache.get("loc", "key", "etag", 3) == tail
    assert cache.get("loc", "key", "other-etag", 1) is None
    cache.close()


def test_a_block_is_written_again_after_its_directory_was_removed(tmp_path):
    cache = BlockCache(tmp_path / "c", 64 * BLOCK)
    for n in range(4):
        cache.put("loc", "key", "e", n, bytes([n]) * BLOCK)
    _settle(cache)
    for sub in (tmp_path / "c").iterdir():   # what diskcache's eviction does to an emptied directory
        if sub.is_dir():
            shutil.rmtree(sub)
    for n in range(4, 40):
        cache.put("loc", "key", "e", n, bytes([n]) * BLOCK)
        _settle(cache)   # one at a time: a full write queue drops blocks by design
    assert all(cache.get("loc", "key", "e", n) == bytes([n]) * BLOCK for n in range(4, 40))
    cache.close()


def _block_files(directory):
    return sorted(p for p in directory.rglob("*.val"))


def test_a_run_written_in_place_is_adopted_as_one_file(tmp_path):
    # The cold read path: the reader has the store write a fetched run into one new file (reserve,
    # adopt), its blocks back to back: one file created per run, not per block.
    cache = BlockCache(tmp_path / "c", 64 * BLOCK)
    blocks = [os.urandom(BLOCK), os.urandom(BLOCK), b"tail of the object"]

    new = cache.reserve([len(b) for b in blocks])
    assert new is not None
    os.pwrite(new.fd, b"".join(blocks), 0)

    places = cache.adopt(new, "loc", "key", "etag", 5)
    assert places is not None and len(_block_files(tmp_path / "c")) == 1
    into = memoryview(bytearray(100))
    assert _read_place(places[1], 4096, into) == 100 and bytes(into) == blocks[1][4096:4196]
    # A read never runs past its block into the next one of the run.
    assert _read_place(places[0], BLOCK - 10, into) == 10 and bytes(into[:10]) == blocks[0][-10:]
    assert cache.read_to("loc", "key", "etag", 7, 0, len(into), BufferSink(into)) == len(blocks[2])
    assert bytes(into[:len(blocks[2])]) == blocks[2]
    assert cache.read_to("loc", "key", "etag", 5, BLOCK - 10, len(into), BufferSink(into)) == 10
    assert cache.contains("loc", "key", "etag", 6) and not cache.contains("loc", "key", "etag", 8)
    cache.close()
    cache = BlockCache(tmp_path / "c", 64 * BLOCK)   # kept across remounts, as put() blocks are
    assert [cache.get("loc", "key", "etag", n) for n in (5, 6, 7)] == blocks
    cache.close()


def test_evicting_a_block_of_a_run_evicts_the_run(tmp_path):
    """A run file is removed whole: once any of its blocks is evicted (or replaced), its other blocks
    leave the index and its file goes, so that the disk holds what the index counts and a place the
    reader remembers is either the block's bytes or gone, never a hole read as zeros."""
    cache = BlockCache(tmp_path / "c", 64 * BLOCK)
    runs = []
    for first in (0, 4):
        new = cache.reserve([BLOCK] * 4)
        assert new is not None
        os.pwrite(new.fd, bytes([first]) * (4 * BLOCK), 0)
        runs.append(cache.adopt(new, "loc", "key", "etag", first))
    before = cache.volume()
    cache._cache.delete(("loc", "key", "etag", 2))   # as diskcache's eviction does: one entry
    assert not any(cache.contains("loc", "key", "etag", n) for n in range(4))
    assert all(cache.contains("loc", "key", "etag", n) for n in range(4, 8))
    assert len(_block_files(tmp_path / "c")) == 1 and before - cache.volume() == 4 * BLOCK
    into = memoryview(bytearray(10))
    assert _read_place(runs[0][1], 0, into) is None
    assert _read_place(runs[1][1], 0, into) == 10 and bytes(into) == bytes([4]) * 10
    new = cache.reserve([BLOCK])   # a block adopted again replaces its entry: the old run goes
    assert new is not None
    os.pwrite(new.fd, bytes([9]) * BLOCK, 0)
    cache.adopt(new, "loc", "key", "etag", 5)
    assert [cache.contains("loc", "key", "etag", n) for n in range(4, 8)] == [False, True, False, False]
    assert len(_block_files(tmp_path / "c")) == 1 and cache.get("loc", "key", "etag", 5) == bytes([9]) * BLOCK
    cache.close()


def test_the_size_limit_evicts_whole_runs(tmp_path):
    cache = BlockCache(tmp_path / "c", 16 * BLOCK)
    for first in range(0, 64, 4):
        new = cache.reserve([BLOCK] * 4)
        assert new is not None
        os.pwrite(new.fd, os.urandom(4 * BLOCK), 0)
        cache.adopt(new, "loc", "key", "etag", first)
    on_disk = sum(p.stat().st_size for p in _block_files(tmp_path / "c"))
    assert on_disk <= 16 * BLOCK and cache.volume() <= 16 * BLOCK + (4 << 20)
    assert cache.contains("loc", "key", "etag", 63)
    cache.close()


def test_an_abandoned_fill_leaves_no_block_behind(tmp_path):
    cache = BlockCache(tmp_path / "c", 64 * BLOCK)

    new = cache.reserve([BLOCK, BLOCK])
    assert new is not None
    os.pwrite(new.fd, b"half a block", 0)
    cache.abandon(new)   # the answer was cut short: the reader gives the file back

    # A local write error (a full cache disk): given back too, with the cause logged; the reader
    # then reads into memory.
    new = cache.reserve([BLOCK])
    assert new is not None
    cache.abandon(new, OSError(28, "No space left on device"))
    assert _block_files(tmp_path / "c") == []
    assert not cache.contains("loc", "key", "etag", 0)
    cache.close()


def test_sqlite_connections_are_kept_per_os_thread(tmp_path):
    # FUSE callbacks get a new Python thread state (and so a new threading.local) on every call; the
    # cache's connection is keyed by the OS thread id instead, so it is opened once per thread.
    import threading
    cache = BlockCache(tmp_path / "c", 64 * BLOCK)
    first = cache._cache._con
    assert cache._cache._con is first
    seen = []
    other = threading.Thread(target=lambda: seen.append(cache._cache._con))
    other.start()
    other.join(timeout=10)
    assert seen and seen[0] is not first   # another thread: its own connection
    cache.close()
    assert cache._cache._con is not first  # closed and forgotten, a new one on demand
    cache.close()


def test_a_run_is_adopted_whole_or_not_at_all(tmp_path, monkeypatch):
    """adopt() enters a run's blocks in one transaction: an index failure after its entries were
    inserted (here in the size check that follows) leaves none of them in the index and none of its
    files on disk."""
    cache = BlockCache(tmp_path / "c", 64 * BLOCK)
    new = cache.reserve([BLOCK] * 4)
    assert new is not None
    os.pwrite(new.fd, os.urandom(4 * BLOCK), 0)
    calls = []

    def failing() -> int:
        calls.append(len(cache._cache._sql("SELECT rowid FROM Cache").fetchall()))
        raise OSError("disk I/O error")

    monkeypatch.setattr(cache._cache, "volume", failing)
    assert cache.adopt(new, "loc", "key", "etag", 0) is None
    monkeypatch.undo()
    assert calls == [4] and _block_files(tmp_path / "c") == []   # all four were in, then rolled back
    assert not any(cache.contains("loc", "key", "etag", n) for n in range(4))
    cache.close()


def test_a_run_replaces_blocks_cached_meanwhile(tmp_path):
    """A block another handle cached while this run was fetched is replaced by the run's entry (as
    diskcache's set() replaces a key), its old run going with it; the count stays exact."""
    cache = BlockCache(tmp_path / "c", 64 * BLOCK)
    old_data, new_data = os.urandom(2 * BLOCK), os.urandom(4 * BLOCK)
    old = cache.reserve([BLOCK] * 2)
    assert old is not None
    os.pwrite(old.fd, old_data, 0)
    assert cache.adopt(old, "loc", "key", "etag", 1) is not None   # blocks 1 and 2
    new = cache.reserve([BLOCK] * 4)
    assert new is not None
    os.pwrite(new.fd, new_data, 0)
    places = cache.adopt(new, "loc", "key", "etag", 0)              # blocks 0-3
    assert places is not None and len(places) == 4
    for number in range(4):
        assert cache.get("loc", "key", "etag", number) == new_data[number * BLOCK:(number + 1) * BLOCK]
    assert len(_block_files(tmp_path / "c")) == 1                   # the old run file is gone
    assert len(cache._cache) == 4
    cache.close()


def test_block_keys_are_indexed_as_diskcache_indexes_them(tmp_path):
    """_BlockDisk.put makes a key's index form without pickletools.optimize, but the same bytes, so that
    a cache written by diskcache's own put stays readable."""
    import pickle
    import pickletools
    cache = BlockCache(tmp_path / "c", 64 * BLOCK)
    disk = cache._cache.disk
    empty = ""
    keys = [("s3://bucket", "dir/obj.bin", '"0123456789abcdef-3"', 5), ("loc", "ключ/файл", "e", 2**40),
            ("l", "x" * 70000, "etag", 0), ("", "k", "", 0), (empty, empty, "e", 1), ("l", "k", "e", -1)]
    for key in keys:
        want = pickletools.optimize(pickle.dumps(key, protocol=disk.pickle_protocol))
        made, raw = disk.put(key)
        assert bytes(made) == want and raw is False, key
    cache.close()


def test_missing_names_the_blocks_not_held_with_one_query(tmp_path):
    cache = BlockCache(tmp_path / "c", 64 * BLOCK)
    new = cache.reserve([BLOCK] * 3)
    assert new is not None
    os.pwrite(new.fd, os.urandom(3 * BLOCK), 0)
    assert cache.adopt(new, "loc", "key", "etag", 5) is not None   # blocks 5-7
    queries = []
    cache._cache._con.set_trace_callback(queries.append)
    assert cache.missing("loc", "key", "etag", list(range(3, 10))) == [3, 4, 8, 9]
    cache._cache._con.set_trace_callback(None)
    assert len(queries) == 1
    assert cache.missing("loc", "key", "etag", []) == []
    assert cache.missing("loc", "key", "other etag", [5]) == [5]   # another version of the object
    cache.close()
