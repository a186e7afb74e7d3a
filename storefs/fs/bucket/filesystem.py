"""StoreFS: the path-level filesystem over one ObjectStore (a MountedFS, fs/api.py). It never imports
a FUSE binding.

Every method takes mount paths (`/a/b`) and raises `storefs.errors` classes; `fuse/ops.py` turns them
into errnos. What each operation promises is written in SEMANTICS.md. Renames live in renames.py,
attribute changes in attrchanges.py, extended attributes and statfs in facts.py; mounting.py builds the collaborators.

Locking: the OpenFiles table's lock guards the path→OpenFile and fh→Handle tables and is held only
for table updates. Then `OpenFile.lock` guards one file. No request is made while the table lock is held.
"""
from __future__ import annotations

import io
import logging
import os
import stat
import threading
from typing import Callable

from ...attrs import (
    Attrs,
    attrs_from_object,
    carried_meta,
    meta_from_attrs,
    now_ns,
)
from ...retrieval.gate import ArchiveGate
from .attrchanges import AttrChanges, set_mode, set_owner, set_times
from .blockcache import BlockCache
from .changetimes import ChangeTimes, DirTimesWriter
from .committer import Committer
from ...errors import (
    AlreadyExists,
    InvalidArgument,
    IsADirectory,
    NotADirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
    NotSupported,
    ReadOnly,
    RemoteChanged,
    StoreError,
)
from .journal import JournalEntry
from .namespace import Entry, Namespace
from .facts import BucketFacts
from .openfiles import Handle, OpenFile, OpenFiles
from .staging import Staging
from .renames import Renames
from ...options import MountOptions
from ...paths import KeyMap, basename, check_key_length, check_path, is_within, join, parent
from .reader import RangeReader
from ..sinks import BufferSink, Sink
from ...store.contract import ObjectInfo, ObjectStore

log = logging.getLogger(__name__)

SYMLINK_MAX = 4096
# Seconds after a directory's entries change before its new times are written to its marker: one
# request per changed directory per period, never one per created file.
DIR_TIMES_DELAY = 5.0


def is_hidden_name(path: str) -> bool:
    """libfuse's name for a file unlinked while open (`.fuse_hidden` + 16 hex digits): it renames the
    file there instead of unlinking it, serves the open descriptors under it, and unlinks it at the
    last close. Such names live only in this mount (see StoreFS._hide)."""
    name = basename(path)
    return len(name) == 28 and name.startswith(".fuse_hidden") and all(c in "0123456789abcdef" for c in name[12:])


class StoreFS:
    """The bucket filesystem (MountedFS). Built by mounting.py, which makes its collaborators."""

    def __init__(self, store: ObjectStore, keys: KeyMap, options: MountOptions, *, ns: Namespace,
                 staging: Staging, table: OpenFiles, committer: Committer, cache: BlockCache | None = None,
                 location: str = "", archive: ArchiveGate | None = None,
                 warm_page_cache: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.keys = keys
        self.options = options
        self.ns = ns
        self.staging = staging
        self.table = table
        self.committer = committer
        self.cache = cache
        self.location = location  # names this remote bucket in the block cache's keys
        # Restore-on-open for archive storage classes, where the provider has them (S3). Extended
        # attributes (user.storefs.*) only with `-o xattr` as well: answering them costs `ls -l` two
        # FUSE round trips per entry (0.5 s per 5,000 entries), so by default the FUSE edge answers
        # ENOSYS once and the kernel stops asking (see fuse/ops.getxattr).
        self.archive = archive
        self.has_xattrs = archive is not None and options.xattr
        self.facts = BucketFacts(keys, ns, table, archive, staging, options)
        # Held while directory markers are removed (rmdir, the end of a directory's rename) and while
        # the DirTimesWriter rewrites one: a times write that looked its directory up just before must
        # not put the old marker back (the old name stayed, as an empty directory).
        self._markers = threading.RLock()
        self.renames = Renames(store, keys, ns, table, committer, self._markers)
        # The kernel keeps entries and attributes for half our TTL, at least libfuse's 1 s, so that
        # another client's change still shows within 1.5 x attr_ttl (SEMANTICS.md, Consistency).
        self.kernel_cache_ttl: float | None = max(1.0, options.attr_ttl / 2)
        # The page-cache warmer (fuse/pagecache.py): an object read at random, once in the block
        # cache, is read through the mount so the kernel's page cache answers what follows.
        self._warm_page_cache = warm_page_cache
        self.times = ChangeTimes(ns.settings.max_entries)
        self.dir_times = DirTimesWriter(self.times, self._write_dir_times, DIR_TIMES_DELAY)
        self.attr_changes = AttrChanges(store, keys, ns, table, committer, self.times)
        # libfuse keeps a file unlinked while open under a hidden name (is_hidden_name) rather than
        # dropping its path (hard_remove), so that fstat, fchmod, futimens and ftruncate keep working on
        # it with either libfuse; StoreFS keeps that name local.
        self.hard_remove = False

    # ------------------------------------------------------------------------------------------
    # lookups

    def _open_file(self, path: str) -> OpenFile | None:
        return self.table.get(path)

    def _entry(self, path: str) -> Entry:
        return self.ns.lookup(path)

    def getattr(self, path: str | None, fh: int | None = None) -> Attrs:
        if fh is not None and fh in self.table.handles:
            return self._open_attrs(self.table.handles[fh].file)
        check_path(path)
        if path == "/":
            return self._dir_links(path, self.times.apply(path, self.attr_changes.root.copy()))
        opened = self._open_file(path)
        if opened is not None and (opened.staged or opened.info is None or opened.unlinked):
            return self._open_attrs(opened)
        if is_hidden_name(path):
            raise NotFound(path)   # libfuse probing for a free hidden name: never a request
        attrs = self.times.apply(path, self._entry(path).attrs)
        return self._dir_links(path, attrs) if attrs.is_dir else attrs

    def _open_attrs(self, opened: OpenFile) -> Attrs:
        attrs = opened.current_attrs()
        if opened.unlinked:
            attrs.nlink = 0
        return attrs

    def _write_dir_times(self, path: str, mtime_ns: int, ctime_ns: int) -> None:
        """Keep a directory's new times on its marker, where it has one (DirTimesWriter)."""
        if path == "/" or self.options.read_only:
            return   # the mount root has no object; its times last this session
        with self._markers:
            try:
                entry = self._entry(path)
            except NotFound:
                return   # removed or renamed since
            if entry.info is None or not entry.is_dir:
                return   # an implicit directory has no object to keep times in
            attrs = entry.attrs.copy()
            if attrs.mtime_ns >= mtime_ns and attrs.ctime_ns >= ctime_ns:
                return
            attrs.mtime_ns = max(attrs.mtime_ns, mtime_ns)
            attrs.ctime_ns = max(attrs.ctime_ns, ctime_ns)
            info = self.store.put(self.keys.dir_key(path), io.BytesIO(b""), 0,
                                  meta_from_attrs(attrs, carried_meta(entry.info.meta)))
            self.ns.remember(path, Entry(attrs, info))

    def _dir_links(self, path: str, attrs: Attrs) -> Attrs:
        """2 + its subdirectories where its listing is known (else 2, as before it is listed)."""
        subdirs = self.ns.subdir_count(path)
        if subdirs is not None:
            attrs = attrs.copy(nlink=2 + subdirs)
        return attrs

    def getattr_etag(self, path: str) -> str | None:
        """The ETag of the remote object behind `path`, or None while it is staged or has none."""
        opened = self._open_file(path)
        if opened is not None and (opened.staged or opened.dirty):
            return None
        entry = self._entry(path)
        return entry.info.etag if entry.info is not None else None

    def _require_dir(self, path: str) -> None:
        if path == "/":
            return
        if self._open_file(path) is not None:
            raise NotADirectory(path)
        if not self._entry(path).is_dir:
            raise NotADirectory(path)

    def _exists(self, path: str) -> bool:
        if path == "/" or self._open_file(path) is not None:
            return True
        try:
            self._entry(path)
            return True
        except NotFound:
            return False

    def _writable(self) -> None:
        if self.options.read_only:
            raise ReadOnly("mounted read-only")

    def readdir(self, path: str) -> list[str]:
        return [name for name, _attrs in self.readdir_attrs(path)]

    def readdir_attrs(self, path: str) -> list[tuple[str, Attrs | None]]:
        """The listing with the staged files overlaid, sorted, each child with its attributes where
        they are exact (None: ask getattr)."""
        check_path(path)
        self._require_dir(path)
        before = self._staged_in(path)
        entries = self.ns.listdir(path)
        staged = self._staged_in(path)
        if any(name not in staged and name not in entries and not opened.unlinked and opened.path == join(path, name)
               for name, opened in before.items()):
            # Uploaded after its listing was fetched and forgotten here since: the cached listing has it now.
            entries = self.ns.listdir(path)
        listed: list[tuple[str, Attrs | None]] = []
        for name in sorted(entries.keys() | staged.keys()):
            opened = staged.get(name)
            if opened is not None and is_hidden_name(opened.path):
                continue
            if opened is not None and (opened.staged or opened.info is None):
                listed.append((name, opened.current_attrs()))
            elif opened is None and entries[name].exact and not entries[name].is_dir:
                listed.append((name, self.times.apply(join(path, name), entries[name].attrs)))
            else:
                listed.append((name, None))   # directories: their link count comes from getattr
        return listed

    def _staged_in(self, path: str) -> dict[str, OpenFile]:
        """The open or not yet uploaded files directly in directory `path`, by name."""
        with self.table.lock:
            return {basename(o.path): o for o in self.table.by_path.values() if parent(o.path) == path}

    def readlink(self, path: str) -> str:
        entry = self._entry(path)
        if not entry.attrs.is_symlink or entry.info is None:
            raise InvalidArgument(f"{path} is not a symbolic link")
        data = self.store.read_range(entry.info.key, 0, SYMLINK_MAX)
        return data.decode("utf-8", "surrogateescape")

    # ------------------------------------------------------------------------------------------
    # directories

    def _check_new(self, path: str) -> None:
        """`path` may be created: its parent is a directory and nothing is there yet."""
        check_path(path)
        if path == "/":
            raise AlreadyExists("/")
        self._check_parent_writable(path)
        self._require_dir(parent(path))
        if self._exists(path):
            raise AlreadyExists(path)

    def _check_parent_writable(self, path: str) -> None:
        if parent(path) == "/" and not self.store.capabilities.root_writable:
            raise NotPermitted("nothing but buckets lives at the top of this mount")

    def mkdir(self, path: str, mode: int, uid: int, gid: int) -> None:
        self._writable()
        self._check_new(path)
        now = now_ns()
        attrs = Attrs(mode=stat.S_IFDIR | stat.S_IMODE(mode), size=0, uid=uid, gid=gid,
                      mtime_ns=now, ctime_ns=now, atime_ns=now)
        marker = self.keys.dir_key(path)
        check_key_length(marker)  # the marker is the key plus "/": it must fit the key limit too
        info = self.store.put(marker, io.BytesIO(b""), 0, meta_from_attrs(attrs))
        self.ns.remember(path, Entry(attrs, info))
        self.ns.seed_empty(path)  # names looked up in it next (cp -r, rsync) need no request
        self.times.entries_changed(path)

    def _has_children(self, path: str) -> bool:
        dir_key = self.keys.dir_key(path)
        page = self.store.list(dir_key, delimiter="/", limit=2)
        if page.prefixes or any(o.key != dir_key for o in page.objects):
            return True
        return self._has_staged_children(path)

    def _has_staged_children(self, path: str) -> bool:
        """Whether files are open or waiting for upload below directory `path`."""
        with self.table.lock:
            return any(is_within(p, path) and p != path for p in self.table.by_path)

    def rmdir(self, path: str) -> None:
        self._writable()
        check_path(path)
        if path == "/":
            raise NotPermitted("cannot remove the mount root")
        entry = self._entry(path)
        if not entry.is_dir:
            raise NotADirectory(path)
        if self._has_staged_children(path):
            raise NotEmpty(path)   # at once: no waiting below for the uploads of files still in it
        dir_key = self.keys.dir_key(path)
        # An upload of a file just removed or renamed out of it may still be on the wire (`rm -r` right
        # after a copy): it lands first and takes its object away again (owners.pause), so that the
        # listing below does not find the directory not empty.
        with self.committer.owners.pause(dir_key) as landed:
            if not landed:
                log.info("removing %s while an upload of a file that was in it is still on the wire", path)
            if self._has_children(path):
                raise NotEmpty(path)
            with self._markers:
                self.store.delete(dir_key)
                self.ns.forget_tree(path)
                self.ns.forget(path, gone=True)
        self.times.entries_changed(path)

    # ------------------------------------------------------------------------------------------
    # files: open, read, write, close

    def _new_handle(self, opened: OpenFile, writable: bool, append: bool) -> int:
        handle = Handle(opened, writable, append)
        if not writable and not opened.staged and opened.info is not None:
            handle.reader = self._reader(opened)
        return self.table.add_handle(handle)

    def _get_or_open(self, path: str, entry: Entry | None) -> OpenFile:
        with self.table.lock:
            opened = self.table.by_path.get(path)
            if opened is None:
                assert entry is not None
                opened = OpenFile(path=path, key=self.keys.key(path), attrs=entry.attrs.copy(), info=entry.info)
                self.table.by_path[path] = opened
            return opened

    def _reader(self, opened: OpenFile, *, random_access_warms: bool = True) -> RangeReader:
        assert opened.info is not None
        warm = self._warm_page_cache
        on_random_access = (lambda: warm(opened.path)) if warm is not None and random_access_warms else None
        return RangeReader(self.store, opened.key, opened.info.size, opened.info.etag,
                           self.options.read_ahead, self.cache, self.location, on_random_access)

    def _stage(self, opened: OpenFile) -> None:
        """Stage `opened` for writing, filled with its remote bytes through a reader (the one read path)."""
        opened.stage_from_remote(self.staging, lambda: self._reader(opened, random_access_warms=False))

    def create(self, path: str, mode: int, uid: int, gid: int, flags: int) -> int:
        self._writable()
        check_path(path)
        self._check_parent_writable(path)
        self._require_dir(parent(path))
        if self._exists(path):
            if flags & os.O_EXCL:
                raise AlreadyExists(path)
            return self.open(path, flags | os.O_TRUNC)
        self.staging.check_room(0)
        now = now_ns()
        attrs = Attrs(mode=stat.S_IFREG | stat.S_IMODE(mode), size=0, uid=uid, gid=gid,
                      mtime_ns=now, ctime_ns=now, atime_ns=now)
        opened = OpenFile(path=path, key=self.keys.key(path), attrs=attrs, info=None, meta_dirty=True)
        opened.stage_empty(self.staging)
        with self.table.lock:
            if path in self.table.by_path:  # lost a race with another create: use theirs
                opened.discard_staged()
                opened = self.table.by_path[path]
            else:
                self.table.by_path[path] = opened
        self.committer.streams.watch(opened)   # written from empty: it may go up while written
        self.ns.creating(path)
        self.times.entries_changed(path)
        return self._new_handle(opened, True, bool(flags & os.O_APPEND))

    def open(self, path: str, flags: int) -> int:
        check_path(path)
        accmode = flags & os.O_ACCMODE
        writable = accmode in (os.O_WRONLY, os.O_RDWR)
        if writable or flags & os.O_TRUNC:
            self._writable()
        opened = self._open_file(path)
        entry = None
        if opened is None:
            entry = self._entry(path)
            if entry.is_dir:
                raise IsADirectory(path)
            if entry.attrs.is_symlink:
                raise NotSupported(f"{path} is a symbolic link")
        if entry is not None and not flags & os.O_TRUNC and self.archive is not None \
                and self.archive.is_archived(entry.info):
            # Its bytes need a restore first (EAGAIN, or a wait): asked once, state from the server.
            self.archive.ensure_readable(self.keys.key(path), path)
        opened = self._get_or_open(path, entry)
        try:
            if flags & os.O_TRUNC:
                with opened.lock:
                    if opened.staged:
                        opened.truncate(0)
                    else:
                        opened.stage_empty(self.staging)
                    self.committer.streams.watch(opened)
            elif writable:
                self._stage(opened)
        except BaseException:
            self._drop_if_unused(opened)
            raise
        return self._new_handle(opened, writable, bool(flags & os.O_APPEND))

    def _drop_if_unused(self, opened: OpenFile) -> None:
        with self.table.lock:
            if opened.refs == 0 and self.table.by_path.get(opened.path) is opened:
                del self.table.by_path[opened.path]

    def _handle(self, fh: int) -> Handle:
        try:
            return self.table.handles[fh]
        except KeyError:
            raise StoreError(f"bad file handle {fh}") from None

    def read(self, fh: int, size: int, offset: int) -> bytes:
        buffer = bytearray(size)
        return bytes(buffer[:self.read_to(fh, BufferSink(memoryview(buffer)), offset)])

    def read_to(self, fh: int, sink: Sink, offset: int) -> int:
        """read()'s bytes straight to `sink` (bound for the FUSE reply): how many."""
        handle = self._handle(fh)
        opened = handle.file
        if opened.staged:
            return opened.read_staged_to(sink, offset)
        if handle.reader is not None and handle.reader.key != opened.key:
            # Renamed while open (alone or with its directory): read the object under its new name.
            handle.reader.close()
            handle.reader = None
        if handle.reader is None:
            if opened.info is None:
                return 0
            handle.reader = self._reader(opened)
        try:
            return handle.reader.read_to(offset, sink)
        except (RemoteChanged, NotFound) as exc:
            # This handle keeps failing (ESTALE), but the next open must see the new object. An object
            # that is gone (unlinked, or replaced by a rename) changed too: ESTALE, not ENOENT from read().
            self.ns.forget(opened.path)
            if isinstance(exc, NotFound):
                raise RemoteChanged(f"{opened.path} was removed while open for reading") from None
            raise

    def write(self, fh: int, data: bytes | memoryview, offset: int) -> int:
        handle = self._handle(fh)
        if not handle.writable:
            raise StoreError("file not open for writing")
        opened = handle.file
        if not opened.staged:
            self._stage(opened)
        handle.changed = True
        return opened.write(data, offset, handle.append)

    def flush(self, fh: int) -> None:
        handle = self._handle(fh)
        # A close of a descriptor through which nothing was written leaves the upload to the release
        # (the last close): a shell's `printf … > f` opens f, dup2()s it to stdout and closes the
        # first descriptor before writing, which otherwise uploaded (or journaled) an empty file
        # first: two PUTs per file with write_back=0. `touch f` is uploaded at its release.
        if handle.writable and handle.changed:
            self.committer.closed(handle.file)

    def fsync(self, fh: int) -> None:
        self.committer.fsync(self._handle(fh).file)

    def release(self, fh: int) -> None:
        removed = self.table.remove_handle(fh)
        if removed is None:
            return
        handle, last = removed
        opened = handle.file
        if handle.reader is not None:
            handle.reader.close()
        if not last:
            return
        if opened.dirty and not opened.unlinked:
            try:
                self.committer.closed(opened)
            except Exception as exc:  # the data stays staged and queued; close() already reported
                log.error("upload of %s failed: %s; it stays staged and is retried", opened.path, exc)
            return
        self.table.discard_if_clean(opened)

    def pending_uploads(self) -> list[str]:
        return [item.file.path for item in self.committer.queue.pending()]

    def recover(self) -> list[str]:
        """Take up the uploads an earlier run of this mount left unfinished (before mounting)."""
        def make_file(entry: JournalEntry) -> OpenFile:
            info = ObjectInfo(key=entry.key, size=entry.size, etag="", mtime=entry.closed_at, meta=entry.meta)
            opened = OpenFile(path=entry.path, key=entry.key, attrs=attrs_from_object(info, self.ns.defaults),
                              info=None, base_etag=entry.base_etag, meta_dirty=True,
                              data_generation=entry.data_version)
            with self.table.lock:
                self.table.by_path[entry.path] = opened
            return opened
        return [opened.path for opened in self.committer.recover(make_file)]

    # ------------------------------------------------------------------------------------------
    # truncate, unlink, symlink

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        self._writable()
        if length < 0:
            raise InvalidArgument("negative length")
        if fh is not None:
            handle = self._handle(fh)
            opened = handle.file
            if not opened.staged:
                self._stage(opened)
            handle.changed = True
            opened.truncate(length)
            return
        opened = self._open_file(path)
        if opened is not None and (opened.staged or opened.unlinked):
            if not opened.staged:   # unlinked while open, never written: its bytes become local now
                self._stage(opened)
            opened.truncate(length)
            return
        # truncate(2) on a path nobody has open: stage, truncate, upload, done.
        fh = self.open(path, os.O_WRONLY | (os.O_TRUNC if length == 0 else 0))
        try:
            self.truncate(path, length, fh)
            self.flush(fh)
        finally:
            self.release(fh)

    def unlink(self, path: str) -> None:
        self._writable()
        check_path(path)
        if is_hidden_name(path):
            self._drop_hidden(path)
            return
        with self.table.lock:
            opened = self.table.by_path.get(path)
            if opened is not None:
                del self.table.by_path[path]
        if opened is not None:
            existed = opened.mark_unlinked()
            self.committer.forget(opened)
            if existed:
                self._delete(opened.key)
            if opened.refs == 0:
                opened.discard_staged()
            self.ns.forget(path, gone=True)
            self.times.entries_changed(path)
            return
        entry = self._entry(path)
        if entry.is_dir:
            raise IsADirectory(path)
        self._delete(self.keys.key(path))
        self.ns.forget(path, gone=True)
        self.times.entries_changed(path)

    def _delete(self, key: str) -> None:
        """Delete a file's object. An upload's journal entry removal that a machine crash could still
        undo is made durable first: replayed, it would bring the deleted name back (journal.py)."""
        self.committer.settle()
        self.store.delete(key)

    def _hide(self, path: str, hidden: str) -> None:
        """libfuse's unlink of a file that is open (a rename to `hidden`, see is_hidden_name): the
        object goes as with unlink, the open file stays in the table under `hidden` (link count 0),
        so its descriptors keep working, and nothing of it is ever uploaded."""
        with self.table.lock:
            opened = self.table.by_path.pop(path, None)
            if opened is not None:
                self.table.by_path[hidden] = opened
        if opened is None:   # closed meanwhile: a plain unlink
            self.unlink(path)
            return
        existed = opened.mark_unlinked()
        self.committer.forget(opened)
        if existed:
            self._delete(opened.key)
        with opened.lock:
            opened.path = hidden
            opened.attrs.ctime_ns = now_ns()
        self.ns.forget(path, gone=True)
        self.times.entries_changed(path)

    def _drop_hidden(self, hidden: str) -> None:
        """libfuse's unlink of a hidden name at the last close: the staged copy goes; nothing remote."""
        with self.table.lock:
            opened = self.table.by_path.pop(hidden, None)
        if opened is not None and opened.refs == 0:
            opened.discard_staged()

    def symlink(self, path: str, target: str, uid: int, gid: int) -> None:
        self._writable()
        self._check_new(path)
        body = target.encode("utf-8", "surrogateescape")
        if len(body) > SYMLINK_MAX:
            raise InvalidArgument("symlink target too long")
        now = now_ns()
        attrs = Attrs(mode=stat.S_IFLNK | 0o777, size=len(body), uid=uid, gid=gid,
                      mtime_ns=now, ctime_ns=now, atime_ns=now)
        info = self.store.put(self.keys.key(path), io.BytesIO(body), len(body), meta_from_attrs(attrs))
        self.ns.remember(path, Entry(attrs, info))
        self.times.entries_changed(path)

    def link(self, path: str, target: str) -> None:
        raise NotPermitted("hard links are not supported")

    def mknod(self, path: str, mode: int, uid: int, gid: int) -> None:
        if not stat.S_ISREG(mode):
            raise NotPermitted("only regular files can be created here (no devices, FIFOs or sockets)")
        self.release(self.create(path, mode, uid, gid, os.O_WRONLY | os.O_EXCL))

    # ------------------------------------------------------------------------------------------
    # attributes (attrchanges.py)

    def _change_attrs(self, path: str | None, change: Callable[[Attrs], None], fh: int | None) -> None:
        self._writable()
        if fh is not None and fh in self.table.handles:   # fchmod, futimens… on an open file
            self.attr_changes.apply_open(self.table.handles[fh].file, change)
            return
        check_path(path)
        self.attr_changes.apply(path, change)

    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> None:
        self._change_attrs(path, set_mode(mode), fh)

    def chown(self, path: str | None, uid: int, gid: int, fh: int | None = None) -> None:
        self._change_attrs(path, set_owner(uid, gid), fh)

    def utimens(self, path: str | None, mtime_ns: int | None, atime_ns: int | None = None,
                fh: int | None = None) -> None:
        """Set the modification and access times; None leaves one as it is (UTIME_OMIT)."""
        if mtime_ns is not None or atime_ns is not None:
            self._change_attrs(path, set_times(atime_ns, mtime_ns), fh)

    # ------------------------------------------------------------------------------------------
    # rename

    def rename(self, old: str, new: str) -> None:
        self._writable()
        check_path(old)
        check_path(new)
        if old == "/" or new == "/":
            raise NotPermitted("cannot rename the mount root")
        if old == new:
            return
        if is_hidden_name(new):
            self._hide(old, new)
            return
        if is_within(new, old):
            raise InvalidArgument("cannot move a directory into itself")
        old_attrs = self.getattr(old)
        self._require_dir(parent(new))
        try:
            new_attrs: Attrs | None = self.getattr(new)
        except NotFound:
            new_attrs = None
        if old_attrs.is_dir:
            if new_attrs is not None:
                if not new_attrs.is_dir:
                    raise NotADirectory(new)
                if self._has_children(new):
                    raise NotEmpty(new)
                self.store.delete(self.keys.dir_key(new))
            self.renames.move_dir(old, new, old_attrs)
        else:
            if new_attrs is not None and new_attrs.is_dir:
                raise IsADirectory(new)
            self.renames.move_file(old, new)
        self.times.renamed(old, new)

    # ------------------------------------------------------------------------------------------
    # the filesystem as a whole (facts.py)

    def listxattr(self, path: str) -> list[str]:
        return self.facts.listxattr(path)

    def getxattr(self, path: str, name: str) -> bytes:
        return self.facts.getxattr(path, name)

    def statfs(self) -> dict[str, int]:
        return self.facts.statfs()

    def close(self, timeout: float) -> list[str]:
        """Unmount: upload everything pending, waiting up to `timeout` seconds. Returns what is left
        (still staged, and in the journal for the next mount), each with its last error."""
        if self.archive is not None:
            self.archive.stopping.set()  # an open waiting for a restore gives up now
        with self.table.lock:
            files = list(self.table.by_path.values())
        for opened in files:  # open at a lazy unmount: queue them too
            if opened.dirty and not opened.unlinked:
                try:
                    self.committer.record(opened)
                except OSError as exc:
                    log.error("cannot journal %s: %s", opened.path, exc)
                self.committer.queue.schedule(opened, now=True)
        left = self.committer.drain(timeout)
        self.committer.stop()
        self.dir_times.close()   # the directory times not written yet
        self.staging.close()     # its spare files
        # Still open for writing (a lazy unmount): not queued, but staged and journaled; say so.
        still_open = [f"{f.path} (still open for writing; staged, the next mount uploads it)" for f in files
                      if f.dirty and not f.unlinked and f.writers > 0 and not self.committer.queue.is_queued(f)]
        if self.cache is not None:
            self.cache.close()  # writes the blocks still queued, so the next mount finds them
        return [f"{item.file.path} ({item.last_error or 'not finished'})" for item in left] + still_open

