"""The write-back journal: entries in the data file's extended attribute, sidecar files where the
staging filesystem has none (or for entries too big for one), and loading whatever a crash left."""
from __future__ import annotations

import errno
import os

from storefs.fs.bucket import journal as journal_module
from storefs.fs.bucket.journal import XATTR, Journal, JournalEntry


def _staged(directory, entry_id: str, data: bytes = b"data") -> int:
    fd = os.open(directory / entry_id, os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, data)
    return fd


def _entry(entry_id: str, **kw) -> JournalEntry:
    return JournalEntry(id=entry_id, path=f"/{entry_id[:4]}", key=entry_id[:4], meta={"mode": "33188"},
                        base_etag=None, size=4, **kw)


ID1, ID2 = "a" * 32, "b" * 32


def test_entries_live_in_the_data_files_xattr_and_survive_a_reload(tmp_path):
    journal = Journal(tmp_path)
    fd = _staged(tmp_path, ID1)
    journal.write(_entry(ID1, closed_at=2.0), data_fd=fd)
    os.close(fd)
    assert list(tmp_path.glob("*.json")) == []          # no second file per staged file
    assert b'"key": "aaaa"' in os.getxattr(tmp_path / ID1, XATTR)
    fd = _staged(tmp_path, ID2)
    journal.write(_entry(ID2, closed_at=1.0), data_fd=fd)
    os.close(fd)
    _staged(tmp_path, "c" * 32)                          # staged but never closed: no entry
    loaded = Journal(tmp_path).load()
    assert [e.id for e in loaded] == [ID2, ID1]          # oldest close first
    journal.remove(ID1)
    assert [e.id for e in Journal(tmp_path).load()] == [ID2]


def test_without_xattrs_entries_are_sidecars(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")
    monkeypatch.setattr(journal_module.os, "setxattr", refuse)
    journal = Journal(tmp_path)
    fd = _staged(tmp_path, ID1)
    journal.write(_entry(ID1), data_fd=fd)
    os.close(fd)
    assert (tmp_path / f"{ID1}.json").is_file()
    assert [e.id for e in Journal(tmp_path).load()] == [ID1]
    journal.remove(ID1)
    assert not (tmp_path / f"{ID1}.json").exists()
    assert Journal(tmp_path).load() == []


def test_an_entry_too_big_for_an_xattr_becomes_a_sidecar_and_back(tmp_path):
    journal = Journal(tmp_path)
    fd = _staged(tmp_path, ID1)
    journal.write(_entry(ID1, closed_at=1.0), data_fd=fd)
    big = _entry(ID1, closed_at=2.0)
    big.meta = {f"k{i}": "v" * 200 for i in range(400)}   # ~90 KB: over what ext4 keeps in an xattr
    journal.write(big, data_fd=fd)
    assert (tmp_path / f"{ID1}.json").is_file()
    (loaded,) = Journal(tmp_path).load()   # the later of the two forms
    assert loaded.closed_at == 2.0 and len(loaded.meta) == 400
    journal.write(_entry(ID1, closed_at=3.0, attempts=1), data_fd=fd)   # small again: back in the xattr
    os.close(fd)
    assert not (tmp_path / f"{ID1}.json").exists()
    (loaded,) = Journal(tmp_path).load()
    assert loaded.attempts == 1


def test_a_sidecar_whose_data_is_gone_is_dropped_and_garbage_is_kept_for_inspection(tmp_path):
    (tmp_path / f"{ID1}.json").write_text(_entry(ID1).to_json())   # no data file
    fd = _staged(tmp_path, ID2)
    os.setxattr(fd, XATTR, b"{not json")
    os.close(fd)
    assert Journal(tmp_path).load() == []
    assert not (tmp_path / f"{ID1}.json").exists()
    assert os.getxattr(tmp_path / ID2, XATTR) == b"{not json"


def test_an_update_without_data_is_a_sidecar_and_removal_clears_both(tmp_path):
    journal = Journal(tmp_path)
    fd = _staged(tmp_path, ID1)
    journal.write(_entry(ID1, closed_at=1.0), data_fd=fd)
    os.close(fd)
    # Mid-upload: the multipart upload id, recorded without flushing the (maybe huge) staged data.
    journal.write(_entry(ID1, closed_at=2.0, upload_id="up-1"))
    assert (tmp_path / f"{ID1}.json").is_file() and os.getxattr(tmp_path / ID1, XATTR)
    (loaded,) = Journal(tmp_path).load()
    assert loaded.upload_id == "up-1"
    journal.remove(ID1)
    assert Journal(tmp_path).load() == []
    assert not (tmp_path / f"{ID1}.json").exists()


def _journaled(directory, entry_id: str) -> tuple[Journal, int]:
    """A journal in `directory` with one closed file's entry; its data file's descriptor, open."""
    journal = Journal(directory)
    fd = _staged(directory, entry_id)
    journal.write(_entry(entry_id), data_fd=fd)
    return journal, fd


def test_a_finished_uploads_removal_costs_no_fsync_until_settled(tmp_path, fsync_counts):
    journal = Journal(tmp_path)
    ids = ["%032d" % i for i in range(4)]
    for entry_id in ids:
        fd = _staged(tmp_path, entry_id)
        journal.write(_entry(entry_id), data_fd=fd)
        os.close(fd)
    counts = fsync_counts
    counts.update(dir=0, file=0)
    for entry_id in ids:
        journal.remove(entry_id, settle_later=True)
    assert counts == {"dir": 0, "file": 0}
    assert Journal(tmp_path).load() == []                 # gone at once for this machine's view
    for entry_id in ids[:3]:                              # uploaded and unused: the data files go
        os.unlink(tmp_path / entry_id)
    journal.settle()
    # One directory fsync for the three unlinked, one fsync for the data file still there.
    assert counts == {"dir": 1, "file": 1}
    journal.settle()
    journal.settle_due(idle=True)
    assert counts == {"dir": 1, "file": 1}                # nothing left to settle


def test_settle_due_waits_for_the_interval_or_an_idle_queue(tmp_path, monkeypatch, fsync_counts):
    journal, fd = _journaled(tmp_path, ID1)
    counts = fsync_counts
    counts.update(dir=0, file=0)
    journal.remove(ID1, fd, settle_later=True)
    monkeypatch.setattr(journal_module, "SETTLE_AFTER", 3600.0)
    journal.settle_due()
    assert counts["file"] == 0
    journal.settle_due(idle=True)
    assert counts["file"] == 1
    journal.write(_entry(ID1), data_fd=fd)                # closed again, uploaded again
    journal.remove(ID1, fd, settle_later=True)
    monkeypatch.setattr(journal_module, "SETTLE_AFTER", 0.0)
    journal.settle_due()
    assert counts["file"] == 3                            # the write's fsync, then the settle's
    os.close(fd)


def test_a_durable_removal_settles_an_earlier_lazy_one_of_the_same_file(tmp_path, fsync_counts):
    journal, fd = _journaled(tmp_path, ID1)
    counts = fsync_counts
    counts.update(dir=0, file=0)
    journal.remove(ID1, fd, settle_later=True)
    journal.remove(ID1, fd)        # the file is unlinked by the user now: this one must be durable
    assert counts["file"] == 1
    journal.remove(ID2)            # never journaled (a file uploaded at close): nothing to fsync
    assert counts["file"] == 1
    os.close(fd)


def test_a_failed_settle_keeps_the_removals_for_the_next_one(tmp_path, monkeypatch, caplog):
    journal, fd = _journaled(tmp_path, ID1)
    journal.remove(ID1, fd, settle_later=True)
    real = os.fsync

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fsync", failing)
    journal.settle_due(idle=True)                 # an upload thread's settle: logged, not raised
    assert "cannot make" in caplog.text and journal._unsettled == {ID1}
    monkeypatch.setattr(os, "fsync", real)
    journal.settle()
    assert journal._unsettled == set()
    os.close(fd)
