"""VaultFS without FUSE, against the local vault and the CAS emulator (clocks moved, never slept).

What these tests prove, claim by claim (the issue's list):
- the tree matches the inventory (names, duplicates, nameless archives, sizes, dates);
- without a cached inventory the mount comes up at once, adopts or starts one inventory job, and says
  so in `user.storefs.inventory`; a remount reuses the cache and starts no job;
- every mutation is EROFS;
- the first open fails fast with EAGAIN and starts exactly one job; a second open and a remount start
  none; after the clock moves the same open returns bytes whose tree hash matches;
- `vault_wait` blocks, then succeeds; the errno is configurable;
- a failed job is reported (EIO) and the next open starts another; an expired job is replaced;
- a corrupted download is caught by the tree hash and never served (nor cached);
- restore --wait of a directory; write-once upload round trip of a 40 MiB file.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
import time

import pytest

from storefs.errors import ArchiveNotReady, ReadOnly, errno_for
from storefs.fs.api import MountedFS
from storefs.fs.vault.filesystem import NoAttribute, VaultFS
from storefs.options import VaultOptions
from storefs.fs.vault.names import decode_mt, encode_mt2
from storefs.vaults import treehash
from storefs.vaults.base import JobFailed, JobStatus, TreeHashMismatch
from tests.vaultfs.conftest import HOURS, STANDARD_DONE, Env

MiB = 1 << 20


def read_all(fs: VaultFS, fh: int, chunk: int = 1 << 20) -> bytes:
    parts, offset = [], 0
    while True:
        data = fs.read(fh, chunk, offset)
        if not data:
            return b"".join(parts)
        parts.append(data)
        offset += len(data)


def cat(fs: VaultFS, path: str) -> bytes:
    fh = fs.open(path, os.O_RDONLY)
    try:
        return read_all(fs, fh)
    finally:
        fs.release(fh)


def xattr(fs: VaultFS, path: str, name: str) -> str:
    return fs.getxattr(path, name).decode()


def not_ready(fs: VaultFS, path: str) -> ArchiveNotReady:
    started = time.monotonic()
    with pytest.raises(ArchiveNotReady) as caught:
        fs.open(path, os.O_RDONLY)
    assert time.monotonic() - started < 2.0, "a not-ready open must fail fast"
    return caught.value


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def in_thread(fn, *args):
    result: dict = {}

    def run():
        try:
            result["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc
    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


# ------------------------------------------------------------------------------------------------
# The tree


def test_tree_matches_inventory(env: Env):
    uploaded = {
        "plain": env.upload("docs/readme.txt", b"read me"),
        "mt2": env.upload(encode_mt2("photos/2019/ü.jpg", 1_500_000_000), b"jpeg bytes"),
        "nameless": env.upload("", b"no name"),
        "broken": env.upload("mt2 !!!", b"broken mt2"),
        "dup_old": env.upload("dup.txt", b"old"),
        "dup_mid": env.upload("dup.txt", b"middle"),
        "dup_new": env.upload("dup.txt", b"newest"),
        "escape": env.upload("../etc/passwd", b"nope"),
    }
    fs = env.mount()
    # No cached inventory: the mount is up, empty for now, and one inventory job is on its way.
    assert fs.readdir("/") == []
    assert xattr(fs, "/", "user.storefs.inventory").startswith("in-progress since ")
    assert len(env.inventory_jobs()) == 1
    env.advance(STANDARD_DONE)
    assert fs.check_inventory()
    ids = {k: a.archive_id for k, a in uploaded.items()}
    assert fs.readdir("/") == sorted(["docs", "photos", "dup.txt", "dup.txt;2", "dup.txt;3",
                                      f"id:{ids['nameless']}", f"id:{ids['broken']}", f"id:{ids['escape']}"])
    assert fs.readdir("/photos/2019") == ["ü.jpg"]
    # sizes and dates come from the inventory; mt2 carries the file's own mtime
    photo = fs.getattr("/photos/2019/ü.jpg")
    assert photo.size == len(b"jpeg bytes") and photo.mtime_ns == 1_500_000_000 * 10**9
    assert stat.S_IMODE(photo.mode) == 0o444 and stat.S_ISREG(photo.mode)
    assert abs(fs.getattr("/docs/readme.txt").mtime_ns / 1e9 - uploaded["plain"].creation_date) < 1.0
    root = fs.getattr("/docs")
    assert stat.S_ISDIR(root.mode) and stat.S_IMODE(root.mode) == 0o555
    # duplicates: newest first
    for name, key in (("dup.txt", "dup_new"), ("dup.txt;2", "dup_mid"), ("dup.txt;3", "dup_old")):
        assert xattr(fs, f"/{name}", "user.storefs.archive_id") == ids[key]
        assert fs.getattr(f"/{name}").size == uploaded[key].size
    assert xattr(fs, "/docs/readme.txt", "user.storefs.tree_hash") == treehash.tree_hash(b"read me")
    assert xattr(fs, "/", "user.storefs.inventory").startswith("from ")
    assert set(fs.listxattr("/docs/readme.txt")) == {"user.storefs.archive_id", "user.storefs.retrieval",
                                                      "user.storefs.tree_hash"}
    with pytest.raises(NoAttribute) as caught:
        fs.getxattr("/docs/readme.txt", "security.selinux")
    assert errno_for(caught.value) == errno.ENODATA
    statfs = fs.statfs()
    assert statfs["f_namemax"] == 255 and statfs["f_files"] == len(uploaded)

    # A remount is instant: the cached inventory, no new job, the same tree.
    again = env.mount(fresh_provider=True)
    assert again.readdir("/") == fs.readdir("/")
    assert len(env.inventory_jobs()) == 1
    assert xattr(again, "/", "user.storefs.inventory") == xattr(fs, "/", "user.storefs.inventory")


def test_mount_adopts_an_inventory_job_started_earlier(env: Env):
    env.upload("a.txt", b"a")
    job_id = env.vault.start_inventory()
    fs = env.mount()
    assert [j.job_id for j in env.inventory_jobs()] == [job_id]
    assert xattr(fs, "/", "user.storefs.inventory").startswith("in-progress since ")
    # a second mount (another process) adopts the recorded job as well
    env.mount(fresh_provider=True)
    assert len(env.inventory_jobs()) == 1
    env.advance(STANDARD_DONE)
    assert fs.check_inventory()
    assert fs.readdir("/") == ["a.txt"]


def test_refresh_swaps_the_tree_in_when_done(env: Env):
    env.upload("first", b"1")
    fs = env.mounted_with_inventory()
    env.upload("second", b"2")
    report = fs.refresh(wait=False)[0]
    assert report.state == "in-progress" and fs.readdir("/") == ["first"]
    assert "refresh in-progress since" in xattr(fs, "/", "user.storefs.inventory")
    # a refresh while one is pending adopts it
    fs.refresh(wait=False)
    assert len(env.inventory_jobs()) == 2
    # another process (the CLI) waits for it and swaps it in; the mount picks it up from disk
    cli = env.mount(fresh_provider=True)
    thread, result = in_thread(cli.refresh, True, 20.0)
    time.sleep(0.1)
    env.advance(STANDARD_DONE)
    thread.join(20)
    assert result["value"][0].state == "done", result
    assert cli.readdir("/") == ["first", "second"]
    assert fs.check_inventory()
    assert fs.readdir("/") == ["first", "second"]
    assert len(env.inventory_jobs()) == 2


# ------------------------------------------------------------------------------------------------
# Refusals


def test_every_mutation_is_erofs(local_env: Env):
    local_env.upload("dir/file", b"x")
    fs = local_env.mounted_with_inventory()
    calls = [
        lambda: fs.create("/dir/new", 0o644, 0, 0, os.O_WRONLY | os.O_CREAT),
        lambda: fs.open("/dir/file", os.O_WRONLY),
        lambda: fs.open("/dir/file", os.O_RDWR),
        lambda: fs.open("/dir/file", os.O_RDONLY | os.O_TRUNC),
        lambda: fs.truncate("/dir/file", 0),
        lambda: fs.unlink("/dir/file"),
        lambda: fs.mkdir("/dir2", 0o755, 0, 0),
        lambda: fs.rmdir("/dir"),
        lambda: fs.rename("/dir/file", "/dir/other"),
        lambda: fs.chmod("/dir/file", 0o600),
        lambda: fs.chown("/dir/file", 1, 1),
        lambda: fs.utimens("/dir/file", 0),
        lambda: fs.symlink("/dir/link", "file", 0, 0),
        lambda: fs.link("/dir/hard", "/dir/file"),
        lambda: fs.mknod("/dir/node", stat.S_IFREG | 0o644, 0, 0),
    ]
    for call in calls:
        with pytest.raises(ReadOnly) as caught:
            call()
        assert errno_for(caught.value) == errno.EROFS
    assert local_env.jobs() == []  # and no refusal started a retrieval


# ------------------------------------------------------------------------------------------------
# Retrieval on open


def test_first_open_fails_fast_then_serves_verified_bytes(env: Env):
    data = os.urandom(3 * MiB + 123)
    archive = env.upload("data/blob.bin", data)
    fs = env.mounted_with_inventory()
    assert xattr(fs, "/data/blob.bin", "user.storefs.retrieval") == "none"
    exc = not_ready(fs, "/data/blob.bin")
    assert errno_for(exc) == errno.EAGAIN
    assert len(env.jobs()) == 1
    assert xattr(fs, "/data/blob.bin", "user.storefs.retrieval").startswith("in-progress since ")
    not_ready(fs, "/data/blob.bin")                      # a second open: no second job
    remount = env.mount(fresh_provider=True)              # a remount: none either
    not_ready(remount, "/data/blob.bin")
    assert len(env.jobs()) == 1
    env.advance(STANDARD_DONE)
    assert xattr(fs, "/data/blob.bin", "user.storefs.retrieval").startswith("ready until ")
    got = cat(fs, "/data/blob.bin")
    assert treehash.tree_hash(got) == archive.tree_hash and got == data
    assert xattr(fs, "/data/blob.bin", "user.storefs.retrieval") == "cached"
    # the other mount serves the cached bytes without a request for them
    assert cat(remount, "/data/blob.bin") == data
    assert len(env.jobs()) == 1
    assert fs.getattr_etag("/data/blob.bin") == archive.archive_id and fs.getattr_etag("/data") is None
    # pread at offsets, past the end
    fh = fs.open("/data/blob.bin", os.O_RDONLY)
    assert fs.read(fh, 10, MiB) == data[MiB:MiB + 10]
    assert fs.read(fh, 10, len(data) + 5) == b""
    fs.release(fh)


def test_vault_wait_blocks_then_succeeds(env: Env):
    env.upload("f", b"waited for")
    fs = env.mounted_with_inventory(wait=30)
    thread, result = in_thread(fs.open, "/f", os.O_RDONLY)
    wait_for(lambda: len(env.jobs()) == 1)
    time.sleep(0.2)
    assert thread.is_alive(), "open should be waiting for the job"
    env.advance(STANDARD_DONE)
    thread.join(20)
    assert "value" in result, result
    assert read_all(fs, result["value"]) == b"waited for"
    fs.release(result["value"])
    assert len(env.jobs()) == 1


def test_vault_wait_runs_out(local_env: Env):
    local_env.upload("f", b"x")
    fs = local_env.mounted_with_inventory(wait=0.3)
    started = time.monotonic()
    with pytest.raises(ArchiveNotReady):
        fs.open("/f", os.O_RDONLY)
    assert 0.3 <= time.monotonic() - started < 3


@pytest.mark.parametrize("name,code", [("EREMOTE", errno.EREMOTE), ("eacces", errno.EACCES), ("EIO", errno.EIO)])
def test_not_ready_errno_is_configurable(local_env: Env, name, code):
    local_env.upload("f", b"x")
    fs = local_env.mounted_with_inventory(not_ready_errno=name)
    assert errno_for(not_ready(fs, "/f")) == code


def test_vault_fs_is_a_mounted_fs(local_env: Env):
    """The FUSE edge drives VaultFS through fs/api.py's declared interface, as it drives StoreFS."""
    assert isinstance(local_env.mount(), MountedFS)
    assert isinstance(local_env.mount(vault=None, vault_writes=True), MountedFS)


def test_options_parse():
    opts = VaultOptions()
    opts.set("vault_tier", "bulk")
    opts.set("vault_wait", "12.5")
    opts.set("vault_errno", "eremote")
    opts.set("vault_writes", None)
    assert (opts.tier, opts.wait, opts.errno, opts.vault_writes) == ("Bulk", 12.5, errno.EREMOTE, True)
    from storefs.errors import ConfigError
    for name, value in (("vault_tier", "fast"), ("vault_wait", "-1"), ("vault_errno", "ENOENT"), ("nope", "1")):
        with pytest.raises(ConfigError):
            VaultOptions().set(name, value)


def test_tier_option_reaches_the_job(local_env: Env):
    local_env.upload("f", b"x")
    fs = local_env.mounted_with_inventory(tier="Expedited")
    not_ready(fs, "/f")
    assert [j.tier.value for j in local_env.jobs()] == ["Expedited"]
    local_env.advance(301)
    assert cat(fs, "/f") == b"x"


def test_failed_job_is_reported_then_retried(env: Env):
    env.upload("f", b"payload")
    fs = env.mounted_with_inventory()
    not_ready(fs, "/f")
    [job] = env.jobs()
    env.fail_job(job.job_id, "archive damaged (injected)")
    env.advance(STANDARD_DONE)
    assert xattr(fs, "/f", "user.storefs.retrieval") == "failed: archive damaged (injected)"
    with pytest.raises(JobFailed) as caught:
        fs.open("/f", os.O_RDONLY)
    assert errno_for(caught.value) == errno.EIO and "archive damaged" in str(caught.value)
    # the next open starts a new job (and only one)
    not_ready(fs, "/f")
    assert len(env.jobs()) == 2
    not_ready(fs, "/f")
    assert len(env.jobs()) == 2
    env.advance(STANDARD_DONE)
    assert cat(fs, "/f") == b"payload"


def test_expired_job_is_replaced(env: Env):
    env.upload("f", b"payload")
    fs = env.mounted_with_inventory()
    not_ready(fs, "/f")
    [first] = env.jobs()
    env.advance(STANDARD_DONE)
    assert env.vault.describe_job(first.job_id).status is JobStatus.SUCCEEDED
    env.advance(25 * HOURS)  # output kept 24 h after completion, then gone
    assert xattr(fs, "/f", "user.storefs.retrieval") == "none"
    exc = not_ready(fs, "/f")
    assert errno_for(exc) == errno.EAGAIN
    jobs = env.jobs()
    assert len(jobs) == 1 and jobs[0].job_id != first.job_id
    # a job the server forgot early (NotFound) is replaced as well
    env.expire_job(jobs[0].job_id)
    not_ready(fs, "/f")
    [third] = env.jobs()
    assert third.job_id not in (first.job_id, jobs[0].job_id)
    env.advance(STANDARD_DONE)
    assert cat(fs, "/f") == b"payload"


def test_job_output_near_expiry_is_not_started(local_env: Env):
    local_env.upload("f", b"payload")
    fs = local_env.mounted_with_inventory()
    not_ready(fs, "/f")
    local_env.advance(STANDARD_DONE + 24 * HOURS - 60)  # the server still has it, for a minute
    not_ready(fs, "/f")
    assert len(local_env.jobs()) == 2


def test_corrupt_download_is_never_served(env: Env):
    data = os.urandom(2 * MiB + 7)
    env.upload("f", data)
    fs = env.mounted_with_inventory()
    not_ready(fs, "/f")
    [job] = env.jobs()
    env.advance(STANDARD_DONE)
    env.corrupt_output(job.job_id)
    for _ in range(2):
        with pytest.raises(TreeHashMismatch) as caught:
            fs.open("/f", os.O_RDONLY)
        assert errno_for(caught.value) == errno.EIO
    view = fs._view(env.vault_name)
    assert [p.name for p in view.state.data_dir.iterdir()] == []   # nothing cached, no leftovers
    assert xattr(fs, "/f", "user.storefs.retrieval").startswith("ready until ")  # the job is still good
    env.corrupt_output(job.job_id, False)
    assert cat(fs, "/f") == data
    assert len(env.jobs()) == 1


def test_corruption_in_transit_is_fetched_again(cas_env: Env):
    data = os.urandom(MiB + 5)
    cas_env.upload("f", data)
    fs = cas_env.mounted_with_inventory()
    not_ready(fs, "/f")
    cas_env.advance(STANDARD_DONE)
    cas_env.emulator.corrupt_next_outputs(1)
    assert cat(fs, "/f") == data


def test_one_job_for_many_concurrent_opens(env: Env):
    env.upload("f", b"shared")
    fs = env.mounted_with_inventory()
    other = env.mount(fresh_provider=True)  # another process on the same state directory
    errors: list[BaseException] = []

    def opener(target: VaultFS) -> None:
        try:
            target.open("/f", os.O_RDONLY)
        except BaseException as exc:  # noqa: BLE001 - the test looks at each
            errors.append(exc)
    threads = [threading.Thread(target=opener, args=(fs if i % 2 else other,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(errors) == 8 and all(isinstance(e, ArchiveNotReady) for e in errors)
    assert len(env.jobs()) == 1
    env.advance(STANDARD_DONE)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda t=t: results.append(cat(t, "/f"))) for t in (fs, other) * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert results == [b"shared"] * 6


def test_open_adopts_a_retrieval_started_elsewhere(local_env: Env):
    archive = local_env.upload("f", b"adopted")
    fs = local_env.mounted_with_inventory()
    job_id = local_env.vault.start_retrieval(archive.archive_id)
    exc = not_ready(fs, "/f")
    assert local_env.vault.describe_job(job_id).status is JobStatus.IN_PROGRESS
    assert [j.job_id for j in local_env.jobs()] == [job_id], exc
    local_env.advance(STANDARD_DONE)
    assert cat(fs, "/f") == b"adopted"


# ------------------------------------------------------------------------------------------------
# restore and jobs


def test_restore_wait_on_a_directory(env: Env):
    files = {f"/dir/sub/f{i}": os.urandom(1000 + i) for i in range(4)}
    for path, data in files.items():
        env.upload(path[1:], data)
    env.upload("outside", b"not restored")
    fs = env.mounted_with_inventory()
    cat_path = "/dir/sub/f0"
    not_ready(fs, cat_path)  # one of them already has a job: restore must reuse it
    seen: list[tuple[int, int]] = []

    def advance_soon():
        wait_for(lambda: len(env.jobs()) == 4)  # every job started before the clock moves
        time.sleep(0.1)
        env.advance(STANDARD_DONE)
    mover = threading.Thread(target=advance_soon)
    mover.start()
    report = fs.restore(["/dir"], wait=True, timeout=20, progress=lambda d, t: seen.append((d, t)))
    mover.join()
    assert not report.timed_out and report.all_ready, report
    assert sorted(i.path for i in report.items) == sorted(files)
    assert report.jobs_started == 3 and len(env.jobs()) == 4
    assert seen[0] == (0, 4) and seen[-1] == (4, 4)
    for path, data in files.items():
        assert cat(fs, path) == data
    assert len(env.jobs()) == 4
    again = fs.restore(["/dir/sub/f1", "/dir"])
    assert again.count("cached") == 4 and again.jobs_started == 0


def test_restore_timeout_and_failures(local_env: Env):
    local_env.upload("a", b"a")
    local_env.upload("b", b"b")
    fs = local_env.mounted_with_inventory()
    report = fs.restore(["/"], wait=True, timeout=0.2)
    assert report.timed_out and report.count("in-progress") == 2
    job = next(j for j in local_env.jobs() if j.archive_id == report.items[0].archive_id)
    local_env.fail_job(job.job_id, "gone")
    local_env.advance(STANDARD_DONE)
    report = fs.restore(["/"], wait=False)
    # an explicit restore retries a failed job at once
    assert report.count("ready") == 1 and report.count("in-progress") == 1 and report.jobs_started == 1


def test_jobs_lists_the_vaults_jobs(local_env: Env):
    archive = local_env.upload("f", b"x")
    fs = local_env.mounted_with_inventory()
    not_ready(fs, "/f")
    retrievals = [j for j in fs.jobs() if j.archive_id == archive.archive_id]
    assert len(retrievals) == 1 and fs.path_of(archive.archive_id) == "/f"


# ------------------------------------------------------------------------------------------------
# Multi-vault mounts


def test_all_vaults_of_a_remote(local_env: Env):
    other = f"{local_env.vault_name}-b"
    local_env.provider.create_vault(other)
    local_env.upload("in-a", b"A")
    local_env.upload("in-b", b"B", vault=other)
    fs = local_env.mount(vault=None)
    assert fs.readdir("/") == sorted([local_env.vault_name, other])
    assert stat.S_ISDIR(fs.getattr(f"/{other}").mode)
    assert local_env.inventory_jobs() == [] and local_env.inventory_jobs(other) == []  # ls / costs no job
    assert fs.readdir(f"/{other}") == []
    assert xattr(fs, f"/{other}", "user.storefs.inventory").startswith("in-progress since ")
    assert len(local_env.inventory_jobs(other)) == 1 and local_env.inventory_jobs() == []
    local_env.advance(STANDARD_DONE)
    fs.check_inventory()
    assert fs.readdir(f"/{other}") == ["in-b"]
    not_ready(fs, f"/{other}/in-b")
    local_env.advance(STANDARD_DONE)
    assert cat(fs, f"/{other}/in-b") == b"B"
    from storefs.errors import NotFound
    with pytest.raises(NotFound):
        fs.readdir("/no-such-vault")


# ------------------------------------------------------------------------------------------------
# Write-once uploads


def test_upload_round_trip_40mib(env: Env, monkeypatch):
    parts_sent: list[int] = []
    if env.kind == "cas":
        vault_class = type(env.vault)
        original = vault_class.upload_part

        def counting(self, upload, start, data):
            parts_sent.append(len(data))
            return original(self, upload, start, data)
        monkeypatch.setattr(vault_class, "upload_part", counting)
    fs = env.mounted_with_inventory(vault_writes=True)
    assert stat.S_IMODE(fs.getattr("/").mode) == 0o755
    size = 40 * MiB + 12345
    block = os.urandom(MiB)
    expected = hashlib.sha256()
    fh = fs.create("/big.bin", 0o644, 1000, 1000, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    offset = 0
    while offset < size:
        piece = block[: min(MiB, size - offset)]
        assert fs.write(fh, piece, offset) == len(piece)
        expected.update(piece)
        offset += len(piece)
    assert fs.getattr("/big.bin", fh).size == size
    assert "big.bin" in fs.readdir("/")
    fs.flush(fh)
    with pytest.raises(ReadOnly):
        fs.write(fh, b"late", 0)  # uploaded at close: immutable from now on
    fs.release(fh)
    # in the tree at once, before any inventory knows it
    attrs = fs.getattr("/big.bin")
    assert attrs.size == size and stat.S_IMODE(attrs.mode) == 0o644  # the mode it was uploaded with
    archive_id = xattr(fs, "/big.bin", "user.storefs.archive_id")
    tree_hash = xattr(fs, "/big.bin", "user.storefs.tree_hash")
    if env.kind == "cas":  # over single_upload_max (16 MiB here): multipart, 8 MiB parts
        assert parts_sent and all(n == 8 * MiB for n in parts_sent[:-1]) and sum(parts_sent) == size
    remount = env.mount(fresh_provider=True)
    assert remount.getattr("/big.bin").size == size
    # reading it back takes a retrieval, as for any archive
    not_ready(remount, "/big.bin")
    env.advance(STANDARD_DONE)
    fh = remount.open("/big.bin", os.O_RDONLY)
    got, offset, hasher = hashlib.sha256(), 0, treehash.TreeHasher()
    while True:
        data = remount.read(fh, 4 * MiB, offset)
        if not data:
            break
        got.update(data)
        hasher.update(data)
        offset += len(data)
    remount.release(fh)
    assert offset == size and got.digest() == expected.digest() and hasher.hexdigest() == tree_hash
    # an inventory that lists it takes over from the upload record
    remount.refresh(wait=False)
    env.advance(STANDARD_DONE)
    assert remount.check_inventory()
    assert remount.readdir("/") == ["big.bin"]
    state = remount._view(env.vault_name).state
    assert state.uploads() == []
    [listed] = state.load_inventory().archives
    assert listed.archive_id == archive_id and listed.size == size
    assert decode_mt(listed.description)[0] == "big.bin"


def test_upload_rules(local_env: Env):
    local_env.upload("existing", b"x")
    local_env.upload("dir/inner", b"y")
    deep = "/".join(c * 250 for c in "abc")
    local_env.upload(f"{deep}/x", b"z")
    fs = local_env.mounted_with_inventory(vault_writes=True, keep_uploads=True)
    with pytest.raises(ReadOnly):
        fs.create("/existing", 0o644, 0, 0, os.O_WRONLY | os.O_CREAT)
    from storefs.errors import AlreadyExists, InvalidArgument, NameTooLong, NotFound
    with pytest.raises(AlreadyExists):
        fs.create("/existing", 0o644, 0, 0, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    with pytest.raises(NotFound):
        fs.create("/nodir/x", 0o644, 0, 0, os.O_WRONLY | os.O_CREAT)
    with pytest.raises(InvalidArgument):
        fs.create("/id:fake", 0o644, 0, 0, os.O_WRONLY | os.O_CREAT)
    with pytest.raises(NameTooLong):
        fs.create(f"/{deep}/" + "ж" * 120, 0o644, 0, 0, os.O_WRONLY | os.O_CREAT)
    # an empty file cannot become an archive: close says so, and it is gone
    fh = fs.create("/dir/empty", 0o644, 0, 0, os.O_WRONLY | os.O_CREAT)
    with pytest.raises(InvalidArgument):
        fs.flush(fh)
    with pytest.raises(InvalidArgument):
        fs.release(fh)
    assert fs.readdir("/dir") == ["inner"]
    # keep_uploads: readable at once, without a job
    fh = fs.create("/dir/kept", 0o644, 0, 0, os.O_WRONLY | os.O_CREAT)
    fs.write(fh, b"hello ", 0)
    fs.truncate("/dir/kept", 3)
    fs.write(fh, b"p me", 3)
    fs.fsync(fh)
    fs.release(fh)
    assert cat(fs, "/dir/kept") == b"help me"
    assert xattr(fs, "/dir/kept", "user.storefs.retrieval") == "cached"
    assert local_env.jobs() == []
    # mutations other than new files stay refused
    with pytest.raises(ReadOnly):
        fs.unlink("/dir/kept")
    with pytest.raises(ReadOnly):
        fs.open("/dir/kept", os.O_WRONLY)


def test_close_uploads_files_still_open(local_env: Env):
    fs = local_env.mounted_with_inventory(vault_writes=True)
    fh = fs.create("/late", 0o644, 0, 0, os.O_WRONLY | os.O_CREAT)
    fs.write(fh, b"written before unmount", 0)
    assert fs.close() == []
    again = local_env.mount()
    assert again.getattr("/late").size == len(b"written before unmount")
    assert len(local_env.vault.archives()) == 1


def test_reading_a_file_while_it_is_written(local_env: Env):
    fs = local_env.mounted_with_inventory(vault_writes=True)
    fh = fs.create("/w", 0o644, 0, 0, os.O_RDWR | os.O_CREAT)
    fs.write(fh, b"abc", 0)
    assert fs.read(fh, 10, 0) == b"abc"
    assert cat(fs, "/w") == b"abc"   # another open sees what is staged
    assert fs.getattr("/w").size == 3
    fs.release(fh)
    assert fs.getattr("/w").size == 3


# ------------------------------------------------------------------------------------------------
# Lookups, the poller, trouble at start


def test_lookup_errors(local_env: Env):
    from storefs.errors import IsADirectory, NotADirectory, NotFound
    local_env.upload("d/f", b"x")
    fs = local_env.mounted_with_inventory()
    with pytest.raises(NotFound):
        fs.getattr("/nope")
    with pytest.raises(NotFound):
        fs.readdir("/nope")
    with pytest.raises(NotADirectory):
        fs.readdir("/d/f")
    with pytest.raises(IsADirectory):
        fs.open("/d", os.O_RDONLY)
    with pytest.raises(NotFound):
        fs.open("/d/nope", os.O_RDONLY)
    with pytest.raises(NotFound):
        fs.getxattr("/d/nope", "user.storefs.retrieval")
    with pytest.raises(NoAttribute):
        fs.getxattr("/d", "user.storefs.inventory")   # only the vault's root has it
    assert fs.listxattr("/d") == [] and fs.listxattr("/") == ["user.storefs.inventory"]
    assert local_env.jobs() == []


def test_poller_swaps_the_tree_in(local_env: Env):
    local_env.upload("f", b"x")
    fs = local_env.mount(inventory_poll=0.05)
    assert fs.readdir("/") == []
    local_env.advance(STANDARD_DONE)
    deadline = time.monotonic() + 10
    while fs.readdir("/") != ["f"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fs.readdir("/") == ["f"]
    assert xattr(fs, "/", "user.storefs.inventory").startswith("from ")


def test_mount_comes_up_when_the_vault_does_not_answer(local_env: Env, monkeypatch):
    from storefs.errors import Transient
    local_env.upload("f", b"x")
    vault_class = type(local_env.vault)
    original = vault_class.list_jobs

    def down(self, **kwargs):
        raise Transient("connection refused (injected)")
    monkeypatch.setattr(vault_class, "list_jobs", down)
    fs = local_env.mount()
    assert fs.readdir("/") == []
    assert "connection refused" in xattr(fs, "/", "user.storefs.inventory")
    monkeypatch.setattr(vault_class, "list_jobs", original)
    fs.check_inventory()  # what the poller does: start the job now
    assert xattr(fs, "/", "user.storefs.inventory").startswith("in-progress since ")
    local_env.advance(STANDARD_DONE)
    fs.check_inventory()
    assert fs.readdir("/") == ["f"]


def test_failed_inventory_job_is_reported(local_env: Env):
    local_env.upload("f", b"x")
    fs = local_env.mount()
    [job] = local_env.inventory_jobs()
    local_env.fail_job(job.job_id, "inventory broke")
    local_env.advance(STANDARD_DONE)
    assert not fs.check_inventory()
    assert "inventory broke" in xattr(fs, "/", "user.storefs.inventory")
    report = fs.refresh(wait=False)[0]
    assert report.state == "in-progress" and len(local_env.inventory_jobs()) == 2
