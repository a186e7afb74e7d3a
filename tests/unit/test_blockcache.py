"""The block cache's own file storage (_BlockDisk): blocks written straight from their buffers into one
level of directories, private, readable whole or in pieces, and surviving their directory's removal
by eviction; and blocks whose files a store wrote in place (reserve, adopt)."""
from __future__ import annotations

import os
import shutil
import stat


from storefs.fs.bucket.blockcache import BLOCK, BlockCache


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
    assert cache.read_into("loc", "key", "etag", 2, 4096, piece) == 10 and piece == blocks[2][4096:4106]
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


def test_reserved_files_written_in_place_are_adopted(tmp_path):
    # The cold read path: the reader has the store write each block's file itself (reserve, adopt).
    cache = BlockCache(tmp_path / "c", 64 * BLOCK)
    blocks = [os.urandom(BLOCK), os.urandom(BLOCK), b"tail of the object"]

    new = cache.reserve([len(b) for b in blocks])
    assert new is not None and len(new.fds) == 3
    for fd, data in zip(new.fds, blocks):
        os.pwrite(fd, data, 0)

    paths = cache.adopt(new, "loc", "key", "etag", 5)
    assert paths is not None and len(_block_files(tmp_path / "c")) == 3
    into = memoryview(bytearray(100))
    assert cache.read_file_into(paths[1], 4096, into) == 100 and bytes(into) == blocks[1][4096:4196]
    assert cache.read_into("loc", "key", "etag", 7, 0, into) == len(blocks[2])
    assert bytes(into[:len(blocks[2])]) == blocks[2]
    assert cache.contains("loc", "key", "etag", 6) and not cache.contains("loc", "key", "etag", 8)
    cache.close()
    cache = BlockCache(tmp_path / "c", 64 * BLOCK)   # kept across remounts, as put() blocks are
    assert cache.get("loc", "key", "etag", 5) == blocks[0]
    cache.close()


def test_an_abandoned_fill_leaves_no_block_behind(tmp_path):
    cache = BlockCache(tmp_path / "c", 64 * BLOCK)

    new = cache.reserve([BLOCK, BLOCK])
    assert new is not None
    os.pwrite(new.fds[0], b"half a block", 0)
    cache.abandon(new)   # the answer was cut short: the reader gives the files back

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
    """adopt() enters a run's blocks in one transaction: an index failure on its third block leaves
    neither the first two in the index nor any of its files on disk."""
    cache = BlockCache(tmp_path / "c", 64 * BLOCK)
    new = cache.reserve([BLOCK] * 4)
    assert new is not None
    for fd in new.fds:
        os.pwrite(fd, os.urandom(BLOCK), 0)
    original, calls = cache._cache.set, []

    def failing(key, value, *args, **kwargs):
        calls.append(key)
        if len(calls) == 3:
            raise OSError("disk I/O error")
        return original(key, value, *args, **kwargs)

    monkeypatch.setattr(cache._cache, "set", failing)
    assert cache.adopt(new, "loc", "key", "etag", 0) is None
    monkeypatch.undo()
    assert len(calls) == 3 and _block_files(tmp_path / "c") == []
    assert not any(cache.contains("loc", "key", "etag", n) for n in range(4))
    cache.close()
