"""A file changed while its upload is on the wire (a chmod, or new bytes of the same size) goes up
again, and the second upload is no conflict with the first: the object the first one stored is the
base of the second (OpenFile.uploaded). Before, the second upload was still "create only" (the file
had no remote base), the server refused it, and the refusal was taken for an earlier try of the same
upload: the chmod, or the new bytes, never reached the server while `ls -l` showed them.
On the local store (which enforces conditional writes), through the bucket filesystem, without FUSE."""
from __future__ import annotations

import os
import stat
import threading
import time

import pytest

from storefs.attrs import attrs_from_object
from storefs.errors import NotFound
from storefs.fs.bucket.staging import Staging
from storefs.mounting import bucket_fs
from storefs.options import MountOptions
from storefs.providers.local import open_provider


class HeldPut:
    """The local store whose first `put` of a file (not a directory marker) waits, once it has stored
    the object, until the test lets it answer: the window in which the file changes while its upload
    is on the wire."""

    def __init__(self, store) -> None:
        self._store = store
        self.capabilities = store.capabilities
        self.stored = threading.Event()
        self.answer = threading.Event()
        self.puts = 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def put(self, key, body, size, meta, *, condition=None):
        info = self._store.put(key, body, size, meta, condition=condition)
        if key.endswith("/"):
            return info
        self.puts += 1
        if self.puts == 1:
            self.stored.set()
            assert self.answer.wait(10), "the test never let the first upload answer"
        return info


@pytest.fixture
def store(tmp_path):
    provider = open_provider("t", {"root": str(tmp_path / "bucket"), "create_buckets": "yes"})
    provider.check("b")
    return HeldPut(provider.bucket("b"))


@pytest.fixture
def fs(store, tmp_path):
    mounted = bucket_fs(store, "", MountOptions.parse(["write_back=0.01"]), Staging(tmp_path / "staging"))
    yield mounted
    mounted.committer.stop()


def _close_new_file(fs, path: str, data: bytes) -> None:
    fh = fs.create(path, 0o755, 0, 0, os.O_WRONLY | os.O_CREAT)
    fs.write(fh, data, 0)
    fs.release(fh)


def _move_away(fs, path: str, renamed_to: str, away: str) -> None:
    """The file at `path` leaves its name: renamed to `renamed_to` ("rename") or removed ("unlink")."""
    if away == "rename":
        fs.rename(path, renamed_to)
    else:
        fs.unlink(path)


def _names(store) -> list[str]:
    return sorted(info.key for info in store.list("").objects)


def test_a_chmod_during_the_first_upload_reaches_the_server(fs, store):
    _close_new_file(fs, "/f.bin", b"x" * 1000)
    assert store.stored.wait(10)
    fs.chmod("/f.bin", 0o640)
    store.answer.set()
    assert fs.committer.drain(10) == []
    assert _names(store) == ["f.bin"]
    assert stat.S_IMODE(attrs_from_object(store.stat("f.bin"), fs.ns.defaults).mode) == 0o640


def test_new_bytes_of_the_same_size_during_the_first_upload_reach_the_server(fs, store):
    _close_new_file(fs, "/f.bin", b"1" * 1000)
    assert store.stored.wait(10)
    fh = fs.open("/f.bin", os.O_WRONLY)
    fs.write(fh, b"2" * 1000, 0)
    fs.release(fh)
    store.answer.set()
    assert fs.committer.drain(10) == []
    assert _names(store) == ["f.bin"], "the first upload's object was taken for another writer's"
    assert store.read_range("f.bin", 0, 2000) == b"2" * 1000


def test_a_mount_dying_between_the_two_uploads_replaces_its_own_earlier_version(fs, store, tmp_path):
    """The second close's journal entry was written while the first upload was on the wire, so it
    still says "a new file": the next mount's upload is refused (the name is taken), finds our own
    token of an earlier version of the same staged file there, and replaces it."""
    _close_new_file(fs, "/f.bin", b"1" * 1000)
    assert store.stored.wait(10)
    fh = fs.open("/f.bin", os.O_WRONLY)
    fs.write(fh, b"2" * 1000, 0)
    fs.release(fh)   # journaled; the first upload still holds its answer: the mount "dies" here
    again = bucket_fs(store, "", MountOptions.parse(["write_back=0.01"]), Staging(tmp_path / "staging"))
    try:
        assert again.recover() == ["/f.bin"]
        assert again.committer.drain(10) == []
        assert _names(store) == ["f.bin"], "our own earlier version was taken for another writer's"
        assert store.read_range("f.bin", 0, 2000) == b"2" * 1000
    finally:
        store.answer.set()
        again.committer.stop()


def test_a_mount_dying_after_a_chmod_during_the_upload_still_applies_it(fs, store, tmp_path):
    """Same bytes, new mode: the next mount finds this very version stored and sets its metadata."""
    _close_new_file(fs, "/f.bin", b"1" * 1000)
    assert store.stored.wait(10)
    fs.chmod("/f.bin", 0o600)   # journaled; the mount "dies" before the first upload answers
    again = bucket_fs(store, "", MountOptions.parse(["write_back=0.01"]), Staging(tmp_path / "staging"))
    try:
        assert again.recover() == ["/f.bin"]
        assert again.committer.drain(10) == []
        assert _names(store) == ["f.bin"]
        assert stat.S_IMODE(attrs_from_object(store.stat("f.bin"), fs.ns.defaults).mode) == 0o600
        assert store.read_range("f.bin", 0, 2000) == b"1" * 1000
    finally:
        store.answer.set()
        again.committer.stop()


def test_a_file_removed_during_its_first_upload_stays_removed(fs, store):
    """rm while the upload is on the wire: the object it stores is deleted once the upload ends, and
    the name stays gone (a temporary file deleted a moment after it was written must not come back)."""
    _close_new_file(fs, "/tmp.bin", b"x" * 1000)
    assert store.stored.wait(10)
    fs.unlink("/tmp.bin")
    store.answer.set()
    assert fs.committer.drain(10) == []
    assert _names(store) == []
    with pytest.raises(NotFound):
        fs.getattr("/tmp.bin")


@pytest.mark.parametrize("away", ["rename", "unlink"])
def test_a_new_file_of_the_name_replaces_the_object_of_one_moved_away_during_its_upload(fs, store, away):
    """An editor's save: the file is renamed away (or removed) while its first upload is on the wire,
    and a new file of the same name is written and goes up before that upload answers. The new file
    replaces the object the old upload left under the name (no conflict copy), and the old upload,
    when it ends, leaves the new object alone."""
    _close_new_file(fs, "/doc.txt", b"old" * 100)
    assert store.stored.wait(10)
    _move_away(fs, "/doc.txt", "/doc.txt~", away)
    _close_new_file(fs, "/doc.txt", b"new" * 200)
    fs.committer.upload_now(fs.table.get("/doc.txt"))
    assert store.read_range("doc.txt", 0, 1000) == b"new" * 200
    store.answer.set()
    assert fs.committer.drain(10) == []
    assert _names(store) == (["doc.txt", "doc.txt~"] if away == "rename" else ["doc.txt"])
    assert store.read_range("doc.txt", 0, 1000) == b"new" * 200
    if away == "rename":
        assert store.read_range("doc.txt~", 0, 1000) == b"old" * 100


@pytest.mark.parametrize("away", ["rename", "unlink"])
def test_a_directory_emptied_while_an_upload_in_it_is_on_the_wire_can_be_removed(fs, store, away):
    """`rm -r` right after a copy: a file's upload is on the wire when the file is removed (or renamed
    out), then its directory goes. The rmdir waits for that upload to land (its object is removed from
    the old name when it ends) instead of finding it there and failing ENOTEMPTY, and no old name is
    left behind."""
    fs.mkdir("/d", 0o755, 0, 0)
    _close_new_file(fs, "/d/x.bin", b"x" * 1000)
    assert store.stored.wait(10)
    _move_away(fs, "/d/x.bin", "/x.bin", away)
    outcome: list[BaseException | None] = []

    def remove() -> None:
        try:
            fs.rmdir("/d")
            outcome.append(None)
        except BaseException as exc:   # noqa: BLE001 - reported by the assertion below
            outcome.append(exc)
    remover = threading.Thread(target=remove)
    remover.start()
    remover.join(0.3)
    assert remover.is_alive(), f"rmdir did not wait for the upload on the wire: {outcome}"
    store.answer.set()
    remover.join(10)
    assert outcome == [None]
    assert fs.committer.drain(10) == []
    assert _names(store) == (["x.bin"] if away == "rename" else [])
    with pytest.raises(NotFound):
        fs.getattr("/d")


def test_a_directory_whose_file_is_still_uploading_is_not_empty_at_once(fs, store):
    """rmdir of a directory that still holds a file whose upload is on the wire: ENOTEMPTY at once, not
    after waiting for that upload (rmdir waits only for files that left the directory)."""
    from storefs.errors import NotEmpty
    fs.mkdir("/d", 0o755, 0, 0)
    _close_new_file(fs, "/d/x.bin", b"x" * 1000)
    assert store.stored.wait(10)
    started = time.monotonic()
    with pytest.raises(NotEmpty):
        fs.rmdir("/d")
    assert time.monotonic() - started < 2
    store.answer.set()
    assert fs.committer.drain(10) == []
    assert store.read_range("d/x.bin", 0, 1000) == b"x" * 1000   # uploaded, and d stays
