"""Random reads of a cold object through a real mount on SeaweedFS, every byte from the server counted
by a relay on 127.0.0.1: the reader gets the right bytes while the object is fetched in the background,
the traffic of an 8 s random read stays within 1.1x the object, and an object large compared with the
read cache is read block by block, never whole."""
from __future__ import annotations

import hashlib
import io
import os
import random
import time

from storefs.providers.s3 import open_provider as open_s3
from tests.fuse.harness import Env
from tests.fuse.test_resume import CountingRelay

MiB = 1 << 20
HEADERS_PER_GET = 2048   # an allowance per request for the HTTP heads (a GET of a block is 1 MiB)


def _setup(tmp_path, seaweed_server, size: int):
    """An object of `size` random bytes, and an Env whose remote goes through a counting relay."""
    bucket = seaweed_server.create_bucket()
    section = seaweed_server.options()
    store = open_s3("t", section).bucket(bucket)
    data = os.urandom(size)
    store.put("obj.bin", io.BytesIO(data), size, {})
    relay = CountingRelay(int(section["endpoint"].rsplit(":", 1)[1]))
    env = Env(tmp_path, {"s": {"type": "s3", **section, "endpoint": relay.url}})
    return env, relay, bucket, data


def _random_reads(path, data: bytes, seconds: float, rng: random.Random) -> int:
    """4 KiB reads at random aligned offsets, one at a time (fio's psync randread), for `seconds`, and
    every 64th an unaligned slice of up to 300 KiB compared by sha256: how many reads were made."""
    pages = len(data) // 4096
    reads = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if reads % 64 == 63:
                offset, length = rng.randrange(len(data)), rng.randrange(1, 300 * 1024)
            else:
                offset, length = rng.randrange(pages) * 4096, 4096
            got = os.pread(fd, length, offset)
            want = data[offset:offset + length]
            assert hashlib.sha256(got).hexdigest() == hashlib.sha256(want).hexdigest(), \
                f"wrong bytes at {offset} (+{length}) after {reads} reads"
            reads += 1
    finally:
        os.close(fd)
    return reads


def test_random_reads_of_a_cold_object_cost_at_most_the_object(tmp_path, seaweed_server):
    size = 48 * MiB + 4321
    env, relay, bucket, data = _setup(tmp_path, seaweed_server, size)
    try:
        mount = env.mount(f"s:{bucket}")
        path = mount.path / "obj.bin"
        os.stat(path)
        relay.reset()
        before = relay.bytes_down
        reads = _random_reads(path, data, 8.0, random.Random(16))
        # The whole object is fetched in the background (the fill ran alongside the reads; on a slow
        # machine it may still be finishing) ...
        deadline = time.monotonic() + 60
        while relay.bytes_down - before < size and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)   # anything fetched twice would arrive by now
        down = relay.bytes_down - before
        assert down >= size, f"{down} bytes fetched for a {size}-byte object in {reads} random reads"
        # ... and nothing of it twice, beyond a few blocks.
        assert down <= 1.1 * size, \
            f"{down / size:.2f}x the object fetched for {reads} random reads\n{env.log_tail()}"
    finally:
        env.close()
        relay.stop()


def test_an_object_large_compared_with_the_cache_is_never_fetched_whole(tmp_path, seaweed_server):
    size = 40 * MiB
    env, relay, bucket, data = _setup(tmp_path, seaweed_server, size)
    try:
        # A quarter of a 64 MiB cache is less than the object: random reads fetch blocks only.
        mount = env.mount(f"s:{bucket}", options=("cache_size=64M",))
        path = mount.path / "obj.bin"
        os.stat(path)
        relay.reset()
        before = relay.bytes_down
        rng = random.Random(3)
        touched: set[int] = set()
        fd = os.open(path, os.O_RDONLY)
        try:
            for _ in range(12):
                offset = rng.randrange(size // 4096) * 4096
                assert os.pread(fd, 4096, offset) == data[offset:offset + 4096]
                touched.add(offset // MiB)
            time.sleep(2)   # time for a background fill to show, if one had started
        finally:
            os.close(fd)
        down = relay.bytes_down - before
        assert down <= len(touched) * (MiB + HEADERS_PER_GET), \
            f"{down} bytes fetched for 12 random reads in {len(touched)} blocks\n{env.log_tail()}"
    finally:
        env.close()
        relay.stop()
