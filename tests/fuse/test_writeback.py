"""Write-back durability through real mounts: nothing a program closed is ever lost, whether the mount
is killed, the backend goes away, staging fills up, or another client changes the same object."""
from __future__ import annotations

import errno
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storefs.providers.wcs import open_provider as open_wcs
from tests.emulators.base import Fault
from tests.fuse.harness import Env

WRITER = r"""
import os, sys, hashlib
root, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    data = hashlib.sha256(str(i).encode()).digest() * (1 + (i * 37) % 400)
    with open(os.path.join(root, f"f{i:03d}"), "wb") as f:
        f.write(data)
    print(i, flush=True)   # printed only once close() has returned
"""


def content(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest() * (1 + (i * 37) % 400)


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_kill_9_during_a_copy_loses_nothing_closed(local_env):
    mount = local_env.mount("r:b", options=("write_back=30",))  # nothing uploads before the kill
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(mount.path), "200"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    closed = []
    for line in writer.stdout:
        closed.append(int(line))
        if len(closed) == 120:
            # SIGKILL mid-copy (nothing had been uploaded yet). The writer is stopped first and killed
            # after: once the dead mount is detached, its next open would land in the bare mountpoint
            # directory and "close" files that never reached storefs.
            writer.send_signal(signal.SIGSTOP)
            mount.kill()
            writer.kill()
            break
    writer.wait(timeout=30)
    closed += [int(line) for line in writer.stdout.read().split()]
    assert len(closed) >= 120
    assert local_env.store.list("").objects == []  # really nothing uploaded before the crash

    again = local_env.mount("r:b")  # replays the journal
    assert local_env.run("flush", str(again.path), timeout=120).returncode == 0
    for i in closed:
        assert local_env.store.read_range(f"f{i:03d}", 0, 1 << 20) == content(i), i
    assert (again.path / "f000").read_bytes() == content(0)
    assert "left by an earlier run" in local_env.log_tail(400)


def test_unmount_drains_the_queue(local_env):
    mount = local_env.mount("r:b", options=("write_back=600",))
    for i in range(20):
        (mount.path / f"f{i:03d}").write_bytes(content(i))
    result = local_env.run("status", str(mount.path), check=True)
    assert "pending uploads: 20" in result.stdout
    assert mount.unmount().returncode == 0
    for i in range(20):
        assert local_env.store.read_range(f"f{i:03d}", 0, 1 << 20) == content(i)


def test_sigterm_drains_the_queue_too(local_env):
    mount = local_env.mount("r:b", options=("write_back=600",))
    (mount.path / "pending").write_bytes(content(7))
    os.kill(mount.pid, signal.SIGTERM)
    wait_until(lambda: not Path(f"/proc/{mount.pid}").exists()
               or Path(f"/proc/{mount.pid}/stat").read_text().split(") ", 1)[1][0] == "Z", 60, "the daemon to exit")
    mount.closed = True
    assert local_env.store.read_range("pending", 0, 1 << 20) == content(7)


def test_flush_and_status(local_env):
    mount = local_env.mount("r:b", options=("write_back=600",))
    (mount.path / "a").write_bytes(b"a" * 1000)
    (mount.path / "a").chmod(0o600)
    os.rename(mount.path / "a", mount.path / "b")  # rsync's pattern: all before the upload
    assert "pending uploads: 1" in local_env.run("status", check=True).stdout
    assert local_env.store.list("").objects == []
    result = local_env.run("flush", str(mount.path), check=True)
    assert "everything is uploaded" in result.stdout
    info = local_env.store.stat("b")
    assert info.size == 1000 and int(info.meta["mode"]) & 0o777 == 0o600
    assert [o.key for o in local_env.store.list("").objects] == ["b"]  # one upload, under the final name
    assert "pending uploads: 0" in local_env.run("status", str(mount.path), check=True).stdout


def test_flush_does_not_wait_for_a_file_still_open_for_writing(local_env):
    """A file flushed by one descriptor (here: a child closing its inherited copy) while another keeps it
    open for writing leaves the queue until its last close; `storefs flush` does not hang on it."""
    mount = local_env.mount("r:b", options=("write_back=600",))
    (mount.path / "closed").write_bytes(b"done")
    fd = os.open(mount.path / "open", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"first")
        subprocess.run(["true"], pass_fds=(fd,), check=True)  # its exit flushes the shared file
        started = time.monotonic()
        result = local_env.run("flush", "--timeout", "60", str(mount.path), timeout=90)
        assert result.returncode == 0, result.stdout + result.stderr
        assert time.monotonic() - started < 30
        assert local_env.store.stat("closed").size == 4
        os.write(fd, b" and second")
    finally:
        os.close(fd)
    local_env.run("flush", str(mount.path), check=True)
    assert local_env.store.read_range("open", 0, 16) == b"first and second"


def test_backend_down_mid_copy_loses_nothing(tmp_path, wcs_emulator):
    bucket = "down"
    wcs_emulator.create_bucket(bucket)
    config = {k: str(v) for k, v in wcs_emulator.config().items()}
    env = Env(tmp_path, {"w": config})
    store = open_wcs("t", {k: v for k, v in config.items() if k != "type"}).bucket(bucket)
    try:
        mount = env.mount(f"w:{bucket}", options=("write_back=1", "dir_ttl=1"))
        for i in range(10):
            (mount.path / f"f{i:03d}").write_bytes(content(i))
        assert len(os.listdir(mount.path)) == 10
        # The backend goes away before those uploads start: every connection is reset.
        wcs_emulator.faults.add(Fault(op="*", nth=1, count=1_000_000, action="reset"))
        closed = list(range(10))
        for i in (10,):  # a new name needs a lookup the server cannot answer: EIO is the honest reply
            try:
                (mount.path / f"f{i:03d}").write_bytes(content(i))
                closed.append(i)
            except OSError as exc:
                assert exc.errno == errno.EIO
        wait_until(lambda: "attempts 0" not in env.run("status", str(mount.path)).stdout, 60, "failed attempts")
        assert (mount.path / "f005").read_bytes() == content(5)  # staged files stay visible and readable
        time.sleep(1.2)  # past dir_ttl and the kernel's cache: the listing is storefs's last known one
        assert sorted(os.listdir(mount.path))[:10] == [f"f{i:03d}" for i in range(10)]
        assert "showing the listing from" in env.log_tail(500)
        wcs_emulator.faults.clear()  # it comes back
        assert env.run("flush", str(mount.path), timeout=180).returncode == 0
        for i in closed:
            assert store.read_range(f"f{i:03d}", 0, 1 << 20) == content(i), i
        (mount.path / "later").write_bytes(b"works again")
    finally:
        wcs_emulator.faults.clear()
        env.close()


def test_full_staging_fails_new_writes_while_old_ones_upload(tmp_path, wcs_emulator):
    bucket = "full"
    wcs_emulator.create_bucket(bucket)
    config = {k: str(v) for k, v in wcs_emulator.config().items()}
    env = Env(tmp_path, {"w": config})
    store = open_wcs("t", {k: v for k, v in config.items() if k != "type"}).bucket(bucket)
    try:
        mount = env.mount(f"w:{bucket}", options=("write_back=0.2", "staging_size=3M"))
        # A slow server: every request takes 3 s, so staged files wait for their uploads.
        wcs_emulator.faults.add(Fault(op="upload", nth=1, count=1_000_000, action="delay", delay=3))
        block = os.urandom(1 << 20)
        written = 0
        with pytest.raises(OSError) as info:
            for i in range(10):
                (mount.path / f"big{i}").write_bytes(block)
                written += 1
        assert info.value.errno == errno.ENOSPC
        assert 1 <= written <= 3
        wcs_emulator.faults.clear()
        assert env.run("flush", str(mount.path), timeout=120).returncode == 0
        for i in range(written):
            assert store.read_range(f"big{i}", 0, 2 << 20) == block
        (mount.path / "after").write_bytes(block)  # room again once uploads freed the staging area
    finally:
        wcs_emulator.faults.clear()
        env.close()


def test_conflicting_remote_change_loses_no_write(local_env):
    local_env.store.put("doc", io.BytesIO(b"original"), 8, {})
    mount = local_env.mount("r:b", options=("write_back=0",))
    with open(mount.path / "doc", "r+b") as f:
        f.write(b"MINE")
        time.sleep(0.01)
        local_env.store.put("doc", io.BytesIO(b"theirs, written meanwhile"), 25, {})
    keys = sorted(o.key for o in local_env.store.list("").objects)
    assert keys[0] == "doc" and keys[1].startswith("doc.storefs-conflict-"), keys
    assert local_env.store.read_range("doc", 0, 100) == b"theirs, written meanwhile"
    assert local_env.store.read_range(keys[1], 0, 100) == b"MINEinal"
    assert "conflict" in local_env.run("status", str(mount.path), check=True).stdout
    assert "conflict" in local_env.log_tail(100)


def test_unmount_reports_what_it_could_not_upload(tmp_path, wcs_emulator):
    bucket = "gone"
    wcs_emulator.create_bucket(bucket)
    config = {k: str(v) for k, v in wcs_emulator.config().items()}
    env = Env(tmp_path, {"w": config})
    store = open_wcs("t", {k: v for k, v in config.items() if k != "type"}).bucket(bucket)
    try:
        mount = env.mount(f"w:{bucket}", options=("write_back=60", "drain_timeout=3"))
        (mount.path / "precious").write_bytes(b"do not lose me")
        wcs_emulator.faults.add(Fault(op="*", nth=1, count=1_000_000, action="reset"))
        result = mount.unmount(timeout=60)
        assert result.returncode == 1
        assert "precious" in result.stderr and "next mount uploads them" in result.stderr
        wcs_emulator.faults.clear()
        again = env.mount(f"w:{bucket}")
        assert env.run("flush", str(again.path), timeout=120).returncode == 0
        assert store.read_range("precious", 0, 100) == b"do not lose me"
    finally:
        wcs_emulator.faults.clear()
        env.close()


def _staged_files(env: Env) -> list[Path]:
    """The staging area's data files (32 hex digits), of every remote this environment mounted."""
    return [p for p in (env.tmp / "cache").rglob("*") if p.is_file() and len(p.name) == 32]


def test_a_bash_loop_killed_right_after_its_last_close_loses_nothing(local_env):
    # `printf … > file` closes twice (bash's dup2 dance: two FLUSHes, the first of an empty file);
    # staged files are made ahead in batches (staging.py): each close must still be journaled
    # before it returns. write_back=30: nothing is uploaded before the kill.
    mount = local_env.mount("r:b", options=("write_back=30",))
    script = f'cd {mount.path} && for i in $(seq 1 70); do printf "%05d" $i > f$i; done'
    subprocess.run(["bash", "-c", script], check=True, timeout=120)
    mount.kill()   # SIGKILL right after the last close returned
    assert local_env.store.list("").objects == []
    again = local_env.mount("r:b")   # replays the journal
    assert local_env.run("flush", str(again.path), timeout=120).returncode == 0
    for i in range(1, 71):
        assert local_env.store.read_range(f"f{i}", 0, 100) == b"%05d" % i, i
    again.unmount()
    # The spares made ahead are gone after a clean unmount, and so is every uploaded file's copy.
    assert _staged_files(local_env) == []
