"""The upload queue: closed files wait `delay` seconds (so that a chmod, utimens or rename right after
close costs nothing remote), then worker threads upload them in FIFO order of first close. Files the
filesystem calls heavy (large ones) go at most `heavy_limit` at a time; the others pass them meanwhile.

A failed upload stays queued and is retried with jittered exponential backoff (capped), its error shown
in `storefs status`; its data never leaves the staging area until an upload succeeds. `drain()` makes
everything due at once and waits (unmount, SIGTERM, `storefs flush`).

The queue knows nothing of storage: `upload(item)` is the filesystem's function, which raises on failure
and `Busy` when the file is open for writing again. A busy file leaves the queue (its last close queues
it again), so that `storefs flush` and unmount never wait for a file some program keeps open.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable, Protocol

from ...errors import Transient
from ...wire.retry import RetryPolicy

log = logging.getLogger(__name__)

# A failed upload waits 1, 2, 4 … 60 s (each drawn from the upper half) and is never given up.
UPLOAD_RETRY = RetryPolicy(base_delay=1.0, max_delay=60.0, jitter="half")
# The longest an idle worker sleeps before it looks at the queue again. A file due later than that
# needs no wake-up: with a delay that long, a close costs no worker a wake-up and a walk of the queue.
# With a shorter one (the default, 0.2 s) one idle worker, the timekeeper, sleeps until the next file
# is due and the others until they are told; a close wakes a worker only if it is due before the
# timekeeper wakes. (Before, every idle worker slept until the next file was due: each file woke all
# of them, ~12 context switches per small file with four workers.)
WORKER_NAP = 1.0


class Queued(Protocol):
    """What the queue needs of a file (an OpenFile): its path, for messages."""
    path: str


class Busy(Exception):
    """The file is being written again: its upload waits for the next close."""


@dataclasses.dataclass
class Item:
    file: Queued              # the OpenFile
    due: float
    attempts: int = 0
    last_error: str = ""
    bytes_sent: int = 0
    in_flight: bool = False
    heavy: bool = False       # counted against the heavy uploads' limit while in flight
    again: bool = False       # scheduled again while in flight: a Busy answer must not drop it
    permanent: bool = False   # the last failure was not transient: waiting will not help a drain
    first_queued: float = dataclasses.field(default_factory=time.time)


class WriteBack:
    def __init__(self, upload: Callable[[Item], None], *, delay: float, workers: int,
                 on_change: Callable[[], None] = lambda: None, heavy_limit: int | None = None,
                 is_heavy: Callable[[Queued], bool] = lambda file: False) -> None:
        """`workers` uploads at once, of which at most `heavy_limit` (None: any number) of files for
        which `is_heavy` says so (large files, whose upload holds parts in memory and a share of the
        bandwidth); the others (one small PUT each) mostly wait on the server's answer."""
        self._upload = upload
        self._heavy_limit = heavy_limit
        self._is_heavy = is_heavy
        self._heavy_in_flight = 0
        self.delay = delay
        self._on_change = on_change
        # Two conditions on one lock: workers wait for due items on `_cond`; drain() waits on
        # `_settled` for the queue to empty, so a finished upload wakes no idle worker.
        lock = threading.RLock()
        self._cond = threading.Condition(lock)
        self._settled = threading.Condition(lock)
        self._items: dict[int, Item] = {}     # insertion order = FIFO order of first close
        self._draining = False
        self._stopping = False
        # When the timekeeper (the one idle worker sleeping until the next file is due) wakes; None:
        # no worker keeps the time, a close must wake one.
        self._timekeeper: float | None = None
        self._workers = [threading.Thread(target=self._work, name=f"upload-{i}", daemon=True)
                         for i in range(workers)]
        for worker in self._workers:
            worker.start()

    # -- the filesystem's side ---------------------------------------------------------------------

    def schedule(self, file: Queued, *, now: bool = False) -> None:
        """Queue `file` for upload after the delay (counted from its last close)."""
        with self._cond:
            item = self._items.get(id(file))
            due = time.monotonic() + (0 if now or self._draining else self.delay)
            if item is None:
                self._items[id(file)] = Item(file, due)
            elif item.in_flight:
                item.again = True
                due = None   # the worker uploading it goes again when done
            elif item.attempts == 0:
                item.due = due
            else:
                due = None   # failing: its backoff stands
            if due is not None and due - time.monotonic() < WORKER_NAP \
                    and (self._timekeeper is None or due < self._timekeeper):
                self._cond.notify()
        self._on_change()

    def discard(self, file: Queued) -> None:
        with self._cond:
            item = self._items.get(id(file))
            if item is not None and not item.in_flight:
                del self._items[id(file)]
                self._settled.notify_all()
        self._on_change()

    def is_queued(self, file: Queued) -> bool:
        with self._cond:
            return id(file) in self._items

    def progress(self, file: Queued, sent: int) -> None:
        with self._cond:
            item = self._items.get(id(file))
            if item is not None:
                item.bytes_sent = sent

    def count(self) -> int:
        with self._cond:
            return len(self._items)

    def pending(self) -> list[Item]:
        with self._cond:
            return [dataclasses.replace(item) for item in self._items.values()]

    # -- draining ------------------------------------------------------------------------------------

    def drain(self, timeout: float) -> list[Item]:
        """Upload everything now and wait up to `timeout` seconds. Returns what is still pending."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._draining = True
            for item in self._items.values():
                item.due = min(item.due, time.monotonic())
            self._cond.notify_all()
            while self._items and time.monotonic() < deadline:
                if all(item.permanent and not item.in_flight for item in self._items.values()):
                    break  # only uploads the server refuses for good are left: report them now
                # Items that failed since draining began have a later due time; keep them retrying.
                self._settled.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            self._draining = False
            return [dataclasses.replace(item) for item in self._items.values()]

    def flush_soon(self) -> None:
        """Make every queued file due now, without waiting (SIGUSR1 from `storefs flush`)."""
        with self._cond:
            for item in self._items.values():
                if item.attempts == 0:
                    item.due = min(item.due, time.monotonic())
                else:
                    item.due = min(item.due, time.monotonic() + 0.5)
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for worker in self._workers:
            worker.join(timeout=30)

    # -- workers -------------------------------------------------------------------------------------

    def _takeable(self, item: Item) -> bool:
        """Not in flight, and not a heavy file while the heavy uploads' limit is reached."""
        if item.in_flight:
            return False
        return (self._heavy_limit is None or self._heavy_in_flight < self._heavy_limit
                or not self._is_heavy(item.file))

    def _next_due(self) -> Item | None:
        now = time.monotonic()
        for item in self._items.values():
            if item.due <= now and self._takeable(item):
                return item
        return None

    def _next_wake(self) -> float:
        """When an idle worker must look at the queue again: the next due time, at most a nap away."""
        now = time.monotonic()
        waiting = [item.due for item in self._items.values() if self._takeable(item)]
        return min(now + WORKER_NAP, max(now + 0.01, min(waiting))) if waiting else now + WORKER_NAP

    def _idle(self) -> None:
        """Wait for work (under the lock): as the timekeeper until the next file is due, unless one
        already wakes by then; else until told (or a nap, in case a wake-up went to another worker)."""
        wake = self._next_wake()
        if self._timekeeper is not None and self._timekeeper <= wake:
            self._cond.wait(timeout=WORKER_NAP)
            return
        self._timekeeper = wake
        try:
            self._cond.wait(timeout=max(0.0, wake - time.monotonic()))
        finally:
            if self._timekeeper == wake:
                self._timekeeper = None

    def _work(self) -> None:
        while True:
            with self._cond:
                item = None
                while not self._stopping:
                    item = self._next_due()
                    if item is not None:
                        break
                    self._idle()
                if self._stopping:
                    return
                item.in_flight = True
                item.again = False  # only a schedule during this try counts
                if self._heavy_limit is not None and self._is_heavy(item.file):
                    item.heavy = True
                    self._heavy_in_flight += 1
                if self._timekeeper is None and any(self._takeable(queued) for queued in self._items.values()):
                    self._cond.notify()   # another idle worker keeps the time for the files still waiting
            try:
                self._upload(item)
            except Busy:
                with self._cond:
                    self._landed(item)
                    if item.again:  # its last writer closed meanwhile: upload after the delay
                        item.again = False
                        item.due = time.monotonic() + max(self.delay, 1.0)
                    else:  # still open for writing: the last close queues it again
                        self._items.pop(id(item.file), None)
                    self._settled.notify_all()
                self._on_change()
                continue
            except Exception as exc:  # keep the data, report, retry later
                with self._cond:
                    self._landed(item)
                    item.attempts += 1
                    item.last_error = f"{exc.__class__.__name__}: {exc}"
                    item.permanent = not isinstance(exc, Transient)
                    item.due = time.monotonic() + UPLOAD_RETRY.delay(item.attempts)
                    self._settled.notify_all()
                log.error("upload of %s failed (attempt %d): %s; it stays staged and is retried",
                          item.file.path, item.attempts, exc)
                self._on_change()
                continue
            with self._cond:
                self._landed(item)
                if item.again:  # closed again after changes during the upload: go again
                    item.again = False
                    item.due = time.monotonic() + (0 if self._draining else self.delay)
                else:
                    self._items.pop(id(item.file), None)
                self._settled.notify_all()
            self._on_change()

    def _landed(self, item: Item) -> None:
        """An upload try of `item` ended, whatever its outcome (lock held)."""
        item.in_flight = False
        if item.heavy:
            item.heavy = False
            self._heavy_in_flight -= 1
            self._cond.notify()   # a heavy file that waited for the limit may go now
