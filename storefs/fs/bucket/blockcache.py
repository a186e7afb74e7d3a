"""The read cache: object bytes in 1 MiB blocks on local disk (diskcache), size-bounded, LRU, kept
across remounts.

A block's key is (location, object key, ETag, block number). Because the ETag is part of the key, a
remote overwrite can never be answered from stale blocks: the new ETag simply misses. Dirty data never
lives here (staged files do, see openfiles.py), so evicting a block never loses anything.

Blocks arrive two ways: the reader writes a fetched run into new block files (`reserve()`, then
`adopt()`; from the socket on S3), or `put()` queues bytes already in memory for a writer thread. The
cache knows no network: the reader fetches, the cache keeps and serves.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from pathlib import Path
import diskcache

log = logging.getLogger(__name__)

BLOCK = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class _Written:
    """A block whose file is written already: diskcache adopts the file instead of writing one."""
    filename: str   # relative to the cache directory, as _BlockDisk.filename() names it
    size: int


@dataclasses.dataclass
class NewBlocks:
    """Block files made by BlockCache.reserve, not yet in the index: the reader writes them."""
    fds: list[int]          # open for writing, each from offset 0
    filenames: list[str]    # relative to the cache directory (diskcache's names)
    paths: list[str]
    sizes: list[int]


def _create(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileNotFoundError:  # its directory is new, or was removed with its last block
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)


class _BlockDisk(diskcache.Disk):
    """diskcache's file storage, cheaper for 1 MiB blocks: one directory level of 256, made when the
    cache opens and kept (diskcache's two levels of 256 put nearly every new block in a new directory,
    a mkdir each, and it tries a mkdir on every write), and the block written straight from its
    buffer (diskcache copies it through a BytesIO first), or adopted as the reader wrote it. A cold
    sequential read writes every block it fetches, so this is on the read path's CPU."""

    def filename(self, key=diskcache.core.UNKNOWN, value=diskcache.core.UNKNOWN) -> tuple[str, str]:
        name = os.urandom(15).hex()
        filename = os.path.join(name[:2], name[2:] + ".val")
        return filename, os.path.join(self._directory, filename)

    def remove(self, file_path: str) -> None:
        # diskcache also removes the emptied directory, which the next block in it then makes again:
        # a mkdir on the read path (as costly as creating the block's file). The 256 stay.
        try:
            os.remove(os.path.join(self._directory, file_path))
        except OSError:
            pass

    def store(self, value, read, key=diskcache.core.UNKNOWN):
        if isinstance(value, _Written):   # written already (BlockCache.reserve/adopt)
            return value.size, diskcache.core.MODE_BINARY, value.filename, None
        if type(value) is not bytes or len(value) < self.min_file_size:
            return super().store(value, read, key)
        filename, full_path = self.filename(key, value)
        fd = _create(full_path)
        try:
            view = memoryview(value)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        return len(value), diskcache.core.MODE_BINARY, filename, None


class _ByThreadId:
    """Attributes per OS thread, for diskcache's per-thread SQLite connection (its `_local`). With a
    threading.local, every FUSE callback would open a new connection (and set its pragmas; ~0.4 ms):
    ctypes runs each callback from libfuse's threads in a new Python thread state. OS thread ids
    outlive those; a connection left by an ended thread serves the next thread given its id
    (diskcache connects with check_same_thread=False)."""

    def __init__(self) -> None:
        object.__setattr__(self, "_values", {})

    def __getattr__(self, name: str) -> object:
        try:
            return self._values[(threading.get_ident(), name)]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: object) -> None:
        self._values[(threading.get_ident(), name)] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self._values[(threading.get_ident(), name)]
        except KeyError:
            raise AttributeError(name) from None


class BlockCache:
    def __init__(self, directory: Path, size_limit: int, pending_limit: int = 32) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Blocks above 32 KiB are stored as files by diskcache, the index in SQLite; LRU updates an
        # access time per hit, which costs little at one hit per MiB.
        self._cache = diskcache.Cache(str(directory), size_limit=size_limit,
                                      eviction_policy="least-recently-used", cull_limit=16,
                                      disk=_BlockDisk)
        self._cache._local = _ByThreadId()
        self.size_limit = size_limit
        for number in range(256):   # _BlockDisk's directories, made once rather than on the read path
            (directory / f"{number:02x}").mkdir(mode=0o700, exist_ok=True)
        # Filling the cache must never slow a read down: blocks are written by one background thread,
        # and when `pending_limit` blocks wait already, a new one is simply not cached.
        self._pending: queue.Queue = queue.Queue(maxsize=pending_limit)
        self._writer = threading.Thread(target=self._write_loop, name="blockcache", daemon=True)
        self._writer.start()
        self._warned_at = 0.0
        self._unwarned = 0

    def _warn(self, what: str, exc: Exception) -> None:
        """A broken cache (its directory removed, a full disk) fails every call: one line a minute."""
        now = time.monotonic()
        if now - self._warned_at < 60:
            self._unwarned += 1
            return
        more = f" ({self._unwarned} more like it since the last report)" if self._unwarned else ""
        log.warning("block cache %s failed: %s; reading goes on uncached%s", what, exc, more)
        self._warned_at, self._unwarned = now, 0

    def get(self, location: str, key: str, etag: str, block: int) -> bytes | None:
        try:
            return self._cache.get((location, key, etag, block))
        except Exception as exc:  # a damaged cache is a miss, never an error for the reader
            self._warn("read", exc)
            return None

    def read_into(self, location: str, key: str, etag: str, block: int, start: int,
                  into: memoryview) -> int | None:
        """Bytes [start, start+len(into)) of a cached block into `into` (a FUSE reply buffer), without
        reading the whole block (a random 4 KiB read should not cost a 1 MiB file read): the bytes
        read, None if the block is not cached."""
        try:
            value = self._cache.get((location, key, etag, block), read=True)
            if value is None:
                return None
            if isinstance(value, bytes):  # small blocks (an object's tail) live in SQLite
                piece = value[start:start + len(into)]
                into[:len(piece)] = piece
                return len(piece)
            with value:
                return os.preadv(value.fileno(), [into], start)
        except Exception as exc:
            self._warn("read", exc)
            return None

    @staticmethod
    def read_file_into(path: str, start: int, into: memoryview) -> int | None:
        """Bytes of a block file that adopt() returned, without asking the index (a SQLite query and
        an access-time update per read); None if it has been evicted since."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            return os.preadv(fd, [into], start)
        except OSError:
            return None
        finally:
            os.close(fd)

    def contains(self, location: str, key: str, etag: str, block: int) -> bool:
        try:
            return (location, key, etag, block) in self._cache
        except Exception as exc:
            self._warn("read", exc)
            return False

    def reserve(self, sizes: list[int]) -> NewBlocks | None:
        """New block files, one per size, for the reader to write a fetched run into directly (on
        plain HTTP the bytes go from the socket to the files without passing through Python); then
        adopt() or abandon() them. None when the cache cannot make them (a full disk, a removed
        directory): the reader reads into memory instead."""
        blocks = NewBlocks([], [], [], list(sizes))
        try:
            for _ in sizes:
                filename, path = self._cache.disk.filename()
                blocks.fds.append(_create(path))
                blocks.filenames.append(filename)
                blocks.paths.append(path)
        except OSError as exc:
            self.abandon(blocks, exc)
            return None
        return blocks

    def adopt(self, blocks: NewBlocks, location: str, key: str, etag: str, first: int) -> list[str] | None:
        """Enter fully written `blocks` as blocks first, first+1, … of the object: their paths for
        read_file_into, or None when the index refuses them (they are removed; no partly written or
        unindexed block stays behind)."""
        for fd in blocks.fds:
            os.close(fd)
        blocks.fds.clear()
        try:
            # One SQLite transaction for the run, not one per block: 8 commits per 8 MiB run cost a
            # cold sequential read tens of ms per run on a busy machine. A failure rolls back all.
            with self._cache.transact():
                for number, (filename, size) in enumerate(zip(blocks.filenames, blocks.sizes), start=first):
                    self._cache.set((location, key, etag, number), _Written(filename, size))
        except Exception as exc:
            self._warn("write", exc)
            self.abandon(blocks)
            return None
        return blocks.paths

    def abandon(self, blocks: NewBlocks, cause: OSError | None = None) -> None:
        """Remove block files not (all) written: the fetch failed, or `cause`, a local write error."""
        if cause is not None:
            self._warn("write", cause)
        for fd in blocks.fds:
            os.close(fd)
        for path in blocks.paths:
            try:
                os.unlink(path)
            except OSError:
                pass
        blocks.fds.clear()
        blocks.paths.clear()

    def put(self, location: str, key: str, etag: str, block: int, data: bytes) -> None:
        try:
            self._pending.put_nowait(((location, key, etag, block), data))
        except queue.Full:
            pass

    def _write_loop(self) -> None:
        while True:
            item = self._pending.get()
            if item is None:
                return
            try:
                self._cache.set(*item)
            except Exception as exc:  # e.g. the cache disk is full: reading goes on uncached
                self._warn("write", exc)
            finally:
                self._pending.task_done()

    def volume(self) -> int:
        """Bytes the cache uses on disk."""
        try:
            return int(self._cache.volume())
        except Exception:
            return 0

    def close(self) -> None:
        self._pending.put(None)
        self._writer.join(timeout=10)
        self._cache.close()
