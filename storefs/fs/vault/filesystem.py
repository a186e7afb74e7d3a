"""VaultFS: the path-level, read-only filesystem over one archive vault (or every vault of a remote),
with retrieval on open. It never imports fusepy; `fuse_ops.py` calls it as it calls StoreFS.

The tree (storefs/vaultnames.py says how descriptions become paths) comes from the inventory cached
on disk (storefs/vaultstate.py), plus the archives uploaded through storefs that no inventory lists
yet. Without a cached inventory the mount still comes up at once: it adopts an inventory job started
earlier (its own record, or one `list_jobs` finds) or starts one, shows what it knows (its uploads),
and says so in the `user.storefs.inventory` xattr of the vault's root ("in-progress since …"). A
poller thread (every `inventory_poll` seconds) swaps the tree in when the job is done, and picks up
inventories and jobs that `storefs vault refresh` swapped in from another process.

Opening an archive: cached bytes (tree hash verified when they were stored) are served with pread;
else a retrieval job that has Succeeded has its output downloaded (ranged and in parallel where the
server allows, each piece and the whole checked against the tree hashes) into the cache, then served;
else a job is started (or adopted, or the recorded one polled) and the open fails at once with
ArchiveNotReady (EAGAIN unless `vault_errno` says otherwise) — or waits up to `vault_wait` seconds.
A Failed job is reported once (EIO with the server's reason) and the next open starts a new one; an
expired job (unknown to the server, or completed more than 24 h ago) is forgotten and replaced at
once. A download whose tree hash is wrong raises TreeHashMismatch (EIO); nothing is cached and the
next open downloads the (still valid) job output again.

Multi-vault mounts (`REMOTE:`): the root lists the vaults; a vault's state is loaded (and, without a
cached inventory, an inventory job started) only when something inside it is first looked at, so
`ls` of the root costs no job.

Locking: `VaultFS._lock` guards the handle and pending-upload tables and the view table; a view's
`lock` guards its tree and inventory fields; `_Upload.lock` one file being written. None of these is
held during a request, except `_Upload.lock` during that file's upload (writes to it must wait and
then fail) and a view's `_start_lock` while it loads (first lookups wait for the tree). Decisions shared with other processes take the flock locks of VaultState, never nested
and never while one of the above is held.
"""
from __future__ import annotations

import dataclasses
import errno
import itertools
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar

from ...attrs import Attrs
from ...errors import (
    AlreadyExists,
    ArchiveNotReady,
    CacheFull,
    ConfigError,
    InvalidArgument,
    IsADirectory,
    NameTooLong,
    NoAttribute,
    NotADirectory,
    NotFound,
    NotPermitted,
    ReadOnly,
    StoreError,
)
from ...paths import check_path
from ...retrieval.report import RestoreItem, RestoreReport
from .names import (
    FileNode,
    Tree,
    build_tree,
    clean_path,
    name_of,
    upload_description,
)
from ...vaults.base import (
    JOB_OUTPUT_TTL,
    ArchiveInfo,
    ArchiveVault,
    JobAction,
    JobFailed,
    JobInfo,
    JobStatus,
    Tier,
    TreeHashMismatch,
    VaultProvider,
    iso8601,
    short_id,
)
from .state import (
    Inventory,
    JobRecord,
    PendingInventory,
    UploadRecord,
    VaultState,
    archive_key,
    state_dir_for,
)

log = logging.getLogger(__name__)

# Treat job output as gone this long before the services drop it: a download must not start on
# output that vanishes under it.
EXPIRY_MARGIN = 600.0
# An upload an inventory has not listed this long after it was made was deleted elsewhere.
UPLOAD_GRACE = 7 * 24 * 3600.0
DOWNLOAD_HEADROOM = 64 << 20
JOBS_SNAPSHOT_TTL = 60.0
XATTR_ARCHIVE_ID = "user.storefs.archive_id"
XATTR_TREE_HASH = "user.storefs.tree_hash"
XATTR_RETRIEVAL = "user.storefs.retrieval"
XATTR_INVENTORY = "user.storefs.inventory"

NOT_READY_ERRNOS = {"EAGAIN": errno.EAGAIN, "EREMOTE": errno.EREMOTE, "EACCES": errno.EACCES,
                    "EIO": errno.EIO}


@dataclasses.dataclass
class VaultOptions:
    """Options of a vault mount. `cache_dir`: downloaded archive bytes go to
    `<cache_dir>/vault-data/<remote>/<vault>/data` (default: the state directory)."""

    tier: Tier = Tier.STANDARD
    vault_wait: float = 0.0            # seconds open() waits for a retrieval; 0: fail at once
    not_ready_errno: str = "EAGAIN"    # EAGAIN | EREMOTE | EACCES | EIO
    vault_writes: bool = False         # new files are uploaded as new archives at close
    keep_uploads: bool = False         # keep uploaded bytes in the cache (readable without a job)
    restore_days: int = 7              # bucket archive classes only: lifetime of a restored copy
    uid: int = dataclasses.field(default_factory=os.getuid)
    gid: int = dataclasses.field(default_factory=os.getgid)
    umask: int = 0o022
    cache_dir: Path | None = None
    # polling: retrieval waits back off from poll_min to poll_max seconds; the inventory poller
    # runs every inventory_poll seconds (0: never, callers use check_inventory()); an xattr read
    # asks the server about an in-progress job at most every status_ttl seconds.
    poll_min: float = 1.0
    poll_max: float = 60.0
    inventory_poll: float = 60.0
    status_ttl: float = 30.0
    # what FuseOps.destroy passes to close(): unused (uploads happen inside close(2)), kept so the
    # FUSE edge drives VaultFS and StoreFS alike
    drain_timeout: float = 3600.0

    HELP: ClassVar[dict[str, str]] = {
        "vault_tier": "retrieval tier for jobs started on open: Expedited, Standard (default) or Bulk",
        "vault_wait": "seconds open() waits for a retrieval job before failing (default 0)",
        "vault_errno": "errno of an open whose archive is not retrieved yet: EAGAIN (default), EREMOTE, "
                       "EACCES or EIO",
        "vault_writes": "new files written into the vault become new archives at close (write-once)",
        "vault_keep_uploads": "keep the bytes of uploaded files in the cache, readable at once",
        "vault_days": "archive storage classes in buckets: days a restored copy stays readable (default 7)",
    }
    # Of these, what a bucket mount with archive storage classes takes (see storefs.archived).
    BUCKET_OPTIONS: ClassVar[frozenset[str]] = frozenset({"vault_tier", "vault_wait", "vault_errno", "vault_days"})

    def __post_init__(self) -> None:
        if self.not_ready_errno.upper() not in NOT_READY_ERRNOS:
            raise ConfigError(f"vault_errno={self.not_ready_errno}: use one of {', '.join(NOT_READY_ERRNOS)}")
        self.not_ready_errno = self.not_ready_errno.upper()
        if self.vault_wait < 0:
            raise ConfigError("vault_wait must not be negative")

    @property
    def errno(self) -> int:
        return NOT_READY_ERRNOS[self.not_ready_errno]

    def set(self, name: str, value: str | None) -> None:
        """Apply one `-o name[=value]` mount option of HELP (ConfigError if it is not valid)."""
        flag = value is None or value.strip().lower() in ("", "1", "yes", "true", "on")
        if name == "vault_tier":
            tier = Tier.parse(value)
            if tier is None:
                raise ConfigError(f"vault_tier={value}: use Expedited, Standard or Bulk")
            self.tier = tier
        elif name == "vault_wait":
            try:
                self.vault_wait = float(value or "")
            except ValueError:
                raise ConfigError(f"vault_wait={value}: a number of seconds") from None
            if self.vault_wait < 0:
                raise ConfigError("vault_wait must not be negative")
        elif name == "vault_errno":
            if (value or "").upper() not in NOT_READY_ERRNOS:
                raise ConfigError(f"vault_errno={value}: use one of {', '.join(NOT_READY_ERRNOS)}")
            self.not_ready_errno = (value or "").upper()
        elif name == "vault_writes":
            self.vault_writes = flag
        elif name == "vault_keep_uploads":
            self.keep_uploads = flag
        elif name == "vault_days":
            try:
                self.restore_days = int(value or "")
            except ValueError:
                raise ConfigError(f"vault_days={value}: a whole number of days") from None
            if not 1 <= self.restore_days <= 30000:
                raise ConfigError("vault_days must be between 1 and 30000")
        else:
            raise ConfigError(f"unknown vault option {name!r} (known: {', '.join(sorted(self.HELP))})")


# ------------------------------------------------------------------------------------------------
# Reports


@dataclasses.dataclass
class RefreshReport:
    vault: str
    job_id: str | None
    state: str                      # in-progress | done | failed
    archives: int                   # in the tree now
    inventory_date: float | None
    message: str | None = None


# ------------------------------------------------------------------------------------------------
# Open files


@dataclasses.dataclass
class _Upload:
    """A new file being written (vault_writes), uploaded as an archive when its creator closes it."""

    view: _VaultView
    rel: str
    staged: Path
    fd: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    state: str = "open"             # open | uploaded | failed
    archive: ArchiveInfo | None = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


@dataclasses.dataclass
class _Handle:
    fd: int
    path: str
    upload: _Upload | None = None
    writable: bool = False


# ------------------------------------------------------------------------------------------------
# One vault


class _VaultView:
    """The tree, inventory and retrievals of one vault."""

    def __init__(self, fs: VaultFS, name: str) -> None:
        self.fs = fs
        self.name = name
        self.vault: ArchiveVault = fs.provider.vault(name)
        data_root = None
        if fs.options.cache_dir is not None:
            data_root = state_dir_for(Path(fs.options.cache_dir) / "vault-data", fs.provider.remote) / name
        self.state = VaultState(fs.state_dir / name, data_root)
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
        return f"_VaultView({self.name!r})"

    @property
    def options(self) -> VaultOptions:
        return self.fs.options

    def now(self) -> float:
        return self.fs.clock()

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
                self._ensure_inventory_job(adopt=True)
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

    def _ensure_inventory_job(self, *, adopt: bool) -> PendingInventory:
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
        pending = self._ensure_inventory_job(adopt=False)
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = self.options.poll_min
        while True:
            if self.state.pending_inventory() != pending:
                self._load()  # another thread or process read it
            else:
                self.check_inventory()
            if self.state.pending_inventory() != pending:
                break
            if not wait or (deadline is not None and time.monotonic() >= deadline):
                return self._refresh_report(pending.job_id, "in-progress")
            pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            if self.fs.stopping.wait(pause):
                return self._refresh_report(pending.job_id, "in-progress")
            delay = min(delay * 2, self.options.poll_max)
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

    def _jobs_by_archive(self, *, fresh: bool = False) -> dict[str, list[JobInfo]]:
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
        candidates = [j for j in self._jobs_by_archive().get(archive.archive_id, [])
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
                record = JobRecord(archive.archive_id, adopted.job_id, (adopted.tier or self.options.tier).value,
                                   adopted.creation_date or self.now(), adopted.status.value,
                                   adopted.completion_date, checked=time.time())
                self.state.save_job(record)
                log.info("vault %s: adopted retrieval job %s for archive %s", self.name,
                         short_id(adopted.job_id), short_id(archive.archive_id))
                return record, False
            job_id = self.vault.start_retrieval(archive.archive_id, tier=self.options.tier)
            record = JobRecord(archive.archive_id, job_id, self.options.tier.value, self.now(),
                               checked=time.time())
            self.state.save_job(record)
            log.info("vault %s: started %s retrieval job %s for %s", self.name, self.options.tier.value,
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
        listing = {j.job_id: j for jobs in self._jobs_by_archive(fresh=True).values() for j in jobs}
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


def _ns(seconds: float) -> int:
    return round(seconds * 1_000_000_000)


# ------------------------------------------------------------------------------------------------
# The filesystem


class VaultFS:
    has_xattrs = True  # user.storefs.archive_id, .tree_hash, .retrieval, .inventory
    kernel_cache_ttl: float | None = None   # libfuse's default: a vault's tree changes only on refresh
    """The path-level filesystem over vault `vault_name` of `provider` (None: every vault).
    `state_dir` holds this remote's vault state (vaultstate.state_dir_for gives the usual place);
    `clock` is the service's clock (job dates are compared with it; tests pass their fake one)."""

    def __init__(self, provider: VaultProvider, vault_name: str | None, options: VaultOptions,
                 state_dir: Path, *, clock: Callable[[], float] | None = None) -> None:
        self.provider = provider
        self.vault_name = vault_name
        self.options = options
        self.state_dir = Path(state_dir)
        provider_clock = getattr(getattr(provider, "clock", None), "now", None)
        self.clock: Callable[[], float] = clock or provider_clock or time.time
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._views: dict[str, _VaultView] = {}
        self._vault_names: list[str] = [vault_name] if vault_name else []
        self._handles: dict[int, _Handle] = {}
        self._uploads: dict[tuple[str, str], _Upload] = {}
        self._next_fh = itertools.count(1)
        self._poller: threading.Thread | None = None
        self._mounted_ns = time.time_ns()

    def __repr__(self) -> str:
        return f"VaultFS({self.provider.remote!r}, {self.vault_name!r})"

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the cached inventory (instant) or adopt/start an inventory job; start the poller."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.vault_name:
            self._view(self.vault_name).activate()
        else:
            self.reload_vaults()
        if self.options.inventory_poll > 0 and self._poller is None:
            self._poller = threading.Thread(target=self._poll_loop, name="vault-inventory", daemon=True)
            self._poller.start()

    def reload_vaults(self) -> None:
        if not self.vault_name:
            names = sorted(v.name for v in self.provider.list_vaults())
            with self._lock:
                self._vault_names = names

    def _poll_loop(self) -> None:
        while not self.stopping.wait(self.options.inventory_poll):
            self.check_inventory()

    def check_inventory(self) -> bool:
        """Poll every started vault's inventory job once (what the poller does). True if a tree changed."""
        changed = False
        with self._lock:
            views = [v for v in self._views.values() if v.started]
        for view in views:
            try:
                if view.inventory is None and view.state.pending_inventory() is None and view.inventory_error:
                    view._ensure_inventory_job(adopt=True)
                changed = view.check_inventory() or changed
            except StoreError as exc:
                log.warning("vault %s: inventory poll: %s", view.name, exc)
            except Exception:  # the poller must survive anything
                log.exception("vault %s: inventory poll failed", view.name)
        return changed

    def close(self, timeout: float | None = None) -> list[str]:
        """Stop the poller, upload files still open for writing, close everything. Returns what
        could not be uploaded, with the reason. The provider stays open (the caller owns it)."""
        self.stopping.set()
        if self._poller is not None:
            self._poller.join(timeout=10)
        with self._lock:
            handles = list(self._handles.items())
        left = []
        for fh, handle in handles:
            try:
                self.release(fh)
            except StoreError as exc:
                left.append(f"{handle.path} ({exc})")
        return left

    # -- routing ---------------------------------------------------------------------------------

    def _view(self, name: str) -> _VaultView:
        with self._lock:
            view = self._views.get(name)
            if view is None:
                if name not in self._vault_names:
                    raise NotFound(f"no vault {name!r}")
                view = self._views[name] = _VaultView(self, name)
        return view

    def _route(self, path: str, *, activate: bool = True) -> tuple[_VaultView | None, str]:
        """(view, vault-relative path); (None, "/") for the root of a multi-vault mount."""
        check_path(path)
        if self.vault_name:
            view = self._view(self.vault_name)
            rel = path
        else:
            if path == "/":
                return None, "/"
            name, _, rest = path[1:].partition("/")
            view = self._view(name)
            rel = "/" + rest
        if activate or rel != "/":
            view.activate()
        return view, rel.rstrip("/") or "/"

    def _mount_path(self, view: _VaultView, rel: str) -> str:
        if self.vault_name:
            return rel
        return "/" + view.name + (rel if rel != "/" else "")

    # -- attributes ------------------------------------------------------------------------------

    def _dir_attrs(self, mtime: float) -> Attrs:
        perm = (0o755 if self.options.vault_writes else 0o555) & ~self.options.umask
        mtime_ns = _ns(mtime) if mtime else self._mounted_ns
        return Attrs(mode=stat.S_IFDIR | perm, size=0, uid=self.options.uid, gid=self.options.gid,
                     mtime_ns=mtime_ns, ctime_ns=mtime_ns)

    def _file_attrs(self, node: FileNode) -> Attrs:
        return Attrs(mode=stat.S_IFREG | (0o444 & ~self.options.umask), size=node.archive.size,
                     uid=self.options.uid, gid=self.options.gid, mtime_ns=_ns(node.mtime),
                     ctime_ns=_ns(node.archive.creation_date or node.mtime))

    def _upload_attrs(self, up: _Upload) -> Attrs:
        size = os.fstat(up.fd).st_size if up.state == "open" else (up.archive.size if up.archive else 0)
        return Attrs(mode=stat.S_IFREG | (stat.S_IMODE(up.mode) & ~0o222 if up.state != "open"
                                          else stat.S_IMODE(up.mode)),
                     size=size, uid=up.uid, gid=up.gid, mtime_ns=up.mtime_ns, ctime_ns=up.mtime_ns)

    def getattr(self, path: str, fh: int | None = None) -> Attrs:
        if fh is not None:
            with self._lock:
                handle = self._handles.get(fh)
            if handle is not None and handle.upload is not None and handle.upload.state == "open":
                return self._upload_attrs(handle.upload)
        view, rel = self._route(path, activate=False)
        if view is None:
            return self._dir_attrs(0.0)
        with self._lock:
            up = self._uploads.get((view.name, rel))
        if up is not None:
            return self._upload_attrs(up)
        if not view.started:  # a vault directory of a multi-vault mount not looked into yet
            return self._dir_attrs(0.0)
        found = view.lookup(rel)
        if found == "dir":
            return self._dir_attrs(view.dir_mtime(rel))
        if isinstance(found, FileNode):
            return self._file_attrs(found)
        raise NotFound(path)

    def readdir(self, path: str) -> list[str]:
        view, rel = self._route(path)
        if view is None:
            with self._lock:
                return list(self._vault_names)
        found = view.lookup(rel)
        if isinstance(found, FileNode):
            raise NotADirectory(path)
        if found is None:
            raise NotFound(path)
        names = set(view.listdir(rel))
        prefix = rel.rstrip("/") + "/"
        with self._lock:
            for vault, upath in self._uploads:
                if vault == view.name and upath.startswith(prefix) and "/" not in upath[len(prefix):]:
                    names.add(upath[len(prefix):])
        return sorted(names)


    def readdir_attrs(self, path: str) -> list[tuple[str, Attrs | None]]:
        """readdir's names; the kernel asks for each entry's attributes itself."""
        return [(name, None) for name in self.readdir(path)]
    def statfs(self) -> dict[str, int]:
        block = 4096
        with self._lock:
            views = [v for v in self._views.values() if v.started]
        used = files = 0
        for view in views:
            with view.lock:
                used += view.tree.total_size
                files += len(view.tree)
        free = 0
        if self.options.vault_writes:
            free = shutil.disk_usage(self.state_dir).free
        return {"f_bsize": block, "f_frsize": block, "f_blocks": (used + free + block - 1) // block,
                "f_bfree": free // block, "f_bavail": free // block, "f_files": files,
                "f_ffree": 0, "f_favail": 0, "f_namemax": 255}

    # -- reading ---------------------------------------------------------------------------------

    def getattr_etag(self, path: str) -> str | None:
        """What FuseOps keys the kernel page cache on: an archive never changes, so its id."""
        try:
            view, rel = self._route(path)
        except StoreError:
            return None
        found = view.lookup(rel) if view is not None else None
        return found.archive.archive_id if isinstance(found, FileNode) else None

    def _node(self, path: str) -> tuple[_VaultView, str, FileNode]:
        view, rel = self._route(path)
        if view is None:
            raise IsADirectory(path)
        found = view.lookup(rel)
        if found == "dir":
            raise IsADirectory(path)
        if not isinstance(found, FileNode):
            raise NotFound(path)
        return view, rel, found

    def open(self, path: str, flags: int) -> int:
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise ReadOnly(f"{path}: archives are read-only")
        view, rel = self._route(path)
        if view is not None:
            with self._lock:
                up = self._uploads.get((view.name, rel))
            if up is not None:  # a file still being written here: read what is staged
                return self._add_handle(_Handle(os.open(up.staged, os.O_RDONLY), path))
        view, rel, node = self._node(path)
        data = self._retrieve(view, rel, node.archive)
        return self._add_handle(_Handle(os.open(data, os.O_RDONLY), path))

    def _retrieve(self, view: _VaultView, rel: str, archive: ArchiveInfo) -> Path:
        deadline = time.monotonic() + self.options.vault_wait
        delay = self.options.poll_min
        while True:
            try:
                data, record = view.attempt(archive)
            except ArchiveNotReady:  # the server's own "not yet" (a race with its clock): ours instead
                data, record = None, view.state.job(archive.archive_id)
            if data is not None:
                return data
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.stopping.wait(min(delay, remaining)):
                raise self._not_ready(view, rel, record)
            delay = min(delay * 2, self.options.poll_max)

    def _not_ready(self, view: _VaultView, rel: str, record: JobRecord | None) -> ArchiveNotReady:
        where = self._mount_path(view, rel)
        if record is None:
            exc = ArchiveNotReady(f"{where}: not retrieved yet")
        else:
            exc = ArchiveNotReady(f"{where}: {record.tier} retrieval job {short_id(record.job_id)} in progress "
                                  f"since {iso8601(record.started)}; try again later")
        exc.errno = self.options.errno
        return exc

    def _add_handle(self, handle: _Handle) -> int:
        with self._lock:
            fh = next(self._next_fh)
            self._handles[fh] = handle
        return fh

    def _handle(self, fh: int) -> _Handle:
        with self._lock:
            handle = self._handles.get(fh)
        if handle is None:
            raise StoreError(f"bad file handle {fh}")
        return handle

    def read(self, fh: int, size: int, offset: int) -> bytes:
        return os.pread(self._handle(fh).fd, size, offset)

    def read_into(self, fh: int, into: memoryview, offset: int) -> int:
        return os.preadv(self._handle(fh).fd, [into], offset)

    # -- writing (vault_writes) ------------------------------------------------------------------

    def create(self, path: str, mode: int, uid: int, gid: int, flags: int) -> int:
        if not self.options.vault_writes:
            raise ReadOnly(f"{path}: the vault is mounted read-only (-o vault_writes adds new files)")
        check_path(path)
        parent = path.rstrip("/").rpartition("/")[0]
        if not self.vault_name and not parent:
            raise NotPermitted("nothing but vaults lives at the top of this mount")
        view, rel = self._route(path)
        if view is None or rel == "/":
            raise AlreadyExists(path)
        parent_rel = rel.rsplit("/", 1)[0] or "/"
        found = view.lookup(parent_rel)
        if found is None:
            raise NotFound(f"{path}: no such directory (directories cannot be created in a vault)")
        if found != "dir":
            raise NotADirectory(path)
        with self._lock:
            pending = (view.name, rel) in self._uploads
        if pending or view.lookup(rel) is not None:
            if flags & os.O_EXCL:
                raise AlreadyExists(path)
            raise ReadOnly(f"{path}: archives are immutable; only new files can be written")
        if clean_path(rel[1:]) != rel[1:]:
            raise InvalidArgument(f"{path}: this name would not read back as the same path")
        if upload_description(rel[1:], time.time(), self.vault_description_limit(view)) is None:
            raise NameTooLong(f"{path}: the path does not fit in an archive description")
        staged = view.state.staging_file()
        fd = os.open(staged, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        up = _Upload(view, rel, staged, fd, stat.S_IFREG | stat.S_IMODE(mode), uid, gid, time.time_ns())
        with self._lock:
            if (view.name, rel) in self._uploads:  # lost a race with another create
                os.close(fd)
                staged.unlink(missing_ok=True)
                raise AlreadyExists(path)
            self._uploads[(view.name, rel)] = up
        return self._add_handle(_Handle(fd, path, up, writable=True))

    @staticmethod
    def vault_description_limit(view: _VaultView) -> int:
        return view.vault.capabilities.max_description_bytes

    def _writable_upload(self, fh: int) -> _Upload:
        handle = self._handle(fh)
        if not handle.writable or handle.upload is None:
            raise ReadOnly(f"{handle.path}: archives are read-only")
        return handle.upload

    def write(self, fh: int, data: bytes | memoryview, offset: int) -> int:
        up = self._writable_upload(fh)
        with up.lock:
            if up.state != "open":
                raise ReadOnly(f"{up.rel}: already uploaded as an archive; archives are immutable")
            written = os.pwrite(up.fd, data, offset)
            up.mtime_ns = time.time_ns()
        return written

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        up = None
        if fh is not None:
            handle = self._handle(fh)
            up = handle.upload if handle.writable else None
        else:
            view, rel = self._route(path)
            if view is not None:
                with self._lock:
                    up = self._uploads.get((view.name, rel))
        if up is None:
            raise ReadOnly(f"{path}: archives are read-only")
        if length < 0:
            raise InvalidArgument("negative length")
        with up.lock:
            if up.state != "open":
                raise ReadOnly(f"{up.rel}: already uploaded as an archive; archives are immutable")
            os.ftruncate(up.fd, length)
            up.mtime_ns = time.time_ns()

    def _upload(self, up: _Upload) -> None:
        """Upload a written file as a new archive (once); the tree shows it at once."""
        with up.lock:
            if up.state == "uploaded":
                return
            if up.state == "failed":
                raise StoreError(f"{up.rel}: the upload failed earlier")
            size = os.fstat(up.fd).st_size
            if size == 0:
                raise InvalidArgument(f"{up.rel}: a vault archive cannot be empty; nothing was uploaded")
            view = up.view
            description = upload_description(up.rel[1:], up.mtime_ns / 1e9, self.vault_description_limit(view))
            if description is None:
                raise NameTooLong(f"{up.rel}: the path does not fit in an archive description")
            try:
                with open(up.staged, "rb") as f:
                    archive = view.vault.upload_archive(f, size, description)
            except BaseException as exc:
                up.state = "failed"
                self._drop_upload(up)
                log.error("vault %s: upload of %s failed: %s; it is not in the vault", view.name, up.rel, exc)
                raise
            up.state, up.archive = "uploaded", archive
            view.add_uploaded(archive, up.rel)
            if self.options.keep_uploads:
                tmp = view.state.new_download()
                try:
                    os.link(up.staged, tmp)
                    view.state.commit_data(tmp, archive, archive.tree_hash, None)
                except OSError as exc:
                    tmp.unlink(missing_ok=True)
                    log.warning("vault %s: cannot keep %s in the cache: %s", view.name, up.rel, exc)
            self._drop_upload(up)
        log.info("vault %s: uploaded %s as archive %s (%d bytes)", view.name, up.rel,
                 short_id(archive.archive_id), size)

    def _drop_upload(self, up: _Upload) -> None:
        with self._lock:
            if self._uploads.get((up.view.name, up.rel)) is up:
                del self._uploads[(up.view.name, up.rel)]
        up.staged.unlink(missing_ok=True)  # open descriptors keep reading it

    def flush(self, fh: int) -> None:
        handle = self._handle(fh)
        if handle.writable and handle.upload is not None:
            self._upload(handle.upload)

    def fsync(self, fh: int) -> None:
        handle = self._handle(fh)
        if handle.writable and handle.upload is not None and handle.upload.state == "open":
            os.fsync(handle.fd)  # durable here; the upload happens at close (it cannot be redone)

    def release(self, fh: int) -> None:
        with self._lock:
            handle = self._handles.pop(fh, None)
        if handle is None:
            return
        try:
            up = handle.upload
            if handle.writable and up is not None and up.state == "open":
                try:
                    self._upload(up)
                except InvalidArgument:
                    self._drop_upload(up)  # an empty file: nothing to keep
                    raise
        finally:
            os.close(handle.fd)

    # -- refusals --------------------------------------------------------------------------------

    def _refuse(self, path: str) -> None:
        raise ReadOnly(f"{path}: archive vaults are read-only")

    def unlink(self, path: str) -> None:
        self._refuse(path)

    def rmdir(self, path: str) -> None:
        self._refuse(path)

    def mkdir(self, path: str, mode: int, uid: int, gid: int) -> None:
        self._refuse(path)

    def rename(self, old: str, new: str) -> None:
        self._refuse(old)

    def chmod(self, path: str, mode: int) -> None:
        self._refuse(path)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._refuse(path)

    def utimens(self, path: str, mtime_ns: int | None) -> None:
        self._refuse(path)

    def symlink(self, path: str, target: str, uid: int, gid: int) -> None:
        self._refuse(path)

    def link(self, path: str, target: str) -> None:
        self._refuse(path)

    def mknod(self, path: str, mode: int, uid: int, gid: int) -> None:
        self._refuse(path)

    def readlink(self, path: str) -> str:
        raise InvalidArgument(f"{path} is not a symbolic link")

    # -- extended attributes ---------------------------------------------------------------------

    def listxattr(self, path: str) -> list[str]:
        view, rel = self._route(path)
        if view is None:
            return []
        found = view.lookup(rel)
        if isinstance(found, FileNode):
            names = [XATTR_ARCHIVE_ID, XATTR_RETRIEVAL]
            if found.archive.tree_hash:
                names.append(XATTR_TREE_HASH)
            return names
        if found == "dir" and rel == "/":
            return [XATTR_INVENTORY]
        return []

    def getxattr(self, path: str, name: str) -> bytes:
        view, rel = self._route(path)
        found = view.lookup(rel) if view is not None else "dir"
        if found is None:
            with self._lock:
                pending = view is not None and (view.name, rel) in self._uploads
            if not pending:
                raise NotFound(path)
        if view is not None and found == "dir" and rel == "/" and name == XATTR_INVENTORY:
            return view.inventory_status().encode("utf-8")
        if isinstance(found, FileNode):
            archive = found.archive
            if name == XATTR_ARCHIVE_ID:
                return archive.archive_id.encode("utf-8")
            if name == XATTR_TREE_HASH and archive.tree_hash:
                return archive.tree_hash.encode("ascii")
            if name == XATTR_RETRIEVAL:
                return view.retrieval_status(archive).encode("utf-8")  # type: ignore[union-attr]
        raise NoAttribute(f"{path}: no attribute {name}")

    # -- commands (storefs vault refresh / restore / jobs) ---------------------------------------

    def _started_views(self) -> list[_VaultView]:
        if self.vault_name:
            return [self._view(self.vault_name)]
        with self._lock:
            names = list(self._vault_names)
        views = [self._view(n) for n in names]
        for view in views:
            view.activate()
        return views

    def refresh(self, wait: bool = False, timeout: float | None = None) -> list[RefreshReport]:
        """Start an inventory job per vault (adopting one still pending) and, with `wait`, swap the
        tree in when it is done (up to `timeout` seconds in all)."""
        if not self.vault_name:
            self.reload_vaults()
        deadline = None if timeout is None else time.monotonic() + timeout
        reports = []
        for view in self._started_views():
            view.activate()
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            reports.append(view.refresh(wait, left))
        return reports

    def restore(self, paths: Iterable[str], wait: bool = False, timeout: float | None = None,
                progress: Callable[[int, int], None] | None = None) -> RestoreReport:
        """Start retrieval jobs for the archives at `paths` (a directory: every archive below it);
        with `wait`, poll until every job is done (or `timeout` seconds pass), calling
        `progress(done, total)` after each round. Never downloads: a later open does."""
        targets: dict[tuple[str, str], tuple[_VaultView, str, ArchiveInfo]] = {}
        for path in paths:
            view, rel = self._route(path)
            views = [(view, rel)] if view is not None else [(v, "/") for v in self._started_views()]
            for one_view, one_rel in views:
                found = one_view.lookup(one_rel)
                if found is None:
                    raise NotFound(path)
                for file_rel, node in one_view.files_below(one_rel):
                    key = (one_view.name, node.archive.archive_id)
                    targets.setdefault(key, (one_view, self._mount_path(one_view, file_rel), node.archive))
        items: list[RestoreItem] = []
        by_view: dict[str, list[RestoreItem]] = {}
        views: dict[str, _VaultView] = {}
        listings: dict[str, dict[str, JobInfo]] = {}
        for (vault, _), (view, mpath, archive) in targets.items():
            if vault not in listings:
                listings[vault] = {j.job_id: j for jobs in view._jobs_by_archive(fresh=True).values()
                                   for j in jobs}
            item = view.request(archive, mpath, listings[vault])
            items.append(item)
            by_view.setdefault(vault, []).append(item)
            views[vault] = view
        report = RestoreReport(items)
        if progress:
            progress(report.done, len(items))
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = self.options.poll_min
        while wait and report.done < len(items):
            if deadline is not None and time.monotonic() >= deadline:
                report.timed_out = True
                break
            pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            if self.stopping.wait(pause):
                report.timed_out = True
                break
            delay = min(delay * 2, self.options.poll_max)
            for vault, vault_items in by_view.items():
                try:
                    views[vault].poll_items(vault_items)
                except StoreError as exc:
                    log.warning("vault %s: polling jobs: %s", vault, exc)
            if progress:
                progress(report.done, len(items))
        return report

    def jobs(self) -> list[JobInfo]:
        """Every job the server knows, of this vault (or of every vault)."""
        if self.vault_name:
            return self._view(self.vault_name).vault.list_jobs()
        self.reload_vaults()
        with self._lock:
            names = list(self._vault_names)
        found: list[JobInfo] = []
        for name in names:
            found.extend(self.provider.vault(name).list_jobs())
        return found

    def path_of(self, archive_id: str, vault: str | None = None) -> str | None:
        """The mount path showing `archive_id`, if the tree has it."""
        with self._lock:
            views = [self._views[vault]] if vault in self._views else list(self._views.values())
        for view in views:
            rel = view.path_of(archive_id)
            if rel is not None:
                return self._mount_path(view, rel)
        return None

    def drop_cached(self, path: str) -> None:
        """Forget the downloaded bytes of the archive at `path` (the next open retrieves again)."""
        view, _, node = self._node(path)
        view.state.drop_data(node.archive.archive_id)
