"""The workloads, through a mount (plain file I/O, fio, ls) and through the raw client (the storefs
provider used directly). Each returns one number; units are in report.ROWS.

"Durable" means the object is in the backend with the right size, checked with the raw client: a mount
that uploads after close (write-back) is polled until it is there, within a bound.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import io
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from storefs.errors import NotFound
from storefs.store.contract import ObjectStore, iter_list
from storefs.fs.bucket.uploader import UploadSettings, upload_file

from bench.others import OtherClient, cpu_seconds

MIB = 1 << 20
CHUNK = MIB                 # write/read size of the sequential workloads
BLOCK = 16 * MIB            # random data repeated to make files (nothing here dedupes or compresses)
POLL = 0.1


def drop_caches() -> bool:
    """Drop the kernel page cache (needs root); False when that is not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def random_block() -> bytes:
    return os.urandom(BLOCK)


def make_file(path: Path, size: int, block: bytes) -> None:
    with open(path, "wb") as f:
        for offset in range(0, size, len(block)):
            f.write(block[:min(len(block), size - offset)])


def warm_file(path: Path) -> None:
    """Read a local source file once so that copying it measures the mount, not the local disk."""
    with open(path, "rb", buffering=0) as f:
        while f.read(8 * MIB):
            pass


def _mibps(size: int, seconds: float) -> float:
    return size / MIB / max(seconds, 1e-9)


# ------------------------------------------------------------------------------------------------
# durability checks (raw client)


def wait_object(store: ObjectStore, key: str, size: int, deadline: float) -> None:
    while True:
        with contextlib.suppress(NotFound):
            if store.stat(key).size == size:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key} not in the backend with {size} bytes in time")
        time.sleep(POLL)


def wait_listed(store: ObjectStore, prefix: str, count: int, size: int, deadline: float) -> None:
    seen = 0
    while True:
        seen = sum(1 for page in iter_list(store, prefix, delimiter="")
                   for obj in page.objects if not obj.key.endswith("/") and obj.size == size)
        if seen >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {seen} of {count} files under {prefix} in the backend in time")
        time.sleep(5 * POLL)


# ------------------------------------------------------------------------------------------------
# through a mount


def seq_write(path: Path, size: int, block: bytes, store: ObjectStore, key: str, bound: float) -> float:
    """Write `size` bytes in 1 MiB writes, close, wait until the object is durable: MiB/s."""
    view = memoryview(block)
    started = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        for offset in range(0, size, CHUNK):
            start = offset % len(block)
            f.write(view[start:start + min(CHUNK, size - offset)])
    wait_object(store, key, size, time.monotonic() + bound)
    return _mibps(size, time.perf_counter() - started)


def seq_read(path: Path, size: int) -> float:
    """Read a whole file in 1 MiB reads: MiB/s. Fails if the size is wrong."""
    buf = bytearray(CHUNK)
    total = 0
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    seconds = time.perf_counter() - started
    if total != size:
        raise OSError(f"read {total} bytes, expected {size}")
    return _mibps(size, seconds)


def fio_randread(path: Path, size: int, runtime: float, workdir: Path) -> float:
    """4 KiB random reads, one thread, synchronous buffered I/O, read-only: IOPS."""
    out = workdir / f"fio-{time.monotonic_ns()}.json"
    cmd = ["fio", "--name=randread", f"--filename={path}", "--rw=randread", "--bs=4k", f"--size={size}",
           f"--runtime={runtime:g}", "--time_based", "--ioengine=psync", "--direct=0", "--invalidate=0",
           "--readonly", "--numjobs=1", "--randrepeat=1", "--output-format=json", f"--output={out}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=runtime + 180, stdin=subprocess.DEVNULL)
    try:
        job = json.loads(out.read_text())["jobs"][0]
    except (OSError, ValueError, KeyError, IndexError):
        raise RuntimeError(f"fio exited {result.returncode}: {(result.stderr or result.stdout).strip()[:200]}") from None
    finally:
        with contextlib.suppress(OSError):
            out.unlink()
    if job.get("error"):
        raise RuntimeError(f"fio error {job['error']}: {os.strerror(job['error'])}")
    if job["read"]["io_bytes"] <= 0:
        raise RuntimeError("fio read nothing")
    return float(job["read"]["iops"])


@dataclasses.dataclass(frozen=True)
class SmallFiles:
    durable: float      # files/s until another client sees them all
    closed: float       # files/s until the creating process ended (every file closed)
    cpu_ms: float       # CPU milliseconds of the mount process per file


# The creators: a real shell process (what a user's script does: bash forks printf's redirection per file,
# one open/write/close each) and a Python process (open/write/close, unbuffered).
BASH_CREATE = 'cd "$1" && for i in $(seq 1 "$2"); do printf "%${3}s" x > f$i; done'
PYTHON_CREATE = ("import os, sys\n"
                 "d, n, s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
                 "data = b'x' * s\n"
                 "for i in range(n):\n"
                 "    with open(os.path.join(d, f'f{i}'), 'wb', buffering=0) as f:\n"
                 "        f.write(data)\n")


def creator(how: str, directory: Path, count: int, size: int) -> list[str]:
    if how == "bash":
        return ["bash", "-c", BASH_CREATE, "bash", str(directory), str(count), str(size)]
    if how == "python":
        return [sys.executable, "-c", PYTHON_CREATE, str(directory), str(count), str(size)]
    raise ValueError(how)


def small_files(directory: Path, how: str, count: int, size: int, pid: int, store: ObjectStore, prefix: str,
                lister: Callable[[], OtherClient] | None, bound: float) -> SmallFiles:
    """Create `count` files of `size` bytes with a bash or Python loop in `directory` (a mount), until
    durable: seen by another client's listing. With `lister`, that client lists the bucket from before the
    first file until all are there (a concurrent ListObjectsV2 loop); without, the bucket is listed from
    here after the last close. CPU: the mount process's utime+stime from the start to the durable point."""
    directory.mkdir()
    other = lister() if lister else None
    try:
        cpu_before = cpu_seconds(pid)
        started = time.monotonic()
        result = subprocess.run(creator(how, directory, count, size), capture_output=True, text=True,
                                timeout=bound, stdin=subprocess.DEVNULL)
        closed = time.monotonic()
        if result.returncode != 0:
            raise RuntimeError(f"{how} loop exited {result.returncode}: {result.stderr.strip()[:200]}")
        if other is not None:
            seen_at = other.finish(max(1.0, started + bound - time.monotonic())).get("seen_at")
            if seen_at is None:
                raise TimeoutError(f"the other client did not see {count} files under {prefix} in time: "
                                   f"{other.result}")
            durable = float(seen_at)
        else:
            wait_listed(store, prefix, count, size, started + bound)
            durable = time.monotonic()
        cpu = cpu_seconds(pid) - cpu_before
    finally:
        if other is not None:
            other.stop()
    return SmallFiles(durable=count / (durable - started), closed=count / (closed - started),
                      cpu_ms=cpu * 1000 / count)


def ls_long(directory: Path, count: int, timeout: float) -> float:
    """`ls -l` of a directory of `count` files: seconds. Fails if the count is wrong."""
    started = time.perf_counter()
    result = subprocess.run(["ls", "-l", str(directory)], capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"ls exited {result.returncode}: {result.stderr.strip()[:200]}")
    listed = sum(1 for line in result.stdout.splitlines() if line.startswith("-"))
    if listed != count:
        raise RuntimeError(f"ls -l listed {listed} files of {count}")
    return seconds


class RssSampler:
    """Peak resident memory of a process: VmHWM at the end, and VmRSS sampled every 50 ms meanwhile."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _status(self, field: str) -> int:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_kib = max(self.peak_kib, self._status("VmRSS"))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak_kib = max(self.peak_kib, self._status("VmHWM"), self._status("VmRSS"))


def copy_in_rss(source: Path, target: Path, size: int, pid: int, store: ObjectStore, key: str,
                bound: float) -> tuple[float, float]:
    """`cp` a local file into the mount and wait until durable: (MiB/s, peak RSS of the mount in MiB)."""
    warm_file(source)
    with RssSampler(pid) as sampler:
        started = time.perf_counter()
        result = subprocess.run(["cp", str(source), str(target)], capture_output=True, text=True,
                                timeout=bound, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"cp exited {result.returncode}: {result.stderr.strip()[:200]}")
        wait_object(store, key, size, time.monotonic() + bound)
        seconds = time.perf_counter() - started
    return _mibps(size, seconds), sampler.peak_kib / 1024


# ------------------------------------------------------------------------------------------------
# raw client


def raw_write(store: ObjectStore, key: str, source: Path, size: int) -> float:
    warm_file(source)
    started = time.perf_counter()
    if size <= store.capabilities.single_put_max:
        with open(source, "rb") as f:   # a real file object: providers may seek it to retry
            store.put(key, f, size, {})
    else:
        upload_file(store, key, str(source), {}, UploadSettings())
    return _mibps(size, time.perf_counter() - started)


def raw_read(store: ObjectStore, key: str, size: int) -> float:
    """8 MiB ranged reads, 4 at a time (as a mount's read-ahead could): MiB/s."""
    chunk = 8 * MIB

    def read(offset: int) -> int:
        return len(store.read_range(key, offset, min(size, offset + chunk)))

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        total = sum(pool.map(read, range(0, size, chunk)))
    seconds = time.perf_counter() - started
    if total != size:
        raise OSError(f"read {total} bytes, expected {size}")
    return _mibps(size, seconds)


def raw_randread(store: ObjectStore, key: str, size: int, runtime: float) -> float:
    """4 KiB ranged reads at random aligned offsets, one at a time, for `runtime` seconds: IOPS."""
    rng = random.Random(1)
    blocks = size // 4096
    done = 0
    started = time.perf_counter()
    deadline = started + runtime
    while time.perf_counter() < deadline:
        offset = rng.randrange(blocks) * 4096
        store.read_range(key, offset, offset + 4096)
        done += 1
    return done / (time.perf_counter() - started)


def raw_create(store: ObjectStore, prefix: str, count: int, size: int) -> float:
    """`count` single PUTs of `size` bytes, one after the other: files/s."""
    data = os.urandom(size)
    started = time.perf_counter()
    for i in range(count):
        store.put(f"{prefix}f{i:05d}", io.BytesIO(data), size, {})
    return count / (time.perf_counter() - started)


def raw_list(store: ObjectStore, prefix: str, count: int) -> float:
    """List a "directory" page by page (names, sizes, dates: what `ls -l` shows): seconds."""
    started = time.perf_counter()
    listed = sum(1 for page in iter_list(store, prefix) for obj in page.objects if not obj.key.endswith("/"))
    seconds = time.perf_counter() - started
    if listed != count:
        raise RuntimeError(f"listed {listed} objects of {count}")
    return seconds


def populate(store: ObjectStore, prefix: str, count: int, size: int, workers: int = 16) -> None:
    """Create `count` small objects under `prefix`, in parallel."""
    data = os.urandom(size)

    def put(i: int) -> None:
        store.put(f"{prefix}f{i:05d}", io.BytesIO(data), size, {})

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(put, range(count)):
            pass


def delete_quietly(store: ObjectStore, *keys: str) -> None:
    for key in keys:
        with contextlib.suppress(Exception):
            store.delete(key)
