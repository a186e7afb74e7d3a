"""Getting staged files into the remote store, durably: the journal, the write-back queue, conflict
detection and crash recovery, in one place.

- `closed(file)`: a written file was closed. Its data and journal entry are fsynced, then it is queued
  (or, with write_back=0, uploaded before close returns).
- `upload_now(file)`: fsync and unmount use it; the queue's workers too.
- A file whose remote object changed since we staged it (ETag differs from the one we started from),
  or a new file whose name another writer took meanwhile, is a conflict: our version goes up under
  `<name>.storefs-conflict-<host>-<time>`, the other writer's stays, the log and `storefs status` say
  so. No write is lost. Where the server enforces conditional writes (store.conditional_writes()), the
  upload itself carries the condition (If-None-Match: * / If-Match: <base ETag>, COS insertOnly, the WCS
  overwrite policy) and the server's refusal is the conflict; elsewhere a HEAD just before the upload
  decides, which leaves a window.
- `recover()`: at mount, every journal entry left by an earlier run becomes a pending upload again,
  visible in the mount; a multipart upload it had started is resumed from the parts the server holds
  (resume.py), and the earlier run's uploads that nothing references any more are aborted.

Locking: a file's lock is held to snapshot what to upload and to record the result, never during the
transfer itself (an upload may take minutes; `ls -l` and reads must not wait for it).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import threading
import time
from typing import Callable

from ...attrs import carried_meta, meta_from_attrs
from ...errors import NotFound, PreconditionFailed, StoreError
from ...store.conditions import WriteCondition
from .journal import Journal, JournalEntry
from .resume import UploadRecord, UploadTracker, sweep_orphans
from .namespace import Entry, Namespace
from .openfiles import OpenFile, OpenFiles, Staging
from .streaming import FileStream, Streams, dated
from ...store.contract import MultipartUpload, ObjectInfo, ObjectStore
from .uploader import UploadSettings, is_multipart, upload_file
from .writeback import Busy, Item, WriteBack

log = logging.getLogger(__name__)

# The short host name in conflict copies' names, so that each host's copy is told apart (and two
# hosts' copies of one file in one second do not collide): letters, digits, `-` and `_` only.
# User metadata naming the staged file an object's bytes came from, and which of its versions
# (`<staged id>.<data generation>`; a streamed upload's is the staged id alone: its bytes were still
# being written when it began). A refused conditional upload, or a HEAD that finds the name taken, is
# no conflict when the object there carries our own token:
# - the same version: an earlier try of this very upload succeeded (its answer was lost, or the mount
#   died before its journal entry went), and the retry must not turn our own bytes into a conflict copy;
# - an earlier version: the file changed while that one went up and the mount died before the next
#   upload; this one replaces it.
UPLOAD_TOKEN = "storefs-upload"
THIS_VERSION, EARLIER_VERSION = "this version", "an earlier version"
# The object of an upload still on the wire whose file was removed or renamed away from that name
# since: a new file of the name, refused by the server because of it, replaces it (_take_over), and
# the upload that stored it leaves it alone when it ends. Only where the server enforces the condition.
LEFT_BEHIND = "left behind by a removed or renamed file"
FREE = "no object"   # gone since the refusal: deleted by someone else, our version simply goes up

HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0])[:40] or "host"


@dataclasses.dataclass(frozen=True)
class CommitSettings:
    write_back: float = 2.0        # seconds after close before uploading; 0 = upload inside close()
    transfers: int = 4             # files uploaded at once
    fsync_uploads: bool = True     # fsync uploads now; False: fsync only makes the staged copy durable
    stream_uploads: str = "auto"   # large files written in sequence go up while written (streaming.py)


@dataclasses.dataclass
class Conflict:
    path: str
    saved_as: str
    when: float


class Committer:
    def __init__(self, store: ObjectStore, ns: Namespace, staging: Staging, table: OpenFiles,
                 upload_settings: UploadSettings, settings: CommitSettings,
                 on_change: Callable[[], None] = lambda: None) -> None:
        """`table`: the mount's open files, which forget a file once it is uploaded and unused.
        `on_change`: called when the queue changes (the status reporter's wake-up)."""
        self.store = store
        self.ns = ns
        self.staging = staging
        self.table = table
        self.journal = Journal(staging.directory, named=staging.named)
        self.upload_settings = upload_settings
        self.settings = settings
        self.conflicts: list[Conflict] = []
        # The multipart upload in progress of each staged file (by staged id), to resume on the next
        # try; also in its journal entry, for the next mount.
        self._uploads: dict[str, UploadRecord] = {}
        self._flying: dict[str, OpenFile] = {}   # staged id -> its file, while an upload of it runs
        self._flying_lock = threading.Lock()
        # A left-behind object that a new file of its name replaces is not deleted by the upload that
        # stored it (_delete_if_still); the check and the replacement's claim are made under the name's
        # lock, so that neither deletes what the other just put there.
        self._taken_over: set[str] = set()   # staged ids whose left-behind object was replaced
        self._name_locks = [threading.Lock() for _ in range(64)]
        self.sweeper: threading.Thread | None = None   # recover()'s abort of orphaned uploads
        self.queue = WriteBack(self._upload_queued, delay=settings.write_back, workers=settings.transfers,
                               on_change=on_change)
        # Large files written in sequence go up in parts while written (streaming.py).
        self.streams = Streams(store, self.journal, upload_settings, settings.transfers,
                               meta_of=self._stream_meta, condition_of=self._enforced,
                               mode=settings.stream_uploads)

    # -- entry points -------------------------------------------------------------------------------

    def closed(self, opened: OpenFile) -> None:
        """A handle that wrote to `opened` was flushed or released. Raises if an immediate upload fails."""
        if opened.unlinked or not opened.dirty:
            return
        if self.settings.write_back <= 0:
            # close() returns only once uploaded, so the journal matters only if the upload fails
            # (upload_now then journals and queues it): no fsync on the way of every small file.
            self.upload_now(opened)
            return
        self.record(opened)
        self.queue.schedule(opened)

    def record(self, opened: OpenFile) -> None:
        """Write the journal entry of a dirty staged file (and fsync its data first), once per change."""
        with opened.lock:
            if not opened.journal_due():
                return
            record = self._uploads.get(opened.staged_id)
            if (record is None or record.streamed) and isinstance(opened.stream, FileStream):
                # Its parts sent while written: a crash from now on resumes from them (resume.py).
                record = opened.stream.record(opened.staged_size, os.fstat(opened.fd).st_mtime_ns)
                if record is not None:
                    self._uploads[opened.staged_id] = record
                else:
                    self._uploads.pop(opened.staged_id, None)
            entry = JournalEntry(id=opened.staged_id, path=opened.path, key=opened.key,
                                 meta=self._meta(opened), base_etag=opened.base_etag,
                                 size=opened.staged_size, closed_at=time.time(),
                                 upload=record.to_json() if record else None,
                                 data_version=opened.data_generation)
            self.journal.write(entry, data_fd=opened.fd)

    def fsync(self, opened: OpenFile) -> None:
        if self.settings.fsync_uploads:
            self.upload_now(opened)
        elif opened.dirty:
            self.record(opened)

    def upload_now(self, opened: OpenFile) -> None:
        """Upload `opened` now if it is dirty; raises on failure (the data stays staged and queued)."""
        try:
            self._upload(opened)
        except Exception:
            if not opened.unlinked:
                self.record(opened)
                self.queue.schedule(opened)
            raise
        self.queue.discard(opened)
        self.journal.settle_due()

    def forget(self, opened: OpenFile) -> None:
        """`opened` was unlinked or replaced: nothing of it is to be uploaded any more."""
        self.queue.discard(opened)
        if opened.staged_id:
            # An interrupted multipart upload of it stays in the ledger: the next mount aborts it.
            self._uploads.pop(opened.staged_id, None)
            self.journal.remove(opened.staged_id)

    def drain(self, timeout: float) -> list[Item]:
        return self.queue.drain(timeout)

    def settle(self) -> None:
        """Make the removals of finished uploads' journal entries durable: before anything is deleted
        or renamed remotely, a machine crash must not bring back an entry that would upload the old
        name or content again (journal.py)."""
        self.journal.settle()

    def stop(self) -> None:
        self.queue.stop()
        self.streams.close()
        self.journal.settle()

    # -- uploading ----------------------------------------------------------------------------------

    def _meta(self, opened: OpenFile) -> dict[str, str]:
        old = carried_meta(opened.info.meta) if opened.info else {}
        return meta_from_attrs(opened.current_attrs(), old)

    def _stream_meta(self, opened: OpenFile) -> dict[str, str]:
        """The metadata the upload of `opened` would have now (a stream's, as _upload makes it)."""
        return {**self._meta(opened), UPLOAD_TOKEN: opened.staged_id or ""}

    def _upload_queued(self, item: Item) -> None:
        opened: OpenFile = item.file
        if opened.writers > 0:
            raise Busy()  # open for writing again: its last close queues it anew
        try:
            self._upload(opened, progress=lambda sent: self.queue.progress(opened, sent))
        except Exception as exc:
            if opened.staged_id:  # the journal shows the attempt, for `storefs status` after a restart
                self._note_failure(opened, exc)
            raise
        finally:
            # The removals of finished uploads' entries, durable within a second, or now when this
            # was the last queued file (journal.py).
            self.journal.settle_due(idle=self.queue.count() <= 1)
        if opened.dirty and not opened.unlinked:
            # Changed while uploading: a writer still has it (its last close queues it again), or a
            # truncate/chmod changed it: once more (the queue sees a schedule of an item in flight).
            if opened.writers > 0:
                raise Busy()
            self.queue.schedule(opened)

    def _note_failure(self, opened: OpenFile, exc: Exception) -> None:
        try:
            self.record(opened)
        except OSError as journal_error:
            log.error("cannot update the journal of %s: %s", opened.path, journal_error)

    def _upload(self, opened: OpenFile, progress: Callable[[int], None] | None = None) -> None:
        staged_id = opened.staged_id
        if staged_id:
            with self._flying_lock:
                self._flying[staged_id] = opened
        try:
            self._upload_flying(opened, progress)
        finally:
            if staged_id:
                with self._flying_lock:
                    if self._flying.get(staged_id) is opened:
                        del self._flying[staged_id]
                    self._taken_over.discard(staged_id)

    def _upload_flying(self, opened: OpenFile, progress: Callable[[int], None] | None) -> None:
        with opened.lock:
            if opened.unlinked or not opened.dirty:
                return
            generation, data_generation = opened.generation, opened.data_generation
            key, path = opened.key, opened.path
            attrs = opened.current_attrs()
            meta = self._meta(opened)
            data_dirty = opened.data_dirty or opened.info is None
            staged_path, staged_id, base_etag = opened.staged_path, opened.staged_id, opened.base_etag
        if data_dirty and staged_id:
            meta[UPLOAD_TOKEN] = staged_id
        streamed_ns: int | None = None
        condition, conflict = (self._guard(key, base_etag, attrs.size, staged_id, data_generation)
                               if data_dirty else (None, False))
        target = self._conflict_key(path, key) if conflict else key
        if data_dirty:
            assert staged_path is not None

            def save(record: UploadRecord | None) -> None:
                """The upload's state into the journal entry, so that a crash midway resumes it."""
                if record is None:
                    self._uploads.pop(staged_id, None)
                    return   # completed or aborted: the entry goes, or is rewritten at the next close
                self._uploads[staged_id] = record
                self.journal.write(JournalEntry(
                    id=staged_id, path=path, key=key, meta=meta, base_etag=base_etag, size=attrs.size,
                    closed_at=time.time(), upload=record.to_json(), data_version=data_generation))
            with opened.lock:   # this upload takes the file's stream: later writes go to the next one
                stream, opened.stream = opened.stream, None
            prior = self._uploads.get(staged_id) if staged_id else None
            if stream is not None and prior is not None and prior.streamed:
                # The stream's own record, noted at close: the stream finishes (or aborts) it here.
                prior = self._uploads.pop(staged_id)
                tracker = UploadTracker(self.journal, None, save)
            else:
                tracker = UploadTracker(self.journal, prior, save) if staged_id else None
            # A stream's metadata was fixed when it began: its token names no version (see UPLOAD_TOKEN).
            whole_meta = {**meta, UPLOAD_TOKEN: upload_token(staged_id, data_generation)} if staged_id else meta
            try:
                info = self.streams.finish(stream, target, meta, attrs.mtime_ns, attrs.size, condition)
                streamed = info is not None
                if info is None:
                    info = upload_file(self.store, target, staged_path, whole_meta, self.upload_settings,
                                       tracker=tracker, progress=progress, condition=condition)
                    if tracker is not None and tracker.record is None and prior is not None \
                            and prior.streamed and "mtime" not in info.meta:
                        streamed, info = True, dated(self.store, info)   # an earlier run's stream, resumed
                if streamed:
                    # The object carries no mtime: its Last-Modified is the file's from now on.
                    streamed_ns = attrs.mtime_ns = attrs.ctime_ns = int(info.mtime * 1_000_000_000)
            except PreconditionFailed as refused:
                found, ours = self._ours_at(key, staged_id, data_generation, attrs.size)
                if opened.unlinked or opened.key != key:
                    # Removed or renamed since this upload began: the name is no longer this file's.
                    # An object of ours there (an earlier try stored it) goes; another (a new file of
                    # the name) stays. A renamed file goes up under its new name next.
                    log.info("upload of %s to %r dropped: the file was %s meanwhile (%s)", path, key,
                             "removed" if opened.unlinked else "renamed", refused)
                    if ours in (THIS_VERSION, EARLIER_VERSION):
                        self._delete_if_still(key, found, staged_id)
                    return
                if ours == THIS_VERSION:
                    log.info("upload of %s: an earlier try already stored it (%s)", path, refused)
                    info = self._with_meta(found, whole_meta)
                elif ours in (EARLIER_VERSION, LEFT_BEHIND, FREE):
                    log.info("upload of %s: %s", path, {
                        EARLIER_VERSION: "replacing the earlier version of it this mount stored",
                        LEFT_BEHIND: "replacing the object of a file removed or renamed while it went up",
                        FREE: "the object it was refused by is gone; uploading again"}[ours])
                    if ours == LEFT_BEHIND:
                        self._take_over(found)
                    replace = self._enforced(key, found.etag if ours != FREE else None,
                                             is_multipart(self.store.capabilities, attrs.size))
                    info = upload_file(self.store, target, staged_path, whole_meta, self.upload_settings,
                                       tracker=tracker, progress=progress, condition=replace)
                else:
                    # Another writer created or replaced the object since we looked: the server kept
                    # theirs (a refused multipart upload was aborted), ours goes up beside it.
                    log.info("upload of %s refused by the server's condition: %s", path, refused)
                    conflict, target = True, self._conflict_key(path, key)
                    info = upload_file(self.store, target, staged_path, whole_meta, self.upload_settings,
                                       tracker=tracker, progress=progress)
        else:
            info = self.store.set_meta(target, meta)
        with opened.lock:
            if opened.unlinked:
                # Removed while this upload was on the wire: the unlink found nothing of it to delete
                # yet, and a temporary file removed a moment after it was written must not come back.
                self._delete_if_still(target, info, staged_id)
                return
            if not conflict and opened.key != key:
                # Renamed while uploading: the old name must not linger (unless a new file of that
                # name replaced it meanwhile); the new one goes up later.
                self._delete_if_still(key, info, staged_id)
                return
            if not opened.uploaded(generation, data_generation, None if conflict else info):
                return  # written again meanwhile: still dirty, uploaded again later
            if streamed_ns is not None and not conflict:
                opened.attrs.mtime_ns = opened.attrs.ctime_ns = streamed_ns
            if staged_id:
                self.journal.remove(staged_id, opened.fd, settle_later=True)
        if conflict:
            self.ns.forget(path)
        else:
            self.ns.remember(path, Entry(attrs, info))
        self.table.discard_if_clean(opened)

    def _guard(self, key: str, base_etag: str | None, size: int, staged_id: str | None,
               data_generation: int) -> tuple[WriteCondition | None, bool]:
        """How this upload keeps another writer's version: (the condition the server enforces, False),
        or, where it enforces none, (None, whether a HEAD now finds the object changed or taken)."""
        condition = self._enforced(key, base_etag, is_multipart(self.store.capabilities, size))
        if condition is not None:
            return condition, False
        return None, self._changed_remotely(key, base_etag, staged_id, data_generation, size)

    def _enforced(self, key: str, base_etag: str | None, multipart: bool = True) -> WriteCondition | None:
        """The condition that keeps another writer's version, where the server enforces it, else None."""
        condition = WriteCondition(base_etag)
        return condition if self.store.conditional_writes(key).enforces(condition, multipart) else None

    def _changed_remotely(self, key: str, base_etag: str | None, staged_id: str | None,
                          data_generation: int, size: int) -> bool:
        """Whether the object is no longer the one we started from (None: there was none), nor one
        an earlier upload of this staged file stored."""
        try:
            info = self.store.stat(key)
            # A left-behind object (LEFT_BEHIND) counts as another writer's here: without a server-
            # enforced condition, its upload still on the wire could land after ours.
            return info.etag != base_etag and _stored_by(info, staged_id, data_generation, size) is None
        except NotFound:
            return False  # deleted by someone else: our version simply comes back

    def _ours_at(self, key: str, staged_id: str | None, data_generation: int,
                 size: int) -> tuple[ObjectInfo, str | None]:
        """After a refusal: the object at `key` and what it is to this upload: THIS_VERSION or
        EARLIER_VERSION of this staged file (UPLOAD_TOKEN), LEFT_BEHIND, None (another writer's), or
        FREE (none any more; the ObjectInfo is a placeholder)."""
        info, ours = self._look_at(key, staged_id, data_generation, size)
        if ours is None:
            # "Another writer's" makes a conflict copy: a second look first, so that one garbled
            # answer (seen under injected faults: a token that did not match) does not make one.
            info, ours = self._look_at(key, staged_id, data_generation, size)
        return info, ours

    def _look_at(self, key: str, staged_id: str | None, data_generation: int,
                 size: int) -> tuple[ObjectInfo, str | None]:
        """One stat of `key`, judged as _ours_at says."""
        try:
            info = self.store.stat(key)
        except NotFound:
            return ObjectInfo(key=key, size=0, etag="", mtime=0.0), FREE
        ours = _stored_by(info, staged_id, data_generation, size)
        return info, (LEFT_BEHIND if ours is None and self._left_behind(info, key) else ours)

    def _left_behind(self, info: ObjectInfo, key: str) -> bool:
        """Whether `info` (at `key`) was stored by an upload still running whose file has been
        removed, or renamed to another name, since (see LEFT_BEHIND)."""
        stored_id = _token(info)[0]
        with self._flying_lock:
            flying = self._flying.get(stored_id) if stored_id else None
        return flying is not None and (flying.unlinked or flying.key != key)

    def _with_meta(self, info: ObjectInfo, meta: dict[str, str]) -> ObjectInfo:
        """Our object `info`, with `meta` if it lacks some of it (a chmod while it went up, then a
        crash: the entry has the new mode, the object the old)."""
        if all(info.meta.get(name) == value for name, value in meta.items()):
            return info
        return self.store.set_meta(info.key, meta)

    def _conflict_key(self, path: str, key: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        conflict_key = f"{key}.storefs-conflict-{HOST}-{stamp}"
        log.error("conflict: %s changed on the server while it was being written here; this version is "
                  "saved as %s and the server's version is kept", path, conflict_key)
        self.conflicts.append(Conflict(path, conflict_key, time.time()))
        return conflict_key

    def _name_lock(self, key: str) -> threading.Lock:
        return self._name_locks[hash(key) % len(self._name_locks)]

    def _take_over(self, left: ObjectInfo) -> None:
        """A new file of its name replaces `left` (LEFT_BEHIND): the upload that stored it keeps it."""
        with self._name_lock(left.key), self._flying_lock:
            self._taken_over.add(_token(left)[0])

    def _delete_if_still(self, key: str, stored: ObjectInfo, staged_id: str | None) -> None:
        """Delete `key` if it still holds the object `stored` (from staged file `staged_id`), unless a
        new file of that name took it over (_take_over) or replaced it since."""
        with self._name_lock(key):
            with self._flying_lock:
                if staged_id in self._taken_over:
                    return
            try:
                if self.store.stat(key).etag != stored.etag:
                    return
            except NotFound:
                return
            except StoreError as exc:
                log.warning("could not remove %r, uploaded while it was being removed: %s", key, exc)
                return
            self._delete_quietly(key)

    def _delete_quietly(self, key: str) -> None:
        try:
            self.settle()
            self.store.delete(key)
        except StoreError as exc:
            log.warning("could not remove %r after a rename during its upload: %s", key, exc)

    # -- recovery -----------------------------------------------------------------------------------

    def recover(self, make_file: Callable[[JournalEntry], OpenFile]) -> list[OpenFile]:
        """Re-queue every upload an earlier run left in the journal. Returns the files, oldest first.
        Staged data without a journal entry was never closed (a crash mid-write); it is removed."""
        files = []
        entries = self._newest_per_key(self.journal.load())
        # The ledger before any upload of this run starts: only an earlier run's uploads are orphans.
        ledger = self.journal.ledger_load()
        journaled = {entry.id for entry in entries}
        for path in self.staging.directory.iterdir():
            if len(path.name) == 32 and path.name not in journaled and path.is_file():
                # Empty ones are mostly spares made ahead (openfiles.Staging): not worth a warning.
                level = logging.WARNING if path.stat().st_size else logging.DEBUG
                log.log(level, "removing %s: staged by an earlier run but never closed", path)
                path.unlink()
        for entry in entries:
            if entry.upload:
                try:
                    self._uploads[entry.id] = UploadRecord.from_json(entry.upload)
                except (TypeError, ValueError) as exc:
                    log.error("unreadable upload record of %s (%s): its upload starts again", entry.path, exc)
            elif entry.upload_id:  # written by a version that did not resume: abort as it did
                try:
                    self.store.abort_multipart(MultipartUpload(entry.key, entry.upload_id, 0))
                    log.warning("aborted the unfinished multipart upload of %s left by an earlier run", entry.path)
                except StoreError as exc:
                    log.info("could not abort upload %s of %s: %s", entry.upload_id, entry.path, exc)
            opened = make_file(entry)
            opened.adopt_staged(self.staging, str(self.staging.directory / entry.id))
            log.warning("resuming the upload of %s (%d bytes) left by an earlier run", entry.path, entry.size)
            self.queue.schedule(opened, now=True)
            files.append(opened)
        referenced = {record.upload_id for record in self._uploads.values()}
        # In the background: a slow or unreachable server must not hold up the mount.
        self.sweeper = threading.Thread(target=self._sweep, args=(referenced, ledger), name="orphan-sweep",
                                        daemon=True)
        self.sweeper.start()
        return files

    def _newest_per_key(self, entries: list[JournalEntry]) -> list[JournalEntry]:
        """`entries` (oldest close first) without those a later close of the same object supersedes:
        the removal of a finished upload's entry may not have been durable at a machine crash
        (journal.py), and uploading it again after the newer one was stored would bring back old
        content. Each dropped entry's data file goes with it."""
        newest = {entry.key: entry for entry in entries}
        kept = []
        for entry in entries:
            if newest[entry.key] is entry:
                kept.append(entry)
                continue
            log.info("journal entry of %s (closed at %s) superseded by a later close: dropped",
                     entry.path, time.ctime(entry.closed_at))
            self.journal.remove(entry.id)
            (self.staging.directory / entry.id).unlink(missing_ok=True)
        return kept

    def _sweep(self, referenced: set[str], ledger: list[dict]) -> None:
        try:
            sweep_orphans(self.store, self.journal, referenced, records=ledger)
        except Exception as exc:  # never fatal: the ledger keeps the records for the next mount
            log.warning("could not look for unfinished multipart uploads of an earlier run: %s", exc)


def upload_token(staged_id: str, data_generation: int) -> str:
    """The UPLOAD_TOKEN of the bytes of `data_generation` of staged file `staged_id`."""
    return f"{staged_id}.{data_generation}"


def _token(info: ObjectInfo) -> tuple[str, str]:
    """(staged id, version) of the UPLOAD_TOKEN `info` carries; ("", "") if none, version "" for a
    stream's."""
    stored_id, _, version = info.meta.get(UPLOAD_TOKEN, "").partition(".")
    return stored_id, version


def _stored_by(info: ObjectInfo, staged_id: str | None, data_generation: int, size: int) -> str | None:
    """Which upload of staged file `staged_id` stored `info` (see UPLOAD_TOKEN): THIS_VERSION (the
    bytes of `data_generation`, `size` long), EARLIER_VERSION, or None: not ours."""
    stored_id, version = _token(info)
    if not staged_id or stored_id != staged_id:
        return None
    if info.size == size and version in ("", str(data_generation)):   # "": a stream's, of no version
        return THIS_VERSION
    return EARLIER_VERSION
