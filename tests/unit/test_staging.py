"""The staging area's spare files: empty staged files made ahead, with one directory fsync for a batch,
so that journaling a closed file costs one fsync (its data and entry) and no directory fsync."""
from __future__ import annotations

import logging
import os

from storefs.fs.bucket.journal import XATTR, Journal, JournalEntry
from storefs.fs.bucket.staging import SPARE_BATCH, SPARE_LOW, Staging


def _journal_one(journal: Journal, staging: Staging, data: bytes) -> str:
    path, fd = staging.new_file()
    os.write(fd, data)
    entry_id = os.path.basename(path)
    journal.write(JournalEntry(id=entry_id, path=f"/{entry_id}", key=entry_id, meta={}, base_etag=None,
                               size=len(data)), data_fd=fd)
    os.close(fd)
    return entry_id


def test_journaling_new_files_costs_one_fsync_each_and_one_directory_fsync_per_batch(tmp_path, fsync_counts):
    staging = Staging(tmp_path / "staging")
    journal = Journal(staging.directory, named=staging.named)
    counts = fsync_counts
    files = 2 * SPARE_BATCH + 1
    ids = [_journal_one(journal, staging, b"x%d" % i) for i in range(files)]
    staging.close()   # waits for a batch still being made in the background
    assert counts == {"dir": 3, "file": files}   # three batches of spares; no directory fsync per file
    loaded = {entry.id for entry in Journal(staging.directory).load()}
    assert loaded == set(ids)


def test_a_journal_without_the_staging_areas_names_fsyncs_the_directory_once_per_new_entry(tmp_path, fsync_counts):
    # What the vault's staging (and any journal not told which names are durable) still does.
    staging = Staging(tmp_path / "staging")
    journal = Journal(staging.directory)
    counts = fsync_counts
    _journal_one(journal, staging, b"a")
    _journal_one(journal, staging, b"b")
    assert counts == {"dir": 1 + 2, "file": 2}   # the batch of spares, then one per entry


def test_the_next_batch_of_spares_is_made_in_the_background_before_they_run_out(tmp_path, monkeypatch):
    import threading
    made_by: list[str] = []
    real = Staging._make_spares

    def recording(self, count):
        made_by.append(threading.current_thread().name)
        return real(self, count)
    monkeypatch.setattr(Staging, "_make_spares", recording)
    staging = Staging(tmp_path / "staging")
    first = [staging.new_file() for _ in range(SPARE_BATCH - SPARE_LOW + 1)]
    assert made_by[0] == threading.current_thread().name     # none yet: the first create makes a batch
    staging._refill.join()                                    # started when fewer than SPARE_LOW were left
    assert made_by[1:] == ["spares"]
    more = [staging.new_file() for _ in range(SPARE_LOW + SPARE_BATCH - SPARE_LOW)]
    staging.close()
    # The creates never waited for a batch after the first; the last pops started one more refill.
    assert made_by[0] != "spares" and set(made_by[1:]) == {"spares"} and len(made_by) == 3
    for _path, fd in first + more:
        os.close(fd)
    assert len(list(staging.directory.iterdir())) == len(first) + len(more)


def test_spares_are_removed_at_close_and_used_ones_are_kept(tmp_path):
    staging = Staging(tmp_path / "staging")
    used_path, fd = staging.new_file()
    os.close(fd)
    assert len(list(staging.directory.iterdir())) == SPARE_BATCH
    staging.close()
    assert [p.name for p in staging.directory.iterdir()] == [os.path.basename(used_path)]
    assert staging.named == {os.path.basename(used_path)}


def test_forgetting_a_staged_file_forgets_its_name(tmp_path):
    staging = Staging(tmp_path / "staging")
    path, fd = staging.new_file()
    os.close(fd)
    staging.forget(path)
    assert os.path.basename(path) not in staging.named


def test_spares_left_by_a_crash_are_removed_quietly_by_the_next_mount(tmp_path, caplog):
    from storefs.fs.bucket.committer import CommitSettings, Committer
    from storefs.attrs import Defaults
    from storefs.fs.bucket.namespace import CacheSettings, Namespace
    from storefs.paths import KeyMap
    from storefs.fs.bucket.openfiles import OpenFiles
    from storefs.fs.bucket.uploader import UploadSettings
    from storefs.providers.local import open_provider

    directory = tmp_path / "staging"
    crashed = Staging(directory)
    path, fd = crashed.new_file()     # written but never closed: a warning, as before
    os.write(fd, b"half")
    os.close(fd)
    assert len(list(directory.iterdir())) == SPARE_BATCH   # the rest are spares, "killed" with the mount

    provider = open_provider("t", {"root": str(tmp_path / "bucket"), "create_buckets": "yes"})
    provider.check("b")
    store = provider.bucket("b")
    staging = Staging(directory)
    ns = Namespace(store, KeyMap(""), Defaults(uid=0, gid=0), CacheSettings())
    committer = Committer(store, ns, staging, OpenFiles(), UploadSettings(), CommitSettings())
    try:
        with caplog.at_level(logging.DEBUG, logger="storefs.fs.bucket.committer"):
            assert committer.recover(lambda entry: None) == []
    finally:
        committer.stop()
    assert list(directory.iterdir()) == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "never closed" in r.getMessage()]
    assert len(warnings) == 1 and os.path.basename(path) in warnings[0].getMessage()
    assert not any(XATTR in os.listxattr(p) for p in directory.iterdir())
