"""Keys no filesystem can show, and names at the limits, below the mount (issue #6): which names a
listing shows, which it skips with a log line, and which paths map to keys. The same cases run through
real mounts in tests/fuse/test_hostile.py; these pin the rules down one by one, fast.
"""
from __future__ import annotations

import io
import logging

import pytest

from storefs.attrs import Defaults
from storefs.errors import InvalidArgument, NameTooLong, NotFound
from storefs.fs.bucket.namespace import CacheSettings, Namespace
from storefs.paths import (
    KEY_MAX,
    NAME_MAX,
    KeyMap,
    check_key_length,
    check_path,
    child_name,
)
from storefs.providers.local import open_provider as open_local
from storefs.store.contract import Capabilities, ListPage, ObjectInfo, iter_list
from tests.emulators.base import BlobStore


@pytest.mark.parametrize("dir_key, key, shown", [
    ("", "file", "file"),
    ("", "dir/", "dir"),                      # a marker listed as an object, or a common prefix
    ("d/", "d/", None),                       # the directory's own marker: silently not a child
    ("d/", "d//", None),                      # an empty component (`d//x`)
    ("", "/", None),                          # a key starting with `/`
    ("", "./", None), ("", "../", None), ("x/", "x/../", None), ("", ".", None), ("", "..", None),
    ("", "...", "..."), ("", ".hidden", ".hidden"), ("", "..x", "..x"),
    ("", "nul\0x", None),
    ("", "ctl\x01x", "ctl\x01x"),             # control characters are legal in file names
    ("", "new\nline", "new\nline"),
    ("", "n" * NAME_MAX, "n" * NAME_MAX),
    ("", "n" * (NAME_MAX + 1), None),
    ("", "名" * 85, "名" * 85),                # 255 bytes of UTF-8
    ("", "名" * 85 + "x", None),               # 256 bytes
    ("", "bad\udcffname", None),              # undecodable bytes kept as a surrogate: not UTF-8
    ("", "a/b", None),                        # a key below: never a child name
])
def test_child_name(dir_key, key, shown, caplog):
    with caplog.at_level(logging.WARNING, logger="storefs.paths"):
        assert child_name(dir_key, key) == shown
    if shown is None and key != dir_key:
        assert "skipping key" in caplog.text  # every skipped key is named in the log
    if shown is not None or key == dir_key:
        assert caplog.text == ""


def test_name_and_key_limits():
    keys = KeyMap()
    assert keys.key("/" + "n" * NAME_MAX) == "n" * NAME_MAX
    for too_long in ("n" * (NAME_MAX + 1), "名" * 85 + "x"):
        with pytest.raises(NameTooLong):
            keys.key("/" + too_long)
    # 1024 bytes of key is the limit, counted on the key (not on the path with its leading "/").
    exact = "/".join(["d" * 99] * 10) + "/" + "f" * 24
    assert len(exact.encode()) == KEY_MAX
    assert keys.key("/" + exact) == exact
    with pytest.raises(NameTooLong):
        keys.key("/" + exact + "g")
    # A mount prefix counts: the same path is too long below `pre/`.
    with pytest.raises(NameTooLong):
        KeyMap.for_prefix("pre").key("/" + exact)
    # A directory's marker is its key plus "/".
    check_key_length(exact[:-1] + "/")
    with pytest.raises(NameTooLong):
        check_key_length(exact + "/")
    check_path("/" + exact)
    with pytest.raises(InvalidArgument):  # undecodable bytes, as the FUSE binding hands them over
        check_path("/bad\udcffname")
    with pytest.raises(NameTooLong):
        check_path("/" + exact + "g")


class BlobBucket:
    """An ObjectStore over the emulators' BlobStore, which holds any key a real service could (`a//b`,
    `../x`, NUL, undecodable bytes) and groups listings as S3 does. Listings carry no metadata."""

    capabilities = Capabilities()

    def __init__(self, blobs: BlobStore, name: str) -> None:
        self.blobs, self.name = blobs, name

    def stat(self, key: str) -> ObjectInfo:
        blob = self.blobs.get(self.name, key)
        if blob is None:
            raise NotFound(key)
        return ObjectInfo(key=key, size=blob.size, etag=blob.etag, mtime=blob.mtime, meta=blob.meta)

    def list(self, prefix: str, *, delimiter: str = "/", token: str | None = None,
             limit: int | None = None) -> ListPage:
        objects, prefixes, after = self.blobs.list(self.name, prefix, delimiter, token or "", limit or 1000)
        infos = [ObjectInfo(key=b.key, size=b.size, etag=b.etag, mtime=b.mtime, meta_complete=False)
                 for b in objects]
        return ListPage(infos, prefixes, after)


HOSTILE = ["a//b", "./x", "../x", "x/../../etc/passwd", "/leading", "dup", "dup/", "both", "both/y",
           "withdata/", "L" * 300, "nul\0x", "bad\udcffname", "ctl\x01x", "ok.txt", "deep/ok", "deep/sub/"]


@pytest.fixture
def hostile_bucket(tmp_path):
    blobs = BlobStore(tmp_path / "blobs")
    blobs.create_bucket("b")
    for key in HOSTILE:
        blobs.put("b", key, b"data of " + key.encode("utf-8", "surrogatepass"))
    return BlobBucket(blobs, "b")


def test_listing_shows_what_a_filesystem_can_hold(hostile_bucket, caplog):
    ns = Namespace(hostile_bucket, KeyMap(), Defaults(0, 0), CacheSettings())
    with caplog.at_level(logging.WARNING):
        top = ns.listdir("/")
        below = {d: ns.listdir(d) for d in ("/a", "/x", "/withdata", "/deep")}
    assert set(top) == {"a", "x", "dup", "both", "withdata", "ctl\x01x", "ok.txt", "deep"}
    assert not top["dup"].is_dir and not top["both"].is_dir  # the file wins over the directory
    assert top["a"].is_dir and top["x"].is_dir and top["withdata"].is_dir
    assert below["/a"] == {} and below["/x"] == {} and below["/withdata"] == {}
    assert set(below["/deep"]) == {"ok", "sub"}
    for logged in ("'a//'", "'./'", "'../'", "'x/../'", "'/'", "'nul\\x00x'", "'bad\\udcffname'",
                   "'dup/'", "'both/'", "'LLLLL"):
        assert logged in caplog.text, logged
    # Lookups agree with the listings: nothing that is skipped can be reached by name either.
    assert ns.lookup("/dup").attrs.size == len(b"data of dup")
    for name in ("/x/..", "/nul\0x", "/bad\udcffname"):
        with pytest.raises(NotFound):
            ns.lookup(name)
    with pytest.raises(NameTooLong):  # what the mount answers (fuse_ops checks the path first)
        check_path("/" + "L" * 300)


def test_local_recursive_listing_reports_the_directory_marker(tmp_path):
    """A recursive listing below `d/` reports `d/` itself, as S3 does: a directory rename relies on it
    to move the marker and delete the old one (the old directory used to stay behind, empty)."""
    provider = open_local("t", {"root": str(tmp_path), "create_buckets": "yes"})
    provider.check("b")
    store = provider.bucket("b")
    for key in ("d/", "d/e/", "d/e/f", "d/g", "dz"):
        store.put(key, io.BytesIO(b"x" if not key.endswith("/") else b""), 0 if key.endswith("/") else 1, {})
    keys = [o.key for page in iter_list(store, "d/", delimiter="") for o in page.objects]
    assert keys == ["d/", "d/e/", "d/e/f", "d/g"]
    # Paged one key at a time, the marker comes once, first.
    paged, token = [], None
    for _ in range(10):
        page = store.list("d/", delimiter="", token=token, limit=1)
        paged += [o.key for o in page.objects]
        token = page.next_token
        if not token:
            break
    assert paged == keys
    # A prefix that is not a whole directory does not report the directory's marker.
    assert [o.key for o in store.list("d/e", delimiter="").objects] == ["d/e/", "d/e/f"]
