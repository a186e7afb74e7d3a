"""The StoreError hierarchy and the one errno table of storefs.

Every provider translates its wire errors exactly once into these classes; the filesystem core raises
them; the FUSE edge (`fuse/ops.py`) turns them into errnos with `errno_for()`. Nothing else maps errors to errnos.
"""
from __future__ import annotations

import errno


class StoreError(Exception):
    """Base of every error storefs raises on purpose. `errno` is what a FUSE caller sees."""

    errno: int = errno.EIO

    def __init__(self, message: str = "", *, detail: str | None = None, code: str = "") -> None:
        super().__init__(message or self.__class__.__name__)
        # detail: the server's answer (code, message), kept for logs; never secrets.
        self.detail = detail
        # code: the provider's own error code ("NoSuchBucket", "-165"), for the provider's callers
        # that must tell two answers of one class apart; "" where there is none.
        self.code = code


class NotFound(StoreError):
    errno = errno.ENOENT


class AlreadyExists(StoreError):
    errno = errno.EEXIST


class NotEmpty(StoreError):
    errno = errno.ENOTEMPTY


class IsADirectory(StoreError):
    errno = errno.EISDIR


class NotADirectory(StoreError):
    errno = errno.ENOTDIR


class AccessDenied(StoreError):
    """Bad credentials or a forbidden request."""

    errno = errno.EACCES


class ReadOnly(StoreError):
    errno = errno.EROFS


class NotSupported(StoreError):
    """A per-call refusal. Never ENOSYS: libfuse would stop calling that operation for good."""

    errno = errno.EOPNOTSUPP


class NotPermitted(StoreError):
    errno = errno.EPERM


class InvalidArgument(StoreError):
    errno = errno.EINVAL


class NameTooLong(StoreError):
    errno = errno.ENAMETOOLONG


class CrossDevice(StoreError):
    """rename() between two buckets of one mount: callers like mv then copy instead."""

    errno = errno.EXDEV


class RemoteChanged(StoreError):
    """The object changed on the server since we looked (ETag mismatch)."""

    errno = errno.ESTALE


class PreconditionFailed(RemoteChanged):
    """A conditional upload refused (S3 412, COS v4 -177 with insertOnly, WCS 614 with overwrite=0):
    another writer created or replaced the object. The committer keeps our version as a conflict copy,
    so this never reaches a FUSE caller."""


class ArchiveNotReady(StoreError):
    """An archived object or vault archive whose retrieval is pending. The errno is configurable."""

    errno = errno.EAGAIN


class CacheFull(StoreError):
    errno = errno.ENOSPC


class NoAttribute(StoreError):
    """getxattr of an extended attribute the file does not have."""

    errno = errno.ENODATA


class Transient(StoreError):
    """A failure worth retrying (5xx, throttling, reset connection, timeout). EIO once retries run out."""

    errno = errno.EIO


class Throttled(Transient):
    """The provider asked us to slow down (S3 SlowDown, COS -71, CAS ThrottlingException)."""


class ProtocolError(StoreError):
    """The server answered something we cannot parse. Logged with the raw answer, surfaced as EIO."""

    errno = errno.EIO


class LocalWriteError(Exception):
    """Writing a server's answer into a local file failed (the cache disk full or removed). Not the
    server's fault, so never retried as Transient; the caller reads another way."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(f"writing to a local file: {cause}")
        self.cause = cause


class ConfigError(Exception):
    """A config or command-line problem found before mounting. The message says what to fix."""


# The errno table, for documentation and the unit test that keeps SEMANTICS.md honest.
ERRNO_TABLE: dict[type[StoreError], int] = {
    cls: cls.errno
    for cls in (
        NotFound, AlreadyExists, NotEmpty, IsADirectory, NotADirectory, AccessDenied, ReadOnly,
        NotSupported, NotPermitted, InvalidArgument, NameTooLong, CrossDevice, RemoteChanged, PreconditionFailed,
        ArchiveNotReady, CacheFull, NoAttribute, Transient, Throttled, ProtocolError, StoreError,
    )
}


def errno_for(exc: BaseException) -> int:
    """The errno a FUSE caller sees for `exc`. Anything unexpected is EIO."""
    if isinstance(exc, StoreError):
        return exc.errno
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        # A local staging-file error (ENOSPC on the cache disk, …): pass it through.
        return exc.errno
    return errno.EIO
