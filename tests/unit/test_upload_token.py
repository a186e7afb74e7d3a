"""An upload that an earlier try already stored is no conflict (owners.UPLOAD_TOKEN): a conditional
PUT whose answer was lost is refused when it is sent again (the object now exists), and a mount that
died after an upload but before its journal entry went finds the name taken at the next mount. Both
must end with the file under its name and no conflict copy; a real other writer still gets one.
On the local store (which enforces conditional writes), through the bucket filesystem, without FUSE."""
from __future__ import annotations

import io
import os

import pytest

from storefs.errors import PreconditionFailed
from storefs.fs.bucket.staging import Staging
from storefs.mounting import bucket_fs
from storefs.options import MountOptions
from storefs.providers.local import open_provider


class AnswerLost:
    """The local store whose next `put` stores the object, loses the answer, and is refused when the
    wire layer sends it again (what a 412 after a retried PUT looks like to the committer); or, with
    `refuse_next`, is refused without storing anything (an object that was there and is gone)."""

    def __init__(self, store) -> None:
        self._store = store
        self.capabilities = store.capabilities
        self.lose_next = False
        self.refuse_next = False

    def __getattr__(self, name):
        return getattr(self._store, name)

    def put(self, key, body, size, meta, *, condition=None):
        if self.refuse_next:   # another writer's object was there, and is gone again by the HEAD
            self.refuse_next = False
            raise PreconditionFailed(f"put {key!r}: refused (test)")
        if not self.lose_next:
            return self._store.put(key, body, size, meta, condition=condition)
        self.lose_next = False
        self._store.put(key, body, size, meta, condition=condition)
        return self._store.put(key, io.BytesIO(b""), 0, meta, condition=condition)   # refused


@pytest.fixture
def store(tmp_path):
    provider = open_provider("t", {"root": str(tmp_path / "bucket"), "create_buckets": "yes"})
    provider.check("b")
    return AnswerLost(provider.bucket("b"))


def _fs(store, staging):
    return bucket_fs(store, "", MountOptions.parse(["write_back=0"]), Staging(staging))


def _write(fs, path: str, data: bytes) -> None:
    fh = fs.create(path, 0o644, 0, 0, os.O_WRONLY | os.O_CREAT)
    fs.write(fh, data, 0)
    fs.flush(fh)   # write_back=0: uploaded here
    fs.release(fh)


def _names(store) -> list[str]:
    return sorted(info.key for info in store.list("").objects)


@pytest.mark.parametrize("fault", ["lose_next", "refuse_next"])
def test_a_refusal_that_leaves_our_version_or_no_object_is_no_conflict(store, tmp_path, fault):
    """lose_next: a retry refused because the first try stored it. refuse_next: refused (the name
    was taken), but by the time we look the object is gone (deleted by its writer): our version simply
    goes up under the name, as the HEAD check would have let it. Neither makes a conflict copy."""
    fs = _fs(store, tmp_path / "staging")
    try:
        setattr(store, fault, True)
        _write(fs, "/new.txt", b"mine")
        assert _names(store) == ["new.txt"] and fs.committer.conflicts == []
        assert store.read_range("new.txt", 0, 100) == b"mine"
    finally:
        fs.committer.stop()


def test_another_writers_object_still_makes_a_conflict_copy(store, tmp_path):
    fs = _fs(store, tmp_path / "staging")
    try:
        fh = fs.create("/new.txt", 0o644, 0, 0, os.O_WRONLY | os.O_CREAT)
        fs.write(fh, b"mine", 0)
        store.put("new.txt", io.BytesIO(b"theirs"), 6, {"storefs-upload": "someone else's"})
        fs.flush(fh)
        fs.release(fh)
        names = _names(store)
        assert names[0] == "new.txt" and names[1].startswith("new.txt.storefs-conflict-") and len(names) == 2
        assert store.read_range("new.txt", 0, 100) == b"theirs"
        assert store.read_range(names[1], 0, 100) == b"mine"
    finally:
        fs.committer.stop()
