"""libfuse 3 worker threads keep their Python thread state (bindings._keep_thread_state): without it
ctypes makes and frees one per callback (an mmap and munmap of its frame stack each time)."""
from __future__ import annotations

import threading
import types

from storefs.fuse import bindings


class _FakeFuse:
    def __init__(self, *args, **kwargs) -> None:
        pass

    def _wrapper(self, func, *args, **kwargs):
        return func(*args, **kwargs) or 0


def _fake_lib() -> types.SimpleNamespace:
    return types.SimpleNamespace(__name__="mfusepy", FUSE=_FakeFuse, fuse_operations=type("fuse_operations", (), {}))


def test_libfuse3_callbacks_keep_the_thread_state_and_libfuse2_ones_do_not(monkeypatch):
    kept: list[int] = []
    monkeypatch.setattr(bindings, "_keep_thread_state", lambda: kept.append(threading.get_ident()))
    fuse3 = bindings._binding_class(_fake_lib(), True)
    fuse2 = bindings._binding_class(_fake_lib(), False)
    assert fuse3._wrapper(object.__new__(fuse3), lambda x: x + 1, 41) == 42
    assert kept == [threading.get_ident()]
    assert fuse2._wrapper(object.__new__(fuse2), lambda: None) == 0
    assert len(kept) == 1


def test_the_thread_state_is_taken_once_per_thread(monkeypatch):
    ensured: list[int] = []
    api = types.SimpleNamespace(PyGILState_Ensure=lambda: ensured.append(threading.get_ident()))
    monkeypatch.setattr(bindings, "ctypes", types.SimpleNamespace(pythonapi=api))
    monkeypatch.setattr(bindings, "_worker", threading.local())

    def requests() -> None:
        for _ in range(3):
            bindings._keep_thread_state()
    workers = [threading.Thread(target=requests) for _ in range(2)]
    for worker in workers:
        worker.start()
        worker.join()
    assert sorted(ensured) == sorted(worker.ident for worker in workers)
