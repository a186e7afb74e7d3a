#!/usr/bin/env python3
"""Copy a file in and out through a storefs mount on each backend, beside the provider used directly.

    .venv/bin/python scripts/bench_copy.py [--size-mib 256] [--runs 3] [BACKEND ...]

BACKEND is any of local, s3_moto, s3_seaweed, cos, wcs, ufile (default: all). Every server runs on
127.0.0.1 and stops at the end. For each backend it prints the median MiB/s of: `cp` into the mount
(until `storefs flush` says it is uploaded), `cp` out of a fresh mount (cold: page cache dropped), and
the same transfers made directly with the provider (put / parallel ranged reads) as the raw baseline.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storefs.store.registry import provider_module  # noqa: E402
from tests.fuse.harness import Env  # noqa: E402

BACKENDS = ["local", "s3_moto", "s3_seaweed", "cos", "wcs", "ufile"]


@contextlib.contextmanager
def backend(name: str, workdir: Path):
    """Yield (config section, bucket) for a fresh bucket on the named backend."""
    bucket = f"bench{uuid.uuid4().hex[:8]}"
    if name == "local":
        (workdir / "buckets" / bucket).mkdir(parents=True)
        yield {"type": "local", "root": str(workdir / "buckets")}, bucket
    elif name in ("s3_moto", "s3_seaweed"):
        from tests.servers import moto_s3, seaweed_s3
        with (moto_s3() if name == "s3_moto" else seaweed_s3()) as server:
            yield {"type": "s3", **server.options()}, server.create_bucket()
    else:
        # A separate process, as a real server would be: the emulator does not share our GIL.
        proc = subprocess.Popen([sys.executable, "scripts/emulator.py", name, "--bucket", bucket,
                                 "--root", str(workdir / "emu")], stdout=subprocess.PIPE, text=True,
                                cwd=Path(__file__).resolve().parent.parent)
        try:
            section = {k: str(v) for k, v in json.loads(proc.stdout.readline()).items()}
            yield section, bucket
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def drop_caches() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench_backend(name: str, size: int, runs: int, source: Path, workdir: Path) -> dict[str, float]:
    mib = size / (1 << 20)
    results: dict[str, list[float]] = {"mount_in": [], "mount_out": [], "raw_in": [], "raw_out": []}
    with backend(name, workdir) as (section, bucket):
        (workdir / "env").mkdir(parents=True, exist_ok=True)
        env = Env(workdir / "env", {"b": section})
        options = {k: v for k, v in section.items() if k != "type"}
        store = provider_module(section["type"]).open_provider("bench", options).bucket(bucket)
        try:
            for run in range(runs):
                mount = env.mount(f"b:{bucket}", mountpoint=workdir / f"m{run}")
                target = mount.path / f"file{run}"
                def copy_in() -> None:  # until durable in the backend: write-back flushed
                    shutil.copyfile(source, target)
                    env.run("flush", str(mount.path), check=True, timeout=600)
                results["mount_in"].append(mib / timed(copy_in))
                mount.unmount().check_returncode()
                drop_caches()
                mount = env.mount(f"b:{bucket}", mountpoint=workdir / f"n{run}")
                out = workdir / "out.bin"
                results["mount_out"].append(mib / timed(lambda: shutil.copyfile(mount.path / f"file{run}", out)))
                mount.unmount().check_returncode()
                out.unlink()

                from storefs.fs.bucket.uploader import UploadSettings, upload_file
                key = f"raw{run}"
                results["raw_in"].append(mib / timed(lambda: upload_file(store, key, str(source), {},
                                                                         UploadSettings())))

                def read_all() -> None:
                    chunk = 8 << 20
                    with concurrent.futures.ThreadPoolExecutor(4) as pool:
                        for _ in pool.map(lambda o: store.read_range(key, o, min(size, o + chunk)),
                                          range(0, size, chunk)):
                            pass
                results["raw_out"].append(mib / timed(read_all))
        finally:
            env.close()
    return {k: statistics.median(v) for k, v in results.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("backends", nargs="*", metavar="BACKEND", help=f"any of {', '.join(BACKENDS)}")
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(sorted(unknown))}")
    args.backends = args.backends or BACKENDS
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="storefs-bench-") as tmp:
        workdir = Path(tmp)
        source = workdir / "source.bin"
        with open(source, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        print(f"{args.size_mib} MiB, median of {args.runs} runs, MiB/s "
              f"({os.cpu_count()} cores, {time.strftime('%Y-%m-%d')})")
        print(f"{'backend':12} {'cp in':>8} {'raw put':>8} {'in/raw':>7} {'cp out':>8} {'raw get':>8} {'out/raw':>7}")
        for name in args.backends:
            r = bench_backend(name, size, args.runs, source, workdir / name)
            print(f"{name:12} {r['mount_in']:8.1f} {r['raw_in']:8.1f} {r['mount_in'] / r['raw_in']:7.2f} "
                  f"{r['mount_out']:8.1f} {r['raw_out']:8.1f} {r['mount_out'] / r['raw_out']:7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
