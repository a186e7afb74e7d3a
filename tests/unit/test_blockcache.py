"""The block cache's own file storage (_BlockDisk): blocks written straight from their buffers into one
level of directories, private, readable whole or in pieces, and surviving their directory's removal
by eviction."""
from __future__ import annotations

import os
import shutil
import stat

from storefs.blockcache import BLOCK, BlockCache


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
    assert cache.read("loc", "key", "etag", 2, 4096, 10) == blocks[2][4096:4106]
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
