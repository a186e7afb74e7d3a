"""Reading a remote object through one open handle: 1 MiB blocks from the disk cache, ranged GETs for
the missing ones, and read-ahead on sequential access.

The kernel asks for at most 128 KiB per read on libfuse 2 (1 MiB on libfuse 3), so a read must not cost a request:
blocks are fetched in runs (one GET for several blocks). With a block cache (the usual case) a run is
written straight into a new cache file (blockcache.reserve: one file per run; on plain HTTP the bytes
never pass through Python) and reads hand the pieces of that file to their sink (read_to: spliced into
the FUSE edge's pipe, or copied into a reply buffer; fs/sinks.py), so a cold sequential read holds no
object bytes in memory. Without a cache, or when the cache cannot take a run (a full
disk), blocks are kept in a small in-memory LRU per handle instead.
On a sequential run the read-ahead window doubles from 1 block up to `max_window`, and the runs ahead
are fetched in parallel in the background: up to MAX_RUNS_IN_FLIGHT GETs under way, the next started
as soon as one ends (not at the next read, which may be waiting for a slower run). A random read
fetches just the block it touches (1 MiB), never the whole object in the foreground; a handle that
keeps reading at random has the whole object read in the background through the mount (objects up to
FILL_MAX and a quarter of the cache, pagecache.py), so that later random reads cost a disk read of the
piece asked for, and soon only the kernel's page cache. Objects larger than that keep block-wise reads.
Handles share a record of the blocks being fetched (flights.py): a random read of a block that the
background read has under way waits for it, and a background run leaves out blocks already cached or
fetched on demand, so that every block crosses the wire once (a random reader's traffic is the object).
Every GET carries the ETag seen at open (If-Match), so a remote overwrite mid-read fails with ESTALE
instead of mixing two versions.
"""
from __future__ import annotations

import collections
import concurrent.futures
import threading
from typing import Callable

from ...errors import LocalWriteError, ProtocolError
from ...localfiles import write_file
from ...store.contract import ObjectStore
from ..sinks import BufferSink, Sink
from .blockcache import BLOCK, BlockCache
from .flights import FLIGHTS
from .ranges import piece_sizes, read_all_pieces, read_to_files, stretches
from .runfiles import OpenRuns

RUN_BLOCKS = 8          # blocks per background GET (8 MiB)
MAX_RUNS_IN_FLIGHT = 4  # background GETs per handle
MEMORY_BLOCKS = 16      # blocks kept in memory per handle (without a usable cache)
KNOWN_FILES = 1024      # blocks this handle fetched, remembered by their place in a cache file
FILES_MIN_WINDOWS = 4   # read-ahead windows a cache must hold to be filled in place (see __init__)
FILL_AFTER = 4          # random (non-sequential) reads on one handle before the whole object is read
REFILL_AFTER = 4096     # further random reads that reach us (page cache lost: evicted, dropped) before it is read again
FILL_MAX = 1 << 30      # largest object read whole in the background
LARGE_READ = 256 * 1024 # a first read this large is taken as the start of a sequential run
COPY_CHUNK = 8 * 1024 * 1024  # bytes per read of copy_to_file
NEAR_BLOCKS = 4         # a read this close to where the last one ended is still sequential
FLIGHT_WAIT = 30.0      # seconds a read waits for another handle's GET of its block before its own

_pool = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="readahead")


def _take_piece(sink: Sink, number: int, block: bytes, start: int, length: int) -> None:
    """Bytes [start, start+length) of block `number`, held in memory, to `sink`; a block too short for
    them (never expected: the fetch checks lengths) fails the read rather than send fewer bytes."""
    piece = memoryview(block)[start:start + length]
    if len(piece) != length:
        raise ProtocolError(f"block {number} holds {len(block)} bytes, short of {start + length}")
    sink.take_bytes(piece)


class RangeReader:
    def __init__(self, store: ObjectStore, key: str, size: int, etag: str | None,
                 max_window: int = 64 * 1024 * 1024, cache: BlockCache | None = None,
                 location: str = "", on_random_access: Callable[[], None] | None = None) -> None:
        self.store, self.key, self.size, self.etag = store, key, size, etag
        self.cache = cache if etag else None  # without an ETag, cached blocks could not be trusted
        self.location = location
        self.max_window_blocks = max(1, max_window // BLOCK)
        # A cache smaller than a few read-ahead windows would evict fetched blocks before they are
        # read (and they would be fetched again): such a cache is filled the old way, from memory.
        self._into_files = self.cache is not None \
            and self.cache.size_limit >= FILES_MIN_WINDOWS * max(max_window, RUN_BLOCKS * BLOCK)
        self._lock = threading.RLock()   # re-entered: a run already done calls _run_done at once
        self._memory: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        # block -> (run file, offset) in the cache
        self._files: collections.OrderedDict[int, tuple[str, int]] = collections.OrderedDict()
        self._runs = OpenRuns()   # the run files of those blocks, kept open between reads
        self._inflight: dict[int, concurrent.futures.Future] = {}
        self._window = 1
        self._next_offset = 0
        self._blocks = (size + BLOCK - 1) // BLOCK
        self._random_reads = 0
        self._on_random_access = on_random_access  # see _random_access_locked
        self._prefetched_after = 0   # the block after which the last read-ahead window starts
        self._closed = False

    # -- fetching ------------------------------------------------------------------------------------

    def _fetch_run(self, first: int, count: int) -> dict[int, bytes]:
        """Blocks [first, first+count) with one GET: into a cache file (nothing returned; the blocks'
        places are remembered), or into memory when there is no cache or it cannot take them."""
        if not self._into_files:
            return self._fetch_to_memory(first, count)
        assert self.cache is not None
        start, end = first * BLOCK, min(self.size, (first + count) * BLOCK)
        blocks = self.cache.reserve(piece_sizes(start, end, BLOCK))
        if blocks is None:
            return self._fetch_to_memory(first, count)
        try:
            read_to_files(self.store, self.key, start, end, end - start, [blocks.fd], if_match=self.etag)
        except LocalWriteError as exc:   # the cache disk, not the remote: read into memory instead
            self.cache.abandon(blocks, exc.cause)
            return self._fetch_to_memory(first, count)
        except BaseException:
            self.cache.abandon(blocks)
            raise
        places = self.cache.adopt(blocks, self.location, self.key, self.etag or "", first)
        if places is None:
            return self._fetch_to_memory(first, count)
        with self._lock:
            for number, place in enumerate(places, start=first):
                self._files[number] = place
                self._files.move_to_end(number)
            while len(self._files) > KNOWN_FILES:
                self._files.popitem(last=False)
        return {}

    def _fetch_to_memory(self, first: int, count: int) -> dict[int, bytes]:
        start = first * BLOCK
        end = min(self.size, (first + count) * BLOCK)
        pieces = read_all_pieces(self.store, self.key, start, end, BLOCK, if_match=self.etag)
        blocks = {first + i: piece for i, piece in enumerate(pieces)}
        if self.cache is not None:
            for number, block in blocks.items():
                self.cache.put(self.location, self.key, self.etag or "", number, block)
        return blocks

    # -- whole-object reading on random access ------------------------------------------------------

    def _random_access_locked(self) -> None:
        """The FUSE edge's page-cache warmer (pagecache.py) reads the whole object through the mount,
        sequentially: that fills the disk cache on the way (read-ahead, parallel GETs) and the kernel's
        page cache at once. For objects the cache can reasonably hold; after FILL_AFTER random reads,
        and again after each REFILL_AFTER more: once the kernel holds the object, random reads no
        longer reach us, so that many mean its pages were lost (memory pressure, drop_caches; seen
        in benchmarks as 1-2k IOPS instead of 60k+ for the rest of a run). Filling again costs no
        GET: the blocks are in the disk cache (the warmer skips a path it is reading already)."""
        if self._on_random_access is None or self.cache is None \
                or self.size > min(FILL_MAX, self.cache.size_limit // 4):
            return
        self._on_random_access()

    def _remember_locked(self, blocks: dict[int, bytes]) -> None:
        for number, block in blocks.items():
            self._memory[number] = block
            self._memory.move_to_end(number)
        while len(self._memory) > MEMORY_BLOCKS:
            self._memory.popitem(last=False)

    def _have_locked(self, number: int) -> bool:
        return number in self._memory or number in self._inflight or number in self._files

    def _prefetch_locked(self, after: int) -> None:
        """Start background GETs for the window of blocks after `after`."""
        number = after + 1
        limit = min(self._blocks, after + 1 + self._window)
        # A run into cache files that has finished (its blocks wait in the cache to be read) no longer
        # counts: counted until read, finished runs held the GETs under way to about 2 of the 4
        # allowed (a cold sequential read at ~0.6x the raw client). Runs into memory count until read:
        # their blocks are held in memory until then.
        runs = len({id(f) for f in self._inflight.values() if not (self._into_files and f.done())})
        while number < limit and runs < MAX_RUNS_IN_FLIGHT:
            if self._have_locked(number):
                number += 1
                continue
            count = 1
            while (count < RUN_BLOCKS and number + count < limit
                   and not self._have_locked(number + count)):
                count += 1
            future = _pool.submit(self._fetch_uncached, number, count)
            for n in range(number, number + count):
                self._inflight[n] = future
            if self._into_files:
                future.add_done_callback(self._run_done)
            runs += 1
            number += count
        self._prefetched_after = after

    def _run_done(self, future: concurrent.futures.Future) -> None:
        """A run into cache files ended: start the next one of the window at once. Left to the next
        read, the GETs under way dwindled while the reader waited for a slow run (head-of-line)."""
        with self._lock:
            if not self._closed:
                self._prefetch_locked(self._prefetched_after)

    def _fetch_uncached(self, first: int, count: int) -> dict[int, bytes]:
        """Blocks [first, first+count) that the disk cache does not have and no other handle is
        fetching (flights.py): each stretch of them with one GET."""
        if not self._into_files:   # into memory: from the first block the cache lacks, with one GET
            number = first
            while number < first + count and self.cache is not None and self.cache.contains(*self._block(number)):
                number += 1
            return {} if number == first + count else self._fetch_run(number, first + count - number)
        flight, claimed = FLIGHTS.claim(self._block(n) for n in range(first, first + count))
        try:
            assert self.cache is not None
            missing = self.cache.missing(*self._block(first)[:3], [block[3] for block in claimed])
            for start, length in stretches(missing):
                self._fetch_run(start, length)
        finally:
            FLIGHTS.land(flight, claimed)
        return {}

    def _block(self, number: int) -> tuple[str, str, str, int]:
        """Block `number`'s key in the cache and in FLIGHTS."""
        return (self.location, self.key, self.etag or "", number)

    def _fetch_block(self, number: int) -> dict[int, bytes]:
        """Block `number` for a read that waits for it: from another handle's GET in flight, or with
        a GET of its own (claimed, so that a background run of another handle leaves it out)."""
        if not self._into_files:
            return self._fetch_run(number, 1)
        block = self._block(number)
        if FLIGHTS.wait(block, FLIGHT_WAIT):
            return {}
        flight, claimed = FLIGHTS.claim([block])
        try:
            return self._fetch_run(number, 1)
        finally:
            FLIGHTS.land(flight, claimed)

    def _wait(self, future: concurrent.futures.Future) -> None:
        """Wait for a background GET; its blocks (if it read into memory) join the LRU."""
        try:
            blocks = future.result()
        finally:
            with self._lock:
                for n in [n for n, f in self._inflight.items() if f is future]:
                    del self._inflight[n]
        with self._lock:
            self._remember_locked(blocks)

    # -- reading -------------------------------------------------------------------------------------

    def _from_memory(self, number: int, start: int, length: int, sink: Sink) -> bool:
        with self._lock:
            block = self._memory.get(number)
            if block is None:
                return False
            self._memory.move_to_end(number)
        _take_piece(sink, number, block, start, length)
        return True

    def _from_disk(self, number: int, start: int, length: int, sink: Sink) -> bool:
        if self.cache is None:
            return False
        with self._lock:
            place = self._files.get(number)
        mark = sink.taken
        if place is not None and self._runs.read_to(place, start, length, sink) == length:
            return True
        sink.undo_to(mark)
        if self.cache.read_to(self.location, self.key, self.etag or "", number, start, length, sink) == length:
            return True
        sink.undo_to(mark)
        return False

    def _piece_to(self, number: int, start: int, length: int, sink: Sink) -> None:
        """Bytes [start, start+length) of block `number` to `sink`: from memory, a GET in flight, the
        disk cache (just that piece), or a GET of the block."""
        if self._from_memory(number, start, length, sink):
            return
        with self._lock:
            future = self._inflight.get(number)
        if future is not None:
            self._wait(future)
            if self._from_memory(number, start, length, sink):
                return
        if self._from_disk(number, start, length, sink):
            return
        blocks = self._fetch_block(number)
        if not blocks and self._from_disk(number, start, length, sink):
            return
        if not blocks:   # fetched into the cache and evicted at once (a cache smaller than a block run)
            blocks = self._fetch_to_memory(number, 1)
        with self._lock:
            self._remember_locked(blocks)
        _take_piece(sink, number, blocks[number], start, length)

    def read_into(self, offset: int, into: memoryview) -> int:
        """Bytes from `offset` into `into` (a FUSE reply buffer), as many as fit and the object has;
        returns how many."""
        return self.read_to(offset, BufferSink(into))

    def read_to(self, offset: int, sink: Sink) -> int:
        """Bytes from `offset` to `sink`, as many as it asks for and the object has; returns how many.
        SinkSpoiled: a pipe sink holds an abandoned piece (serve the read again through a buffer)."""
        if offset >= self.size or not sink.size:
            return 0
        length = min(sink.size, self.size - offset)
        first, last = offset // BLOCK, (offset + length - 1) // BLOCK
        with self._lock:
            if self._next_offset == 0 and offset > 0 and length >= LARGE_READ:
                # A new handle that starts with a big read mid-file (a reopened sequential reader, the
                # page-cache warmer): sequential from here, not random.
                self._next_offset = offset
            expected = self._next_offset
            # libfuse 3 serves the kernel's read-ahead with parallel requests that arrive slightly out
            # of order: a read near where the last one ended is still sequential. Taking it for a
            # random one would reset the window (and start page-cache warming) in the middle of a cp.
            if offset == expected or (expected > 0 and abs(offset - expected) <= NEAR_BLOCKS * BLOCK):
                if offset + length > expected:  # new ground (not a straggler behind it)
                    # The window doubles whenever a read reaches a block the last one did not (every
                    # read of 1 MiB, or of just under it, which straddles blocks; every 8th of 128 KiB).
                    if last != (expected - 1) // BLOCK:
                        self._window = min(self._window * 2, self.max_window_blocks)
                    self._prefetch_locked(last)
                    self._next_offset = offset + length
            else:
                self._window = 1
                self._random_reads += 1
                if self._random_reads == FILL_AFTER or self._random_reads % REFILL_AFTER == 0:
                    self._random_access_locked()
                self._next_offset = offset + length
        done = 0
        for number in range(first, last + 1):
            start = max(offset, number * BLOCK) - number * BLOCK
            end = min(offset + length, (number + 1) * BLOCK) - number * BLOCK
            self._piece_to(number, start, end - start, sink)
            done += end - start
        return done

    def read(self, offset: int, length: int) -> bytes:
        buffer = bytearray(max(0, min(length, self.size - offset)))
        return bytes(buffer[:self.read_into(offset, memoryview(buffer))])

    def copy_to_file(self, fd: int) -> None:
        """The whole object into `fd` from offset 0, read as a sequential run (read-ahead, the block
        cache): how a file opened for writing is staged. A local write error is the OSError itself
        (ENOSPC on the staging disk reaches the caller as such)."""
        buffer = memoryview(bytearray(min(COPY_CHUNK, self.size)))
        offset = 0
        while offset < self.size:
            got = self.read_into(offset, buffer)
            if not got:
                break
            try:
                write_file(fd, buffer[:got], offset)
            except LocalWriteError as exc:
                raise exc.cause from None
            offset += got

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for future in set(self._inflight.values()):
                future.cancel()
            self._inflight.clear()
            self._memory.clear()
            self._files.clear()
        self._runs.close()
