"""Archive vaults mounted for real on moto's Glacier and on the `local-vault` (issue #4).

tests/fuse/test_vault_mount.py mounts the CAS emulator, whose clock a test moves. Here the jobs run on
real clocks, so every wait is a bounded wait on a condition, and the flows use the fastest tier:

- moto (`type = glacier`, `profile = moto`): jobs finish 2 s (Expedited), 5 s (Standard) or 10 s (Bulk)
  after they start; no multipart, no ranges, and its "tree hashes" are plain SHA-256 (right only up to
  1 MiB), archive ids are the MD5 of the body and dates have whole seconds.
- local-vault (`type = local-vault`): jobs finish after the configured `*_delay` seconds.

One flow runs on both (`run_read_flow`): the tree from the inventory (mt2 and plain descriptions, an
unusable one as `id:`, two archives of one path newest first), EROFS for every mutation, EAGAIN at
once from the first open with exactly one job started (none by a second open or a remount), the bytes
after the job is done (tree hash checked), xattrs, `storefs restore --wait` on a directory,
`-o vault_wait`, and `storefs jobs`. The local vault also takes a write-once upload (`-o vault_writes`).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import hashlib
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from storefs.fs.vault.names import decode_mt, encode_mt2
from storefs.vaults.base import (
    ArchiveInfo,
    ArchiveVault,
    JobAction,
    JobStatus,
    Tier,
    iso8601,
)
from storefs.vaults.treehash import tree_hash
from tests.fuse.harness import Env, Mount, STOREFS, errno_of, wait_until
from tests.fuse.vaultcases import glacier_vault, local_vault

MiB = 1 << 20
FAST = ("vault_tier=Expedited",)
ID_OK = re.compile(r"^[A-Za-z0-9_-]{1,240}$")
LOCAL_EXPEDITED_DELAY = 2.5   # seconds; Standard and Bulk jobs of the local vault never finish here
LOCAL_INVENTORY_DELAY = 1.0


# ------------------------------------------------------------------------------------------------
# Helpers


def open_close(path: Path, mode: str) -> None:
    with open(path, mode):
        pass


def jobs_of(vault: ArchiveVault, archive_id: str) -> list:
    return [j for j in vault.list_jobs() if j.action is JobAction.ARCHIVE_RETRIEVAL and j.archive_id == archive_id]


def inventory_jobs(vault: ArchiveVault) -> list:
    return [j for j in vault.list_jobs() if j.action is JobAction.INVENTORY_RETRIEVAL]


def xattr(path: Path, name: str) -> str:
    return os.getxattr(path, f"user.storefs.{name}").decode()


@dataclasses.dataclass
class VaultCase:
    """One backend: its storefs environment, the remote spec, and a client of our own on the vault."""

    kind: str
    env: Env
    remote: str
    vault: ArchiveVault
    job_delay: float              # seconds an Expedited retrieval takes
    true_tree_hashes: bool        # the server's tree hashes are real (moto's are plain SHA-256)

    def mount(self, *options: str) -> Mount:
        started = time.monotonic()
        mount = self.env.mount(self.remote, options=options)
        mount.took = time.monotonic() - started  # type: ignore[attr-defined]
        return mount


def open_while_pending(path: Path, job_started: float, delay: float) -> bytes | None:
    """Open an archive whose job started at `job_started` (monotonic): EAGAIN at once (None) — or,
    only if the job may really have finished by now (the server's clock runs on), its bytes."""
    before = time.monotonic()
    try:
        data = path.read_bytes()
    except OSError as exc:
        assert exc.errno == errno.EAGAIN, exc
        assert time.monotonic() - before < 5, "an open of a pending archive must fail at once"
        return None
    assert before - job_started >= delay - 0.5, "an open returned bytes before its job could have finished"
    return data


# ------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def moto_case(tmp_path, moto_glacier):
    with glacier_vault(moto_glacier) as new:
        env = Env(tmp_path, {"g": new.section})
        yield VaultCase("moto", env, f"g:{new.name}", new.vault, 2.0, False)
        env.close()


LOCAL_DELAYS = {"expedited": LOCAL_EXPEDITED_DELAY, "inventory": LOCAL_INVENTORY_DELAY}


@pytest.fixture
def local_case(tmp_path):
    with local_vault(tmp_path / "vaults", **LOCAL_DELAYS) as new:
        env = Env(tmp_path, {"lv": new.section})
        yield VaultCase("local", env, f"lv:{new.name}", new.vault, LOCAL_EXPEDITED_DELAY, True)
        env.close()


# ------------------------------------------------------------------------------------------------
# The read flow, on both backends


@dataclasses.dataclass
class Archives:
    old: tuple[bytes, ArchiveInfo]
    a: tuple[bytes, ArchiveInfo]
    b: tuple[bytes, ArchiveInfo]
    nameless: tuple[bytes, ArchiveInfo]
    dotdot: tuple[bytes, ArchiveInfo]
    uploaded_at: float


def upload_archives(vault: ArchiveVault) -> Archives:
    def put(data: bytes, description: str) -> tuple[bytes, ArchiveInfo]:
        return data, vault.upload_archive(data, len(data), description)

    started = time.time()
    old = put(b"the older version of a.txt", encode_mt2("docs/a.txt", 1_600_000_000))
    # moto dates archives to the second: the newer copy must be created in a later second.
    old_done = time.time()
    wait_until(lambda: time.time() >= int(old_done) + 1, 2, "the next second")
    a = put(os.urandom(3 * MiB + 17), encode_mt2("docs/a.txt", 1_700_000_000))  # > 1 MiB: a real tree
    b = put(os.urandom(200_000), "photos/b.jpg")                                   # a plain path
    nameless = put(b"an archive without a description", "")
    dotdot = put(b"an archive whose description escapes", "photos/../../etc/passwd")
    return Archives(old, a, b, nameless, dotdot, started)


def run_read_flow(case: VaultCase, *, adopt_inventory: bool) -> dict[str, float]:
    vault, env, delay = case.vault, case.env, case.job_delay
    timings: dict[str, float] = {}
    arch = upload_archives(vault)
    for _, info in (arch.nameless, arch.dotdot):
        assert ID_OK.match(info.archive_id), info.archive_id  # shown as id:<archiveId>

    # -- no inventory cached: the mount comes up at once and adopts (or starts) an inventory job
    if adopt_inventory:
        started_job = vault.start_inventory(tier=Tier.EXPEDITED)
    mount = case.mount(*FAST)
    timings["first mount"] = mount.took  # type: ignore[attr-defined]
    root = mount.path
    inventories = inventory_jobs(vault)
    assert len(inventories) == 1, inventories
    if adopt_inventory:
        assert inventories[0].job_id == started_job  # adopted, not a second one
    status = xattr(root, "inventory")
    # (On a loaded machine the job may already be done when the mount looks: then it is used at once.)
    pending = status.startswith("in-progress since")
    assert pending or status.startswith("from "), status
    if pending:
        assert os.listdir(root) == []  # nothing known yet (no uploads through storefs)

    # `storefs vault refresh --wait` reuses the pending job (or starts a new one if the mount already
    # used it), waits for it and caches the inventory. On the local vault the job is let finish first:
    # a refresh must then use it, not start a second one (it did before the fix in VaultFS.refresh).
    if not adopt_inventory:
        wait_until(lambda: vault.describe_job(inventories[0].job_id).completed, 30, "the inventory job")
    started = time.monotonic()
    refresh = env.run("vault", "refresh", case.remote, "--wait", "--timeout", "60", timeout=90)
    timings["vault refresh --wait"] = time.monotonic() - started
    assert refresh.returncode == 0, refresh.stdout + refresh.stderr
    assert "done" in refresh.stdout, refresh.stdout
    inventories = inventory_jobs(vault)
    assert len(inventories) == (1 if pending else 2), inventories
    mount.unmount().check_returncode()

    # -- the cached inventory: a remount is instant, starts no job, and shows the tree
    mount = case.mount(*FAST)
    timings["remount (cached inventory)"] = mount.took  # type: ignore[attr-defined]
    root = mount.path
    assert len(inventory_jobs(vault)) == len(inventories)
    newest = max(inventories, key=lambda j: j.creation_date)
    assert xattr(root, "inventory") == f"from {iso8601(vault.describe_job(newest.job_id).completion_date)}"
    nameless_name = f"id:{arch.nameless[1].archive_id}"
    dotdot_name = f"id:{arch.dotdot[1].archive_id}"
    assert sorted(os.listdir(root)) == sorted(["docs", "photos", nameless_name, dotdot_name])
    assert sorted(os.listdir(root / "docs")) == ["a.txt", "a.txt;2"]  # newest keeps the name
    assert os.listdir(root / "photos") == ["b.jpg"]
    a_path, old_path, b_path = root / "docs" / "a.txt", root / "docs" / "a.txt;2", root / "photos" / "b.jpg"
    a_data, a_info = arch.a
    assert a_path.stat().st_size == len(a_data) and a_path.stat().st_mtime == 1_700_000_000
    assert old_path.stat().st_size == len(arch.old[0]) and old_path.stat().st_mtime == 1_600_000_000
    assert xattr(old_path, "archive_id") == arch.old[1].archive_id
    assert xattr(a_path, "archive_id") == a_info.archive_id
    assert b_path.stat().st_size == len(arch.b[0])
    assert abs(b_path.stat().st_mtime - arch.uploaded_at) < 120  # no mt2 mtime: the creation date
    assert (root / nameless_name).stat().st_size == len(arch.nameless[0])
    assert a_path.stat().st_mode & 0o777 == 0o444
    assert (root / "docs").stat().st_mode & 0o777 == 0o555
    assert xattr(a_path, "retrieval") == "none"
    assert errno_of(lambda: os.getxattr(a_path, "user.storefs.other")) == errno.ENODATA

    # -- every mutation is EROFS, and none starts a job
    mutations = {
        "write": lambda: open_close(a_path, "r+b"),
        "append": lambda: open_close(a_path, "ab"),
        "create": lambda: open_close(root / "docs" / "new.txt", "wb"),
        "mkdir": lambda: os.mkdir(root / "newdir"),
        "rmdir": lambda: os.rmdir(root / "photos"),
        "unlink": lambda: os.unlink(a_path),
        "rename": lambda: os.rename(a_path, root / "docs" / "moved.txt"),
        "chmod": lambda: os.chmod(a_path, 0o644),
        "chown": lambda: os.chown(a_path, 1000, 1000),
        "truncate": lambda: os.truncate(a_path, 0),
        "utime": lambda: os.utime(a_path, (1, 1)),
        "symlink": lambda: os.symlink("a.txt", root / "docs" / "ln"),
        "link": lambda: os.link(a_path, root / "docs" / "hard"),
    }
    assert {name: errno_of(fn) for name, fn in mutations.items()} == {name: errno.EROFS for name in mutations}
    assert [j for j in vault.list_jobs() if j.action is JobAction.ARCHIVE_RETRIEVAL] == []

    # -- the first cat fails at once with EAGAIN and starts exactly one job; a second open none
    job_started = time.monotonic()
    cat = subprocess.run(["cat", str(a_path)], capture_output=True, timeout=60, check=False)
    timings["first cat (EAGAIN)"] = time.monotonic() - job_started
    assert cat.returncode != 0 and b"Resource temporarily unavailable" in cat.stderr, cat.stderr
    assert timings["first cat (EAGAIN)"] < 5
    a_jobs = jobs_of(vault, a_info.archive_id)
    assert len(a_jobs) == 1 and a_jobs[0].tier is Tier.EXPEDITED, a_jobs
    early = open_while_pending(a_path, job_started, delay)
    assert len(jobs_of(vault, a_info.archive_id)) == 1
    if early is None:
        assert xattr(a_path, "retrieval").startswith("in-progress since"), xattr(a_path, "retrieval")

    # `storefs restore --wait` on a directory, in the background while the first job runs.
    restore = subprocess.Popen(STOREFS + ["restore", "--wait", "--tier", "Expedited", "--timeout", "60",
                                          str(root / "photos")], env=env.vars, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    restore_started = time.monotonic()
    try:
        b_data, b_info = arch.b
        wait_until(lambda: jobs_of(vault, b_info.archive_id), 30, "the restore's job")

        # A remount starts no job either.
        mount.unmount().check_returncode()
        mount = case.mount(*FAST)
        root = mount.path
        a_path, b_path = root / "docs" / "a.txt", root / "photos" / "b.jpg"
        open_while_pending(a_path, job_started, delay)
        assert len(jobs_of(vault, a_info.archive_id)) == 1

        # Once the job is done, the same cat returns the archive (verified, then cached).
        wait_until(lambda: vault.describe_job(a_jobs[0].job_id).completed, delay + 30, "the retrieval job")
        timings["job done after"] = time.monotonic() - job_started
        cat = subprocess.run(["cat", str(a_path)], capture_output=True, timeout=60, check=False)
        assert cat.returncode == 0, cat.stderr
        assert cat.stdout == a_data
        if case.true_tree_hashes:
            assert xattr(a_path, "tree_hash") == tree_hash(cat.stdout) == a_info.tree_hash
        else:  # moto's "tree hash" is the plain SHA-256 (PROTOCOLS.md §1.9); storefs shows the server's
            assert xattr(a_path, "tree_hash") in (tree_hash(cat.stdout), hashlib.sha256(cat.stdout).hexdigest())
        assert xattr(a_path, "archive_id") == a_info.archive_id
        assert xattr(a_path, "retrieval") == "cached"
        assert len(jobs_of(vault, a_info.archive_id)) == 1

        out, err = restore.communicate(timeout=90)
    finally:
        if restore.poll() is None:
            restore.kill()
            restore.wait()
    timings["restore --wait"] = time.monotonic() - restore_started
    assert restore.returncode == 0, out + err
    assert "1 archive(s): 1 ready" in out, out
    assert b_path.read_bytes() == b_data
    assert xattr(b_path, "tree_hash") == tree_hash(b_data)  # under 1 MiB: even moto's hash is right
    b_jobs = jobs_of(vault, b_info.archive_id)
    assert len(b_jobs) == 1 and b_jobs[0].tier is Tier.EXPEDITED, b_jobs
    mount.unmount().check_returncode()

    # -- vault_wait: an open waits for the job it starts, then succeeds
    mount = case.mount(*FAST, "vault_wait=30")
    root = mount.path
    assert (root / "docs" / "a.txt").read_bytes() == a_data  # cached: no job
    assert len(jobs_of(vault, a_info.archive_id)) == 1

    def timed_read(path: Path) -> tuple[bytes, float]:
        before = time.monotonic()
        data = path.read_bytes()
        return data, time.monotonic() - before

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        waits = {name: pool.submit(timed_read, root / name) for name in (nameless_name, dotdot_name)}
        jobs = env.run("jobs", case.remote, check=True).stdout   # meanwhile
        results = {name: future.result(timeout=60) for name, future in waits.items()}
    for name, (data, took) in results.items():
        expected = arch.nameless if name == nameless_name else arch.dotdot
        assert data == expected[0]
        assert took >= delay - 1.0, f"{name}: the open returned after {took:.1f}s, before its job could finish"
        assert len(jobs_of(vault, expected[1].archive_id)) == 1
    timings["vault_wait open"] = max(took for _, took in results.values())

    assert "ArchiveRetrieval" in jobs and "InventoryRetrieval" in jobs, jobs
    assert "/docs/a.txt" in jobs and "/photos/b.jpg" in jobs and "Expedited" in jobs, jobs
    mount.unmount().check_returncode()
    return timings


def test_moto_glacier_mount(moto_case, record_property):
    timings = run_read_flow(moto_case, adopt_inventory=True)
    for name, seconds in timings.items():
        record_property(name, round(seconds, 2))
    print("moto timings:", {k: round(v, 2) for k, v in timings.items()})


def test_local_vault_mount(local_case, record_property):
    timings = run_read_flow(local_case, adopt_inventory=False)
    for name, seconds in timings.items():
        record_property(name, round(seconds, 2))
    print("local-vault timings:", {k: round(v, 2) for k, v in timings.items()})


# ------------------------------------------------------------------------------------------------
# Write-once uploads (local vault; the 40 MiB test of test_vault_mount.py runs on the CAS emulator)


def test_local_vault_writes_8_mib(local_case, tmp_path):
    vault = local_case.vault
    # write_back=0: each new file is uploaded inside its close (test_vault_backup_tools.py tests the window)
    mount = local_case.mount("vault_writes", "write_back=0")
    root = mount.path
    assert len(inventory_jobs(vault)) == 1  # the mount started one (nothing cached)
    data = os.urandom(8 * MiB + 5)
    (tmp_path / "src.bin").write_bytes(data)
    subprocess.run(["cp", str(tmp_path / "src.bin"), str(root / "backup.bin")], check=True)
    assert (root / "backup.bin").stat().st_size == len(data)  # in the tree at once
    assert (root / "backup.bin").stat().st_mode & 0o777 == 0o644   # the mode it was uploaded with
    assert errno_of(lambda: (root / "backup.bin").write_bytes(b"x")) in (errno.EROFS, errno.EEXIST)
    assert errno_of(lambda: os.open(root / "backup.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL)) == errno.EEXIST
    os.mkdir(root / "dir")   # a staged directory: shown in this mount until files below it imply it
    os.rmdir(root / "dir")
    assert errno_of(lambda: os.unlink(root / "backup.bin")) == errno.EROFS
    # An empty file cannot become an archive: its close says EINVAL, and it is gone.
    empty = open(root / "empty.txt", "wb")  # noqa: SIM115 (the close itself is what is tested)
    assert errno_of(empty.close) == errno.EINVAL
    # The file is dropped at its release, which FUSE sends after close() has returned: wait for it
    # (found under load: a listing right after close still showed it).
    deadline = time.monotonic() + 10
    while "empty.txt" in os.listdir(root):
        assert time.monotonic() < deadline, "the empty file is still listed 10 s after its close"
        time.sleep(0.05)
    # Random writes and truncate while the new file is open.
    with open(root / "notes.txt", "w+b") as f:
        f.write(b"0123456789" * 10)
        f.seek(5)
        f.write(b"XY")
        f.truncate(50)
    notes = (b"0123456789" * 10)[:5] + b"XY" + (b"0123456789" * 10)[7:50]
    assert sorted(os.listdir(root)) == ["backup.bin", "notes.txt"]

    # Two new archives in the vault: mt2 descriptions with their paths, the whole files, tree hashes.
    archives = {decode_mt(a.description)[0]: a for a in vault.archives()}  # type: ignore[index]
    assert sorted(archives) == ["backup.bin", "notes.txt"]
    assert archives["notes.txt"].size == len(notes) and archives["notes.txt"].tree_hash == tree_hash(notes)
    archives = [archives["backup.bin"]]
    decoded = decode_mt(archives[0].description)
    assert decoded is not None and decoded[0] == "backup.bin", archives[0].description
    assert archives[0].size == len(data) and archives[0].tree_hash == tree_hash(data)
    mount.unmount().check_returncode()

    # A remount shows it (from the upload record, or from the inventory) and reads it back.
    mount = local_case.mount(*FAST, "vault_wait=30")
    root = mount.path
    assert sorted(os.listdir(root)) == ["backup.bin", "notes.txt"]
    assert (root / "backup.bin").stat().st_size == len(data)
    assert (root / "notes.txt").stat().st_size == len(notes)
    back = (root / "backup.bin").read_bytes()  # vault_wait: waits for its Expedited job
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    assert xattr(root / "backup.bin", "tree_hash") == tree_hash(data)
    assert len(jobs_of(vault, archives[0].archive_id)) == 1


# ------------------------------------------------------------------------------------------------
# Failed, expired and corrupt jobs (the local vault's test faults work across processes: its job
# records are files the daemon reads)


def test_local_vault_failed_expired_and_corrupt_jobs(local_case):
    vault, env, delay = local_case.vault, local_case.env, local_case.job_delay
    x, y = os.urandom(1 * MiB + 3), os.urandom(70_000)
    vault.upload_archive(x, len(x), "x.bin")
    y_info = vault.upload_archive(y, len(y), "y.bin")
    x_id = next(a.archive_id for a in vault.archives() if a.description == "x.bin")
    env.run("vault", "refresh", local_case.remote, "--wait", "--timeout", "60", check=True)
    mount = local_case.mount(*FAST)
    root = mount.path
    assert sorted(os.listdir(root)) == ["x.bin", "y.bin"]

    # Both jobs start at once; then one is made to fail, the other to expire once done.
    assert errno_of(lambda: (root / "x.bin").read_bytes()) == errno.EAGAIN
    assert errno_of(lambda: (root / "y.bin").read_bytes()) == errno.EAGAIN
    x_job, y_job = jobs_of(vault, x_id)[0], jobs_of(vault, y_info.archive_id)[0]
    vault.fail_job(x_job.job_id, "the archive is damaged (injected)")
    wait_until(lambda: vault.describe_job(x_job.job_id).status is JobStatus.FAILED, delay + 30, "x's job")
    wait_until(lambda: vault.describe_job(y_job.job_id).completed, delay + 30, "y's job")

    # A failed job is reported once (EIO), and the next open starts another.
    assert errno_of(lambda: (root / "x.bin").read_bytes()) == errno.EIO
    assert xattr(root / "x.bin", "retrieval").startswith("failed: "), xattr(root / "x.bin", "retrieval")
    assert len(jobs_of(vault, x_id)) == 1
    assert errno_of(lambda: (root / "x.bin").read_bytes()) == errno.EAGAIN
    assert len(jobs_of(vault, x_id)) == 2

    # A job whose output the service forgot is replaced by the next open.
    vault.expire_job(y_job.job_id)
    assert errno_of(lambda: (root / "y.bin").read_bytes()) == errno.EAGAIN
    y_jobs = jobs_of(vault, y_info.archive_id)
    assert len(y_jobs) == 1 and y_jobs[0].job_id != y_job.job_id, y_jobs
    wait_until(lambda: vault.describe_job(y_jobs[0].job_id).completed, delay + 30, "y's second job")

    # Output that fails its tree hash is EIO and is not kept; the next open downloads it again.
    vault.corrupt_output(y_jobs[0].job_id)
    assert errno_of(lambda: (root / "y.bin").read_bytes()) == errno.EIO
    assert xattr(root / "y.bin", "retrieval") != "cached"
    vault.corrupt_output(y_jobs[0].job_id, False)
    assert (root / "y.bin").read_bytes() == y
    assert xattr(root / "y.bin", "retrieval") == "cached"
    assert len(jobs_of(vault, y_info.archive_id)) == 1
