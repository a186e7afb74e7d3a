"""Whose object is at a name, as an upload that the server refused needs to know: the token our uploads
carry, the uploads of this mount on the wire, and the objects they left behind at names their files
no longer have.

UPLOAD_TOKEN is user metadata naming the staged file an object's bytes came from, and which of its
versions (`<staged id>.<data generation>`; a streamed upload's is the staged id alone: its bytes were
still being written when it began). A refused conditional upload, or a HEAD that finds the name taken,
is no conflict when the object there carries our own token:
- THIS_VERSION: an earlier try of this very upload succeeded (its answer was lost, or the mount died
  before its journal entry went), and the retry must not turn our own bytes into a conflict copy;
- EARLIER_VERSION: the file changed while that one went up and the mount died before the next upload;
  this one replaces it;
- LEFT_BEHIND: the object of an upload still on the wire whose file was removed or renamed away from
  that name since. A new file of the name, refused by the server because of it, replaces it
  (`take_over`), and the upload that stored it leaves it alone when it ends. Only where the server
  enforces the condition;
- FREE: no object any more (deleted by someone else since the refusal): our version simply goes up;
- None: another writer's object, which makes a conflict copy.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Callable, Iterator

from ...errors import NotFound, StoreError
from ...store.contract import ObjectInfo, ObjectStore
from .openfiles import OpenFile

log = logging.getLogger(__name__)

UPLOAD_TOKEN = "storefs-upload"
THIS_VERSION, EARLIER_VERSION = "this version", "an earlier version"
LEFT_BEHIND = "left behind by a removed or renamed file"
FREE = "no object"
NAME_LOCKS = 64   # striped locks, by name (see Owners.delete_if_still)
# How long a directory's rename or removal waits for uploads below it that are on the wire (a small
# file's PUT takes milliseconds; a large file's may take minutes, and then what lands under the old
# name is removed from there when its upload ends, committer._done).
LANDING_WAIT = 10.0


def upload_token(staged_id: str, data_generation: int) -> str:
    """The UPLOAD_TOKEN of the bytes of `data_generation` of staged file `staged_id`."""
    return f"{staged_id}.{data_generation}"


def token_of(info: ObjectInfo) -> tuple[str, str]:
    """(staged id, version) of the UPLOAD_TOKEN `info` carries; ("", "") if none, version "" for a
    stream's."""
    stored_id, _, version = info.meta.get(UPLOAD_TOKEN, "").partition(".")
    return stored_id, version


def stored_by(info: ObjectInfo, staged_id: str | None, data_generation: int, size: int) -> str | None:
    """Which upload of staged file `staged_id` stored `info`: THIS_VERSION (the bytes of
    `data_generation`, `size` long), EARLIER_VERSION, or None: not ours."""
    stored_id, version = token_of(info)
    if not staged_id or stored_id != staged_id:
        return None
    if info.size == size and version in ("", str(data_generation)):   # "": a stream's, of no version
        return THIS_VERSION
    return EARLIER_VERSION


class Owners:
    """This mount's uploads on the wire (by staged id) and the left-behind objects that new files took
    over. A left-behind object that a new file of its name replaces is not deleted by the upload that
    stored it: the check (delete_if_still) and the replacement's claim (take_over) are made under the
    name's lock, so that neither deletes what the other just put there."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._flying: dict[str, OpenFile] = {}   # staged id -> its file, while an upload of it runs
        self._began_at: dict[str, str] = {}      # staged id -> its file's key when that upload began
        self._taken_over: set[str] = set()       # staged ids whose left-behind object was replaced
        self._paused: dict[str, int] = {}        # key prefixes of directories being renamed or removed
        self._lock = threading.Lock()            # guards the four above
        self._landed = threading.Condition(self._lock)   # an upload left the wire, or a pause ended
        self._name_locks = [threading.Lock() for _ in range(NAME_LOCKS)]

    @contextlib.contextmanager
    def flying(self, opened: OpenFile) -> Iterator[None]:
        """While an upload of `opened` runs: what it stores can be told LEFT_BEHIND."""
        staged_id = opened.staged_id
        if staged_id:
            with self._landed:
                while any(opened.key.startswith(prefix) for prefix in self._paused):
                    self._landed.wait(1.0)   # its directory is being renamed: begin under the new key
                self._flying[staged_id] = opened
                self._began_at[staged_id] = opened.key
        try:
            yield
        finally:
            if staged_id:
                with self._lock:
                    if self._flying.get(staged_id) is opened:
                        del self._flying[staged_id], self._began_at[staged_id]
                        self._landed.notify_all()
                    self._taken_over.discard(staged_id)

    @contextlib.contextmanager
    def pause(self, prefix: str, timeout: float = LANDING_WAIT) -> Iterator[bool]:
        """While a directory is renamed or removed: uploads of files below `prefix` wait to begin (a
        renamed one begins under its new key afterwards), and those already on the wire land first, at
        most `timeout` seconds; yields whether they all did. One landing under the old key afterwards
        would show there (a removed directory would seem not empty), and on stores with real
        directories leave the old directory behind: an upload whose file was removed or renamed away
        removes its object from the old name when it ends (committer._done), before it leaves the wire."""
        deadline = time.monotonic() + timeout
        with self._landed:
            self._paused[prefix] = self._paused.get(prefix, 0) + 1
            landed = True
            while any(key.startswith(prefix) for key in self._keys_on_the_wire()):
                left = deadline - time.monotonic()
                if left <= 0:
                    landed = False
                    break
                self._landed.wait(left)
        try:
            yield landed
        finally:
            with self._landed:
                left_paused = self._paused[prefix] - 1
                if left_paused:
                    self._paused[prefix] = left_paused
                else:
                    del self._paused[prefix]
                self._landed.notify_all()

    def _keys_on_the_wire(self) -> Iterator[str]:
        """The names the uploads on the wire may store under: the file's at the upload's start (it may
        have been renamed away since) and its current one. Called under the lock."""
        for staged_id, opened in self._flying.items():
            yield self._began_at[staged_id]
            yield opened.key

    def judge(self, key: str, staged_id: str | None, data_generation: int,
              size: int) -> tuple[ObjectInfo, str | None]:
        """After a refusal: the object at `key` and what it is to the upload of `data_generation` of
        staged file `staged_id` (`size` bytes): one of the verdicts of this module's docstring (for
        FREE the ObjectInfo is a placeholder)."""
        info, verdict = self._look_at(key, staged_id, data_generation, size)
        if verdict is None:
            # "Another writer's" makes a conflict copy: a second look first, so that one garbled
            # answer (seen under injected faults: a token that did not match) does not make one.
            info, verdict = self._look_at(key, staged_id, data_generation, size)
        return info, verdict

    def _look_at(self, key: str, staged_id: str | None, data_generation: int,
                 size: int) -> tuple[ObjectInfo, str | None]:
        """One stat of `key`, judged as judge() says."""
        try:
            info = self.store.stat(key)
        except NotFound:
            return ObjectInfo(key=key, size=0, etag="", mtime=0.0), FREE
        verdict = stored_by(info, staged_id, data_generation, size)
        return info, (LEFT_BEHIND if verdict is None and self._left_behind(info, key) else verdict)

    def _left_behind(self, info: ObjectInfo, key: str) -> bool:
        """Whether `info` (at `key`) was stored by an upload still running whose file has been
        removed, or renamed to another name, since."""
        stored_id = token_of(info)[0]
        with self._lock:
            flying = self._flying.get(stored_id) if stored_id else None
        return flying is not None and (flying.unlinked or flying.key != key)

    def take_over(self, left: ObjectInfo) -> None:
        """A new file of its name replaces `left` (LEFT_BEHIND): the upload that stored it keeps it."""
        with self._name_lock(left.key), self._lock:
            self._taken_over.add(token_of(left)[0])

    def delete_if_still(self, key: str, stored: ObjectInfo, staged_id: str | None,
                        delete: Callable[[str], None]) -> None:
        """delete(`key`) if it still holds the object `stored` (from staged file `staged_id`), unless a
        new file of that name took it over (take_over) or replaced it since."""
        with self._name_lock(key):
            with self._lock:
                if staged_id in self._taken_over:
                    return
            try:
                if self.store.stat(key).etag != stored.etag:
                    return
            except NotFound:
                return
            except StoreError as exc:
                # Stored while its file was removed or renamed; unchecked, it stays (never delete blind).
                log.warning("left %r in place, uploaded while its file was removed or renamed: "
                            "it could not be checked (%s)", key, exc)
                return
            delete(key)

    def _name_lock(self, key: str) -> threading.Lock:
        return self._name_locks[hash(key) % len(self._name_locks)]
