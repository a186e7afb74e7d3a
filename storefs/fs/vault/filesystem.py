"""VaultFS: the path-level filesystem over one archive vault (or every vault of a remote), read-only
but for new files (`vault_writes`: staged, changeable until their upload, then immutable archives),
with retrieval on open. It implements fs/api.py's MountedFS and never imports fusepy.

What each vault shows is one VaultView each (view.py: the tree from the cached inventory, inventory
jobs), how its archives are retrieved its Retrievals (retrievals.py: jobs, downloads); files being
written are uploads.py's, the modes and directory times a vault cannot keep localattrs.py's. VaultFS
routes mount paths to views, answers attributes, serves open archives with pread, polls inventories
in a thread (every `inventory_poll` seconds: it swaps a finished job's tree in, and picks up
inventories and jobs that `storefs vault refresh` swapped in from another process) and runs the
commands (`storefs vault refresh`, `storefs restore`, `storefs jobs`: commands.py).

Without a cached inventory the mount still comes up at once: the view adopts or starts an inventory
job, shows what it knows (its uploads), and says so in the `user.storefs.inventory` xattr of the
vault's root ("in-progress since …").

Opening an archive serves its cached bytes, else asks its view for one step of its retrieval, and
fails at once with ArchiveNotReady (EAGAIN unless `vault_errno` says otherwise) — or keeps asking for
up to `vault_wait` seconds (retrieval/poll.py). A Failed job is reported once (EIO with the server's
reason); a download whose tree hash is wrong raises TreeHashMismatch (EIO); nothing is cached and the
next open downloads the (still valid) job output again.

Multi-vault mounts (`REMOTE:`): the root lists the vaults; a vault's state is loaded (and, without a
cached inventory, an inventory job started) only when something inside it is first looked at, so
`ls` of the root costs no job.

Locking: `VaultFS._lock` guards the handle table and the view table; views and uploads lock their
own (view.py, uploads.py). None of these is held during a request, except one upload's lock during
that file's upload, and a view's start lock while it loads (first lookups wait for the tree).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ...attrs import Attrs
from ...errors import (
    AlreadyExists,
    CrossDevice,
    InvalidArgument,
    IsADirectory,
    NoAttribute,
    NotADirectory,
    NotFound,
    NotEmpty,
    NotPermitted,
    ReadOnly,
    StoreError,
)
from ...options import VaultOptions
from ...paths import check_path
from ...retrieval.poll import JobPoll
from ...vaults.base import VaultProvider
from ..sinks import BufferSink, Sink
from .commands import VaultCommands
from .datacache import open_pinned
from .names import FileNode
from .rangedread import RangedReader
from .state import VaultState, state_dir_for
from .uploads import Upload, VaultUploads, check_name
from .view import VaultView

log = logging.getLogger(__name__)

XATTR_ARCHIVE_ID = "user.storefs.archive_id"
XATTR_TREE_HASH = "user.storefs.tree_hash"
XATTR_RETRIEVAL = "user.storefs.retrieval"
XATTR_INVENTORY = "user.storefs.inventory"


@dataclasses.dataclass
@dataclasses.dataclass
class _Handle:
    fd: int                             # -1 for an archive served by pieces (`reader`)
    path: str
    upload: Upload | None = None
    writable: bool = False
    reader: RangedReader | None = None



def _ns(seconds: float) -> int:
    return round(seconds * 1_000_000_000)


# ------------------------------------------------------------------------------------------------
# The filesystem


class VaultFS(VaultCommands):
    """The path-level filesystem over vault `vault_name` of `provider` (None: every vault).
    `state_dir` holds this remote's vault state (state.state_dir_for gives the usual place);
    `clock` is the vault service's clock: job dates are compared with it. Real services and a local
    vault opened from a config run on real time (the default); tests pass their simulated clock."""

    has_xattrs = True  # user.storefs.archive_id, .tree_hash, .retrieval, .inventory
    hard_remove = True  # archives are never renamed to libfuse's hidden names
    kernel_cache_ttl: float | None = None   # libfuse's default: a vault's tree changes only on refresh

    def __init__(self, provider: VaultProvider, vault_name: str | None, options: VaultOptions,
                 state_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.provider = provider
        self.vault_name = vault_name
        self.options = options
        self.state_dir = Path(state_dir)
        self.clock = clock
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._views: dict[str, VaultView] = {}
        self._vault_names: list[str] = [vault_name] if vault_name else []
        self._handles: dict[int, _Handle] = {}
        self._uploads = VaultUploads(options)
        self._next_fh = itertools.count(1)
        self._poller: threading.Thread | None = None
        self._mounted_ns = time.time_ns()
        self._warned: set[str] = set()   # vaults whose leftover staged files were reported

    def __repr__(self) -> str:
        return f"VaultFS({self.provider.remote!r}, {self.vault_name!r})"

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the cached inventory (instant) or adopt/start an inventory job; start the poller."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.vault_name:
            self._ready(self._view(self.vault_name))
        else:
            self.reload_vaults()
            if self.options.vault_writes:  # new files a crash left staged are uploaded now, not when looked at
                with self._lock:
                    names = list(self._vault_names)
                for name in names:
                    staging = self.state_dir / name / "staging"
                    if staging.is_dir() and any(len(p.name) == 32 for p in staging.iterdir()):
                        self._ready(self._view(name))
        if self.options.inventory_poll > 0 and self._poller is None:
            self._poller = threading.Thread(target=self._poll_loop, name="vault-inventory", daemon=True)
            self._poller.start()

    def reload_vaults(self) -> None:
        if not self.vault_name:
            names = sorted(v.name for v in self.provider.list_vaults())
            with self._lock:
                self._vault_names = names

    def _poll_loop(self) -> None:
        """Every `watch` seconds, whether another process changed a vault's state (`storefs vault
        refresh` swapped an inventory in, another mount deleted an archive): a stat and a read of a
        few bytes per vault, nothing on the network. Every `inventory_poll` seconds, the pending
        inventory jobs on the service."""
        period = self.options.inventory_poll
        watch = self.options.watch if self.options.watch > 0 else period
        next_poll = time.monotonic() + period
        while not self.stopping.wait(min(watch, period)):
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + period
                self.check_inventory()
            else:
                self.watch_state()

    def watch_state(self) -> bool:
        """Reload every started vault whose state another process changed. True if a tree changed."""
        with self._lock:
            views = [v for v in self._views.values() if v.started]
        changed = False
        for view in views:
            try:
                changed = view.reload_if_changed() or changed
            except Exception:  # the watcher must survive anything (a half-written hand edit...)
                log.exception("vault %s: reading the state failed", view.name)
        return changed

    def check_inventory(self) -> bool:
        """Poll every started vault's inventory job once (what the poller does). True if a tree changed."""
        changed = False
        with self._lock:
            views = [v for v in self._views.values() if v.started]
        for view in views:
            try:
                if view.inventory is None and view.state.pending_inventory() is None and view.inventory_error:
                    view.ensure_inventory_job(adopt=True)
                changed = view.check_inventory() or changed
            except StoreError as exc:
                log.warning("vault %s: inventory poll: %s", view.name, exc)
            except Exception:  # the poller must survive anything
                log.exception("vault %s: inventory poll failed", view.name)
        return changed

    def close(self, timeout: float | None = None) -> list[str]:
        """Stop the poller, close files still open, upload every new file now (waiting up to
        `timeout` seconds). Returns what could not be uploaded, with the reason: it stays staged and
        the next mount with vault_writes uploads it. The provider stays open (the caller owns it)."""
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
        return left + self._uploads.drain(timeout)

    def pending_uploads(self) -> list[str]:
        """Mount paths of new files not uploaded yet (after close(): what stays staged for the next
        mount with vault_writes; the unmount command reports them, as for buckets)."""
        return [up.path for up in self._uploads.not_uploaded()]

    # -- routing ---------------------------------------------------------------------------------

    def _view(self, name: str) -> VaultView:
        with self._lock:
            view = self._views.get(name)
            if view is None:
                if name not in self._vault_names:
                    raise NotFound(f"no vault {name!r}")
                view = self._views[name] = self._new_view(name)
        return view

    def _new_view(self, name: str) -> VaultView:
        data_root = None
        if self.options.cache_dir is not None:
            data_root = state_dir_for(Path(self.options.cache_dir) / "vault-data", self.provider.identity) / name
        state = VaultState(self.state_dir / name, data_root)
        view = VaultView(name, self.provider.vault(name), self.options, state, self.clock, self.stopping)
        view.retrievals.cache.limit = self.options.data_cache_size
        return view

    def _route(self, path: str, *, activate: bool = True) -> tuple[VaultView | None, str]:
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
            self._ready(view)
        return view, rel.rstrip("/") or "/"

    def _ready(self, view: VaultView) -> None:
        """Load the view's tree; with vault_writes, own its staging area (once: it recovers the new
        files an earlier run left staged)."""
        view.activate()
        if self.options.vault_writes:
            self._uploads.attach(view, lambda rel: self._mount_path(view, rel))
        elif view.name not in self._warned:
            self._warned.add(view.name)
            staged = [p for p in (view.state.root / "staging").iterdir() if len(p.name) == 32]
            if staged:
                log.warning("vault %s: %d new file(s) staged by an earlier mount wait for a mount with "
                            "-o vault_writes, which uploads them", view.name, len(staged))

    def _mount_path(self, view: VaultView, rel: str) -> str:
        if self.vault_name:
            return rel
        return "/" + view.name + (rel if rel != "/" else "")

    # -- attributes ------------------------------------------------------------------------------

    def _dir_attrs(self, mtime: float, view: VaultView | None = None, rel: str = "/",
                   mtime_ns: int | None = None) -> Attrs:
        writable = self.options.vault_writes or self.options.vault_deletes  # entries come or go
        perm = (0o755 if writable else 0o555) & ~self.options.umask
        mtime_ns = mtime_ns or (_ns(mtime) if mtime else self._mounted_ns)
        if view is not None:  # a mode or mtime set here (chmod, utimens: localattrs.py)
            mode, set_mtime = self._uploads.local_attrs(view).dir_attrs(rel)
            perm = perm if mode is None else mode
            mtime_ns = mtime_ns if set_mtime is None else set_mtime
        return Attrs(mode=stat.S_IFDIR | perm, size=0, uid=self.options.uid, gid=self.options.gid,
                     mtime_ns=mtime_ns, ctime_ns=mtime_ns)

    def _file_attrs(self, node: FileNode, view: VaultView) -> Attrs:
        mode = self._uploads.local_attrs(view).file_mode(node.archive.archive_id)  # uploaded here: its mode
        return Attrs(mode=stat.S_IFREG | (0o444 & ~self.options.umask if mode is None else mode),
                     size=node.archive.size, uid=self.options.uid, gid=self.options.gid,
                     mtime_ns=_ns(node.mtime), ctime_ns=_ns(node.archive.creation_date or node.mtime))

    def getattr(self, path: str, fh: int | None = None) -> Attrs:
        if fh is not None:
            with self._lock:
                handle = self._handles.get(fh)
            if handle is not None and handle.upload is not None and handle.upload.archive is None:
                return handle.upload.attrs()
        view, rel = self._route(path, activate=False)
        if view is None:
            return self._dir_attrs(0.0)
        up = self._uploads.pending(view, rel)
        if up is not None:
            return up.attrs()
        if not view.started:  # a vault directory of a multi-vault mount not looked into yet
            return self._dir_attrs(0.0)
        found = view.lookup(rel)
        if found == "dir":
            return self._dir_attrs(view.dir_mtime(rel), view, rel)
        if isinstance(found, FileNode):
            return self._file_attrs(found, view)
        if self._uploads.is_dir(view, rel):  # made by mkdir here, or implied by new files below it
            return self._dir_attrs(0.0, view, rel, self._uploads.dir_created(view, rel))
        raise NotFound(path)

    def readdir(self, path: str) -> list[str]:
        view, rel = self._route(path)
        if view is None:
            with self._lock:
                return list(self._vault_names)
        found = view.lookup(rel)
        if isinstance(found, FileNode):
            raise NotADirectory(path)
        if found is None and not self._uploads.is_dir(view, rel):
            raise NotFound(path)
        return sorted(set(view.listdir(rel)) | self._uploads.names_in(view, rel))

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

    def _node(self, path: str) -> tuple[VaultView, str, FileNode]:
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
            up = self._uploads.pending(view, rel)
            if up is not None:  # a new file not uploaded yet: read what is staged
                try:
                    return self._add_handle(_Handle(os.open(up.staged, os.O_RDONLY), path))
                except FileNotFoundError:
                    pass  # uploaded (or unlinked) just now: the tree has the archive (or nothing)
        view, rel, node = self._node(path)
        archive, where, retrievals = node.archive, self._mount_path(view, rel), view.retrievals
        ranged = (self.options.ranges_min is not None and archive.size >= self.options.ranges_min
                  and view.vault.capabilities.supports_ranges)
        if retrievals.state.cached(archive) is None and (ranged or retrievals.ranges.has_any(archive)):
            # Served by pieces: the open succeeds, each read retrieves what it lacks (rangedread.py).
            reader = RangedReader(retrievals, archive, where, self.options.range_window if ranged else None,
                                  self._new_poll, self.options.errno)
            return self._add_handle(_Handle(-1, path, reader=reader))
        for _ in range(3):  # evicted between the look-up and the open: look again
            data = retrievals.fetch(archive, self._new_poll(), where, self.options.errno)
            fd = open_pinned(data)  # the shared lock keeps it from eviction while open (datacache.py)
            if fd is not None:
                return self._add_handle(_Handle(fd, path))
        raise StoreError(f"{path}: its cached bytes were evicted three times while being opened")

    def _new_poll(self) -> JobPoll:
        return JobPoll(self.options.poll_min, self.options.poll_max, self.options.wait, self.stopping)

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
        buffer = bytearray(size)
        return bytes(buffer[:self.read_to(fh, BufferSink(memoryview(buffer)), offset)])

    def read_to(self, fh: int, sink: Sink, offset: int) -> int:
        handle = self._handle(fh)
        if handle.reader is not None:
            return handle.reader.read_to(sink, offset)
        return sink.take_file(handle.fd, offset, sink.size)

    # -- writing (vault_writes) ------------------------------------------------------------------

    def _writes(self, path: str) -> None:
        if not self.options.vault_writes:
            raise ReadOnly(f"{path}: the vault is mounted read-only (-o vault_writes adds new files)")

    def _is_dir(self, view: VaultView, rel: str) -> bool:
        return view.lookup(rel) == "dir" or self._uploads.is_dir(view, rel)

    def _new_name(self, path: str) -> tuple[VaultView, str]:
        """The vault and vault-relative path of a new name, its parent checked: a directory."""
        check_path(path)
        parent = path.rstrip("/").rpartition("/")[0]
        if not self.vault_name and not parent:
            raise NotPermitted("nothing but vaults lives at the top of this mount")
        view, rel = self._route(path)
        if view is None or rel == "/":
            raise AlreadyExists(path)
        parent_rel = rel.rsplit("/", 1)[0] or "/"
        if not self._is_dir(view, parent_rel):
            if view.lookup(parent_rel) is not None or self._uploads.pending(view, parent_rel) is not None:
                raise NotADirectory(path)
            raise NotFound(f"{path}: no such directory")
        return view, rel

    def create(self, path: str, mode: int, uid: int, gid: int, flags: int) -> int:
        self._writes(path)
        view, rel = self._new_name(path)
        if self._uploads.pending(view, rel) is not None or view.lookup(rel) is not None:
            if flags & os.O_EXCL:
                raise AlreadyExists(path)
            raise ReadOnly(f"{path}: archives are immutable; only new files can be written")
        if self._uploads.is_dir(view, rel):
            raise IsADirectory(path)
        up = self._uploads.start(view, rel, path, mode, uid, gid)
        return self._add_handle(_Handle(os.dup(up.fd), path, up, writable=True))

    def _writable_upload(self, fh: int) -> Upload:
        handle = self._handle(fh)
        if not handle.writable or handle.upload is None:
            raise ReadOnly(f"{handle.path}: archives are read-only")
        return handle.upload

    def write(self, fh: int, data: bytes | memoryview, offset: int) -> int:
        return self._uploads.write(self._writable_upload(fh), data, offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        up = None
        if fh is not None:
            handle = self._handle(fh)
            up = handle.upload if handle.writable else None
        else:
            view, rel = self._route(path)
            if view is not None:
                up = self._uploads.pending(view, rel)
        if up is None:
            raise ReadOnly(f"{path}: archives are read-only")
        self._uploads.truncate(up, length)

    def flush(self, fh: int) -> None:
        handle = self._handle(fh)
        if handle.writable and handle.upload is not None:
            self._uploads.flush(handle.upload)

    def fsync(self, fh: int) -> None:
        handle = self._handle(fh)
        if handle.writable and handle.upload is not None and handle.upload.archive is None:
            os.fsync(handle.fd)  # durable here; the upload follows close (it cannot be redone)

    def release(self, fh: int) -> None:
        with self._lock:
            handle = self._handles.pop(fh, None)
        if handle is None:
            return
        try:
            if handle.writable and handle.upload is not None:
                self._uploads.release(handle.upload)
        finally:
            if handle.reader is not None:
                handle.reader.close()
            if handle.fd >= 0:
                os.close(handle.fd)

    # -- changes of new files not uploaded yet (and of directories, remembered here) -------------

    def _staged(self, path: str) -> tuple[VaultView | None, str, Upload | None]:
        view, rel = self._route(path)
        return view, rel, (self._uploads.pending(view, rel) if view is not None else None)

    def _dir_here(self, view: VaultView | None, rel: str) -> bool:
        """A directory whose mode and mtime this mount may set (vault_writes: they are remembered)."""
        return self.options.vault_writes and view is not None and self._is_dir(view, rel)

    def unlink(self, path: str) -> None:
        view, rel, up = self._staged(path)
        if up is not None:  # a new file not uploaded yet: dropped, nothing reaches the vault
            self._uploads.unlink(up)
            return
        # -o vault_deletes: an archive the tree shows is deleted on the service (view.delete).
        if not self.options.vault_deletes:
            raise ReadOnly(f"{path}: archive vaults are read-only (-o vault_deletes lets rm delete archives)")
        view, rel, node = self._node(path)
        view.delete(node.archive, self._mount_path(view, rel))

    def rmdir(self, path: str) -> None:
        """A directory made here (vault_writes) goes while empty. Other directories exist only as the
        paths of archives: with -o vault_deletes, one whose last archive was just deleted is already
        gone (what `rm -r` asks for last), and one that still holds files is ENOTEMPTY."""
        view, rel = self._route(path)
        if self.options.vault_writes and view is not None and view.lookup(rel) is None:
            if self._uploads.rmdir(view, rel):
                self._uploads.local_attrs(view).forget_dir(rel)
                return
        if not self.options.vault_deletes:
            self._refuse(path)
        if view is None or (rel == "/" and not self.vault_name):
            raise NotPermitted(f"{path}: vaults are deleted with `storefs vault delete`, not through the mount")
        found = view.lookup(rel)
        if isinstance(found, FileNode):
            raise NotADirectory(path)
        if found == "dir" or self._uploads.names_in(view, rel):
            raise NotEmpty(path)

    def mkdir(self, path: str, mode: int, uid: int, gid: int) -> None:
        self._writes(path)
        view, rel = self._new_name(path)
        if (view.lookup(rel) is not None or self._uploads.pending(view, rel) is not None
                or self._uploads.is_dir(view, rel)):
            raise AlreadyExists(path)
        self._uploads.mkdir(view, rel, path)
        self._uploads.local_attrs(view).set_dir(rel, mode=stat.S_IMODE(mode))  # the kernel applied the umask

    def rename(self, old: str, new: str) -> None:
        view, rel, up = self._staged(old)
        if up is None:
            self._refuse(old)
        self._writes(new)
        new_view, new_rel = self._new_name(new)
        if new_view is not view:
            raise CrossDevice(f"{old} -> {new}: archives cannot move between vaults")
        if new_rel == rel:
            return
        if view.lookup(new_rel) == "dir" or self._uploads.is_dir(view, new_rel):
            raise IsADirectory(new)
        if view.lookup(new_rel) is not None:
            raise ReadOnly(f"{new}: an archive is there; archives are immutable")
        check_name(view, new_rel, new)
        target = self._uploads.pending(view, new_rel)
        if target is not None:  # another new file: replaced, as rename(2) does
            self._uploads.unlink(target)
        self._uploads.rename(up, new_rel, new)

    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> None:
        view, rel, up = self._staged(path)
        if up is not None:
            self._uploads.set_attrs(up, mode=mode)
        elif self._dir_here(view, rel):
            self._uploads.local_attrs(view).set_dir(rel, mode=stat.S_IMODE(mode))
        else:
            self._refuse(path)

    def chown(self, path: str | None, uid: int, gid: int, fh: int | None = None) -> None:
        view, rel, up = self._staged(path)
        keep = (-1, 0xFFFFFFFF)   # "leave it", as chown(2) spells it
        if up is not None:
            self._uploads.set_attrs(up, uid=None if uid in keep else uid, gid=None if gid in keep else gid)
            return
        current = self.getattr(path)
        if uid in keep + (current.uid,) and gid in keep + (current.gid,):
            return  # no change: nothing to refuse (cp -p and duplicity chown what they copy)
        self._refuse(path)

    def utimens(self, path: str | None, mtime_ns: int | None, atime_ns: int | None = None,
                fh: int | None = None) -> None:
        """Only the mtime is kept (mt2 descriptions carry no atime)."""
        view, rel, up = self._staged(path)
        if up is not None:
            if mtime_ns is not None:
                self._uploads.set_attrs(up, mtime_ns=mtime_ns)
        elif self._dir_here(view, rel):
            if mtime_ns is not None:
                self._uploads.local_attrs(view).set_dir(rel, mtime_ns=mtime_ns)
        else:
            self._refuse(path)

    # -- refusals --------------------------------------------------------------------------------

    def _refuse(self, path: str) -> None:
        raise ReadOnly(f"{path}: archive vaults are read-only")

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
            if view is None or self._uploads.pending(view, rel) is None:
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
                return view.retrievals.status(archive).encode("utf-8")  # type: ignore[union-attr]
        raise NoAttribute(f"{path}: no attribute {name}")

    def drop_cached(self, path: str) -> None:
        """Forget the downloaded bytes of the archive at `path` (the next open retrieves again)."""
        view, _, node = self._node(path)
        view.state.drop_data(node.archive.archive_id)

