"""Restore-on-open for archive-class bucket objects (storefs.retrieval.gate), on a scripted store and on moto."""
from __future__ import annotations

import dataclasses
import errno
import threading
import time

import pytest

from storefs.options import RetrievalOptions
from storefs.retrieval.gate import ArchiveGate, RestoreState, restore_state
from storefs.errors import ArchiveNotReady, InvalidArgument, NotFound
from storefs.providers import s3
from storefs.store.contract import Capabilities, ListPage, ObjectInfo

ARCHIVED = frozenset({"GLACIER", "DEEP_ARCHIVE"})


class ScriptedStore:
    """Objects whose restore state the test moves on by hand; counts restore requests."""

    name = "scripted"
    capabilities = Capabilities(archive_classes=ARCHIVED)

    def __init__(self) -> None:
        self.objects: dict[str, ObjectInfo] = {}
        self.restores: list[tuple[str, int, str]] = []
        self.stats = 0

    def add(self, key: str, storage_class: str, restore: str | None = None) -> None:
        meta = {"x-amz-restore": restore} if restore else {}
        self.objects[key] = ObjectInfo(key, 10, "etag", 0.0, meta, storage_class=storage_class)

    def stat(self, key: str) -> ObjectInfo:
        self.stats += 1
        if key not in self.objects:
            raise NotFound(key)
        return self.objects[key]

    def list(self, prefix: str, *, delimiter: str = "/", token=None, limit=None) -> ListPage:
        return ListPage([o for k, o in sorted(self.objects.items()) if k.startswith(prefix)], [], None)

    def restore(self, key: str, *, days: int, tier: str) -> bool:
        self.restores.append((key, days, tier))
        info = self.objects[key]
        already = "x-amz-restore" in info.meta
        if not already:
            self.objects[key] = dataclasses.replace(info, meta={"x-amz-restore": 'ongoing-request="true"'})
        return not already

    def finish(self, key: str) -> None:
        self.objects[key] = dataclasses.replace(self.objects[key], meta={
            "x-amz-restore": 'ongoing-request="false", expiry-date="Fri, 21 Dec 2040 00:00:00 GMT"'})


def test_restore_state_parsing():
    def info(storage_class: str, header: str | None = None) -> ObjectInfo:
        return ObjectInfo("k", 1, "e", 0.0, {"x-amz-restore": header} if header else {},
                          storage_class=storage_class)
    assert restore_state(info("STANDARD"), ARCHIVED) == RestoreState(archived=False)
    assert restore_state(info("GLACIER_IR"), ARCHIVED).readable
    assert restore_state(info("GLACIER"), ARCHIVED) == RestoreState(archived=True)
    assert not restore_state(info("GLACIER"), ARCHIVED).readable
    ongoing = restore_state(info("glacier", 'ongoing-request="true"'), ARCHIVED)
    assert ongoing.ongoing and not ongoing.readable
    done = restore_state(info("DEEP_ARCHIVE",
                              'ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"'), ARCHIVED)
    assert done.readable and done.expiry == 1356048000.0
    # A malformed date still means restored (the server says so); the expiry is just unknown.
    odd = restore_state(info("GLACIER", 'ongoing-request="false", expiry-date="soon"'), ARCHIVED)
    assert odd.readable and odd.expiry is None


def test_open_requests_one_restore_then_eagain_until_restored():
    store = ScriptedStore()
    store.add("a", "GLACIER")
    gate = ArchiveGate(store, RetrievalOptions(tier="Bulk", days=3))
    with pytest.raises(ArchiveNotReady) as first:
        gate.ensure_readable("a", "/a")
    assert first.value.errno == errno.EAGAIN
    assert store.restores == [("a", 3, "Bulk")]
    assert gate.describe_state("a", gate.state("a")[1]).startswith("in-progress since 20")
    for _ in range(3):  # later opens see the running restore and ask for nothing
        with pytest.raises(ArchiveNotReady):
            gate.ensure_readable("a", "/a")
    assert len(store.restores) == 1
    store.finish("a")
    assert gate.ensure_readable("a", "/a").key == "a"
    assert gate.describe_state("a", gate.state("a")[1]) == "ready until 2040-12-21T00:00:00.000Z"
    assert len(store.restores) == 1


def test_a_restore_started_elsewhere_is_not_repeated_and_errno_is_configurable():
    store = ScriptedStore()
    store.add("b", "DEEP_ARCHIVE", 'ongoing-request="true"')
    gate = ArchiveGate(store, RetrievalOptions(not_ready_errno="EREMOTE"))
    with pytest.raises(ArchiveNotReady) as caught:
        gate.ensure_readable("b", "/b")
    assert caught.value.errno == errno.EREMOTE
    assert store.restores == []
    assert gate.describe_state("b", gate.state("b")[1]) == "in-progress"
    assert gate.describe_state("c", RestoreState(archived=True)) == "none"
    assert gate.describe_state("c", RestoreState(archived=False)) == "not needed"


def test_wait_blocks_until_restored():
    store = ScriptedStore()
    store.add("w", "GLACIER")
    gate = ArchiveGate(store, RetrievalOptions(wait=10, poll_min=0.01, poll_max=0.05))
    finisher = threading.Timer(0.3, store.finish, args=("w",))
    finisher.start()
    started = time.monotonic()
    try:
        assert gate.ensure_readable("w", "/w").key == "w"
    finally:
        finisher.cancel()
    assert 0.2 < time.monotonic() - started < 5
    assert len(store.restores) == 1


def test_wait_gives_up_after_its_time_and_on_stop():
    store = ScriptedStore()
    store.add("w", "GLACIER")
    gate = ArchiveGate(store, RetrievalOptions(wait=0.2, poll_min=0.01, poll_max=0.05))
    started = time.monotonic()
    with pytest.raises(ArchiveNotReady):
        gate.ensure_readable("w", "/w")
    assert time.monotonic() - started < 3
    gate.options.wait = 60
    threading.Timer(0.2, gate.stopping.set).start()
    started = time.monotonic()
    with pytest.raises(ArchiveNotReady):
        gate.ensure_readable("w", "/w")
    assert time.monotonic() - started < 5


def test_restore_command_report():
    store = ScriptedStore()
    store.add("d/1", "GLACIER")
    store.add("d/2", "GLACIER", 'ongoing-request="true"')
    store.add("d/3", "STANDARD")
    store.add("d/4", "GLACIER", 'ongoing-request="false", expiry-date="Fri, 21 Dec 2040 00:00:00 GMT"')
    gate = ArchiveGate(store, RetrievalOptions(poll_min=0.01, poll_max=0.02))
    keys = gate.archived_below("d/")
    assert keys == ["d/1", "d/2", "d/4"]
    assert gate.archived_below("d/1") == ["d/1"] and gate.archived_below("d/3") == []
    with pytest.raises(NotFound):
        gate.archived_below("nothing/")
    report = gate.restore([("/" + k, k) for k in keys])
    assert [i.state for i in report.items] == ["in-progress", "in-progress", "ready"]
    assert report.jobs_started == 1 and not report.all_ready
    threading.Timer(0.2, lambda: [store.finish(k) for k in ("d/1", "d/2")]).start()
    report = gate.restore([("/" + k, k) for k in keys], wait=True, timeout=10)
    assert report.all_ready and not report.timed_out
    assert [r[0] for r in store.restores] == ["d/1"]


def test_s3_restore_object_on_moto(moto_server):
    bucket = moto_server.create_bucket()
    client = moto_server.client()
    client.put_object(Bucket=bucket, Key="cold", Body=b"frozen bytes", StorageClass="GLACIER")
    client.put_object(Bucket=bucket, Key="warm", Body=b"plain")
    provider = s3.open_provider("m", moto_server.options())
    try:
        store = provider.bucket(bucket)
        assert store.capabilities.archive_classes >= {"GLACIER", "DEEP_ARCHIVE"}
        info = store.stat("cold")
        assert info.storage_class == "GLACIER" and "x-amz-restore" not in info.meta
        listed = {o.key: o.storage_class for o in store.list("").objects}
        assert listed == {"cold": "GLACIER", "warm": "STANDARD"}
        with pytest.raises(ArchiveNotReady):
            store.read_range("cold", 0, 4)
        assert store.restore("cold", days=2, tier="Expedited") is True
        assert 'ongoing-request="false"' in store.stat("cold").meta["x-amz-restore"]  # moto: at once
        assert store.restore("cold", days=2, tier="Expedited") is False  # 200: already restored
        assert store.read_range("cold", 0, 6) == b"frozen"
        with pytest.raises(InvalidArgument, match="not in an archive storage class"):
            store.restore("warm", days=1, tier="Standard")  # S3: InvalidObjectState
    finally:
        provider.close()
