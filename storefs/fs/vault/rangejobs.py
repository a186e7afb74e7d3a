"""Ranged retrieval jobs of one vault's archives: bytes [S, E) of an archive, retrieved, downloaded,
verified and cached like whole archives (Glacier `RetrievalByteRange`, CAS `byte_range`).

Two callers start them: a read of an archive through a mount with `-o vault_ranges` (`fetch`: a
tree-hash-aligned window around the offset read, so that the service's tree hash of the output can be
checked), and `storefs restore --range` (`request`: the range asked for, widened to MiB boundaries as
the services require).

Never two jobs for the same bytes: a read waits for a whole-archive job that is in progress or ready
(recorded here, or found in the server's job list) instead of starting a range; a range job that
holds the offset read is waited for; a new window is cut short where recorded ranges begin or end,
so ranges started here never overlap (`storefs restore --range` trims only its ends: a range it is
asked for that contains a smaller one is started whole, since the user asked for those bytes).
An explicit whole `storefs restore` still starts a whole job beside ranged ones.

Records and data use VaultState's ranged keys; decisions are taken under the same striped job lock
as whole jobs (retrievals.py), then re-checked.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from collections.abc import Callable
from typing import Protocol

from ...errors import ArchiveNotReady, InvalidArgument, NotSupported, ProtocolError, StoreError
from ...retrieval.poll import JobPoll
from ...retrieval.report import RestoreItem
from ...vaults import treehash
from ...vaults.base import (JOB_OUTPUT_TTL, ArchiveInfo, ArchiveVault, JobFailed, JobInfo, JobStatus, Tier,
                            TreeHashMismatch, iso8601, short_id)
from .datacache import DataCache
from .expiry import completed_expired
from .state import JobRecord, VaultState, archive_key

log = logging.getLogger(__name__)

Range = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Piece:
    """Verified bytes of an archive on disk: the file at `path` holds archive bytes [start, end)."""

    path: Path
    start: int
    end: int


def _covers(byte_range: Range | None, start: int, end: int) -> bool:
    return byte_range is not None and byte_range[0] <= start and end <= byte_range[1]


def fmt_range(byte_range: Range) -> str:
    """Inclusive, as the services and `storefs restore --range` write ranges."""
    return f"{byte_range[0]}-{byte_range[1] - 1}"


class WholeJobs(Protocol):
    """What RangeJobs shares with the whole-archive jobs of its vault (retrievals.Retrievals)."""

    name: str
    vault: ArchiveVault
    state: VaultState
    tier: Tier
    status_ttl: float
    now: Callable[[], float]
    path_of: Callable[[str], str | None]
    cache: DataCache

    def jobs_by_archive(self, *, fresh: bool = False) -> dict[str, list[JobInfo]]: ...
    def attempt(self, archive: ArchiveInfo) -> tuple[Path | None, JobRecord | None]: ...
    def _expired(self, info: JobInfo) -> bool: ...
    def _describe(self, record: JobRecord) -> JobInfo | None: ...
    def _observe(self, record: JobRecord, info: JobInfo | None) -> JobRecord: ...
    def _adoptable(self, archive: ArchiveInfo, exclude: str | None) -> JobInfo | None: ...
    def _start_job(self, archive: ArchiveInfo, replacing: JobRecord | None) -> tuple[JobRecord, bool]: ...
    def _item_from_record(self, item: RestoreItem, record: JobRecord) -> None: ...


class RangeJobs:
    """The ranged jobs of one vault; shares the whole jobs' vault, state, clock and job listing."""

    def __init__(self, whole: WholeJobs) -> None:
        self.r = whole

    # -- what is here ----------------------------------------------------------------------------

    def _record_expired(self, record: JobRecord) -> bool:
        return completed_expired(record.completed, self.r.now())

    def _live(self, record: JobRecord) -> bool:
        """A job still worth waiting for or downloading, as far as its record says."""
        if record.status == JobStatus.FAILED.value:
            return not record.reported
        return not self._record_expired(record)

    def live_ranges(self, archive: ArchiveInfo) -> list[JobRecord]:
        return [j for j in self.r.state.range_jobs(archive.archive_id) if self._live(j)]

    def has_any(self, archive: ArchiveInfo) -> bool:
        """Whether some range of `archive` is cached or on its way (an open then serves reads by range)."""
        return bool(self.r.state.cached_ranges(archive) or self.live_ranges(archive))

    def cached_piece(self, archive: ArchiveInfo, pos: int) -> Piece | None:
        """Cached bytes holding offset `pos`: the whole archive, or a range."""
        whole = self.r.state.cached(archive)
        if whole is not None:
            return Piece(whole.path, 0, archive.size)
        for cached in self.r.state.cached_ranges(archive):
            if cached.byte_range is not None and cached.byte_range[0] <= pos < cached.byte_range[1]:
                return Piece(cached.path, cached.byte_range[0], cached.byte_range[0] + cached.size)
        return None

    def _whole_active(self, archive: ArchiveInfo) -> bool:
        """A whole-archive job is in progress or ready: reads wait for it instead of starting ranges."""
        record = self.r.state.job(archive.archive_id)
        if record is not None and record.status != JobStatus.FAILED.value and not self._record_expired(record):
            return True
        return False

    # -- one step of a read ----------------------------------------------------------------------

    def _whole(self, archive: ArchiveInfo) -> tuple[Piece | None, JobRecord | None]:
        path, record = self.r.attempt(archive)
        return (Piece(path, 0, archive.size) if path is not None else None), record

    def attempt(self, archive: ArchiveInfo, pos: int, window: int | None) -> tuple[Piece | None, JobRecord | None]:
        """(cached bytes holding `pos`, None), or (None, the job waited for). When nothing covers
        `pos`, starts a window job of `window` bytes (None: retrieves the whole archive, as an open
        without ranges does). Raises JobFailed (once), TreeHashMismatch."""
        piece = self.cached_piece(archive, pos)
        if piece is not None:
            return piece, None
        if self._whole_active(archive):
            return self._whole(archive)
        record = next((j for j in self.live_ranges(archive) if _covers(j.byte_range, pos, pos + 1)), None)
        if record is None:
            if window is None:
                return self._whole(archive)
            record, started = self._start_window(archive, pos, window)
            if record.byte_range is None:  # a whole job was adopted instead
                return self._whole(archive)
            if started:
                return None, record
        piece, waiting = self._step(archive, record)
        if piece is None and waiting is None:  # the job expired and is forgotten: replaced at once
            if window is None:
                return self._whole(archive)
            record, _ = self._start_window(archive, pos, window)
            return None, record
        return piece, waiting

    def _step(self, archive: ArchiveInfo, record: JobRecord) -> tuple[Piece | None, JobRecord | None]:
        """Ask the server about a recorded range job; download it once it has Succeeded.
        (None, None): the job has expired and its record is forgotten."""
        assert record.byte_range is not None
        if record.status == JobStatus.FAILED.value and record.reported:
            return None, record
        info = self.r._describe(record)
        if info is None or self.r._expired(info):
            log.warning("vault %s: ranged job %s of %s has expired; forgetting it", self.r.name,
                        short_id(record.job_id), short_id(archive.archive_id))
            with self.r.state.lock(f"job-{archive_key(archive.archive_id)[:3]}"):
                self.r.state.forget_job(archive.archive_id, record.job_id, record.byte_range)
            return None, None
        record = self.r._observe(record, info)
        if info.status is JobStatus.IN_PROGRESS:
            return None, record
        if info.status is JobStatus.FAILED:
            self.r.state.update_job(record, reported=True)
            raise JobFailed(f"retrieval job {short_id(record.job_id)} of bytes {fmt_range(record.byte_range)} "
                            f"failed: {info.status_message}; the next read starts another")
        return self._download(archive, record, info), None

    def fetch(self, archive: ArchiveInfo, pos: int, window: int | None, poll: JobPoll, where: str,
              not_ready_errno: int) -> Piece:
        """Cached bytes holding offset `pos` of `archive`, retrieved by range first if need be: one
        `attempt` after each pause of `poll`; ArchiveNotReady (errno `not_ready_errno`) when it gives up."""
        while True:
            try:
                piece, record = self.attempt(archive, pos, window)
            except ArchiveNotReady:  # the server's own "not yet" (a race with its clock): ours instead
                piece, record = None, None
            if piece is not None:
                return piece
            if not poll.pause():
                exc = ArchiveNotReady(self._not_ready_text(where, pos, record))
                exc.errno = not_ready_errno
                raise exc

    @staticmethod
    def _not_ready_text(where: str, pos: int, record: JobRecord | None) -> str:
        if record is None:
            return f"{where}: byte {pos} not retrieved yet"
        what = f"bytes {fmt_range(record.byte_range)}" if record.byte_range else "the whole archive"
        return (f"{where}: {record.tier} retrieval job {short_id(record.job_id)} of {what} in progress since "
                f"{iso8601(record.started)}; try again later")

    def ready_piece(self, archive: ArchiveInfo, pos: int) -> Piece | None:
        """Bytes holding `pos` that are here or whose job is done (downloaded now), never a new job:
        for the rest of a read whose first byte was served (see rangedread.py)."""
        piece = self.cached_piece(archive, pos)
        if piece is not None:
            return piece
        if self._whole_active(archive):  # its job is paid for: downloaded once it is done
            return self._whole(archive)[0]
        for record in self.live_ranges(archive):
            if _covers(record.byte_range, pos, pos + 1) and record.status != JobStatus.FAILED.value:
                return self._step(archive, record)[0]
        return None

    # -- starting --------------------------------------------------------------------------------

    def _taken(self, archive: ArchiveInfo) -> list[Range]:
        """Ranges of `archive` cached or on their way."""
        taken = [c.byte_range for c in self.r.state.cached_ranges(archive) if c.byte_range is not None]
        taken += [j.byte_range for j in self.live_ranges(archive) if j.byte_range is not None]
        return taken

    def _server_job(self, archive: ArchiveInfo, start: int, end: int) -> JobInfo | None:
        """A job on the server (started by someone else, or before our records were lost) that
        retrieves bytes [start, end) of `archive` and is still worth waiting for."""
        candidates = [j for j in self.r.jobs_by_archive().get(archive.archive_id, [])
                      if j.byte_range is not None and _covers(j.byte_range, start, end)
                      and j.byte_range != (0, archive.size)
                      and (j.status is JobStatus.IN_PROGRESS or (j.succeeded and not self.r._expired(j)))]
        return max(candidates, key=lambda j: j.creation_date or 0.0, default=None)

    def _start_window(self, archive: ArchiveInfo, pos: int, window: int) -> tuple[JobRecord, bool]:
        """Record a job for the window around `pos`, unless one covers it by now (another thread or
        process), a whole job can be adopted, or the server has a range job holding `pos`."""
        with self.r.state.lock(f"job-{archive_key(archive.archive_id)[:3]}"):
            for record in self.live_ranges(archive):
                if _covers(record.byte_range, pos, pos + 1):
                    return record, False
            current = self.r.state.job(archive.archive_id)
            if current is not None and current.status != JobStatus.FAILED.value \
                    and not self._record_expired(current):
                return current, False
            if self.r._adoptable(archive, None) is not None:
                pass  # adopted below, outside this lock (the whole job's start takes it too)
            else:
                lo, hi = treehash.tree_window(pos, window, archive.size)
                for a, b in self._taken(archive):   # never two jobs for the same bytes
                    if b <= pos:
                        lo = max(lo, b)
                    elif a > pos:
                        hi = min(hi, a)
                return self._record_range(archive, (lo, hi), "read")
        record, _ = self.r._start_job(archive, None)  # adopts the whole job found above
        return record, False

    def _record_range(self, archive: ArchiveInfo, byte_range: Range, why: str) -> tuple[JobRecord, bool]:
        """Adopt a server job covering `byte_range` or start one; save the record (under the job lock).
        Returns (record, whether a job was started)."""
        adopted = self._server_job(archive, *byte_range)
        if adopted is not None and adopted.byte_range is not None:
            record = JobRecord(archive.archive_id, adopted.job_id, (adopted.tier or self.r.tier).value,
                               adopted.creation_date or self.r.now(), adopted.status.value,
                               adopted.completion_date, checked=time.time(), byte_range=adopted.byte_range)
            self.r.state.save_job(record)
            log.info("vault %s: adopted ranged job %s (bytes %s) for archive %s", self.r.name,
                     short_id(adopted.job_id), fmt_range(adopted.byte_range), short_id(archive.archive_id))
            return record, False
        job_id = self.r.vault.start_retrieval(archive.archive_id, tier=self.r.tier, byte_range=byte_range)
        record = JobRecord(archive.archive_id, job_id, self.r.tier.value, self.r.now(), checked=time.time(),
                           byte_range=byte_range)
        self.r.state.save_job(record)
        log.info("vault %s: started %s retrieval job %s of bytes %s of %s (%s)", self.r.name, self.r.tier.value,
                 short_id(job_id), fmt_range(byte_range),
                 self.r.path_of(archive.archive_id) or short_id(archive.archive_id), why)
        return record, True

    # -- downloading -----------------------------------------------------------------------------

    def _download(self, archive: ArchiveInfo, record: JobRecord, info: JobInfo) -> Piece:
        """A Succeeded range job's output into the cache, checked against the job's tree hash (and,
        piece by piece, the hashes the service sends), under the range's data lock."""
        byte_range = record.byte_range
        assert byte_range is not None
        if info.byte_range is not None and info.byte_range != byte_range:
            raise ProtocolError(f"job {short_id(info.job_id)} retrieves bytes {fmt_range(info.byte_range)}, "
                                f"not the recorded {fmt_range(byte_range)}")
        if info.byte_range is None:  # a server that does not report it: the output size comes from ours
            info = dataclasses.replace(info, byte_range=byte_range)
        size = byte_range[1] - byte_range[0]
        with self.r.state.lock(f"data-{archive_key(archive.archive_id)}.r{byte_range[0]}"):
            cached = self.r.state.cached(archive, byte_range)
            if cached is not None:
                return Piece(cached.path, byte_range[0], byte_range[1])
            self.r.cache.make_room(size, f"bytes {fmt_range(byte_range)} of archive {short_id(archive.archive_id)}")
            tmp = self.r.state.new_download()
            try:
                with open(tmp, "wb") as f:
                    got = self.r.vault.download_job_output(info.job_id, f, job=info)
                    f.flush()
                    os.fsync(f.fileno())
                    written = f.tell()
                if written != size:
                    raise TreeHashMismatch(f"output of job {short_id(info.job_id)} holds {written} bytes; "
                                           f"bytes {fmt_range(byte_range)} are {size}")
                path = self.r.state.commit_data(tmp, archive, info.sha256_tree_hash or got, info.job_id,
                                                byte_range)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            finally:
                self.r.cache.release(size)
        log.info("vault %s: downloaded bytes %s of %s (%d bytes%s)", self.r.name, fmt_range(byte_range),
                 self.r.path_of(archive.archive_id) or short_id(archive.archive_id), size,
                 ", tree hash verified" if info.sha256_tree_hash else "")
        return Piece(path, byte_range[0], byte_range[1])

    # -- storefs restore --range -----------------------------------------------------------------

    def request(self, archive: ArchiveInfo, wanted: Range, path: str) -> RestoreItem:
        """Make sure bytes `wanted` ([start, end)) of `archive` are retrieved or on their way: one
        ranged job, widened to MiB boundaries. Never downloads; trouble goes in the item."""
        item = RestoreItem(path, archive.archive_id, 0, "in-progress")
        try:
            if not self.r.vault.capabilities.supports_ranges:
                raise NotSupported(f"vault {self.r.name}: this service cannot retrieve a byte range")
            start, end = wanted[0], min(wanted[1], archive.size)
            if start >= archive.size:
                raise InvalidArgument(f"the range starts at byte {start}; the archive has {archive.size} bytes")
            lo, hi = treehash.align_outward(start, end, archive.size)
            item.byte_range, item.size = (lo, hi), hi - lo
            if self.r.state.cached(archive) is not None:
                item.state, item.byte_range, item.size = "cached", None, archive.size
                return item
            if self._whole_active(archive):
                record = self.r.state.job(archive.archive_id)
                assert record is not None
                item.job_id, item.byte_range, item.size = record.job_id, None, archive.size
                self.r._item_from_record(item, record)
                return item
            for cached in self.r.state.cached_ranges(archive):
                if _covers(cached.byte_range, start, end):
                    item.state, item.byte_range = "cached", cached.byte_range
                    return item
            with self.r.state.lock(f"job-{archive_key(archive.archive_id)[:3]}"):
                record = next((j for j in self.live_ranges(archive) if _covers(j.byte_range, start, end)), None)
                if record is None:
                    taken = sorted(self._taken(archive))
                    for a, b in taken:  # trim the ends that others already hold
                        if a <= lo < b:
                            lo = b
                    for a, b in reversed(taken):
                        if a < hi <= b:
                            hi = a
                    if lo >= hi:  # several ranges cover it between them: the first is followed
                        record = next(j for j in self.live_ranges(archive) if _covers(j.byte_range, start, start + 1))
                    else:
                        record, item.started_job = self._record_range(archive, (lo, hi), "restore")
            item.job_id, item.byte_range = record.job_id, record.byte_range
            item.size = (record.byte_range[1] - record.byte_range[0]) if record.byte_range else archive.size
            self.r._item_from_record(item, record)
        except StoreError as exc:
            item.state, item.message = "failed", str(exc)
        except StopIteration:
            item.state, item.message = "failed", "the ranges holding these bytes changed; try again"
        return item

    def poll_items(self, items: list[RestoreItem]) -> None:
        """Update in-progress ranged items (restore --range --wait)."""
        for item in items:
            if item.state != "in-progress" or item.byte_range is None:
                continue
            record = self.r.state.job(item.archive_id, item.byte_range)
            if record is None:
                item.state, item.message = "failed", "the job record vanished"
                continue
            try:
                info = self.r._describe(record)
            except StoreError as exc:
                log.debug("vault %s: job %s: %s", self.r.name, short_id(record.job_id), exc)
                continue
            if info is None or self.r._expired(info):
                item.state, item.message = "failed", "the job expired; run storefs restore --range again"
                continue
            record = self.r._observe(record, info)
            if info.status is JobStatus.FAILED:
                self.r.state.update_job(record, reported=True)
            self.r._item_from_record(item, record)

    # -- status (user.storefs.retrieval) ---------------------------------------------------------

    def status(self, archive: ArchiveInfo) -> list[str]:
        """`bytes S-E <state>` for each range of `archive` cached or recorded, by start."""
        states: dict[Range, str] = {}
        for cached in self.r.state.cached_ranges(archive):
            if cached.byte_range is not None:
                states[cached.byte_range] = "cached"
        for record in self.r.state.range_jobs(archive.archive_id):
            if record.byte_range is None or record.byte_range in states:
                continue
            if record.status == JobStatus.IN_PROGRESS.value and time.time() - record.checked >= self.r.status_ttl:
                try:
                    info = self.r._describe(record)
                    if info is None:
                        continue
                    record = self.r._observe(record, info)
                except StoreError as exc:
                    log.debug("vault %s: status of job %s: %s", self.r.name, short_id(record.job_id), exc)
            if record.status == JobStatus.FAILED.value:
                states[record.byte_range] = f"failed: {record.message or 'no reason given'}"
            elif record.status == JobStatus.SUCCEEDED.value and record.completed is not None:
                if not self._record_expired(record):
                    states[record.byte_range] = f"ready until {iso8601(record.completed + JOB_OUTPUT_TTL)}"
            else:
                states[record.byte_range] = f"in-progress since {iso8601(record.started)}"
        return [f"bytes {fmt_range(r)} {s}" for r, s in sorted(states.items())]

