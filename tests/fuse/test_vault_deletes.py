"""Archive deletion and refreshes reaching running mounts, through real mounts (issue #13, items 3 and 4),
on the local vault, the CAS emulator (its clock moved by the test) and moto's Glacier.

One flow on each backend (`run_flow`):
- without `-o vault_deletes`, `rm` is EROFS and the archive stays;
- with it, `rm` deletes the archive on the service (a second DELETE of it is refused there: it is gone),
  the file is gone from the tree at once, and `rm -r` of a directory removes its archives and the
  directory; a remount, whose cached inventory still lists them, does not show them;
- `storefs vault refresh --wait` while the mount runs: the new inventory (a file uploaded by another
  tool, the deleted archives no longer listed) is in the running mount within a second of the command
  saying done, and the deletion records, no longer needed, are gone.

Then, on the local vault: a mount with `-o cache_dir` gets the refresh too (found through its record,
and with `--cache-dir`), and a remote re-pointed at another vault root shows that vault's tree, never
the old one's, with a state directory of the older layout ignored.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storefs.errors import NotFound
from storefs.fs.vault.names import encode_mt2
from storefs.fs.vault.state import VaultState, legacy_state_dir, state_dir_for
from storefs.vaults.base import ArchiveVault
from storefs.vaults.local import open_vault_provider
from tests.fuse.harness import Env, Mount, errno_of, write_config
from tests.fuse.vaultcases import NewVault, cas_vault, glacier_vault, local_vault, local_vault_section

HOURS = 3600.0


@dataclasses.dataclass
class Case:
    kind: str
    env: Env
    remote: str                     # REMOTE:VAULT
    vault: ArchiveVault             # our own client on it
    identity: str                   # the provider's identity (where storefs keeps the state)
    tick: Callable[[], None]        # moves the service's clock a step (no-op on real clocks)

    @property
    def vault_name(self) -> str:
        return self.remote.split(":", 1)[1]

    def state(self, cache: Path | None = None) -> VaultState:
        root = cache or self.env.tmp / "cache" / "storefs"
        return VaultState(state_dir_for(root, self.identity) / self.vault_name)

    def refresh(self, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
        """`storefs vault refresh --wait` (the service's clock moving meanwhile); its result and the
        monotonic time it exited."""
        stop = threading.Event()

        def ticking() -> None:
            while not stop.wait(0.2):
                self.tick()
        ticker = threading.Thread(target=ticking)
        ticker.start()
        try:
            result = self.env.run("vault", "refresh", "--wait", "--timeout", "120", self.remote, *extra,
                                  timeout=150)
            done = time.monotonic()
        finally:
            stop.set()
            ticker.join()
        assert result.returncode == 0 and "done" in result.stdout, result.stdout + result.stderr
        return result, done

    def mount(self, *options: str, mountpoint: Path | None = None) -> Mount:
        return self.env.mount(self.remote, mountpoint=mountpoint, options=options)


def seconds_until(condition: Callable[[], bool], since: float, timeout: float = 30) -> float:
    """Seconds from `since` (monotonic) until `condition()` holds (polled every 10 ms, bounded)."""
    while not condition():
        if time.monotonic() - since > timeout:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.01)
    return time.monotonic() - since


def listing(path: Path) -> list[str]:
    return sorted(os.listdir(path))


# ------------------------------------------------------------------------------------------------
# Backends


LOCAL_DELAYS = {"expedited": 2, "standard": 2, "bulk": 2, "inventory": 1}


def local_section(root: Path) -> dict[str, str]:
    return local_vault_section(root, **LOCAL_DELAYS)


def _case(kind: str, tmp_path: Path, remote: str, new: NewVault, tick: Callable[[], None]) -> Iterator[Case]:
    env = Env(tmp_path, {remote: new.section})
    yield Case(kind, env, f"{remote}:{new.name}", new.vault, new.provider.identity, tick)
    env.close()


@pytest.fixture
def local_case(tmp_path):
    with local_vault(tmp_path / "vaults", **LOCAL_DELAYS) as new:
        yield from _case("local", tmp_path, "lv", new, lambda: None)


@pytest.fixture
def cas_case(tmp_path, own_cas):
    with cas_vault(own_cas) as new:
        yield from _case("cas", tmp_path, "c", new, lambda: own_cas.clock.advance(HOURS))


@pytest.fixture
def moto_case(tmp_path, moto_glacier):
    with glacier_vault(moto_glacier) as new:
        yield from _case("moto", tmp_path, "g", new, lambda: None)


@pytest.fixture(params=["local", "cas", "moto"])
def case(request) -> Case:
    return request.getfixturevalue(f"{request.param}_case")


# ------------------------------------------------------------------------------------------------
# The flow


def put(vault: ArchiveVault, path: str, data: bytes) -> str:
    return vault.upload_archive(data, len(data), encode_mt2(path, 1_700_000_000)).archive_id


def run_flow(case: Case) -> float:
    """The flow of the module docstring; the seconds from `vault refresh --wait` exiting to the new
    file showing in the running mount."""
    vault = case.vault
    keep = put(vault, "keep/a.txt", b"kept")
    one = put(vault, "old/one.bin", b"one")
    two = put(vault, "old/sub/two.bin", b"two")
    lone = put(vault, "single.bin", b"single")
    case.refresh()  # the inventory, cached before anything is mounted

    mount = case.mount()
    root = mount.path
    assert listing(root) == ["keep", "old", "single.bin"]
    assert errno_of(lambda: os.unlink(root / "single.bin")) == errno.EROFS
    assert subprocess.run(["rm", "-f", str(root / "single.bin")], capture_output=True).returncode != 0
    assert (root / "single.bin").stat().st_size == 6
    mount.unmount().check_returncode()

    mount = case.mount("vault_deletes")
    root = mount.path
    os.unlink(root / "single.bin")
    assert listing(root) == ["keep", "old"]  # at once
    done = subprocess.run(["rm", "-rf", str(root / "old")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert listing(root) == ["keep"]
    for gone in (lone, one, two):  # the service has them no more
        with pytest.raises(NotFound):
            vault.delete_archive(gone)
    assert len(case.state().tombstones()) == 3
    mount.unmount().check_returncode()

    mount = case.mount("vault_deletes")  # the cached inventory still lists all four
    root = mount.path
    assert listing(root) == ["keep"] and listing(root / "keep") == ["a.txt"]

    put(vault, "keep/b.txt", b"new")  # by another tool, while mounted
    _, done_at = case.refresh()
    took = seconds_until(lambda: listing(root / "keep") == ["a.txt", "b.txt"], done_at)
    assert listing(root) == ["keep"]
    assert case.state().tombstones() == []  # the new inventory lists none of them
    assert os.getxattr(root / "keep" / "a.txt", "user.storefs.archive_id").decode() == keep
    mount.unmount().check_returncode()
    return took


def test_rm_deletes_and_refresh_reaches_the_mount(case, record_property):
    took = run_flow(case)
    record_property("refresh_to_visible_s", round(took, 3))
    print(f"{case.kind}: new tree visible {took:.3f}s after vault refresh --wait said done")
    assert took < 1.0


# ------------------------------------------------------------------------------------------------
# cache_dir, re-pointing (local vault)


def test_refresh_reaches_mounts_with_their_own_cache_dir(local_case, tmp_path):
    case = local_case
    put(case.vault, "a", b"1")
    elsewhere = tmp_path / "elsewhere"
    case.refresh("--cache-dir", str(elsewhere))  # cached where the mount will look
    assert case.state(elsewhere).load_inventory() is not None
    mount = case.mount(f"cache_dir={elsewhere}")
    assert listing(mount.path) == ["a"]

    # Found through the mount's record: no --cache-dir given.
    put(case.vault, "b", b"2")
    _, done_at = case.refresh()
    took = seconds_until(lambda: listing(mount.path) == ["a", "b"], done_at)
    assert took < 1.0, took
    # And named explicitly.
    put(case.vault, "c", b"3")
    _, done_at = case.refresh("--cache-dir", str(elsewhere))
    assert seconds_until(lambda: listing(mount.path) == ["a", "b", "c"], done_at) < 1.0

    # `storefs jobs` names an archive by the path this mount shows (its state, not the default one's).
    assert errno_of(lambda: open(mount.path / "a", "rb")) == errno.EAGAIN   # starts a retrieval job
    jobs = case.env.run("jobs", case.remote)
    assert jobs.returncode == 0, jobs.stderr
    assert any(line.split()[-2:-1] == ["/a"] for line in jobs.stdout.splitlines()
               if "ArchiveRetrieval" in line), jobs.stdout
    mount.unmount().check_returncode()
    assert not list((tmp_path / "run" / "storefs").glob("vault-mount-*.json"))  # its record went with it


def test_a_re_pointed_remote_shows_the_new_vaults_tree(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    name = "backups"
    for root, files in ((first, ["from-first"]), (second, ["from-second"])):
        root.mkdir()
        provider = open_vault_provider("t", {"root": str(root)})
        provider.create_vault(name)
        for path in files:
            put(provider.vault(name), path, b"x")
        provider.close()
    env = Env(tmp_path, {"lv": local_section(first)})
    # A state directory of the older layout (named by the remote alone), with garbage in it.
    legacy = legacy_state_dir(tmp_path / "cache" / "storefs", "lv") / name
    legacy.mkdir(parents=True)
    (legacy / "inventory.json").write_text("{not json")
    try:
        env.run("vault", "refresh", "--wait", f"lv:{name}", check=True)
        mount = env.mount(f"lv:{name}")
        assert listing(mount.path) == ["from-first"]
        mount.unmount().check_returncode()

        write_config(env.config, {"lv": local_section(second)})  # the same remote, another vault root
        mount = env.mount(f"lv:{name}")
        # Nothing cached for this vault: never the first root's tree; an inventory job runs.
        assert listing(mount.path) == []
        assert os.getxattr(mount.path, "user.storefs.inventory").decode().startswith("in-progress since")
        env.run("vault", "refresh", "--wait", f"lv:{name}", check=True)  # adopts the mount's job
        done_at = time.monotonic()
        assert seconds_until(lambda: listing(mount.path) == ["from-second"], done_at) < 1.0
        assert (mount.path / "from-second").stat().st_size == 1
        mount.unmount().check_returncode()
        assert (legacy / "inventory.json").read_text() == "{not json"  # never read, never touched
        assert "older storefs" in env.log_tail(200)
    finally:
        env.close()


def test_refresh_refuses_a_cache_dir_that_is_a_file(local_case, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = local_case.env.run("vault", "refresh", local_case.remote, "--cache-dir", str(not_a_dir))
    assert result.returncode == 2 and "not a directory" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
