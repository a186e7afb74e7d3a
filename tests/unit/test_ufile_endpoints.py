"""UFile hosts and archive class (issue #13 item 9): the upload and download host suffixes under both the
storefs names and the SDKs' `config.set_default(uploadsuffix=, downloadsuffix=)` names, reads through the
download (CDN) suffix, and ARCHIVE files restored on open through the same ArchiveGate as S3's archive
classes. Every request goes to the loopback emulator (`endpoint`); the vendor host names only appear in
Host headers."""
from __future__ import annotations

import io
import time

import pytest

from storefs.errors import ArchiveNotReady, ConfigError, StoreError
from storefs.options import RetrievalOptions
from storefs.providers.ufile import UfileConfig, open_provider
from storefs.retrieval.gate import ArchiveGate
from tests.emulators.ufile import UfileEmulator

CDN = ".uvideo.ucloud.com.cn"


@pytest.fixture
def emu(tmp_path):
    with UfileEmulator(root=tmp_path / "ufile", buckets=("bkt",)) as emulator:
        emulator.download_suffix = CDN
        yield emulator


def _options(emu: UfileEmulator, **extra: str) -> dict[str, str]:
    return {**{k: str(v) for k, v in emu.config().items() if k != "type"}, **extra}


def test_suffix_keys_take_the_sdk_spellings_too():
    keys = {"public_key": "p", "private_key": "k"}
    cfg = UfileConfig.from_options({**keys, "uploadsuffix": "cn-sh2.ufileos.com", "downloadsuffix": CDN})
    assert (cfg.upload_suffix, cfg.download_suffix) == (".cn-sh2.ufileos.com", CDN)
    cfg = UfileConfig.from_options({**keys, "upload_suffix": ".cn-gd.ufileos.com"})
    assert cfg.download_suffix == ".cn-gd.ufileos.com"  # reads go where writes go unless told otherwise
    with pytest.raises(ConfigError, match="download_suffix and downloadsuffix"):
        UfileConfig.from_options({**keys, "download_suffix": ".a.com", "downloadsuffix": ".b.com"})


def test_reads_go_through_the_download_suffix(emu):
    provider = open_provider("u", _options(emu, downloadsuffix=CDN))
    try:
        store = provider.bucket("bkt")
        store.put("v/clip.mp4", io.BytesIO(b"0123456789"), 10, {})
        assert store.read_range("v/clip.mp4", 2, 6) == b"2345"
        assert store.stat("v/clip.mp4").size == 10
    finally:
        provider.close()
    assert emu.hosts[("get", "bkt" + CDN)] == 1            # the read: from the CDN host
    assert emu.hosts[("put", "bkt.ufile.test")] == 1       # the write: to the upload host
    assert emu.hosts[("get", "bkt.ufile.test")] == 0
    assert emu.hosts[("head", "bkt.ufile.test")] == 1      # stat is an API call of the upload host


def test_without_a_download_suffix_reads_use_the_upload_host(emu):
    provider = open_provider("u", _options(emu))
    try:
        store = provider.bucket("bkt")
        store.put("a.bin", io.BytesIO(b"abc"), 3, {})
        assert store.read_range("a.bin", 0, 3) == b"abc"
    finally:
        provider.close()
    assert emu.hosts[("get", "bkt.ufile.test")] == 1 and emu.hosts[("get", "bkt" + CDN)] == 0


def test_the_download_host_takes_no_writes(emu):
    """The emulator's CDN host is read-only, so the test above proves where each request went."""
    provider = open_provider("u", _options(emu, upload_suffix=CDN))
    try:
        with pytest.raises(StoreError, match="download host"):
            provider.bucket("bkt").put("x", io.BytesIO(b"x"), 1, {})
    finally:
        provider.close()


def test_archive_files_are_restored_on_open(emu):
    emu.blobs.put("bkt", "cold/db.tar", b"frozen bytes", storage_class="ARCHIVE")
    emu.blobs.put("bkt", "warm.txt", b"warm", storage_class="STANDARD")
    emu.restore_delay = 1.0
    provider = open_provider("u", _options(emu))
    try:
        store = provider.bucket("bkt")
        assert store.capabilities.archive_classes == frozenset({"ARCHIVE"})
        gate = ArchiveGate(store, RetrievalOptions())
        listed = {info.key: info.storage_class for info in store.list("", delimiter="").objects}
        assert listed == {"cold/db.tar": "ARCHIVE", "warm.txt": "STANDARD"}
        assert gate.archived_below("") == ["cold/db.tar"]
        # Frozen: GET is refused by the service until restored.
        with pytest.raises(StoreError, match="restore it first"):
            store.read_range("cold/db.tar", 0, 4)
        assert gate.describe_state("cold/db.tar", gate.state("cold/db.tar")[1]) == "none"
        # The first open asks for one restore and says "not yet".
        with pytest.raises(ArchiveNotReady):
            gate.ensure_readable("cold/db.tar", "/mnt/cold/db.tar")
        assert emu.restore_requests == 1
        assert gate.describe_state("cold/db.tar", gate.state("cold/db.tar")[1]).startswith("in-progress")
        # A second open while it runs starts nothing new.
        with pytest.raises(ArchiveNotReady):
            gate.ensure_readable("cold/db.tar", "/mnt/cold/db.tar")
        assert emu.restore_requests == 1
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not gate.state("cold/db.tar")[1].readable:
            time.sleep(0.2)
        info = gate.ensure_readable("cold/db.tar", "/mnt/cold/db.tar")
        assert info.size == len(b"frozen bytes")
        assert gate.describe_state("cold/db.tar", gate.state("cold/db.tar")[1]).startswith("ready until 20")
        assert store.read_range("cold/db.tar", 0, 6) == b"frozen"
        # The restore state is server state, never user metadata carried into a rewrite.
        assert "x-amz-restore" in info.meta and all(not k.startswith("X-Ufile") for k in info.meta)
        assert gate.ensure_readable("warm.txt", "/mnt/warm.txt").size == 4
        assert emu.restore_requests == 1
    finally:
        provider.close()


def test_storefs_restore_with_wait_on_a_ufile_store(emu):
    emu.blobs.put("bkt", "a/1.bin", b"one", storage_class="ARCHIVE")
    emu.blobs.put("bkt", "a/2.bin", b"two", storage_class="ARCHIVE")
    emu.restore_delay = 0.5
    provider = open_provider("u", _options(emu))
    try:
        gate = ArchiveGate(provider.bucket("bkt"), RetrievalOptions(poll_min=0.2, poll_max=0.5))
        report = gate.restore([(f"/m/{k}", k) for k in gate.archived_below("a/")], wait=True, timeout=30)
        assert [item.state for item in report.items] == ["ready", "ready"]
        assert emu.restore_requests == 2
    finally:
        provider.close()
