"""The write-back queue's hand-offs: a close (schedule) of a file due later than a worker's nap wakes
no worker, a file due soon wakes one, a file coming due wakes one idle worker (not all), and drain()
returns as soon as the last upload is done."""
from __future__ import annotations

import dataclasses
import threading
import time

from storefs.fs.bucket.writeback import WORKER_NAP, WriteBack


@dataclasses.dataclass(eq=False)
class File:
    path: str


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.uploaded: dict[str, float] = {}

    def __call__(self, item) -> None:
        with self.lock:
            self.uploaded[item.file.path] = time.monotonic()


def _counting_walks(queue: WriteBack) -> list[int]:
    """Counts the workers' walks of the queue (one per wake-up)."""
    walks = [0]
    real = queue._next_due

    def counted():
        walks[0] += 1
        return real()
    queue._next_due = counted
    return walks


def test_closes_due_after_a_nap_wake_no_worker_and_are_uploaded_on_time():
    recorder = Recorder()
    queue = WriteBack(recorder, delay=2 * WORKER_NAP, workers=4)
    try:
        time.sleep(0.2)   # the workers are asleep
        walks = _counting_walks(queue)
        files = [File(f"/f{i}") for i in range(200)]
        started = time.monotonic()
        for file in files:
            queue.schedule(file)   # three closes per file, as a bash loop's `printf > f` makes
            queue.schedule(file)
            queue.schedule(file)
        scheduled = time.monotonic() - started
        # Every worker wakes at most once per nap by itself: far fewer walks than the 600 closes.
        assert walks[0] <= 4 * (1 + scheduled / WORKER_NAP) + 4, walks[0]
        left = queue.drain(timeout=30)   # makes everything due now
        assert left == [] and len(recorder.uploaded) == 200
    finally:
        queue.stop()


def test_a_file_due_sooner_than_a_nap_wakes_a_worker():
    recorder = Recorder()
    queue = WriteBack(recorder, delay=0.05, workers=2)
    try:
        time.sleep(0.05)   # the workers have just begun a nap of WORKER_NAP (the queue is empty)
        closed = time.monotonic()
        queue.schedule(File("/soon"))
        deadline = time.monotonic() + 10
        while "/soon" not in recorder.uploaded and time.monotonic() < deadline:
            time.sleep(0.01)
        # Woken at once, not found at the end of the nap (about WORKER_NAP after the close).
        assert recorder.uploaded["/soon"] - closed < WORKER_NAP / 2
    finally:
        queue.stop()


def test_drain_returns_when_the_last_upload_is_done():
    done = threading.Event()

    def slow(item) -> None:
        time.sleep(0.3)
        done.set()
    queue = WriteBack(slow, delay=60, workers=1)
    try:
        queue.schedule(File("/a"))
        started = time.monotonic()
        assert queue.drain(timeout=30) == []
        assert done.is_set() and time.monotonic() - started < 2.0
    finally:
        queue.stop()


def test_a_file_coming_due_wakes_one_idle_worker_not_all():
    """Files due soon after their close (the default delay): one idle worker sleeps until the next is
    due, the others until told. Before, every idle worker slept until the next due time, so each
    file woke all of them (four walks of the queue, four context switches, per file)."""
    recorder = Recorder()
    queue = WriteBack(recorder, delay=0.05, workers=4)
    try:
        time.sleep(0.05)
        walks = _counting_walks(queue)
        files = [File(f"/f{i}") for i in range(60)]
        closed = {}
        for file in files:
            closed[file.path] = time.monotonic()
            queue.schedule(file)
            time.sleep(0.01)   # a close every 10 ms, each due 50 ms later: idle workers between
        deadline = time.monotonic() + 10
        while len(recorder.uploaded) < len(files) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(recorder.uploaded) == len(files)
        # Per file three walks: the timekeeper's that takes it, the one woken to keep the time after
        # it, and the uploader's when done. The old rule made about five (four timed wake-ups and
        # the close's own).
        assert walks[0] <= 4 * len(files), walks[0]
        # And none waited for a nap: each went up soon after it was due (0.05 s after its close).
        late = max(recorder.uploaded[path] - closed[path] - 0.05 for path in closed)
        assert late < WORKER_NAP / 2, late
    finally:
        queue.stop()


def test_heavy_files_go_up_at_most_the_limit_at_once_and_small_ones_pass_them():
    """Large files (heavy) at most `heavy_limit` at a time; files of one small PUT are not held behind
    them: the workers beyond the limit take the small ones."""
    lock = threading.Lock()
    now_heavy, most_heavy, order = [0], [0], []

    def upload(item) -> None:
        heavy = item.file.path.startswith("/big")
        with lock:
            now_heavy[0] += heavy
            most_heavy[0] = max(most_heavy[0], now_heavy[0])
        time.sleep(0.3 if heavy else 0.01)
        with lock:
            now_heavy[0] -= heavy
            order.append(item.file.path)
    queue = WriteBack(upload, delay=0.0, workers=4, heavy_limit=1,
                      is_heavy=lambda file: file.path.startswith("/big"))
    try:
        for i in range(3):
            queue.schedule(File(f"/big{i}"))
        for i in range(6):
            queue.schedule(File(f"/small{i}"))
        assert queue.drain(timeout=30) == []
        assert most_heavy[0] == 1
        assert sorted(order) == sorted([f"/big{i}" for i in range(3)] + [f"/small{i}" for i in range(6)])
        # All small files were up before the second large one (each large one takes 0.3 s).
        assert max(order.index(f"/small{i}") for i in range(6)) < order.index("/big1")
    finally:
        queue.stop()
