"""The upload that follows a file being written (fs/bucket/streaming.py), without FUSE: a staged file
(OpenFile on a real Staging) written through its own methods, over the local provider with a lowered
single-PUT size (1 MiB, 5 MiB parts: a file streams from 6 MiB on)."""
from __future__ import annotations

import dataclasses
import os
import time

import pytest

from storefs.attrs import Attrs, meta_from_attrs
from storefs.fs.bucket.journal import Journal
from storefs.fs.bucket.openfiles import OpenFile
from storefs.fs.bucket.staging import Staging
from storefs.fs.bucket.streaming import Streams, untimed
from storefs.fs.bucket.uploader import UploadSettings
from storefs.providers.local import open_provider
from tests.unit.test_resume_committer import Interrupting

MiB = 1024 * 1024
PART = 5 * MiB


class Lowered(Interrupting):
    """The local store with a 1 MiB single-PUT size, counting parts (failing from `fail_after` on)."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.capabilities = dataclasses.replace(store.capabilities, single_put_max=1 * MiB)


@pytest.fixture
def setup(tmp_path):
    provider = open_provider("t", {"root": str(tmp_path / "bucket"), "create_buckets": "yes"})
    provider.check("b")
    store = Lowered(provider.bucket("b"))
    staging = Staging(tmp_path / "staging")
    journal = Journal(staging.directory, named=staging.named)
    streams = Streams(store, journal, UploadSettings(part_size=PART), 2,
                      meta_of=lambda f: {**meta_from_attrs(f.current_attrs()), "storefs-upload": f.staged_id or ""},
                      condition_of=lambda key, etag: None)
    yield store, staging, journal, streams
    streams.close()
    staging.close()


def _new_file(staging: Staging, streams: Streams, key: str = "big") -> OpenFile:
    now = time.time_ns()
    opened = OpenFile(path=f"/{key}", key=key, attrs=Attrs(mode=0o100644, size=0, uid=1, gid=2, mtime_ns=now,
                                                           ctime_ns=now), info=None)
    opened.stage_empty(staging)
    streams.watch(opened)
    return opened


def _write(opened: OpenFile, data: bytes, start: int = 0, step: int = MiB) -> None:
    for offset in range(start, start + len(data), step):
        opened.write(data[offset - start:offset - start + step], offset, False)


def _finish(streams: Streams, opened: OpenFile):
    attrs = opened.current_attrs()
    meta = {**meta_from_attrs(attrs), "storefs-upload": opened.staged_id}
    stream, opened.stream = opened.stream, None
    return streams.finish(stream, opened.key, meta, attrs.mtime_ns, attrs.size, None)


def _wait_parts(store: Lowered, count: int) -> None:
    deadline = time.monotonic() + 20
    while len(store.parts) < count:
        assert time.monotonic() < deadline, f"only {store.parts} sent"
        time.sleep(0.01)


def _wait_no_uploads(store: Lowered, journal: Journal) -> None:
    deadline = time.monotonic() + 20
    while store.list_multipart() or journal.ledger_load():
        assert time.monotonic() < deadline, "the aborted stream's upload is still there"
        time.sleep(0.01)


@pytest.mark.parametrize("name, streams", [("big", True), (".big.bin.Xa3kQ9", False), (".big.bin", True),
                                           ("big.bin.tmp", True)])
def test_rsync_temporary_names_never_stream(setup, name, streams):
    store, staging, journal, streams_ = setup
    opened = _new_file(staging, streams_, key=name)
    assert (opened.stream is not None) is streams


def test_a_small_file_never_streams(setup):
    store, staging, journal, streams = setup
    opened = _new_file(staging, streams)
    _write(opened, os.urandom(6 * MiB - 1))
    assert _finish(streams, opened) is None
    assert store.parts == [] and store.list_multipart() == [] and journal.ledger_load() == []


def test_a_sequential_file_sends_full_parts_while_written_and_completes_without_an_mtime(setup):
    store, staging, journal, streams = setup
    opened = _new_file(staging, streams)
    data = os.urandom(4 * PART + 4321)
    _write(opened, data[:4 * PART])
    _wait_parts(store, 4)               # every full part went up before the file is due
    assert journal.ledger_load()         # the ledger knows it, no journal entry does
    assert journal.load() == []
    _write(opened, data[4 * PART:], start=4 * PART)
    info = _finish(streams, opened)
    assert info is not None and info.size == len(data)
    assert sorted(store.parts) == [1, 2, 3, 4, 5]   # only the tail at the end
    assert store.read_range("big", 0, len(data)) == data
    stored = store.stat("big")
    assert "mtime" not in stored.meta and stored.meta["mode"] == str(0o100644)
    assert info.mtime == stored.mtime
    assert store.list_multipart() == [] and journal.ledger_load() == []


def test_a_part_written_again_is_sent_again(setup):
    store, staging, journal, streams = setup
    opened = _new_file(staging, streams)
    data = bytearray(os.urandom(3 * PART + 10))
    _write(opened, bytes(data[:3 * PART]))
    _wait_parts(store, 3)
    opened.write(b"x" * 100, PART + 5, False)   # inside part 2, sent already
    data[PART + 5:PART + 105] = b"x" * 100
    _write(opened, bytes(data[3 * PART:]), start=3 * PART)
    info = _finish(streams, opened)
    assert info is not None
    assert sorted(store.parts) == [1, 2, 2, 3, 4]
    assert store.read_range("big", 0, len(data)) == bytes(data)


@pytest.mark.parametrize("change", ["hole", "truncate", "rename", "chmod", "utimens", "unlink", "part fails"])
def test_a_change_the_stream_cannot_follow_aborts_it(setup, change):
    store, staging, journal, streams = setup
    opened = _new_file(staging, streams)
    _write(opened, os.urandom(2 * PART))
    _wait_parts(store, 2)
    if change == "hole":
        opened.write(b"z", 3 * PART, False)
    elif change == "truncate":
        opened.truncate(PART)
    elif change == "rename":
        opened.moved("/other", "other")
    elif change == "chmod":
        opened.change_attrs(lambda a: setattr(a, "mode", 0o100600))
    elif change == "utimens":
        opened.change_attrs(lambda a: setattr(a, "mtime_ns", 1_000_000_000))
    elif change == "unlink":
        opened.mark_unlinked()
    else:
        store.fail_after = len(store.parts)
        _write(opened, os.urandom(PART), start=2 * PART)
    if change in ("hole", "truncate", "rename", "unlink"):
        assert opened.stream is not None and opened.stream.dead   # known at once
    assert _finish(streams, opened) is None   # the file goes up whole instead
    _wait_no_uploads(store, journal)


def test_record_at_close_names_the_upload_with_the_file_as_closed(setup):
    store, staging, journal, streams = setup
    opened = _new_file(staging, streams)
    _write(opened, os.urandom(2 * PART + 3))
    _wait_parts(store, 2)
    st = os.fstat(opened.fd)
    record = opened.stream.record(st.st_size, st.st_mtime_ns)
    assert record is not None and record.streamed and record.size == 2 * PART + 3
    assert record.upload_id == store.list_multipart()[0].upload_id
    assert record.token in {r["token"] for r in journal.ledger_load()}
    assert untimed({"mtime": "1", "ctime": "2", "storefs-mtime-ns": "3", "mode": "4"}) == {"mode": "4"}
    assert _finish(streams, opened) is not None


@pytest.mark.parametrize("mode, dated_at_start, streams_it", [
    ("auto", False, True), ("auto", True, False), ("on", True, True), ("off", False, False)])
def test_stream_uploads_auto_streams_unless_the_server_dates_a_multipart_object_by_its_start(
        setup, mode, dated_at_start, streams_it):
    """`-o stream_uploads=auto` (the default) streams, except where the server dates a multipart
    object by the time its upload began (AWS S3): there only `-o stream_uploads=on` does (SEMANTICS.md,
    "Streamed uploads")."""
    store, staging, journal, _ = setup
    store.capabilities = dataclasses.replace(store.capabilities, multipart_dated_at_start=dated_at_start)
    chosen = Streams(store, journal, UploadSettings(part_size=PART), 2, meta_of=lambda f: {},
                     condition_of=lambda key, etag: None, mode=mode)
    try:
        opened = _new_file(staging, chosen)
        assert (opened.stream is not None) == streams_it   # not watched: it goes up whole after close
    finally:
        chosen.close()


def test_stream_uploads_option_values():
    from storefs.errors import ConfigError
    from storefs.fs.bucket.committer import CommitSettings
    from storefs.options import MountOptions
    assert MountOptions.parse([]).stream_uploads == CommitSettings().stream_uploads == "auto"
    assert MountOptions.parse(["stream_uploads"]).stream_uploads == "on"   # the flag of session 8
    for value, mode in (("on", "on"), ("1", "on"), ("off", "off"), ("0", "off"), ("no", "off"), ("AUTO", "auto")):
        assert MountOptions.parse([f"stream_uploads={value}"]).stream_uploads == mode
    with pytest.raises(ConfigError, match="auto, on or off"):
        MountOptions.parse(["stream_uploads=sometimes"])


@pytest.mark.parametrize("endpoint, aws", [
    ("https://s3.eu-west-1.amazonaws.com", True), ("https://s3.cn-north-1.amazonaws.com.cn", True),
    ("http://127.0.0.1:8333", False), ("https://minio.example.org:9000", False)])
def test_only_aws_endpoints_date_multipart_objects_by_their_start(endpoint, aws):
    from storefs.providers.s3 import open_provider as open_s3
    provider = open_s3("r", {"endpoint": endpoint, "access_key": "a", "secret_key": "s", "region": "us-east-1"})
    try:
        assert provider.bucket("b").capabilities.multipart_dated_at_start is aws
    finally:
        provider.close()


def test_a_part_failing_after_the_stream_stopped_still_lets_the_upload_be_aborted(setup):
    """The stream stops (the file was removed) while a part is on the wire, and that part then fails:
    the abort that waited for it still happens (before, only a part that succeeded triggered it, and
    the upload stayed on the server until the next mount's sweep)."""
    import threading
    from storefs.errors import Transient
    store, staging, journal, streams = setup
    on_the_wire, answer = threading.Event(), threading.Event()
    real = store.upload_part

    def held_then_failing(upload, number, offset, data):
        if number == 2:
            on_the_wire.set()
            assert answer.wait(10)
            raise Transient("injected: the connection dropped")
        return real(upload, number, offset, data)
    store.upload_part = held_then_failing
    opened = _new_file(staging, streams)
    stream = opened.stream
    _write(opened, os.urandom(2 * PART))
    assert on_the_wire.wait(10)
    deadline = time.monotonic() + 10
    while 1 not in stream._parts:   # part 1 done: part 2 is the last on the wire
        assert time.monotonic() < deadline
        time.sleep(0.01)
    opened.mark_unlinked()    # the stream stops; its abort waits for part 2
    assert store.list_multipart()
    answer.set()
    _wait_no_uploads(store, journal)
