"""Archive deletion (`-o vault_deletes`) and the state other processes see, VaultFS without FUSE, on the
local vault and the CAS emulator (clocks moved, never slept for jobs).

- without the option, unlink is EROFS; with it, the archive is deleted on the service and gone from the
  tree at once, and a directory it leaves empty goes with it (rmdir of it then succeeds, a directory
  that still holds files is ENOTEMPTY, a vault at the top of a `REMOTE:` mount is EPERM);
- the deletion is recorded in the state: another process (a VaultFS on the same state directory) and
  a remount hide the archive although the cached inventory still lists it;
- it stays hidden while newer inventories still list it (the services' inventories lag deletions by
  about a day: the local vault's `inventory_lag`), and the record goes once an inventory taken after
  the deletion no longer lists it;
- other versions of the path are renamed as the naming scheme says (`a;2` becomes `a`);
- the downloaded bytes and the job record go; a reader holding the file open keeps reading;
- an archive the service no longer has (deleted elsewhere) is removed from the tree all the same;
- a running mount's watcher picks up what another process changed (a refresh, a deletion) within a
  fraction of a second, without being asked.

The CAS emulator here is this module's own: the tests move its clock days ahead, and other modules'
tests compare archive dates with the clock of the emulator they share.
"""
from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator

import pytest

from storefs.errors import ArchiveNotReady, NotEmpty, NotFound, NotPermitted, ReadOnly, errno_for
from storefs.fs.vault.filesystem import VaultFS
from storefs.fs.vault.names import encode_mt2
from storefs.fs.vault.state import VaultState
from tests.emulators.cas import CasEmulator
from tests.vaultfs.conftest import HOURS, STANDARD_DONE, Env

MiB = 1 << 20


@pytest.fixture(scope="module")
def cas_emulator() -> Iterator[CasEmulator]:
    """This module's own emulator (see the module docstring); `env` and `cas_env` take it."""
    with CasEmulator() as emulator:
        yield emulator


@contextlib.contextmanager
def inventory_lag(env: Env, seconds: float) -> Iterator[None]:
    """Make the backend's inventories list deleted archives for `seconds` after their deletion."""
    engine = env.emulator.engine if env.emulator is not None else env.provider
    before = engine.inventory_lag
    engine.inventory_lag = seconds
    try:
        yield
    finally:
        engine.inventory_lag = before


def ids_on_service(env: Env) -> set[str]:
    engine = env.emulator.engine if env.emulator is not None else env.provider
    return {a.archive_id for a in engine.vault(env.vault_name).archives()}


def tombstones(env: Env) -> list:
    return VaultState(env.state_dir / env.vault_name).tombstones()


def refresh_done(env: Env, fs: VaultFS) -> None:
    """A refresh whose inventory job finishes (the clock moved past it)."""
    fs.refresh(wait=False)
    env.advance(STANDARD_DONE)
    assert fs.refresh(wait=True, timeout=20)[0].state == "done"


def test_unlink_is_erofs_without_the_option(local_env: Env):
    local_env.upload("dir/file", b"x")
    fs = local_env.mounted_with_inventory()
    for call in (lambda: fs.unlink("/dir/file"), lambda: fs.rmdir("/dir")):
        with pytest.raises(ReadOnly) as caught:
            call()
        assert errno_for(caught.value) == errno.EROFS
    assert len(ids_on_service(local_env)) == 1


def test_delete_is_at_once_and_kept_in_the_state(env: Env):
    keep = env.upload("docs/keep.txt", b"keep")
    gone = env.upload(encode_mt2("docs/gone.txt", 1_700_000_000), b"gone")
    only = env.upload("lonely/dir/only.bin", b"only")
    fs = env.mounted_with_inventory(vault_deletes=True)
    assert fs.readdir("/") == ["docs", "lonely"]

    fs.unlink("/docs/gone.txt")
    assert fs.readdir("/docs") == ["keep.txt"]
    with pytest.raises(NotFound):
        fs.getattr("/docs/gone.txt")
    assert ids_on_service(env) == {keep.archive_id, only.archive_id}

    fs.unlink("/lonely/dir/only.bin")
    assert fs.readdir("/") == ["docs"]  # directories are the paths of archives: emptied ones go
    fs.rmdir("/lonely/dir")  # what `rm -r` asks last: already gone, so done
    fs.rmdir("/lonely")
    with pytest.raises(NotEmpty) as caught:
        fs.rmdir("/docs")
    assert errno_for(caught.value) == errno.ENOTEMPTY
    with pytest.raises(NotFound):
        fs.unlink("/docs/gone.txt")
    assert fs.statfs()["f_files"] == 1

    # Another process on the same state, and a remount: the cached inventory still lists both.
    other = env.mount(fresh_provider=True)
    assert other.readdir("/") == ["docs"] and other.readdir("/docs") == ["keep.txt"]
    assert {t.archive_id for t in tombstones(env)} == {gone.archive_id, only.archive_id}
    # A refresh whose inventory no longer lists them ends the records; they stay gone.
    refresh_done(env, other)
    assert tombstones(env) == []
    assert other.readdir("/") == ["docs"] and other.readdir("/docs") == ["keep.txt"]


def test_kept_gone_while_newer_inventories_still_list_it(env: Env):
    env.upload("a/one", b"1")
    gone = env.upload("a/two", b"2")
    fs = env.mounted_with_inventory(vault_deletes=True)
    with inventory_lag(env, 30 * HOURS):
        fs.unlink("/a/two")
        refresh_done(env, fs)  # completed ~5 h after the deletion: the service still lists it
        assert gone.archive_id in {a.archive_id for a in fs._view(env.vault_name).inventory.archives}
        assert fs.readdir("/a") == ["one"]
        assert [t.archive_id for t in tombstones(env)] == [gone.archive_id]
        remount = env.mount(fresh_provider=True)
        assert remount.readdir("/a") == ["one"]
        env.advance(30 * HOURS)
        refresh_done(env, fs)  # now it is out of the inventory: the record is no longer needed
        assert gone.archive_id not in {a.archive_id for a in fs._view(env.vault_name).inventory.archives}
        assert tombstones(env) == [] and fs.readdir("/a") == ["one"]


def test_versions_are_renamed_as_the_scheme_says(local_env: Env):
    old = local_env.upload("f.txt", b"old")
    new = local_env.upload("f.txt", b"new")
    nameless = local_env.upload("", b"no name")
    fs = local_env.mounted_with_inventory(vault_deletes=True)
    assert fs.readdir("/") == sorted(["f.txt", "f.txt;2", f"id:{nameless.archive_id}"])
    fs.unlink("/f.txt")
    assert fs.readdir("/") == sorted(["f.txt", f"id:{nameless.archive_id}"])
    assert fs.getxattr("/f.txt", "user.storefs.archive_id").decode() == old.archive_id
    fs.unlink(f"/id:{nameless.archive_id}")
    assert fs.readdir("/") == ["f.txt"]
    assert ids_on_service(local_env) == {old.archive_id}
    assert new.archive_id not in ids_on_service(local_env)


def test_cached_bytes_and_job_go_an_open_reader_keeps_reading(env: Env):
    data = os.urandom(2 * MiB + 5)
    archive = env.upload("big.bin", data)
    fs = env.mounted_with_inventory(vault_deletes=True)
    with pytest.raises(ArchiveNotReady):
        fs.open("/big.bin", os.O_RDONLY)  # starts the job
    env.advance(STANDARD_DONE)
    fh = fs.open("/big.bin", os.O_RDONLY)
    state = VaultState(env.state_dir / env.vault_name)
    assert state.cached(archive) is not None and state.job(archive.archive_id) is not None
    fs.unlink("/big.bin")
    assert state.cached(archive) is None and state.job(archive.archive_id) is None
    assert fs.read(fh, len(data) + 1, 0) == data
    fs.release(fh)
    assert fs.readdir("/") == []


def test_an_archive_already_gone_from_the_service(env: Env):
    archive = env.upload("x/elsewhere", b"deleted by another tool")
    env.upload("x/stays", b"s")
    fs = env.mounted_with_inventory(vault_deletes=True)
    env.vault.delete_archive(archive.archive_id)
    fs.unlink("/x/elsewhere")
    assert fs.readdir("/x") == ["stays"]


def test_top_of_a_remote_mount(local_env: Env):
    local_env.upload("f", b"1")
    fs = local_env.mount(vault=False, vault_deletes=True)
    with pytest.raises(NotPermitted):
        fs.rmdir(f"/{local_env.vault_name}")
    local_env.advance(STANDARD_DONE)
    fs.check_inventory()
    fs.unlink(f"/{local_env.vault_name}/f")
    assert fs.readdir(f"/{local_env.vault_name}") == []


def wait_for(condition, timeout: float = 5.0) -> float:
    """Seconds until `condition()` held (bounded)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "not within the time allowed"
        time.sleep(0.01)
    return time.monotonic() - started


def test_watcher_sees_other_processes_changes(local_env: Env):
    local_env.upload("first", b"1")
    seed = local_env.mounted_with_inventory()
    seed.close()
    # A mount whose poller would look at jobs only every hour: only the watcher can see changes.
    fs = local_env.mount(inventory_poll=3600, watch=0.05)
    assert fs.readdir("/") == ["first"]
    local_env.upload("second", b"2")
    cli = local_env.mount(fresh_provider=True, vault_deletes=True)
    refresh_done(local_env, cli)
    took = wait_for(lambda: fs.readdir("/") == ["first", "second"])
    assert took < 1.0
    cli.unlink("/first")
    took = wait_for(lambda: fs.readdir("/") == ["second"])
    assert took < 1.0
