#!/usr/bin/env python3
"""Many hosts, one bucket, measured (issue #17): storefs mounts over a SeaweedFS cluster.

    .venv/bin/python scripts/bench_cluster.py [--quick] [--hosts 1,2,4] [--mib N]
                                              [--objects N[,N...]] [--skip-throughput] [--skip-listing]
                                              [--output FILE]

Starts the test cluster of tests/cluster.py (one master, two volume servers with replication 001, a
filer, an S3 gateway, every one on 127.0.0.1) and measures:

  a. aggregate throughput of 1, 2 and 4 storefs mounts, each with its own cache and staging directory
     (a host): copy-in (each mount `cp`s its own file in; the clock stops when every object is in the
     bucket with its size, seen by the raw client) and cold read (each mount reads a different object
     it never saw, page cache dropped). The raw client (the storefs S3 provider used directly, one
     thread per host) does the same work side by side.
  b. a listing of a bucket "directory" of --objects objects through a fresh mount: `os.scandir` of
     it, cold and then warm, and the mount process's peak RSS (VmHWM); the raw client's paged
     ListObjectsV2 of the same prefix for comparison. The objects are created as empty files through
     the filer's HTTP API (curl, 32 in flight): the fastest way found to make a million of them, and
     still a real bucket that the mount lists with S3 ListObjectsV2 through the gateway.

Needs root (FUSE mounts, dropping the page cache) and curl. Every server listens on 127.0.0.1 only.
--quick: 32 MiB per host and 100,000 objects. Prints a Markdown report (and writes it to --output).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bench.mounts import _raw_store  # noqa: E402
from bench.workloads import (  # noqa: E402
    MIB,
    RssSampler,
    drop_caches,
    make_file,
    random_block,
    raw_list,
    raw_read,
    raw_write,
    seq_read,
    wait_object,
)
from tests.cluster import SeaweedCluster, seaweed_cluster  # noqa: E402
from tests.fuse.harness import Env, Mount  # noqa: E402

BOUND = 1800.0          # seconds any one step may take before the run gives up
LISTING_TTL = 3600       # dir_ttl of the listing mount
POPULATE_BATCH = 50_000  # objects per curl run (each run's rate is reported: is the curve linear?)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parallel(jobs: list[Callable[[], object]]) -> float:
    """Run the jobs at once (one thread each); seconds until the last one finished."""
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()
    return time.perf_counter() - started


@contextlib.contextmanager
def hosts(cluster: SeaweedCluster, bucket: str, count: int, workdir: Path,
          options: tuple[str, ...] = ()) -> Iterator[list[Mount]]:
    """`count` storefs mounts of the bucket, each with its own cache, staging and runtime directories."""
    section = {"type": "s3", **cluster.s3.options()}
    envs = []
    try:
        for index in range(count):
            folder = Path(tempfile.mkdtemp(prefix=f"host{index}-", dir=workdir))
            envs.append(Env(folder, {"r": section}))
        yield [env.mount(f"r:{bucket}", options=options) for env in envs]
    finally:
        for env in envs:
            env.close()


def throughput(cluster: SeaweedCluster, counts: list[int], size: int, workdir: Path) -> list[str]:
    """Copy-in and cold read by 1, 2, 4… hosts at once, and the raw client doing the same work."""
    bucket = cluster.s3.create_bucket()
    store = _raw_store({"type": "s3", **cluster.s3.options()}, bucket)
    block = random_block()
    rows = ["| hosts | copy-in total MiB/s | per host | raw client total | storefs/raw | "
            "cold read total MiB/s | per host | raw client total | storefs/raw |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for count in counts:
        sources = []
        for index in range(count):
            source = workdir / f"source{index}.bin"
            if not source.exists():
                make_file(source, size, block)
            sources.append(source)
        total = size * count / MIB
        # The raw client: the same uploads and downloads, one thread per host.
        raw_in = parallel([lambda i=i: raw_write(store, f"raw{count}/in{i}", sources[i], size)
                           for i in range(count)])
        raw_out = parallel([lambda i=i: raw_read(store, f"raw{count}/in{i}", size) for i in range(count)])
        # Objects for the mounts' cold reads, written by the raw client: no mount has seen them.
        parallel([lambda i=i: raw_write(store, f"cold{count}/r{i}", sources[i], size) for i in range(count)])
        with hosts(cluster, bucket, count, workdir, ("write_back=0",)) as mounts:
            for mount in mounts:
                (mount.path / f"in{count}").mkdir(exist_ok=True)
            drop_caches()

            def copy_in(i: int) -> None:
                subprocess.run(["cp", str(sources[i]), str(mounts[i].path / f"in{count}" / f"h{i}")],
                               check=True, timeout=BOUND, stdin=subprocess.DEVNULL)
                wait_object(store, f"in{count}/h{i}", size, time.monotonic() + BOUND)

            copy_seconds = parallel([lambda i=i: copy_in(i) for i in range(count)])
            drop_caches()
            read_seconds = parallel([lambda i=i: seq_read(mounts[i].path / f"cold{count}" / f"r{i}", size)
                                     for i in range(count)])
        copy_rate, read_rate = total / copy_seconds, total / read_seconds
        raw_copy_rate, raw_read_rate = total / raw_in, total / raw_out
        log(f"{count} hosts: copy-in {copy_rate:.0f} MiB/s (raw {raw_copy_rate:.0f}), "
            f"cold read {read_rate:.0f} MiB/s (raw {raw_read_rate:.0f})")
        rows.append(f"| {count} | {copy_rate:.0f} | {copy_rate / count:.0f} | {raw_copy_rate:.0f} | "
                    f"{copy_rate / raw_copy_rate:.2f} | {read_rate:.0f} | {read_rate / count:.0f} | "
                    f"{raw_read_rate:.0f} | {read_rate / raw_read_rate:.2f} |")
    return rows


def populate(cluster: SeaweedCluster, bucket: str, prefix: str, first: int, end: int, workdir: Path) -> list[str]:
    """Empty objects number `first` to `end` under `prefix`, PUT to the filer's HTTP API by curl, in
    batches: one line per batch with its rate (a rate that falls as the directory grows shows there)."""
    base = f"http://127.0.0.1:{cluster.filer.http_port}/buckets/{bucket}/{prefix}"
    config = workdir / "curl.cfg"
    lines = []
    for start in range(first, end, POPULATE_BATCH):
        stop = min(end, start + POPULATE_BATCH)
        config.write_text("".join(f'url = "{base}o{i:07d}"\noutput = "/dev/null"\n' for i in range(start, stop)))
        began = time.perf_counter()
        done = subprocess.run(["curl", "-sS", "--fail", "-Z", "--parallel-max", "32", "-X", "PUT",
                               "-H", "Content-Type: application/octet-stream", "--data-binary", "",
                               "--noproxy", "*", "-K", str(config)],
                              capture_output=True, text=True, timeout=BOUND, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"curl exited {done.returncode}: {done.stderr[-500:]}")
        lines.append(f"{start:,}-{stop:,}: {(stop - start) / (time.perf_counter() - began):,.0f} objects/s")
        log(f"populated {stop:,} ({lines[-1]})")
    config.unlink()
    return lines


def list_through_mount(cluster: SeaweedCluster, bucket: str, count: int, workdir: Path) -> tuple[float, float, int, int]:
    """A fresh mount lists many/ cold, then warm: (cold s, warm s, RSS before KiB, peak RSS KiB)."""
    # The warm listing must come within dir_ttl of the cold one, which alone may take minutes.
    with hosts(cluster, bucket, 1, workdir, (f"dir_ttl={LISTING_TTL}",)) as (mount,):
        drop_caches()
        idle_kib = RssSampler(mount.pid)._status("VmRSS")

        def scan() -> float:
            started = time.perf_counter()
            with os.scandir(mount.path / "many") as entries:
                seen = sum(1 for _ in entries)
            if seen != count:
                raise RuntimeError(f"the mount listed {seen} entries of {count}")
            return time.perf_counter() - started

        with RssSampler(mount.pid) as sampler:
            cold = scan()
            log(f"{count:,}: cold listing through the mount {cold:.1f}s")
            warm = scan()
            log(f"{count:,}: warm listing through the mount {warm:.1f}s")
    return cold, warm, idle_kib, sampler.peak_kib


def listing(cluster: SeaweedCluster, counts: list[int], workdir: Path) -> tuple[list[str], list[str]]:
    """Grow one directory to each count in turn; at each, list it raw and through a fresh mount."""
    bucket = cluster.s3.create_bucket()
    store = _raw_store({"type": "s3", **cluster.s3.options()}, bucket)
    rows = ["| objects | populate, cumulated (s) | raw ListObjectsV2 (s) | mount, cold (s) | storefs/raw | "
            "mount, warm (s) | mount RSS before (MiB) | mount peak RSS (MiB) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    batches: list[str] = []
    populated, populate_seconds = 0, 0.0
    for count in sorted(counts):
        began = time.perf_counter()
        batches += populate(cluster, bucket, "many/", populated, count, workdir)
        populate_seconds += time.perf_counter() - began
        populated = count
        raw_seconds = raw_list(store, "many/", count)
        log(f"{count:,}: raw ListObjectsV2 {raw_seconds:.1f}s")
        cold, warm, idle_kib, peak_kib = list_through_mount(cluster, bucket, count, workdir)
        rows.append(f"| {count:,} | {populate_seconds:.0f} | {raw_seconds:.1f} | {cold:.1f} | "
                    f"{cold / raw_seconds:.2f} | {warm:.1f} | {idle_kib / 1024:.0f} | {peak_kib / 1024:.0f} |")
    return rows, batches


def machine() -> str:
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
    return f"{os.cpu_count()} cores (nproc), {mem_kib / (1 << 20):.1f} GiB RAM, Linux {os.uname().release}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="32 MiB per host, 100,000 objects (development)")
    p.add_argument("--hosts", default="1,2,4", help="mount counts for the throughput rows (default 1,2,4)")
    p.add_argument("--mib", type=int, help="MiB each host copies in and reads (default 256; --quick: 32)")
    p.add_argument("--objects", help="objects in the listed directory, or several counts the directory grows "
                                     "through, each listed (default 1000000; --quick: 100000)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-listing", action="store_true")
    p.add_argument("--output", metavar="FILE", help="also write the report to FILE")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("bench_cluster.py needs root (FUSE mounts, dropping the page cache)", file=sys.stderr)
        return 2
    size = (args.mib or (32 if args.quick else 256)) * MIB
    objects = [int(n) for n in args.objects.split(",")] if args.objects else [100_000 if args.quick else 1_000_000]
    counts = [int(n) for n in args.hosts.split(",")]
    started = time.perf_counter()
    report = [f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}; "
              f"command: `.venv/bin/python scripts/bench_cluster.py {' '.join(sys.argv[1:] if argv is None else argv)}`"]
    with tempfile.TemporaryDirectory(prefix="storefs-bench-cluster-") as tmp:
        workdir = Path(tmp)
        # Volumes of 1 GiB, up to 20 per server: gigabytes of copies fit, and a file rarely spans two.
        with seaweed_cluster(volumes=2, replication="001", volume_size_mb=1024, max_volumes=20) as cluster:
            log(f"cluster up in {cluster.s3.startup_seconds:.1f}s")
            if not args.skip_throughput:
                report += ["", f"Throughput, {size // MIB} MiB per host, `-o write_back=0`:", "",
                           *throughput(cluster, counts, size, workdir)]
            if not args.skip_listing:
                rows, batches = listing(cluster, objects, workdir)
                report += ["", f"Listing one directory of {' then '.join(f'{n:,}' for n in sorted(objects))} empty objects (`-o dir_ttl={LISTING_TTL}`, "
                           "else default options):", "",
                           *rows, "", "Populate rate per batch: " + "; ".join(batches)]
    report.append(f"\nTotal {time.perf_counter() - started:.0f}s.")
    text = "\n".join(report)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
