"""A shell's `>` through a real mount: bash opens the file, dup2()s it onto stdout and closes the first
descriptor before writing. That first close must not upload (or journal) the still empty file: one
upload per file, counted at the WCS emulator, with the bytes right."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from storefs.errors import NotFound
from tests.fuse.harness import wait_until

FILES = 20


def _size(store, key: str) -> int | None:
    try:
        return store.stat(key).size
    except NotFound:
        return None


def _bash(script: str, *args: str) -> None:
    subprocess.run(["bash", "-c", script, "bash", *args], check=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("write_back", ["0", "0.2"])
def test_a_shell_redirect_uploads_each_file_once(wcs_env, write_back):
    mount = wcs_env.mount(f"w:{wcs_env.bucket}", options=(f"write_back={write_back}",))
    before = wcs_env.served("upload")
    _bash('cd "$1" && for i in $(seq 1 "$2"); do printf "file %s" "$i" > f$i; done', str(mount.path), str(FILES))
    wait_until(lambda: len(wcs_env.store.list("", delimiter="").objects) >= FILES, 30, "every file uploaded")
    for i in range(1, FILES + 1):
        assert wcs_env.store.read_range(f"f{i}", 0, 100) == f"file {i}".encode()
    time.sleep(0.5)   # a late second upload would show here
    assert wcs_env.served("upload") - before == FILES
    # Overwriting with `>` as well: one upload each, never an empty version in between.
    before = wcs_env.served("upload")
    _bash('cd "$1" && for i in $(seq 1 "$2"); do printf "again %s" "$i" > f$i; done', str(mount.path), str(FILES))
    wait_until(lambda: all(wcs_env.store.read_range(f"f{i}", 0, 100) == f"again {i}".encode()
                           for i in range(1, FILES + 1)), 30, "every file replaced")
    time.sleep(0.5)
    assert wcs_env.served("upload") - before == FILES


def test_touch_and_truncate_without_writes_are_uploaded(wcs_env):
    """Nothing written through the handle: the release (last close) uploads it."""
    mount = wcs_env.mount(f"w:{wcs_env.bucket}", options=("write_back=0",))
    (mount.path / "f").write_bytes(b"content")
    _bash('cd "$1" && touch empty && : > f', str(mount.path))
    wait_until(lambda: _size(wcs_env.store, "empty") == 0 and _size(wcs_env.store, "f") == 0, 30,
               "the empty file and the truncation uploaded")
    assert (mount.path / "empty").stat().st_size == 0
    assert (mount.path / "f").read_bytes() == b""


COPIED = 60


@pytest.mark.parametrize("tool", ["rsync -a", "tar", "cp -a"])
def test_copy_tools_upload_each_file_once_at_the_default_write_back(wcs_env, tool, tmp_path):
    """What a copy tool does right after a close (rsync: chmod, utimens and rename of its temporary
    file; tar and cp -a: times, owner and mode on the descriptor, then close) happens within the
    default write-back delay: each file is uploaded once, under its final name."""
    source = tmp_path / "source"
    source.mkdir()
    for i in range(COPIED):
        (source / f"f{i}").write_bytes(b"%d" % i * 100)
        os.utime(source / f"f{i}", (1_600_000_000, 1_600_000_000 + i))
    mount = wcs_env.mount(f"w:{wcs_env.bucket}")
    before = wcs_env.served("upload")
    target = mount.path / "d"
    if tool == "tar":
        target.mkdir()
        _bash('tar -C "$1" -cf - . | tar -C "$2" -xf -', str(source), str(target))
    elif tool == "rsync -a":
        _bash('rsync -a "$1/" "$2/"', str(source), str(target))
    else:
        _bash('cp -a "$1" "$2"', str(source), str(target))
    wait_until(lambda: len(wcs_env.store.list("d/", delimiter="").objects) >= COPIED, 60, "every file uploaded")
    time.sleep(1.0)   # a late second upload would show here
    for i in range(COPIED):
        info = wcs_env.store.stat(f"d/f{i}")
        assert info.size == len(b"%d" % i * 100) and int(float(info.meta["mtime"])) == 1_600_000_000 + i
    # Besides: the directory's marker, when made and when its mode, owner and times are set (last).
    assert wcs_env.served("upload") - before <= COPIED + 4
