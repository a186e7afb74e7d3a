"""A clock for the local vault's jobs that moves only when a test says so."""
from __future__ import annotations

import threading
import time


class ManualClock:
    """A clock that moves only when told to (tests): `advance(hours * 3600)`."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
