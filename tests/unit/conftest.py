"""Fixtures shared by the unit tests."""
from __future__ import annotations

import os
import stat

import pytest


@pytest.fixture
def fsync_counts(monkeypatch) -> dict[str, int]:
    """Counts the fsyncs of directories and of files from now on (each is still done)."""
    counts = {"dir": 0, "file": 0}
    real = os.fsync

    def counting(fd: int) -> None:
        counts["dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"] += 1
        real(fd)
    monkeypatch.setattr(os, "fsync", counting)
    return counts
