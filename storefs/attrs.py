"""File attributes and how they live in object metadata.

Conventions (shared with s3fs and rclone, so a bucket written by one reads right in the others):
- `mtime`: integer seconds, as s3fs writes `x-amz-meta-mtime`. rclone writes the same key as a float;
  we read either and never turn a float into 1970 (s3fs issue #897).
- `storefs-mtime-ns`: the exact nanoseconds, used only while it agrees with `mtime` (a tool that
  rewrites `mtime` alone wins over a stale nanosecond value).
- `atime`, `ctime`: the same two forms as `mtime` (`atime`/`ctime` seconds, as s3fs writes them, and
  `storefs-atime-ns`/`storefs-ctime-ns`). atime is stored only once set (create, utimens); without it
  the atime reads as the mtime. The ctime shown is never older than the mtime or the server's
  last-modified time, so it cannot go backwards when an entry is read again from the server.
- `mode`, `uid`, `gid`: decimal, `mode` holding the whole st_mode as s3fs does (S_IFLNK marks a symlink).
"""
from __future__ import annotations

import dataclasses
import stat
import time
from typing import Mapping

from .store.contract import ObjectInfo


@dataclasses.dataclass(slots=True)
class Attrs:
    mode: int           # full st_mode, type bits included
    size: int
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int | None = None   # None: never set, reads as the mtime
    nlink: int | None = None      # None: 1 for a file, 2 for a directory (its subdirectories unknown)

    @property
    def atime(self) -> int:
        return self.mtime_ns if self.atime_ns is None else self.atime_ns

    @property
    def links(self) -> int:
        if self.nlink is not None:
            return self.nlink
        return 2 if stat.S_ISDIR(self.mode) else 1

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    def copy(self, **changes) -> "Attrs":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class Defaults:
    """Attributes for objects that carry none (written by other tools)."""

    uid: int
    gid: int
    file_mode: int = 0o644
    dir_mode: int = 0o755


def now_ns() -> int:
    return time.time_ns()


def parse_mtime_ns(meta: Mapping[str, str]) -> int | None:
    return parse_time_ns(meta, "mtime")


def parse_time_ns(meta: Mapping[str, str], name: str) -> int | None:
    """`name` (mtime, atime, ctime) from its seconds key and, where it agrees, its exact nanoseconds."""
    raw = meta.get(name)
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    if seconds != seconds or abs(seconds) > 1e15:   # NaN, or past any time a filesystem can hold
        return None
    exact = meta.get(f"storefs-{name}-ns")
    if exact is not None:
        try:
            exact_ns = int(exact)
            if exact_ns // 1_000_000_000 == int(seconds):
                return exact_ns
        except ValueError:
            pass
    return int(round(seconds * 1_000_000_000))


def _int_meta(meta: Mapping[str, str], name: str) -> int | None:
    try:
        return int(meta[name])
    except (KeyError, ValueError):
        return None


def attrs_from_object(info: ObjectInfo, defaults: Defaults, *, is_dir: bool = False) -> Attrs:
    meta = info.meta
    if not meta and not is_dir and not info.is_dir_marker:
        # What the code below gives a file without metadata (every entry of an S3 listing), at a third
        # of its cost: a directory of a million objects makes a million of these (bench_cluster.py).
        server_ns = int(info.mtime * 1_000_000_000)
        return Attrs(mode=stat.S_IFREG | defaults.file_mode, size=info.size, uid=defaults.uid,
                     gid=defaults.gid, mtime_ns=server_ns, ctime_ns=server_ns)
    server_ns = int(info.mtime * 1_000_000_000)
    mtime_ns = parse_mtime_ns(meta)
    if mtime_ns is None:
        mtime_ns = server_ns
    mode = _int_meta(meta, "mode")
    if is_dir or info.is_dir_marker:
        perm = stat.S_IMODE(mode) if mode is not None else defaults.dir_mode
        mode = stat.S_IFDIR | perm
    elif mode is not None and stat.S_ISLNK(mode):
        mode = stat.S_IFLNK | 0o777
    else:
        perm = stat.S_IMODE(mode) if mode is not None else defaults.file_mode
        mode = stat.S_IFREG | perm
    uid = _int_meta(meta, "uid")
    gid = _int_meta(meta, "gid")
    ctime_ns = max(mtime_ns, server_ns) if info.mtime else mtime_ns
    stored_ctime = parse_time_ns(meta, "ctime")
    if stored_ctime is not None:
        ctime_ns = max(ctime_ns, stored_ctime)
    return Attrs(mode=mode, size=0 if stat.S_ISDIR(mode) else info.size,
                 uid=defaults.uid if uid is None else uid, gid=defaults.gid if gid is None else gid,
                 mtime_ns=mtime_ns, ctime_ns=ctime_ns, atime_ns=parse_time_ns(meta, "atime"))


def implicit_dir_attrs(defaults: Defaults, mtime_ns: int = 0) -> Attrs:
    """A directory that exists only because keys live below it (no marker object)."""
    return Attrs(mode=stat.S_IFDIR | defaults.dir_mode, size=0, uid=defaults.uid, gid=defaults.gid,
                 mtime_ns=mtime_ns, ctime_ns=mtime_ns)


def meta_from_attrs(attrs: Attrs, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """User metadata to store with an object (see module docstring)."""
    meta = dict(extra or {})
    _put_time(meta, "mtime", attrs.mtime_ns)
    _put_time(meta, "ctime", attrs.ctime_ns)
    if attrs.atime_ns is not None:
        _put_time(meta, "atime", attrs.atime_ns)
    meta["mode"] = str(attrs.mode)
    meta["uid"] = str(attrs.uid)
    meta["gid"] = str(attrs.gid)
    return meta


def _put_time(meta: dict[str, str], name: str, value_ns: int) -> None:
    seconds, rest = divmod(value_ns, 1_000_000_000)
    meta[name] = str(seconds)
    if rest:
        meta[f"storefs-{name}-ns"] = str(value_ns)
    else:
        meta.pop(f"storefs-{name}-ns", None)


def carried_meta(meta: Mapping[str, str]) -> dict[str, str]:
    """Metadata of an existing object that we keep when we rewrite it (other tools' keys survive)."""
    return {k: v for k, v in meta.items() if not k.startswith("x-amz-restore")}
