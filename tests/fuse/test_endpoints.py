"""Each native service's endpoint conventions through a real mount (issue #13 items 8-10): COS v4's API
and download hosts and the Content-Type of written files, UFile's download (CDN) suffix and ARCHIVE class
restored on open, and WCS's refusal to mount without a download domain. Every emulator listens on
127.0.0.1; vendor host names appear only in Host headers."""
from __future__ import annotations

import errno
import os
import time

import pytest

from tests.emulators.cos import CosEmulator
from tests.emulators.ufile import UfileEmulator
from tests.emulators.wcs import WcsEmulator
from tests.fuse.harness import Env, errno_of


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def envs(tmp_path):
    made: list[Env] = []

    def make(sections: dict[str, dict[str, str]]) -> Env:
        home = tmp_path / f"env{len(made)}"
        home.mkdir()
        env = Env(home, sections)
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()


def test_cos_mount_uses_the_api_and_download_hosts(tmp_path, envs):
    with CosEmulator(root=tmp_path / "cos", buckets=("bkt",), download_host="cosgz.myqcloud.com") as emu:
        emu.api_host = "gz.file.myqcloud.com"     # the API answers to its own name only
        emu.strict_download_host = True           # downloads only to <bucket>-<appid>.cosgz.myqcloud.com
        section = {"type": "cos", "appid": emu.appid, "secret_id": emu.secret_id, "secret_key": emu.secret_key,
                   "hostname": "gz.file.myqcloud.com", "endpoint": emu.url, "download_endpoint": emu.url}
        env = envs({"c": section})
        mount = env.mount("c:bkt", options=("write_back=0",))
        (mount.path / "docs").mkdir()
        (mount.path / "docs/page.html").write_bytes(b"<html>hi</html>")
        (mount.path / "blob").write_bytes(b"no extension")
        assert mount.unmount().returncode == 0
        # A fresh mount has nothing cached: the bytes come from the download host.
        mount = env.mount("c:bkt")
        assert read(mount.path / "docs/page.html") == b"<html>hi</html>"
        assert read(mount.path / "blob") == b"no extension"
        assert mount.unmount().returncode == 0
        hosts = {host for (kind, host) in emu.hosts}
        assert ("api", "gz.file.myqcloud.com") in emu.hosts
        assert ("download", "bkt-1250000000.cosgz.myqcloud.com") in emu.hosts
        assert hosts == {"gz.file.myqcloud.com", "bkt-1250000000.cosgz.myqcloud.com"}
        page = emu.blobs.get("bkt", "docs/page.html")
        assert page.meta["custom_headers"] == {"Content-Type": "text/html"}
        assert emu.blobs.get("bkt", "blob").meta["custom_headers"] == {}


def test_ufile_mount_reads_through_the_download_suffix(tmp_path, envs):
    cdn = ".uvideo.ucloud.com.cn"
    with UfileEmulator(root=tmp_path / "ufile", buckets=("bkt",)) as emu:
        emu.download_suffix = cdn
        section = {**{k: str(v) for k, v in emu.config().items()}, "downloadsuffix": cdn}
        section["uploadsuffix"] = section.pop("upload_suffix")   # the SDK's spelling of both keys
        env = envs({"u": section})
        mount = env.mount("u:bkt", options=("write_back=0",))
        (mount.path / "clip.mp4").write_bytes(b"frames" * 1000)
        assert mount.unmount().returncode == 0
        mount = env.mount("u:bkt")
        assert read(mount.path / "clip.mp4") == b"frames" * 1000
        assert mount.unmount().returncode == 0
        assert emu.hosts[("get", "bkt" + cdn)] >= 1
        assert emu.hosts[("get", "bkt.ufile.test")] == 0       # no read went to the upload host
        assert emu.hosts[("put", "bkt.ufile.test")] >= 1


def test_ufile_archive_files_are_restored_on_open(tmp_path, envs):
    with UfileEmulator(root=tmp_path / "ufile", buckets=("bkt",)) as emu:
        emu.restore_delay = 2.0
        cold = os.urandom(200_000)
        emu.blobs.put("bkt", "old/db.tar", cold, storage_class="ARCHIVE")
        emu.blobs.put("bkt", "old/sub/b.bin", b"second", storage_class="ARCHIVE")
        emu.blobs.put("bkt", "warm.txt", b"warm", storage_class="STANDARD")
        env = envs({"u": {k: str(v) for k, v in emu.config().items()}})
        mount = env.mount("u:bkt", options=("xattr",))
        root = mount.path
        assert os.path.getsize(root / "old/db.tar") == len(cold)
        assert os.getxattr(root / "old/db.tar", "user.storefs.storage_class") == b"ARCHIVE"
        assert os.getxattr(root / "old/db.tar", "user.storefs.retrieval") == b"none"
        assert read(root / "warm.txt") == b"warm"
        # The first open fails at once with EAGAIN and asks for exactly one restore.
        started = time.monotonic()
        assert errno_of(lambda: read(root / "old/db.tar")) == errno.EAGAIN
        assert time.monotonic() - started < 10
        assert emu.restore_requests == 1
        assert os.getxattr(root / "old/db.tar", "user.storefs.retrieval").startswith(b"in-progress")
        assert errno_of(lambda: read(root / "old/db.tar")) == errno.EAGAIN
        assert emu.restore_requests == 1                    # one restore, however many opens
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not os.getxattr(
                root / "old/db.tar", "user.storefs.retrieval").startswith(b"ready"):
            time.sleep(0.3)
        assert os.getxattr(root / "old/db.tar", "user.storefs.retrieval").startswith(b"ready until 20")
        assert read(root / "old/db.tar") == cold
        # `storefs restore --wait` on a directory of the mount, as for S3's archive classes.
        result = env.run("restore", "--wait", "--timeout", "60", str(root / "old"))
        assert result.returncode == 0, result.stderr
        assert "2 archive(s): 2 ready, 0 in progress, 0 failed; 1 job(s) started now" in result.stdout
        assert read(root / "old/sub/b.bin") == b"second"
        assert emu.restore_requests == 2


def test_wcs_mount_without_get_url_is_refused_with_what_to_set(tmp_path, envs):
    with WcsEmulator(root=tmp_path / "wcs", buckets=("bkt",)) as emu:
        section = {k: str(v) for k, v in emu.config().items() if k != "get_url"}
        env = envs({"w": section})
        mountpoint = tmp_path / "m"
        mountpoint.mkdir()
        result = env.run("mount", "w:bkt", str(mountpoint), timeout=60)
        assert result.returncode == 2, (result.returncode, result.stderr)
        line = result.stderr.strip()
        assert len(line.splitlines()) == 1, line
        for word in ("[w]", "get_url is not set", "get_url = https://", "get_url = none", "EOPNOTSUPP"):
            assert word in line, (word, line)
        assert not os.path.ismount(mountpoint)
        assert emu.secret_key not in result.stderr + result.stdout


def test_wcs_mount_with_get_url_none_writes_and_refuses_reads(tmp_path, envs):
    with WcsEmulator(root=tmp_path / "wcs", buckets=("bkt",)) as emu:
        section = {**{k: str(v) for k, v in emu.config().items()}, "get_url": "none"}
        env = envs({"w": section})
        mount = env.mount("w:bkt", options=("write_back=0",))
        (mount.path / "upload-only.txt").write_bytes(b"sent, never read back")
        assert mount.unmount().returncode == 0
        blob = emu.blobs.get("bkt", "upload-only.txt")
        assert blob is not None and blob.size == len(b"sent, never read back")
        mount = env.mount("w:bkt")
        assert os.listdir(mount.path) == ["upload-only.txt"]
        assert os.path.getsize(mount.path / "upload-only.txt") == len(b"sent, never read back")
        assert errno_of(lambda: read(mount.path / "upload-only.txt")) == errno.EOPNOTSUPP
