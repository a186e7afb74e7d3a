"""Real mounts for tests: a backend (a config section and a fresh bucket) and the `storefs` command.

Every mount is made with the real CLI (daemonized, as a user would) in an isolated environment
(its own config file, cache and runtime directories under tmp_path). `Mount.close()` unmounts with
`storefs unmount`, falls back to a lazy unmount, and kills the daemon by PID if it is still there.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from storefs.mounting import is_mounted, pid_alive  # the same checks storefs makes

STOREFS = [sys.executable, "-m", "storefs"]


@dataclasses.dataclass
class Backend:
    name: str
    section: dict[str, str]   # the config section, type included
    bucket: str


def make_backend(name: str, request, tmp_path: Path) -> Backend:
    """A fresh, empty bucket on the named backend."""
    bucket = f"t{uuid.uuid4().hex[:10]}"
    if name == "local":
        root = tmp_path / "buckets"
        (root / bucket).mkdir(parents=True)
        return Backend(name, {"type": "local", "root": str(root)}, bucket)
    if name in ("s3_moto", "s3_seaweed"):
        server = request.getfixturevalue("moto_server" if name == "s3_moto" else "seaweed_server")
        bucket = server.create_bucket()
        return Backend(name, {"type": "s3", **server.options()}, bucket)
    emulator = request.getfixturevalue(f"{name}_emulator")
    emulator.create_bucket(bucket)
    return Backend(name, {k: str(v) for k, v in emulator.config().items()}, bucket)


def write_config(path: Path, sections: dict[str, dict[str, str]]) -> Path:
    lines = []
    for name, section in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {value}" for key, value in section.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    path.chmod(0o600)
    return path


class Env:
    """An isolated storefs environment: config, cache and runtime directories."""

    def __init__(self, tmp_path: Path, sections: dict[str, dict[str, str]]) -> None:
        self.tmp = tmp_path
        self.config = write_config(tmp_path / "storefs.conf", sections)
        self.vars = dict(os.environ, STOREFS_CONFIG=str(self.config), XDG_CACHE_HOME=str(tmp_path / "cache"),
                         XDG_RUNTIME_DIR=str(tmp_path / "run"), XDG_DATA_HOME=str(tmp_path / "data"))
        (tmp_path / "run").mkdir(exist_ok=True)
        self.mounts: list[Mount] = []

    def run(self, *args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
        result = subprocess.run(STOREFS + list(args), env=self.vars, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"storefs {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def mount(self, spec: str, mountpoint: Path | None = None, options: tuple[str, ...] = ()) -> "Mount":
        mountpoint = mountpoint or self.tmp / f"mnt{len(self.mounts)}"
        mountpoint.mkdir(exist_ok=True)
        args = ["mount", spec, str(mountpoint)]
        for opt in options:
            args += ["-o", opt]
        result = self.run(*args, "-v", timeout=90)
        if result.returncode != 0:
            raise AssertionError(f"mount failed ({result.returncode}): {result.stderr}\n{self.log_tail()}")
        mount = Mount(self, mountpoint, _daemon_pid(self.tmp / "run" / "storefs", mountpoint))
        self.mounts.append(mount)
        return mount

    def log_tail(self, lines: int = 30) -> str:
        logs = sorted((self.tmp / "cache" / "storefs" / "logs").glob("*.log"))
        return "\n".join("\n".join(p.read_text(errors="replace").splitlines()[-lines:]) for p in logs)

    def close(self) -> None:
        for mount in reversed(self.mounts):
            mount.close()


def _daemon_pid(run_dir: Path, mountpoint: Path) -> int:
    for record in run_dir.glob("mount-*.json"):
        data = json.loads(record.read_text())
        if data["mountpoint"] == os.path.realpath(mountpoint):
            return int(data["pid"])
    raise AssertionError(f"no mount record for {mountpoint} in {run_dir}")


@dataclasses.dataclass
class Mount:
    env: Env
    path: Path
    pid: int
    closed: bool = False

    def unmount(self, timeout: float = 120) -> subprocess.CompletedProcess:
        result = self.env.run("unmount", str(self.path), timeout=timeout + 10)
        if result.returncode == 0:
            self.closed = True
        return result

    def kill(self) -> None:
        """SIGKILL the daemon (a crash) and clear the dead mount."""
        os.kill(self.pid, signal.SIGKILL)
        _wait_gone(self.pid, 10)
        subprocess.run(["fusermount", "-uz", str(self.path)], capture_output=True)
        self.closed = True

    def close(self) -> None:
        if not self.closed:
            try:
                self.unmount()
            except subprocess.TimeoutExpired:
                pass  # a hung unmount must not stop the cleanup below: the daemon is killed by PID
        if is_mounted(str(self.path)):
            subprocess.run(["fusermount", "-uz", str(self.path)], capture_output=True)
        if pid_alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
            _wait_gone(self.pid, 10)
        self.closed = True


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def errno_of(fn: Callable[[], object]) -> int:
    """The errno of the OSError `fn()` raises (the test fails if it raises none)."""
    with pytest.raises(OSError) as info:
        fn()
    return info.value.errno


def wait_until(condition: Callable[[], object], timeout: float, what: str, step: float = 0.1) -> object:
    """Poll `condition` every `step` seconds until it is truthy, at most `timeout` seconds; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)
