"""Waiting for a retrieval, restore or inventory job: the pauses between two looks at its progress.

Every wait of the retrieval wing (an open that waits for a vault job or an archive-class restore,
`storefs restore --wait`, `storefs vault refresh --wait`) looks, then pauses, then looks again. The
pauses come from the project's one backoff policy (`wire.retry.RetryPolicy`, without jitter: a poll
of one job spreads no herd), from `poll_min` doubling up to `poll_max` seconds; a deadline bounds the
whole wait and the stop event of an unmounting filesystem cuts it short.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..wire.retry import RetryPolicy
from .report import RestoreReport


class JobPoll:
    """The pauses of one wait. Use: `while not done(): if not poll.pause(): give up`."""

    def __init__(self, poll_min: float, poll_max: float, timeout: float | None,
                 stopping: threading.Event) -> None:
        self._policy = RetryPolicy(base_delay=poll_min, max_delay=poll_max, jitter="none")
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._stopping = stopping
        self._pauses = 0

    def pause(self) -> bool:
        """Sleep until the next look (at most until the deadline). False, without sleeping, once the
        deadline has passed; False after waking if the filesystem is stopping."""
        self._pauses += 1
        pause = self._policy.delay(self._pauses)
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                return False
            pause = min(pause, remaining)
        return not self._stopping.wait(pause)


def follow_restores(report: RestoreReport, poll: JobPoll | None, update: Callable[[], None],
                    progress: Callable[[int, int], None] | None) -> RestoreReport:
    """`storefs restore` once its jobs are requested: with a `poll` (--wait), `update()` the items
    after each pause until every one is done or the poll gives up (`timed_out`); `progress(done,
    total)` at the start and after each round."""
    total = len(report.items)
    if progress:
        progress(report.done, total)
    while poll is not None and report.done < total:
        if not poll.pause():
            report.timed_out = True
            break
        update()
        if progress:
            progress(report.done, total)
    return report
