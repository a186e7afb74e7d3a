"""The FUSE edge: fusepy callbacks mapped onto StoreFS. Thin on purpose.

fusepy 3.0.1 traps handled here (ARCHITECTURE.md):
- an OSError without errno makes fusepy call fuse_exit() and the mount vanishes: `_call` turns every
  exception into FuseOSError with a real errno, unexpected ones into EIO with a logged traceback;
- flush/fsync/utimens default to silent success in the base class: all are overridden;
- `flag_utime_omit_ok` is set on the operations struct and the raw timespecs are read, so UTIME_OMIT
  and UTIME_NOW work and nanoseconds survive;
- statfs answers f_namemax = 255; raw_fi=True keeps create()'s flags; new files take the caller's uid/gid.
"""
from __future__ import annotations

import errno
import logging
import signal
import stat
import time
from typing import Any, Callable

import fuse

from .errors import errno_for
from .filesystem import StoreFS
from .vaultfs import VaultFS

log = logging.getLogger(__name__)

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


class _Operations(fuse.fuse_operations):
    """The libfuse operations struct with flag_utime_omit_ok set (fusepy never sets it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flag_utime_omit_ok = 1


class _Fuse(fuse.FUSE):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # fusepy builds the struct from the module-level name inside __init__, which only returns at
        # unmount; one mount per process, so swapping the name for that time is safe.
        original = fuse.fuse_operations
        fuse.fuse_operations = _Operations
        try:
            super().__init__(*args, **kwargs)
        finally:
            fuse.fuse_operations = original

    def utimens(self, path: bytes, buf: Any) -> int:
        # Pass (atime_ns, mtime_ns) with None for UTIME_OMIT; resolve UTIME_NOW and NULL (= now, now).
        now = time.time_ns()
        if not buf:
            times: tuple[int | None, int | None] = (now, now)
        else:
            pair = []
            for ts in (buf.contents.actime, buf.contents.modtime):
                if ts.tv_nsec == UTIME_OMIT:
                    pair.append(None)
                elif ts.tv_nsec == UTIME_NOW:
                    pair.append(now)
                else:
                    pair.append(ts.tv_sec * 1_000_000_000 + ts.tv_nsec)
            times = (pair[0], pair[1])
        return self.operations("utimens", path.decode(self.encoding), times)


def _call(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except fuse.FuseOSError:
        raise
    except Exception as exc:
        code = errno_for(exc)
        if code == errno.EIO:
            log.error("%s%r failed: %s", what, args[:1], exc, exc_info=not hasattr(exc, "errno"))
        else:
            log.debug("%s%r: %s (%s)", what, args[:1], exc, errno.errorcode.get(code))
        raise fuse.FuseOSError(code) from None


def _stat_dict(attrs: Any) -> dict[str, int]:
    blocks = (attrs.size + 511) // 512
    return {
        "st_mode": attrs.mode, "st_size": attrs.size, "st_uid": attrs.uid, "st_gid": attrs.gid,
        "st_nlink": 2 if stat.S_ISDIR(attrs.mode) else 1,
        "st_mtime": attrs.mtime_ns, "st_ctime": attrs.ctime_ns, "st_atime": attrs.mtime_ns,
        "st_blocks": blocks, "st_blksize": 128 * 1024,
    }


def _caller() -> tuple[int, int]:
    uid, gid, _pid = fuse.fuse_get_context()
    return uid, gid


class FuseOps(fuse.Operations):
    use_ns = True

    def __init__(self, fs: StoreFS | VaultFS, on_ready: Callable[[], None] | None = None) -> None:
        self.fs = fs
        self.on_ready = on_ready
        self._seen_etags: dict[str, str] = {}  # path -> ETag at the last open, for keep_cache

    # lifecycle
    def init(self, path: str) -> None:
        if self.on_ready:
            self.on_ready()

    def destroy(self, path: str) -> None:
        # libfuse's teardown has just put SIGPIPE back to its default action (terminate) before calling
        # us; draining the queue to a server that resets connections would then kill the process
        # silently. run() also blocks it in every thread; this covers a caller that did not.
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        left = self.fs.close(self.fs.options.drain_timeout)
        for what in left:
            log.error("at unmount, not uploaded: %s; it stays staged and the next mount uploads it", what)

    # metadata
    def getattr(self, path: str, fh: Any = None) -> dict[str, int]:
        handle = fh.fh if fh is not None and hasattr(fh, "fh") else None
        return _stat_dict(_call("getattr", self.fs.getattr, path, handle))

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", ".."] + _call("readdir", self.fs.readdir, path)

    def readlink(self, path: str) -> str:
        return _call("readlink", self.fs.readlink, path)

    def statfs(self, path: str) -> dict[str, int]:
        return _call("statfs", self.fs.statfs)

    def chmod(self, path: str, mode: int) -> int:
        _call("chmod", self.fs.chmod, path, mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        _call("chown", self.fs.chown, path, uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int | None, int | None] | None = None) -> int:
        mtime = times[1] if times else time.time_ns()
        _call("utimens", self.fs.utimens, path, mtime)
        return 0

    # directories
    def mkdir(self, path: str, mode: int) -> int:
        _call("mkdir", self.fs.mkdir, path, mode, *_caller())
        return 0

    def rmdir(self, path: str) -> int:
        _call("rmdir", self.fs.rmdir, path)
        return 0

    def rename(self, old: str, new: str) -> int:
        _call("rename", self.fs.rename, old, new)
        return 0

    def unlink(self, path: str) -> int:
        _call("unlink", self.fs.unlink, path)
        return 0

    def symlink(self, target: str, source: str) -> int:
        # fusepy's naming: create the link `target` pointing at `source`.
        _call("symlink", self.fs.symlink, target, source, *_caller())
        return 0

    def link(self, target: str, source: str) -> int:
        _call("link", self.fs.link, target, source)
        return 0

    def mknod(self, path: str, mode: int, dev: int) -> int:
        _call("mknod", self.fs.mknod, path, mode, *_caller())
        return 0

    # files
    def create(self, path: str, mode: int, fi: Any) -> int:
        fi.fh = _call("create", self.fs.create, path, mode, *_caller(), fi.flags)
        return 0

    def open(self, path: str, fi: Any) -> int:
        fi.fh = _call("open", self.fs.open, path, fi.flags)
        # Keep the kernel's page cache across opens while the object is unchanged.
        try:
            etag = self.fs.getattr_etag(path)
        except Exception:
            etag = None
        if etag is not None and self._seen_etags.get(path) == etag:
            fi.keep_cache = 1
        if etag is not None:
            self._seen_etags[path] = etag
        else:
            self._seen_etags.pop(path, None)
        return 0

    def read(self, path: str, size: int, offset: int, fi: Any) -> bytes:
        return _call("read", self.fs.read, fi.fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fi: Any) -> int:
        self._seen_etags.pop(path, None)
        return _call("write", self.fs.write, fi.fh, data, offset)

    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        self._seen_etags.pop(path, None)
        _call("truncate", self.fs.truncate, path, length, fh.fh if fh is not None else None)
        return 0

    def flush(self, path: str, fi: Any) -> int:
        _call("flush", self.fs.flush, fi.fh)
        return 0

    def fsync(self, path: str, datasync: int, fi: Any) -> int:
        _call("fsync", self.fs.fsync, fi.fh)
        return 0

    def release(self, path: str, fi: Any) -> int:
        _call("release", self.fs.release, fi.fh)
        return 0

    # Extended attributes: read-only facts of vault archives (id, tree hash, retrieval state). A bucket
    # mount has none, and says so with ENOSYS: the one place storefs answers it on purpose, because the
    # kernel then stops asking (callers see EOPNOTSUPP), instead of two getxattr calls per `ls -l` entry.
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        if not self.fs.has_xattrs:
            raise fuse.FuseOSError(errno.ENOSYS)
        return _call("getxattr", self.fs.getxattr, path, name)

    def listxattr(self, path: str) -> list[str]:
        if not self.fs.has_xattrs:
            raise fuse.FuseOSError(errno.ENOSYS)
        return _call("listxattr", self.fs.listxattr, path)


def run(fs: StoreFS | VaultFS, mountpoint: str, *, fsname: str, on_ready: Callable[[], None] | None,
        allow_other: bool, default_permissions: bool, read_only: bool, debug: bool = False) -> None:
    """Mount and serve until unmounted. Blocks."""
    # Blocked before libfuse and our workers start threads, so every thread inherits it: a write to a
    # reset connection then fails with EPIPE instead of killing the daemon (see destroy()).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
    options: dict[str, Any] = {
        "foreground": True, "nothreads": False, "fsname": fsname, "subtype": "storefs",
        # libfuse 2 splits writes into 4 KiB requests unless big_writes is on.
        "big_writes": True, "max_read": 131072, "max_write": 131072,
    }
    if allow_other:
        options["allow_other"] = True
    if default_permissions:
        options["default_permissions"] = True
    if read_only:
        options["ro"] = True
    if debug:
        options["debug"] = True
    _Fuse(FuseOps(fs, on_ready), mountpoint, raw_fi=True, encoding="utf-8", **options)

