"""A directory of 100,000 objects, made directly in the backend, lists correctly with bounded memory."""
from __future__ import annotations

import os

from tests.fuse.harness import Env

COUNT = 100_000


def peak_rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM"))
    return int(line.split()[1]) // 1024


def test_100k_entry_directory(tmp_path):
    root = tmp_path / "buckets"
    big = root / "b" / "big"
    big.mkdir(parents=True)
    for i in range(COUNT):
        os.close(os.open(big / f"file-{i:06d}.dat", os.O_CREAT | os.O_WRONLY, 0o644))
    env = Env(tmp_path, {"r": {"type": "local", "root": str(root)}})
    try:
        mount = env.mount("r:b")
        names = os.listdir(mount.path / "big")  # 100 pages of 1,000 from the provider
        assert len(names) == COUNT
        assert sorted(names) == [f"file-{i:06d}.dat" for i in range(COUNT)]
        assert os.stat(mount.path / "big" / "file-099999.dat").st_size == 0
        assert peak_rss_mib(mount.pid) < 200, "listing memory must stay bounded"
    finally:
        env.close()
