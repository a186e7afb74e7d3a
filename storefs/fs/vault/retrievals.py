"""The retrieval jobs of one vault's archives: start, adopt, follow, download, report.

Opening an archive (`attempt`): cached bytes (tree hash verified when they were stored) are served;
else a retrieval job that has Succeeded has its output downloaded (ranged and in parallel where the
server allows, each piece and the whole checked against the tree hashes) into the cache; else a job
is started (or adopted: one someone started earlier, found by `list_jobs`; or the recorded one
polled). A Failed job is reported once (JobFailed) and the next open starts a new one; an expired job
(unknown to the server, or completed more than 24 h ago) is forgotten and replaced at once. A
download whose tree hash is wrong raises TreeHashMismatch; nothing is cached.

Ranged jobs (a byte range of an archive: `-o vault_ranges`, `storefs restore --range`) are
rangejobs.py's (`self.ranges`); the bound on the downloaded data, datacache.py's (`self.cache`).

Job records live in VaultState (shared with other processes: decisions are taken under its flock
locks, then re-checked). Paths are the view's: `path_of` names an archive in logs, `archive_of`
finds an archive of the tree again.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from ...errors import ArchiveNotReady, NotFound, StoreError
from ...retrieval.poll import JobPoll
from ...retrieval.report import RestoreItem
from ...vaults.base import (JOB_OUTPUT_TTL, ArchiveInfo, ArchiveVault, JobAction, JobFailed, JobInfo, JobStatus,
                            Tier, TreeHashMismatch, iso8601, short_id)
from .datacache import DataCache
from .expiry import EXPIRY_MARGIN, output_expired
from .rangejobs import RangeJobs
from .state import JobRecord, VaultState, archive_key

log = logging.getLogger(__name__)

DOWNLOAD_HEADROOM = 64 << 20
JOBS_SNAPSHOT_TTL = 60.0


def _not_ready(where: str, record: JobRecord | None, not_ready_errno: int) -> ArchiveNotReady:
    if record is None:
        exc = ArchiveNotReady(f"{where}: not retrieved yet")
    else:
        exc = ArchiveNotReady(f"{where}: {record.tier} retrieval job {short_id(record.job_id)} in progress "
                              f"since {iso8601(record.started)}; try again later")
    exc.errno = not_ready_errno
    return exc


class Retrievals:
    """The retrieval jobs of vault `name`. `tier`: of the jobs it starts; `status_ttl`: seconds
    between two questions to the server about one job from `status`; `clock`: the service's."""

    def __init__(self, name: str, vault: ArchiveVault, state: VaultState, tier: Tier, status_ttl: float,
                 clock: Callable[[], float], path_of: Callable[[str], str | None],
                 archive_of: Callable[[str], ArchiveInfo | None]) -> None:
        self.name = name
        self.vault = vault
        self.state = state
        self.tier = tier
        self.status_ttl = status_ttl
        self.now = clock
        self.path_of = path_of
        self.archive_of = archive_of
        self._snapshot: tuple[float, dict[str, list[JobInfo]]] | None = None
        # the download cache's bound (VaultFS sets `cache.limit` from -o vault_cache_size)
        self.cache = DataCache(state.data_dir, None, DOWNLOAD_HEADROOM)
        self.ranges = RangeJobs(self)

    def _expired(self, info: JobInfo) -> bool:
        return output_expired(info, self.now())

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

    def fetch(self, archive: ArchiveInfo, poll: JobPoll, where: str, not_ready_errno: int) -> Path:
        """The cached bytes of `archive` (at mount path `where`), retrieved first if need be: one
        `attempt` after each pause of `poll`; ArchiveNotReady (errno `not_ready_errno`) once it
        gives up."""
        while True:
            try:
                data, record = self.attempt(archive)
            except ArchiveNotReady:  # the server's own "not yet" (a race with its clock): ours instead
                data, record = None, self.state.job(archive.archive_id)
            if data is not None:
                return data
            if not poll.pause():
                raise _not_ready(where, record, not_ready_errno)

    def _download(self, archive: ArchiveInfo, info: JobInfo) -> Path:
        """Fetch a Succeeded job's output into the cache, verified, under the archive's data lock."""
        # One lock per archive (a download is long); there are as many as cached archives at most.
        with self.state.lock(f"data-{archive_key(archive.archive_id)}"):
            cached = self.state.cached(archive)
            if cached is not None:
                return cached.path
            self.cache.make_room(archive.size, f"archive {short_id(archive.archive_id)}")
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
            finally:
                self.cache.release(archive.size)
        log.info("vault %s: downloaded %s (%d bytes, tree hash verified)", self.name,
                 self.path_of(archive.archive_id) or short_id(archive.archive_id), archive.size)
        return path

    def status(self, archive: ArchiveInfo) -> str:
        """user.storefs.retrieval: the whole archive's state, then `; bytes S-E <state>` per range."""
        return "; ".join([self._whole_status(archive), *self.ranges.status(archive)])

    def _whole_status(self, archive: ArchiveInfo) -> str:
        if self.state.cached(archive) is not None:
            return "cached"
        record = self.state.job(archive.archive_id)
        if record is None:
            return "none"
        if record.status == JobStatus.IN_PROGRESS.value and time.time() - record.checked >= self.status_ttl:
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
        self.ranges.poll_items([i for i in items if i.byte_range is not None])
        waiting = [i for i in items if i.state == "in-progress" and i.job_id and i.byte_range is None]
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
        archive = self.archive_of(item.archive_id)
        if archive is None:
            raise NotFound(f"archive {short_id(item.archive_id)} is no longer in the tree")
        return archive
