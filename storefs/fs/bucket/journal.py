"""The write-back journal: one JSON entry per staged file, written and fsynced before close() returns.
It is what makes a closed file survive `kill -9` or a power cut: the next mount of the same remote
reads the entries and finishes the uploads.

An entry holds the file's mount path and key, its attributes as object metadata, the ETag it was
based on (to detect conflicting remote changes), and upload state (attempts, last error, a multipart
upload id to abort if we crash).

Where it lives, in the staging directory beside the data file `<id>`:
- in the data file's extended attribute `user.storefs.journal`, where the staging filesystem has
  extended attributes (ext4, xfs, btrfs, tmpfs): one fsync then makes the data and its entry durable
  together, and no second file is created (on ext4 creating a file costs as much as an fsync, and a
  close of a small file paid for three fsyncs and two file creations with sidecars);
- else in a sidecar file `<id>.json` (written to a temporary name, fsynced, renamed, directory
  fsynced). An entry too big for an extended attribute goes there as well, and so does an update
  made without the data (the multipart upload id noted when an upload starts).
Loading reads both and takes the later of the two; writing the xattr removes a sidecar, and removing
an entry removes both.

The entry of a file whose upload has just finished is removed without an fsync of its own (that was
half the fsyncs of every small file, on the upload threads' way): the removal is "unsettled" until
`settle()` makes it durable, at most SETTLE_AFTER seconds later, when the upload queue empties, before
the mount deletes or moves any object (StoreFS._delete, Renames, the committer) and at unmount. A
machine crash in between brings such an entry back: the next mount uploads the file again and finds the
object already there with its upload token (owners.UPLOAD_TOKEN), or, if the same name was
closed again since, the newer entry supersedes it (Committer.recover).

A multipart upload in progress is in its entry (`upload`: resume.UploadRecord as JSON), so that the
next try or the next mount resumes it. The ledger (`uploads/<token>.json`) lists the multipart uploads
this mount started and has not finished, so that those no entry references any more are aborted at
the next mount (resume.py says when).
"""
from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

VERSION = 1
XATTR = "user.storefs.journal"
# The staging filesystem keeps no extended attributes (or none this big): use a sidecar.
_NO_XATTR = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.E2BIG, errno.ENOSPC, errno.ERANGE}
_NO_SUCH_XATTR = {errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP}
# The longest a finished upload's entry removal stays unsettled while uploads go on (see the docstring).
SETTLE_AFTER = 1.0


@dataclasses.dataclass
class JournalEntry:
    id: str                      # the staged data file's name
    path: str                    # mount path
    key: str                     # object key
    meta: dict[str, str]         # attributes as object metadata
    base_etag: str | None        # remote ETag the staged copy started from; None for a new file
    size: int = 0
    closed_at: float = 0.0
    attempts: int = 0
    last_error: str = ""
    upload_id: str | None = None  # (entries of older versions) a multipart upload to abort on recovery
    upload: dict | None = None    # a multipart upload in progress, resumed (resume.UploadRecord)
    data_version: int = 0         # which bytes of the staged file (OpenFile.data_generation, owners.UPLOAD_TOKEN)

    def to_json(self) -> str:
        # Not dataclasses.asdict: it deep-copies every value (28 deepcopy calls an entry), and an
        # entry is written twice on the way of every small file's close.
        return json.dumps({"version": VERSION, **{name: getattr(self, name) for name in _FIELDS}})

    @classmethod
    def from_json(cls, text: str | bytes) -> "JournalEntry":
        data = json.loads(text)
        data.pop("version", None)
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


_FIELDS = tuple(field.name for field in dataclasses.fields(JournalEntry))


class Journal:
    def __init__(self, directory: Path, named: set[str] | None = None) -> None:
        """`named`: ids whose data file's directory entry is already durable, shared with the staging
        area that made them so (staging.Staging.named); the journal adds the ones it fsyncs."""
        self.directory = directory
        self._xattrs = True                 # until the staging filesystem refuses them
        self._sidecars: set[str] = set()    # ids whose entry is a sidecar now
        self._named: set[str] = named if named is not None else set()
        self._unsettled: set[str] = set()          # ids removed without an fsync yet (settle())
        self._unsettled_lock = threading.Lock()
        self._settling = threading.Lock()          # one settle at a time; held through its fsyncs
        self._settled_at = time.monotonic()

    def _path(self, entry_id: str) -> Path:
        return self.directory / f"{entry_id}.json"

    def write(self, entry: JournalEntry, data_fd: int | None = None) -> None:
        """Durably record `entry` (and its data file's contents, if `data_fd` is given)."""
        payload = entry.to_json().encode()
        # Only with its data: an fsync of the data file is what makes an xattr durable, and an entry
        # updated mid-upload (a multipart upload id) must not flush gigabytes of a staged file first.
        if self._xattrs and data_fd is not None and self._write_xattr(entry.id, payload, data_fd):
            return
        if data_fd is not None:
            os.fsync(data_fd)
        self._write_sidecar(entry.id, payload)

    def _write_xattr(self, entry_id: str, payload: bytes, fd: int) -> bool:
        try:
            os.setxattr(fd, XATTR, payload)
            os.fsync(fd)   # the data and its entry, in one flush
        except OSError as exc:
            if exc.errno not in _NO_XATTR:
                raise
            if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                log.info("the staging directory %s has no extended attributes: journal entries are "
                         "sidecar files", self.directory)
                self._xattrs = False
            return False
        if entry_id not in self._named:   # the data file's name must survive a crash too
            self._sync_dir()
            self._named.add(entry_id)
        if entry_id in self._sidecars:
            self._remove_sidecar(entry_id)
        return True

    def _write_sidecar(self, entry_id: str, payload: bytes) -> None:
        path = self._path(entry_id)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self._sync_dir()
        self._named.add(entry_id)
        self._sidecars.add(entry_id)   # beside an older entry in the xattr, if any: load() takes the newer

    def remove(self, entry_id: str, data_fd: int | None = None, *, settle_later: bool = False) -> None:
        """The entry's upload is done, or its file is gone: drop it durably (a replay would upload the
        file again). `data_fd`: the data file, open (spares opening it again). `settle_later`: a
        finished upload's removal, made durable by the next settle() (see the module's docstring)."""
        removed = self._xattrs and self._remove_xattr(entry_id, data_fd, sync=not settle_later)
        if entry_id in self._sidecars:
            self._remove_sidecar(entry_id)   # durable at once: sidecars are the rare case
        self._named.discard(entry_id)
        if settle_later and removed:
            with self._unsettled_lock:
                self._unsettled.add(entry_id)

    def _remove_xattr(self, entry_id: str, data_fd: int | None, *, sync: bool) -> bool:
        """Whether there was an entry to remove."""
        if data_fd is None:
            try:
                fd = os.open(self.directory / entry_id, os.O_RDONLY)
            except FileNotFoundError:
                return False
        else:
            fd = data_fd
        try:
            try:
                os.removexattr(fd, XATTR)
                removed = True
            except OSError as exc:
                if exc.errno not in _NO_SUCH_XATTR:
                    raise
                removed = False
            if sync:
                with self._unsettled_lock:   # an unsettled removal becomes durable here too
                    unsettled = entry_id in self._unsettled
                if removed or unsettled:
                    os.fsync(fd)
            return removed
        finally:
            if fd != data_fd:
                os.close(fd)

    def settle(self) -> None:
        """Make every removal done with `settle_later` so far durable: each data file still there is
        fsynced; one fsync of the directory covers those unlinked since."""
        with self._settling:
            with self._unsettled_lock:
                ids, self._unsettled = self._unsettled, set()
            self._settled_at = time.monotonic()
            try:
                unlinked = False
                for entry_id in ids:
                    try:
                        fd = os.open(self.directory / entry_id, os.O_RDONLY)
                    except FileNotFoundError:
                        unlinked = True
                        continue
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                if unlinked:
                    self._sync_dir()
            except OSError:
                with self._unsettled_lock:   # still unsettled: the next settle tries them again
                    self._unsettled |= ids
                raise

    def settle_due(self, *, idle: bool = False) -> None:
        """settle() if removals have waited SETTLE_AFTER seconds, or at once when `idle` (the upload
        queue has emptied)."""
        with self._unsettled_lock:
            if not self._unsettled:
                return
        if idle or time.monotonic() - self._settled_at >= SETTLE_AFTER:
            try:
                self.settle()
            except OSError as exc:   # the upload itself succeeded: say so, retry at the next settle
                log.error("cannot make finished uploads' journal removals durable in %s: %s",
                          self.directory, exc)

    def _remove_sidecar(self, entry_id: str) -> None:
        self._sidecars.discard(entry_id)
        try:
            self._path(entry_id).unlink()
        except FileNotFoundError:
            return
        self._sync_dir()

    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- the ledger of multipart uploads this mount started --------------------------------------

    @property
    def _ledger(self) -> Path:
        return self.directory / "uploads"

    def ledger_write(self, upload_id: str | None, key: str, *, token: str | None = None) -> str:
        """Durably note an upload this mount is starting (`upload_id` None: about to ask the server)
        or has started. Returns its token."""
        token = token or secrets.token_hex(16)
        self._ledger.mkdir(exist_ok=True)
        path = self._ledger / f"{token}.json"
        tmp = path.with_name(path.name + ".tmp")
        payload = json.dumps({"token": token, "key": key, "upload_id": upload_id, "requested": time.time()})
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, payload.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(self._ledger, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return token

    def ledger_remove(self, token: str) -> None:
        """The upload is completed or aborted. Not fsynced: a record that comes back after a crash
        costs one harmless abort of an upload that is gone."""
        (self._ledger / f"{token}.json").unlink(missing_ok=True)

    def ledger_load(self) -> list[dict]:
        records = []
        if not self._ledger.is_dir():
            return records
        for path in sorted(self._ledger.glob("*.json")):
            try:
                record = json.loads(path.read_text())
                if record.get("token") == path.stem and isinstance(record.get("key"), str):
                    records.append(record)
                    continue
            except (OSError, ValueError):
                pass
            log.error("unreadable upload ledger record %s; left in place for inspection", path)
        return records

    def load(self) -> list[JournalEntry]:
        """Every entry whose data file exists, oldest close first. Unreadable entries are logged and kept."""
        entries: dict[str, JournalEntry] = {}
        for path in sorted(self.directory.iterdir()):
            if len(path.name) != 32 or not path.is_file():
                continue
            try:
                raw = os.getxattr(path, XATTR)
            except OSError:
                continue   # none (never closed, or a sidecar's), or no extended attributes here
            try:
                entries[path.name] = JournalEntry.from_json(raw)
            except (ValueError, TypeError) as exc:
                log.error("unreadable journal entry on %s (%s); left in place for inspection", path, exc)
        for path in sorted(self.directory.glob("*.json")):
            try:
                entry = JournalEntry.from_json(path.read_text())
            except (OSError, ValueError, TypeError) as exc:
                log.error("unreadable journal entry %s (%s); left in place for inspection", path, exc)
                continue
            if not (self.directory / entry.id).is_file():
                log.error("journal entry %s has no data file; removing it", path)
                path.unlink(missing_ok=True)
                continue
            self._sidecars.add(entry.id)
            known = entries.get(entry.id)
            if known is None or entry.closed_at >= known.closed_at:
                entries[entry.id] = entry
        self._named.update(entries)
        return sorted(entries.values(), key=lambda e: e.closed_at)
