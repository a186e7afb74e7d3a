"""Times this mount changed that the server does not show: a directory's mtime and ctime when entries
are created, removed or renamed in it, and a renamed entry's ctime.

An object store keeps no directory times of its own (a marker's metadata changes only when storefs
rewrites it), and a server-side move keeps an object's last-modified time. POSIX says creating,
removing or renaming an entry updates its directory's mtime and ctime, and renaming updates the
entry's ctime. Writing a marker per created file would double the requests of a small-file copy, so
the mount that made a change shows it from here, without a request; a newer time from the server
(another writer, or a metadata rewrite) replaces it. Bounded: the least recently changed are
forgotten first (they then show the server's times again).
"""
from __future__ import annotations

import threading

import cachetools

from ...attrs import Attrs, now_ns
from ...paths import parent


class ChangeTimes:
    def __init__(self, max_entries: int = 100_000) -> None:
        self._lock = threading.Lock()
        # path -> (mtime_ns or None when only the ctime changed, ctime_ns)
        self._times: cachetools.LRUCache = cachetools.LRUCache(max_entries)

    def entries_changed(self, path: str) -> None:
        """An entry was created, removed or renamed in (or out of) the directory of `path`."""
        directory = parent(path)
        now = now_ns()
        with self._lock:
            self._times[directory] = (now, now)

    def renamed(self, old: str, new: str) -> None:
        """`old` became `new`: both directories change, and the entry's ctime."""
        now = now_ns()
        with self._lock:
            self._times.pop(old, None)
            self._times[parent(old)] = (now, now)
            self._times[parent(new)] = (now, now)
            self._times[new] = (None, now)

    def forget(self, path: str) -> None:
        """`path`'s own attributes were set explicitly (chmod, utimens…): they are the truth now."""
        with self._lock:
            self._times.pop(path, None)

    def apply(self, path: str, attrs: Attrs) -> Attrs:
        with self._lock:
            known = self._times.get(path)
        if known is None:
            return attrs
        mtime, ctime = known
        if (mtime is None or attrs.mtime_ns >= mtime) and attrs.ctime_ns >= ctime:
            with self._lock:   # the server caught up: its times are the truth again
                if self._times.get(path) == known:
                    del self._times[path]
            return attrs
        shown = attrs.copy()
        if mtime is not None and mtime > shown.mtime_ns:
            shown.mtime_ns = mtime
        shown.ctime_ns = max(shown.ctime_ns, ctime, shown.mtime_ns)
        return shown
