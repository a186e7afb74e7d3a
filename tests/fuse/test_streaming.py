"""Streamed uploads (SEMANTICS.md, Uploads): a large file written in sequence from empty goes up in parts
while it is still written, through a real mount.

The providers' single-PUT size is lowered (S3: 1 MiB, 5 MiB parts) so that a 24 MiB file streams;
what the server holds is read behind the mount's back through a store of its own.
"""
from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from storefs.providers.local import open_provider as open_local
from storefs.providers.s3 import open_provider as open_s3
from tests.fuse.harness import Env, make_backend, wait_until

MiB = 1024 * 1024
PART = 5 * MiB


def _setup(tmp_path, request, server: str):
    backend = make_backend(server, request, tmp_path)
    if server == "local":
        direct = open_local("direct", backend.section).bucket(backend.bucket)
        part = 8 * MiB   # local: 16 MiB single PUTs, 8 MiB parts
    else:
        backend.section["single_put_max"] = str(1 * MiB)
        direct = open_s3("direct", {k: v for k, v in backend.section.items() if k != "type"}).bucket(backend.bucket)
        part = PART
    env = Env(tmp_path, {"r": backend.section})
    return env, backend, direct, part


def _uploads(direct, key: str) -> list:
    return [u for u in direct.list_multipart() if u.key == key]


def _parts_held(direct, key: str) -> int:
    uploads = _uploads(direct, key)
    return sum(len(direct.list_parts(u)) for u in uploads)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stored_sha(direct, key: str) -> str:
    info = direct.stat(key)
    return _sha(direct.read_range(key, 0, info.size))


@pytest.mark.parametrize("server", ["s3_moto", "s3_seaweed", "local"])
def test_a_big_sequential_write_goes_up_while_written(tmp_path, request, server):
    env, backend, direct, part = _setup(tmp_path, request, server)
    try:
        mount = env.mount(f"r:{backend.bucket}", options=("stream_uploads", "write_back=0",
                                                          f"part_size={part // MiB}M"))
        data = os.urandom(6 * part + 12345)
        fd = os.open(mount.path / "big.bin", os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            for offset in range(0, 5 * part, MiB):
                os.write(fd, data[offset:offset + MiB])
            # Still open: the server already holds parts of it.
            wait_until(lambda: _parts_held(direct, "big.bin") >= 2, 60, "parts sent while the file is open")
            os.write(fd, data[5 * part:])
        finally:
            os.close(fd)   # write_back=0: returns once uploaded
        info = direct.stat("big.bin")
        assert info.size == len(data)
        assert _stored_sha(direct, "big.bin") == _sha(data)
        assert "mtime" not in info.meta and info.meta.get("mode") == str(0o100640)
        assert not _uploads(direct, "big.bin")
        # Its mtime is the object's Last-Modified, here at once and on a second mount.
        assert int(os.stat(mount.path / "big.bin").st_mtime) == int(info.mtime)
        other = env.mount(f"r:{backend.bucket}", mountpoint=tmp_path / "other",
                          options=(f"cache_dir={tmp_path / 'cache2'}",))
        st = os.stat(other.path / "big.bin")
        assert int(st.st_mtime) == int(info.mtime) and st.st_size == len(data)
        assert (st.st_mode & 0o777) == 0o640
    finally:
        env.close()


@pytest.mark.parametrize("change", ["cp -p", "touch -d", "chmod", "rename"])
def test_set_metadata_or_a_rename_aborts_the_stream_and_the_object_is_exact(tmp_path, request, change):
    env, backend, direct, part = _setup(tmp_path, request, "s3_moto")
    try:
        mount = env.mount(f"r:{backend.bucket}", options=("stream_uploads", "write_back=5",
                                                          f"part_size={part // MiB}M"))
        source = tmp_path / "source.bin"
        data = os.urandom(5 * part + 777)
        source.write_bytes(data)
        os.utime(source, (1_600_000_000, 1_600_000_000))
        key = "big.bin"
        if change == "cp -p":
            subprocess.run(["cp", "-p", str(source), str(mount.path / key)], check=True)
        else:
            name = "tmp.big.bin" if change == "rename" else key
            subprocess.run(["cp", str(source), str(mount.path / name)], check=True)
            # Before the upload (write_back=5): the stream began while the file was written.
            wait_until(lambda: _uploads(direct, name), 10, "the stream")
            if change == "touch -d":
                subprocess.run(["touch", "-d", "@1500000000", str(mount.path / key)], check=True)
            elif change == "chmod":
                os.chmod(mount.path / key, 0o600)
            else:
                os.rename(mount.path / name, mount.path / key)
        wait_until(lambda: _exists(direct, key) and not direct.list_multipart(), 60, "the upload", )
        info = direct.stat(key)
        assert _stored_sha(direct, key) == _sha(data)
        assert "mtime" in info.meta   # uploaded whole, with its metadata exact
        expected_mtime = {"cp -p": 1_600_000_000, "touch -d": 1_500_000_000}.get(change)
        if expected_mtime is not None:
            assert info.meta["mtime"] == str(expected_mtime)
            assert int(os.stat(mount.path / key).st_mtime) == expected_mtime
        if change == "chmod":
            assert info.meta["mode"] == str(0o100600)
        if change == "rename":
            assert not _exists(direct, "tmp.big.bin")
    finally:
        env.close()


@pytest.mark.parametrize("mode", ["default", "stream_uploads=off"])
def test_streaming_is_the_default_and_off_turns_it_off(tmp_path, request, mode):
    """A mount without the option streams (`auto`: SeaweedFS is not AWS); `stream_uploads=off` uploads
    the file whole after close, with its mtime in the metadata, as before session 9."""
    env, backend, direct, part = _setup(tmp_path, request, "s3_seaweed")
    try:
        options = ("write_back=0", f"part_size={part // MiB}M") + (() if mode == "default" else (mode,))
        mount = env.mount(f"r:{backend.bucket}", options=options)
        data = os.urandom(6 * part + 4321)
        fd = os.open(mount.path / "big.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for offset in range(0, 5 * part, MiB):
                os.write(fd, data[offset:offset + MiB])
            if mode == "default":
                wait_until(lambda: _parts_held(direct, "big.bin") >= 2, 60, "parts sent while the file is open")
            else:
                assert not _uploads(direct, "big.bin")   # nothing goes up before close
            os.write(fd, data[5 * part:])
        finally:
            os.close(fd)   # write_back=0: returns once uploaded
        info = direct.stat("big.bin")
        assert _stored_sha(direct, "big.bin") == _sha(data) and not direct.list_multipart()
        assert ("mtime" in info.meta) is (mode != "default")
        # Streamed: dated by the object's Last-Modified; whole: by the mtime in its metadata.
        dated = int(info.mtime) if mode == "default" else int(info.meta["mtime"])
        assert int(os.stat(mount.path / "big.bin").st_mtime) == dated
    finally:
        env.close()


def test_rsync_twice_sends_nothing_the_second_time(tmp_path, request):
    env, backend, direct, part = _setup(tmp_path, request, "s3_moto")
    try:
        # The default (streamed uploads on): a file first copied by `cp` streams, then rsync -a twice.
        mount = env.mount(f"r:{backend.bucket}", options=("write_back=0", f"part_size={part // MiB}M"))
        tree = tmp_path / "tree"
        tree.mkdir()
        data = os.urandom(5 * part + 99)
        (tree / "big.bin").write_bytes(data)
        (tree / "small.txt").write_bytes(b"small\n")
        # An older source: the streamed copy (dated by its completion) never has the source's mtime.
        os.utime(tree / "big.bin", (1_600_000_000, 1_600_000_000))

        def rsync() -> str:
            return subprocess.run(["rsync", "-a", "--stats", f"{tree}/", f"{mount.path}/tree/"], check=True,
                                  capture_output=True, text=True).stdout
        (mount.path / "tree").mkdir()
        subprocess.run(["cp", str(tree / "big.bin"), str(mount.path / "tree" / "big.bin")], check=True)
        assert "mtime" not in direct.stat("tree/big.bin").meta   # streamed: dated by its Last-Modified
        first = rsync()
        assert "Number of regular files transferred: 2" in first
        assert _stored_sha(direct, "tree/big.bin") == _sha(data)
        second = rsync()
        assert "Number of regular files transferred: 0" in second, second
        assert not direct.list_multipart()
    finally:
        env.close()


def test_rewrites_into_sent_parts_and_truncates_end_with_the_right_bytes(tmp_path, request):
    env, backend, direct, part = _setup(tmp_path, request, "s3_moto")
    try:
        mount = env.mount(f"r:{backend.bucket}", options=("stream_uploads", "write_back=0",
                                                          f"part_size={part // MiB}M"))
        data = bytearray(os.urandom(6 * part))
        # 1. Written again inside a part already sent, then truncated above what was sent.
        fd = os.open(mount.path / "rewritten.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for offset in range(0, 5 * part, MiB):
                os.write(fd, data[offset:offset + MiB])
            wait_until(lambda: _parts_held(direct, "rewritten.bin") >= 2, 60, "parts sent")
            patch = os.urandom(3000)
            os.pwrite(fd, patch, part - 1000)   # across the end of part 1 into part 2
            data[part - 1000:part + 2000] = patch
            os.lseek(fd, 5 * part, os.SEEK_SET)
            os.write(fd, data[5 * part:])
            os.ftruncate(fd, 5 * part + 100)
            del data[5 * part + 100:]
        finally:
            os.close(fd)
        assert _stored_sha(direct, "rewritten.bin") == _sha(bytes(data))
        # 2. Truncated below what was sent: the stream is aborted, the file goes up whole.
        fd = os.open(mount.path / "cut.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for offset in range(0, 5 * part, MiB):
                os.write(fd, data[offset:offset + MiB])
            wait_until(lambda: _parts_held(direct, "cut.bin") >= 2, 60, "parts sent")
            os.ftruncate(fd, part // 2)
            os.pwrite(fd, b"tail", part // 2)
        finally:
            os.close(fd)
        assert _stored_sha(direct, "cut.bin") == _sha(bytes(data[:part // 2]) + b"tail")
        wait_until(lambda: not direct.list_multipart(), 30, "the aborted stream to go")
    finally:
        env.close()


def _exists(direct, key: str) -> bool:
    try:
        direct.stat(key)
        return True
    except Exception:
        return False


@pytest.mark.parametrize("when", ["open", "closed"])
def test_kill_9_mid_stream_leaves_no_orphan_and_loses_no_closed_file(tmp_path, request, when):
    env, backend, direct, part = _setup(tmp_path, request, "s3_moto")
    try:
        options = ("stream_uploads", "write_back=600", f"part_size={part // MiB}M")
        mount = env.mount(f"r:{backend.bucket}", options=options)
        data = os.urandom(5 * part + 4321)
        fd = os.open(mount.path / "big.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        for offset in range(0, len(data), MiB):
            os.write(fd, data[offset:offset + MiB])
        wait_until(lambda: _parts_held(direct, "big.bin") >= 2, 60, "parts sent")
        if when == "closed":
            os.close(fd)   # closed: staged and journaled; its completion waits for write_back
        mount.kill()
        if when == "open":
            try:
                os.close(fd)
            except OSError:
                pass
        assert _uploads(direct, "big.bin") and not _exists(direct, "big.bin")
        env.mount(f"r:{backend.bucket}", options=("stream_uploads", "write_back=0",
                                                          f"part_size={part // MiB}M"))
        if when == "closed":   # resumed from the parts on the server, completed
            wait_until(lambda: _exists(direct, "big.bin"), 60, "the closed file's upload", )
            assert _stored_sha(direct, "big.bin") == _sha(data)
        wait_until(lambda: not direct.list_multipart(), 60, "no unfinished upload left")
        if when == "open":   # never closed: never uploaded, and nothing of it left on the server
            assert not _exists(direct, "big.bin")
    finally:
        env.close()
