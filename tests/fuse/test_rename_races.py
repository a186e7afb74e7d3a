"""A rename racing the upload of what it moves, through a real mount (SEMANTICS.md, "rename").

A directory renamed just as the upload of a file inside it began (the write-back delay has passed)
left its old name behind (rarely with four uploads at once, often once small files went up sixteen at
a time; found by test_model[cos] as "lstat('c'): model ENOENT, storefs dir"): the upload landed under the old key after the rename had listed and moved
the directory, and although the object was removed from there when its upload ended, SeaweedFS kept
the directory it had made for it (an empty `d0` for good). A times write for the directory that had
looked it up just before the rename put its marker back the same way. Now a rename waits for the
uploads of what it moves that are on the wire (owners.pause), and directory times are written
under the lock that rmdir and directory renames hold (StoreFS._markers).
"""
from __future__ import annotations

import os
import time

import pytest

FRESH = ("attr_ttl=0,dir_ttl=0,neg_ttl=0",)   # every look goes to the server


@pytest.mark.parametrize("backend", ["s3_seaweed", "cos"], indirect=True)
def test_directory_renamed_while_a_file_in_it_uploads_leaves_nothing_behind(env, backend):
    root = env.mount(f"r:{backend.bucket}", options=FRESH).path
    data = os.urandom(100_000)
    seen_old: list[tuple[int, int]] = []
    for i in range(12):
        (root / f"d{i}").mkdir()
        (root / f"d{i}" / "x").write_bytes(data)
        time.sleep(0.2 + (i % 6) * 0.01)   # the write-back delay (0.2 s): the upload is about to start
        os.rename(root / f"d{i}", root / f"e{i}")
        looks = 0
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:   # bounded: 50 looks
            looks += os.path.lexists(root / f"d{i}") or f"d{i}" in os.listdir(root)
            time.sleep(0.01)
        if looks:
            seen_old.append((i, looks))
    assert seen_old == [], f"old names seen after the rename returned (iteration, looks): {seen_old}"
    assert sorted(os.listdir(root)) == sorted(f"e{i}" for i in range(12))
    for i in range(12):
        assert os.listdir(root / f"e{i}") == ["x"]
        assert (root / f"e{i}" / "x").read_bytes() == data
