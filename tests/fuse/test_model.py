"""Model-based test (issue #6): random operations on a real storefs mount and on a plain local directory
(the model), compared after every step.

A hypothesis `RuleBasedStateMachine` creates, writes (at offsets, past EOF, across 1 MiB cache blocks),
truncates, renames (files and directories, onto existing targets), makes and removes directories,
unlinks, chmods, sets times, fsyncs, keeps files open across steps (sometimes O_APPEND), remounts, and
lets "another client" put and delete objects behind the mount's back. Every call is made on both
sides; a failing call must fail with the same errno. After every step the trees are compared: names,
types, sizes, contents, permission bits, mtimes set with utimens, and that no mtime moves unless the
model's moved; open handles are compared by fstat.

Each test mounts its backend twice, once per cache mode, and every example works in a fresh
directory `exN` of one of them:
- `fresh`: attr/dir/neg TTL 0, so another client's change shows once the kernel's 1 s entry/attribute
  cache has passed (SEMANTICS.md, Consistency: "after the TTL the next access sees it"); the check
  after such a change waits for that with a bounded condition loop.
- `cached`: TTLs of 300 s, so the mount answers from its own caches and they must stay right after its
  own changes. Another client's changes are not made here (they would show only after the TTL).

Documented deviations from POSIX are part of the model; each is marked `SEMANTICS:` with the sentence
it rests on. Anything else that differs is a bug.

CI runs a bounded, derandomized number of examples. By hand:
    STOREFS_MODEL_EXAMPLES=500 STOREFS_MODEL_STEPS=50 .venv/bin/pytest tests/fuse/test_model.py -x
(STOREFS_MODEL_RANDOM=1 draws new examples instead of the fixed ones.)
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import itertools
import os
import random
import stat
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from storefs.store.registry import provider_module
from storefs.status import flush_request_path, read_status
from tests.fuse.harness import Backend, Env, Mount, make_backend

EXAMPLES = int(os.environ.get("STOREFS_MODEL_EXAMPLES", "20"))
STEPS = int(os.environ.get("STOREFS_MODEL_STEPS", "30"))
RANDOM = os.environ.get("STOREFS_MODEL_RANDOM") == "1"
FUSE = os.environ.get("STOREFS_MODEL_FUSE")  # -o fuse=NAME (default: the mount's default binding)

BLOCK = 1 << 20          # the read cache's block size: some writes cross it
NAMES = ("a", "b", "c")  # few names, so that operations collide often
PERMS = (0o644, 0o600, 0o755, 0o640, 0o444, 0o700)
MAX_OPEN = 4
TTLS = {"fresh": "attr_ttl=0,dir_ttl=0,neg_ttl=0", "cached": "attr_ttl=300,dir_ttl=300,neg_ttl=300"}
# utimens sets times from this far-past range; a model mtime inside it was set by utimens (never "now").
UTIME_BASE = 1_400_000_000 * 10**9
UTIME_SPAN = 10**17
REMOTE_WAIT = 15.0       # bounded wait for another client's change to show (TTL 0 + the kernel's 1 s)

OPEN_FLAGS = [
    os.O_RDONLY,
    os.O_RDWR,
    os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    os.O_RDWR | os.O_CREAT,
    os.O_WRONLY | os.O_APPEND,
    os.O_RDWR | os.O_APPEND | os.O_CREAT,
    os.O_WRONLY | os.O_CREAT | os.O_EXCL,
    os.O_RDWR | os.O_TRUNC,
]

Outcome = tuple  # ("ok", value) or ("err", "ENOENT")


def outcome(fn: Callable[[], Any]) -> Outcome:
    try:
        return ("ok", fn())
    except OSError as exc:
        return ("err", errno.errorcode.get(exc.errno, str(exc.errno)))


def show(result: Outcome) -> str:
    kind, value = result
    if kind == "ok" and isinstance(value, bytes) and len(value) > 40:
        return f"ok({len(value)} bytes, sha1 {hashlib.sha1(value).hexdigest()[:10]})"
    return f"{kind}({value!r})"


def payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


# -- strategies ------------------------------------------------------------------------------------

names = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
sizes = st.one_of(st.integers(1, 4096), st.integers(1, 256 * 1024),
                  st.sampled_from([BLOCK - 1, BLOCK, BLOCK + 4097]))
small_sizes = st.one_of(st.integers(1, 300), st.integers(1, 70_000))
offsets = st.one_of(st.integers(0, 4096), st.integers(0, 256 * 1024), st.sampled_from(["end", "past_end"]),
                    st.integers(BLOCK - 9000, BLOCK + 100))
lengths = st.one_of(st.integers(0, 5000), st.integers(0, 300_000), st.integers(BLOCK - 5, BLOCK + 5))
utimes = st.one_of(st.integers(0, 10**8).map(lambda s: UTIME_BASE + s * 10**9),          # whole seconds
                   st.integers(0, UTIME_SPAN - 1).map(lambda ns: UTIME_BASE + ns))


# -- the shared world: mounts that live for a whole test, many examples each ------------------------

@dataclasses.dataclass
class World:
    env: Env
    backend: Backend
    base: Path                       # model roots live below
    mounts: dict[str, Mount]
    store: Any                       # "another client": the provider used directly
    provider: Any
    implicit_dirs_vanish: bool       # S3-like: a directory without marker goes with its last key
    counter: itertools.count = dataclasses.field(default_factory=itertools.count)
    examples: int = 0
    steps: int = 0
    remounts: int = 0
    remote_changes: int = 0

    def mount(self, mode: str) -> Mount:
        mountpoint = self.env.tmp / f"mnt-{mode}"
        mount = self.env.mount(f"r:{self.backend.bucket}/{mode}", mountpoint=mountpoint,
                               options=(TTLS[mode],) + ((f"fuse={FUSE}",) if FUSE else ()))
        self.mounts[mode] = mount
        return mount

    def remount(self, mode: str) -> None:
        result = self.mounts[mode].unmount()
        assert result.returncode == 0, f"unmount failed: {result.stderr}\n{self.env.log_tail()}"
        self.mount(mode)
        self.remounts += 1

    def settle(self, mode: str, path: str) -> None:
        """Upload `path` (a mount path) now if it is waiting for its upload, and wait until it is done, so
        that another client's change to it comes after ours (else "the last upload wins").

        What `storefs flush` does, but in this process and for one path: a subprocess would inherit
        the open files (fork), and its exec closes them, which the mount sees as close (FUSE flush)
        of files still open here; and `storefs flush` waits for every file, also those still open
        for writing (see the report of issue #6: it then waits until its timeout)."""
        mountpoint = str(self.mounts[mode].path)
        runtime = Path(self.env.vars["XDG_RUNTIME_DIR"]) / "storefs"
        request = flush_request_path(runtime, mountpoint)
        request.touch()
        deadline = time.monotonic() + 60
        while True:
            report = read_status(runtime, mountpoint)
            if report is not None and not request.exists():
                if all(item["path"] != path for item in report.get("pending", [])):
                    return
            assert time.monotonic() < deadline, f"{path} still not uploaded after 60s: {report}"
            time.sleep(0.05)


def open_client(backend: Backend) -> tuple[Any, Any]:
    section = dict(backend.section)
    module = provider_module(section.pop("type"))
    options = {k: v for k, v in module.SPEC.optional.items() if v != ""}
    options.update(section)
    provider = module.open_provider("other-client", options)
    return provider, provider.bucket(backend.bucket)


@dataclasses.dataclass
class Pair:
    """One file open on both sides."""
    model_fd: int
    real_fd: int
    flags: int
    path: str   # where it was opened (the file may have moved since)

    @property
    def readable(self) -> bool:
        return self.flags & os.O_ACCMODE in (os.O_RDONLY, os.O_RDWR)


# -- the machine -----------------------------------------------------------------------------------

def make_machine(world: World) -> type[RuleBasedStateMachine]:
    class StoreFSModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.handles: list[Pair] = []
            # Directories created by another client's put: they carry no attributes of their own.
            self.bare: set[str] = set()
            # ... and of those, the ones with no marker at all (vanish with their last entry).
            self.implicit: set[str] = set()
            # Files another client put, without storefs's attributes: they show the server's time.
            self.foreign: set[str] = set()
            # rel -> (model mtime, real mtime) at the last check: a real mtime must not move while the
            # model's stays (remount, rename, chmod, upload after close, ...).
            self.mtimes: dict[str, tuple[int, int]] = {}
            self.mode = "cached"
            self.name = ""
            self.remounts = 0
            self.expect_mtime: tuple[str, int] | None = None

        # -- paths ----------------------------------------------------------------------------------

        @property
        def model(self) -> Path:
            return world.base / self.mode / self.name

        @property
        def real(self) -> Path:
            return world.mounts[self.mode].path / self.name

        def key(self, rel: str) -> str:
            return f"{self.mode}/{self.name}/{rel}"

        def existing(self) -> list[str]:
            found = []
            for dirpath, dirnames, filenames in os.walk(self.model):
                for name in dirnames + filenames:
                    found.append(str((Path(dirpath) / name).relative_to(self.model)))
            return sorted(found)

        def pick(self, data: st.DataObject, label: str) -> str:
            """A path: usually one that exists, sometimes any from the small alphabet."""
            known = self.existing()
            if known and data.draw(st.booleans(), label=f"{label} exists?"):
                return data.draw(st.sampled_from(known), label=label)
            return data.draw(names, label=label)

        def pick_handle(self, data: st.DataObject) -> Pair:
            return self.handles[data.draw(st.integers(0, len(self.handles) - 1), label="handle")]

        def open_paths(self) -> set[str]:
            """Model paths of files that are open (by inode), to keep another client away from them."""
            inodes = {os.fstat(h.model_fd).st_ino for h in self.handles}
            found = set()
            for rel in self.existing():
                try:
                    if os.lstat(self.model / rel).st_ino in inodes:
                        found.add(rel)
                except FileNotFoundError:
                    pass
            return found

        # -- running one operation on both sides ------------------------------------------------

        def both(self, what: str, fn: Callable[[Path], Any],
                 expect: Callable[[Outcome], Outcome] | None = None) -> Outcome:
            model = outcome(lambda: fn(self.model))
            real = outcome(lambda: fn(self.real))
            if expect is not None:
                model = expect(model)
            assert model == real, f"{what}: model {show(model)}, storefs {show(real)}"
            return model

        def both_fd(self, what: str, pair: Pair, fn: Callable[[int], Any],
                    accept: Callable[[Outcome, Outcome], bool] | None = None) -> Outcome:
            model = outcome(lambda: fn(pair.model_fd))
            real = outcome(lambda: fn(pair.real_fd))
            if model != real and not (accept and accept(model, real)):
                raise AssertionError(f"{what} (handle opened on {pair.path!r} flags {pair.flags:#o}): "
                                     f"model {show(model)}, storefs {show(real)}")
            return real

        # -- setup ----------------------------------------------------------------------------------

        @initialize(mode=st.sampled_from(["cached", "fresh"]))
        def start(self, mode: str) -> None:
            self.mode = mode
            self.name = f"ex{next(world.counter)}"
            world.examples += 1
            self.model.mkdir(parents=True)
            os.mkdir(self.real)

        def teardown(self) -> None:
            self.close_all()

        def close_all(self) -> None:
            for pair in self.handles:
                for fd in (pair.model_fd, pair.real_fd):
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self.handles.clear()

        # -- open files -----------------------------------------------------------------------------

        @precondition(lambda self: len(self.handles) < MAX_OPEN)
        @rule(data=st.data(), flags=st.sampled_from(OPEN_FLAGS), perm=st.sampled_from(PERMS))
        def open_file(self, data: st.DataObject, flags: int, perm: int) -> None:
            rel = self.pick(data, "path")
            model = outcome(lambda: os.open(self.model / rel, flags, perm))
            real = outcome(lambda: os.open(self.real / rel, flags, perm))
            if model[0] == real[0] == "ok":
                self.handles.append(Pair(model[1], real[1], flags, rel))
                if flags & os.O_ACCMODE != os.O_RDONLY:
                    self.now_has_marker(rel)
                return
            for kind, fd in (model, real):
                if kind == "ok":
                    os.close(fd)
            assert model == real, f"open({rel!r}, {flags:#o}): model {show(model)}, storefs {show(real)}"

        @precondition(lambda self: self.handles)
        @rule(data=st.data(), offset=offsets, size=small_sizes, seed=st.integers(0, 2**16))
        def pwrite(self, data: st.DataObject, offset: int | str, size: int, seed: int) -> None:
            pair = self.pick_handle(data)
            length = os.fstat(pair.model_fd).st_size
            if offset == "end":
                offset = length
            elif offset == "past_end":
                offset = length + 5000
            body = payload(seed, size)
            # O_APPEND: Linux's pwrite appends whatever the offset; storefs must too.
            self.both_fd(f"pwrite({offset}, {size})", pair, lambda fd: os.pwrite(fd, body, offset))

        @precondition(lambda self: self.handles)
        @rule(data=st.data(), offset=offsets, size=st.integers(1, 300_000))
        def pread(self, data: st.DataObject, offset: int | str, size: int) -> None:
            pair = self.pick_handle(data)
            length = os.fstat(pair.model_fd).st_size
            offset = length if offset == "end" else length + 10 if offset == "past_end" else offset
            self.both_fd(f"pread({offset}, {size})", pair, lambda fd: os.pread(fd, size, offset),
                         accept=self.stale_read_ok(pair))

        def stale_read_ok(self, pair: Pair) -> Callable[[Outcome, Outcome], bool]:
            def accept(model: Outcome, real: Outcome) -> bool:
                # SEMANTICS (Reading): "Every GET carries the ETag seen at open: if the object changes
                # under an open reader, the read fails with ESTALE rather than mixing two versions."
                # POSIX keeps an unlinked or replaced file readable; storefs may say ESTALE instead.
                return os.fstat(pair.model_fd).st_nlink == 0 and real == ("err", "ESTALE")
            return accept

        @precondition(lambda self: self.handles)
        @rule(data=st.data(), length=lengths)
        def ftruncate(self, data: st.DataObject, length: int) -> None:
            pair = self.pick_handle(data)
            self.both_fd(f"ftruncate({length})", pair, lambda fd: os.ftruncate(fd, length))

        @precondition(lambda self: self.handles)
        @rule(data=st.data())
        def fsync(self, data: st.DataObject) -> None:
            pair = self.pick_handle(data)
            self.both_fd("fsync", pair, os.fsync)

        @precondition(lambda self: self.handles)
        @rule(data=st.data())
        def close(self, data: st.DataObject) -> None:
            pair = self.pick_handle(data)
            self.handles.remove(pair)
            model = outcome(lambda: os.close(pair.model_fd))
            real = outcome(lambda: os.close(pair.real_fd))
            assert model == real, f"close: model {show(model)}, storefs {show(real)}"

        # -- whole-path operations -------------------------------------------------------------------

        @rule(data=st.data(), size=sizes, seed=st.integers(0, 2**16))
        def write_file(self, data: st.DataObject, size: int, seed: int) -> None:
            """open(O_CREAT|O_TRUNC), one write, close: what most programs do."""
            rel = self.pick(data, "path")
            body = payload(seed, size)

            def write(root: Path) -> int:
                fd = os.open(root / rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    return os.write(fd, body)
                finally:
                    os.close(fd)
            if self.both(f"write_file({rel!r}, {size})", write)[0] == "ok":
                self.now_has_marker(rel)

        @rule(data=st.data(), length=lengths)
        def truncate(self, data: st.DataObject, length: int) -> None:
            rel = self.pick(data, "path")
            if self.both(f"truncate({rel!r}, {length})", lambda root: os.truncate(root / rel, length))[0] == "ok":
                self.now_has_marker(rel)

        @rule(data=st.data(), perm=st.sampled_from(PERMS))
        def mkdir(self, data: st.DataObject, perm: int) -> None:
            rel = self.pick(data, "path")
            self.both(f"mkdir({rel!r})", lambda root: os.mkdir(root / rel, perm))

        @rule(data=st.data())
        def rmdir(self, data: st.DataObject) -> None:
            rel = self.pick(data, "path")
            if self.both(f"rmdir({rel!r})", lambda root: os.rmdir(root / rel))[0] == "ok":
                self.forget(rel)

        @rule(data=st.data())
        def unlink(self, data: st.DataObject) -> None:
            rel = self.pick(data, "path")
            if self.both(f"unlink({rel!r})", lambda root: os.unlink(root / rel))[0] == "ok":
                self.forget(rel)

        @rule(data=st.data())
        def rename(self, data: st.DataObject) -> None:
            src, dst = self.pick(data, "src"), self.pick(data, "dst")
            was_dir = (self.model / src).is_dir() and not (self.model / src).is_symlink()
            if self.both(f"rename({src!r}, {dst!r})", lambda root: os.rename(root / src, root / dst))[0] != "ok":
                return
            if src == dst:
                return
            self.forget(dst)
            self.move_records(src, dst)
            for moved in [p for p in self.foreign if p == dst or p.startswith(dst + "/")]:
                # SEMANTICS (Attributes): objects without stored attributes show "the server's
                # last-modified time", and (Rename) a move is a copy where the protocol has no
                # move, or for every file of a directory: a new object, with a new time.
                self.mtimes.pop(moved, None)
            if was_dir and src in self.implicit:
                # SEMANTICS (Objects): a prefix without marker is a directory; rename writes the new
                # name's marker ("an implicit directory: the new name gets a marker"), so it now has
                # attributes of its own and stays when emptied.
                self.implicit.discard(dst)
                self.bare.discard(dst)
                self.mtimes.pop(dst, None)

        @rule(data=st.data())
        def link(self, data: st.DataObject) -> None:
            src, dst = self.pick(data, "src"), self.pick(data, "dst")

            def expect(model: Outcome) -> Outcome:
                if model[0] == "ok":
                    os.unlink(self.model / dst)
                    # SEMANTICS (Refusals): "`link` (hard links) | `EPERM` | not supported by object stores"
                    return ("err", "EPERM")
                return model
            self.both(f"link({src!r}, {dst!r})", lambda root: os.link(root / src, root / dst), expect)

        @rule(data=st.data(), perm=st.sampled_from(PERMS))
        def chmod(self, data: st.DataObject, perm: int) -> None:
            rel = self.pick(data, "path")
            if self.both(f"chmod({rel!r}, {perm:o})", lambda root: os.chmod(root / rel, perm))[0] == "ok":
                self.now_has_marker(rel)

        @rule(data=st.data(), mtime=utimes, atime=utimes)
        def utime(self, data: st.DataObject, mtime: int, atime: int) -> None:
            rel = self.pick(data, "path")
            # atime is stored; the model's reads move it (relatime), so check_tree compares it right after.
            if self.both(f"utime({rel!r}, {mtime})", lambda root: os.utime(root / rel, ns=(atime, mtime)))[0] == "ok":
                self.now_has_marker(rel)

        def now_has_marker(self, rel: str) -> None:
            """`rel` was written, chmod-ed or given times through the mount: it carries attributes now."""
            self.foreign.discard(rel)
            # chmod/utimens of a directory write its marker with the attributes (filesystem._change_attrs).
            if (self.model / rel).is_dir():
                self.bare.discard(rel)
                self.implicit.discard(rel)
                self.mtimes.pop(rel, None)

        # -- remount ------------------------------------------------------------------------------------

        @precondition(lambda self: self.remounts < 1)  # the slowest step (~1.5 s): once per example
        @rule()
        def remount(self) -> None:
            # An unmount waits for open files in the kernel: close everything first (as a user must).
            self.close_all()
            self.remounts += 1
            world.remount(self.mode)

        # -- another client ---------------------------------------------------------------------------

        @precondition(lambda self: self.mode == "fresh")
        @rule(data=st.data(), size=sizes, seed=st.integers(0, 2**16))
        def remote_put(self, data: st.DataObject, size: int, seed: int) -> None:
            rel = self.pick(data, "path")
            target = self.model / rel
            parts = rel.split("/")
            ancestors = ["/".join(parts[:i]) for i in range(1, len(parts))]
            if (target.is_dir() or rel in self.open_paths()
                    or any((self.model / a).exists() and not (self.model / a).is_dir() for a in ancestors)):
                return  # keys a tree cannot show (`x` and `x/...`), or a conflict with a writer here
            world.settle(self.mode, f"/{self.name}/{rel}")
            body = payload(seed, size)
            world.store.put(self.key(rel), io.BytesIO(body), size, {})
            # The time the object shows, from a stat: a put's answer may carry a finer (COS: later, by
            # up to a second) time than the one the server then lists and stats (a CI run found this).
            info = world.store.stat(self.key(rel))
            world.remote_changes += 1
            for ancestor in ancestors:
                if not (self.model / ancestor).exists():
                    (self.model / ancestor).mkdir(0o755)
                    # SEMANTICS (Objects): "A prefix that has keys below it but no marker is a directory
                    # too (written by other tools); it disappears when its last key goes".
                    self.bare.add(ancestor)
                    if world.implicit_dirs_vanish:
                        self.implicit.add(ancestor)
            target.write_bytes(body)
            self.foreign.add(rel)
            # SEMANTICS (Attributes): "Objects without them show the mount's uid/gid ..., modes
            # 0666 & ~umask ..., and the server's last-modified time."
            target.chmod(0o644)
            self.mtimes.pop(rel, None)
            # The same bytes may be put again: the change is seen once the object's time shows.
            self.expect_mtime = (rel, int(info.mtime * 1_000_000_000))
            try:
                self.wait_until_seen(f"another client put {rel!r}")
            finally:
                self.expect_mtime = None

        @precondition(lambda self: self.mode == "fresh")
        @rule(data=st.data())
        def remote_delete(self, data: st.DataObject) -> None:
            rel = self.pick(data, "path")
            if not (self.model / rel).is_file() or rel in self.open_paths():
                return
            world.settle(self.mode, f"/{self.name}/{rel}")
            world.store.delete(self.key(rel))
            world.remote_changes += 1
            (self.model / rel).unlink()
            self.forget(rel)
            self.wait_until_seen(f"another client deleted {rel!r}")

        def wait_until_seen(self, what: str) -> None:
            # SEMANTICS (Consistency): "A change made by another client ... shows within those times
            # [attr/dir/neg TTL, here 0]; the kernel adds 1 s."
            self.prune_implicit()
            deadline = time.monotonic() + REMOTE_WAIT
            while True:
                try:
                    self.check_tree()
                    return
                except AssertionError as exc:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{what}: not seen after {REMOTE_WAIT}s: {exc}") from None
                    time.sleep(0.1)

        # -- bookkeeping --------------------------------------------------------------------------------

        def forget(self, rel: str) -> None:
            prefix = rel + "/"
            for known in [p for p in self.mtimes if p == rel or p.startswith(prefix)]:
                del self.mtimes[known]
            for group in (self.bare, self.implicit, self.foreign):
                for known in [p for p in group if p == rel or p.startswith(prefix)]:
                    group.discard(known)

        def move_records(self, src: str, dst: str) -> None:
            prefix = src + "/"

            def moved(path: str) -> str | None:
                if path == src:
                    return dst
                if path.startswith(prefix):
                    return dst + path[len(src):]
                return None
            self.mtimes = {moved(p) or p: v for p, v in self.mtimes.items()}
            self.bare = {moved(p) or p for p in self.bare}
            self.implicit = {moved(p) or p for p in self.implicit}
            self.foreign = {moved(p) or p for p in self.foreign}

        def prune_implicit(self) -> None:
            """SEMANTICS (Objects): a directory without marker "disappears when its last key goes"."""
            changed = True
            while changed:
                changed = False
                for rel in sorted(self.implicit, key=len, reverse=True):
                    path = self.model / rel
                    if path.is_dir() and not any(path.iterdir()):
                        path.rmdir()
                        self.forget(rel)
                        changed = True

        # -- the comparison after every step ------------------------------------------------------------

        @invariant()
        def agree(self) -> None:
            if not self.name:
                return
            world.steps += 1
            self.prune_implicit()
            self.check_tree()

        def check_tree(self) -> None:
            for rel in ALL_PATHS:
                # Lookups by name, not only listings: stale or wrong (negative) entries show here.
                m, r = lookup(self.model / rel), lookup(self.real / rel)
                assert m == r, f"lstat({rel!r}): model {m}, storefs {r}"
            # Access times set by utimens, before the snapshot's reads move the model's (relatime; storefs
            # is noatime, SEMANTICS.md).
            for rel in ALL_PATHS:
                with_model = outcome(lambda: os.lstat(self.model / rel).st_atime_ns)
                if with_model[0] == "ok" and UTIME_BASE <= with_model[1] < UTIME_BASE + UTIME_SPAN:
                    shown = os.lstat(self.real / rel).st_atime_ns
                    assert shown == with_model[1], f"{rel}: atime set by utimens {with_model[1]}, storefs {shown}"
            model, real = snapshot(self.model), snapshot(self.real)
            assert sorted(model) == sorted(real), f"trees differ: model {sorted(model)}, storefs {sorted(real)}"
            if self.expect_mtime is not None:
                rel, mtime = self.expect_mtime
                # Exact, or whole seconds where the server's listings and stats have no finer time than
                # that (COS answers a put with a finer one); else a second put within the same second
                # could pass for the first (found by a 500-example run).
                shown = real[rel][3]
                assert shown == mtime or (shown % 10**9 == 0 and shown // 10**9 == mtime // 10**9), (
                    f"{rel}: storefs shows mtime {shown}, the object's is {mtime}")
            if self.mode == "cached":
                # Directory link counts (2 + subdirectories) where the mount knows the listing: the
                # snapshot has just listed every directory. "fresh" keeps no listing (dir_ttl=0).
                for rel, entry in model.items():
                    if entry[0] == "dir":
                        m_links, r_links = os.lstat(self.model / rel).st_nlink, os.lstat(self.real / rel).st_nlink
                        assert m_links == r_links, f"{rel}: nlink model {m_links}, storefs {r_links}"
            records = {}
            for rel, (kind, perm, size, mtime, digest) in model.items():
                r_kind, r_perm, r_size, r_mtime, r_digest = real[rel]
                assert kind == r_kind, f"{rel}: model is a {kind}, storefs shows a {r_kind}"
                assert perm == r_perm, f"{rel}: mode model {perm:o}, storefs {r_perm:o}"
                if kind == "file":
                    assert size == r_size, f"{rel}: size model {size}, storefs {r_size}"
                    assert digest == r_digest, f"{rel}: contents differ ({size} bytes)"
                if UTIME_BASE <= mtime < UTIME_BASE + UTIME_SPAN:
                    assert mtime == r_mtime, f"{rel}: mtime set by utimens {mtime}, storefs shows {r_mtime}"
                if rel not in self.bare:
                    before = self.mtimes.get(rel)
                    if before is not None and before[0] == mtime:
                        assert before[1] == r_mtime, (f"{rel}: storefs mtime moved {before[1]} -> {r_mtime} "
                                                      f"while the model's stayed")
                    records[rel] = (mtime, r_mtime)
            self.mtimes = records
            for pair in self.handles:
                m = os.fstat(pair.model_fd)
                r = os.fstat(pair.real_fd)
                # Unlinked (or renamed over) while open: fstat works and says so (SEMANTICS.md).
                assert (m.st_nlink == 0) == (r.st_nlink == 0), (
                    f"handle opened on {pair.path!r}: model nlink {m.st_nlink}, storefs {r.st_nlink}")
                if stat.S_ISDIR(m.st_mode):
                    assert stat.S_ISDIR(r.st_mode), f"handle opened on {pair.path!r}: a directory in the model only"
                    continue
                assert (m.st_size, stat.S_IMODE(m.st_mode)) == (r.st_size, stat.S_IMODE(r.st_mode)), (
                    f"fstat of handle opened on {pair.path!r}: model size {m.st_size} mode "
                    f"{stat.S_IMODE(m.st_mode):o}, storefs size {r.st_size} mode {stat.S_IMODE(r.st_mode):o}")

    return StoreFSModel


ALL_PATHS = ["/".join(p) for n in (1, 2, 3) for p in itertools.product(NAMES, repeat=n)]


def lookup(path: Path) -> str:
    try:
        return "dir" if stat.S_ISDIR(os.lstat(path).st_mode) else "file"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


def snapshot(root: Path) -> dict[str, tuple[str, int, int, int, str]]:
    """rel path -> (kind, permission bits, size, mtime_ns, sha1 of the contents) of a whole tree."""
    out = {}

    def walk(directory: Path) -> None:
        for entry in sorted(os.listdir(directory)):
            path = directory / entry
            st_ = os.lstat(path)
            rel = str(path.relative_to(root))
            if stat.S_ISDIR(st_.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st_.st_mode), 0, st_.st_mtime_ns, "")
                walk(path)
            else:
                with open(path, "rb") as f:
                    digest = hashlib.sha1(f.read()).hexdigest()
                out[rel] = ("file" if stat.S_ISREG(st_.st_mode) else "other", stat.S_IMODE(st_.st_mode),
                            st_.st_size, st_.st_mtime_ns, digest)
    walk(root)
    return out


# -- the tests -------------------------------------------------------------------------------------

@pytest.mark.parametrize("provider", ["local", "cos"])
def test_model(provider: str, request, tmp_path: Path) -> None:
    backend = make_backend(provider, request, tmp_path)
    env = Env(tmp_path, {"r": backend.section})
    client, store = open_client(backend)
    world = World(env, backend, tmp_path / "model", {}, store, client,
                  implicit_dirs_vanish=provider not in ("local",))
    started = time.monotonic()
    try:
        for mode in TTLS:
            world.mount(mode)
        run_state_machine_as_test(make_machine(world), settings=settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=not RANDOM,
            database=None, print_blob=True,
            suppress_health_check=list(HealthCheck)))
    finally:
        print(f"\n{provider}: {world.examples} examples, {world.steps} checked steps, {world.remounts} remounts, "
              f"{world.remote_changes} changes by another client, {time.monotonic() - started:.1f}s")
        env.close()
        client.close()
