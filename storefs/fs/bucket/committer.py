"""Getting staged files into the remote store, durably: the journal, the write-back queue, conflict
detection and crash recovery, in one place (whose object stands at a name when the server refuses an
upload is owners.py's to say).

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

from ...attrs import Attrs, carried_meta, meta_from_attrs
from ...errors import NotFound, PreconditionFailed, StoreError
from ...store.conditions import WriteCondition
from .journal import Journal, JournalEntry
from .resume import UploadRecord, UploadTracker, sweep_orphans
from .namespace import Entry, Namespace
from .openfiles import OpenFile, OpenFiles
from .staging import Staging
from .owners import EARLIER_VERSION, FREE, LEFT_BEHIND, THIS_VERSION, UPLOAD_TOKEN, Owners, stored_by, upload_token
from .streaming import FileStream, Streams, dated
from ...store.contract import MultipartUpload, ObjectInfo, ObjectStore
from .uploader import UploadSettings, is_multipart, upload_file
from .writeback import Busy, Item, WriteBack

log = logging.getLogger(__name__)

# The short host name in conflict copies' names, so that each host's copy is told apart (and two
# hosts' copies of one file in one second do not collide): letters, digits, `-` and `_` only.
HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0])[:40] or "host"


# Small files (one PUT each) go up this many times `transfers` at once: their uploads hold no more
# memory than the file and spend most of their time waiting for the server's answer, so with only
# `transfers` in flight a burst of small files is held to one round trip per file and worker. Through
# a relay adding 20 ms to each request (a WAN), 500 files of 4 KiB were durable at 110-122 files/s
# with 4 in flight, 195-287 with 16 (rclone mount at --vfs-write-back 0s: 134). On loopback, within
# noise (A/B medians 0.95-1.13x).
SMALL_UPLOADS_PER_TRANSFER = 4


@dataclasses.dataclass(frozen=True)
class CommitSettings:
    write_back: float = 2.0        # seconds after close before uploading; 0 = upload inside close()
    transfers: int = 4             # large files uploaded at once (small ones: SMALL_UPLOADS_PER_TRANSFER times more)
    fsync_uploads: bool = True     # fsync uploads now; False: fsync only makes the staged copy durable
    stream_uploads: str = "auto"   # large files written in sequence go up while written (streaming.py)


@dataclasses.dataclass
class Conflict:
    path: str
    saved_as: str
    when: float


@dataclasses.dataclass
class Snapshot:
    """What one upload of a file sends: its state when the upload began (taken under its lock)."""
    generation: int
    data_generation: int
    key: str
    path: str
    attrs: Attrs
    meta: dict[str, str]
    data_dirty: bool          # its bytes go up (else only its metadata changed)
    staged_path: str | None
    staged_id: str | None
    base_etag: str | None

    def whole_meta(self) -> dict[str, str]:
        """The metadata of an upload of the whole staged file. A stream's was fixed when it began:
        its token names no version (owners.py)."""
        if not self.staged_id:
            return self.meta
        return {**self.meta, UPLOAD_TOKEN: upload_token(self.staged_id, self.data_generation)}


@dataclasses.dataclass(frozen=True)
class Sent:
    """What an upload stored: the object, whether as a conflict copy, and under which key."""
    info: ObjectInfo
    conflict: bool
    target: str
    streamed_ns: int | None = None   # a streamed object's Last-Modified, its file's mtime from now on


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
        self.owners = Owners(store)   # whose object is at a name, after a refusal (owners.py)
        self.sweeper: threading.Thread | None = None   # recover()'s abort of orphaned uploads
        # `transfers` large files at once, as many more small ones as SMALL_UPLOADS_PER_TRANSFER says.
        caps = store.capabilities
        self.queue = WriteBack(self._upload_queued, delay=settings.write_back,
                               workers=settings.transfers * SMALL_UPLOADS_PER_TRANSFER, on_change=on_change,
                               heavy_limit=settings.transfers,
                               is_heavy=lambda opened: is_multipart(caps, opened.staged_size))
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
        with self.owners.flying(opened):
            self._upload_flying(opened, progress)

    def _upload_flying(self, opened: OpenFile, progress: Callable[[int], None] | None) -> None:
        what = self._snapshot(opened)
        if what is None:
            return
        condition, conflict = (self._guard(what.key, what.base_etag, what.attrs.size, what.staged_id,
                                           what.data_generation)
                               if what.data_dirty else (None, False))
        target = self._conflict_key(what.path, what.key) if conflict else what.key
        if what.data_dirty:
            sent = self._send(opened, what, target, conflict, condition, progress)
            if sent is None:
                return   # the name is no longer this file's (see _after_refusal)
        else:
            sent = Sent(self.store.set_meta(target, what.meta), conflict, target)
        self._done(opened, what, sent)

    def _snapshot(self, opened: OpenFile) -> Snapshot | None:
        """What to upload of `opened`, taken under its lock; None if nothing (clean or removed)."""
        with opened.lock:
            if opened.unlinked or not opened.dirty:
                return None
            what = Snapshot(generation=opened.generation, data_generation=opened.data_generation,
                            key=opened.key, path=opened.path, attrs=opened.current_attrs(),
                            meta=self._meta(opened), data_dirty=opened.data_dirty or opened.info is None,
                            staged_path=opened.staged_path, staged_id=opened.staged_id,
                            base_etag=opened.base_etag)
        if what.data_dirty and what.staged_id:
            what.meta[UPLOAD_TOKEN] = what.staged_id
        return what

    def _send(self, opened: OpenFile, what: Snapshot, target: str, conflict: bool,
              condition: WriteCondition | None, progress: Callable[[int], None] | None) -> Sent | None:
        """The staged bytes of `what` to `target` (a conflict copy's key if `conflict`): by finishing the
        file's stream, or as a whole upload (resuming a multipart upload an earlier try began). None if
        dropped after a refusal."""
        assert what.staged_path is not None
        with opened.lock:   # this upload takes the file's stream: later writes go to the next one
            stream, opened.stream = opened.stream, None
        prior, tracker = self._tracker(what, stream is not None)
        attrs = what.attrs
        try:
            info = self.streams.finish(stream, target, what.meta, attrs.mtime_ns, attrs.size, condition)
            streamed = info is not None
            if info is None:
                info = upload_file(self.store, target, what.staged_path, what.whole_meta(),
                                   self.upload_settings, tracker=tracker, progress=progress, condition=condition)
                if tracker is not None and tracker.record is None and prior is not None \
                        and prior.streamed and "mtime" not in info.meta:
                    streamed, info = True, dated(self.store, info)   # an earlier run's stream, resumed
            streamed_ns = None
            if streamed:
                # The object carries no mtime: its Last-Modified is the file's from now on.
                streamed_ns = attrs.mtime_ns = attrs.ctime_ns = int(info.mtime * 1_000_000_000)
            return Sent(info, conflict, target, streamed_ns)
        except PreconditionFailed as refused:
            return self._after_refusal(opened, what, refused, tracker, progress)

    def _tracker(self, what: Snapshot, streaming: bool) -> tuple[UploadRecord | None, UploadTracker | None]:
        """The multipart upload an earlier try of this staged file began (to resume), and the tracker
        that keeps the journal entry up to date with this one, so that a crash midway resumes it."""
        staged_id = what.staged_id
        if not staged_id:
            return None, None

        def save(record: UploadRecord | None) -> None:
            if record is None:
                self._uploads.pop(staged_id, None)
                return   # completed or aborted: the entry goes, or is rewritten at the next close
            self._uploads[staged_id] = record
            self.journal.write(JournalEntry(
                id=staged_id, path=what.path, key=what.key, meta=what.meta, base_etag=what.base_etag,
                size=what.attrs.size, closed_at=time.time(), upload=record.to_json(),
                data_version=what.data_generation))
        prior = self._uploads.get(staged_id)
        if streaming and prior is not None and prior.streamed:
            # The stream's own record, noted at close: the stream finishes (or aborts) it here.
            return self._uploads.pop(staged_id), UploadTracker(self.journal, None, save)
        return prior, UploadTracker(self.journal, prior, save)

    def _after_refusal(self, opened: OpenFile, what: Snapshot, refused: PreconditionFailed,
                       tracker: UploadTracker | None, progress: Callable[[int], None] | None) -> Sent | None:
        """The server refused the upload's condition: whose object is at the name (owners.py) decides
        whether ours replaces it, is already there, goes up as a conflict copy, or is dropped (None)."""
        key, path, size = what.key, what.path, what.attrs.size
        found, ours = self.owners.judge(key, what.staged_id, what.data_generation, size)
        if opened.unlinked or opened.key != key:
            # Removed or renamed since this upload began: the name is no longer this file's. An
            # object of ours there (an earlier try stored it) goes; another (a new file of the name)
            # stays. A renamed file goes up under its new name next.
            log.info("upload of %s to %r dropped: the file was %s meanwhile (%s)", path, key,
                     "removed" if opened.unlinked else "renamed", refused)
            if ours in (THIS_VERSION, EARLIER_VERSION):
                self._delete_if_still(key, found, what.staged_id)
            return None
        assert what.staged_path is not None
        if ours == THIS_VERSION:
            log.info("upload of %s: an earlier try already stored it (%s)", path, refused)
            return Sent(self._with_meta(found, what.whole_meta()), False, key)
        if ours in (EARLIER_VERSION, LEFT_BEHIND, FREE):
            log.info("upload of %s: %s", path, {
                EARLIER_VERSION: "replacing the earlier version of it this mount stored",
                LEFT_BEHIND: "replacing the object of a file removed or renamed while it went up",
                FREE: "the object it was refused by is gone; uploading again"}[ours])
            if ours == LEFT_BEHIND:
                self.owners.take_over(found)
            replace = self._enforced(key, found.etag if ours != FREE else None,
                                     is_multipart(self.store.capabilities, size))
            return Sent(upload_file(self.store, key, what.staged_path, what.whole_meta(), self.upload_settings,
                                    tracker=tracker, progress=progress, condition=replace), False, key)
        # Another writer created or replaced the object since we looked: the server kept theirs (a
        # refused multipart upload was aborted), ours goes up beside it.
        log.info("upload of %s refused by the server's condition: %s", path, refused)
        target = self._conflict_key(path, key)
        return Sent(upload_file(self.store, target, what.staged_path, what.whole_meta(), self.upload_settings,
                                tracker=tracker, progress=progress), True, target)

    def _done(self, opened: OpenFile, what: Snapshot, sent: Sent) -> None:
        """Record what `sent` stored for `opened`, unless the file was removed or renamed meanwhile
        (then the object goes, if it is still there) or changed again (then it stays dirty)."""
        info, conflict, key = sent.info, sent.conflict, what.key
        with opened.lock:
            if opened.unlinked:
                # Removed while this upload was on the wire: the unlink found nothing of it to delete
                # yet, and a temporary file removed a moment after it was written must not come back.
                self._delete_if_still(sent.target, info, what.staged_id)
                return
            if not conflict and opened.key != key:
                # Renamed while uploading: the old name must not linger (unless a new file of that
                # name replaced it meanwhile); the new one goes up later.
                self._delete_if_still(key, info, what.staged_id)
                return
            if not opened.uploaded(what.generation, what.data_generation, None if conflict else info):
                return  # written again meanwhile: still dirty, uploaded again later
            if sent.streamed_ns is not None and not conflict:
                opened.attrs.mtime_ns = opened.attrs.ctime_ns = sent.streamed_ns
            if what.staged_id:
                self.journal.remove(what.staged_id, opened.fd, settle_later=True)
        if conflict:
            self.ns.forget(what.path)
        else:
            self.ns.remember(what.path, Entry(what.attrs, info))
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
            return info.etag != base_etag and stored_by(info, staged_id, data_generation, size) is None
        except NotFound:
            return False  # deleted by someone else: our version simply comes back

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

    def _delete_if_still(self, key: str, stored: ObjectInfo, staged_id: str | None) -> None:
        """Delete `key` if it still holds `stored`, unless a new file of the name took it over."""
        self.owners.delete_if_still(key, stored, staged_id, self._delete_quietly)

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
                # Empty ones are mostly spares made ahead (staging.py): not worth a warning.
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

