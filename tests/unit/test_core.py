"""Pure pieces of the core: the errno table (and SEMANTICS.md), metadata conventions, names, options."""
from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest

from storefs import errors
from storefs.attrs import Defaults, attrs_from_object, meta_from_attrs, parse_mtime_ns
from storefs.errors import ConfigError, NameTooLong, errno_for
from storefs.options import MountOptions, parse_size
from storefs.paths import KeyMap, check_path, child_name
from storefs.store.contract import Capabilities, ObjectInfo
from storefs.fs.bucket.uploader import part_size_for

SEMANTICS = (Path(__file__).resolve().parents[2] / "SEMANTICS.md").read_text()


def test_errno_table():
    expected = {
        errors.NotFound: errno.ENOENT, errors.AlreadyExists: errno.EEXIST, errors.NotEmpty: errno.ENOTEMPTY,
        errors.IsADirectory: errno.EISDIR, errors.NotADirectory: errno.ENOTDIR,
        errors.AccessDenied: errno.EACCES, errors.ReadOnly: errno.EROFS, errors.NotSupported: errno.EOPNOTSUPP,
        errors.NotPermitted: errno.EPERM, errors.NameTooLong: errno.ENAMETOOLONG, errors.CrossDevice: errno.EXDEV,
        errors.RemoteChanged: errno.ESTALE, errors.ArchiveNotReady: errno.EAGAIN, errors.CacheFull: errno.ENOSPC,
        errors.Transient: errno.EIO, errors.Throttled: errno.EIO, errors.ProtocolError: errno.EIO,
        errors.InvalidArgument: errno.EINVAL,
    }
    for cls, code in expected.items():
        assert errno_for(cls("x")) == code, cls
    assert errno_for(KeyError("x")) == errno.EIO
    assert errno_for(FileNotFoundError("no errno")) == errno.EIO  # errno None: never passed to fusepy
    assert errno_for(OSError(errno.ENOSPC, "disk full")) == errno.ENOSPC


def test_no_refusal_is_enosys():
    assert errno.ENOSYS not in errors.ERRNO_TABLE.values()


def test_semantics_names_every_errno_a_mount_answers():
    documented = set(re.findall(r"`(E[A-Z]+)`", SEMANTICS))
    for cls, code in errors.ERRNO_TABLE.items():
        if cls in (errors.ArchiveNotReady,):  # vaults and archive classes: a later section
            continue
        names = {name for name in dir(errno) if name.startswith("E") and getattr(errno, name) == code}
        assert names & documented, f"{cls.__name__} -> {sorted(names)} not in SEMANTICS.md"


def test_mtime_conventions():
    assert parse_mtime_ns({"mtime": "1700000000"}) == 1_700_000_000_000_000_000
    assert parse_mtime_ns({"mtime": "1700000000.5"}) == 1_700_000_000_500_000_000  # rclone's float
    assert parse_mtime_ns({"mtime": "1700000000", "storefs-mtime-ns": "1700000000123456789"}) == 1700000000123456789
    # A tool that rewrote `mtime` alone wins over our stale nanoseconds.
    assert parse_mtime_ns({"mtime": "1800000000", "storefs-mtime-ns": "1700000000123456789"}) == 1_800_000_000 * 10**9
    assert parse_mtime_ns({"mtime": "garbage"}) is None
    assert parse_mtime_ns({}) is None


def test_attrs_roundtrip_through_meta():
    defaults = Defaults(uid=1000, gid=1000)
    info = ObjectInfo("k", 5, "e", 1_600_000_000.0, {})
    attrs = attrs_from_object(info, defaults)
    assert attrs.mode == 0o100644 and attrs.uid == 1000 and attrs.mtime_ns == 1_600_000_000 * 10**9
    attrs.mode, attrs.uid, attrs.mtime_ns = 0o100600, 0, 1_600_000_000_000_000_001
    meta = meta_from_attrs(attrs, {"other-tool": "kept"})
    assert meta["mtime"] == "1600000000" and meta["other-tool"] == "kept"
    again = attrs_from_object(ObjectInfo("k", 5, "e", 1.0, meta), defaults)
    assert (again.mode, again.uid, again.mtime_ns) == (0o100600, 0, 1_600_000_000_000_000_001)
    link = attrs_from_object(ObjectInfo("l", 3, "e", 1.0, {"mode": str(0o120777)}), defaults)
    assert link.is_symlink
    marker = attrs_from_object(ObjectInfo("d/", 0, "e", 1.0, {"mode": str(0o40700)}), defaults)
    assert marker.is_dir and marker.mode & 0o777 == 0o700


def test_keys_and_names():
    keys = KeyMap.for_prefix("photos/2024/")
    assert keys.key("/a/b.jpg") == "photos/2024/a/b.jpg"
    assert keys.dir_key("/") == "photos/2024/" and keys.dir_key("/a") == "photos/2024/a/"
    assert KeyMap.for_prefix("").dir_key("/") == ""
    with pytest.raises(NameTooLong):
        check_path("/" + "x" * 256)
    check_path("/" + "x" * 255)
    with pytest.raises(NameTooLong):
        check_path("/" + "/".join(["y" * 200] * 6))  # over 1024 bytes of key
    assert child_name("d/", "d/file") == "file"
    assert child_name("d/", "d/sub/") == "sub"
    assert child_name("d/", "d/") is None
    for unshowable in ["d//x", "d/./", "d/../", "d/" + "z" * 256]:
        assert child_name("d/", unshowable) is None


def test_part_size():
    caps = Capabilities(min_part_size=5 << 20, max_parts=10_000)
    assert part_size_for(100 << 20, caps, 8 << 20) == 8 << 20
    assert part_size_for(1 << 40, caps, 8 << 20) == -(-(1 << 40) // 10_000)  # fits in 10,000 parts
    assert part_size_for(10 << 20, caps, 1 << 20) == 5 << 20


def test_mount_options():
    opts = MountOptions.parse(["ro,uid=1000", "attr_ttl=2.5,staging_size=10G", "umask=077"])
    assert opts.read_only and opts.uid == 1000 and opts.attr_ttl == 2.5
    assert opts.staging_size == 10 << 30 and opts.umask == 0o077
    assert parse_size("512M", "x") == 512 << 20 and parse_size("4096", "x") == 4096
    for bad in (["nosuchoption"], ["uid"], ["ro=1"], ["staging_size=lots"], ["upload_workers=0"]):
        with pytest.raises(ConfigError):
            MountOptions.parse(bad)


def test_all_buckets_delegates_the_fast_paths_its_features_declare():
    # A REMOTE: mount takes its buckets' features record: every fast path left on there is one it
    # serves by handing the call to the bucket's store (an S3 REMOTE: mount failed its ranged reads before).
    import dataclasses

    from storefs.fs.bucket.ranges import read_pieces
    from storefs.store.buckets import AllBuckets

    class Bucket:
        capabilities = Capabilities(ranged_pieces=True, ranged_into_files=True, batched_stat=True)

        def read_range_pieces(self, key, start, end, piece, *, if_match=None):
            return [f"{key}:{start}-{end}/{piece}:{if_match}".encode()]

        def read_range_to_files(self, key, start, end, piece, files, *, if_match=None):
            return (key, start, end, piece, list(files), if_match) == ("k", 0, 4, 2, [7, 8], "e")

    class Provider:
        remote = "r"

        def bucket(self, name):
            return Bucket()

    store = AllBuckets(Provider())
    assert store.capabilities == dataclasses.replace(Bucket.capabilities, root_writable=False, batched_stat=False)
    assert read_pieces(store, "b/k", 0, 4, 2, if_match="e") == [b"k:0-4/2:e"]
    assert store.read_range_to_files("b/k", 0, 4, 2, [7, 8], if_match="e")
