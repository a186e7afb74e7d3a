"""Hostile and odd input through real mounts (issue #6): names a user can type, names at and past the
limits of SEMANTICS.md ("Objects, directories and names"), and keys that other tools put in a bucket
which no filesystem can show as they are.

Every object key is checked with a direct client (the provider itself, not the mount): a name must
land under exactly the key SEMANTICS.md promises, and come back byte for byte after a remount.
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import subprocess
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

from storefs.store.registry import provider_module
from storefs.store.contract import ObjectStore, iter_list
from tests.fuse.harness import Backend, Env, errno_of, make_backend

NAME_MAX = 255
KEY_MAX = 1024

CAFE_NFC = unicodedata.normalize("NFC", "café")
CAFE_NFD = unicodedata.normalize("NFD", "café")
assert CAFE_NFC.encode() != CAFE_NFD.encode()

# Names a user can create, each with something a careless layer would rewrite: URL escapes (`%41`,
# `%2F`, `+` read as a space by form decoding), shell and glob characters, RFC 2047 look-alikes,
# leading/trailing blanks, a newline, and names made only of dots other than `.` and `..`.
ODD_NAMES = [
    CAFE_NFC, CAFE_NFD, "名前 with spaces", "with space", " leading space", "trailing space ",
    "100%", "%41", "a%2Fb", "a+b", "+", "q?mark", "hash#tag", "amp&and", "back\\slash", "new\nline",
    "tab\there", "-leading-dash", "~tilde", "'single'", '"double"', "star*", "semi;colon", "eq=al",
    "=?UTF-8?B?SGk=?=", "...", ".hidden", "..x", "a:b|c<d>e", "emoji \U0001F600", "\u200bzero-width",
]
ODD_DIR = "dir %+?#&'~"
# What a test server itself cannot store (the same with boto3), not storefs: moto's HTTP routing answers
# 404 to a key with a newline; SeaweedFS turns `\` into `/` (so `a\b` becomes a file `b` in `a/`).
SERVER_CANNOT = {"s3_moto": {"new\nline"}, "s3_seaweed": {"back\\slash"}}
LONG_ASCII = "n" * NAME_MAX
LONG_UTF8 = "名" * (NAME_MAX // 3)               # 85 three-byte characters: exactly 255 bytes
TOO_LONG_ASCII = "n" * (NAME_MAX + 1)
TOO_LONG_UTF8 = "名" * (NAME_MAX // 3) + "x"       # 256 bytes
assert len(LONG_UTF8.encode()) == NAME_MAX and len(TOO_LONG_UTF8.encode()) == NAME_MAX + 1


def content(name: str) -> bytes:
    """Distinct bytes per name, so a mix-up of two names shows."""
    return ("body of " + repr(name)).encode("utf-8") * 3


@contextlib.contextmanager
def direct_store(backend: Backend) -> Iterator[ObjectStore]:
    """The backend's bucket through its provider: what is really stored, not what the mount shows."""
    section = dict(backend.section)
    provider = provider_module(section.pop("type")).open_provider("direct", section)
    try:
        yield provider.bucket(backend.bucket)
    finally:
        provider.close()


def all_keys(store: ObjectStore) -> set[str]:
    keys: set[str] = set()
    for page in iter_list(store, "", delimiter=""):
        keys.update(o.key for o in page.objects)
        keys.update(page.prefixes)
    return keys


def file_keys(store: ObjectStore) -> set[str]:
    return {k for k in all_keys(store) if not k.endswith("/")}


# ---------------------------------------------------------------------------------------------
# 1. Names through the mount, on every backend


def test_odd_names_round_trip(env, backend):
    """Create, list, stat, read, remount, rename and delete odd names; keys are exactly the names."""
    names = [n for n in ODD_NAMES if n not in SERVER_CANNOT.get(backend.name, ())] + [LONG_ASCII, LONG_UTF8]
    mount = env.mount(f"r:{backend.bucket}")
    root = mount.path
    for name in names:
        (root / name).write_bytes(content(name))
    (root / ODD_DIR).mkdir()
    (root / ODD_DIR / CAFE_NFD).write_bytes(content("inner"))
    os.symlink("target %+?#", root / "link %+?#")
    listed = set(os.listdir(root))
    assert set(names) <= listed, set(names) - listed
    assert CAFE_NFC in listed and CAFE_NFD in listed  # two names, not one normalised name
    for name in names:
        assert (root / name).stat().st_size == len(content(name)), name
        assert (root / name).read_bytes() == content(name), name
    assert mount.unmount().returncode == 0

    expected = set(names) | {ODD_DIR + "/", ODD_DIR + "/" + CAFE_NFD, "link %+?#"}
    with direct_store(backend) as store:
        assert all_keys(store) == expected
        assert store.read_range(CAFE_NFD, 0, 1000) == content(CAFE_NFD)
        assert store.read_range(CAFE_NFC, 0, 1000) == content(CAFE_NFC)

    again = env.mount(f"r:{backend.bucket}")
    root = again.path
    listed = set(os.listdir(root))
    assert listed == set(names) | {ODD_DIR, "link %+?#"}
    assert os.listdir(root / ODD_DIR) == [CAFE_NFD]
    assert os.readlink(root / "link %+?#") == "target %+?#"
    for name in names:
        assert (root / name).read_bytes() == content(name), name
    # ls and stat(1) of every name, as a user would
    result = subprocess.run(["ls", "-la", "--quoting-style=c", str(root)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    # Rename every file to another odd name (odd -> odd), then delete half of them.
    renamed = {name: ("r " + name)[:NAME_MAX] if len(name.encode()) < NAME_MAX - 2 else name[:-2] + "%+"
               for name in names}
    for old, new in renamed.items():
        os.rename(root / old, root / new)
    for old, new in renamed.items():
        assert not (root / old).exists() or old in renamed.values(), old
        assert (root / new).read_bytes() == content(old), new
    doomed = sorted(renamed.values())[::2]
    for name in doomed:
        os.unlink(root / name)
    os.rename(root / ODD_DIR, root / "moved ?#%")
    assert (root / "moved ?#%" / CAFE_NFD).read_bytes() == content("inner")
    kept = set(renamed.values()) - set(doomed)
    assert set(os.listdir(root)) == kept | {"moved ?#%", "link %+?#"}
    with direct_store(backend) as store:
        assert all_keys(store) == kept | {"moved ?#%/", "moved ?#%/" + CAFE_NFD, "link %+?#"}
        for old, new in renamed.items():
            if new in kept:
                assert store.read_range(new, 0, 1000) == content(old), new


def test_name_and_key_limits(env, backend):
    """255-byte names work everywhere; 256 bytes is ENAMETOOLONG for every way of making a name;
    keys up to 1024 bytes work and one byte more is ENAMETOOLONG."""
    mount = env.mount(f"r:{backend.bucket}", options=("write_back=0",))
    root = mount.path
    (root / "f").write_text("x")
    (root / "d").mkdir()
    for too_long in (root / TOO_LONG_ASCII, root / TOO_LONG_UTF8):
        assert errno_of(lambda p=too_long: p.write_text("x")) == errno.ENAMETOOLONG
        assert errno_of(lambda p=too_long: os.mkdir(p)) == errno.ENAMETOOLONG
        assert errno_of(lambda p=too_long: os.rename(root / "f", p)) == errno.ENAMETOOLONG
        assert errno_of(lambda p=too_long: os.rename(root / "d", p)) == errno.ENAMETOOLONG
        assert errno_of(lambda p=too_long: os.symlink("f", p)) == errno.ENAMETOOLONG
        assert errno_of(lambda p=too_long: os.stat(p)) == errno.ENAMETOOLONG
    for long_name in (LONG_ASCII, LONG_UTF8):
        os.rename(root / "f", root / long_name)
        os.rename(root / long_name, root / "f")
        os.mkdir(root / "d" / long_name)
        os.symlink("../f", root / "d" / long_name / long_name)
        assert os.readlink(root / "d" / long_name / long_name) == "../f"
    assert sorted(os.listdir(root / "d")) == sorted([LONG_ASCII, LONG_UTF8])

    # 30 levels deep, then to the key limit: the file's key is exactly 1024 bytes.
    level = "L" * 30
    deep = root.joinpath(*[f"{i:02d}{level}" for i in range(30)])   # 30 * 33 = 990 bytes of key
    deep.mkdir(parents=True)
    key_so_far = len(str(deep.relative_to(root)).encode()) + 1       # with the "/" before the name
    last = "z" * (KEY_MAX - key_so_far)
    (deep / last).write_bytes(b"deepest")
    assert (deep / last).read_bytes() == b"deepest"
    assert errno_of(lambda: (deep / (last + "z")).write_bytes(b"x")) == errno.ENAMETOOLONG
    assert errno_of(lambda: os.mkdir(deep / (last + "z"))) == errno.ENAMETOOLONG
    assert errno_of(lambda: os.rename(deep / last, deep / (last + "z"))) == errno.ENAMETOOLONG
    # A directory's marker is its key plus "/": a directory whose key is 1024 bytes cannot exist.
    assert errno_of(lambda: os.mkdir(deep / ("y" * len(last)))) == errno.ENAMETOOLONG
    os.mkdir(deep / ("y" * (len(last) - 1)))   # marker key: exactly 1024 bytes
    # Renaming a directory so that a key below it would pass the limit is refused before anything
    # is copied: the tree stays whole under its old name.
    top = root / f"00{level}"
    assert errno_of(lambda: os.rename(top, root / (top.name + "-longer"))) == errno.ENAMETOOLONG
    assert (deep / last).read_bytes() == b"deepest"
    assert not (root / (top.name + "-longer")).exists()
    with direct_store(backend) as store:
        key = str((deep / last).relative_to(root))
        assert len(key.encode()) == KEY_MAX
        assert store.read_range(key, 0, 100) == b"deepest"
    result = subprocess.run(["find", str(root)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert str(deep / last) in result.stdout.splitlines()


# ---------------------------------------------------------------------------------------------
# 2. Keys that other tools put in a bucket and no filesystem can show as they are

# key -> why it is there. Only `a`, `x`, `dup`, `both`, `withdata`, `ctl\x01x`, `ok.txt` and `deep` can
# be shown (SEMANTICS.md, "Objects, directories and names").
HOSTILE_KEYS = {
    "a//b": "an empty component: `a` shows, empty",
    "./x": "a `.` component: skipped",
    "../x": "a `..` component: skipped",
    "x/../../etc/passwd": "`..` below `x`: `x` shows, empty; nothing outside the mount is touched",
    "/leading": "an empty first component: skipped",
    "dup": "a file and a marker `dup/` of the same name: the file shows",
    "dup/": "",
    "both": "a file and keys below `both/`: the file shows",
    "both/y": "",
    "withdata/": "a marker with data: a directory",
    "L" * 300: "a name over 255 bytes: skipped",
    "nul\0x": "a NUL: skipped",
    "ctl\x01x": "a control character: a legal file name, shown",
    "ok.txt": "an ordinary file",
    "deep/ok": "an ordinary file below a directory without marker",
}
SHOWN_AT_TOP = {"a", "x", "dup", "both", "withdata", "ctl\x01x", "ok.txt", "deep"}
SKIPPED_LOGGED = ["'a//'", "'./'", "'../'", "'x/../'", "'/'", "'" + "L" * 300 + "'", "'nul\\x00x'"]
NOT_UTF8 = "bad\udcffname"  # how a provider hands over a key whose bytes are not UTF-8


def body_of(key: str) -> bytes:
    return b"data of " + key.encode("utf-8", "surrogatepass")


def put_raw(request, backend: Backend, key: str) -> None:
    """Create a key behind the mount's back, with the server's own client: no storefs check applies."""
    if backend.name == "s3_moto":
        request.getfixturevalue("moto_server").client().put_object(Bucket=backend.bucket, Key=key,
                                                                   Body=body_of(key))
    else:
        request.getfixturevalue(f"{backend.name}_emulator").blobs.put(backend.bucket, key, body_of(key))


def snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int]]:
    """Every file under `root` (not under `skip`): path -> (size, mtime_ns)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        for name in filenames:
            path = Path(dirpath, name)
            with contextlib.suppress(FileNotFoundError):
                st = path.lstat()
                found[str(path)] = (st.st_size, st.st_mtime_ns)
    return found


@pytest.fixture(params=["s3_moto", "wcs", "ufile"])
def raw_backend(request, tmp_path) -> Backend:
    return make_backend(request.param, request, tmp_path)


def test_unshowable_keys_are_skipped_safely(request, tmp_path, raw_backend):
    backend = raw_backend
    keys = dict(HOSTILE_KEYS)
    if backend.name != "s3_moto":
        keys[NOT_UTF8] = "bytes that are not UTF-8: skipped"  # S3 keys are UTF-8 on the wire
    for key in keys:
        put_raw(request, backend, key)
    env = Env(tmp_path, {"r": backend.section})
    try:
        mount = env.mount(f"r:{backend.bucket}")
        root = mount.path
        cache = tmp_path / "cache"
        runtime = tmp_path / "run"  # storefs's own mount record and status file
        outside_before = snapshot(tmp_path, (root, cache, runtime))
        outside_before.update(snapshot(tmp_path.parent, (tmp_path,)))

        assert set(os.listdir(root)) == SHOWN_AT_TOP
        assert os.listdir(root / "a") == [] and os.listdir(root / "x") == []
        assert os.listdir(root / "withdata") == [] and (root / "withdata").is_dir()
        assert os.listdir(root / "deep") == ["ok"]
        for name in ("dup", "both", "ctl\x01x", "ok.txt"):
            assert (root / name).is_file() and (root / name).read_bytes() == body_of(name), name
        assert (root / "deep" / "ok").read_bytes() == body_of("deep/ok")
        assert errno_of(lambda: os.stat(root / "both" / "y")) == errno.ENOTDIR
        assert errno_of(lambda: os.stat(root / ("L" * 300))) == errno.ENAMETOOLONG
        # Everything visible reads; `find` walks the whole tree and ends.
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                Path(dirpath, name).read_bytes()
        started = time.monotonic()
        result = subprocess.run(["find", str(root)], capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - started < 30
        assert len(result.stdout.splitlines()) == 1 + len(SHOWN_AT_TOP) + 1  # root, top names, deep/ok
        # A directory that holds only keys it cannot show looks empty, but is not removed with them.
        assert errno_of(lambda: os.rmdir(root / "x")) == errno.ENOTEMPTY
        # The mount writes nothing outside its cache directory, and changes none of the keys.
        outside_after = snapshot(tmp_path, (root, cache, runtime))
        outside_after.update(snapshot(tmp_path.parent, (tmp_path,)))
        assert outside_after == outside_before
        assert mount.unmount().returncode == 0
        with direct_store(backend) as store:
            assert all_keys(store) >= set(keys) - {"a//b", "x/../../etc/passwd", "both/y", "deep/ok"}
            assert file_keys(store) == {k for k in keys if not k.endswith("/")}
        log = env.log_tail(1000)
        for shown in SKIPPED_LOGGED:
            assert f"skipping key {shown}" in log, (shown, log)
        assert "'dup/'" in log and "'both/'" in log  # the hidden directories are named in the log
        if NOT_UTF8 in keys:
            assert "not valid UTF-8" in log
    finally:
        env.close()


def test_cos_folder_and_file_of_one_name(tmp_path, request):
    """COS v4 can hold a file and a folder of one name, and long names: the file shows, with a log."""
    backend = make_backend("cos", request, tmp_path)
    with direct_store(backend) as store:
        for key in ("dup", "both", "both/y", "L" * 300, "ok"):
            store.put(key, io.BytesIO(body_of(key)), len(body_of(key)), {})
        store.put("dup/", io.BytesIO(b""), 0, {})
    env = Env(tmp_path, {"r": backend.section})
    try:
        root = env.mount(f"r:{backend.bucket}").path
        assert set(os.listdir(root)) == {"dup", "both", "ok"}
        for name in ("dup", "both", "ok"):
            assert (root / name).read_bytes() == body_of(name)
        result = subprocess.run(["find", str(root)], capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0 and len(result.stdout.splitlines()) == 4, result
        log = env.log_tail(1000)
        assert "'dup/'" in log and "'both/'" in log and "skipping key 'LLLL" in log
    finally:
        env.close()


@pytest.mark.parametrize("binding", ["mfusepy", "fusepy"])
def test_names_that_are_not_utf8_are_refused(tmp_path, request, binding):
    """The kernel may hand over any bytes; object keys are UTF-8. Such a name is refused (EINVAL) for
    every way of making or finding a name, nothing is created, and the mount goes on working. (With
    mfusepy such names reached storefs as surrogates and were staged, then could not be uploaded.)"""
    env = Env(tmp_path, {"r": make_backend("local", request, tmp_path).section})
    request.addfinalizer(env.close)
    bucket = os.listdir(tmp_path / "buckets")[0]
    mount = env.mount(f"r:{bucket}", options=(f"fuse={binding}",))
    (mount.path / "good").write_text("ok")
    bad = os.fsencode(str(mount.path)) + b"/bad\xffname"
    good = os.fsencode(str(mount.path / "good"))
    assert errno_of(lambda: os.open(bad, os.O_WRONLY | os.O_CREAT, 0o644)) == errno.EINVAL
    assert errno_of(lambda: os.mkdir(bad)) == errno.EINVAL
    assert errno_of(lambda: os.stat(bad)) == errno.EINVAL
    assert errno_of(lambda: os.rename(good, bad)) == errno.EINVAL
    assert errno_of(lambda: os.symlink(b"good", bad)) == errno.EINVAL
    assert os.listdir(mount.path) == ["good"] and (mount.path / "good").read_text() == "ok"
    assert mount.unmount().returncode == 0
    assert os.listdir(tmp_path / "buckets" / bucket) == ["good"]
