"""The journal entries of finished uploads are removed without an fsync each (journal.py): such a
removal is made durable before the mount deletes or renames anything remotely, and an entry a machine
crash brings back never uploads old content over a newer close of the same name."""
from __future__ import annotations

import os
import threading

import pytest

from storefs.errors import NotFound
from storefs.fs.bucket.journal import Journal, JournalEntry
from storefs.fs.bucket.staging import Staging
from storefs.mounting import bucket_fs
from storefs.options import MountOptions
from storefs.providers.local import open_provider


class Watching:
    """The local store; records, at each remote delete or copy, the removals not yet durable."""

    def __init__(self, store) -> None:
        self._store = store
        self.capabilities = store.capabilities
        self.journal: Journal | None = None
        self.unsettled_at: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._store, name)

    def _note(self, what: str) -> None:
        with self._lock:
            self.unsettled_at.append((what, len(self.journal._unsettled)))

    def delete(self, key):
        self._note(f"delete {key}")
        return self._store.delete(key)

    def copy(self, src, dst, *args, **kwargs):
        self._note(f"copy {src}")
        return self._store.copy(src, dst, *args, **kwargs)


@pytest.fixture
def mounted(tmp_path):
    provider = open_provider("t", {"root": str(tmp_path / "bucket"), "create_buckets": "yes"})
    provider.check("b")
    store = Watching(provider.bucket("b"))
    fs = bucket_fs(store, "", MountOptions.parse(["write_back=1"]), Staging(tmp_path / "staging"))
    store.journal = fs.committer.journal
    yield fs, store
    fs.committer.stop()


def _create(fs, path: str, data: bytes) -> None:
    fh = fs.create(path, 0o644, 0, 0, os.O_WRONLY | os.O_CREAT)
    fs.write(fh, data, 0)
    fs.flush(fh)
    fs.release(fh)


def _uploaded(fs, count: int) -> None:
    assert fs.committer.drain(30) == []
    assert fs.committer.queue.count() == 0


def test_uploads_leave_removals_to_settle_and_unlink_or_rename_settles_them_first(mounted, monkeypatch):
    fs, store = mounted
    from storefs.fs.bucket import journal as journal_module
    monkeypatch.setattr(journal_module, "SETTLE_AFTER", 3600.0)
    journal = fs.committer.journal
    real_settle_due = journal.settle_due
    monkeypatch.setattr(journal, "settle_due", lambda idle=False: None)   # only the barriers settle here
    for i in range(6):
        _create(fs, f"/f{i}", b"x" * 100)
    _uploaded(fs, 6)
    assert len(journal._unsettled) == 6              # uploaded; their removals not fsynced yet
    # What deletes or moves no object settles nothing (`rm -f` of a name that is not there; rsync
    # renames its temporary file before it is uploaded).
    with pytest.raises(NotFound):
        fs.unlink("/new")
    fh = fs.create("/.t.XXXXXX", 0o644, 0, 0, os.O_WRONLY | os.O_CREAT)
    fs.write(fh, b"t", 0)
    fs.release(fh)
    fs.rename("/.t.XXXXXX", "/t")
    assert len(journal._unsettled) == 6
    fs.unlink("/f0")
    fs.rename("/f1", "/g1")
    assert store.unsettled_at and all(n == 0 for _what, n in store.unsettled_at), store.unsettled_at
    monkeypatch.setattr(journal, "settle_due", real_settle_due)
    _create(fs, "/f6", b"y")
    _uploaded(fs, 1)
    assert journal._unsettled == set()               # the queue emptied: settled at once


def test_an_entry_brought_back_by_a_crash_never_uploads_over_a_newer_close(tmp_path):
    """Two entries for one name (the older one's removal was not durable at a machine crash): the
    next mount uploads only the newer one and drops the older one's data."""
    provider = open_provider("t", {"root": str(tmp_path / "bucket"), "create_buckets": "yes"})
    provider.check("b")
    staging_dir = tmp_path / "staging"
    staging = Staging(staging_dir)
    journal = Journal(staging_dir, named=staging.named)
    ids = []
    for closed_at, data in ((100.0, b"old"), (200.0, b"new")):
        path, fd = staging.new_file()
        os.write(fd, data)
        entry_id = os.path.basename(path)
        journal.write(JournalEntry(id=entry_id, path="/a", key="a", meta={}, base_etag=None, size=len(data),
                                   closed_at=closed_at), data_fd=fd)
        os.close(fd)
        ids.append(entry_id)
    staging.close()
    fs = bucket_fs(provider.bucket("b"), "", MountOptions.parse(["write_back=0"]), Staging(staging_dir))
    try:
        assert fs.recover() == ["/a"]
        assert fs.committer.drain(30) == []
    finally:
        fs.committer.stop()
    assert provider.bucket("b").read_range("a", 0, 3) == b"new"
    assert not (staging_dir / ids[0]).exists()
