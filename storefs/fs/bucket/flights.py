"""Blocks being fetched into the block cache right now, by any handle of the mount.

Each open handle has its own reader (reader.py), but the blocks they fetch go into one cache. Without
a common record, two handles of one object fetch the same block twice: a program reading at random
while the page-cache warmer (fuse/pagecache.py) reads the object sequentially through its own handle
would cost its 1 MiB blocks twice, and the read traffic of a random reader would exceed the object.
So a reader claims the blocks it is about to fetch; a block claimed by another reader is waited for
(and then read from the cache) or, in a background run, simply left out.
"""
from __future__ import annotations

import concurrent.futures
import threading
from typing import Hashable, Iterable

Block = tuple[Hashable, ...]   # (location, key, etag, number): the block cache's key


class Flights:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flying: dict[Block, concurrent.futures.Future] = {}

    def claim(self, blocks: Iterable[Block]) -> tuple[concurrent.futures.Future, list[Block]]:
        """Claim those of `blocks` nobody is fetching: a future to finish (land()) once they are in
        the cache or given up, and the blocks claimed."""
        flight: concurrent.futures.Future = concurrent.futures.Future()
        claimed: list[Block] = []
        with self._lock:
            for block in blocks:
                if block not in self._flying:
                    self._flying[block] = flight
                    claimed.append(block)
        return flight, claimed

    def land(self, flight: concurrent.futures.Future, blocks: Iterable[Block]) -> None:
        """The claimed `blocks` are in the cache (or their fetch failed): waiters read the cache."""
        with self._lock:
            for block in blocks:
                if self._flying.get(block) is flight:
                    del self._flying[block]
        if not flight.done():
            flight.set_result(None)

    def wait(self, block: Block, timeout: float) -> bool:
        """Wait (up to `timeout` s) for another reader's fetch of `block`; False if none is flying."""
        with self._lock:
            flight = self._flying.get(block)
        if flight is None:
            return False
        try:
            flight.result(timeout)
        except concurrent.futures.TimeoutError:
            pass
        return True


FLIGHTS = Flights()   # one per process: every mount's readers share the record (the key names the bucket)
