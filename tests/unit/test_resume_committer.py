"""Resumed uploads through the bucket filesystem (no FUSE): a multipart upload cut off by a transient
failure is resumed by the next try of the same run and by a new filesystem over the same staging
directory (a remount after a crash); an upload whose file was deleted meanwhile is aborted by the next
mount's orphan sweep. The store is the local provider; failures are injected into its part uploads."""
from __future__ import annotations

import os
import threading
import time

import pytest

from storefs.errors import Transient
from storefs.fs.bucket.journal import Journal
from storefs.fs.bucket.staging import Staging
from storefs.mounting import bucket_fs
from storefs.options import MountOptions
from storefs.providers.local import open_provider

MiB = 1024 * 1024
SIZE = 26 * MiB            # 4 parts of 8 MiB (the last 2 MiB), over the local store's single-PUT size


class Interrupting:
    """The local store, counting parts; `fail_after` parts into a run, parts fail transiently."""

    def __init__(self, store) -> None:
        self._store = store
        self.capabilities = store.capabilities
        self.fail_after: int | None = None
        self.parts: list[int] = []
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._store, name)

    def upload_part(self, upload, number, offset, data):
        with self._lock:
            if self.fail_after is not None and len(self.parts) >= self.fail_after:
                raise Transient("injected: the network went away")
            self.parts.append(number)
        return self._store.upload_part(upload, number, offset, data)


@pytest.fixture
def setup(tmp_path):
    provider = open_provider("t", {"root": str(tmp_path / "bucket"), "create_buckets": "yes"})
    provider.check("b")
    inner = provider.bucket("b")
    return inner, Interrupting(inner), tmp_path / "staging"


def _write(fs, path: str, data: bytes) -> None:
    fh = fs.create(path, 0o644, 0, 0, os.O_WRONLY | os.O_CREAT)
    # The last byte first: a file not written in sequence never streams (streaming.py), so all of its
    # parts go up in the upload these tests interrupt (test_streaming.py has the streamed ones).
    fs.write(fh, data[-1:], len(data) - 1)
    fs.write(fh, data[:-1], 0)
    fs.flush(fh)   # write_back=30: closed means staged and journaled, not uploaded
    fs.release(fh)


def _fail_once(fs) -> None:
    """Make the queued upload go now and wait (bounded) until that try has failed."""
    fs.committer.queue.flush_soon()
    deadline = time.monotonic() + 30
    while not any(item.attempts for item in fs.committer.queue.pending()):
        assert time.monotonic() < deadline, "the upload did not fail in time"
        time.sleep(0.02)


def _fs(store, staging):
    return bucket_fs(store, "", MountOptions.parse(["write_back=30", "part_size=8M", "upload_workers=1"]),
                     Staging(staging))


def test_a_transient_failure_midway_is_resumed_by_the_next_try(setup):
    inner, store, staging = setup
    data = os.urandom(SIZE)
    fs = _fs(store, staging)
    try:
        _write(fs, "/big", data)
        store.fail_after = 2
        _fail_once(fs)                           # the first try fails after parts 1 and 2
        assert store.parts == [1, 2]
        store.fail_after = None
        assert fs.committer.drain(30) == []      # the retry resumes
        assert store.parts == [1, 2, 3, 4]       # parts 1 and 2 were not sent again
        assert inner.read_range("big", 0, SIZE) == data
        assert Journal(staging).ledger_load() == [] and inner.list_multipart() == []
    finally:
        fs.committer.stop()


def test_a_new_mount_resumes_what_a_crashed_one_left(setup):
    inner, store, staging = setup
    data = os.urandom(SIZE)
    crashed = _fs(store, staging)
    try:
        _write(crashed, "/big", data)
        store.fail_after = 3
        _fail_once(crashed)
    finally:
        crashed.committer.stop()   # like kill -9: the journal and the server's parts are all that is left
    assert store.parts == [1, 2, 3] and len(inner.list_multipart()) == 1
    store.fail_after, store.parts = None, []
    fs = _fs(store, staging)
    try:
        assert fs.recover() == ["/big"]
        assert fs.committer.drain(30) == []
        fs.committer.sweeper.join(10)
        assert store.parts == [4]
        assert inner.read_range("big", 0, SIZE) == data
        assert inner.list_multipart() == [] and Journal(staging).ledger_load() == []
    finally:
        fs.committer.stop()


def test_the_next_mount_aborts_the_upload_of_a_file_deleted_meanwhile(setup):
    inner, store, staging = setup
    fs = _fs(store, staging)
    try:
        _write(fs, "/gone", os.urandom(SIZE))
        store.fail_after = 1
        _fail_once(fs)
        assert len(inner.list_multipart()) == 1
        fs.unlink("/gone")                  # nothing will resume it now; the ledger still names it
    finally:
        fs.committer.stop()
    fs = _fs(store, staging)
    try:
        assert fs.recover() == []
        fs.committer.sweeper.join(10)
        assert inner.list_multipart() == [] and Journal(staging).ledger_load() == []
    finally:
        fs.committer.stop()
