"""Attribute changes (chmod, chown, utimens) in a bucket: where they are kept and when they go up.

The attributes of a file live in its object's metadata, a directory's on its marker object, the mount
root's nowhere (they last this session). A file that is open takes the change into its staged state
and its upload; any other is changed on the server at once.
"""
from __future__ import annotations

import io
import stat
from typing import Callable

from ...attrs import Attrs, carried_meta, implicit_dir_attrs, meta_from_attrs, now_ns
from ...paths import KeyMap
from ...store.contract import ObjectStore
from .changetimes import ChangeTimes
from .committer import Committer
from .namespace import Entry, Namespace
from .openfiles import OpenFile, OpenFiles

Change = Callable[[Attrs], None]


def set_mode(mode: int) -> Change:
    def change(attrs: Attrs) -> None:
        attrs.mode = stat.S_IFMT(attrs.mode) | stat.S_IMODE(mode)
    return change


def set_owner(uid: int, gid: int) -> Change:
    """-1 leaves that id as it is (chown(2))."""
    def change(attrs: Attrs) -> None:
        if uid != -1:
            attrs.uid = uid
        if gid != -1:
            attrs.gid = gid
    return change


def set_times(atime_ns: int | None, mtime_ns: int | None) -> Change:
    """utimensat(2): None leaves that time as it is (UTIME_OMIT)."""
    def change(attrs: Attrs) -> None:
        if mtime_ns is not None:
            attrs.mtime_ns = mtime_ns
        if atime_ns is not None:
            attrs.atime_ns = atime_ns
    return change


class AttrChanges:
    def __init__(self, store: ObjectStore, keys: KeyMap, ns: Namespace, table: OpenFiles,
                 committer: Committer, times: ChangeTimes) -> None:
        self.store, self.keys, self.ns, self.table, self.committer = store, keys, ns, table, committer
        self.times = times
        # The mount root has no object to keep attributes in; chmod/utimens on it last this session.
        self.root = implicit_dir_attrs(ns.defaults, now_ns())

    def apply(self, path: str, change: Change) -> None:
        """Change the attributes of `path` (checked, on a writable mount)."""
        self.times.forget(path)
        if path == "/":
            change(self.root)
            self.root.ctime_ns = max(now_ns(), self.root.ctime_ns)
            return
        opened = self.table.get(path)
        if opened is not None:
            self.apply_open(opened, change)
            return
        entry = self.ns.lookup(path)
        attrs = entry.attrs.copy()
        change(attrs)
        attrs.ctime_ns = max(now_ns(), attrs.ctime_ns)
        old_meta = carried_meta(entry.info.meta) if entry.info is not None else {}
        if entry.is_dir:
            # A directory's attributes live on its marker, an empty object: writing it anew is one
            # request everywhere, where a copy onto itself fails on stores with real directories.
            info = self.store.put(self.keys.dir_key(path), io.BytesIO(b""), 0, meta_from_attrs(attrs, old_meta))
        else:
            info = self.store.set_meta(self.keys.key(path), meta_from_attrs(attrs, old_meta))
        self.ns.remember(path, Entry(attrs, info))

    def apply_open(self, opened: OpenFile, change: Change) -> None:
        """Change the attributes of an open file (by path or by descriptor)."""
        staged, idle = opened.change_attrs(change)
        if opened.unlinked:   # nothing of it goes to the server any more
            return
        if not staged:  # open read-only: nothing will upload it at close, so write it now
            self.committer.upload_now(opened)
        elif idle:  # closed and waiting for its upload: the journal and the queue take the change
            self.committer.closed(opened)
