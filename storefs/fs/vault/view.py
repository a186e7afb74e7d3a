"""One vault of a vault mount: its tree, its inventory and the retrieval jobs of its archives.

The tree comes from the inventory cached on disk (state.py) plus the archives uploaded through
storefs that no inventory lists yet. Without a cached inventory the view adopts an inventory job
started earlier (its own record, or one `list_jobs` finds) or starts one, and swaps the tree in when
the job is done (`check_inventory`, which VaultFS's poller calls).

Opening an archive (`attempt`): cached bytes (tree hash verified when they were stored) are served;
else a retrieval job that has Succeeded has its output downloaded into the cache, verified; else a
job is started (or adopted, or the recorded one polled). A Failed job is reported once (JobFailed)
and the next open starts a new one; an expired job (unknown to the server, or completed more than
24 h ago) is forgotten and replaced at once.

The view knows nothing of the filesystem above it: it gets its vault, options, state, the service's
clock and the mount's stop event through its constructor. Locking: `lock` guards the tree and
inventory fields, `_start_lock` the first load; decisions shared with other processes take the flock
locks of VaultState, never nested and never while `lock` is held.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ...errors import CacheFull, NotFound, StoreError
from ...options import VaultOptions
from ...retrieval.poll import JobPoll
from ...retrieval.report import RestoreItem
from ...vaults.base import (JOB_OUTPUT_TTL, ArchiveInfo, ArchiveVault, JobAction, JobFailed, JobInfo, JobStatus,
                            Tier, TreeHashMismatch, iso8601, short_id)
from .names import FileNode, Tree, build_tree, name_of
from .state import Inventory, JobRecord, PendingInventory, UploadRecord, VaultState, archive_key

log = logging.getLogger(__name__)

# Treat job output as gone this long before the services drop it: a download must not start on
# output that vanishes under it.
EXPIRY_MARGIN = 600.0
# An upload an inventory has not listed this long after it was made was deleted elsewhere.
UPLOAD_GRACE = 7 * 24 * 3600.0
DOWNLOAD_HEADROOM = 64 << 20
JOBS_SNAPSHOT_TTL = 60.0


@dataclasses.dataclass
class RefreshReport:
    vault: str
    job_id: str | None
    state: str                      # in-progress | done | failed
    archives: int                   # in the tree now
    inventory_date: float | None
    message: str | None = None


class VaultView:
    """The tree, inventory and retrievals of one vault. `clock` is the service's clock (job dates
    are compared with it); `stopping` ends the waits of `refresh` when the mount goes away."""

    def __init__(self, name: str, vault: ArchiveVault, options: VaultOptions, state: VaultState,
                 clock: Callable[[], float], stopping: threading.Event) -> None:
        self.name = name
        self.vault = vault
        self.options = options
        self.tier = Tier(options.tier)  # the options hold its name; the vault API takes the enum
        self.state = state
        self.now = clock
        self.stopping = stopping
        self.lock = threading.Lock()
        self.tree = Tree()
        self.inventory: Inventory | None = None
        self.stamp: tuple[int, int] | None = None
        self.inventory_error: str | None = None
        self._start_lock = threading.Lock()
        self.started = False
        self.loaded_pending: PendingInventory | None = None  # a finished job activation read; see refresh()
        self._snapshot: tuple[float, dict[str, list[JobInfo]]] | None = None

    def __repr__(self) -> str:
        return f"VaultView({self.name!r})"

    # -- start and inventory ---------------------------------------------------------------------

    def activate(self) -> None:
        if self.started:
            return
        with self._start_lock:
            if not self.started:
                self._start()
                self.started = True

    def _start(self) -> None:
        self.state.remove_stale_temporaries()
        self._load()
        if self.inventory is None:
            try:
                self.ensure_inventory_job(adopt=True)
            except StoreError as exc:
                self.inventory_error = str(exc)
                log.error("vault %s: cannot start an inventory job: %s (retried by the poller)", self.name, exc)
        pending = self.state.pending_inventory()
        if pending is not None:
            try:
                self.check_inventory()
            except StoreError as exc:
                log.warning("vault %s: inventory job: %s", self.name, exc)
            with self.lock:
                if self.inventory is not None and self.inventory.job_id == pending.job_id:
                    self.loaded_pending = pending  # finished meanwhile and read just now: see refresh()

    def _load(self) -> None:
        """Read the cached inventory and the uploads from disk and rebuild the tree."""
        stamp = self.state.inventory_stamp()
        inventory = self.state.load_inventory()
        uploads = self.state.uploads()
        archives = list(inventory.archives) if inventory else []
        known = {a.archive_id for a in archives}
        for upload in uploads:
            if upload.archive.archive_id in known:
                self.state.remove_upload(upload.archive.archive_id)  # the inventory has it now
            elif inventory is not None and inventory.date > upload.archive.creation_date + UPLOAD_GRACE:
                log.info("vault %s: %s (uploaded %s) is in no inventory since: deleted elsewhere",
                         self.name, upload.path, iso8601(upload.archive.creation_date))
                self.state.remove_upload(upload.archive.archive_id)
            else:
                archives.append(upload.archive)
        tree = build_tree(archives)
        with self.lock:
            self.inventory, self.stamp, self.tree = inventory, stamp, tree

    def reload_if_changed(self) -> bool:
        if self.state.inventory_stamp() != self.stamp:
            self._load()
            return True
        return False

    def _newest_inventory_job(self) -> JobInfo | None:
        candidates = [j for j in self.vault.list_jobs() if j.action is JobAction.INVENTORY_RETRIEVAL
                      and (j.status is JobStatus.IN_PROGRESS or (j.succeeded and not self._expired(j)))]
        return max(candidates, key=lambda j: j.creation_date or 0.0, default=None)

    def ensure_inventory_job(self, *, adopt: bool) -> PendingInventory:
        """The pending inventory job: the recorded one, else (adopt) one the server knows, else new."""
        with self.state.lock("inventory"):
            pending = self.state.pending_inventory()
            if pending is not None:
                return pending
            job = self._newest_inventory_job() if adopt else None
            if job is not None:
                pending = PendingInventory(job.job_id, job.creation_date or self.now())
                log.info("vault %s: adopted inventory job %s", self.name, short_id(job.job_id))
            else:
                pending = PendingInventory(self.vault.start_inventory(), self.now())
                log.info("vault %s: started inventory job %s", self.name, short_id(pending.job_id))
            self.state.set_pending_inventory(pending)
            self.inventory_error = None
            return pending

    def check_inventory(self) -> bool:
        """Look at the pending inventory job once; swap its tree in if it is done. True if the tree
        changed (here, or because another process swapped a new inventory in)."""
        pending = self.state.pending_inventory()
        if pending is None:
            return self.reload_if_changed()
        try:
            info: JobInfo | None = self.vault.describe_job(pending.job_id)
        except NotFound:
            info = None
        if info is not None and info.status is JobStatus.IN_PROGRESS:
            return self.reload_if_changed()
        if info is None or info.status is JobStatus.FAILED or self._expired(info):
            reason = "expired" if info is None or info.succeeded else f"failed: {info.status_message}"
            with self.state.lock("inventory"):
                self.state.clear_pending_inventory(pending.job_id)
            self.inventory_error = f"inventory job {short_id(pending.job_id)} {reason}"
            log.error("vault %s: %s", self.name, self.inventory_error)
            return self.reload_if_changed()
        with self.state.lock("inventory"):
            if self.state.pending_inventory() == pending:  # nobody read it meanwhile
                archives = self.vault.read_inventory(pending.job_id)
                date = info.completion_date or self.now()
                current = self.state.load_inventory()
                if current is None or current.date <= date:
                    self.state.save_inventory(Inventory(date, pending.job_id, archives))
                self.state.clear_pending_inventory(pending.job_id)
                log.info("vault %s: inventory of %s: %d archives", self.name, iso8601(date), len(archives))
        self.inventory_error = None
        self._load()
        return True

    def refresh(self, wait: bool, timeout: float | None) -> RefreshReport:
        """Start an inventory job (or adopt the pending one while it is still valid); with `wait`,
        poll until it is done and its tree is in."""
        # Loading this view (activate, just before: `storefs vault refresh`) read a pending job that
        # had finished meanwhile: that job is the refresh asked for, not a reason to start (and pay
        # for) a second one. Honoured by the first refresh only.
        loaded, self.loaded_pending = self.loaded_pending, None
        if loaded is not None and self.state.pending_inventory() is None:
            with self.lock:
                inventory = self.inventory
            if inventory is not None and inventory.job_id == loaded.job_id:
                return self._refresh_report(loaded.job_id, "done")
        with self.state.lock("inventory"):
            pending = self.state.pending_inventory()
            if pending is not None:
                try:
                    info = self.vault.describe_job(pending.job_id)
                    if info.status is JobStatus.FAILED or self._expired(info):
                        pending = None
                except NotFound:
                    pending = None
                if pending is None:
                    (self.state.root / "inventory-job.json").unlink(missing_ok=True)
        pending = self.ensure_inventory_job(adopt=False)
        poll = JobPoll(self.options.poll_min, self.options.poll_max, timeout, self.stopping)
        while True:
            if self.state.pending_inventory() != pending:
                self._load()  # another thread or process read it
            else:
                self.check_inventory()
            if self.state.pending_inventory() != pending:
                break
            if not wait or not poll.pause():
                return self._refresh_report(pending.job_id, "in-progress")
        if self.inventory_error:
            return self._refresh_report(pending.job_id, "failed", self.inventory_error)
        return self._refresh_report(pending.job_id, "done")

    def _refresh_report(self, job_id: str, state: str, message: str | None = None) -> RefreshReport:
        with self.lock:
            return RefreshReport(self.name, job_id, state, len(self.tree),
                                 self.inventory.date if self.inventory else None, message)

    def inventory_status(self) -> str:
        pending = self.state.pending_inventory()
        with self.lock:
            inventory = self.inventory
        parts = []
        if inventory is not None:
            parts.append(f"from {iso8601(inventory.date)}")
        if pending is not None:
            parts.append(("refresh " if parts else "") + f"in-progress since {iso8601(pending.started)}")
        if self.inventory_error and pending is None:
            parts.append(self.inventory_error if parts else f"none ({self.inventory_error})")
        return "; ".join(parts) or "none"

    # -- the tree --------------------------------------------------------------------------------

    def lookup(self, rel: str) -> FileNode | str | None:
        """A FileNode, "dir", or None."""
        with self.lock:
            if self.tree.is_dir(rel):
                return "dir"
            return self.tree.file(rel)

    def listdir(self, rel: str) -> list[str]:
        with self.lock:
            return self.tree.listdir(rel)

    def dir_mtime(self, rel: str) -> float:
        with self.lock:
            return self.tree.dir_mtime.get(rel, 0.0)

    def files_below(self, rel: str) -> list[tuple[str, FileNode]]:
        with self.lock:
            return list(self.tree.files_below(rel))

    def path_of(self, archive_id: str) -> str | None:
        with self.lock:
            return self.tree.by_id.get(archive_id)

    def add_uploaded(self, archive: ArchiveInfo, rel: str) -> None:
        self.state.add_upload(UploadRecord(archive, rel))
        with self.lock:
            if not self.tree.exists(rel):
                self.tree.add(rel, FileNode(archive, _mtime_of(archive), rel))
                return
        self._load()  # a name clash after all: let the naming scheme place it

    # -- retrieval -------------------------------------------------------------------------------

    def _expired(self, info: JobInfo) -> bool:
        return (info.completed and info.completion_date is not None
                and self.now() >= info.completion_date + JOB_OUTPUT_TTL - EXPIRY_MARGIN)

    def jobs_by_archive(self, *, fresh: bool = False) -> dict[str, list[JobInfo]]:
        """Retrieval jobs the server knows, by archive (a listing at most JOBS_SNAPSHOT_TTL old)."""
        snapshot = self._snapshot
        if snapshot is not None and not fresh and time.monotonic() - snapshot[0] < JOBS_SNAPSHOT_TTL:
            return snapshot[1]
        by_archive: dict[str, list[JobInfo]] = {}
        try:
            for job in self.vault.list_jobs():
                if job.action is JobAction.ARCHIVE_RETRIEVAL and job.archive_id:
                    by_archive.setdefault(job.archive_id, []).append(job)
        except StoreError as exc:
            log.warning("vault %s: cannot list jobs to adopt: %s", self.name, exc)
        self._snapshot = (time.monotonic(), by_archive)
        return by_archive

    def _adoptable(self, archive: ArchiveInfo, exclude: str | None) -> JobInfo | None:
        """A whole-archive retrieval someone started earlier that is still worth waiting for."""
        candidates = [j for j in self.jobs_by_archive().get(archive.archive_id, [])
                      if j.job_id != exclude and (j.byte_range is None or j.byte_range[0] == 0
                                                  and j.byte_range[1] >= archive.size)
                      and (j.status is JobStatus.IN_PROGRESS or (j.succeeded and not self._expired(j)))]
        return max(candidates, key=lambda j: j.creation_date or 0.0, default=None)

    def _start_job(self, archive: ArchiveInfo, replacing: JobRecord | None) -> tuple[JobRecord, bool]:
        """Record a job for `archive` — adopted, or started now — unless another thread or process
        recorded one first. Returns (record, whether this call started a job)."""
        # Striped (4096 lock files at most): the lock is held for one request only.
        with self.state.lock(f"job-{archive_key(archive.archive_id)[:3]}"):
            current = self.state.job(archive.archive_id)
            if current is not None and (replacing is None or current.job_id != replacing.job_id):
                return current, False
            if current is not None:
                self.state.forget_job(archive.archive_id, current.job_id)
            adopted = self._adoptable(archive, replacing.job_id if replacing else None)
            if adopted is not None:
                record = JobRecord(archive.archive_id, adopted.job_id, (adopted.tier or self.tier).value,
                                   adopted.creation_date or self.now(), adopted.status.value,
                                   adopted.completion_date, checked=time.time())
                self.state.save_job(record)
                log.info("vault %s: adopted retrieval job %s for archive %s", self.name,
                         short_id(adopted.job_id), short_id(archive.archive_id))
                return record, False
            job_id = self.vault.start_retrieval(archive.archive_id, tier=self.tier)
            record = JobRecord(archive.archive_id, job_id, self.tier.value, self.now(),
                               checked=time.time())
            self.state.save_job(record)
            log.info("vault %s: started %s retrieval job %s for %s", self.name, self.tier.value,
                     short_id(job_id), self.path_of(archive.archive_id) or short_id(archive.archive_id))
            return record, True

    def _observe(self, record: JobRecord, info: JobInfo | None) -> JobRecord:
        """Save what the server said about a recorded job (None: it does not know it any more)."""
        if info is None:
            return record
        return self.state.update_job(record, status=info.status.value, completed=info.completion_date,
                                     message=info.status_message if info.status is JobStatus.FAILED else None,
                                     checked=time.time())

    def _describe(self, record: JobRecord) -> JobInfo | None:
        try:
            return self.vault.describe_job(record.job_id)
        except NotFound:
            return None

    def attempt(self, archive: ArchiveInfo) -> tuple[Path | None, JobRecord | None]:
        """One step of an open: (cached bytes, None), or (None, the job we are waiting for).
        Raises JobFailed (reported once), TreeHashMismatch, and the vault's errors."""
        cached = self.state.cached(archive)
        if cached is not None:
            return cached.path, None
        record = self.state.job(archive.archive_id)
        if record is None or (record.status == JobStatus.FAILED.value and record.reported):
            record, started = self._start_job(archive, record)
            if started:
                return None, record
        info = self._describe(record)
        if info is None or self._expired(info):
            log.warning("vault %s: retrieval job %s of %s has expired; starting another", self.name,
                        short_id(record.job_id), short_id(archive.archive_id))
            record, _ = self._start_job(archive, record)
            return None, record
        record = self._observe(record, info)
        if info.status is JobStatus.IN_PROGRESS:
            return None, record
        if info.status is JobStatus.FAILED:
            self.state.update_job(record, reported=True)
            raise JobFailed(f"retrieval job {short_id(record.job_id)} failed: {info.status_message}; "
                            f"the next open starts another")
        return self._download(archive, info), None

    def _download(self, archive: ArchiveInfo, info: JobInfo) -> Path:
        """Fetch a Succeeded job's output into the cache, verified, under the archive's data lock."""
        # One lock per archive (a download is long); there are as many as cached archives at most.
        with self.state.lock(f"data-{archive_key(archive.archive_id)}"):
            cached = self.state.cached(archive)
            if cached is not None:
                return cached.path
            free = shutil.disk_usage(self.state.data_dir).free
            if free < archive.size + DOWNLOAD_HEADROOM:
                raise CacheFull(f"archive {short_id(archive.archive_id)} needs {archive.size} bytes; the cache "
                                f"disk has {free} free")
            tmp = self.state.new_download()
            try:
                with open(tmp, "wb") as f:
                    got = self.vault.download_job_output(info.job_id, f, job=info)
                    f.flush()
                    os.fsync(f.fileno())
                    size = f.tell()
                if size != archive.size:
                    raise TreeHashMismatch(f"output of job {short_id(info.job_id)} holds {size} bytes; the "
                                           f"archive has {archive.size}")
                expected = archive.tree_hash
                if (expected and self.vault.capabilities.tree_hash_trustworthy
                        and expected.lower() != got.lower()):
                    raise TreeHashMismatch(f"output of job {short_id(info.job_id)} has tree hash {got}; the "
                                           f"archive's is {expected}")
                path = self.state.commit_data(tmp, archive, expected or got, info.job_id)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        log.info("vault %s: downloaded %s (%d bytes, tree hash verified)", self.name,
                 self.path_of(archive.archive_id) or short_id(archive.archive_id), archive.size)
        return path

    def retrieval_status(self, archive: ArchiveInfo) -> str:
        if self.state.cached(archive) is not None:
            return "cached"
        record = self.state.job(archive.archive_id)
        if record is None:
            return "none"
        if record.status == JobStatus.IN_PROGRESS.value and time.time() - record.checked >= self.options.status_ttl:
            try:
                info = self._describe(record)
                if info is None:
                    return "none"
                record = self._observe(record, info)
            except StoreError as exc:
                log.debug("vault %s: status of job %s: %s", self.name, short_id(record.job_id), exc)
        if record.status == JobStatus.FAILED.value:
            return f"failed: {record.message or 'no reason given'}"
        if record.status == JobStatus.SUCCEEDED.value:
            if record.completed is None:
                return "none"
            until = record.completed + JOB_OUTPUT_TTL
            return "none" if self.now() >= until - EXPIRY_MARGIN else f"ready until {iso8601(until)}"
        return f"in-progress since {iso8601(record.started)}"

    def request(self, archive: ArchiveInfo, path: str, listing: dict[str, JobInfo]) -> RestoreItem:
        """Make sure a job is on its way for `archive` (restore): never downloads, never raises for
        one archive's trouble (it is in the item)."""
        item = RestoreItem(path, archive.archive_id, archive.size, "in-progress")
        try:
            if self.state.cached(archive) is not None:
                item.state = "cached"
                return item
            record = self.state.job(archive.archive_id)
            info = None
            if record is not None and record.status != JobStatus.FAILED.value:
                info = listing.get(record.job_id) or self._describe(record)
                if info is None or info.status is JobStatus.FAILED or self._expired(info):
                    info = None
                else:
                    record = self._observe(record, info)
            if info is None:  # none, failed (an explicit restore retries), or expired: a new one
                record, item.started_job = self._start_job(archive, record)
            item.job_id = record.job_id
            self._item_from_record(item, record)
        except StoreError as exc:
            item.state, item.message = "failed", str(exc)
        return item

    def _item_from_record(self, item: RestoreItem, record: JobRecord) -> None:
        if record.status == JobStatus.SUCCEEDED.value:
            item.state = "ready"
        elif record.status == JobStatus.FAILED.value:
            item.state, item.message = "failed", record.message or "job failed"
        else:
            item.state = "in-progress"

    def poll_items(self, items: list[RestoreItem]) -> None:
        """Update in-progress items from one job listing (plus a describe for jobs it lacks)."""
        waiting = [i for i in items if i.state == "in-progress" and i.job_id]
        if not waiting:
            return
        listing = {j.job_id: j for jobs in self.jobs_by_archive(fresh=True).values() for j in jobs}
        for item in waiting:
            record = self.state.job(item.archive_id)
            if record is None or record.job_id != item.job_id:
                if record is None:
                    item.state, item.message = "failed", "the job record vanished"
                    continue
                item.job_id = record.job_id
            try:
                info = listing.get(record.job_id) or self._describe(record)
            except StoreError as exc:
                log.debug("vault %s: job %s: %s", self.name, short_id(record.job_id), exc)
                continue
            if info is None or self._expired(info):
                record, started = self._start_job(self._archive(item), record)
                item.job_id, item.started_job = record.job_id, item.started_job or started
                continue
            record = self._observe(record, info)
            if info.status is JobStatus.FAILED:
                self.state.update_job(record, reported=True)
            self._item_from_record(item, record)

    def _archive(self, item: RestoreItem) -> ArchiveInfo:
        with self.lock:
            path = self.tree.by_id.get(item.archive_id)
            node = self.tree.file(path) if path else None
        if node is None:
            raise NotFound(f"archive {short_id(item.archive_id)} is no longer in the tree")
        return node.archive


def _mtime_of(archive: ArchiveInfo) -> float:
    mtime = name_of(archive)[1]
    return archive.creation_date if mtime is None else mtime

