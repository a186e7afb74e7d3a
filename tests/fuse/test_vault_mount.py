"""An archive vault mounted for real (CAS emulator; its clock makes hours-long jobs finish at once)."""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import threading
import time

import pytest

from storefs.fs.vault.names import encode_mt2
from storefs.vaults.treehash import tree_hash
from tests.fuse.harness import Env, errno_of
from tests.fuse.vaultcases import cas_vault, retrievals

MiB = 1 << 20


@pytest.fixture
def vault_env(tmp_path, cas_emulator):
    with cas_vault(cas_emulator) as new:
        env = Env(tmp_path, {"c": new.section})
        env.name, env.vault, env.clock = new.name, new.vault, cas_emulator.clock
        yield env
        env.close()


def test_vault_tree_retrieval_on_open_and_restore(vault_env):
    vault, clock = vault_env.vault, vault_env.clock
    a = os.urandom(3 * MiB + 17)
    b = b"photo bytes" * 1000
    c = b"nameless"
    old = b"older version"
    vault.upload_archive(old, len(old), encode_mt2("docs/a.txt", 1_600_000_000))
    clock.advance(60)
    vault.upload_archive(a, len(a), encode_mt2("docs/a.txt", 1_700_000_000))
    vault.upload_archive(b, len(b), "photos/b.jpg")
    c_info = vault.upload_archive(c, len(c), "")
    vault.start_inventory()
    clock.advance(6 * 3600)  # the inventory job is done; the mount adopts it

    mount = vault_env.mount(f"c:{vault_env.name}")
    root = mount.path
    assert sorted(os.listdir(root)) == sorted(["docs", "photos", f"id:{c_info.archive_id}"])
    assert sorted(os.listdir(root / "docs")) == ["a.txt", "a.txt;2"]  # newest keeps the name
    assert (root / "docs" / "a.txt").stat().st_size == len(a)
    assert (root / "docs" / "a.txt").stat().st_mtime == 1_700_000_000
    assert (root / "docs" / "a.txt").stat().st_mode & 0o777 == 0o444
    assert (root / "docs").stat().st_mode & 0o777 == 0o555

    # Every mutation is EROFS.
    assert errno_of(lambda: (root / "new").write_bytes(b"x")) == errno.EROFS
    assert errno_of(lambda: os.unlink(root / "docs" / "a.txt")) == errno.EROFS
    assert errno_of(lambda: os.mkdir(root / "d")) == errno.EROFS
    assert errno_of(lambda: os.rename(root / "docs", root / "docs2")) == errno.EROFS
    assert errno_of(lambda: os.chmod(root / "docs" / "a.txt", 0o600)) == errno.EROFS

    # The first open fails at once with EAGAIN and starts exactly one job; more opens start none.
    started = time.monotonic()
    assert errno_of(lambda: open(root / "docs" / "a.txt", "rb")) == errno.EAGAIN
    assert time.monotonic() - started < 5
    assert len(retrievals(vault)) == 1
    assert errno_of(lambda: open(root / "docs" / "a.txt", "rb")) == errno.EAGAIN
    state = os.getxattr(root / "docs" / "a.txt", "user.storefs.retrieval").decode()
    assert state.startswith("in-progress since"), state
    mount.unmount().check_returncode()
    mount = vault_env.mount(f"c:{vault_env.name}")  # a remount starts no job either
    root = mount.path
    assert errno_of(lambda: open(root / "docs" / "a.txt", "rb")) == errno.EAGAIN
    assert len(retrievals(vault)) == 1

    clock.advance(6 * 3600)  # Standard tier: done
    data = (root / "docs" / "a.txt").read_bytes()
    assert data == a and tree_hash(data) == os.getxattr(root / "docs" / "a.txt", "user.storefs.tree_hash").decode()
    assert os.getxattr(root / "docs" / "a.txt", "user.storefs.archive_id").decode()

    listing = vault_env.run("jobs", f"c:{vault_env.name}", check=True).stdout
    assert "InventoryRetrieval" in listing and "/docs/a.txt" in listing, listing
    # (checked now: an inventory job is listed for 24 h after it is done, and the restore below lets
    # server time pass an hour per half second, as long as the machine makes it take.)

    # storefs restore --wait on a directory, while time passes on the server.
    ticking = threading.Event()

    def tick():
        while not ticking.wait(0.5):
            clock.advance(3600)
    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        result = vault_env.run("restore", "--wait", "--timeout", "120", str(root / "photos"), timeout=150)
    finally:
        ticking.set()
        ticker.join()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 archive(s): 1 ready" in result.stdout
    assert (root / "photos" / "b.jpg").read_bytes() == b
    listing = vault_env.run("jobs", f"c:{vault_env.name}", check=True).stdout
    assert "ArchiveRetrieval" in listing and "/photos/b.jpg" in listing, listing


def test_vault_writes_round_trip_40_mib(vault_env, tmp_path):
    vault_env.vault.start_inventory()
    vault_env.clock.advance(6 * 3600)
    mount = vault_env.mount(f"c:{vault_env.name}", options=("vault_writes",))
    data = os.urandom(40 * MiB)
    (tmp_path / "src.bin").write_bytes(data)
    subprocess.run(["cp", str(tmp_path / "src.bin"), str(mount.path / "backup.bin")], check=True)
    assert (mount.path / "backup.bin").stat().st_size == len(data)  # in the tree at once
    assert errno_of(lambda: (mount.path / "backup.bin").write_bytes(b"x")) in (errno.EROFS, errno.EEXIST)
    mount.unmount().check_returncode()
    mount = vault_env.mount(f"c:{vault_env.name}", options=("vault_wait=60",))
    waiter = threading.Timer(1.0, lambda: vault_env.clock.advance(6 * 3600))
    waiter.start()
    try:
        back = (mount.path / "backup.bin").read_bytes()  # vault_wait: blocks until the job is done
    finally:
        waiter.cancel()
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()


def test_restore_uses_the_state_of_a_mount_with_its_own_cache_dir(vault_env, tmp_path):
    """`storefs restore PATH` inside a mount made with -o cache_dir records its job where that mount
    keeps its state: the mount sees it at once, and nothing lands in the default cache directory."""
    vault, clock = vault_env.vault, vault_env.clock
    vault.upload_archive(b"x" * 1000, 1000, "f.bin")
    vault.start_inventory()
    clock.advance(6 * 3600)
    own = tmp_path / "own-cache"
    mount = vault_env.mount(f"c:{vault_env.name}", options=(f"cache_dir={own}",))
    result = vault_env.run("restore", str(mount.path / "f.bin"))
    assert result.returncode == 75, result.stdout + result.stderr   # started, still running
    assert len(retrievals(vault)) == 1
    state = os.getxattr(mount.path / "f.bin", "user.storefs.retrieval").decode()
    assert state.startswith("in-progress since"), state
    assert list(own.rglob("jobs/*.json")), "the job is not in the mount's own state"
    default = vault_env.tmp / "cache" / "storefs"
    assert not list(default.rglob("jobs/*.json")), "the job went to the default cache directory"
    assert errno_of(lambda: open(mount.path / "f.bin", "rb")) == errno.EAGAIN
    assert len(retrievals(vault)) == 1
