"""Conditional writes: an upload that must not replace what its writer did not see, so that two hosts
writing one bucket never silently overwrite each other (SEMANTICS.md "Two hosts, one object").

`WriteCondition` is what the committer asks for; `ConditionalWrites` is what a store's server enforces
(a store's `conditional_writes()` declares it, or probes once per remote: S3); the helpers below are
for providers whose only native form is "create, never replace" (COS v4 insertOnly, WCS overwrite=0).
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Callable, Iterator

from ..errors import AlreadyExists, NotSupported, PreconditionFailed

@dataclasses.dataclass(frozen=True)
class WriteCondition:
    """What an upload may replace. `etag` None: only create, never replace an object (If-None-Match: *,
    COS v4 insertOnly=1, the WCS policy's overwrite=0); an ETag: replace only the object of that ETag
    (If-Match). A store that does not enforce a condition (see ConditionalWrites) is never given one."""

    etag: str | None = None

    @property
    def absent(self) -> bool:
        return self.etag is None


@dataclasses.dataclass(frozen=True)
class ConditionalWrites:
    """The write conditions a store's server enforces atomically with the write itself (so two hosts
    never silently overwrite each other). Where one is not enforced, the committer falls back to a HEAD
    before the upload, which leaves a window. Unlike Capabilities this may be found by asking the
    server: a store's `conditional_writes()` declares it, or probes once (S3) and keeps the answer."""

    absent: bool = False            # a single PUT with WriteCondition() (create only)
    match: bool = False             # a single PUT with WriteCondition(etag) (replace only that version)
    absent_multipart: bool = False  # the same two, enforced when a multipart upload completes
    match_multipart: bool = False
    how: str = "none"               # how it is known and sent, for the log and `storefs status`

    def enforces(self, condition: WriteCondition, multipart: bool) -> bool:
        if condition.absent:
            return self.absent_multipart if multipart else self.absent
        return self.match_multipart if multipart else self.match


NO_CONDITIONAL_WRITES = ConditionalWrites()


class ProbedOnce:
    """A ConditionalWrites found by `probe` the first time it is needed, then kept: one probe per remote,
    however many threads ask at once. A probe that raises (the server unreachable) is asked again next time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: ConditionalWrites | None = None

    def get(self, probe: Callable[[], ConditionalWrites]) -> ConditionalWrites:
        with self._lock:   # held through the probe: the others wait for its answer rather than probe too
            if self._found is None:
                self._found = probe()
            return self._found


def create_only(condition: WriteCondition | None, provider: str) -> bool:
    """Whether to send a provider's "do not overwrite" form, whose server enforces nothing else: an
    If-Match it cannot enforce is refused, never silently dropped (the committer never sends one)."""
    if condition is not None and not condition.absent:
        raise NotSupported(f"{provider} cannot make a write conditional on the object's ETag")
    return condition is not None


@contextlib.contextmanager
def exists_refusal(condition: WriteCondition | None) -> Iterator[None]:
    """A create-only write refused because the key exists (COS -177, WCS 614: AlreadyExists) is a
    failed precondition."""
    try:
        yield
    except AlreadyExists as exc:
        if condition is None:
            raise
        raise PreconditionFailed(str(exc), detail=exc.detail, code=exc.code) from None


def no_condition(condition: WriteCondition | None, provider: str) -> None:
    """For a store that enforces no condition: one given anyway is refused, never silently dropped."""
    if condition is not None:
        raise NotSupported(f"{provider} cannot make a write conditional")
