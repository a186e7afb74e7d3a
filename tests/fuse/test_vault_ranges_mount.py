"""Partial retrieval through a real mount (CAS emulator, its clock moved by the test): `tail -c 100` of
a 40 MiB archive with `-o vault_ranges` costs one 8 MiB window, without it the whole archive (bytes
counted at the emulator); `storefs restore --range` then reads inside and outside the range;
`storefs jobs` and `user.storefs.retrieval` report ranged jobs. Issue #13 item 1."""
from __future__ import annotations


import errno
import os
import subprocess

import pytest

from storefs.vaults.treehash import tree_window
from tests.fuse.harness import Env, errno_of
from tests.fuse.vaultcases import cas_vault, retrievals

MiB = 1 << 20
SIZE = 40 * MiB
HOURS = 3600.0


@pytest.fixture
def vault_env(tmp_path, own_cas):
    with cas_vault(own_cas) as new:
        env = Env(tmp_path, {"c": new.section})
        env.name, env.vault, env.emulator = new.name, new.vault, own_cas
        yield env
        env.close()


def tail(path, count: int = 100) -> subprocess.CompletedProcess:
    return subprocess.run(["tail", "-c", str(count), str(path)], capture_output=True, timeout=60)


def read_at(path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def test_tail_of_a_large_archive_costs_one_window(vault_env):
    vault, emulator, clock = vault_env.vault, vault_env.emulator, vault_env.emulator.clock
    ranged_data, whole_data = os.urandom(SIZE), os.urandom(SIZE)
    vault.upload_archive(ranged_data, SIZE, "ranged.tar")
    vault.upload_archive(whole_data, SIZE, "whole.tar")
    vault.start_inventory()
    clock.advance(6 * HOURS)

    # With vault_ranges (archives of 16 MiB and more, 8 MiB windows): one ranged job, one window.
    mount = vault_env.mount(f"c:{vault_env.name}", options=("vault_ranges=16M",))
    path = mount.path / "ranged.tar"
    first = tail(path)
    # Not EAGAIN: tail takes that for "no data yet" and prints nothing, successfully.
    assert first.returncode != 0 and b"Object is remote" in first.stderr, first
    [job] = retrievals(vault)
    assert job.byte_range == (32 * MiB, SIZE) and job.sha256_tree_hash is None  # null while InProgress
    assert tail(path).returncode != 0 and len(retrievals(vault)) == 1       # never two jobs for it
    status = os.getxattr(path, "user.storefs.retrieval").decode()
    assert status.startswith(f"none; bytes {32 * MiB}-{SIZE - 1} in-progress since"), status
    clock.advance(6 * HOURS)
    before = emulator.output_bytes(vault_env.name)
    done = tail(path)
    assert done.returncode == 0 and done.stdout == ranged_data[-100:]
    ranged_bytes = emulator.output_bytes(vault_env.name) - before
    assert ranged_bytes == 8 * MiB, ranged_bytes
    assert os.getxattr(path, "user.storefs.retrieval").decode() == f"none; bytes {32 * MiB}-{SIZE - 1} cached"
    jobs = vault_env.run("jobs", f"c:{vault_env.name}", check=True).stdout
    assert f"/ranged.tar bytes {32 * MiB}-{SIZE - 1}" in jobs, jobs
    mount.unmount().check_returncode()

    # Without vault_ranges (the default): the open starts a whole job; the tail costs 40 MiB.
    mount = vault_env.mount(f"c:{vault_env.name}")
    path = mount.path / "whole.tar"
    assert errno_of(lambda: open(path, "rb")) == errno.EAGAIN
    assert [j.byte_range for j in retrievals(vault) if j.job_id != job.job_id] == [(0, SIZE)]
    clock.advance(6 * HOURS)
    before = emulator.output_bytes(vault_env.name)
    done = tail(path)
    assert done.returncode == 0 and done.stdout == whole_data[-100:]
    whole_bytes = emulator.output_bytes(vault_env.name) - before
    assert whole_bytes == SIZE, whole_bytes
    print(f"\ntail -c 100 of a {SIZE} byte archive: {ranged_bytes} bytes with vault_ranges, "
          f"{whole_bytes} without")


def test_restore_range_then_read_inside_and_outside(vault_env):
    vault, clock = vault_env.vault, vault_env.emulator.clock
    data = os.urandom(12 * MiB + 5)
    vault.upload_archive(data, len(data), "data.bin")
    vault.start_inventory()
    clock.advance(6 * HOURS)
    mount = vault_env.mount(f"c:{vault_env.name}")
    path = mount.path / "data.bin"

    bad = vault_env.run("restore", "--range", "9-3", str(path))
    assert bad.returncode == 2 and "START <= END" in bad.stderr
    started = vault_env.run("restore", "--range", "5000000-5000099", str(path))
    assert started.returncode == 75, started.stdout + started.stderr
    assert "1 job(s) started now" in started.stdout and f"bytes {4 * MiB}-{5 * MiB - 1}" in started.stdout
    [job] = retrievals(vault)
    assert job.byte_range == (4 * MiB, 5 * MiB)
    again = vault_env.run("restore", "--range", "4194304-4194400", str(path))
    assert "0 job(s) started now" in again.stdout and len(retrievals(vault)) == 1
    assert os.getxattr(path, "user.storefs.retrieval").decode().startswith(
        f"none; bytes {4 * MiB}-{5 * MiB - 1} in-progress since")

    clock.advance(6 * HOURS)
    ready = vault_env.run("restore", "--range", "5000000-5000099", "--wait", "--timeout", "30", str(path))
    assert ready.returncode == 0 and "1 ready" in ready.stdout, ready.stdout + ready.stderr
    assert read_at(path, 5_000_000, 100) == data[5_000_000:5_000_100]       # inside: served from it
    assert read_at(path, 4 * MiB, MiB) == data[4 * MiB:5 * MiB]
    assert len(retrievals(vault)) == 1   # the kernel's read-ahead past the range started nothing
    assert errno_of(lambda: read_at(path, 8 * MiB, 10)) == errno.EREMOTE    # outside: a whole job
    assert sorted(j.byte_range for j in retrievals(vault)) == [(0, len(data)), (4 * MiB, 5 * MiB)]
    clock.advance(6 * HOURS)
    assert read_at(path, 8 * MiB, 10) == data[8 * MiB:8 * MiB + 10]
    assert os.getxattr(path, "user.storefs.retrieval").decode() == f"cached; bytes {4 * MiB}-{5 * MiB - 1} cached"


def test_unzip_list_of_a_large_zip_costs_one_window(vault_env):
    import io
    import zipfile

    vault, emulator, clock = vault_env.vault, vault_env.emulator, vault_env.emulator.clock
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for i in range(5):
            archive.writestr(f"photos/img{i}.raw", os.urandom(8 * MiB))
    blob = buf.getvalue()
    vault.upload_archive(blob, len(blob), "photos.zip")
    vault.start_inventory()
    clock.advance(6 * HOURS)
    mount = vault_env.mount(f"c:{vault_env.name}", options=("vault_ranges=16M",))
    path = mount.path / "photos.zip"

    first = subprocess.run(["unzip", "-l", str(path)], capture_output=True, timeout=60)
    assert first.returncode != 0, first
    [job] = retrievals(vault)                       # the end of the zip: its central directory
    window = tree_window(len(blob) - 1, 8 * MiB, len(blob))
    assert job.byte_range == window
    clock.advance(6 * HOURS)
    before = emulator.output_bytes(vault_env.name)
    listed = subprocess.run(["unzip", "-l", str(path)], capture_output=True, timeout=60, text=True)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert all(f"photos/img{i}.raw" in listed.stdout for i in range(5))
    assert len(retrievals(vault)) == 1
    sent = emulator.output_bytes(vault_env.name) - before
    assert sent == window[1] - window[0], sent                                       # one window
    print(f"\nunzip -l of a {len(blob)} byte zip through vault_ranges: {sent} bytes retrieved")


def test_reading_on_past_a_window_starts_the_next_and_read_ahead_does_not(vault_env):
    vault, clock = vault_env.vault, vault_env.emulator.clock
    data = os.urandom(24 * MiB)
    vault.upload_archive(data, len(data), "seq.bin")
    vault.start_inventory()
    clock.advance(6 * HOURS)
    mount = vault_env.mount(f"c:{vault_env.name}", options=("vault_ranges=16M",))
    path = mount.path / "seq.bin"
    assert errno_of(lambda: read_at(path, 7 * MiB, 10)) == errno.EREMOTE
    clock.advance(6 * HOURS)
    # The last MiB of the first window, read to its end: the kernel reads ahead past it, no job.
    assert read_at(path, 7 * MiB, MiB) == data[7 * MiB:8 * MiB]
    assert [j.byte_range for j in retrievals(vault)] == [(0, 8 * MiB)]
    # A program that reads on gets its bytes up to the window's end, then the next window's job.
    with open(path, "rb") as f:
        f.seek(7 * MiB)
        assert f.read(MiB) == data[7 * MiB:8 * MiB]
        assert errno_of(lambda: f.read(MiB)) == errno.EREMOTE
    assert sorted(j.byte_range for j in retrievals(vault)) == [(0, 8 * MiB), (8 * MiB, 16 * MiB)]
    clock.advance(6 * HOURS)
    assert read_at(path, 7 * MiB, 2 * MiB) == data[7 * MiB:9 * MiB]
