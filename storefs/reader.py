"""Reading a remote object through one open handle: 1 MiB blocks from the disk cache, ranged GETs for
the missing ones, and read-ahead on sequential access.

The kernel (fusepy, libfuse 2) asks for at most 128 KiB per read, so a read must not cost a request:
blocks are fetched in runs (one GET for several blocks) and kept in a small in-memory LRU per handle.
On a sequential run the read-ahead window doubles from 1 block up to `max_window`, and the runs ahead
are fetched in parallel in the background. A random read fetches just the block it touches (1 MiB),
never the whole object. Every GET carries the ETag seen at open (If-Match), so a remote overwrite
mid-read fails with ESTALE instead of mixing two versions.
"""
from __future__ import annotations

import collections
import concurrent.futures
import threading

from .blockcache import BLOCK, BlockCache
from .store import ObjectStore

RUN_BLOCKS = 8          # blocks per background GET (8 MiB)
MAX_RUNS_IN_FLIGHT = 4  # background GETs per handle
MEMORY_BLOCKS = 16      # blocks kept in memory per handle

_pool = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="readahead")


class RangeReader:
    def __init__(self, store: ObjectStore, key: str, size: int, etag: str | None,
                 max_window: int = 16 * 1024 * 1024, cache: BlockCache | None = None,
                 location: str = "") -> None:
        self.store, self.key, self.size, self.etag = store, key, size, etag
        self.cache = cache if etag else None  # without an ETag, cached blocks could not be trusted
        self.location = location
        self.max_window_blocks = max(1, max_window // BLOCK)
        self._lock = threading.Lock()
        self._memory: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._inflight: dict[int, concurrent.futures.Future] = {}
        self._window = 1
        self._next_offset = 0
        self._blocks = (size + BLOCK - 1) // BLOCK

    # -- fetching ------------------------------------------------------------------------------------

    def _fetch_run(self, first: int, count: int) -> dict[int, bytes]:
        start = first * BLOCK
        end = min(self.size, (first + count) * BLOCK)
        data = self.store.read_range(self.key, start, end, if_match=self.etag)
        blocks = {first + i: data[i * BLOCK:(i + 1) * BLOCK] for i in range(count)
                  if i * BLOCK < len(data)}
        if self.cache is not None:
            for number, block in blocks.items():
                self.cache.put(self.location, self.key, self.etag or "", number, block)
        return blocks

    def _remember_locked(self, blocks: dict[int, bytes]) -> None:
        for number, block in blocks.items():
            self._memory[number] = block
            self._memory.move_to_end(number)
        while len(self._memory) > MEMORY_BLOCKS:
            self._memory.popitem(last=False)

    def _have_locked(self, number: int) -> bool:
        return number in self._memory or number in self._inflight

    def _cached(self, number: int) -> bytes | None:
        if self.cache is None:
            return None
        return self.cache.get(self.location, self.key, self.etag or "", number)

    def _prefetch_locked(self, after: int) -> None:
        """Start background GETs for the window of blocks after `after`."""
        number = after + 1
        limit = min(self._blocks, after + 1 + self._window)
        runs = len({id(f) for f in self._inflight.values()})
        while number < limit and runs < MAX_RUNS_IN_FLIGHT:
            if self._have_locked(number):
                number += 1
                continue
            count = 1
            while (count < RUN_BLOCKS and number + count < limit
                   and not self._have_locked(number + count)):
                count += 1
            future = _pool.submit(self._fetch_or_cached, number, count)
            for n in range(number, number + count):
                self._inflight[n] = future
            runs += 1
            number += count

    def _fetch_or_cached(self, first: int, count: int) -> dict[int, bytes]:
        """Blocks [first, first+count): from the disk cache where present, one GET for the rest."""
        found: dict[int, bytes] = {}
        for number in range(first, first + count):
            block = self._cached(number)
            if block is None:
                break
            found[number] = block
        missing = first + len(found)
        if missing < first + count:
            found.update(self._fetch_run(missing, first + count - missing))
        return found

    def _block(self, number: int) -> bytes:
        with self._lock:
            block = self._memory.get(number)
            if block is not None:
                self._memory.move_to_end(number)
                return block
            future = self._inflight.get(number)
        if future is not None:
            try:
                blocks = future.result()
            finally:
                with self._lock:
                    for n in [n for n, f in self._inflight.items() if f is future]:
                        del self._inflight[n]
        else:
            blocks = self._fetch_or_cached(number, 1)
        with self._lock:
            self._remember_locked(blocks)
        return blocks[number]

    # -- reading -------------------------------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        if offset >= self.size or length <= 0:
            return b""
        length = min(length, self.size - offset)
        first, last = offset // BLOCK, (offset + length - 1) // BLOCK
        with self._lock:
            if offset == self._next_offset:
                if first != (offset - 1) // BLOCK or offset == 0:
                    self._window = min(self._window * 2, self.max_window_blocks)
                self._prefetch_locked(last)
            else:
                self._window = 1
            self._next_offset = offset + length
        parts = [self._block(n) for n in range(first, last + 1)]
        data = b"".join(parts) if len(parts) > 1 else parts[0]
        begin = offset - first * BLOCK
        return data[begin:begin + length]

    def close(self) -> None:
        with self._lock:
            for future in set(self._inflight.values()):
                future.cancel()
            self._inflight.clear()
            self._memory.clear()
