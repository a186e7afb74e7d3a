"""New files written into a vault (`-o vault_writes`): staged on disk, uploaded as new archives after a
write-back window, then immutable.

A new file is staged while it is written. When its last writer closes it, the staged bytes and a
journal entry (its path, mode, owner and mtime: the bucket journal's format and code, journal.py) are
made durable before close returns, and it waits `write_back` seconds (the bucket mounts' window and
queue, writeback.py) before it is uploaded. Until its upload starts it is still ours: chmod, chown,
utimens, rename and unlink change or drop it without touching the vault, which is what `rsync -a`
(a temporary `.name.XXXXXX`, then times, mode and a rename), `cp -p` and duplicity (a copy, then
times) need. The archive's description (mt2: its path and mtime) and its remembered mode are taken
when the upload starts; from then on it is an archive like any other (immutable, EROFS).

mtimes are whole seconds from the start: mt2 keeps no more, and a file must not change its mtime when
it becomes an archive (rsync compares what it set with what it sees).

`write_back = 0` uploads inside close (as before the window existed; rsync's rename then comes too
late). A failed upload keeps its staged bytes and journal entry and is retried with backoff (the
queue's policy); unmount waits for the queue (`drain_timeout`) and whatever is left is uploaded by the
next mount with `-o vault_writes`, as a `kill -9` leaves it: at start the journal is read back (one
mount at a time owns a vault's staging directory: an flock). An entry whose archive is already
listed (a crash after the upload, before the entry was removed) is not uploaded twice.

Directories: a vault has none, only paths. `mkdir` makes a staged directory that lives in this mount
until files uploaded below it imply it (an empty one is gone at the next mount).

Locking: `VaultUploads._lock` guards the tables; `Upload.lock` one file's fields. An Upload's lock may
be held when the table lock is taken, never the other way round; neither is held during an upload.
"""
from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ...attrs import Attrs
from ...errors import AlreadyExists, InvalidArgument, NameTooLong, NotEmpty, ReadOnly, StoreError
from ...options import VaultOptions
from ...vaults.base import ArchiveInfo, short_id
from ..bucket.journal import Journal, JournalEntry
from ..bucket.writeback import Busy, Item, WriteBack
from . import resumable
from .localattrs import LocalAttrs
from .names import clean_path, upload_description
from .view import VaultView

log = logging.getLogger(__name__)

SECOND = 1_000_000_000


def whole_seconds(ns: int) -> int:
    """What a vault keeps of an mtime (mt2 has seconds): the staged file shows it from the start."""
    return ns - ns % SECOND


@dataclasses.dataclass(eq=False)
class Upload:
    """A new file: open (writers > 0), staged (closed, waiting for its upload), uploading, uploaded,
    or dropped (unlinked, replaced, or empty)."""

    view: VaultView
    rel: str
    path: str                       # mount path, for messages (the write-back queue's `path`)
    staged: Path
    fd: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    writers: int = 0
    state: str = "open"
    dirty: bool = True              # data changed since the journal entry was written
    journaled: bool = False
    archive: ArchiveInfo | None = None
    resume: dict | None = None      # a multipart upload in progress (resumable.py), as journaled
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @property
    def id(self) -> str:
        return self.staged.name

    def attrs(self) -> Attrs:
        with self.lock:
            if self.archive is not None:
                size = self.archive.size
            else:
                size = os.fstat(self.fd).st_size if self.fd >= 0 else 0
            return Attrs(mode=stat.S_IFREG | stat.S_IMODE(self.mode), size=size, uid=self.uid, gid=self.gid,
                         mtime_ns=self.mtime_ns, ctime_ns=self.mtime_ns)

    def changeable(self) -> None:
        """Raise unless the file is still ours to change (call with `lock` held)."""
        if self.state in ("uploading", "uploaded"):
            what = "is being uploaded" if self.state == "uploading" else "is uploaded"
            raise ReadOnly(f"{self.rel}: {what} as an archive; archives are immutable")

    def entry(self, size: int) -> JournalEntry:
        meta = {"mode": str(self.mode), "uid": str(self.uid), "gid": str(self.gid), "mtime_ns": str(self.mtime_ns)}
        return JournalEntry(id=self.id, path=self.path, key=self.rel, meta=meta, base_etag=None, size=size,
                            closed_at=time.time(), upload=self.resume)


def _description_limit(view: VaultView) -> int:
    return view.vault.capabilities.max_description_bytes


def check_name(view: VaultView, rel: str, path: str) -> None:
    """A new file's path must come back as itself from its archive's description."""
    if clean_path(rel[1:]) != rel[1:]:
        raise InvalidArgument(f"{path}: this name would not read back as the same path")
    if upload_description(rel[1:], time.time(), _description_limit(view)) is None:
        raise NameTooLong(f"{path}: the path does not fit in an archive description")


@dataclasses.dataclass
class _Staging:
    """One vault's staging directory as this mount owns it."""
    journal: Journal
    lock_fd: int


class VaultUploads:
    """The new files of one mount's vaults and their upload queue."""

    def __init__(self, options: VaultOptions) -> None:
        self.options = options
        self.keep_uploads = options.keep_uploads
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], Upload] = {}
        self._dirs: dict[tuple[str, str], int] = {}     # staged directories -> creation time (ns)
        self._staging: dict[str, _Staging] = {}
        self._refused: dict[str, str] = {}               # vault -> why this mount cannot write there
        self._attrs: dict[str, LocalAttrs] = {}
        self._closing = False                            # unmounting: the staging areas are let go
        self.queue: WriteBack | None = None
        if options.vault_writes:  # write_back = 0: uploads happen in close; the queue retries failures
            self.queue = WriteBack(self._upload_queued, delay=options.write_back, workers=options.transfers)

    # -- per vault -------------------------------------------------------------------------------

    def local_attrs(self, view: VaultView) -> LocalAttrs:
        with self._lock:
            found = self._attrs.get(view.name)
            if found is None:
                found = self._attrs[view.name] = LocalAttrs(view.state.root)
        return found

    def attach(self, view: VaultView, mount_path: Callable[[str], str]) -> None:
        """Own `view`'s staging directory (once) and queue what an earlier run left staged."""
        with self._lock:
            if self._closing or view.name in self._staging or view.name in self._refused:
                return
        directory = view.state.root / "staging"
        directory.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            reason = f"another storefs process writes into vault {view.name} ({directory})"
            log.error("%s: new files are refused in this mount", reason)
            with self._lock:
                self._refused[view.name] = reason
            return
        staging = _Staging(Journal(directory), lock_fd)
        with self._lock:
            if view.name in self._staging:  # lost a race with another thread: the lock is ours twice
                os.close(lock_fd)
                return
            self._staging[view.name] = staging
        self._recover(view, staging.journal, mount_path)

    def _journal(self, view: VaultView) -> Journal:
        with self._lock:
            staging = self._staging.get(view.name)
            reason = self._refused.get(view.name)
        if staging is None:
            raise ReadOnly(reason or f"vault {view.name}: new files need -o vault_writes (and a mount not closing)")
        return staging.journal

    def _recover(self, view: VaultView, journal: Journal, mount_path: Callable[[str], str]) -> None:
        entries = journal.load()
        try:
            resumable.sweep_orphans(view.vault, journal, entries)
        except StoreError as exc:   # tried again at the next mount; nothing depends on it now
            log.warning("vault %s: cannot look for unfinished uploads to abort: %s", view.name, exc)
        journaled = {entry.id for entry in entries}
        for path in journal.directory.iterdir():
            if len(path.name) == 32 and path.name not in journaled and path.is_file():
                log.warning("removing %s: staged by an earlier run but never closed", path)
                path.unlink(missing_ok=True)
        listed = {(u.path, u.archive.size, u.archive.description) for u in view.state.uploads()}
        for entry in entries:
            try:
                rel = entry.key
                mode, uid, gid = (int(entry.meta[k]) for k in ("mode", "uid", "gid"))
                mtime_ns = int(entry.meta["mtime_ns"])
            except (KeyError, ValueError):
                log.error("vault %s: unreadable journal entry %s; its data stays in %s", view.name, entry.id,
                          journal.directory)
                continue
            staged = journal.directory / entry.id
            size = staged.stat().st_size
            description = upload_description(rel[1:], mtime_ns // SECOND, _description_limit(view))
            node = view.lookup(rel)
            already = (rel, size, description) in listed or (
                node is not None and not isinstance(node, str)
                and node.archive.size == size and node.archive.description == description)
            if already:
                log.warning("vault %s: %s was uploaded before the crash; not uploading it again", view.name, rel)
                journal.remove(entry.id)
                staged.unlink(missing_ok=True)
                continue
            fd = os.open(staged, os.O_RDWR)
            up = Upload(view, rel, mount_path(rel), staged, fd, stat.S_IFREG | stat.S_IMODE(mode), uid, gid,
                        mtime_ns, state="staged", dirty=False, journaled=True,
                        resume=entry.upload if isinstance(entry.upload, dict) else None)
            with self._lock:
                if (view.name, rel) in self._pending:  # two entries for one path: keep both, the later one wins the name
                    log.warning("vault %s: two staged files for %s; uploading both", view.name, rel)
                self._pending[(view.name, rel)] = up
            log.warning("vault %s: uploading %s (%d bytes), staged by an earlier run", view.name, rel, size)
            if self.queue is not None:
                self.queue.schedule(up, now=True)

    # -- lookups ---------------------------------------------------------------------------------

    def pending(self, view: VaultView, rel: str) -> Upload | None:
        with self._lock:
            return self._pending.get((view.name, rel))

    def names_in(self, view: VaultView, rel_dir: str) -> set[str]:
        """Names of the new files and staged directories directly in `rel_dir` (and of directories
        that new files deeper down imply)."""
        prefix = rel_dir.rstrip("/") + "/"
        with self._lock:
            rels = [rel for vault, rel in (*self._pending, *self._dirs) if vault == view.name]
        return {rel[len(prefix):].split("/", 1)[0] for rel in rels if rel.startswith(prefix)}

    def is_dir(self, view: VaultView, rel: str) -> bool:
        """A staged directory, or one that a new file below implies."""
        prefix = rel.rstrip("/") + "/"
        with self._lock:
            if (view.name, rel) in self._dirs:
                return True
            return any(vault == view.name and p.startswith(prefix) for vault, p in (*self._pending, *self._dirs))

    def dir_created(self, view: VaultView, rel: str) -> int | None:
        with self._lock:
            return self._dirs.get((view.name, rel))

    # -- new files -------------------------------------------------------------------------------

    def start(self, view: VaultView, rel: str, path: str, mode: int, uid: int, gid: int) -> Upload:
        """Stage a new file at `rel` (the caller checked that nothing is there) with one writer."""
        self._journal(view)
        check_name(view, rel, path)
        staged = view.state.root / "staging" / secrets.token_hex(16)
        fd = os.open(staged, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        up = Upload(view, rel, path, staged, fd, stat.S_IFREG | stat.S_IMODE(mode), uid, gid,
                    whole_seconds(time.time_ns()), writers=1)
        with self._lock:
            if (view.name, rel) in self._pending:  # lost a race with another create
                os.close(fd)
                staged.unlink(missing_ok=True)
                raise AlreadyExists(path)
            self._pending[(view.name, rel)] = up
        return up

    @staticmethod
    def write(up: Upload, data: bytes | memoryview, offset: int) -> int:
        with up.lock:
            up.changeable()
            written = os.pwrite(up.fd, data, offset)
            up.mtime_ns = whole_seconds(time.time_ns())
            up.dirty = True
        return written

    @staticmethod
    def truncate(up: Upload, length: int) -> None:
        """Only while a writer has it open (a closed file's bytes are final)."""
        if length < 0:
            raise InvalidArgument("negative length")
        with up.lock:
            up.changeable()
            if up.writers == 0:
                raise ReadOnly(f"{up.rel}: closed; only its name, mode and times may change until it is uploaded")
            os.ftruncate(up.fd, length)
            up.mtime_ns = whole_seconds(time.time_ns())
            up.dirty = True

    def flush(self, up: Upload) -> None:
        """A writer's close(): make the file durable here and queue it (or, without a write-back
        window, upload it now). InvalidArgument for an empty file (an archive holds at least a byte)."""
        self._closed(up)

    def release(self, up: Upload) -> None:
        """A writer's last reference is gone. An empty file is dropped (InvalidArgument)."""
        with up.lock:
            up.writers -= 1
            last = up.writers == 0
            if last and up.state in ("dropped", "uploaded"):
                self._close_fd_locked(up)
        if not last:
            return
        try:
            self._closed(up)
        except InvalidArgument:
            self.unlink(up)
            raise

    def _closed(self, up: Upload) -> None:
        with up.lock:
            if up.state in ("uploading", "uploaded", "dropped"):
                return
            size = os.fstat(up.fd).st_size
            if size == 0:
                raise InvalidArgument(f"{up.rel}: a vault archive cannot be empty; nothing was uploaded")
            if up.dirty or not up.journaled:
                self._journal(up.view).write(up.entry(size), data_fd=up.fd)
                up.dirty, up.journaled = False, True
            if up.writers == 0:
                up.state = "staged"
        if self.queue is None:
            raise ReadOnly(f"{up.rel}: new files need -o vault_writes")
        if self.options.write_back > 0:
            self.queue.schedule(up)
            return
        try:  # no window: upload inside close, and say so if it fails
            self._upload(up, inside_close=True)
        except StoreError as exc:
            log.error("vault %s: upload of %s failed: %s; it stays staged (%s) and is retried",
                      up.view.name, up.rel, exc, up.staged)
            self.queue.schedule(up)
            raise

    # -- changes while staged --------------------------------------------------------------------

    def _update_entry(self, up: Upload) -> None:
        """Record a change of a closed file's name or attributes (call with `up.lock` held)."""
        if up.journaled and not up.dirty and up.fd >= 0:
            self._journal(up.view).write(up.entry(os.fstat(up.fd).st_size))

    def set_attrs(self, up: Upload, *, mode: int | None = None, uid: int | None = None, gid: int | None = None,
                  mtime_ns: int | None = None) -> None:
        with up.lock:
            up.changeable()
            if up.state == "dropped":
                return
            if mode is not None:
                up.mode = stat.S_IFREG | stat.S_IMODE(mode)
            if uid is not None:
                up.uid = uid
            if gid is not None:
                up.gid = gid
            if mtime_ns is not None:
                up.mtime_ns = whole_seconds(mtime_ns)
            self._update_entry(up)

    def rename(self, up: Upload, rel: str, path: str) -> None:
        """Move a new file to `rel` (the caller checked the target: nothing, or a new file it dropped)."""
        check_name(up.view, rel, path)
        with up.lock:
            up.changeable()
            if up.state == "dropped":
                return
            with self._lock:
                if self._pending.get((up.view.name, up.rel)) is up:
                    del self._pending[(up.view.name, up.rel)]
                self._pending[(up.view.name, rel)] = up
            up.rel, up.path = rel, path
            self._update_entry(up)

    def unlink(self, up: Upload) -> None:
        """Drop a new file that is not uploaded yet (open descriptors keep their bytes)."""
        with up.lock:
            if up.state == "dropped":
                return
            up.changeable()
            up.state = "dropped"
            writers = up.writers
        if self.queue is not None:
            self.queue.discard(up)
        self._forget(up)
        try:
            self._journal(up.view).remove(up.id)
        except ReadOnly:
            pass
        if writers == 0:
            self._close_fd(up)

    # -- directories -----------------------------------------------------------------------------

    def mkdir(self, view: VaultView, rel: str, path: str) -> None:
        self._journal(view)
        check_name(view, rel + "/x", path)
        with self._lock:
            self._dirs[(view.name, rel)] = time.time_ns()

    def rmdir(self, view: VaultView, rel: str) -> bool:
        """Remove an empty staged directory; False if `rel` is none."""
        prefix = rel + "/"
        with self._lock:
            if (view.name, rel) not in self._dirs:
                return False
            if any(vault == view.name and p.startswith(prefix) for vault, p in (*self._pending, *self._dirs)):
                raise NotEmpty(rel)
            del self._dirs[(view.name, rel)]
        return True

    # -- uploading -------------------------------------------------------------------------------

    def _upload_queued(self, item: Item) -> None:
        self._upload(item.file, inside_close=False)  # type: ignore[arg-type]

    def _upload(self, up: Upload, *, inside_close: bool) -> None:
        with up.lock:
            if up.state not in ("open", "staged"):
                return  # uploaded, being uploaded by another thread, or dropped
            if up.writers > 0 and not inside_close:
                raise Busy()  # written to again: its last close queues it again
            size = os.fstat(up.fd).st_size
            rel, mode, mtime_ns = up.rel, up.mode, up.mtime_ns
            up.state = "uploading"
        view = up.view
        try:
            description = upload_description(rel[1:], mtime_ns // SECOND, _description_limit(view))
            if description is None:
                raise NameTooLong(f"{rel}: the path does not fit in an archive description")
            journal = self._journal(view)

            def save(record: dict | None) -> None:
                up.resume = record
                journal.write(up.entry(size))

            with open(up.staged, "rb") as f:
                archive = resumable.send(view.vault, journal, f, size, description, rel, up.resume, save)
        except BaseException:
            with up.lock:
                if up.state == "uploading":
                    up.state = "open" if up.writers else "staged"
            raise
        with up.lock:
            up.state, up.archive = "uploaded", archive
        # The mode first: the tree shows the archive as soon as add_uploaded returns.
        try:
            self.local_attrs(view).set_file_mode(archive.archive_id, mode)
        except OSError as exc:
            log.warning("vault %s: cannot remember the mode of %s: %s", view.name, rel, exc)
        view.add_uploaded(archive, rel)
        if self.keep_uploads:
            self._keep(up, archive)
        self._journal(view).remove(up.id)  # after the upload record: a crash between them uploads nothing twice
        self._forget(up)
        with up.lock:
            if up.writers == 0:
                self._close_fd_locked(up)
        log.info("vault %s: uploaded %s as archive %s (%d bytes)", view.name, rel, short_id(archive.archive_id), size)

    @staticmethod
    def _keep(up: Upload, archive: ArchiveInfo) -> None:
        """Put the staged bytes in the cache as the archive's (verified by the upload itself)."""
        tmp = up.view.state.new_download()
        try:
            os.link(up.staged, tmp)
            up.view.state.commit_data(tmp, archive, archive.tree_hash, None)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("vault %s: cannot keep %s in the cache: %s", up.view.name, up.rel, exc)

    def _forget(self, up: Upload) -> None:
        """Take a file out of the table and remove its staged bytes (open descriptors keep them)."""
        with self._lock:
            if self._pending.get((up.view.name, up.rel)) is up:
                del self._pending[(up.view.name, up.rel)]
        up.staged.unlink(missing_ok=True)

    @staticmethod
    def _close_fd_locked(up: Upload) -> None:
        if up.fd >= 0:
            os.close(up.fd)
            up.fd = -1

    def _close_fd(self, up: Upload) -> None:
        with up.lock:
            self._close_fd_locked(up)

    # -- unmount ---------------------------------------------------------------------------------

    def drain(self, timeout: float | None) -> list[str]:
        """Upload everything queued now, waiting up to `timeout` seconds; what is left (it stays
        staged, and the next mount uploads it), with the reason."""
        if self.queue is None:
            return []
        # Every closed file goes now, also one whose last release is still on its way into the queue
        # (a release racing with unmount: without this the drain could find the queue empty).
        with self._lock:
            ups = list(self._pending.values())
        for up in ups:
            with up.lock:
                ready = up.state in ("open", "staged") and up.writers == 0 and up.fd >= 0 \
                    and os.fstat(up.fd).st_size > 0
            if ready:
                self.queue.schedule(up, now=True)
        left = self.queue.drain(3600.0 if timeout is None else timeout)
        self.queue.stop()
        queued = {id(item.file) for item in left}
        report = [f"{item.file.path} ({item.last_error or 'not uploaded yet'})" for item in left]
        report += [f"{up.path} (not uploaded yet)" for up in self.not_uploaded() if id(up) not in queued]
        with self._lock:  # the staging areas are free for the next mount (what is left stays journaled)
            stagings, self._staging = list(self._staging.values()), {}
            self._closing = True
        for staging in stagings:
            os.close(staging.lock_fd)
        return report

    def not_uploaded(self) -> list[Upload]:
        """New files with bytes that are not archives (yet): what an unmount leaves staged."""
        with self._lock:
            ups = list(self._pending.values())
        return [up for up in ups if up.state in ("open", "staged", "uploading") and up.journaled]

    def count(self) -> int:
        with self._lock:
            return len(self._pending)
