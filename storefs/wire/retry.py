"""Retrying transient failures with jittered exponential backoff, bounded in count and time: the one
backoff policy of storefs (requests, the upload queue's retries, polls of retrieval and inventory jobs).

Providers wrap each request (signing included, so a retry is signed afresh) in `call_with_retries`.
Only `Transient` errors are retried; everything else is an answer and goes straight up.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from typing import Callable, Literal, TypeVar

from ..errors import Transient

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6           # total tries, the first included
    base_delay: float = 0.2     # seconds before the first retry, doubled each time
    max_delay: float = 8.0      # cap on one sleep
    deadline: float = 120.0     # no retry starts after this many seconds since the first try
    # How a sleep is drawn from its nominal value: "full" jitter, uniform in [0, nominal] (AWS
    # architecture blog: a herd of clients spreads out); "half", in [nominal / 2, nominal] (a queue
    # that must not retry at once); "none", the nominal value (a poll of a job's progress).
    jitter: Literal["full", "half", "none"] = "full"

    def nominal_delay(self, retry: int) -> float:
        """The un-jittered sleep before retry number `retry` (1-based): doubled each time, capped."""
        return min(self.max_delay, self.base_delay * 2 ** min(retry - 1, 64))

    def delay(self, retry: int) -> float:
        """The sleep before retry number `retry`, jittered as the policy says."""
        nominal = self.nominal_delay(retry)
        if self.jitter == "full":
            return random.uniform(0, nominal)
        if self.jitter == "half":
            return random.uniform(nominal / 2, nominal)
        return nominal

    def delays(self) -> list[float]:
        """The nominal (un-jittered) sleeps between tries, for tests and docs."""
        return [self.nominal_delay(retry) for retry in range(1, self.attempts)]


NO_RETRY = RetryPolicy(attempts=1)


class RetryStats:
    """Counts retries across a process, for `storefs status` and test reports."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.retries = 0
        self.gave_up = 0

    def note_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def note_gave_up(self) -> None:
        with self._lock:
            self.gave_up += 1


STATS = RetryStats()


def _reason(what: str, exc: Exception) -> str:
    """The exception's text without the operation `what` already names: errors usually start with
    it ("put 'x': 503 SlowDown"), and the log line names it first ("r: put 'x': put 'x': …")."""
    text = str(exc)
    operation = what.split(": ", 1)[-1]
    if operation and text.startswith(operation + ": "):
        return text[len(operation) + 2:]
    return text


def call_with_retries(fn: Callable[[], T], policy: RetryPolicy, *, what: str,
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """Run `fn`, retrying on Transient. Raises the last Transient once attempts or deadline run out."""
    started = time.monotonic()
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except Transient as exc:
            elapsed = time.monotonic() - started
            if attempt >= policy.attempts or elapsed >= policy.deadline:
                STATS.note_gave_up()
                log.warning("%s failed after %d tries in %.1fs: %s", what, attempt, elapsed, _reason(what, exc))
                raise
            delay = min(policy.delay(attempt), max(0.0, policy.deadline - elapsed))
            STATS.note_retry()
            log.info("%s: %s; retry %d in %.2fs", what, _reason(what, exc), attempt, delay)
            sleep(delay)
    raise AssertionError("unreachable")
