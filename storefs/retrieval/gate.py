"""Archive-class objects in buckets (S3 GLACIER/DEEP_ARCHIVE, COS ARCHIVE, UFile ARCHIVE): restore on open.

Such an object is listed like any other, but a GET is refused until a restore request has made a
temporary copy readable (minutes to hours). `ArchiveGate` gives a bucket mount what a vault mount has:
`open()` of an archived object asks the server for its restore state (a fresh HEAD: the
`x-amz-restore` header is the only truth, and it survives remounts, so nothing is kept on disk),
requests a restore once if none is running, and fails with EAGAIN (the `vault_errno` mount option) or
waits up to `vault_wait` seconds (storefs.options.RetrievalOptions). Its state is also readable as the xattr `user.storefs.retrieval`.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Callable, Iterable

import cachetools

from ..errors import ArchiveNotReady, NotFound, StoreError
from ..isotime import iso8601
from ..options import RetrievalOptions
from ..store.contract import ObjectInfo, ObjectStore, iter_list
from .poll import JobPoll, follow_restores
from .report import RestoreItem, RestoreReport

log = logging.getLogger(__name__)

XATTR_STORAGE_CLASS = "user.storefs.storage_class"
XATTR_RETRIEVAL = "user.storefs.retrieval"

_ONGOING = re.compile(r'ongoing-request\s*=\s*"(true|false)"', re.IGNORECASE)
_EXPIRY = re.compile(r'expiry-date\s*=\s*"([^"]+)"', re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class RestoreState:
    """What HEAD says about one object."""

    archived: bool                 # in an archive storage class
    ongoing: bool = False          # a restore is running
    expiry: float | None = None    # the restored copy is readable until then (epoch seconds)
    restored: bool = False         # a restored copy exists now

    @property
    def readable(self) -> bool:
        return not self.archived or self.restored


def restore_state(info: ObjectInfo, archive_classes: frozenset[str]) -> RestoreState:
    """Parse `x-amz-restore` (`ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"`)."""
    if (info.storage_class or "").upper() not in archive_classes:
        return RestoreState(archived=False)
    header = info.meta.get("x-amz-restore", "")
    ongoing = _ONGOING.search(header)
    if ongoing is None:
        return RestoreState(archived=True)
    if ongoing.group(1).lower() == "true":
        return RestoreState(archived=True, ongoing=True)
    expiry_match = _EXPIRY.search(header)
    expiry = None
    if expiry_match:
        try:
            expiry = parsedate_to_datetime(expiry_match.group(1)).timestamp()
        except (TypeError, ValueError):
            log.warning("unparsable x-amz-restore expiry %r", expiry_match.group(1))
    return RestoreState(archived=True, expiry=expiry, restored=True)


class ArchiveGate:
    """Restore-on-open for the archive-class objects of one bucket mount (thread-safe)."""

    def __init__(self, store: ObjectStore, options: RetrievalOptions,
                 stopping: threading.Event | None = None) -> None:
        self.store = store
        self.classes = store.capabilities.archive_classes
        self.options = options
        self.stopping = stopping or threading.Event()
        self._lock = threading.Lock()
        # key -> when this process asked for its restore (for "in-progress since …"); bounded.
        self._requested: cachetools.LRUCache[str, float] = cachetools.LRUCache(maxsize=100_000)

    def is_archived(self, info: ObjectInfo | None) -> bool:
        return info is not None and (info.storage_class or "").upper() in self.classes

    def state(self, key: str) -> tuple[ObjectInfo, RestoreState]:
        info = self.store.stat(key)
        return info, restore_state(info, self.classes)

    def request(self, key: str) -> bool:
        """Ask for a restore of `key`. True if this call started one."""
        started = self.store.restore(key, days=self.options.days, tier=self.options.tier)  # type: ignore[attr-defined]
        with self._lock:
            self._requested.setdefault(key, time.time())
        log.info("%s: %s restore requested for %d day(s): %s", key, self.options.tier, self.options.days,
                 "started" if started else "one was already running or done")
        return started

    def ensure_readable(self, key: str, path: str) -> ObjectInfo:
        """Return once `key` can be read; else start its restore (once) and raise ArchiveNotReady,
        after waiting up to `options.wait` seconds."""
        info, state = self.state(key)
        if state.readable:
            return info
        if not state.ongoing:
            self.request(key)
        poll = self._poll(self.options.wait)
        while True:
            if not poll.pause():
                raise self._not_ready(key, path)
            info, state = self.state(key)
            if state.readable:
                return info

    def _poll(self, timeout: float | None) -> JobPoll:
        return JobPoll(self.options.poll_min, self.options.poll_max, timeout, self.stopping)

    def _not_ready(self, key: str, path: str) -> ArchiveNotReady:
        exc = ArchiveNotReady(f"{path}: {self.describe_state(key, RestoreState(archived=True, ongoing=True))}; "
                              f"an archived object can be read once restored, try again later")
        exc.errno = self.options.errno
        return exc

    def describe_state(self, key: str, state: RestoreState) -> str:
        """The text of `user.storefs.retrieval`, as on vault mounts."""
        if not state.archived:
            return "not needed"
        if state.restored:
            return f"ready until {iso8601(state.expiry)}" if state.expiry else "ready"
        if state.ongoing:
            with self._lock:
                since = self._requested.get(key)
            return f"in-progress since {iso8601(since)}" if since else "in-progress"
        return "none"

    def restore(self, items: Iterable[tuple[str, str]], wait: bool = False, timeout: float | None = None,
                progress: Callable[[int, int], None] | None = None) -> RestoreReport:
        """`storefs restore` for (mount path, key) pairs of files: request what is not restored,
        then with `wait` poll until all are readable (or `timeout` seconds pass)."""
        report_items: list[RestoreItem] = []
        for path, key in items:
            item = RestoreItem(path, key, 0, "in-progress")
            try:
                info, state = self.state(key)
                item.size = info.size
                if state.readable:
                    item.state = "ready"
                elif not state.ongoing:
                    item.started_job = self.request(key)
            except StoreError as exc:
                item.state, item.message = "failed", str(exc)
            report_items.append(item)
        def update() -> None:
            for item in report_items:
                if item.done:
                    continue
                try:
                    if self.state(item.archive_id)[1].readable:
                        item.state = "ready"
                except StoreError as exc:
                    item.state, item.message = "failed", str(exc)

        poll = self._poll(timeout) if wait else None
        return follow_restores(RestoreReport(report_items), poll, update, progress)

    def archived_below(self, key: str) -> list[str]:
        """Keys of the archive-class objects at `key` (a file) or below it (a directory prefix)."""
        if key and not key.endswith("/"):
            try:
                info = self.store.stat(key)
                return [key] if self.is_archived(info) else []
            except NotFound:
                key += "/"
        found, seen = [], False
        for page in iter_list(self.store, key, delimiter=""):
            seen = seen or bool(page.objects)
            found += [info.key for info in page.objects if self.is_archived(info) and not info.key.endswith("/")]
        if key and not seen:
            raise NotFound(key)
        return found
