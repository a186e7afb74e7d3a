"""One vault of a vault mount: its tree and its inventory, and (retrievals.py) its retrieval jobs.

The tree comes from the inventory cached on disk (state.py) plus the archives uploaded through
storefs that no inventory lists yet, minus the archives deleted through storefs (`delete`,
`-o vault_deletes`) that an inventory still lists: those stay hidden until an inventory dated after
the deletion no longer has them, in every process (the deletion is recorded in the state).
`reload_if_changed` notices what another process changed (a refresh, a deletion) by the state's
change counter and the inventory file's stamp: VaultFS's watcher calls it several times a second.

Without a cached inventory the view adopts an inventory job started earlier (its own record, or one
`list_jobs` finds) or starts one, and swaps the tree in when the job is done (`check_inventory`,
which VaultFS's poller calls; `refresh` for `storefs vault refresh`).

The view knows nothing of the filesystem above it: it gets its vault, options, state, the service's
clock and the mount's stop event through its constructor. Locking: `lock` guards the tree and
inventory fields, `_start_lock` the first load, `_load_lock` a reload from disk and a deletion (so
neither undoes the other); decisions shared with other processes take the flock
locks of VaultState, never nested and never while `lock` is held.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

from ...errors import NotFound, StoreError
from ...options import VaultOptions
from ...retrieval.poll import JobPoll
from ...vaults.base import ArchiveInfo, ArchiveVault, JobAction, JobInfo, JobStatus, Tier, iso8601, short_id
from .names import FileNode, Tree, build_tree, name_of, without_archive
from .retrievals import Retrievals, output_expired
from .state import Inventory, PendingInventory, Tombstone, UploadRecord, VaultState, archive_key

log = logging.getLogger(__name__)

# An upload an inventory has not listed this long after it was made was deleted elsewhere.
UPLOAD_GRACE = 7 * 24 * 3600.0


@dataclasses.dataclass
class RefreshReport:
    vault: str
    job_id: str | None
    state: str                      # in-progress | done | failed
    archives: int                   # in the tree now
    inventory_date: float | None
    message: str | None = None


class VaultView:
    """The tree and inventory of one vault, and its `retrievals`. `clock` is the service's clock (job dates
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
        self.archives: dict[str, ArchiveInfo] = {}   # what the tree shows, by id (rebuilds after deletes)
        self.inventory: Inventory | None = None
        # what _load read: the inventory file's stamp and the state's change counter
        self.stamp: tuple[tuple[int, int] | None, int] | None = None
        self.inventory_error: str | None = None
        self._start_lock = threading.Lock()
        # Held while the tree is rebuilt from disk and while a deletion is recorded and applied, so a
        # reload that read the state before a deletion cannot swap the deleted archive back in.
        self._load_lock = threading.RLock()
        self.started = False
        self.loaded_pending: PendingInventory | None = None  # a finished job activation read; see refresh()
        self.retrievals = Retrievals(name, vault, state, self.tier, options.status_ttl, clock, self.path_of,
                                     self.archive_of)

    def __repr__(self) -> str:
        return f"VaultView({self.name!r})"

    def _job_expired(self, info: JobInfo) -> bool:
        return output_expired(info, self.now())

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

    def _stamp(self) -> tuple[tuple[int, int] | None, int]:
        return self.state.inventory_stamp(), self.state.changes()

    def _load(self) -> None:
        """Read the cached inventory, the uploads and the deletions from disk and rebuild the tree."""
        with self._load_lock:
            self._load_locked()

    def _load_locked(self) -> None:
        stamp = self._stamp()  # before reading: a change made meanwhile is seen by the next look
        inventory = self.state.load_inventory()
        uploads = self.state.uploads()
        archives = list(inventory.archives) if inventory else []
        known = {a.archive_id for a in archives}
        hidden = set()
        for tombstone in self.state.tombstones():
            if inventory is not None and inventory.date >= tombstone.deleted and tombstone.archive_id not in known:
                self.state.remove_tombstone(tombstone.archive_id)  # an inventory after it agrees: done
            else:
                hidden.add(tombstone.archive_id)
        for upload in uploads:
            if upload.archive.archive_id in known:
                self.state.remove_upload(upload.archive.archive_id)  # the inventory has it now
            elif inventory is not None and inventory.date > upload.archive.creation_date + UPLOAD_GRACE:
                log.info("vault %s: %s (uploaded %s) is in no inventory since: deleted elsewhere",
                         self.name, upload.path, iso8601(upload.archive.creation_date))
                self.state.remove_upload(upload.archive.archive_id)
            else:
                archives.append(upload.archive)
        shown = {a.archive_id: a for a in archives if a.archive_id not in hidden}
        tree = build_tree(shown.values())
        with self.lock:
            self.inventory, self.stamp, self.tree, self.archives = inventory, stamp, tree, shown

    def reload_if_changed(self) -> bool:
        """Reload if another process (or thread) changed the tree's records. A stat and a tiny read."""
        if self._stamp() != self.stamp:
            self._load()
            return True
        return False

    def _newest_inventory_job(self) -> JobInfo | None:
        candidates = [j for j in self.vault.list_jobs() if j.action is JobAction.INVENTORY_RETRIEVAL
                      and (j.status is JobStatus.IN_PROGRESS or (j.succeeded and not self._job_expired(j)))]
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
        if info is None or info.status is JobStatus.FAILED or self._job_expired(info):
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
                    if info.status is JobStatus.FAILED or self._job_expired(info):
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

    def archive_of(self, archive_id: str) -> ArchiveInfo | None:
        with self.lock:
            path = self.tree.by_id.get(archive_id)
            node = self.tree.file(path) if path else None
        return node.archive if node is not None else None

    def add_uploaded(self, archive: ArchiveInfo, rel: str) -> None:
        self.state.add_upload(UploadRecord(archive, rel))
        with self.lock:
            self.archives[archive.archive_id] = archive
            if not self.tree.exists(rel):
                self.tree.add(rel, FileNode(archive, _mtime_of(archive), rel))
                return
        self._load()  # a name clash after all: let the naming scheme place it

    def delete(self, archive: ArchiveInfo, what: str) -> None:
        """Delete `archive` on the service (`-o vault_deletes`) and hide it from the tree now and in
        every process until an inventory taken after the deletion no longer lists it. The service
        saying it has no such archive counts as done: it is gone, as asked. Its downloaded bytes,
        job record and upload record go too (a reader holding it open keeps its descriptor)."""
        try:
            self.vault.delete_archive(archive.archive_id)
        except NotFound:
            log.info("vault %s: %s (archive %s) was already gone from the service", self.name, what,
                     short_id(archive.archive_id))
        with self._load_lock:
            self._forget(archive, what)

    def _forget(self, archive: ArchiveInfo, what: str) -> None:
        """Record a deletion and take the archive out of the tree (under _load_lock)."""
        count = self.state.add_tombstone(Tombstone(archive.archive_id, self.now()))
        log.info("vault %s: deleted %s (archive %s)", self.name, what, short_id(archive.archive_id))
        self.state.remove_upload(archive.archive_id)
        self.state.drop_data(archive.archive_id)
        job = self.state.job(archive.archive_id)
        if job is not None:
            with self.state.lock(f"job-{archive_key(archive.archive_id)[:3]}"):  # retrievals.py's lock
                self.state.forget_job(archive.archive_id, job.job_id)
        with self.lock:
            self.archives.pop(archive.archive_id, None)
            rest = self.archives
            self.tree = without_archive(self.tree, archive.archive_id, lambda: list(rest.values()))
            if self.stamp is not None and count == self.stamp[1] + 1:
                # Our own change alone since the last load: nothing to read back (a reload of a big
                # inventory per deleted file would make a prune quadratic).
                self.stamp = (self.stamp[0], count)


def _mtime_of(archive: ArchiveInfo) -> float:
    mtime = name_of(archive)[1]
    return archive.creation_date if mtime is None else mtime

