"""The reader's open run files (runfiles.py): kept open between reads, never closed under a read."""
from __future__ import annotations

import os
import threading

from storefs.fs.bucket import runfiles
from storefs.fs.bucket.runfiles import KEPT, OpenRuns
from storefs.fs.sinks import BufferSink

BLOCK = 4096


def _open_runs(paths: list[str]) -> list[str]:
    """Which of the run files `paths` this process has open, once per descriptor (by what each
    descriptor points at: other threads of a test worker open and close descriptors meanwhile)."""
    wanted, found = set(paths), []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue   # closed since the listing
        if target in wanted:
            found.append(target)
    return sorted(found)


def _runs(tmp_path, count: int) -> list[str]:
    paths = []
    for number in range(count):
        path = tmp_path / f"run{number}"
        path.write_bytes(bytes([number]) * (2 * BLOCK))
        paths.append(str(path))
    return paths


def test_files_stay_open_between_reads_and_at_most_kept_of_them(tmp_path):
    paths = _runs(tmp_path, KEPT + 3)
    runs = OpenRuns()
    into = memoryview(bytearray(10))
    for _round in range(3):
        for number, path in enumerate(paths):
            assert runs.read_to((path, BLOCK), 5, len(into), BufferSink(into)) == 10 and bytes(into) == bytes([number]) * 10
    assert len(_open_runs(paths)) == KEPT
    runs.close()
    assert _open_runs(paths) == []


def test_a_read_takes_what_it_asks_for_and_a_removed_file_is_none(tmp_path):
    path, = _runs(tmp_path, 1)
    runs = OpenRuns()
    into = memoryview(bytearray(100))
    assert runs.read_to((path, 0), BLOCK - 10, 10, BufferSink(into)) == 10
    assert bytes(into[:10]) == bytes([0]) * 10 and bytes(into[10:]) == bytes(90)
    assert runs.read_to((str(tmp_path / "gone"), 0), 0, len(into), BufferSink(into)) is None
    runs.close()


def test_a_file_in_use_is_closed_by_its_read_not_under_it(tmp_path, monkeypatch):
    """A file pushed out of the set (or the set closed) while a read is in it stays open until that
    read ends: its descriptor number cannot be closed and reused under the read."""
    paths = _runs(tmp_path, KEPT + 1)
    runs = OpenRuns()
    inside, release = threading.Event(), threading.Event()
    real_preadv = os.preadv
    seen: list[bytes] = []

    def slow_preadv(fd, buffers, offset):
        if threading.current_thread().name == "slow":
            inside.set()
            release.wait(10)
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(runfiles.os, "preadv", slow_preadv)

    def slow_read() -> None:
        into = memoryview(bytearray(4))
        runs.read_to((paths[0], 0), 0, len(into), BufferSink(into))
        seen.append(bytes(into))

    reader = threading.Thread(target=slow_read, name="slow")
    reader.start()
    assert inside.wait(10)
    into = memoryview(bytearray(4))
    for path in paths[1:]:   # pushes paths[0] out of the set while the slow read is in it
        assert runs.read_to((path, 0), 0, len(into), BufferSink(into)) == 4
    runs.close()
    assert _open_runs(paths) == [paths[0]]   # only the one in use
    release.set()
    reader.join(10)
    assert seen == [bytes([0]) * 4]
    assert _open_runs(paths) == []
