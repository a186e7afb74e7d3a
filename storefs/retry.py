"""Retrying transient failures with jittered exponential backoff, bounded in count and time.

Providers wrap each request (signing included, so a retry is signed afresh) in `call_with_retries`.
Only `Transient` errors are retried; everything else is an answer and goes straight up.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from typing import Callable, TypeVar

from .errors import Transient

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6           # total tries, the first included
    base_delay: float = 0.2     # seconds before the first retry, doubled each time
    max_delay: float = 8.0      # cap on one sleep
    deadline: float = 120.0     # no retry starts after this many seconds since the first try

    def delays(self) -> list[float]:
        """The nominal (un-jittered) sleeps between tries, for tests and docs."""
        return [min(self.max_delay, self.base_delay * 2 ** i) for i in range(self.attempts - 1)]


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
            # "Full jitter" (AWS architecture blog): uniform in [0, nominal], so a herd spreads out.
            nominal = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
            delay = min(random.uniform(0, nominal), max(0.0, policy.deadline - elapsed))
            STATS.note_retry()
            log.info("%s: %s; retry %d in %.2fs", what, _reason(what, exc), attempt, delay)
            sleep(delay)
    raise AssertionError("unreachable")
