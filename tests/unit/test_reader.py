"""RangeReader: the bytes of an object, read into a caller's buffer, whether the block cache takes the
fetched blocks (files written in place), cannot take them (memory instead), or is absent."""
from __future__ import annotations

import io
import os

import pytest

from storefs.fs.bucket.blockcache import BLOCK, BlockCache
from storefs.fs.bucket.reader import RangeReader
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
