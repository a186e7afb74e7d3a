"""The interface between the FUSE edge and a mounted filesystem: what `fuse/ops.py` may call.

Both filesystems implement it, the bucket one (`fs/bucket/filesystem.py`) and the vault one
(`fs/vault/filesystem.py`); the FUSE edge knows nothing else of them. Paths are mount paths (`/a/b`),
file handles are the integers `open()` and `create()` return, errors are `StoreError`s (the edge maps
them to errnos through `errors.errno_for`). Nothing here knows libfuse.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..attrs import Attrs
from .sinks import Sink


@runtime_checkable
class MountedFS(Protocol):
    # Whether extended attributes (user.storefs.*) exist on this mount at all. False: the edge
    # answers ENOSYS once and the kernel stops asking (two getxattr calls per `ls -l` entry saved).
    has_xattrs: bool
    # Seconds the kernel may keep entries and attributes; None: libfuse's default (1 s).
    kernel_cache_ttl: float | None
    # True: a file unlinked while open loses its path at once (libfuse's hard_remove). False: libfuse
    # renames it to `.fuse_hidden…` until the last close, and the filesystem keeps that name to itself.
    hard_remove: bool

    # -- metadata ------------------------------------------------------------------------------------
    def getattr(self, path: str | None, fh: int | None = None) -> Attrs: ...

    def getattr_etag(self, path: str) -> str | None:
        """The ETag of the object at `path` if it is a clean remote file (None otherwise): the edge
        keeps the kernel's page cache across opens while it stays the same."""

    def readdir(self, path: str) -> list[str]: ...

    def readdir_attrs(self, path: str) -> list[tuple[str, Attrs | None]]:
        """readdir with each entry's attributes where they are known exactly (None elsewhere)."""

    def readlink(self, path: str) -> str: ...

    def statfs(self) -> dict[str, int]: ...

    def getxattr(self, path: str, name: str) -> bytes: ...

    def listxattr(self, path: str) -> list[str]: ...

    # -- changes -------------------------------------------------------------------------------------
    # chmod/chown/utimens: `fh` is the open file of fchmod, fchown, futimens (libfuse 3), else None.
    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> None: ...

    def chown(self, path: str | None, uid: int, gid: int, fh: int | None = None) -> None: ...

    def utimens(self, path: str | None, mtime_ns: int | None, atime_ns: int | None = None,
                fh: int | None = None) -> None:
        """None leaves that time as it is (UTIME_OMIT)."""

    def mkdir(self, path: str, mode: int, uid: int, gid: int) -> None: ...

    def rmdir(self, path: str) -> None: ...

    def rename(self, old: str, new: str) -> None: ...

    def unlink(self, path: str) -> None: ...

    def symlink(self, path: str, target: str, uid: int, gid: int) -> None: ...

    def link(self, path: str, target: str) -> None: ...

    def mknod(self, path: str, mode: int, uid: int, gid: int) -> None: ...

    def truncate(self, path: str, length: int, fh: int | None = None) -> None: ...

    # -- open files ----------------------------------------------------------------------------------
    def create(self, path: str, mode: int, uid: int, gid: int, flags: int) -> int: ...

    def open(self, path: str, flags: int) -> int: ...

    def read(self, fh: int, size: int, offset: int) -> bytes: ...

    def read_to(self, fh: int, sink: Sink, offset: int) -> int:
        """read(), its bytes handed to `sink` (the binding's reply buffer or pipe, sinks.py); how many.
        May raise SinkSpoiled (a pipe sink only): the caller reads again through a buffer."""

    def write(self, fh: int, data: bytes | memoryview, offset: int) -> int: ...

    def flush(self, fh: int) -> None: ...

    def fsync(self, fh: int) -> None: ...

    def release(self, fh: int) -> None: ...

    # -- lifecycle -----------------------------------------------------------------------------------
    def close(self, timeout: float) -> list[str]:
        """Stop: finish pending work for at most `timeout` seconds; what is left, one line each."""
