"""The read path through real mounts, counting the GETs the WCS emulator serves."""
from __future__ import annotations

import io
import os
import time
from pathlib import Path



MiB = 1 << 20


def disk_usage(path: Path) -> int:
    total = 0
    for file in path.rglob("*"):
        try:
            total += file.stat().st_blocks * 512 if file.is_file() else 0
        except FileNotFoundError:  # evicted while we walked
            pass
    return total


def test_blocks_survive_a_remount(wcs_env):
    data = os.urandom(12 * MiB + 123)
    wcs_env.store.put("big", io.BytesIO(data), len(data), {})
    mount = wcs_env.mount(f"w:{wcs_env.bucket}")
    before = wcs_env.served("get")
    assert (mount.path / "big").read_bytes() == data
    first = wcs_env.served("get") - before
    assert 1 <= first <= 13  # runs of blocks, not a request per 128 KiB read
    mount.unmount().check_returncode()
    again = wcs_env.mount(f"w:{wcs_env.bucket}")
    before = wcs_env.served("get")
    assert (again.path / "big").read_bytes() == data
    assert wcs_env.served("get") == before  # every block came from the disk cache


def test_random_read_fetches_a_block_not_the_object(wcs_env):
    data = os.urandom(64 * MiB)
    wcs_env.store.put("huge", io.BytesIO(data), len(data), {})
    mount = wcs_env.mount(f"w:{wcs_env.bucket}")
    blocks = wcs_env.tmp / "cache" / "storefs" / "blocks"
    base = disk_usage(blocks)
    fd = os.open(mount.path / "huge", os.O_RDONLY)
    try:
        before = wcs_env.served("get")
        assert os.pread(fd, 4096, 40 * MiB + 5000) == data[40 * MiB + 5000: 40 * MiB + 9096]
        assert wcs_env.served("get") - before <= 2
    finally:
        os.close(fd)
    assert disk_usage(blocks) - base < 8 * MiB  # a block or two, not 64 MiB


def test_random_reads_fill_the_object_in_the_background(wcs_env):
    """A handle that keeps reading at random gets the whole object read in the background (through the
    mount, so the kernel's page cache holds it too, see storefs/pagecache.py) and into the disk cache;
    after that, random reads cost no request at all."""
    import random
    data = os.urandom(24 * MiB + 777)
    wcs_env.store.put("rand", io.BytesIO(data), len(data), {})
    mount = wcs_env.mount(f"w:{wcs_env.bucket}")
    blocks = wcs_env.tmp / "cache" / "storefs" / "blocks"
    rng = random.Random(7)
    fd = os.open(mount.path / "rand", os.O_RDONLY)
    try:
        before = wcs_env.served("get")
        for _ in range(6):  # FILL_AFTER (4) random reads start the fill
            offset = rng.randrange(0, len(data) - 4096)
            assert os.pread(fd, 4096, offset) == data[offset:offset + 4096]
        deadline = time.monotonic() + 60
        while disk_usage(blocks) < len(data) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert disk_usage(blocks) >= len(data), "the background fill did not cache the whole object"
        fetched = wcs_env.served("get") - before
        # The random reads' own blocks, plus the warmer's sequential read-ahead runs (a window growing
        # to 8 MiB): far fewer GETs than blocks.
        assert fetched <= 6 + 24 // 2, fetched
        for _ in range(200):
            offset = rng.randrange(0, len(data) - 4096)
            assert os.pread(fd, 4096, offset) == data[offset:offset + 4096]
        assert wcs_env.served("get") - before == fetched  # all from the cache now
    finally:
        os.close(fd)


def test_remote_overwrite_is_never_served_from_stale_blocks(wcs_env):
    old = os.urandom(3 * MiB)
    wcs_env.store.put("doc", io.BytesIO(old), len(old), {})
    mount = wcs_env.mount(f"w:{wcs_env.bucket}", options=("attr_ttl=1", "dir_ttl=1"))
    assert (mount.path / "doc").read_bytes() == old  # now cached on disk and in the page cache
    new = os.urandom(3 * MiB)
    wcs_env.store.put("doc", io.BytesIO(new), len(new), {})
    time.sleep(2.5)  # past attr_ttl and the kernel's 1 s
    assert (mount.path / "doc").read_bytes() == new


def test_block_cache_is_bounded_by_its_size(wcs_env):
    for i in range(6):
        blob = os.urandom(4 * MiB)
        wcs_env.store.put(f"f{i}", io.BytesIO(blob), len(blob), {})
    mount = wcs_env.mount(f"w:{wcs_env.bucket}", options=("cache_size=8M",))
    for i in range(6):
        (mount.path / f"f{i}").read_bytes()
    mount.unmount().check_returncode()  # every queued block written
    blocks = wcs_env.tmp / "cache" / "storefs" / "blocks"
    assert disk_usage(blocks) < 8 * MiB + 2 * MiB  # the limit, plus diskcache's index
