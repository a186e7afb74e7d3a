"""A cold sequential read through a real mount on SeaweedFS (S3, plain HTTP: the runs are spliced
from the socket into the block cache), every byte from the server counted by a relay on 127.0.0.1:
the reader gets the object's bytes, the traffic is the object once, each fetched run of blocks lands
in one cache file (not a file per 1 MiB block), the daemon's memory does not grow with the object,
and a second mount on the same cache reads it all from disk."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
from typing import Iterator

from storefs.providers.s3 import open_provider as open_s3
from tests.fuse.harness import Env
from tests.fuse.test_listing_requests import _requests
from tests.fuse.test_resume import CountingRelay

MiB = 1 << 20
HEADS = 64 * 1024   # allowance for the HTTP heads of the GETs of a run each (a run is up to 8 MiB)


def _rss_kib(pid: int, field: str) -> int:
    for line in open(f"/proc/{pid}/status", encoding="ascii"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@contextlib.contextmanager
def _object_behind_relay(tmp_path, seaweed_server, size: int) -> Iterator[tuple[bytes, str, CountingRelay, Env]]:
    """A random object `obj.bin` of `size` bytes on SeaweedFS, and an Env whose remote `s` reaches the
    server through a relay that counts the bytes sent down: (data, bucket, relay, env)."""
    bucket = seaweed_server.create_bucket()
    section = seaweed_server.options()
    data = os.urandom(size)
    open_s3("t", section).bucket(bucket).put("obj.bin", io.BytesIO(data), size, {})
    relay = CountingRelay(int(section["endpoint"].rsplit(":", 1)[1]))
    env = Env(tmp_path, {"s": {"type": "s3", **section, "endpoint": relay.url}})
    try:
        yield data, bucket, relay, env
    finally:
        env.close()
        relay.stop()


def _requests_settled(env: Env, mount, kind: str, at_least: int) -> dict[str, int]:
    """`storefs status --json`'s request counts once `kind` reached `at_least` (the status file is
    rewritten within ~0.5 s of a change), or after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        requests = _requests(env, mount)
        if requests.get(kind, 0) >= at_least or time.monotonic() > deadline:
            return requests
        time.sleep(0.2)


def _read_in_mib(path) -> str:
    """sha256 of the file read in 1 MiB read() calls, as the benchmark's sequential reader does."""
    digest = hashlib.sha256()
    buffer = bytearray(MiB)
    with open(path, "rb", buffering=0) as f:
        while got := f.readinto(buffer):
            digest.update(memoryview(buffer)[:got])
    return digest.hexdigest()


def test_a_cold_sequential_read_fetches_runs_into_one_file_each(tmp_path, seaweed_server):
    size = 96 * MiB + 4321   # a short last block
    with _object_behind_relay(tmp_path, seaweed_server, size) as (data, bucket, relay, env):
        mount = env.mount(f"s:{bucket}")
        path = mount.path / "obj.bin"
        os.stat(path)
        rss_before = _rss_kib(mount.pid, "VmRSS")
        before = relay.bytes_down
        assert _read_in_mib(path) == hashlib.sha256(data).hexdigest()
        down = relay.bytes_down - before
        blocks = (size + MiB - 1) // MiB
        assert size <= down <= size + blocks * HEADS, f"{down} bytes fetched for a {size}-byte object"
        # The object went through the disk cache, not through the daemon's memory.
        grown = _rss_kib(mount.pid, "VmHWM") - rss_before
        assert grown < 48 * 1024, f"the daemon grew by {grown} KiB reading a {size}-byte object"
        cache = tmp_path / "cache" / "storefs" / "blocks"
        files = [p for p in cache.rglob("*.val")]
        assert sum(p.stat().st_size for p in files) == size   # every block once, in its run's file
        # A file per run, not per block: runs are up to 8 blocks, shorter where the read-ahead window
        # is still growing or a GET ended early under load (33 files for 97 blocks seen in a full run).
        assert blocks // 8 <= len(files) <= blocks // 2, f"{len(files)} cache files for {blocks} blocks"
        # The reads were answered through read_buf's pipe (fuse/splicedread.py), in requests of just
        # under 1 MiB (the kernel's read-ahead on this mount): about one per MiB, none through a buffer.
        requests = _requests_settled(env, mount, "read_buf", size // MiB)
        assert size // MiB <= requests.get("read_buf", 0) <= 2 * blocks and "read" not in requests, requests
        mount.unmount().check_returncode()

        again = env.mount(f"s:{bucket}")   # the same cache directory: a second reader
        before = relay.bytes_down
        assert _read_in_mib(again.path / "obj.bin") == hashlib.sha256(data).hexdigest()
        assert relay.bytes_down - before < HEADS, "blocks cached by the first mount were fetched again"


def _open_cache_files(pid: int, cache: str) -> int:
    """How many descriptors of the daemon point at block-cache files."""
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:   # closed meanwhile
            continue
        count += target.startswith(cache) and ".val" in target
    return count


def test_a_reader_keeps_a_few_run_files_open_and_closes_them_at_release(tmp_path, seaweed_server):
    """The reader keeps its last run files open between reads (runfiles.py) instead of opening one
    per read: during a cold sequential read the daemon holds no more than those and the runs being
    written, the bytes are the object's, the traffic is the object once, and closing the file
    closes them all."""
    from storefs.fs.bucket.reader import MAX_RUNS_IN_FLIGHT
    from storefs.fs.bucket.runfiles import KEPT

    size = 64 * MiB + 777
    with _object_behind_relay(tmp_path, seaweed_server, size) as (data, bucket, relay, env):
        mount = env.mount(f"s:{bucket}")
        cache = str(tmp_path / "cache" / "storefs" / "blocks")
        digest, most = hashlib.sha256(), 0
        buffer = bytearray(MiB)
        before = relay.bytes_down
        with open(mount.path / "obj.bin", "rb", buffering=0) as f:
            while got := f.readinto(buffer):
                digest.update(memoryview(buffer)[:got])
                most = max(most, _open_cache_files(mount.pid, cache))
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
        blocks = (size + MiB - 1) // MiB
        down = relay.bytes_down - before
        assert size <= down <= size + blocks * HEADS, f"{down} bytes fetched for a {size}-byte object"
        assert 0 < most <= KEPT + MAX_RUNS_IN_FLIGHT, f"{most} cache files open at once"
        deadline = time.monotonic() + 10   # RELEASE reaches the daemon just after close() returns
        while _open_cache_files(mount.pid, cache) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _open_cache_files(mount.pid, cache) == 0, "run files left open after the release"
        mount.unmount().check_returncode()
