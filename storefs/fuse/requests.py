"""How many requests of each kind the kernel has sent this mount, by callback name (getattr, readdir,
read, …). `storefs status --json` shows them: what a command cost a mount is then visible without
tracing it (an `ls -l` that makes a getattr per entry, a read pattern in 4 KiB requests)."""
from __future__ import annotations

import threading


class RequestCounts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def note(self, what: str) -> None:
        with self._lock:
            self._counts[what] = self._counts.get(what, 0) + 1

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


REQUESTS = RequestCounts()   # one mount per process
