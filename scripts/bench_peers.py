#!/usr/bin/env python3
"""Side-by-side benchmark of storefs against rclone mount and s3fs-fuse on the same bucket, measured the
way users meet it: every row in several conditions, and the worst condition is the one that counts.

    .venv/bin/python scripts/bench_peers.py [--quick] [--backend seaweed|seaweed-tls|wcs]
                                            [--mounts storefs-mfusepy,storefs-fusepy,rclone,s3fs]
                                            [--rows write,small-files,seq-reads,random-reads,ls,copy-in]
                                            [--runs N] [--output FILE]

Starts SeaweedFS (`weed mini`) on 127.0.0.1, or the WCS emulator (where only storefs and the raw client
can run), measures the backend with the raw client (the storefs provider used directly), then mounts the
same bucket with each of storefs (once per FUSE binding: mfusepy on libfuse 3, fusepy on libfuse 2),
rclone (`--vfs-cache-mode full`) and s3fs-fuse, one at a time, and runs the same workloads on each:

- write: sequential write until durable, alone and while another client reads the bucket;
- small-files: files created by a bash loop and by a Python process, with and without another client
  listing the bucket until all are there, at write-back delays 0 and at their defaults: files/s until
  durable (seen by that other client), files/s until the last close, mount CPU per file;
- seq-reads: sequential read cold (several fresh mounts: min/median/max) and warm, alone and while another
  client writes;
- random-reads: fio psync 4 KiB random reads on a cold object for a short and a long run (8 s and 15 s),
  the server's traffic during it (through a counting TCP relay) as a multiple of the object, then warm;
- ls: `ls -l` of a big directory cold and warm, alone and while another client writes;
- copy-in: a large copy-in until durable and the mount's peak RSS, alone and while another client reads.

The "other clients" are separate processes (scripts/bench/client.py). Prints a summary table (each row in
its worst condition), the table of every condition and writes both to --output, with an SVG chart of the
summary next to it (matplotlib, the `bench` extra). A workload that fails shows "fail" with a footnote; it
never ends the run.

Needs root (FUSE mounts, dropping the page cache), fio, s3fs (Debian packages), rclone and matplotlib
(`bash scripts/install.sh bench`). As root it re-runs itself in a private network namespace where only
loopback exists, so no mount can reach anything but 127.0.0.1. About 25 minutes at default settings (2 runs) on 2
cores; --quick (smaller sizes, shorter runs, one run) about 4 minutes.
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
import uuid
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bench import workloads as wl  # noqa: E402
from storefs.options import MountOptions  # noqa: E402
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
    delay_flags,
    endpoint_address,
    fresh_mount,
    is_mounted,
    missing_tool,
    start_backend,
    tool_versions,
    unmount_under,
    via,
    watchdog,
)
from bench.chart import write_chart  # noqa: E402
from bench.others import OtherClient, busy  # noqa: E402
from bench.relay import Relay  # noqa: E402
from bench.report import Results, Row, render  # noqa: E402

MIB = 1 << 20
NETNS_MARK = "STOREFS_BENCH_NETNS"

ALONE = "alone"
# The groups of rows --rows can pick, in the order they run.
GROUPS = ("write", "small-files", "seq-reads", "random-reads", "ls", "copy-in")
DELAYS = {"0": "write-back 0", "default": "write-back default"}
SHELLS = {"bash": "bash loop", "python": "Python loop"}
LISTING = {False: "no other client", True: "another client listing"}


@dataclasses.dataclass(frozen=True)
class Settings:
    runs: int
    seq: int            # bytes of the sequential / random-read file
    files: int          # small files created
    file_size: int
    ls_objects: int
    big: int            # bytes copied in while RSS is watched
    fio_short: float    # seconds of the two cold random-read runs
    fio_long: float
    fio_warm: float     # seconds of the warm run that follows each
    cold_reads: int     # cold sequential reads per run and condition (each on a fresh mount)


def _size(n: int) -> str:
    return f"{n // (1 << 30)} GiB" if n >= 1 << 30 and n % (1 << 30) == 0 else f"{n // MIB} MiB"


def small_condition(shell: str, listing: bool, delays: str) -> str:
    return f"{SHELLS[shell]}, {LISTING[listing]}, {DELAYS[delays]}"


def small_conditions() -> tuple[str, ...]:
    return tuple(small_condition(shell, listing, delays)
                 for delays in DELAYS for shell in SHELLS for listing in (True, False))


def fio_condition(seconds: float) -> str:
    return f"fio {seconds:g} s"


def rows_for(s: Settings) -> dict[str, list[Row]]:
    """The rows of each group, with their conditions."""
    small = small_conditions()
    fio = (fio_condition(s.fio_short), fio_condition(s.fio_long))
    reading, writing = (ALONE, "another client reading"), (ALONE, "another client writing")
    files = f"{s.files:,} files of {s.file_size // 1024} KiB"
    return {
        "write": [Row("write", f"sequential write {_size(s.seq)}, until durable (MiB/s)", True, 1, reading)],
        "small-files": [
            Row("create", f"create {files}, until durable = listed by another client (files/s)", True, 1, small),
            Row("create_close", f"create {files}, until the last close (files/s)", True, 1, small),
            Row("create_cpu", "mount process CPU per small file (ms)", False, 2, small)],
        "seq-reads": [
            Row("read_cold", f"sequential read {_size(s.seq)}, cold (MiB/s)", True, 1, writing, spread=True),
            Row("read_warm", f"sequential read {_size(s.seq)}, warm (MiB/s)", True, 1, writing)],
        "random-reads": [
            Row("rand_cold", f"random 4 KiB reads (fio psync), cold {_size(s.seq)} object (IOPS)", True, 0, fio),
            Row("rand_traffic", "read traffic from the server during that cold run (× object size)", False, 2, fio),
            Row("rand_warm", f"random 4 KiB reads, warm: {s.fio_warm:g} s right after the cold run (IOPS)",
                True, 0, fio)],
        "ls": [Row("ls_cold", f"ls -l of {s.ls_objects:,} objects, cold (s)", False, 2, writing),
               Row("ls_warm", f"ls -l of {s.ls_objects:,} objects, warm (s)", False, 2, writing)],
        "copy-in": [Row("copy_big", f"copy-in of {_size(s.big)}, until durable (MiB/s)", True, 1, reading),
                    Row("rss", "peak RSS of the mount process during that copy (MiB)", False, 0, reading)],
    }


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace, settings: Settings, backend: Backend, workdir: Path) -> None:
        self.args, self.s, self.backend, self.workdir = args, settings, backend, workdir
        self.store = backend.store
        self.groups = [g for g in GROUPS if g in args.rows]
        by_group = rows_for(settings)
        self.results = Results([row for g in self.groups for row in by_group[g]])
        self.block = wl.random_block()
        self.seq_source = workdir / "seq.bin"
        self.big_source = workdir / "big.bin"
        self.user = {**{kind: args.storefs_opt for kind in STOREFS_KINDS}, "rclone": args.rclone_arg,
                     "s3fs": args.s3fs_opt}
        base = default_flags(args.keep_write_back_delays)
        self.extra = {kind: base[kind] + self.user[kind] for kind in MOUNTS}
        self.cold_ok = True
        self._done: set[tuple[str, str]] = set()

    # -- recording ---------------------------------------------------------------------------------

    def measure(self, row: str, condition: str, column: str, fn: Callable[[], float]) -> float | None:
        self._done.add((row, condition))
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - a failing workload is a table cell, never a crash
            self.results.fail(row, condition, column, _describe(exc))
            log(f"{column:15} {row:12} {condition}: FAIL {_describe(exc)}")
            return None
        self.results.add(row, condition, column, value)
        log(f"{column:15} {row:12} {condition}: {value:,.2f}")
        return value

    def on_mount(self, mount: ActiveMount, row: str, condition: str, bound: float,
                 fn: Callable[[], float]) -> float | None:
        def guarded() -> float:
            if not is_mounted(mount.path):   # killed by a watchdog: never fall through to the local dir
                raise RuntimeError("the mount is gone (killed after an earlier timeout)")
            with watchdog(bound, mount, row):
                return fn()
        value = self.measure(row, condition, mount.kind, guarded)
        if value is None:
            for line in mount.log_tail(6).splitlines():
                log(f"    {mount.kind} log: {line[:300]}")
        return value

    def session(self, kind: str, cells: list[tuple[str, str]], body: Callable[[ActiveMount], None],
                backend: Backend | None = None, flags: list[str] | None = None) -> None:
        """Run `body` on a fresh mount; the (row, condition) cells it could not measure (the mount failed)
        become failures."""
        self._done = set()
        try:
            with fresh_mount(kind, backend or self.backend, self.workdir / "mounts",
                             self.extra[kind] if flags is None else flags) as mount:
                body(mount)
        except Exception as exc:  # noqa: BLE001
            for row, condition in cells:
                if (row, condition) not in self._done:
                    self.results.fail(row, condition, kind, f"mount: {_describe(exc)}")
            log(f"{kind:15} mount/unmount failed: {_describe(exc)}")

    def drop(self) -> None:
        self.cold_ok = wl.drop_caches() and self.cold_ok

    def load(self, condition: str) -> contextlib.AbstractContextManager:
        """The other client of a condition, busy on the bucket while the workload runs."""
        section, bucket = self.backend.section, self.backend.bucket
        if condition == "another client reading":
            return busy(section, bucket, "reader", key="data/seq.bin")
        if condition == "another client writing":
            return busy(section, bucket, "writer", prefix=f"noise/{uuid.uuid4().hex[:8]}/")
        return busy(section, bucket, None)

    def conditions(self, row: str) -> tuple[str, ...]:
        return self.results.row(row).conditions

    # -- preparation -------------------------------------------------------------------------------

    def prepare(self) -> None:
        st = self.store
        need_seq = {"write", "seq-reads", "random-reads", "copy-in"} & set(self.groups)
        if need_seq:
            log(f"making {_size(self.s.seq)} and uploading it as data/seq.bin with the raw client")
            wl.make_file(self.seq_source, self.s.seq, self.block)
            wl.raw_write(st, "data/seq.bin", self.seq_source, self.s.seq)
        if "copy-in" in self.groups:
            wl.make_file(self.big_source, self.s.big, self.block)
        if "ls" in self.groups:
            started = time.monotonic()
            wl.populate(st, "lsdir/", self.s.ls_objects, 100)
            log(f"  {self.s.ls_objects:,} objects under lsdir/ in {time.monotonic() - started:.1f} s")

    # -- one run -----------------------------------------------------------------------------------

    def raw_run(self, run: int) -> None:
        s, st = self.s, self.store
        if "write" in self.groups:
            for condition in self.conditions("write"):
                key = f"raw/w{run}.bin"
                with self.load(condition):
                    self.measure("write", condition, "raw", lambda: wl.raw_write(st, key, self.seq_source, s.seq))
                wl.delete_quietly(st, key)
        if "small-files" in self.groups:
            for listing in (False, True):
                prefix = f"raw/c{run}-{int(listing)}/"
                lister = (OtherClient(self.backend.section, self.backend.bucket, "list-until", prefix, s.files,
                                      s.file_size, 60 + s.files) if listing else contextlib.nullcontext())
                with lister:
                    value = self.measure("create", small_condition("bash", listing, "0"), "raw",
                                         lambda: wl.raw_create(st, prefix, s.files, s.file_size))
                # One raw measurement per listing condition: shells and write-back delays are not the
                # raw client's, so the same value stands in each of those conditions.
                for condition in self.conditions("create"):
                    if LISTING[listing] in condition and condition != small_condition("bash", listing, "0"):
                        if value is not None:
                            self.results.add("create", condition, "raw", value)
            for row in ("create_close", "create_cpu"):
                self.results.na_all(row, "raw", "no mount: the raw client's PUT returns when durable")
        if "seq-reads" in self.groups:
            self._raw_cold_warm("read_cold", "read_warm", lambda: wl.raw_read(st, "data/seq.bin", s.seq))
        if "random-reads" in self.groups:
            self.raw_random()
        if "ls" in self.groups:
            self._raw_cold_warm("ls_cold", "ls_warm", lambda: wl.raw_list(st, "lsdir/", s.ls_objects))

    def _raw_cold_warm(self, cold: str, warm: str, fn: Callable[[], float]) -> None:
        """The raw client's cold then warm run of `fn`, in each condition of the `cold` row."""
        for condition in self.conditions(cold):
            with self.load(condition):
                self.drop()
                self.measure(cold, condition, "raw", fn)
                self.measure(warm, condition, "raw", fn)

    def raw_random(self) -> None:
        s = self.s
        for seconds in (s.fio_short, s.fio_long):
            condition = fio_condition(seconds)
            with self.relayed() as (relay, backend):
                self.drop()
                before = relay.counts()[0] if relay else 0
                ok = self.measure("rand_cold", condition, "raw",
                                  lambda: wl.raw_randread(backend.store, "data/seq.bin", s.seq, seconds))
                self._traffic(relay, before, condition, "raw", ok is not None)
                self.measure("rand_warm", condition, "raw",
                             lambda: wl.raw_randread(backend.store, "data/seq.bin", s.seq, s.fio_warm))

    @contextlib.contextmanager
    def relayed(self):
        """(relay, backend through it); (None, backend) when the endpoint cannot be relayed."""
        address = endpoint_address(self.backend)
        if address is None:
            yield None, self.backend
            return
        with Relay(address) as relay:
            yield relay, via(self.backend, relay.endpoint)

    def _traffic(self, relay: Relay | None, before: int, condition: str, column: str, ok: bool) -> None:
        """Bytes the server sent through the relay since `before`, as a multiple of the object size."""
        if relay is None:
            self.results.not_applicable("rand_traffic", condition, column, "the endpoint is not plain http")
            return
        if not ok:
            self.results.fail("rand_traffic", condition, column, "the cold run failed")
            return
        traffic = (relay.counts()[0] - before) / self.s.seq
        self.results.add("rand_traffic", condition, column, traffic)
        log(f"{column:15} rand_traffic {condition}: {traffic:.2f}× the object")

    def mount_run(self, kind: str, run: int) -> None:
        for group in self.groups:
            if group != "copy-in":
                getattr(self, "run_" + group.replace("-", "_"))(kind, run)

    def run_write(self, kind: str, run: int) -> None:
        s, st = self.s, self.store
        bound = 60 + s.seq / (2 * MIB)
        keys = {c: f"w-{kind}-{run}-{i}.bin" for i, c in enumerate(self.conditions("write"))}

        def writes(m: ActiveMount) -> None:
            for condition, key in keys.items():
                with self.load(condition):
                    self.on_mount(m, "write", condition, bound,
                                  lambda: wl.seq_write(m.path / key, s.seq, self.block, st, key, bound))
        self.session(kind, [("write", c) for c in keys], writes)
        wl.delete_quietly(st, *keys.values())

    def run_small_files(self, kind: str, run: int) -> None:
        s = self.s
        bound = 60 + s.files * 0.5
        rows = ("create", "create_close", "create_cpu")
        # s3fs has no write-back delay: one mount serves both delay conditions (the same runs in both).
        delays_list = ["0"] if kind == "s3fs" else list(DELAYS)
        for delays in delays_list:
            conds = [(shell, listing) for shell in SHELLS for listing in (True, False)]

            def body(m: ActiveMount) -> None:
                for shell, listing in conds:
                    condition = small_condition(shell, listing, delays)
                    prefix = f"c-{kind}-{run}-{delays}-{shell}-{int(listing)}/"
                    lister = (lambda p=prefix: OtherClient(self.backend.section, self.backend.bucket, "list-until",
                                                           p, s.files, s.file_size, bound)) if listing else None
                    result: list[wl.SmallFiles] = []

                    def create(p: str = prefix, sh: str = shell, ls=lister) -> float:
                        result.append(wl.small_files(m.path / p.rstrip("/"), sh, s.files, s.file_size, m.pid,
                                                     self.store, p, ls, bound))
                        return result[0].durable
                    self.on_mount(m, "create", condition, bound + 30, create)
                    targets = [condition] + ([small_condition(shell, listing, "default")] if kind == "s3fs" else [])
                    for target in targets:
                        if result:
                            if target != condition:
                                self.results.add("create", target, kind, result[0].durable)
                            self.results.add("create_close", target, kind, result[0].closed)
                            self.results.add("create_cpu", target, kind, result[0].cpu_ms)
                            log(f"{kind:15} create       {target}: close {result[0].closed:,.1f} files/s, "
                                f"CPU {result[0].cpu_ms:.2f} ms/file")
                        else:
                            for row in rows:
                                if target != condition or row != "create":
                                    self.results.fail(row, target, kind, "the create run failed")
            flags = delay_flags(delays)[kind] + self.user[kind]
            cells = [(r, small_condition(sh, ls, d)) for r in rows for sh, ls in conds
                     for d in (DELAYS if kind == "s3fs" else [delays])]
            self.session(kind, cells, body, flags=flags)

    def run_seq_reads(self, kind: str, run: int) -> None:
        s = self.s
        bound = 60 + s.seq / (2 * MIB)
        for condition in self.conditions("read_cold"):
            for repeat in range(s.cold_reads):
                rows = ["read_cold"] + (["read_warm"] if repeat == 0 else [])

                def reads(m: ActiveMount, rows: list[str] = rows) -> None:
                    with self.load(condition):
                        self.drop()
                        for row in rows:
                            self.on_mount(m, row, condition, bound,
                                          lambda: wl.seq_read(m.path / "data" / "seq.bin", s.seq))
                self.session(kind, [(r, condition) for r in rows], reads)

    def run_random_reads(self, kind: str, run: int) -> None:
        s = self.s
        rows = ("rand_cold", "rand_traffic", "rand_warm")
        for seconds in (s.fio_short, s.fio_long):
            condition = fio_condition(seconds)
            if not shutil.which("fio"):
                for row in rows:
                    self.results.fail(row, condition, kind, "fio is not installed (apt-get install fio)")
                continue
            with self.relayed() as (relay, backend):
                def random_reads(m: ActiveMount) -> None:
                    self.drop()
                    before = relay.counts()[0] if relay else 0
                    ok = self.on_mount(m, "rand_cold", condition, seconds + 200,
                                       lambda: wl.fio_randread(m.path / "data" / "seq.bin", s.seq, seconds,
                                                               self.workdir))
                    self._traffic(relay, before, condition, kind, ok is not None)
                    self.on_mount(m, "rand_warm", condition, s.fio_warm + 200,
                                  lambda: wl.fio_randread(m.path / "data" / "seq.bin", s.seq, s.fio_warm,
                                                          self.workdir))
                self.session(kind, [(r, condition) for r in rows], random_reads, backend=backend)

    def run_ls(self, kind: str, run: int) -> None:
        s = self.s
        bound = 60 + s.ls_objects * 0.05
        for condition in self.conditions("ls_cold"):
            def listing(m: ActiveMount) -> None:
                with self.load(condition):
                    self.drop()
                    for row in ("ls_cold", "ls_warm"):
                        self.on_mount(m, row, condition, bound + 10,
                                      lambda: wl.ls_long(m.path / "lsdir", s.ls_objects, bound))
            self.session(kind, [("ls_cold", condition), ("ls_warm", condition)], listing)

    def big_copy(self, kinds: list[str]) -> None:
        s, st = self.s, self.store
        bound = 60 + s.big / (4 * MIB)
        alone, reading = self.conditions("copy_big")
        for condition in (alone, reading):
            with self.load(condition):
                self.measure("copy_big", condition, "raw",
                             lambda: wl.raw_write(st, "raw/big.bin", self.big_source, s.big))
            wl.delete_quietly(st, "raw/big.bin")
        # Every mount copies twice: alone in the listed order, then while another client reads the
        # bucket in the reverse order (with one order only, every mount met the backend as the copy
        # before it had left it, and the order alone moved this row by 10-20%).
        for condition, order in ((alone, kinds), (reading, kinds[::-1])):
            for kind in order:
                # Each copy writes the file to the backend's disk (and to the mount's staging or cache):
                # flushed first, so that no mount copies while the previous one's dirty pages are written.
                os.sync()
                with self.load(condition):
                    self.session(kind, [("copy_big", condition), ("rss", condition)],
                                 lambda m: self._copy_rss(m, condition, bound))
                wl.delete_quietly(st, f"big-{kind}.bin")
        self.results.na_all("rss", "raw", "no mount process")

    def _copy_rss(self, m: ActiveMount, condition: str, bound: float) -> None:
        s, key = self.s, f"big-{m.kind}.bin"
        rss: list[float] = []

        def run() -> float:
            speed, peak = wl.copy_in_rss(self.big_source, m.path / key, s.big, m.pid, self.store, key, bound)
            rss.append(peak)
            return speed
        self.on_mount(m, "copy_big", condition, bound + 30, run)
        self._done.add(("rss", condition))
        if rss:
            self.results.add("rss", condition, m.kind, rss[0])
            log(f"{m.kind:15} rss          {condition}: {rss[0]:,.0f} MiB")
        else:
            self.results.fail("rss", condition, m.kind, "the copy failed")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes and one run (~4 minutes), a smoke test")
    p.add_argument("--backend", choices=("seaweed", "seaweed-tls", "wcs"), default="seaweed",
                   help="seaweed-tls: the same SeaweedFS over HTTPS (a CA of its own), as most users reach S3")
    p.add_argument("--mounts", default=",".join(MOUNTS),
                   help=f"comma-separated subset of {','.join(MOUNTS)} (storefs = both storefs bindings)")
    p.add_argument("--rows", default=",".join(GROUPS), help=f"comma-separated subset of {','.join(GROUPS)}")
    p.add_argument("--runs", type=int, help="runs per workload, median shown (default 2; --quick: 1)")
    p.add_argument("--output", metavar="FILE",
                   help="also write the tables to FILE, and the chart (SVG) next to it as FILE's stem + .svg")
    p.add_argument("--seq-mib", type=int, help="sequential/random file size (default 256; --quick: 64)")
    p.add_argument("--files", type=int, help="small files created per condition (default 1000; --quick: 100)")
    p.add_argument("--ls-objects", type=int, help="objects in the listed directory (default 5000; --quick: 1000)")
    p.add_argument("--big-mib", type=int, help="file copied in for the RSS row (default 2048; --quick: 256)")
    p.add_argument("--fio-runtime", type=float, nargs=2, metavar=("SHORT", "LONG"),
                   help="seconds of the two cold fio runs (default 8 15; --quick: 3 6)")
    p.add_argument("--cold-reads", type=int, help="cold sequential reads per run and condition (default 2; --quick: 1)")
    p.add_argument("--storefs-opt", action="append", default=[], metavar="OPT", help="extra storefs -o option")
    p.add_argument("--rclone-arg", action="append", default=[], metavar="ARG", help="extra rclone mount flag")
    p.add_argument("--s3fs-opt", action="append", default=[], metavar="OPT", help="extra s3fs -o option")
    p.add_argument("--keep-write-back-delays", action="store_true",
                   help="rows other than small files: leave rclone's --vfs-write-back and storefs's write_back "
                        "at their defaults (not 0); the small-file rows always measure both")
    p.add_argument("--no-netns", action="store_true", help="do not re-run in a private network namespace")
    args = p.parse_args(argv)
    args.mounts = [m.strip() for m in args.mounts.split(",") if m.strip()]
    args.mounts = list(dict.fromkeys(k for m in args.mounts for k in (STOREFS_KINDS if m == "storefs" else [m])))
    unknown = set(args.mounts) - set(MOUNTS)
    if unknown or not args.mounts:
        p.error(f"--mounts: pick from {', '.join(MOUNTS)}")
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    if set(args.rows) - set(GROUPS) or not args.rows:
        p.error(f"--rows: pick from {', '.join(GROUPS)}")
    for name in ("runs", "cold_reads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def settings_of(args: argparse.Namespace) -> Settings:
    q = args.quick

    def pick(value, default, quick):
        return value if value is not None else (quick if q else default)
    short, long = pick(args.fio_runtime, (8.0, 15.0), (3.0, 6.0))
    return Settings(runs=pick(args.runs, 2, 1), seq=pick(args.seq_mib, 256, 64) * MIB,
                    files=pick(args.files, 1000, 100), file_size=4096,
                    ls_objects=pick(args.ls_objects, 5000, 1000), big=pick(args.big_mib, 2048, 256) * MIB,
                    fio_short=short, fio_long=long, fio_warm=3.0 if q else 5.0,
                    cold_reads=pick(args.cold_reads, 2, 1))


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


def columns_of(args: argparse.Namespace) -> tuple[tuple[str, ...], str, tuple[str, str] | None]:
    """(table columns, the storefs column the ratios are about, the two bindings compared or None)."""
    columns = tuple(["raw"] + args.mounts)
    kinds = [k for k in STOREFS_KINDS if k in columns]
    main_kind = STOREFS_DEFAULT if STOREFS_DEFAULT in kinds else (kinds[0] if kinds else STOREFS_DEFAULT)
    return columns, main_kind, ((kinds[0], kinds[1]) if len(kinds) == 2 else None)


def build_report(bench: Bench, args: argparse.Namespace, started: float, netns: bool, stamp: str,
                 chart: str | None) -> str:
    s = bench.s
    versions = tool_versions()
    columns, main_kind, versus = columns_of(args)
    wall = time.monotonic() - started
    bindings = ", ".join(STOREFS_KINDS[k] for k in STOREFS_KINDS if k in columns)
    title = f"storefs ({bindings}) vs rclone mount vs s3fs-fuse on {bench.backend.version} (127.0.0.1)"
    header = [f"## {title}", "",
              f"{stamp} · {machine()} · median of {s.runs} run(s) · "
              f"wall time {wall // 60:.0f} min {wall % 60:.0f} s" + (" · --quick" if args.quick else ""),
              " · ".join(versions[k] for k in ("storefs", "rclone", "s3fs", "fio"))]
    flags0, flags_default = delay_flags("0"), delay_flags("default")
    every = set(GROUPS)
    tagged: list[tuple[set[str], str]] = [
        (every, "Each workload group runs on a fresh mount with a fresh cache directory. Cold: fresh mount, page cache "
        "dropped (/proc/sys/vm/drop_caches); warm: the same again on that mount." +
        ("" if bench.cold_ok else " **The page cache could NOT be dropped: cold rows are not cold.**")),
        (every, "storefs mount -o fuse=BINDING" + "".join(f",{o}" for o in bench.extra[STOREFS_DEFAULT])
        + f"; other options default. storefs-mfusepy: mfusepy on libfuse 3 (1 MiB write and 1008 KiB read requests, reads answered through a pipe); "
          f"storefs-fusepy: fusepy on libfuse 2 (128 KiB). Default binding: {STOREFS_DEFAULT}."),
        (every, f"rclone mount {' '.join(bench.extra['rclone'])} --cache-dir DIR; other flags default."),
        (every, f"s3fs -o {','.join(S3FS_FLAGS + ['use_cache=DIR'] + args.s3fs_opt)}; other options default."),
        (every - {"small-files"}, ("Rows other than small files: write-back delays left at their defaults (rclone 5 s; storefs write_back)."
         if args.keep_write_back_delays else
         "Rows other than small files: write-back delays set to 0 (rclone --vfs-write-back 0s; storefs "
         "write_back=0) so that 'until durable' measures transfers, not timers.")),
        ({"small-files"}, f"Small files: {s.files:,} files of {s.file_size:,} bytes per condition, made by a bash loop (`for i in "
        f"$(seq 1 N); do printf '%{s.file_size}s' x > f$i; done`, one shell process) or a Python process "
        "(open/write/close, unbuffered). Durable = the raw client's listing (ListObjectsV2) shows them all with "
        "their size: with 'another client listing', a separate process lists the prefix in a loop from before "
        "the first file until all are there (bounded in count and time) and its clock decides; with 'no other "
        "client', the listing starts after the last close. Close rate: until the loop's process ended. CPU: "
        "utime+stime of the mount process (/proc/PID/stat) from the start to the durable point, per file. "
        f"'write-back 0' = storefs {' '.join(flags0[STOREFS_DEFAULT]) or '(no write_back option)'}, rclone "
        f"{' '.join(flags0['rclone'])}; 'write-back default' = storefs without write_back (default {MountOptions.write_back:g} s), rclone "
        f"{' '.join(flags_default['rclone'])} (5 s). s3fs uploads at close and has no such delay: one mount per "
        "run serves both, so its cells in the two write-back conditions are the same runs. raw: PUTs one at a "
        "time, durable when each returns; measured once per run with and once without the listing client, and "
        "that value stands in each shell/write-back condition."),
        ({"write", "seq-reads"}, "Sequential: 1 MiB write()/read() calls from Python; durable = the object is in the backend with its "
        f"size (polled with the raw client). Cold reads: {s.cold_reads} fresh mount(s) per run and condition, "
        "median (min–max) shown. 'another client writing': a separate process PUTs 4 KiB objects elsewhere in "
        f"the bucket in a loop; 'another client reading': a separate process reads the {_size(s.seq)} object in "
        "1 MiB ranged GETs in a loop."),
        ({"random-reads"}, f"Random: fio --rw=randread --bs=4k --ioengine=psync --direct=0 --numjobs=1 --time_based --runtime=T on "
        f"the {_size(s.seq)} object, cold (fresh mount, page cache dropped) for T = {s.fio_short:g} s and T = "
        f"{s.fio_long:g} s, each on its own mount, then warm: {s.fio_warm:g} s more on that mount (same offsets, "
        "randrepeat). These mounts (and the raw client) reach the server through a counting TCP relay on "
        "127.0.0.1; the traffic row is the bytes the server sent during the cold run (HTTP headers and bodies) "
        "divided by the object size. raw: 4 KiB ranged GETs one at a time."),
        ({"ls", "copy-in"}, "ls: the listed objects were made by the raw client (no user metadata); raw = LIST pages. Copy-in = `cp` "
        "of a local file (in page cache), once per mount alone (in the listed order) and once while another "
        "client reads the bucket (in the reverse order); RSS = VmHWM of a fresh mount process."),
        (every, "Network: " + ("a private network namespace with only loopback; nothing but 127.0.0.1 was reachable."
                       if netns else "the host's network; every endpoint was 127.0.0.1.")),
    ]
    settings = [text for groups, text in tagged if groups & set(bench.groups)]
    return render(bench.results, header, settings, columns, storefs=main_kind, versus=versus, chart=chart)


def chart_path(output: str | None) -> Path | None:
    return Path(output).with_suffix(".svg") if output else None


def run_all(bench: Bench, args: argparse.Namespace, settings: Settings) -> None:
    runnable = []
    for kind in args.mounts:
        why = "peers speak S3 only" if kind in PEERS and bench.backend.s3 is None else None
        missing = missing_tool(kind)
        for row in bench.results.rows:
            if why:
                bench.results.na_all(row.key, kind, why)
            elif missing:
                bench.results.fail_all(row.key, kind, missing)
        if not why and not missing:
            runnable.append(kind)
    bench.prepare()
    for run in range(settings.runs):
        log(f"--- run {run + 1} of {settings.runs}")
        bench.raw_run(run)
        for kind in runnable:
            bench.mount_run(kind, run)
    if "copy-in" in bench.groups:
        log("--- large copy-in and peak RSS")
        bench.big_copy(runnable)


def finish(bench: Bench, args: argparse.Namespace, started: float, netns: bool, chart: Path | None,
           partial: bool) -> str:
    """The chart (when there is an --output) and the report."""
    stamp = time.strftime("%Y-%m-%d %H:%M %Z")
    if chart is not None:
        columns, main_kind, _ = columns_of(args)
        try:
            write_chart(chart, bench.results, columns, main_kind,
                        f"storefs vs peers, each row in its worst condition · {stamp} · {machine()}")
        except ImportError as exc:
            log(f"no chart: {exc} (pip install matplotlib, or bash scripts/install.sh bench)")
            chart = None
    report = build_report(bench, args, started, netns, stamp, chart.name if chart else None)
    if partial:
        report = "**Interrupted: a partial run; cells not reached show fail or —.**\n\n" + report
    return report


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
    chart = chart_path(args.output)
    code = 0
    try:
        with tempfile.TemporaryDirectory(prefix="storefs-peers-", ignore_cleanup_errors=True) as tmp, \
                start_backend(args.backend, Path(tmp)) as backend:
            try:
                bench = Bench(args, settings, backend, Path(tmp))
                log(f"backend {backend.version}, bucket {backend.bucket}; mounts {', '.join(args.mounts)}; "
                    f"rows {', '.join(bench.groups)}")
                try:
                    run_all(bench, args, settings)
                except KeyboardInterrupt:
                    # What was measured so far is still worth its table (marked as partial).
                    log("interrupted: writing the tables of what was measured")
                    code = 130
                report = finish(bench, args, started, netns, chart, partial=code != 0)
            finally:
                close_all()
                unmount_under(Path(tmp))
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
        log(f"tables written to {args.output}" + (f", chart to {chart}" if chart else ""))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
