"""What a running mount tells `storefs status` and `storefs flush`, through files in the runtime dir.

The daemon's main thread is inside libfuse's C loop, where Python signal handlers never run, so the
mount talks through files instead: a reporter thread rewrites `status-<id>.json` when something changed
(at most twice a second) and answers a flush request (`flush-<id>.req`) by making every queued upload
due at once. No sockets, nothing to secure beyond the runtime directory (0700).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

from .fs.bucket.blockcache import BlockCache
from .fs.bucket.committer import Committer
from .fs.bucket.staging import Staging
from .fuse.requests import REQUESTS
from .wire.retry import STATS

log = logging.getLogger(__name__)


def _digest(mountpoint: str) -> str:
    return hashlib.sha1(os.path.abspath(mountpoint).encode()).hexdigest()[:16]


def status_path(runtime: Path, mountpoint: str) -> Path:
    return runtime / f"status-{_digest(mountpoint)}.json"


def flush_request_path(runtime: Path, mountpoint: str) -> Path:
    return runtime / f"flush-{_digest(mountpoint)}.req"


PENDING_SHOWN = 100   # uploads listed one by one (oldest first; failing ones always); the rest are counted
# With more pending than this, the status file is rewritten at most twice a second. Below it, every
# 50 ms while the queue changes: `storefs status` right after a burst of closes shows them all. That
# costs a burst of small files ~6% of the GIL (py-spy --gil); a status asked for on demand would not.
BUSY_QUEUE = 100


def snapshot(committer: Committer, staging: Staging, mountpoint: str, remote: str,
             cache: BlockCache | None = None, cache_limit: int = 0) -> dict:
    queue = committer.queue
    pending = []
    count = total = sent = failing = 0
    for item in queue.pending():
        opened = item.file
        size = opened.current_attrs().size
        count, total, sent = count + 1, total + size, sent + item.bytes_sent
        failing += bool(item.last_error)
        if len(pending) < PENDING_SHOWN or item.last_error:
            pending.append({
                "path": opened.path, "size": size, "bytes_sent": item.bytes_sent,
                "attempts": item.attempts, "last_error": item.last_error,
                "state": "uploading" if item.in_flight else "waiting",
                "queued": item.first_queued,
            })
    return {
        "pid": os.getpid(), "mountpoint": mountpoint, "remote": remote, "updated": time.time(),
        "pending": pending, "pending_count": count, "pending_bytes": total, "pending_sent": sent,
        "pending_failing": failing,
        "conflicts": [{"path": c.path, "saved_as": c.saved_as, "when": c.when} for c in committer.conflicts],
        "staging_dir": str(staging.directory), "staging_bytes": staging.used_bytes(),
        "staging_limit": staging.max_bytes, "retries": STATS.retries, "gave_up": STATS.gave_up,
        "read_cache_bytes": cache.volume() if cache is not None else 0, "read_cache_limit": cache_limit,
        "requests": REQUESTS.snapshot(),
    }


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def status_line(report: dict) -> str:
    """One line for a supervisor (systemd's STATUS=): what is pending, and whether it fails."""
    count = report.get("pending_count", 0)
    if not count:
        line = "all uploaded"
    else:
        line = (f"{count} upload(s) pending, {human_size(report.get('pending_sent', 0))} of "
                f"{human_size(report.get('pending_bytes', 0))} sent")
        if report.get("pending_failing"):
            line += f", {report['pending_failing']} failing"
    if report.get("conflicts"):
        line += f"; {len(report['conflicts'])} conflict(s)"
    return line


class StatusReporter:
    def __init__(self, committer: Committer, staging: Staging, runtime: Path, mountpoint: str, remote: str,
                 changed: threading.Event, cache: BlockCache | None = None, cache_limit: int = 0) -> None:
        """`changed`: set by the upload queue whenever it changes (mounting.build_fs's on_change);
        `cache`: the read block cache whose use the status shows."""
        self.committer, self.staging, self.mountpoint, self.remote = committer, staging, mountpoint, remote
        self.cache, self.cache_limit = cache, cache_limit
        self._listeners: list[Callable[[dict], None]] = []
        self.path = status_path(runtime, mountpoint)
        self.flush_path = flush_request_path(runtime, mountpoint)
        self._changed = changed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status", daemon=True)

    def add_listener(self, listener: Callable[[dict], None]) -> None:
        """Called with every status written (e.g. systemd's STATUS= line), in the reporter's thread."""
        self._listeners.append(listener)

    def start(self) -> None:
        self._changed.set()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.path.unlink(missing_ok=True)
        self.flush_path.unlink(missing_ok=True)

    def _run(self) -> None:
        last_write = 0.0
        last_counts = (-1, -1, -1)
        while not self._stop.is_set():
            # Wake on a change (written within ~50 ms, or 0.5 s while thousands of small files are
            # queued: each snapshot walks the queue) or every half second to look for a flush request.
            self._changed.wait(0.5)
            time.sleep(0.5 if self.committer.queue.count() > BUSY_QUEUE else 0.05)
            if self.flush_path.exists():
                self.flush_path.unlink(missing_ok=True)
                log.warning("flush requested: uploading everything queued now")
                self.committer.queue.flush_soon()
                self._changed.set()
            busy = self.committer.queue.count() > 0   # not pending(): that copies every queued item
            # Retries made by reads alone change nothing else: without this the "retries" a status
            # shows on a read-only workload were up to 10 s old (found by tests/fuse/test_faults.py).
            # Likewise the kernel's requests: at most one rewrite per wake-up while they come.
            counts = (STATS.retries, STATS.gave_up, REQUESTS.total())
            if self._changed.is_set() or busy or counts != last_counts or time.monotonic() - last_write > 10:
                last_counts = counts
                self._changed.clear()
                self.write()
                last_write = time.monotonic()

    def write(self) -> None:
        try:
            report = snapshot(self.committer, self.staging, self.mountpoint, self.remote, self.cache,
                              self.cache_limit)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(report))
            os.replace(tmp, self.path)
            for listener in self._listeners:
                listener(report)
        except Exception as exc:  # status is a courtesy; never let it disturb the mount
            log.warning("cannot write status file %s: %s", self.path, exc)


def read_status(runtime: Path, mountpoint: str) -> dict | None:
    try:
        return json.loads(status_path(runtime, mountpoint).read_text())
    except (OSError, ValueError):
        return None
