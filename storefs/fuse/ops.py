"""The FUSE edge: the callbacks of either binding (`bindings.py`) mapped onto a MountedFS. Thin on purpose.

Traps handled here (ARCHITECTURE.md):
- an OSError without errno makes fusepy call fuse_exit() and the mount vanishes: `_call` turns every
  exception into an OSError with a real errno, unexpected ones into EIO with a logged traceback;
- flush/fsync/utimens default to silent success in the base classes: all are overridden;
- statfs answers f_namemax = 255; new files take the caller's uid/gid.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import time
from typing import Any, Callable

from ..attrs import Attrs
from ..errors import StoreError, errno_for
from ..fs.api import MountedFS
from ..fs.sinks import BufferSink, Sink, SinkSpoiled
from .requests import REQUESTS

log = logging.getLogger(__name__)


class FuseError(OSError):
    """What a callback raises for the kernel: always with a real errno (both bindings return -errno)."""

    def __init__(self, code: int) -> None:
        super().__init__(code, os.strerror(code))


def _call(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    REQUESTS.note(what)
    try:
        return fn(*args)
    except (FuseError, SinkSpoiled):   # SinkSpoiled: not an error, the read is served again
        raise
    except Exception as exc:
        code = errno_for(exc)
        if code == errno.EIO:
            # A traceback only for the unexpected: storefs's own errors and local I/O errors say enough.
            expected = isinstance(exc, (StoreError, OSError))
            log.error("%s%r failed: %s", what, args[:1], exc, exc_info=not expected)
        elif code in (errno.EINVAL, errno.EACCES, errno.ESTALE):
            # Refusals worth a look (the server's answer, credentials, a file changed under a reader);
            # ENOENT, EEXIST, EAGAIN and the like are ordinary answers.
            log.warning("%s%r: %s (%s)", what, args[:1], exc, errno.errorcode.get(code))
        else:
            log.debug("%s%r: %s (%s)", what, args[:1], exc, errno.errorcode.get(code))
        raise FuseError(code) from None


def _stat_dict(attrs: Attrs, blksize: int) -> dict[str, int]:
    blocks = (attrs.size + 511) // 512
    return {
        "st_mode": attrs.mode, "st_size": attrs.size, "st_uid": attrs.uid, "st_gid": attrs.gid,
        "st_nlink": attrs.links,
        "st_mtime": attrs.mtime_ns, "st_ctime": attrs.ctime_ns, "st_atime": attrs.atime,
        "st_blocks": blocks, "st_blksize": blksize,
    }


class FuseOps:
    """The callbacks, for either binding: run() mixes in the binding's own Operations base (fusepy
    dispatches through its __call__ and registers its defaults; mfusepy skips what is not overridden)."""
    use_ns = True

    def __init__(self, fs: MountedFS, on_ready: Callable[[], None] | None = None, *,
                 context: Callable[[], tuple[int, int, int]], drain_timeout: float,
                 blksize: int = 128 * 1024, on_unmount: Callable[[], None] | None = None) -> None:
        self.fs = fs
        self._drain_timeout = drain_timeout  # seconds destroy() lets the filesystem finish its work
        self.on_ready = on_ready
        self.on_unmount = on_unmount  # told when the unmount begins, before the drain
        self._context = context   # the binding's fuse_get_context: (uid, gid, pid) of the caller
        self._blksize = blksize   # st_blksize: cp and friends size their buffers from it
        self._seen_etags: dict[str, str] = {}  # path -> ETag at the last open, for keep_cache

    def _caller(self) -> tuple[int, int]:
        uid, gid, _pid = self._context()
        return uid, gid

    # lifecycle
    def init(self, path: str) -> None:
        if self.on_ready:
            self.on_ready()

    def destroy(self, path: str) -> None:
        # libfuse's teardown has just put SIGPIPE back to its default action (terminate) before calling
        # us; draining the queue to a server that resets connections would then kill the process
        # silently. run() also blocks it in every thread; this covers a caller that did not.
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        if self.on_unmount:
            self.on_unmount()
        left = self.fs.close(self._drain_timeout)
        for what in left:
            log.error("at unmount, not uploaded: %s; it stays staged and the next mount uploads it", what)

    # metadata
    def getattr(self, path: str, fh: Any = None) -> dict[str, int]:
        # With raw_fi, fh is the fuse_file_info of an open file, or a NULL pointer (falsy) or None.
        handle = fh.fh if fh else None
        return _stat_dict(_call("getattr", self.fs.getattr, path, handle), self._blksize)

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", ".."] + _call("readdir", self.fs.readdir, path)

    def readdir_plus(self, path: str) -> list[tuple[str, Attrs | None]]:
        """readdir with attributes where known exactly (libfuse 3's READDIRPLUS, bindings._binding_class);
        stat_of() turns them into what the binding fills in, one chunk of the listing at a time."""
        return [(".", None), ("..", None)] + _call("readdir", self.fs.readdir_attrs, path)

    def stat_of(self, attrs: Attrs) -> dict[str, int]:
        return _stat_dict(attrs, self._blksize)

    def readlink(self, path: str) -> str:
        return _call("readlink", self.fs.readlink, path)

    def statfs(self, path: str) -> dict[str, int]:
        return _call("statfs", self.fs.statfs)

    # chmod/chown/utimens: libfuse 3 passes the open file of fchmod, fchown and futimens (`fh`).
    def chmod(self, path: str | None, mode: int, fh: Any = None) -> int:
        _call("chmod", self.fs.chmod, path, mode, fh.fh if fh else None)
        return 0

    def chown(self, path: str | None, uid: int, gid: int, fh: Any = None) -> int:
        _call("chown", self.fs.chown, path, uid, gid, fh.fh if fh else None)
        return 0

    def utimens(self, path: str | None, times: tuple[int | None, int | None] | None = None,
                fh: Any = None) -> int:
        now = time.time_ns()
        atime, mtime = times if times else (now, now)
        _call("utimens", self.fs.utimens, path, mtime, atime, fh.fh if fh else None)
        return 0

    # directories
    def mkdir(self, path: str, mode: int) -> int:
        _call("mkdir", self.fs.mkdir, path, mode, *self._caller())
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
        _call("symlink", self.fs.symlink, target, source, *self._caller())
        return 0

    def link(self, target: str, source: str) -> int:
        _call("link", self.fs.link, target, source)
        return 0

    def mknod(self, path: str, mode: int, dev: int) -> int:
        _call("mknod", self.fs.mknod, path, mode, *self._caller())
        return 0

    # files
    def create(self, path: str, mode: int, fi: Any) -> int:
        fi.fh = _call("create", self.fs.create, path, mode, *self._caller(), fi.flags)
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

    def read_into(self, path: str | None, into: memoryview, offset: int, fi: Any) -> int:
        """read(), written straight into the binding's reply buffer (see bindings._binding_class)."""
        return _call("read", self.fs.read_to, fi.fh, BufferSink(into), offset)

    def read_buf(self, path: str | None, sink: Sink, offset: int, fi: Any) -> int | None:
        """read(), its bytes handed to `sink` (a pipe: splicedread.py); None if the sink was spoiled
        (the binding reads again through a buffer)."""
        try:
            return _call("read_buf", self.fs.read_to, fi.fh, sink, offset)
        except SinkSpoiled:
            return None

    def write(self, path: str, data: bytes | memoryview, offset: int, fi: Any) -> int:
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

    # Extended attributes: read-only facts of vault archives (id, tree hash, retrieval state) and of
    # archive-class objects in buckets (storage class, retrieval state). A bucket mount whose provider
    # has no archive classes has none, and says so with ENOSYS: the one place storefs answers it on
    # purpose, because the kernel then stops asking (callers see EOPNOTSUPP), instead of two getxattr
    # calls per `ls -l` entry.
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        if not self.fs.has_xattrs:
            raise FuseError(errno.ENOSYS)
        if not name.startswith("user.storefs."):
            # `ls -l` asks every entry for security.* and system.posix_acl_*: answered without a lookup.
            raise FuseError(errno.ENODATA)
        return _call("getxattr", self.fs.getxattr, path, name)

    def listxattr(self, path: str) -> list[str]:
        if not self.fs.has_xattrs:
            raise FuseError(errno.ENOSYS)
        return _call("listxattr", self.fs.listxattr, path)


