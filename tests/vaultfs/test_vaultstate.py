"""The on-disk vault state: atomic records, damaged files ignored, locks between threads."""
from __future__ import annotations

import threading
import time

from storefs.vaults.base import ArchiveInfo
from storefs.fs.vault.state import (
    Inventory,
    JobRecord,
    PendingInventory,
    UploadRecord,
    VaultState,
    archive_key,
    state_dir_for,
)

ARCHIVE = ArchiveInfo("A" * 138, "mt2 x", 5, 1000.0, "ab" * 32)


def test_records_round_trip(tmp_path):
    state = VaultState(tmp_path / "v")
    assert state.load_inventory() is None and state.pending_inventory() is None
    state.save_inventory(Inventory(123.5, "job", [ARCHIVE]))
    assert state.load_inventory() == Inventory(123.5, "job", [ARCHIVE])
    state.set_pending_inventory(PendingInventory("J", 5.0))
    state.clear_pending_inventory("other")
    assert state.pending_inventory() == PendingInventory("J", 5.0)
    state.clear_pending_inventory("J")
    assert state.pending_inventory() is None
    record = JobRecord(ARCHIVE.archive_id, "J1", "Standard", 10.0)
    state.save_job(record)
    assert state.job(ARCHIVE.archive_id) == record and state.jobs() == [record]
    # an update for a job the record no longer names changes nothing
    state.save_job(JobRecord(ARCHIVE.archive_id, "J2", "Standard", 11.0))
    assert state.update_job(record, status="Failed").job_id == "J2"
    state.forget_job(ARCHIVE.archive_id, "J1")
    assert state.job(ARCHIVE.archive_id).job_id == "J2"
    state.forget_job(ARCHIVE.archive_id, "J2")
    assert state.job(ARCHIVE.archive_id) is None
    state.add_upload(UploadRecord(ARCHIVE, "/p"))
    assert state.uploads() == [UploadRecord(ARCHIVE, "/p")]
    state.remove_upload(ARCHIVE.archive_id)
    assert state.uploads() == []


def test_damaged_records_are_ignored(tmp_path):
    state = VaultState(tmp_path / "v")
    (state.root / "inventory.json").write_text("{not json")
    (state.root / "jobs" / f"{archive_key(ARCHIVE.archive_id)}.json").write_text('{"format": 1}')
    (state.root / "uploads" / "x.json").write_text("[]")
    assert state.load_inventory() is None
    assert state.job(ARCHIVE.archive_id) is None and state.jobs() == []
    assert state.uploads() == []


def test_cached_data_must_match_the_archive(tmp_path):
    state = VaultState(tmp_path / "v", tmp_path / "data")
    assert state.data_dir == tmp_path / "data" / "data"
    tmp = state.new_download()
    tmp.write_bytes(b"12345")
    path = state.commit_data(tmp, ARCHIVE, ARCHIVE.tree_hash, "J")
    assert state.cached(ARCHIVE).path == path
    assert state.cached(ArchiveInfo(ARCHIVE.archive_id, "", 6, 0.0, None)) is None         # size
    assert state.cached(ArchiveInfo(ARCHIVE.archive_id, "", 5, 0.0, "cd" * 32)) is None    # tree hash
    path.write_bytes(b"123")  # truncated behind our back
    assert state.cached(ARCHIVE) is None
    state.drop_data(ARCHIVE.archive_id)
    assert list(state.data_dir.iterdir()) == []


def test_lock_excludes_threads(tmp_path):
    state = VaultState(tmp_path / "v")
    inside, overlaps = [], []

    def worker():
        with state.lock("x"):
            if inside:
                overlaps.append(1)
            inside.append(1)
            time.sleep(0.01)
            inside.pop()
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []


def test_state_dir_for_is_stable_and_safe(tmp_path):
    a = state_dir_for(tmp_path, "my remote/../x")
    assert a == state_dir_for(tmp_path, "my remote/../x") and a.parent == tmp_path / "vaults"
    assert "/" not in a.name and a != state_dir_for(tmp_path, "my remote_.._x")
