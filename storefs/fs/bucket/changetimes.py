"""Times this mount changed that the server does not show: a directory's mtime and ctime when entries
are created, removed or renamed in it, and a renamed entry's ctime.

An object store keeps no directory times of its own (a marker's metadata changes only when storefs
rewrites it), and a server-side move keeps an object's last-modified time. POSIX says creating,
removing or renaming an entry updates its directory's mtime and ctime, and renaming updates the
entry's ctime. Writing a marker per created file would double the requests of a small-file copy, so
the mount that made a change shows it from here at once, without a request, and `DirTimesWriter`
writes a changed directory's times to its marker later: at most once per `delay` seconds per
directory, and at unmount. A newer time from the server (another writer, or that rewrite) replaces
what is kept here. Bounded: the least recently changed are forgotten first (they then show the
server's times again).
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

import cachetools

from ...attrs import Attrs, now_ns
from ...paths import parent

log = logging.getLogger(__name__)


class ChangeTimes:
    def __init__(self, max_entries: int = 100_000) -> None:
        self._lock = threading.Lock()
        # path -> (mtime_ns or None when only the ctime changed, ctime_ns)
        self._times: cachetools.LRUCache = cachetools.LRUCache(max_entries)
        self._dirs_changed: set[str] = set()   # directories whose times are not on the server yet
        self.on_dir_changed: Callable[[], None] = lambda: None

    def entries_changed(self, path: str) -> None:
        """An entry was created, removed or renamed in (or out of) the directory of `path`."""
        directory = parent(path)
        now = now_ns()
        with self._lock:
            self._times[directory] = (now, now)
            self._dirs_changed.add(directory)
        self.on_dir_changed()

    def renamed(self, old: str, new: str) -> None:
        """`old` became `new`: both directories change, and the entry's ctime."""
        now = now_ns()
        with self._lock:
            self._times.pop(old, None)
            self._times[parent(old)] = (now, now)
            self._times[parent(new)] = (now, now)
            self._times[new] = (None, now)
            self._dirs_changed.update((parent(old), parent(new)))
        self.on_dir_changed()

    def forget(self, path: str) -> None:
        """`path`'s own attributes were set explicitly (chmod, utimens…): they are the truth now."""
        with self._lock:
            self._times.pop(path, None)

    def take_changed_dirs(self) -> dict[str, tuple[int, int]]:
        """The directories changed since the last call, with their (mtime, ctime) to write."""
        with self._lock:
            taken = {d: self._times[d] for d in self._dirs_changed if d in self._times}
            self._dirs_changed.clear()
        return taken

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


class DirTimesWriter:
    """Writes the times ChangeTimes keeps for directories to the server, in a thread of its own:
    `delay` seconds after the first change it has not written yet, and everything at `close()`.
    `write(path, mtime_ns, ctime_ns)` does the request (StoreFS: a directory with a marker gets it
    rewritten; one without has nowhere to keep times). A failure is logged; the times stay shown."""

    def __init__(self, times: ChangeTimes, write: Callable[[str, int, int], None], delay: float) -> None:
        self.times, self.write, self.delay = times, write, delay
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        times.on_dir_changed = self._changed

    def _changed(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(target=self._run, name="dir-times", daemon=True)
                    self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.wait(self.delay):   # more changes gather meanwhile; close() flushes
                return
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        for path, (mtime, ctime) in sorted(self.times.take_changed_dirs().items()):
            try:
                self.write(path, mtime, ctime)
            except Exception as exc:  # the mount keeps showing them; the next change tries again
                log.warning("cannot keep the times of directory %s on the server: %s", path, exc)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()
