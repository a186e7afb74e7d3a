"""The read cache: object bytes in 1 MiB blocks on local disk (diskcache), size-bounded, LRU, kept
across remounts.

A block's key is (location, object key, ETag, block number). Because the ETag is part of the key, a
remote overwrite can never be answered from stale blocks: the new ETag simply misses. Dirty data never
lives here (staged files do, see openfiles.py), so evicting a block never loses anything.

Blocks arrive two ways: the reader writes a fetched run of blocks into one new file (`reserve()`, then
`adopt()`; from the socket on S3), or `put()` queues bytes already in memory for a writer thread (a
file per block). The cache knows no network: the reader fetches, the cache keeps and serves.

A run's blocks share one file (RUN_MARK in their index entries names their place in it): creating a
file is the dearest step of caching a block on a busy ext4 (0.5-0.7 ms of CPU each on the benchmark
machine, where inode allocation searches past recently deleted inodes; a fifth of a cold sequential
read's CPU with a file per 1 MiB block). A run file is never modified once adopted, only removed:
evicting any of its blocks evicts the whole run (its other index entries go too), so a path known to
the reader either holds the run's bytes or is gone, and the cache's size accounting stays exact.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import os
import pickle
import queue
import sqlite3
import threading
import time
from pathlib import Path
import diskcache

from ..sinks import Sink, SinkSpoiled

log = logging.getLogger(__name__)

BLOCK = 1024 * 1024
CULL_LIMIT = 4   # entries evicted at most per set() over the size limit (diskcache's cull_limit)
RUN_MARK = "#"   # index filename "RUNFILE#N": block N of a run file, at N * BLOCK (see the module docstring)


@dataclasses.dataclass(frozen=True)
class _Written:
    """A block whose file is written already: diskcache adopts the file instead of writing one."""
    filename: str   # relative to the cache directory, as _BlockDisk.filename() names it, + RUN_MARK + N
    size: int


@dataclasses.dataclass
class NewBlocks:
    """A run file made by BlockCache.reserve, not yet in the index: the reader writes its blocks into
    it, back to back from offset 0 (block i at i * BLOCK)."""
    fd: int                 # open for writing; -1 once closed
    filename: str           # relative to the cache directory (diskcache's name)
    path: str
    sizes: list[int]        # the blocks' sizes: all BLOCK but the last, which may be shorter


class _Opened:
    """A cached block's bytes in an open file: a block file (offset 0) or its place in a run file."""

    def __init__(self, path: str, offset: int) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self.offset = offset

    def __enter__(self) -> "_Opened":
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _run_place(filename: str) -> tuple[str, int]:
    """(file, offset) of an index filename: a run file's block, or a block file (offset 0)."""
    name, mark, number = filename.partition(RUN_MARK)
    return (name, int(number) * BLOCK) if mark else (filename, 0)


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

    index: diskcache.Cache | None = None   # set by BlockCache: a run's other entries go with it

    def put(self, key):
        """A block key's index form, as diskcache makes it (the same bytes, so that a cache written
        before stays readable) without its pickletools.optimize: that pure-Python pass cost ~170 us
        per key, on every contains(), hit and set() (16 per 8 MiB run of a cold read, ~0.09 s of CPU
        per 256 MiB). A pickle made without a memo has no memo entries to strip, so it is optimize's
        output, as long as no object occurs twice in the key (a memo would then refer to it)."""
        if type(key) is tuple and all(type(part) in (str, int) for part in key) \
                and len({id(part) for part in key}) == len(key):
            out = io.BytesIO()
            pickler = pickle.Pickler(out, protocol=self.pickle_protocol)
            pickler.fast = True   # no memo
            pickler.dump(key)
            return sqlite3.Binary(out.getvalue()), False
        return super().put(key)

    def remove(self, file_path: str) -> None:
        # diskcache also removes the emptied directory, which the next block in it then makes again:
        # a mkdir on the read path (as costly as creating the block's file). The 256 stay.
        name, mark, _number = file_path.partition(RUN_MARK)
        if mark and self.index is not None:
            # One block of a run evicted (or replaced): the whole run goes, so that its file is
            # removed at once and the space it holds is the space the index counts. The size and
            # count triggers of diskcache's table keep its accounting right for these rows.
            try:
                self.index._sql("DELETE FROM Cache WHERE filename >= ? AND filename < ?",
                                (name + RUN_MARK, name + chr(ord(RUN_MARK) + 1)))
            except Exception as exc:   # the run's other entries then point to a missing file: misses
                log.debug("block cache: the rest of run %s stays indexed: %s", name, exc)
        try:
            os.remove(os.path.join(self._directory, name))
        except OSError:
            pass

    def fetch(self, mode, filename, value, read):
        if mode != diskcache.core.MODE_BINARY or not filename:
            return super().fetch(mode, filename, value, read)
        name, offset = _run_place(filename)
        opened = _Opened(os.path.join(self._directory, name), offset)
        if read:
            return opened
        with opened:
            return os.pread(opened.fd, BLOCK, offset)

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
        # access time per hit, which costs little at one hit per MiB. Each set() over the limit evicts
        # up to cull_limit entries, and each takes its run along (up to 8 MiB): a few at a time.
        self._cache = diskcache.Cache(str(directory), size_limit=size_limit,
                                      eviction_policy="least-recently-used", cull_limit=CULL_LIMIT,
                                      disk=_BlockDisk)
        self._cache._local = _ByThreadId()
        # Index writes one thread at a time: every run's adopt() and every LRU hit (diskcache updates
        # an access time in a write transaction) take SQLite's write lock, and a thread that finds it
        # taken sleeps in SQLite's busy handler (1, 2, 5, 10 … 100 ms). With 4 read-ahead threads that
        # was ~250 sleeps per 256 MiB of a cold sequential read; a lock wakes the next thread at once.
        self._index_lock = threading.Lock()
        # Evicting a run's block removes its siblings by filename (_BlockDisk.remove): indexed.
        self._cache._sql("CREATE INDEX IF NOT EXISTS Cache_filename ON Cache(filename)")
        self._cache.disk.index = self._cache
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
            with self._index_lock:
                return self._cache.get((location, key, etag, block))
        except Exception as exc:  # a damaged cache is a miss, never an error for the reader
            self._warn("read", exc)
            return None

    def read_to(self, location: str, key: str, etag: str, block: int, start: int, length: int,
                sink: Sink) -> int | None:
        """Bytes [start, start+length) of a cached block to `sink` (bound for a FUSE reply), without
        reading the whole block (a random 4 KiB read should not cost a 1 MiB file read): the bytes
        taken, None if the block is not cached."""
        try:
            with self._index_lock:
                value = self._cache.get((location, key, etag, block), read=True)
            if value is None:
                return None
            if isinstance(value, bytes):  # small blocks (an object's tail) live in SQLite
                piece = memoryview(value)[start:start + length]
                sink.take_bytes(piece)
                return len(piece)
            with value:
                return sink.take_file(value.fd, value.offset + start, min(length, BLOCK - start))
        except SinkSpoiled:
            raise
        except Exception as exc:
            self._warn("read", exc)
            return None

    def contains(self, location: str, key: str, etag: str, block: int) -> bool:
        try:
            return (location, key, etag, block) in self._cache
        except Exception as exc:
            self._warn("read", exc)
            return False

    def missing(self, location: str, key: str, etag: str, numbers: list[int]) -> list[int]:
        """Those of blocks `numbers` the cache does not hold, with one query (contains() per block
        was eight queries per run of a cold read). A broken cache holds none."""
        try:
            forms = {bytes(db_key): number for number, (db_key, raw) in
                     ((n, self._cache.disk.put((location, key, etag, n))) for n in numbers) if not raw}
            if len(forms) != len(numbers):   # keys diskcache stores raw: asked one by one
                return [n for n in numbers if not self.contains(location, key, etag, n)]
            rows = self._cache._sql(f"SELECT key FROM Cache WHERE raw = 0 AND key IN ({','.join('?' * len(forms))})",
                                    [sqlite3.Binary(form) for form in forms]).fetchall() if forms else []
        except Exception as exc:
            self._warn("read", exc)
            return list(numbers)
        held = {forms.get(bytes(row[0])) for row in rows}
        return [n for n in numbers if n not in held]

    def reserve(self, sizes: list[int]) -> NewBlocks | None:
        """A new run file for blocks of `sizes` (all BLOCK but the last), for the reader to write a
        fetched run into directly (on plain HTTP the bytes go from the socket to the file without
        passing through Python); then adopt() or abandon() it. None when the cache cannot make it (a
        full disk, a removed directory): the reader reads into memory instead."""
        if not sizes or any(size != BLOCK for size in sizes[:-1]) or not 0 < sizes[-1] <= BLOCK:
            raise ValueError(f"a run of blocks cannot have the sizes {sizes}")
        filename, path = self._cache.disk.filename()
        try:
            fd = _create(path)
        except OSError as exc:
            self._warn("write", exc)
            return None
        return NewBlocks(fd, filename, path, list(sizes))

    def adopt(self, blocks: NewBlocks, location: str, key: str, etag: str,
              first: int) -> list[tuple[str, int]] | None:
        """Enter a fully written run as blocks first, first+1, … of the object: each block's place
        (run file, offset) for the reader (runfiles.py), or None when the index refuses them (the file is
        removed; no partly written or unindexed block stays behind)."""
        self._close(blocks)
        try:
            # One SQLite transaction for the run, not one per block: 8 commits per 8 MiB run cost a
            # cold sequential read tens of ms per run on a busy machine. A failure rolls back all.
            with self._index_lock:
                self._enter_run(blocks, location, key, etag, first)
        except Exception as exc:
            self._warn("write", exc)
            self.abandon(blocks)
            return None
        if not os.path.exists(blocks.path):
            # Evicted while it was entered (a cache not much larger than a run): its entries that came
            # after the eviction would point to nothing.
            with self._index_lock:
                self._cache.disk.remove(f"{blocks.filename}{RUN_MARK}0")
            return None
        return [(blocks.path, index * BLOCK) for index in range(len(blocks.sizes))]

    def _enter_run(self, blocks: NewBlocks, location: str, key: str, etag: str, first: int) -> None:
        """The run's index entries, as diskcache's set() would make them (same columns, same eviction),
        in one transaction with one insert for all of them: set() costs five statements and ~0.25 ms
        of Python per block (its existence check, insert, expired-entry sweep, volume query and
        cull), a sixth of a cold sequential read's CPU on the benchmark machine; here the volume is
        asked once per run while the cache is under its limit. A key cached meanwhile (by another
        handle) is replaced, as set() replaces it."""
        cache = self._cache
        now = time.time()
        rows = []
        for index, size in enumerate(blocks.sizes):
            db_key, raw = cache.disk.put((location, key, etag, first + index))
            rows.append((db_key, raw, now, None, now, 0, None, size, diskcache.core.MODE_BINARY,
                         f"{blocks.filename}{RUN_MARK}{index}", None))
        with cache._transact() as (sql, cleanup):
            for row in rows:
                for rowid, filename in sql("SELECT rowid, filename FROM Cache WHERE key = ? AND raw = ?",
                                           row[:2]).fetchall():
                    sql("DELETE FROM Cache WHERE rowid = ?", (rowid,))
                    cleanup(filename)
            cache._con.executemany(
                "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag,"
                " size, mode, filename, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            for _row in rows:   # as set() culls after each entry: CULL_LIMIT at a time, while over
                if cache.volume() < cache.size_limit:
                    break
                cache._cull(now, sql, cleanup)

    def abandon(self, blocks: NewBlocks, cause: OSError | None = None) -> None:
        """Remove a run file not (all) written: the fetch failed, or `cause`, a local write error."""
        if cause is not None:
            self._warn("write", cause)
        self._close(blocks)
        try:
            os.unlink(blocks.path)
        except OSError:
            pass

    @staticmethod
    def _close(blocks: NewBlocks) -> None:
        if blocks.fd >= 0:
            os.close(blocks.fd)
            blocks.fd = -1

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
                with self._index_lock:
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
