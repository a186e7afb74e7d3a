"""What the filesystem layer asks of the store for common work, counted on a wrapped local store whose
listings carry no metadata (as on S3): creating many files in a directory, and the attributes readdir
hands to the kernel (READDIRPLUS)."""
from __future__ import annotations

import collections
import dataclasses
import io
import os
import stat
import threading

import pytest

from storefs.errors import NotFound
from storefs.fs.api import MountedFS
from storefs.fs.bucket.filesystem import StoreFS
from storefs.fs.bucket.staging import Staging
from storefs.mounting import bucket_fs
from storefs.options import MountOptions
from storefs.providers.local import open_provider


class Counting:
    """Counts every call made to the wrapped store."""

    def __init__(self, store) -> None:
        self._store = store
        self.capabilities = dataclasses.replace(store.capabilities, list_has_metadata=False)
        self.counts: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def __getattr__(self, name):
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def counted(*args, **kwargs):
            with self._lock:
                self.counts[name] += 1
            return attr(*args, **kwargs)
        return counted


@pytest.fixture
def fs_and_store(tmp_path):
    provider = open_provider("t", {"root": str(tmp_path / "bucket"), "create_buckets": "yes"})
    provider.check("b")
    inner = provider.bucket("b")
    inner.put("old/a", io.BytesIO(b"abc"), 3, {"mtime": "1600000000", "mode": "33152"})
    store = Counting(inner)
    fs = bucket_fs(store, "", MountOptions.parse(["write_back=0"]), Staging(tmp_path / "staging"))
    yield fs, store
    fs.committer.stop()


def _create(fs: StoreFS, path: str, data: bytes) -> None:
    fh = fs.create(path, 0o644, 0, 0, os.O_WRONLY | os.O_CREAT)
    fs.write(fh, data, 0)
    fs.flush(fh)
    fs.release(fh)


def test_creating_files_in_a_new_directory_costs_one_put_each(fs_and_store):
    fs, store = fs_and_store
    fs.mkdir("/new", 0o755, 0, 0)
    store.counts.clear()
    for i in range(20):
        # The kernel looks a name up before it creates it: answered from the (empty) listing.
        with pytest.raises(NotFound):
            fs.getattr(f"/new/f{i}")
        _create(fs, f"/new/f{i}", b"x" * 100)
    assert store.counts["put"] == 20
    assert store.counts["stat"] == 0 and store.counts["list"] == 0, store.counts
    assert sorted(fs.readdir("/new")) == sorted(f"f{i}" for i in range(20))


def test_creating_files_in_a_listed_directory_keeps_its_listing(fs_and_store):
    fs, store = fs_and_store
    fs.readdir("/old")
    store.counts.clear()
    for i in range(10):
        with pytest.raises(NotFound):
            fs.getattr(f"/old/n{i}")
        _create(fs, f"/old/n{i}", b"y")
    assert store.counts["list"] == 0 and store.counts["stat"] == 0, store.counts
    assert sorted(fs.readdir("/old")) == sorted(["a"] + [f"n{i}" for i in range(10)])


def test_a_shell_redirect_costs_one_put(fs_and_store):
    """bash's `printf … > f`: open, a close of the first descriptor (after dup2) before the write, the
    write, the close of stdout. Only the close after the write uploads; also over an existing file."""
    fs, store = fs_and_store
    store.counts.clear()
    for path, flags in (("/n", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), ("/old/a", os.O_WRONLY | os.O_TRUNC)):
        fh = fs.create(path, 0o644, 0, 0, flags) if flags & os.O_CREAT else fs.open(path, flags)
        fs.flush(fh)
        fs.write(fh, b"new bytes", 0)
        fs.flush(fh)
        fs.release(fh)
    assert store.counts["put"] == 2, store.counts
    assert store.read_range("old/a", 0, 100) == b"new bytes" and store.read_range("n", 0, 100) == b"new bytes"


def test_a_close_without_writes_uploads_at_release(fs_and_store):
    """`touch new` and `: > old`: nothing written through the handle; the last close uploads it."""
    fs, store = fs_and_store
    store.counts.clear()
    fh = fs.create("/t", 0o644, 0, 0, os.O_WRONLY | os.O_CREAT)
    fs.flush(fh)
    assert store.counts["put"] == 0
    fs.release(fh)
    fh = fs.open("/old/a", os.O_WRONLY | os.O_TRUNC)
    fs.flush(fh)
    fs.release(fh)
    assert store.counts["put"] == 2
    assert store.stat("t").size == 0 and store.stat("old/a").size == 0


def test_readdir_attrs_gives_exact_attributes_and_staged_files(fs_and_store):
    fs, store = fs_and_store
    fh = fs.create("/old/open", 0o600, 0, 0, os.O_WRONLY | os.O_CREAT)
    fs.write(fh, b"12345", 0)   # staged, not uploaded: its attributes come from the staged copy
    listed = dict(fs.readdir_attrs("/old"))
    assert set(listed) == {"a", "open"}
    assert listed["a"].size == 3 and listed["a"].mtime_ns == 1_600_000_000 * 10**9
    assert stat.S_IMODE(listed["a"].mode) == 0o600
    assert listed["open"].size == 5 and stat.S_IMODE(listed["open"].mode) == 0o600
    fs.release(fh)


def test_readdir_attrs_leaves_inexact_entries_to_lookup(tmp_path):
    provider = open_provider("t", {"root": str(tmp_path / "bucket"), "create_buckets": "yes"})
    provider.check("b")
    inner = provider.bucket("b")
    inner.put("d/x", io.BytesIO(b"1"), 1, {"mtime": "1600000000"})
    fs = bucket_fs(Counting(inner), "", MountOptions.parse(["listing_attrs=fast"]), Staging(tmp_path / "s"))
    try:
        # Listing-only attributes (no stored mtime) must not reach the kernel's cache as if exact.
        assert fs.readdir_attrs("/d") == [("x", None)]
        assert fs.getattr("/d/x").mtime_ns == 1_600_000_000 * 10**9
    finally:
        fs.committer.stop()


def test_the_bucket_filesystem_is_a_mounted_fs(fs_and_store):
    # The FUSE edge knows only fs/api.py's MountedFS; StoreFS declares all of it.
    fs, _store = fs_and_store
    assert isinstance(fs, StoreFS) and isinstance(fs, MountedFS)


@pytest.mark.parametrize("first_open", [os.O_RDONLY, os.O_RDWR])
def test_a_file_opened_for_writing_is_filled_through_the_block_cache(tmp_path, first_open):
    # One read path for remote bytes: the fill of a file opened for writing takes cached blocks, and
    # the blocks it fetches serve later reads and fills, whichever came first.
    from storefs.fs.bucket.blockcache import BLOCK, BlockCache
    provider = open_provider("t", {"root": str(tmp_path / "bucket"), "create_buckets": "yes"})
    provider.check("b")
    data = os.urandom(3 * BLOCK + 5)
    inner = provider.bucket("b")
    inner.put("f", io.BytesIO(data), len(data), {})
    store = Counting(inner)
    cache = BlockCache(tmp_path / "blocks", 1 << 30)
    fs = bucket_fs(store, "", MountOptions.parse(["write_back=0"]), Staging(tmp_path / "s"), cache=cache,
                   location="t:b")
    try:
        fh = fs.open("/f", first_open)
        assert fs.read(fh, len(data) + 10, 0) == data
        fs.release(fh)
        fetched = store.counts["read_range"]
        assert fetched >= 1
        for flags in (os.O_RDWR, os.O_RDONLY, os.O_WRONLY):
            fh = fs.open("/f", flags)
            if flags != os.O_WRONLY:
                assert fs.read(fh, len(data) + 10, 0) == data
            fs.release(fh)
        assert store.counts["read_range"] == fetched, store.counts
    finally:
        fs.committer.stop()
        cache.close()
