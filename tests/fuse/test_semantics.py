"""The SEMANTICS.md claims that need a particular setup: REMOTE: mounts, read-only mounts, a full
staging area, a remote change under an open reader, a server that keeps failing."""
from __future__ import annotations

import errno
import io
import os
import time

import pytest

from storefs.providers.local import open_provider as open_local
from tests.emulators.base import Fault
from tests.fuse.harness import Env, errno_of


@pytest.fixture
def local_env(tmp_path):
    root = tmp_path / "buckets"
    for bucket in ("one", "two"):
        (root / bucket).mkdir(parents=True)
    environment = Env(tmp_path, {"r": {"type": "local", "root": str(root)}})
    environment.root = root
    yield environment
    environment.close()


def test_all_buckets_mount(local_env):
    mount = local_env.mount("r:", options=("write_back=0",))  # close returns once uploaded
    assert sorted(os.listdir(mount.path)) == ["one", "two"]
    (mount.path / "one" / "f").write_text("in bucket one")
    assert (local_env.root / "one" / "f").read_text() == "in bucket one"
    assert errno_of(lambda: os.mkdir(mount.path / "three")) == errno.EPERM
    assert errno_of(lambda: os.rmdir(mount.path / "two")) == errno.EPERM
    assert errno_of(lambda: (mount.path / "top-level-file").write_text("x")) == errno.EPERM
    assert errno_of(lambda: os.rename(mount.path / "one" / "f", mount.path / "two" / "f")) == errno.EXDEV
    os.rename(mount.path / "one" / "f", mount.path / "one" / "g")  # within a bucket: fine
    assert (mount.path / "one" / "g").read_text() == "in bucket one"


def test_read_only_mount(local_env):
    (local_env.root / "one" / "f").write_text("existing")
    mount = local_env.mount("r:one", options=("ro",))
    assert (mount.path / "f").read_text() == "existing"
    assert errno_of(lambda: (mount.path / "new").write_text("x")) == errno.EROFS
    assert errno_of(lambda: open(mount.path / "f", "a")) == errno.EROFS
    assert errno_of(lambda: os.mkdir(mount.path / "d")) == errno.EROFS
    assert errno_of(lambda: os.unlink(mount.path / "f")) == errno.EROFS


def test_no_xattrs_and_root_attributes(local_env):
    mount = local_env.mount("r:one")
    (mount.path / "f").write_text("x")
    assert errno_of(lambda: os.getxattr(mount.path / "f", "user.anything")) == errno.EOPNOTSUPP
    assert errno_of(lambda: os.listxattr(mount.path / "f")) == errno.EOPNOTSUPP
    os.chmod(mount.path, 0o700)  # the root keeps attributes until unmount
    os.utime(mount.path, ns=(1_000_000_000, 2_000_000_000))
    assert mount.path.stat().st_mode & 0o777 == 0o700
    assert mount.path.stat().st_mtime_ns == 2_000_000_000
    assert errno_of(lambda: os.rename(mount.path, mount.path.parent / "elsewhere")) in (errno.EBUSY, errno.EPERM)


def test_full_staging_area_is_enospc(local_env):
    mount = local_env.mount("r:one", options=("staging_size=1M",))
    with open(mount.path / "small", "wb") as f:
        f.write(b"x" * 100_000)
    assert (mount.path / "small").stat().st_size == 100_000

    def too_big():
        with open(mount.path / "big", "wb") as f:
            for _ in range(20):
                f.write(b"y" * 128 * 1024)
                f.flush()
    assert errno_of(too_big) == errno.ENOSPC
    stat = os.statvfs(mount.path)
    assert stat.f_bavail * stat.f_frsize <= 1 << 20


def test_remote_change_under_open_reader_is_estale(local_env):
    # The first 4 KiB read makes the kernel read ~3 MiB ahead, and the reader fetches up to 8 MiB of
    # blocks ahead of that (all of the old version: consistent). Beyond them, a read must fail.
    data = os.urandom(32 << 20)
    (local_env.root / "one" / "f").write_bytes(data)
    mount = local_env.mount("r:one")
    with open(mount.path / "f", "rb") as f:
        assert f.read(4096) == data[:4096]
        store = open_local("x", {"root": str(local_env.root)}).bucket("one")
        time.sleep(0.01)
        store.put("f", io.BytesIO(b"changed" * 1000), 7000, {})
        f.seek(24 << 20)
        assert errno_of(lambda: f.read(4096)) == errno.ESTALE
    # Reopened, it reads the new version.
    time.sleep(1.1)  # the kernel's attribute cache
    assert (mount.path / "f").read_bytes()[:7] == b"changed"


def test_server_that_keeps_failing_gives_eio(tmp_path, wcs_emulator):
    bucket = "eio"
    wcs_emulator.create_bucket(bucket)
    environment = Env(tmp_path, {"w": {k: str(v) for k, v in wcs_emulator.config().items()}})
    try:
        mount = environment.mount(f"w:{bucket}")
        (mount.path / "f").write_text("data")
        fault = wcs_emulator.faults.add(Fault(op="*", nth=1, count=10_000, action="status", status=503))
        try:
            started = time.monotonic()
            assert errno_of(lambda: (mount.path / "g").write_text("more")) == errno.EIO
            assert time.monotonic() - started < 150  # retries are bounded
        finally:
            wcs_emulator.faults.clear()
        del fault
        # The mount is alive and works again once the server does.
        (mount.path / "h").write_text("after")
        assert (mount.path / "h").read_text() == "after"
        assert "failed after" in environment.log_tail(200) or "503" in environment.log_tail(200)
    finally:
        environment.close()


def test_request_the_server_rejects_as_invalid_is_einval(tmp_path, cos_emulator):
    bucket = "einval"
    cos_emulator.create_bucket(bucket)
    environment = Env(tmp_path, {"c": {k: str(v) for k, v in cos_emulator.config().items()}})
    try:
        mount = environment.mount(f"c:{bucket}")
        cos_emulator.faults.add(Fault(op="*", nth=1, count=1, action="status", status=400))
        try:
            assert errno_of(lambda: os.stat(mount.path / "asked-once")) == errno.EINVAL
        finally:
            cos_emulator.faults.clear()
        assert "(injected fault)" in environment.log_tail(200)  # logged with the server's answer
        assert errno_of(lambda: os.stat(mount.path / "asked-again")) == errno.ENOENT  # the mount lives on
    finally:
        environment.close()
