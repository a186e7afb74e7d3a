"""POSIX where a disk is expected (issue #15), through real mounts on every backend: access times
stored, files unlinked while open, parent directory times, directory link counts, ctime rules."""
from __future__ import annotations

import ctypes
import errno
import os
import stat
import time
from pathlib import Path

import pytest

from tests.fuse.harness import Backend, Env

UTIME_OMIT = (1 << 30) - 2
AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(path: Path, atime_ns: int | None, mtime_ns: int | None) -> None:
    """utimensat(2) with UTIME_OMIT for a None (os.utime cannot omit one of the two)."""
    def spec(value: int | None) -> _Timespec:
        if value is None:
            return _Timespec(0, UTIME_OMIT)
        return _Timespec(*divmod(value, 1_000_000_000))
    times = (_Timespec * 2)(spec(atime_ns), spec(mtime_ns))
    if _libc.utimensat(AT_FDCWD, str(path).encode(), times, 0) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(path))


def tick() -> None:
    """Enough time for a nanosecond clock to move past what the last change stamped."""
    time.sleep(0.02)


def _store_keys(backend: Backend, env: Env) -> list[str]:
    result = env.run("ls", "-l", f"r:{backend.bucket}", check=True)
    return [line.split()[-1] for line in result.stdout.splitlines() if line.strip()]


# Backends where a directory marker keeps user metadata (SEMANTICS.md: SeaweedFS turns markers into
# real directories that keep none).
KEEPS_DIR_TIMES = {"local", "s3_moto", "cos", "wcs", "ufile"}

Y2038 = (1 << 31) + 7          # seconds: past the signed 32-bit limit
Y2106 = (1 << 32) + 5          # past the unsigned 32-bit limit


def test_access_times_are_stored(env, backend):
    mount = env.mount(f"r:{backend.bucket}", options=("write_back=0",))
    path = mount.path / "f.txt"
    path.write_bytes(b"atime")
    created = os.stat(path)
    assert created.st_atime_ns >= created.st_mtime_ns - 10**9   # set on create
    utimensat(path, Y2106 * 10**9 + 123, Y2038 * 10**9 + 456)
    st_ = os.stat(path)
    assert (st_.st_atime_ns, st_.st_mtime_ns) == (Y2106 * 10**9 + 123, Y2038 * 10**9 + 456)
    utimensat(path, 1_500_000_000 * 10**9 + 9, None)           # atime only: mtime stays
    st_ = os.stat(path)
    assert (st_.st_atime_ns, st_.st_mtime_ns) == (1_500_000_000 * 10**9 + 9, Y2038 * 10**9 + 456)
    utimensat(path, None, 1_400_000_000 * 10**9)                # mtime only: atime stays
    assert os.stat(path).st_atime_ns == 1_500_000_000 * 10**9 + 9
    path.read_bytes()                                            # noatime: a read changes nothing
    assert os.stat(path).st_atime_ns == 1_500_000_000 * 10**9 + 9
    assert mount.unmount().returncode == 0
    mount = env.mount(f"r:{backend.bucket}")
    st_ = os.stat(mount.path / "f.txt")
    assert (st_.st_atime_ns, st_.st_mtime_ns) == (1_500_000_000 * 10**9 + 9, 1_400_000_000 * 10**9)


def test_ctime_moves_on_every_change_and_never_back(env, backend):
    mount = env.mount(f"r:{backend.bucket}", options=("write_back=0",))
    path = mount.path / "c.bin"
    path.write_bytes(b"x" * 100)
    last = os.stat(path).st_ctime_ns

    def changed(what: str, target: Path = path) -> None:
        nonlocal last
        now = os.stat(target).st_ctime_ns
        assert now > last, f"{what} left ctime at {now} (was {last})"
        last = now

    tick()
    os.chmod(path, 0o600)
    changed("chmod")
    tick()
    os.chown(path, 1234, 5678)
    changed("chown")
    tick()
    with open(path, "r+b") as f:
        f.write(b"y")
    changed("a write")
    tick()
    os.truncate(path, 10)
    changed("truncate")
    tick()
    os.utime(path, ns=(10**18, 10**18))
    changed("utimens")
    tick()
    renamed = mount.path / "c2.bin"
    os.rename(path, renamed)
    changed("rename", renamed)
    assert mount.unmount().returncode == 0
    mount = env.mount(f"r:{backend.bucket}")
    after = os.stat(mount.path / "c2.bin").st_ctime_ns
    # Stored exactly where the rename rewrote metadata; a server-side move keeps the object's, which
    # was stamped by the utimens just before. Never earlier than that.
    assert after >= last - 10**9 and after >= 10**18, (after, last)


def test_parent_directory_times_and_link_counts(env, backend):
    mount = env.mount(f"r:{backend.bucket}", options=("write_back=0",))
    top = mount.path / "top"
    top.mkdir()
    os.utime(top, ns=(10**18, 10**18))   # an old time, so any change shows

    def moved(what: str) -> None:
        st_ = os.stat(top)
        assert st_.st_mtime_ns > 10**18 and st_.st_ctime_ns >= st_.st_mtime_ns, f"{what}: {st_}"
        os.utime(top, ns=(10**18, 10**18))

    (top / "f").write_bytes(b"1")
    moved("create")
    (top / "sub").mkdir()
    moved("mkdir")
    os.symlink("f", top / "link")
    moved("symlink")
    os.rename(top / "f", top / "g")
    moved("rename within")
    os.unlink(top / "link")
    moved("unlink")
    os.rename(top / "g", mount.path / "g")
    moved("rename out")
    (top / "sub").rmdir()
    moved("rmdir")
    (top / "a").mkdir()
    (top / "b").mkdir()
    (top / "a" / "x").mkdir()
    os.listdir(top)
    assert os.stat(top).st_nlink == 4
    (top / "b").rmdir()
    assert os.stat(top).st_nlink == 3
    os.rename(top / "a", mount.path / "a")
    assert os.stat(top).st_nlink == 2
    os.listdir(mount.path / "a")
    assert os.stat(mount.path / "a").st_nlink == 3
    assert os.stat(mount.path / "g").st_nlink == 1
    (top / "late").write_bytes(b"z")
    shown = os.stat(top).st_mtime_ns
    assert shown > 10**18
    assert mount.unmount().returncode == 0
    mount = env.mount(f"r:{backend.bucket}")
    kept = os.stat(mount.path / "top").st_mtime_ns
    if backend.name in KEEPS_DIR_TIMES:
        assert kept == shown, f"the directory's new time was not kept: {kept} != {shown}"
    else:
        assert kept != shown   # SeaweedFS: SEMANTICS.md says directory times are not kept there


@pytest.mark.parametrize("binding", ["mfusepy", "fusepy"])
def test_unlinked_while_open_keeps_working(local_env, binding):
    mount = local_env.mount("r:b", options=(f"fuse={binding}", "write_back=0"))
    path = mount.path / "tmp.db"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"0123456789")
        os.unlink(path)
        assert not path.exists() and os.listdir(mount.path) == []
        st_ = os.fstat(fd)
        assert (st_.st_nlink, st_.st_size) == (0, 10)
        os.fchmod(fd, 0o600)
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        os.ftruncate(fd, 4)
        assert os.fstat(fd).st_size == 4
        os.utime(fd, ns=(111 * 10**9, 222 * 10**9))
        st_ = os.fstat(fd)
        assert (st_.st_atime_ns, st_.st_mtime_ns) == (111 * 10**9, 222 * 10**9)
        os.pwrite(fd, b"AB", 8)
        assert os.pread(fd, 100, 0) == b"0123\0\0\0\0AB"
        assert os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)
    assert os.listdir(mount.path) == []
    assert mount.unmount().returncode == 0
    assert list((local_env.tmp / "buckets" / "b").iterdir()) == []   # nothing was uploaded


def test_renamed_over_while_open(env, backend):
    mount = env.mount(f"r:{backend.bucket}", options=("write_back=0",))
    old, new = mount.path / "old", mount.path / "new"
    old.write_bytes(b"old contents")
    new.write_bytes(b"replacement")
    with open(old, "rb") as reader:
        os.rename(new, old)
        st_ = os.fstat(reader.fileno())
        assert (st_.st_nlink, st_.st_size) == (0, len(b"old contents"))
    assert old.read_bytes() == b"replacement"
    assert sorted(os.listdir(mount.path)) == ["old"]
    assert mount.unmount().returncode == 0
    assert sorted(_store_keys(backend, env)) == ["old"]


def test_hidden_names_are_not_files_of_the_bucket(local_env):
    """libfuse's `.fuse_hidden…` names never reach the bucket and never cost a request."""
    mount = local_env.mount("r:b")
    name = mount.path / ".fuse_hidden0000000100000002"
    with pytest.raises(FileNotFoundError):
        os.stat(name)
    fd = os.open(mount.path / "x", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"data")
    os.unlink(mount.path / "x")
    assert os.listdir(mount.path) == []
    os.close(fd)
    assert mount.unmount().returncode == 0
    assert list((local_env.tmp / "buckets" / "b").iterdir()) == []


def test_unlinked_file_writes_are_never_uploaded(env, backend):
    mount = env.mount(f"r:{backend.bucket}", options=("write_back=0",))
    path = mount.path / "scratch"
    with open(path, "w+b") as f:
        os.unlink(path)
        f.write(b"s" * 50_000)
        f.flush()
        os.fsync(f.fileno())
        assert os.fstat(f.fileno()).st_size == 50_000
    with pytest.raises(OSError) as info:
        os.stat(path)
    assert info.value.errno == errno.ENOENT
    assert mount.unmount().returncode == 0
    assert _store_keys(backend, env) == []
