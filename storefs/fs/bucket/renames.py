"""Renames in a bucket: a file (staged or not, replacing another) or a directory with everything below
it. Objects are moved server-side where the store can (its features record), else copied and deleted;
open files follow their objects to the new names. The checks (what may be renamed onto what) are
the filesystem's; this module moves.
"""
from __future__ import annotations

import io
import logging
import threading

from ...attrs import Attrs, meta_from_attrs
from ...errors import NotFound
from ...paths import KeyMap, check_key_length, is_within
from ...store.contract import ObjectInfo, ObjectStore, iter_list
from .committer import Committer
from .namespace import Namespace
from .openfiles import OpenFile, OpenFiles

log = logging.getLogger(__name__)


class Renames:
    def __init__(self, store: ObjectStore, keys: KeyMap, ns: Namespace, table: OpenFiles,
                 committer: Committer, markers: threading.RLock) -> None:
        """`markers`: the lock under which directory markers go (StoreFS._markers)."""
        self.store, self.keys, self.ns, self.table, self.committer = store, keys, ns, table, committer
        self.markers = markers

    def _move_object(self, src: str, dst: str) -> None:
        # Every move or delete of an object settles the journal first: a replayed upload must not
        # bring the old name back after a machine crash (journal.py, "unsettled").
        self.committer.settle()
        if self.store.capabilities.server_side_move:
            self.store.move(src, dst)
            return
        self.store.copy(src, dst)
        self.store.delete(src)

    def move_file(self, old: str, new: str) -> None:
        """Rename a file (nothing is at `new`, or a file that it replaces)."""
        # No waiting for an upload of the file on the wire (as move_dir does): an editor's save renames
        # a file away while its upload may be slow; what lands under the old name goes when it ends.
        with self.table.lock:
            opened = self.table.by_path.pop(old, None)
            replaced = self.table.by_path.pop(new, None)
        if replaced is not None:  # a file being written or waiting for upload under the new name
            replaced.mark_unlinked()
            self.committer.forget(replaced)
            if replaced.refs == 0:
                replaced.discard_staged()
        if opened is None:
            self._move_object(self.keys.key(old), self.keys.key(new))
        else:
            replacing = self._etag_at(new, replaced)
            # A staged file is renamed locally; its upload goes to the new name. A remote copy under
            # the old name moves along if it is current, or goes if the staged data will replace it.
            with opened.lock:
                old_key, new_key = opened.key, self.keys.key(new)
                if opened.info is not None:
                    if opened.data_dirty:
                        self.committer.settle()
                        self.store.delete(old_key)
                        opened.set_remote(None)
                    else:
                        self._move_object(old_key, new_key)
                        opened.set_remote(self.store.stat(new_key))
                else:
                    opened.set_remote(None)
                if opened.data_dirty:
                    # Its upload replaces the object it was renamed over (write a temp file, rename it
                    # over the old one): that object's version is the one it may replace (committer.py).
                    opened.base_etag = replacing
                opened.moved(new, new_key)
                pending = opened.dirty and opened.writers == 0
            with self.table.lock:
                self.table.by_path[new] = opened
            if pending:
                self.committer.closed(opened)  # the journal must name the new path
        self.ns.forget(old, gone=True)
        self.ns.forget(new)

    def _etag_at(self, path: str, replaced: OpenFile | None) -> str | None:
        """The ETag of the remote object a rename to `path` replaces (None: there is none)."""
        if replaced is not None:
            return replaced.base_etag
        try:
            info = self.ns.lookup(path).info   # just looked up by the rename: from the cache
        except NotFound:
            return None
        return info.etag if info is not None and not info.is_dir_marker else None

    def move_dir(self, old: str, new: str, old_attrs: Attrs) -> None:
        """Rename a directory with everything below it (`new` is free, or an empty directory gone)."""
        old_key = self.keys.dir_key(old)
        # Uploads of files below it wait to begin until it is renamed, and those on the wire land first
        # (owners.pause): one landing under the old key after the listing below would show the old
        # directory again, for good on stores with real directories.
        with self.committer.owners.pause(old_key) as landed:
            if not landed:
                log.info("renaming %s while an upload in it is still on the wire: it lands under the old "
                         "name and is removed from there when it ends", old)
            self._move_dir(old, new, old_attrs)

    def _move_dir(self, old: str, new: str, old_attrs: Attrs) -> None:
        old_key, new_key = self.keys.dir_key(old), self.keys.dir_key(new)
        keys: list[str] = []
        for page in iter_list(self.store, old_key, delimiter=""):
            keys += [o.key for o in page.objects]
        for target in [new_key] + [new_key + key[len(old_key):] for key in keys]:
            # A key that would pass the limit under the new name is refused before anything is copied
            # (ENAMETOOLONG), so the tree stays whole and nothing unreachable is written.
            check_key_length(target)
        self.committer.settle()
        if old_key not in keys:  # an implicit directory: the new name gets a marker, so it exists even empty
            self.store.put(new_key, io.BytesIO(b""), 0, meta_from_attrs(old_attrs))
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
        # Children before parents, so stores with real directories can remove them as they empty: the
        # files, then the markers (deepest first) with the old names forgotten, under the markers' lock:
        # a directory-times write that looked one up just before must not put it back (StoreFS).
        for key in sorted((key for key in keys if not key.endswith("/")), key=len, reverse=True):
            self.store.delete(key)
        with self.markers:
            for key in sorted((key for key in keys if key.endswith("/")), key=len, reverse=True):
                self.store.delete(key)
            if old_key not in keys:
                # A marker the recursive listing did not report (a COS v4 walk below `d/` does not list
                # the folder `d/` itself) must go too, or the old directory stays behind, empty. Idempotent.
                self.store.delete(old_key)
            self.ns.forget_tree(old)
            self.ns.forget(old, gone=True)
        with self.table.lock:
            moved = []
            for path in [p for p in self.table.by_path if is_within(p, old)]:
                opened = self.table.by_path.pop(path)
                with opened.lock:
                    moved_to = new + path[len(old):]
                    opened.moved(moved_to, self.keys.key(moved_to))
                    copy = copied.get(opened.info.key) if opened.info is not None else None
                    if copy is not None:
                        opened.follow_copy(copy)
                self.table.by_path[opened.path] = opened
                moved.append(opened)
        for opened in moved:
            if opened.dirty and opened.writers == 0:
                self.committer.closed(opened)  # the journal must name the new path
        self.ns.forget_tree(new)
        self.ns.forget(new)   # its parent's listing is listed again, with the new directory in it
