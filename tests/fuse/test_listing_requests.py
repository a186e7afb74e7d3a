"""What an `ls -l` costs a mount, in requests from the kernel (`storefs status --json`'s `requests`):
every chunk of a listing comes with its entries' attributes (READDIRPLUS), so the kernel needs no
getattr per entry. In libfuse 3's default "auto" mode only the first ~4 KiB chunk did, and an `ls -l`
of 5,000 files made ~4,970 round trips for attributes the listing already had."""
from __future__ import annotations

import io
import os
import json
import subprocess
import time

from tests.fuse.harness import wait_until

FILES = 600


def _requests(env, mount) -> dict[str, int]:
    reports = json.loads(env.run("status", "--json", str(mount.path), check=True).stdout)
    return reports[0].get("requests", {})


def _settled(env, mount) -> dict[str, int]:
    """The counts once the status file has caught up (rewritten within ~0.5 s of a change)."""
    last: dict[str, int] = {}

    def same() -> dict[str, int] | None:
        nonlocal last
        now = _requests(env, mount)
        stable = now == last and now
        last = now
        return now if stable else None
    time.sleep(0.6)
    return wait_until(same, 20, "the status file's request counts to settle", step=0.7)


def test_ls_l_of_a_big_directory_asks_no_attributes_per_entry(local_env):
    for i in range(FILES):
        local_env.store.put(f"d/file-with-a-longish-name-{i:04d}", io.BytesIO(b"x" * i), i, {})
    mount = local_env.mount("r:b")
    assert (mount.path / "d").is_dir()
    before = _settled(local_env, mount)
    listing = subprocess.run(["ls", "-l", str(mount.path / "d")], capture_output=True, text=True,
                             check=True, timeout=120).stdout.splitlines()
    after = _settled(local_env, mount)
    assert len(listing) == FILES + 1   # "total" and one line per file
    assert " 599 " in next(line for line in listing if line.endswith("-0599"))
    getattrs = after.get("getattr", 0) - before.get("getattr", 0)
    readdirs = after.get("readdir", 0) - before.get("readdir", 0)
    assert readdirs >= 1
    # Without attributes in every chunk the kernel asked for each entry past the first chunk (~570).
    assert getattrs < FILES // 20, (getattrs, after)


def test_interleaved_listings_of_one_directory_each_see_every_entry(local_env):
    """Each open directory keeps its own listing between chunks: two listings read in turns, with a
    file created between their chunks, each give every entry that was there once."""
    for i in range(FILES):
        local_env.store.put(f"d/file-with-a-longish-name-{i:04d}", io.BytesIO(b"x"), 1, {})
    mount = local_env.mount("r:b")
    first, second = os.scandir(mount.path / "d"), os.scandir(mount.path / "d")
    seen_first, seen_second = [], []
    try:
        for step in range(FILES + 10):
            entry = next(first, None)
            if entry is not None:
                seen_first.append(entry.name)
            if step == FILES // 2:
                (mount.path / "d" / "aaa-new").write_bytes(b"n")
            entry = next(second, None)
            if entry is not None:
                seen_second.append(entry.name)
    finally:
        first.close()
        second.close()
    expected = {f"file-with-a-longish-name-{i:04d}" for i in range(FILES)}
    for seen in (seen_first, seen_second):
        assert len(seen) == len(set(seen)), "an entry came twice"
        assert expected <= set(seen) <= expected | {"aaa-new"}
