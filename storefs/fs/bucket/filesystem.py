"""StoreFS: the path-level filesystem over one ObjectStore. It never imports fusepy.

Every method takes mount paths (`/a/b`) and raises `storefs.errors` classes; `fuse_ops.py` turns them
into errnos. What each operation promises is written in SEMANTICS.md.

Locking: `_table_lock` guards the path→OpenFile and fh→Handle tables and is held only for table
updates. Then `OpenFile.lock` guards one file. No request is made while `_table_lock` is held.
"""
from __future__ import annotations

import io
import itertools
import logging
import os
import shutil
import stat
import threading
from typing import Callable

from ...attrs import (
    Attrs,
    Defaults,
    attrs_from_object,
    carried_meta,
    implicit_dir_attrs,
    meta_from_attrs,
    now_ns,
)
from ...retrieval.gate import XATTR_RETRIEVAL, XATTR_STORAGE_CLASS, ArchiveGate
from .blockcache import BlockCache
from .committer import CommitSettings, Committer
from ...errors import (
    AlreadyExists,
    InvalidArgument,
    IsADirectory,
    NoAttribute,
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
from .namespace import CacheSettings, Entry, Namespace
from .openfiles import Handle, OpenFile, Staging
from ...options import MountOptions
from ...paths import KeyMap, basename, check_key_length, check_path, is_within, parent
from .reader import RangeReader
from ...store.contract import ObjectInfo, ObjectStore, iter_list
from .uploader import UploadSettings

log = logging.getLogger(__name__)

SYMLINK_MAX = 4096


class StoreFS:
    def __init__(self, store: ObjectStore, prefix: str, options: MountOptions, staging: Staging,
                 cache: BlockCache | None = None, location: str = "",
                 archive: ArchiveGate | None = None) -> None:
        self.store = store
        # Restore-on-open for archive storage classes, where the provider has them (S3). Extended
        # attributes (user.storefs.*) only with `-o xattr` as well: answering them costs `ls -l` two
        # FUSE round trips per entry (0.5 s per 5,000 entries), so by default fuse_ops answers ENOSYS
        # once and the kernel stops asking (see fuse_ops.getxattr).
        self.archive = archive
        self.has_xattrs = archive is not None and options.xattr
        # The kernel keeps entries and attributes for half our TTL, at least libfuse's 1 s, so that
        # another client's change still shows within 1.5 x attr_ttl (SEMANTICS.md, Consistency).
        self.kernel_cache_ttl: float | None = max(1.0, options.attr_ttl / 2)
        self.cache = cache
        self.location = location  # names this remote bucket in the block cache's keys
        self.keys = KeyMap.for_prefix(prefix)
        self.options = options
        self.defaults = Defaults(uid=options.uid, gid=options.gid, file_mode=0o666 & ~options.umask,
                                 dir_mode=0o777 & ~options.umask)
        self.ns = Namespace(store, self.keys, self.defaults,
                            CacheSettings(options.attr_ttl, options.dir_ttl, options.neg_ttl,
                                          stat_ahead=0 if options.listing_attrs == "fast"
                                          else CacheSettings.stat_ahead))
        self.staging = staging
        self.upload_settings = UploadSettings(part_size=options.part_size, workers=options.upload_workers)
        self.committer = Committer(store, self.ns, staging, self.upload_settings,
                                   CommitSettings(write_back=options.write_back, transfers=options.transfers,
                                                  fsync_uploads=options.fsync != "local"),
                                   on_clean=self._on_clean, on_change=self._changed)
        self.on_change = lambda: None  # the status reporter hooks in here
        # The FUSE edge hooks in a pagecache.PageCacheWarmer here: an object read at random, once in
        # the block cache, is read through the mount so the kernel's page cache answers what follows.
        self.page_cache_warmer: Callable[[str], None] | None = None
        self._table_lock = threading.Lock()
        self._files: dict[str, OpenFile] = {}
        self._handles: dict[int, Handle] = {}
        self._next_fh = itertools.count(1)
        # The mount root has no object to keep attributes in; chmod/utimens on it last this session.
        self._root_attrs = implicit_dir_attrs(self.defaults, now_ns())

    # ------------------------------------------------------------------------------------------
    # lookups

    def _open_file(self, path: str) -> OpenFile | None:
        with self._table_lock:
            return self._files.get(path)

    def _entry(self, path: str) -> Entry:
        return self.ns.lookup(path)

    def getattr(self, path: str | None, fh: int | None = None) -> Attrs:
        # The handle first: a file unlinked while open comes with no path (hard_remove, fuse_ops.run).
        if fh is not None and fh in self._handles:
            return self._handles[fh].file.current_attrs()
        check_path(path)
        if path == "/":
            return self._root_attrs.copy()
        opened = self._open_file(path)
        if opened is not None and (opened.staged or opened.info is None):
            return opened.current_attrs()
        return self._entry(path).attrs

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
        entries = self.ns.listdir(path)
        with self._table_lock:
            staged = {basename(o.path): o for o in self._files.values() if parent(o.path) == path}
        listed: list[tuple[str, Attrs | None]] = []
        for name in sorted(entries.keys() | staged.keys()):
            opened = staged.get(name)
            if opened is not None and (opened.staged or opened.info is None):
                listed.append((name, opened.current_attrs()))
            elif opened is None and entries[name].exact:
                listed.append((name, entries[name].attrs))
            else:
                listed.append((name, None))
        return listed

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
        attrs = Attrs(mode=stat.S_IFDIR | stat.S_IMODE(mode), size=0, uid=uid, gid=gid,
                      mtime_ns=now_ns(), ctime_ns=now_ns())
        marker = self.keys.dir_key(path)
        check_key_length(marker)  # the marker is the key plus "/": it must fit the key limit too
        info = self.store.put(marker, io.BytesIO(b""), 0, meta_from_attrs(attrs))
        self.ns.remember(path, Entry(attrs, info))
        self.ns.seed_empty(path)  # names looked up in it next (cp -r, rsync) need no request

    def _has_children(self, path: str) -> bool:
        dir_key = self.keys.dir_key(path)
        page = self.store.list(dir_key, delimiter="/", limit=2)
        if page.prefixes or any(o.key != dir_key for o in page.objects):
            return True
        with self._table_lock:
            return any(is_within(p, path) and p != path for p in self._files)

    def rmdir(self, path: str) -> None:
        self._writable()
        check_path(path)
        if path == "/":
            raise NotPermitted("cannot remove the mount root")
        entry = self._entry(path)
        if not entry.is_dir:
            raise NotADirectory(path)
        if self._has_children(path):
            raise NotEmpty(path)
        self.store.delete(self.keys.dir_key(path))
        self.ns.forget_tree(path)
        self.ns.forget(path, gone=True)

    # ------------------------------------------------------------------------------------------
    # files: open, read, write, close

    def _new_handle(self, opened: OpenFile, writable: bool, append: bool) -> int:
        handle = Handle(opened, writable, append)
        if not writable and not opened.staged and opened.info is not None:
            handle.reader = self._reader(opened)
        with self._table_lock:
            fh = next(self._next_fh)
            self._handles[fh] = handle
            opened.refs += 1
            if writable:
                opened.writers += 1
        return fh

    def _get_or_open(self, path: str, entry: Entry | None) -> OpenFile:
        with self._table_lock:
            opened = self._files.get(path)
            if opened is None:
                assert entry is not None
                opened = OpenFile(path=path, key=self.keys.key(path), attrs=entry.attrs.copy(), info=entry.info)
                self._files[path] = opened
            return opened

    def _reader(self, opened: OpenFile) -> RangeReader:
        assert opened.info is not None
        warmer = self.page_cache_warmer
        on_random_access = (lambda: warmer(opened.path)) if warmer is not None else None
        return RangeReader(self.store, opened.key, opened.info.size, opened.info.etag,
                           self.options.read_ahead, self.cache, self.location, on_random_access)

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
        attrs = Attrs(mode=stat.S_IFREG | stat.S_IMODE(mode), size=0, uid=uid, gid=gid,
                      mtime_ns=now_ns(), ctime_ns=now_ns())
        opened = OpenFile(path=path, key=self.keys.key(path), attrs=attrs, info=None, meta_dirty=True)
        opened.stage_empty(self.staging)
        with self._table_lock:
            if path in self._files:  # lost a race with another create: use theirs
                opened.discard_staged()
                opened = self._files[path]
            else:
                self._files[path] = opened
        self.ns.creating(path)
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
            elif writable:
                opened.stage_from_remote(self.staging, self.store)
        except BaseException:
            self._drop_if_unused(opened)
            raise
        return self._new_handle(opened, writable, bool(flags & os.O_APPEND))

    def _drop_if_unused(self, opened: OpenFile) -> None:
        with self._table_lock:
            if opened.refs == 0 and self._files.get(opened.path) is opened:
                del self._files[opened.path]

    def _handle(self, fh: int) -> Handle:
        try:
            return self._handles[fh]
        except KeyError:
            raise StoreError(f"bad file handle {fh}") from None

    def read(self, fh: int, size: int, offset: int) -> bytes:
        buffer = bytearray(size)
        return bytes(buffer[:self.read_into(fh, memoryview(buffer), offset)])

    def read_into(self, fh: int, into: memoryview, offset: int) -> int:
        """read() straight into the caller's buffer (the FUSE reply's): the bytes read."""
        handle = self._handle(fh)
        opened = handle.file
        if opened.staged:
            return opened.read_staged_into(into, offset)
        if handle.reader is not None and handle.reader.key != opened.key:
            # Renamed while open (alone or with its directory): read the object under its new name.
            handle.reader.close()
            handle.reader = None
        if handle.reader is None:
            if opened.info is None:
                return 0
            handle.reader = self._reader(opened)
        try:
            return handle.reader.read_into(offset, into)
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
            opened.stage_from_remote(self.staging, self.store)
        return opened.write(data, offset, handle.append)

    def flush(self, fh: int) -> None:
        handle = self._handle(fh)
        if handle.writable:
            self.committer.closed(handle.file)

    def fsync(self, fh: int) -> None:
        self.committer.fsync(self._handle(fh).file)

    def release(self, fh: int) -> None:
        with self._table_lock:
            handle = self._handles.pop(fh, None)
            if handle is None:
                return
            opened = handle.file
            opened.refs -= 1
            if handle.writable:
                opened.writers -= 1
            last = opened.refs == 0
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
        self._on_clean(opened)

    def _on_clean(self, opened: OpenFile) -> None:
        """`opened` has nothing left to upload: forget it once no handle refers to it."""
        with self._table_lock:
            if opened.refs > 0 or (opened.dirty and not opened.unlinked):
                return
            if self._files.get(opened.path) is opened:
                del self._files[opened.path]
        opened.discard_staged()

    def _changed(self) -> None:
        self.on_change()

    def pending_uploads(self) -> list[str]:
        return [item.file.path for item in self.committer.queue.pending()]

    def recover(self) -> list[str]:
        """Take up the uploads an earlier run of this mount left unfinished (before mounting)."""
        def make_file(entry: JournalEntry) -> OpenFile:
            info = ObjectInfo(key=entry.key, size=entry.size, etag="", mtime=entry.closed_at, meta=entry.meta)
            opened = OpenFile(path=entry.path, key=entry.key, attrs=attrs_from_object(info, self.defaults),
                              info=None, base_etag=entry.base_etag, meta_dirty=True)
            with self._table_lock:
                self._files[entry.path] = opened
            return opened
        return [opened.path for opened in self.committer.recover(make_file)]

    # ------------------------------------------------------------------------------------------
    # truncate, unlink, symlink

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        self._writable()
        if length < 0:
            raise InvalidArgument("negative length")
        if fh is not None:
            opened = self._handle(fh).file
            if not opened.staged:
                opened.stage_from_remote(self.staging, self.store)
            opened.truncate(length)
            return
        opened = self._open_file(path)
        if opened is not None and opened.staged:
            opened.truncate(length)
            return
        # truncate(2) on a path nobody has open: stage, truncate, upload, done.
        fh = self.open(path, os.O_WRONLY | (os.O_TRUNC if length == 0 else 0))
        try:
            self._handle(fh).file.truncate(length)
            self.flush(fh)
        finally:
            self.release(fh)

    def unlink(self, path: str) -> None:
        self._writable()
        check_path(path)
        with self._table_lock:
            opened = self._files.get(path)
            if opened is not None:
                del self._files[path]
        if opened is not None:
            with opened.lock:
                opened.unlinked = True
                existed = opened.info is not None or opened.base_etag is not None
            self.committer.forget(opened)
            if existed:
                self.store.delete(opened.key)
            if opened.refs == 0:
                opened.discard_staged()
            self.ns.forget(path, gone=True)
            return
        entry = self._entry(path)
        if entry.is_dir:
            raise IsADirectory(path)
        self.store.delete(self.keys.key(path))
        self.ns.forget(path, gone=True)

    def symlink(self, path: str, target: str, uid: int, gid: int) -> None:
        self._writable()
        self._check_new(path)
        body = target.encode("utf-8", "surrogateescape")
        if len(body) > SYMLINK_MAX:
            raise InvalidArgument("symlink target too long")
        attrs = Attrs(mode=stat.S_IFLNK | 0o777, size=len(body), uid=uid, gid=gid,
                      mtime_ns=now_ns(), ctime_ns=now_ns())
        info = self.store.put(self.keys.key(path), io.BytesIO(body), len(body), meta_from_attrs(attrs))
        self.ns.remember(path, Entry(attrs, info))

    def link(self, path: str, target: str) -> None:
        raise NotPermitted("hard links are not supported")

    def mknod(self, path: str, mode: int, uid: int, gid: int) -> None:
        if not stat.S_ISREG(mode):
            raise NotPermitted("only regular files can be created here (no devices, FIFOs or sockets)")
        self.release(self.create(path, mode, uid, gid, os.O_WRONLY | os.O_EXCL))

    # ------------------------------------------------------------------------------------------
    # attributes

    def _change_attrs(self, path: str, change) -> None:
        self._writable()
        check_path(path)
        if path == "/":
            change(self._root_attrs)
            self._root_attrs.ctime_ns = now_ns()
            return
        opened = self._open_file(path)
        if opened is not None:
            with opened.lock:
                change(opened.attrs)
                opened.attrs.ctime_ns = now_ns()
                opened.meta_dirty = True
                opened.generation += 1
                staged, idle = opened.staged, opened.writers == 0
            if not staged:  # open read-only: nothing will upload it at close, so write it now
                self.committer.upload_now(opened)
            elif idle:  # closed and waiting for its upload: the journal and the queue take the change
                self.committer.closed(opened)
            return
        entry = self._entry(path)
        attrs = entry.attrs.copy()
        change(attrs)
        attrs.ctime_ns = now_ns()
        old_meta = carried_meta(entry.info.meta) if entry.info is not None else {}
        if entry.is_dir:
            # A directory's attributes live on its marker, an empty object: writing it anew is one
            # request everywhere, where a copy onto itself fails on stores with real directories.
            info = self.store.put(self.keys.dir_key(path), io.BytesIO(b""), 0, meta_from_attrs(attrs, old_meta))
        else:
            info = self.store.set_meta(self.keys.key(path), meta_from_attrs(attrs, old_meta))
        self.ns.remember(path, Entry(attrs, info))

    def chmod(self, path: str, mode: int) -> None:
        def change(attrs: Attrs) -> None:
            attrs.mode = stat.S_IFMT(attrs.mode) | stat.S_IMODE(mode)
        self._change_attrs(path, change)

    def chown(self, path: str, uid: int, gid: int) -> None:
        def change(attrs: Attrs) -> None:
            if uid != -1:
                attrs.uid = uid
            if gid != -1:
                attrs.gid = gid
        self._change_attrs(path, change)

    def utimens(self, path: str, mtime_ns: int | None) -> None:
        """Set the modification time (atime is not kept). None: leave it (UTIME_OMIT)."""
        if mtime_ns is None:
            return

        def change(attrs: Attrs) -> None:
            attrs.mtime_ns = mtime_ns
        self._change_attrs(path, change)

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
            self._rename_dir(old, new)
        else:
            if new_attrs is not None and new_attrs.is_dir:
                raise IsADirectory(new)
            self._rename_file(old, new)

    def _move_object(self, src: str, dst: str) -> None:
        if self.store.capabilities.server_side_move:
            self.store.move(src, dst)
            return
        self.store.copy(src, dst)
        self.store.delete(src)

    def _rename_file(self, old: str, new: str) -> None:
        with self._table_lock:
            opened = self._files.pop(old, None)
            replaced = self._files.pop(new, None)
        if replaced is not None:  # a file being written or waiting for upload under the new name
            with replaced.lock:
                replaced.unlinked = True
            self.committer.forget(replaced)
            if replaced.refs == 0:
                replaced.discard_staged()
        if opened is None:
            self._move_object(self.keys.key(old), self.keys.key(new))
        else:
            # A staged file is renamed locally; its upload goes to the new name. A remote copy under
            # the old name moves along if it is current, or goes if the staged data will replace it.
            with opened.lock:
                old_key, new_key = opened.key, self.keys.key(new)
                if opened.info is not None:
                    if opened.data_dirty:
                        self.store.delete(old_key)
                        opened.info = None
                    else:
                        opened.info = self._move_and_stat(old_key, new_key)
                opened.path, opened.key = new, new_key
                opened.base_etag = opened.info.etag if opened.info else None
                opened.generation += 1
                pending = opened.dirty and opened.writers == 0
            with self._table_lock:
                self._files[new] = opened
            if pending:
                self.committer.closed(opened)  # the journal must name the new path
        self.ns.forget(old, gone=True)
        self.ns.forget(new)

    def _move_and_stat(self, src: str, dst: str):
        self._move_object(src, dst)
        return self.store.stat(dst)

    def _rename_dir(self, old: str, new: str) -> None:
        old_key, new_key = self.keys.dir_key(old), self.keys.dir_key(new)
        keys: list[str] = []
        for page in iter_list(self.store, old_key, delimiter=""):
            keys += [o.key for o in page.objects]
        for target in [new_key] + [new_key + key[len(old_key):] for key in keys]:
            # A key that would pass the limit under the new name is refused before anything is copied
            # (ENAMETOOLONG), so the tree stays whole and nothing unreachable is written.
            check_key_length(target)
        if old_key not in keys:  # an implicit directory: the new name gets a marker, so it exists even empty
            self.store.put(new_key, io.BytesIO(b""), 0, meta_from_attrs(self.getattr(old)))
        # Copy everything first and delete afterwards, so a failure leaves the source whole. Markers
        # are written anew with their metadata: stores with real directories cannot copy them.
        copied: dict[str, ObjectInfo] = {}
        for key in keys:
            target = new_key + key[len(old_key):]
            if key.endswith("/"):
                try:
                    marker_meta = dict(self.store.stat(key).meta)
                except NotFound:  # a listed folder that is not an object of its own (COS v4 virtual)
                    marker_meta = {}
                self.store.put(target, io.BytesIO(b""), 0, marker_meta)
            else:
                copied[key] = self.store.copy(key, target)
        # Children before parents, so stores with real directories can remove them as they empty.
        for key in sorted(keys, key=len, reverse=True):
            self.store.delete(key)
        if old_key not in keys:
            # A marker the recursive listing did not report (a COS v4 walk below `d/` does not list the
            # folder `d/` itself) must go too, or the old directory stays behind, empty. Idempotent.
            self.store.delete(old_key)
        with self._table_lock:
            moved = []
            for path in [p for p in self._files if is_within(p, old)]:
                opened = self._files.pop(path)
                with opened.lock:
                    opened.path = new + path[len(old):]
                    opened.key = self.keys.key(opened.path)
                    opened.generation += 1
                    # Follow the object to its copy (a copy may have another ETag: local, multipart
                    # S3), so that an open reader keeps reading and a staged copy is not taken for a
                    # conflict at upload (its base is the moved object, not the deleted original).
                    moved_info = copied.get(opened.info.key) if opened.info is not None else None
                    if moved_info is not None:
                        if opened.base_etag == opened.info.etag:
                            opened.base_etag = moved_info.etag
                        opened.info = moved_info
                self._files[opened.path] = opened
                moved.append(opened)
        for opened in moved:
            if opened.dirty and opened.writers == 0:
                self.committer.closed(opened)  # the journal must name the new path
        self.ns.forget_tree(old)
        self.ns.forget_tree(new)
        self.ns.forget(old, gone=True)

    # ------------------------------------------------------------------------------------------
    # the filesystem as a whole

    # ------------------------------------------------------------------------------------------
    # extended attributes (only with archive storage classes: see __init__)

    def _archive_entry(self, path: str) -> Entry | None:
        check_path(path)
        if path == "/" or self.archive is None:
            return None
        opened = self._open_file(path)
        if opened is not None and (opened.staged or opened.info is None):
            return None  # being written: not (yet) an object with a storage class
        entry = self._entry(path)
        return None if entry.is_dir or entry.info is None else entry

    def listxattr(self, path: str) -> list[str]:
        entry = self._archive_entry(path)
        if entry is None:
            return []
        assert self.archive is not None
        names = [XATTR_STORAGE_CLASS]
        if self.archive.is_archived(entry.info):
            names.append(XATTR_RETRIEVAL)
        return names

    def getxattr(self, path: str, name: str) -> bytes:
        entry = self._archive_entry(path)
        if entry is not None and entry.info is not None and self.archive is not None:
            if name == XATTR_STORAGE_CLASS:
                return (entry.info.storage_class or "STANDARD").encode("ascii", "replace")
            if name == XATTR_RETRIEVAL and self.archive.is_archived(entry.info):
                key = self.keys.key(path)
                _, state = self.archive.state(key)  # asked afresh: a restore finishes server-side
                return self.archive.describe_state(key, state).encode("utf-8")
        raise NoAttribute(f"{path}: no attribute {name}")

    def statfs(self) -> dict[str, int]:
        disk = shutil.disk_usage(self.staging.directory)
        block = 4096
        total = self.options.total_size or disk.total
        free = min(disk.free, total)
        if self.options.staging_size is not None:
            free = min(free, max(0, self.options.staging_size - self.staging.used_bytes()))
        return {
            "f_bsize": block, "f_frsize": block,
            "f_blocks": total // block, "f_bfree": free // block, "f_bavail": free // block,
            "f_files": 1 << 32, "f_ffree": 1 << 32, "f_favail": 1 << 32,
            "f_namemax": 255,
        }

    def close(self, timeout: float) -> list[str]:
        """Unmount: upload everything pending, waiting up to `timeout` seconds. Returns what is left
        (still staged, and in the journal for the next mount), each with its last error."""
        if self.archive is not None:
            self.archive.stopping.set()  # an open waiting for a restore gives up now
        with self._table_lock:
            files = list(self._files.values())
        for opened in files:  # open at a lazy unmount: queue them too
            if opened.dirty and not opened.unlinked:
                try:
                    self.committer.record(opened)
                except OSError as exc:
                    log.error("cannot journal %s: %s", opened.path, exc)
                self.committer.queue.schedule(opened, now=True)
        left = self.committer.drain(timeout)
        self.committer.stop()
        # Still open for writing (a lazy unmount): not queued, but staged and journaled; say so.
        still_open = [f"{f.path} (still open for writing; staged, the next mount uploads it)" for f in files
                      if f.dirty and not f.unlinked and f.writers > 0 and not self.committer.queue.is_queued(f)]
        if self.cache is not None:
            self.cache.close()  # writes the blocks still queued, so the next mount finds them
        return [f"{item.file.path} ({item.last_error or 'not finished'})" for item in left] + still_open

