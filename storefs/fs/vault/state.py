"""On-disk state of one mounted vault, shared by the mount daemon and the CLI commands (`storefs
restore`, `storefs jobs`, `storefs vault refresh`) that run in other processes.

The state directory belongs to the vault service's identity (`state_dir_for`: endpoint or region,
account; for the local vault its root), not to the remote's name: a remote re-pointed at another
endpoint gets a fresh state, and two remotes naming one vault share it. `identity.json` there says
whose it is. Directories of the older layout (named by the remote alone) are never read
(`legacy_state_dir`): nothing in them says which endpoint they came from.

Layout under the vault's state directory (`<state_dir>/<vault>/`):
    inventory.json              the cached inventory: its date, the job that made it, every archive
    inventory-job.json          an inventory job started but not read yet (so nobody starts another)
    deleted/<key>.json          an archive deleted through storefs (`-o vault_deletes`): hidden from the
                                tree until an inventory taken after the deletion no longer lists it
    changes                     a counter bumped by every change of the tree's records made by any
                                process (inventory swapped in, archive deleted): mounts watch it
    jobs/<key>.json             the retrieval job of one archive: id, tier, status, dates, failure
    jobs/<key>.r<S>-<E>.json    a ranged retrieval job of bytes [S, E) of one archive (same fields)
    uploads/<key>.json          an archive uploaded through storefs, shown before an inventory has it
    staging/                    new files (vault_writes) and their journal entries, until uploaded
    locks/<name>.lock           flock files (below)
and under the data directory (`<data_dir>/<vault>/data/`, the state directory unless cache_dir says):
    <key>                       an archive's bytes, whole, tree hash verified before it got here
    <key>.json                  what they are: archive id, size, tree hash, the job they came from
    <key>.r<S>-<E>[.json]       bytes [S, E) of an archive from a ranged job, verified, and their record
    .tmp-*                      downloads in progress (removed on failure; stale ones at start)
`<key>` is the SHA-256 of the archive id (ids are server-chosen: never used as file names).
A data file's mtime is when it was last opened (datacache.py evicts the least recently used first).

Every record is one JSON file written to a private temporary file, fsynced and renamed into place, so
a reader in another process sees the old record or the new one, never half of one. A record that
cannot be read (a crash of an older version, a hand edit) counts as absent and is logged.

Decisions that must happen once (start a retrieval job for an archive, download its output, start or
read an inventory) are taken under an exclusive `flock` on a lock file, then re-checked: two threads
or two processes race to the lock, the loser finds the winner's record. Locks are never nested (but
for the `changes` lock, taken last and alone around one counter update) and never held longer than
one job request or one download. `flock` locks belong to the open file, so
threads of one process exclude each other too.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ...vaults.base import ArchiveInfo

log = logging.getLogger(__name__)
T = TypeVar("T")

FORMAT = 1


def archive_key(archive_id: str) -> str:
    return hashlib.sha256(archive_id.encode("utf-8", "surrogatepass")).hexdigest()


def state_dir_for(cache_root: Path, identity: str) -> Path:
    """Where the vault state of a vault service (`identity`: the provider's, e.g. `glacier
    https://glacier.eu-west-1.amazonaws.com account -`) lives under a storefs cache directory; the
    daemon and the CLI agree on it. The digest is 16 hex digits long, so no name of the older layout
    (`legacy_state_dir`, 10 digits) can ever be taken for one of these."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", identity)[:60] or "_"
    digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return Path(cache_root) / "vaults" / f"{safe}-{digest}"


def legacy_state_dir(cache_root: Path, remote: str) -> Path:
    """Where storefs kept a remote's vault state before it was keyed by identity (never read now)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", remote)[:60] or "_"
    digest = hashlib.sha1(remote.encode("utf-8")).hexdigest()[:10]
    return Path(cache_root) / "vaults" / f"{safe}-{digest}"


def mark_identity(state_dir: Path, identity: str) -> None:
    """Say in the state directory whose state it is (for people, and for `storefs vault refresh`
    looking for the state of running mounts). Written once."""
    path = Path(state_dir) / "identity.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = read_record(path) if path.exists() else None
    if record is None or record.get("identity") != identity:
        write_record(path, {"format": FORMAT, "identity": identity})


def write_record(path: Path, record: dict) -> None:
    """Write a JSON record atomically and durably (a temporary file fsynced, then renamed over)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_record(path: Path) -> dict | None:
    """A record written by write_record, None if it is missing, unreadable or of another format."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable state file %s (%s)", path, exc.__class__.__name__)
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        log.warning("ignoring state file %s of an unknown format", path)
        return None
    return record


def _read_records(folder: Path, parse: Callable[[dict], T]) -> list[T]:
    """Every readable record in `folder`, parsed; malformed ones count as absent."""
    found = []
    for path in sorted(folder.glob("*.json")):
        record = read_record(path)
        if record is None:
            continue
        try:
            found.append(parse(record))
        except (KeyError, TypeError, ValueError):
            continue
    return found


def _archive_to_dict(a: ArchiveInfo) -> dict:
    return {"id": a.archive_id, "d": a.description, "s": a.size, "c": a.creation_date, "h": a.tree_hash}


def _archive_from_dict(d: Any) -> ArchiveInfo:
    return ArchiveInfo(archive_id=str(d["id"]), description=str(d.get("d") or ""), size=int(d["s"]),
                       creation_date=float(d.get("c") or 0.0), tree_hash=d.get("h") or None)


# ------------------------------------------------------------------------------------------------
# Records


@dataclasses.dataclass(frozen=True)
class Inventory:
    date: float                 # when the inventory job completed (service clock)
    job_id: str | None
    archives: list[ArchiveInfo]


@dataclasses.dataclass(frozen=True)
class PendingInventory:
    job_id: str
    started: float              # service clock


@dataclasses.dataclass(frozen=True)
class JobRecord:
    """The retrieval job of one archive. `status` is what we last saw: InProgress, Succeeded, Failed."""

    archive_id: str
    job_id: str
    tier: str
    started: float                      # service clock
    status: str = "InProgress"
    completed: float | None = None      # service clock
    message: str | None = None          # the failure's StatusMessage
    reported: bool = False              # a Failed job was reported to a reader: the next open retries
    checked: float = 0.0                # wall clock of the last describe (rate-limits status polls)
    byte_range: tuple[int, int] | None = None   # [start, end) of a ranged job; None: the whole archive

    def to_dict(self) -> dict:
        record = {"format": FORMAT, **dataclasses.asdict(self)}
        record["byte_range"] = list(self.byte_range) if self.byte_range is not None else None
        return record

    @classmethod
    def from_dict(cls, d: dict) -> JobRecord:
        return cls(archive_id=str(d["archive_id"]), job_id=str(d["job_id"]), tier=str(d["tier"]),
                   started=float(d["started"]), status=str(d.get("status") or "InProgress"),
                   completed=None if d.get("completed") is None else float(d["completed"]),
                   message=d.get("message"), reported=bool(d.get("reported")),
                   checked=float(d.get("checked") or 0.0), byte_range=_range_of(d.get("byte_range")))


def _range_of(value: Any) -> tuple[int, int] | None:
    """A stored [start, end) (records of older versions have none: the whole archive)."""
    if value is None:
        return None
    start, end = (int(v) for v in value)
    if start < 0 or end <= start:
        raise ValueError("empty byte range")
    return start, end


def _range_suffix(byte_range: tuple[int, int] | None) -> str:
    return "" if byte_range is None else f".r{byte_range[0]}-{byte_range[1]}"


@dataclasses.dataclass(frozen=True)
class UploadRecord:
    archive: ArchiveInfo
    path: str                   # the vault-relative path it was written under (`/a/b`)


@dataclasses.dataclass(frozen=True)
class Tombstone:
    """An archive deleted through storefs, hidden until an inventory dated after `deleted` (service
    clock) no longer lists it: inventories lag deletions (Glacier's by about a day)."""

    archive_id: str
    deleted: float


@dataclasses.dataclass(frozen=True)
class CachedData:
    path: Path
    archive_id: str
    size: int
    tree_hash: str | None
    job_id: str | None
    byte_range: tuple[int, int] | None = None   # bytes of a ranged job's output; None: whole


# ------------------------------------------------------------------------------------------------
# The state of one vault


class VaultState:
    """Records of one vault under `root` (its state directory) and `data_root` (its data directory).
    Thread-safe and multi-process safe as the module docstring says."""

    def __init__(self, root: Path, data_root: Path | None = None) -> None:
        self.root = Path(root)
        self.data_dir = Path(data_root or root) / "data"
        for sub in (self.root / "jobs", self.root / "uploads", self.root / "staging", self.root / "locks",
                    self.root / "deleted", self.data_dir):
            sub.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"VaultState({str(self.root)!r})"

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock between threads and processes (flock on `locks/<name>.lock`)."""
        fd = os.open(self.root / "locks" / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the only descriptor of the open file releases the lock

    # -- inventory -------------------------------------------------------------------------------

    def load_inventory(self) -> Inventory | None:
        record = read_record(self.root / "inventory.json")
        if record is None:
            return None
        try:
            return Inventory(date=float(record["date"]), job_id=record.get("job_id"),
                             archives=[_archive_from_dict(d) for d in record["archives"]])
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring malformed cached inventory in %s", self.root)
            return None

    def inventory_stamp(self) -> tuple[int, int] | None:
        """Changes whenever inventory.json is replaced (another process swapped a new one in)."""
        try:
            st = os.stat(self.root / "inventory.json")
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def save_inventory(self, inventory: Inventory) -> None:
        write_record(self.root / "inventory.json", {
            "format": FORMAT, "date": inventory.date, "job_id": inventory.job_id,
            "archives": [_archive_to_dict(a) for a in inventory.archives]})
        self.note_change()

    def adopt_inventory(self, inventory: Inventory) -> bool:
        """Save `inventory` unless the one here is as new (another state directory's refresh handed
        it over). True if it was saved."""
        with self.lock("inventory"):
            current = self.load_inventory()
            if current is not None and current.date >= inventory.date:
                return False
            self.save_inventory(inventory)
            pending = self.pending_inventory()
            if pending is not None and pending.job_id == inventory.job_id:
                self.clear_pending_inventory(pending.job_id)
            return True

    # -- the change counter (what running mounts watch) ------------------------------------------

    def changes(self) -> int:
        """How many times the tree's records changed (0: never). One small read: mounts call it
        several times a second."""
        try:
            with open(self.root / "changes", "rb") as f:
                return int(f.read(32) or b"0")
        except (FileNotFoundError, ValueError):
            return 0

    def note_change(self) -> int:
        """Bump the counter (atomically, under its lock); the new value."""
        with self.lock("changes"):
            count = self.changes() + 1
            tmp = self.root / f".changes.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            try:
                tmp.write_text(str(count))
                os.replace(tmp, self.root / "changes")
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            return count

    # -- deleted archives ------------------------------------------------------------------------

    def add_tombstone(self, tombstone: Tombstone) -> int:
        """Record a deletion; the change counter's new value."""
        write_record(self.root / "deleted" / f"{archive_key(tombstone.archive_id)}.json",
                    {"format": FORMAT, "archive_id": tombstone.archive_id, "deleted": tombstone.deleted})
        return self.note_change()

    def tombstones(self) -> list[Tombstone]:
        return _read_records(self.root / "deleted",
                             lambda r: Tombstone(str(r["archive_id"]), float(r["deleted"])))

    def remove_tombstone(self, archive_id: str) -> None:
        (self.root / "deleted" / f"{archive_key(archive_id)}.json").unlink(missing_ok=True)

    def pending_inventory(self) -> PendingInventory | None:
        record = read_record(self.root / "inventory-job.json")
        if record is None:
            return None
        try:
            return PendingInventory(job_id=str(record["job_id"]), started=float(record["started"]))
        except (KeyError, TypeError, ValueError):
            return None

    def set_pending_inventory(self, pending: PendingInventory) -> None:
        write_record(self.root / "inventory-job.json",
                    {"format": FORMAT, "job_id": pending.job_id, "started": pending.started})

    def clear_pending_inventory(self, job_id: str) -> None:
        """Forget the pending inventory job if it is still `job_id` (call under lock('inventory'))."""
        pending = self.pending_inventory()
        if pending is not None and pending.job_id == job_id:
            (self.root / "inventory-job.json").unlink(missing_ok=True)

    # -- retrieval jobs --------------------------------------------------------------------------

    def _job_path(self, archive_id: str, byte_range: tuple[int, int] | None = None) -> Path:
        return self.root / "jobs" / f"{archive_key(archive_id)}{_range_suffix(byte_range)}.json"

    def job(self, archive_id: str, byte_range: tuple[int, int] | None = None) -> JobRecord | None:
        """The whole-archive job of `archive_id`, or its job of exactly `byte_range`."""
        record = read_record(self._job_path(archive_id, byte_range))
        if record is None:
            return None
        try:
            job = JobRecord.from_dict(record)
        except (KeyError, TypeError, ValueError):
            return None
        return job if job.archive_id == archive_id and job.byte_range == byte_range else None

    def range_jobs(self, archive_id: str) -> list[JobRecord]:
        """Every ranged job recorded for `archive_id`, by start."""
        found = []
        for path in (self.root / "jobs").glob(f"{archive_key(archive_id)}.r*.json"):
            record = read_record(path)
            try:
                job = JobRecord.from_dict(record) if record is not None else None
            except (KeyError, TypeError, ValueError):
                continue
            if job is not None and job.archive_id == archive_id and job.byte_range is not None:
                found.append(job)
        return sorted(found, key=lambda j: j.byte_range or (0, 0))

    def save_job(self, job: JobRecord) -> None:
        write_record(self._job_path(job.archive_id, job.byte_range), job.to_dict())

    def update_job(self, job: JobRecord, **changes: Any) -> JobRecord:
        """Save `job` with `changes` unless its record now names another job (then return that one)."""
        current = self.job(job.archive_id, job.byte_range)
        if current is not None and current.job_id != job.job_id:
            return current
        updated = dataclasses.replace(job, **changes)
        self.save_job(updated)
        return updated

    def forget_job(self, archive_id: str, job_id: str, byte_range: tuple[int, int] | None = None) -> None:
        """Drop the record if it still names `job_id` (call under the archive's job lock)."""
        current = self.job(archive_id, byte_range)
        if current is not None and current.job_id == job_id:
            self._job_path(archive_id, byte_range).unlink(missing_ok=True)

    def jobs(self) -> list[JobRecord]:
        return _read_records(self.root / "jobs", JobRecord.from_dict)

    # -- uploads ---------------------------------------------------------------------------------

    def add_upload(self, upload: UploadRecord) -> None:
        write_record(self.root / "uploads" / f"{archive_key(upload.archive.archive_id)}.json",
                    {"format": FORMAT, "archive": _archive_to_dict(upload.archive), "path": upload.path})

    def uploads(self) -> list[UploadRecord]:
        return _read_records(self.root / "uploads",
                             lambda record: UploadRecord(_archive_from_dict(record["archive"]), str(record["path"])))

    def remove_upload(self, archive_id: str) -> None:
        (self.root / "uploads" / f"{archive_key(archive_id)}.json").unlink(missing_ok=True)

    def staging_file(self) -> Path:
        """A name for a file being written (`-o vault_writes` names its own: uploads.py journals them)."""
        return self.root / "staging" / f"{os.getpid()}-{secrets.token_hex(8)}"

    # -- downloaded data -------------------------------------------------------------------------

    def _data_paths(self, archive_id: str, byte_range: tuple[int, int] | None = None) -> tuple[Path, Path]:
        name = archive_key(archive_id) + _range_suffix(byte_range)
        return self.data_dir / name, self.data_dir / f"{name}.json"

    def cached(self, archive: ArchiveInfo, byte_range: tuple[int, int] | None = None) -> CachedData | None:
        """The verified bytes of `archive` (or of its `byte_range`), if they are here and are the
        archive's (same id, size, and — whole archives — tree hash where both sides know one)."""
        data_path, meta_path = self._data_paths(archive.archive_id, byte_range)
        record = read_record(meta_path)
        if record is None:
            return None
        try:
            cached = CachedData(data_path, str(record["archive_id"]), int(record["size"]),
                                record.get("tree_hash"), record.get("job_id"), _range_of(record.get("byte_range")))
        except (KeyError, TypeError, ValueError):
            return None
        if cached.archive_id != archive.archive_id or cached.byte_range != byte_range:
            return None
        expected = archive.size if byte_range is None else min(byte_range[1], archive.size) - byte_range[0]
        if cached.size != expected:
            return None
        if (byte_range is None and archive.tree_hash and cached.tree_hash
                and archive.tree_hash.lower() != cached.tree_hash.lower()):
            return None
        try:
            if os.stat(data_path).st_size != cached.size:
                return None
        except FileNotFoundError:
            return None
        return cached

    def new_download(self) -> Path:
        return self.data_dir / f".tmp-{os.getpid()}-{secrets.token_hex(8)}"

    def cached_ranges(self, archive: ArchiveInfo) -> list[CachedData]:
        """Every verified range of `archive` that is here, by start."""
        found = []
        for meta in self.data_dir.glob(f"{archive_key(archive.archive_id)}.r*.json"):
            record = read_record(meta)
            try:
                byte_range = _range_of(record.get("byte_range")) if record is not None else None
            except (TypeError, ValueError):
                continue
            cached = self.cached(archive, byte_range) if byte_range is not None else None
            if cached is not None:
                found.append(cached)
        return sorted(found, key=lambda c: c.byte_range or (0, 0))

    def commit_data(self, tmp: Path, archive: ArchiveInfo, tree_hash: str | None, job_id: str | None,
                    byte_range: tuple[int, int] | None = None) -> Path:
        """Move verified bytes into place, then write the record that vouches for them (a crash in
        between leaves data without a record: ignored, and replaced by the next download)."""
        data_path, meta_path = self._data_paths(archive.archive_id, byte_range)
        size = os.stat(tmp).st_size
        meta_path.unlink(missing_ok=True)
        os.replace(tmp, data_path)
        write_record(meta_path, {"format": FORMAT, "archive_id": archive.archive_id, "size": size,
                                "tree_hash": tree_hash, "job_id": job_id, "stored": time.time(),
                                "byte_range": list(byte_range) if byte_range is not None else None})
        return data_path

    def drop_data(self, archive_id: str) -> None:
        """Forget the archive's cached bytes, whole and ranges."""
        key = archive_key(archive_id)
        for path in [*self._data_paths(archive_id), *self.data_dir.glob(f"{key}.r*")]:
            path.unlink(missing_ok=True)

    def cached_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.data_dir.iterdir()
                   if not p.name.startswith(".") and not p.name.endswith(".json"))

    def remove_stale_temporaries(self, older_than: float = 24 * 3600.0) -> None:
        """Downloads and staged files a crashed process left behind. Staged files with a journal entry
        (uploads.py: 32 hex digits, an xattr or a `.json` sidecar, the `.lock`) are never touched here:
        they are closed files waiting for their upload, and the next mount with vault_writes sends them."""
        cutoff = time.time() - older_than
        for folder, pattern in ((self.data_dir, ".tmp-*"), (self.root / "staging", "*-*")):
            for path in folder.glob(pattern):
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                except OSError:
                    continue
