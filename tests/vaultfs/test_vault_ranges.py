"""Partial retrieval and the bounded download cache, on VaultFS without FUSE (local vault and CAS
emulator, clocks moved by hand): issue #13 items 1 and 5.

- `vault_ranges`: opening a large archive succeeds at once; a read starts one ranged job for the
  tree-aligned window around its offset (never a second for the same bytes), fails with the
  not-ready errno until the job is done, then is served from the verified, cached window; a read
  spanning two windows is filled from both; a whole job in progress is waited for instead;
- `storefs restore --range` (VaultFS.restore(byte_range=)): one job for the MiB-aligned range; reads
  inside are served from it, reads outside retrieve the whole archive as an open does;
- `user.storefs.retrieval` reports ranges; a corrupt ranged output is never served nor cached;
- `vault_cache_size`: least recently used data is evicted first, data held open never is, and a
  download that cannot fit is ENOSPC.
"""
from __future__ import annotations

from collections.abc import Iterator

import errno
import os
import time

import pytest

from storefs.errors import ArchiveNotReady, CacheFull, errno_for
from storefs.fs.sinks import BufferSink
from storefs.fs.vault.filesystem import VaultFS
from storefs.vaults import treehash
from storefs.vaults.base import JobFailed, TreeHashMismatch
from tests.emulators.cas import CasEmulator
from tests.vaultfs.conftest import STANDARD_DONE, Env

MiB = 1 << 20
RETRIEVAL = "user.storefs.retrieval"


@pytest.fixture(scope="module")
def cas_emulator() -> Iterator[CasEmulator]:
    """This module's own emulator: its tests move the job clock by days, which must not skew the
    clock of the session's emulator that other modules compare with real time."""
    with CasEmulator() as emulator:
        yield emulator


def read(fs: VaultFS, fh: int, size: int, offset: int) -> bytes:
    buf = bytearray(size)
    got = fs.read_to(fh, BufferSink(memoryview(buf)), offset)
    return bytes(buf[:got])


def ranged_jobs(env: Env) -> list[tuple[int, int] | None]:
    return sorted((j.byte_range for j in env.jobs()), key=lambda r: r or (0, 0))


def data_files(fs: VaultFS, env: Env) -> list[str]:
    data_dir = fs._view(env.vault_name).state.data_dir
    return sorted(p.name for p in data_dir.iterdir() if not p.name.startswith(".") and not p.name.endswith(".json"))


def test_vault_ranges_read_starts_one_window_job(env: Env):
    data = os.urandom(18 * MiB + 3000)
    env.upload("big.bin", data)
    last = f"bytes 16777216-{len(data) - 1}"
    fs = env.mounted_with_inventory(ranges_min=MiB, range_window=4 * MiB)
    sent_before = env.emulator.output_bytes(env.vault_name) if env.emulator else 0

    fh = fs.open("/big.bin", os.O_RDONLY)  # no job, no wait: the reads retrieve what they need
    assert env.jobs() == []
    with pytest.raises(ArchiveNotReady) as caught:
        read(fs, fh, 100, len(data) - 100)          # tail -c 100
    assert errno_for(caught.value) == errno.EREMOTE and last in str(caught.value)  # reads: never EAGAIN
    tail_window = (16 * MiB, len(data))
    assert ranged_jobs(env) == [tail_window]
    with pytest.raises(ArchiveNotReady):
        read(fs, fh, 4096, len(data) - 5000)         # the same window: no second job
    assert ranged_jobs(env) == [tail_window]
    status = fs.getxattr("/big.bin", RETRIEVAL).decode()
    assert status.startswith(f"none; {last} in-progress since"), status

    env.advance(STANDARD_DONE)
    assert read(fs, fh, 100, len(data) - 100) == data[-100:]
    assert read(fs, fh, 4096, len(data) - 10) == data[-10:]      # short only at the end of the archive
    assert fs.getxattr("/big.bin", RETRIEVAL).decode() == f"none; {last} cached"
    if env.emulator is not None:  # one window crossed the wire, not the archive
        assert env.emulator.output_bytes(env.vault_name) - sent_before == len(data) - 16 * MiB

    # A read across two windows: only its first byte's window may start a job (the kernel's
    # read-ahead asks past what programs read; it then asks again page by page).
    with pytest.raises(ArchiveNotReady):
        read(fs, fh, 2 * MiB, 7 * MiB)
    assert ranged_jobs(env) == [(4 * MiB, 8 * MiB), tail_window]
    env.advance(STANDARD_DONE)
    with pytest.raises(ArchiveNotReady):   # 7-8 MiB is ready now; 8-9 MiB is held by no job
        read(fs, fh, 2 * MiB, 7 * MiB)
    assert read(fs, fh, MiB, 7 * MiB) == data[7 * MiB:8 * MiB]
    assert len(env.jobs()) == 2
    with pytest.raises(ArchiveNotReady):   # just past a piece this handle read: read-ahead, no job
        read(fs, fh, 4096, 8 * MiB)
    assert len(env.jobs()) == 2
    with pytest.raises(ArchiveNotReady):   # asked again (the kernel's own retry of a real read): its job
        read(fs, fh, 4096, 8 * MiB)
    assert ranged_jobs(env) == [(4 * MiB, 8 * MiB), (8 * MiB, 12 * MiB), tail_window]
    env.advance(STANDARD_DONE)
    assert read(fs, fh, 2 * MiB, 7 * MiB) == data[7 * MiB:9 * MiB]     # both windows serve it
    with pytest.raises(ArchiveNotReady):   # into the cached tail window: only 12-16 MiB is needed
        read(fs, fh, 2 * MiB, 15 * MiB)
    env.advance(STANDARD_DONE)
    assert read(fs, fh, 2 * MiB, 15 * MiB) == data[15 * MiB:17 * MiB]
    assert len(env.jobs()) == 4
    fs.release(fh)

    # A remount serves the cached windows with no new job; another process's state is shared.
    again = env.mount(fresh_provider=True, ranges_min=MiB, range_window=4 * MiB)
    fh = again.open("/big.bin", os.O_RDONLY)
    assert read(again, fh, MiB, 13 * MiB) == data[13 * MiB:14 * MiB]
    again.release(fh)
    assert len(env.jobs()) == 4


def test_vault_ranges_waits_for_a_whole_job_instead(env: Env):
    data = os.urandom(6 * MiB)
    env.upload("whole.bin", data)
    fs = env.mounted_with_inventory(ranges_min=MiB, range_window=MiB)
    report = fs.restore(["/whole.bin"])
    assert report.jobs_started == 1
    fh = fs.open("/whole.bin", os.O_RDONLY)
    with pytest.raises(ArchiveNotReady):
        read(fs, fh, 10, 3 * MiB)
    assert ranged_jobs(env) == [(0, len(data))] or ranged_jobs(env) == [None]  # the whole job only
    env.advance(STANDARD_DONE)
    assert read(fs, fh, 10, 3 * MiB) == data[3 * MiB:3 * MiB + 10]
    fs.release(fh)
    assert len(env.jobs()) == 1 and fs.getxattr("/whole.bin", RETRIEVAL) == b"cached"


def test_small_archives_and_the_default_retrieve_whole(env: Env):
    data = os.urandom(2 * MiB)
    env.upload("small.bin", data)
    fs = env.mounted_with_inventory(ranges_min=4 * MiB)  # below the threshold: as without ranges
    with pytest.raises(ArchiveNotReady):
        fs.open("/small.bin", os.O_RDONLY)
    plain = env.mount()  # vault_ranges is off by default
    with pytest.raises(ArchiveNotReady):
        plain.open("/small.bin", os.O_RDONLY)
    assert len(env.jobs()) == 1 and env.jobs()[0].byte_range in (None, (0, len(data)))


def test_restore_range_serves_reads_inside_and_retrieves_whole_outside(env: Env):
    data = os.urandom(9 * MiB + 7)
    env.upload("r.bin", data)
    fs = env.mounted_with_inventory()  # no vault_ranges
    report = fs.restore(["/r.bin"], byte_range=(5 * MiB + 3, 6 * MiB + 11))
    [item] = report.items
    assert item.byte_range == (5 * MiB, 7 * MiB) and item.started_job and item.state == "in-progress"
    assert ranged_jobs(env) == [(5 * MiB, 7 * MiB)]
    again = fs.restore(["/r.bin"], byte_range=(5 * MiB, 6 * MiB))  # inside it: no new job
    assert not again.items[0].started_job and again.items[0].job_id == item.job_id

    env.advance(STANDARD_DONE)
    waited = fs.restore(["/r.bin"], byte_range=(5 * MiB + 3, 6 * MiB + 11), wait=True, timeout=5)
    assert waited.all_ready and waited.jobs_started == 0
    fh = fs.open("/r.bin", os.O_RDONLY)  # some of it is retrieved: the open succeeds
    assert read(fs, fh, MiB + 100, 5 * MiB + 50) == data[5 * MiB + 50:6 * MiB + 150]
    assert fs.getxattr("/r.bin", RETRIEVAL).decode() == "none; bytes 5242880-7340031 cached"
    with pytest.raises(ArchiveNotReady):
        read(fs, fh, 100, 0)  # outside: the whole archive, as an open without ranges
    jobs = ranged_jobs(env)
    assert len(jobs) == 2 and (5 * MiB, 7 * MiB) in jobs
    env.advance(STANDARD_DONE)
    assert read(fs, fh, 100, 0) == data[:100]
    fs.release(fh)


def test_restore_range_refusals(env: Env):
    data = os.urandom(3 * MiB)
    env.upload("f.bin", data)
    fs = env.mounted_with_inventory()
    [item] = fs.restore(["/f.bin"], byte_range=(3 * MiB, 4 * MiB)).items
    assert item.state == "failed" and "archive has 3145728 bytes" in item.message
    [item] = fs.restore(["/f.bin"], byte_range=(2 * MiB + 1, 10 * MiB)).items  # clipped to the end
    assert item.state == "in-progress" and item.byte_range == (2 * MiB, 3 * MiB)
    assert env.jobs()[0].byte_range == (2 * MiB, 3 * MiB)


def test_corrupt_ranged_output_is_never_served(env: Env):
    data = os.urandom(8 * MiB)
    env.upload("c.bin", data)
    fs = env.mounted_with_inventory(ranges_min=MiB, range_window=2 * MiB)
    fh = fs.open("/c.bin", os.O_RDONLY)
    with pytest.raises(ArchiveNotReady):
        read(fs, fh, 10, 0)
    [job] = env.jobs()
    env.advance(STANDARD_DONE)
    env.corrupt_output(job.job_id)
    with pytest.raises(TreeHashMismatch) as caught:
        read(fs, fh, 10, 0)
    assert errno_for(caught.value) == errno.EIO
    assert data_files(fs, env) == []
    env.corrupt_output(job.job_id, False)
    assert read(fs, fh, 10, 0) == data[:10]
    fs.release(fh)


def _cached(fs: VaultFS, path: str) -> bool:
    return fs.getxattr(path, RETRIEVAL) == b"cached"


def test_cache_bound_evicts_least_recently_used_never_open(env: Env):
    blobs = {name: os.urandom(MiB) for name in ("a", "b", "c")}
    for name, blob in blobs.items():
        env.upload(name, blob)
    fs = env.mounted_with_inventory(data_cache_size=2 * MiB + MiB // 2)
    assert fs.restore(["/"]).jobs_started == 3
    env.advance(STANDARD_DONE)

    def cat(path: str) -> bytes:
        fh = fs.open(path, os.O_RDONLY)
        try:
            return read(fs, fh, 2 * MiB, 0)
        finally:
            fs.release(fh)

    assert cat("/a") == blobs["a"]
    time.sleep(0.02)
    assert cat("/b") == blobs["b"]
    time.sleep(0.02)
    held = fs.open("/a", os.O_RDONLY)     # a is used again (and held open): b is the oldest now
    time.sleep(0.02)
    assert cat("/c") == blobs["c"]
    assert _cached(fs, "/a") and _cached(fs, "/c") and not _cached(fs, "/b")
    assert fs.getxattr("/b", RETRIEVAL).decode().startswith("ready until")   # the job output remains

    held_c = fs.open("/c", os.O_RDONLY)   # both cached archives open: nothing may go for b
    with pytest.raises(CacheFull) as caught:
        fs.open("/b", os.O_RDONLY)
    assert errno_for(caught.value) == errno.ENOSPC
    assert read(fs, held, MiB, 0) == blobs["a"] and read(fs, held_c, MiB, 0) == blobs["c"]
    fs.release(held_c)
    assert cat("/b") == blobs["b"]        # c is closed now: it goes, a (still open) stays
    assert _cached(fs, "/a") and _cached(fs, "/b") and not _cached(fs, "/c")
    fs.release(held)


def test_cache_bound_refuses_what_can_never_fit(local_env: Env):
    env = local_env
    env.upload("huge", os.urandom(3 * MiB))
    data = os.urandom(3 * MiB)
    env.upload("huge2", data)
    fs = env.mounted_with_inventory(data_cache_size=2 * MiB)
    fs.restore(["/huge"])
    env.advance(STANDARD_DONE)
    with pytest.raises(CacheFull) as caught:
        fs.open("/huge", os.O_RDONLY)
    assert "vault_cache_size is 2097152" in str(caught.value)
    # ...but with vault_ranges, windows of an archive bigger than the bound are read one by one.
    ranged = env.mount(ranges_min=MiB, range_window=MiB, data_cache_size=2 * MiB)
    fh = ranged.open("/huge2", os.O_RDONLY)
    for offset in (0, MiB, 2 * MiB):   # each window in turn: a job, then the bytes
        for _ in range(2):   # asked twice, as the kernel does a real read just past a piece read
            with pytest.raises(ArchiveNotReady):
                read(ranged, fh, 10, offset)
        env.advance(STANDARD_DONE)
        assert read(ranged, fh, 10, offset) == data[offset:offset + 10]
        assert len(data_files(ranged, env)) <= 2
    # The first window was evicted for the third; its job's output is still there: no new job.
    assert read(ranged, fh, 10, 5) == data[5:15]
    assert len([j for j in env.jobs() if j.byte_range not in (None, (0, 3 * MiB))]) == 3
    ranged.release(fh)


def test_tree_windows_are_tree_aligned():
    for total in (5 * MiB + 3, 64 * MiB, 1):
        for window in (MiB, 4 * MiB, 16 * MiB):
            for offset in {0, total - 1, total // 2, min(total - 1, 4 * MiB + 1)}:
                lo, hi = treehash.tree_window(offset, window, total)
                assert lo <= offset < hi and treehash.is_tree_aligned(lo, hi, total)
                assert treehash.is_mib_aligned_range(lo, hi, total)
    assert treehash.align_outward(5 * MiB + 3, 6 * MiB + 11, 9 * MiB) == (5 * MiB, 7 * MiB)
    assert treehash.align_outward(0, 10, 7) == (0, 7)
    with pytest.raises(ValueError):
        treehash.align_outward(7, 9, 7)
    assert treehash.window_size(3 * MiB) == 4 * MiB and treehash.window_size(1) == MiB


def test_concurrent_reads_under_eviction_pressure(local_env: Env):
    """Two threads read one ranged handle at random offsets while a 4 MiB bound keeps evicting and
    re-downloading 1 MiB windows: every byte read is right, nothing in use is closed or evicted."""
    import random
    import threading

    env = local_env
    data = os.urandom(8 * MiB)
    env.upload("many.bin", data)
    fs = env.mounted_with_inventory(ranges_min=MiB, range_window=MiB, data_cache_size=4 * MiB)
    fh = fs.open("/many.bin", os.O_RDONLY)
    for window in range(8):  # a job per window, all done
        with pytest.raises(ArchiveNotReady):
            read(fs, fh, 1, window * MiB)
    env.advance(STANDARD_DONE)
    assert len(env.jobs()) == 8
    failures: list[BaseException] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(60):
                offset = rng.randrange(0, len(data) - 1)
                size = rng.choice((4096, 65536, 300_000))
                got = read(fs, fh, size, offset)
                assert got == data[offset:offset + size], (offset, size)
        except BaseException as exc:  # reported below, with the thread's own traceback
            failures.append(exc)

    threads = [threading.Thread(target=reader, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures
    assert len(data_files(fs, env)) <= 4 and len(env.jobs()) == 8  # evicted and downloaded again, no new job
    fs.release(fh)


def test_expired_window_job_is_replaced_at_once(env: Env):
    data = os.urandom(4 * MiB)
    env.upload("old.bin", data)
    fs = env.mounted_with_inventory(ranges_min=MiB, range_window=2 * MiB)
    fh = fs.open("/old.bin", os.O_RDONLY)
    with pytest.raises(ArchiveNotReady):
        read(fs, fh, 10, 3 * MiB)
    [first] = env.jobs()
    env.advance(STANDARD_DONE)
    env.expire_job(first.job_id)
    with pytest.raises(ArchiveNotReady):   # the next read starts its replacement, no second read needed
        read(fs, fh, 10, 3 * MiB)
    [second] = env.jobs()
    assert second.job_id != first.job_id and second.byte_range == (2 * MiB, 4 * MiB)
    env.advance(STANDARD_DONE)
    assert read(fs, fh, 10, 3 * MiB) == data[3 * MiB:3 * MiB + 10]
    fs.release(fh)


def test_failed_window_job_is_reported_once(env: Env):
    data = os.urandom(4 * MiB)
    env.upload("bad.bin", data)
    fs = env.mounted_with_inventory(ranges_min=MiB, range_window=2 * MiB)
    fh = fs.open("/bad.bin", os.O_RDONLY)
    with pytest.raises(ArchiveNotReady):
        read(fs, fh, 10, 0)
    [job] = env.jobs()
    env.fail_job(job.job_id, "archive unreadable (injected)")
    env.advance(STANDARD_DONE)
    with pytest.raises(JobFailed) as caught:
        read(fs, fh, 10, 0)
    assert errno_for(caught.value) == errno.EIO and "archive unreadable" in str(caught.value)
    assert "bytes 0-2097151 failed: archive unreadable" in fs.getxattr("/bad.bin", RETRIEVAL).decode()
    with pytest.raises(ArchiveNotReady):   # reported once: the next read starts another job
        read(fs, fh, 10, 0)
    assert len(env.jobs()) == 2
    fs.release(fh)
