"""Mounted at boot, through the kernel: an fstab line used by mount(8) with a clean environment, the
systemd notify protocol, the unit's own commands, credentials from where each ecosystem keeps them,
`storefs config`, and `storefs status --json`.

mount(8) runs its helpers with an empty environment, so the fstab tests prove that `storefs` is found
on the standard PATH (install.sh links /usr/local/bin/storefs) and needs no variable of ours.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storefs.mounting import is_mounted, pid_alive
from tests.fuse.harness import STOREFS, Env

CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEM_RUNTIME = Path("/run/storefs")   # mount(8) clears XDG_RUNTIME_DIR: root's runtime dir


def _this_storefs() -> Path:
    return Path(sys.executable).parent / "storefs"


@pytest.fixture
def linked_storefs():
    """/usr/local/bin/storefs must be this checkout's command (install.sh makes the link)."""
    link = Path("/usr/local/bin/storefs")
    assert link.exists(), "no /usr/local/bin/storefs: run scripts/install.sh (it links it)"
    assert link.resolve() == _this_storefs().resolve(), (
        f"/usr/local/bin/storefs runs {link.resolve()}, not this checkout's {_this_storefs()}: "
        f"run scripts/install.sh here")
    return link


def _daemon_pid(mountpoint: Path, runtime: Path = SYSTEM_RUNTIME) -> int | None:
    for record in runtime.glob("mount-*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            data = json.loads(record.read_text())
            if data["mountpoint"] == os.path.realpath(mountpoint):
                return int(data["pid"])
    return None


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@contextlib.contextmanager
def _cleanup(mountpoint: Path):
    """Whatever happens in the test: no mount and no daemon left behind (found by PID)."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        found = _daemon_pid(mountpoint)
        if found:
            pids.append(found)
        if is_mounted(str(mountpoint)):
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
        for pid in pids:
            # Unmounted: the daemon finishes by itself (and removes its records); killed only if it hangs.
            deadline = time.monotonic() + 30
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
                _wait(lambda: not pid_alive(pid), 10, f"pid {pid} to die")
        # mount(8) runs the daemon without our XDG_RUNTIME_DIR: its records are in root's /run/storefs.
        # Whatever of this test's mount is left there (an exit report, a killed daemon's record) goes.
        digest = hashlib.sha1(os.path.abspath(os.path.realpath(mountpoint)).encode()).hexdigest()[:16]
        for kind in ("mount", "status", "exit", "flush"):
            for leftover in SYSTEM_RUNTIME.glob(f"{kind}-{digest}.*"):
                leftover.unlink(missing_ok=True)


def _local_config(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "buckets"
    (root / "bk").mkdir(parents=True)
    config = tmp_path / "etc-storefs.conf"
    config.write_text(f"[lr]\ntype = local\nroot = {root}\n")
    config.chmod(0o600)
    return config, root / "bk"


def _mount8(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), env={"PATH": CLEAN_PATH}, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, cwd="/")


def test_fstab_line_mounts_and_umount_uploads_what_is_pending(tmp_path, linked_storefs):
    config, bucket = _local_config(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # Every generic option mount(8) may carry, and write_back long enough that only the unmount's
    # drain can have uploaded the file.
    options = (f"config={config},cache_dir={tmp_path / 'cache'},allow_other,write_back=600,_netdev,nofail,"
               f"defaults,noauto,users,nosuid,nodev,noexec,x-systemd.automount,x-systemd.mount-timeout=30,"
               f"comment=storefs-test")
    fstab = tmp_path / "fstab"
    fstab.write_text(f"lr:bk {mnt} fuse.storefs {options} 0 0\n")
    with _cleanup(mnt) as pids:
        result = _mount8("mount", "-T", str(fstab), str(mnt))
        assert result.returncode == 0, result.stderr
        assert is_mounted(str(mnt))
        pid = _daemon_pid(mnt)
        assert pid and pid_alive(pid)
        pids.append(pid)
        (mnt / "report.txt").write_text("written before umount\n")
        assert not (bucket / "report.txt").exists()   # still staged: write_back=600
        result = _mount8("umount", str(mnt))
        assert result.returncode == 0, result.stderr
        _wait(lambda: not pid_alive(pid), 60, "the daemon to drain and exit")
        assert (bucket / "report.txt").read_text() == "written before umount\n"
        assert not is_mounted(str(mnt))


def test_fstab_ro_is_honoured(tmp_path, linked_storefs):
    config, bucket = _local_config(tmp_path)
    (bucket / "old.txt").write_text("kept")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"lr:bk {mnt} fuse.storefs ro,config={config},cache_dir={tmp_path / 'cache'} 0 0\n")
    with _cleanup(mnt):
        result = _mount8("mount", "-T", str(fstab), str(mnt))
        assert result.returncode == 0, result.stderr
        assert (mnt / "old.txt").read_text() == "kept"
        with pytest.raises(OSError) as info:
            (mnt / "new.txt").write_text("x")
        assert info.value.errno == 30   # EROFS
        assert _mount8("umount", str(mnt)).returncode == 0


def test_umount_with_uploads_that_cannot_finish_keeps_them_for_the_next_mount(tmp_path, linked_storefs):
    """drain_timeout=0: the daemon exits at once, its file staged; the next mount uploads it."""
    config, bucket = _local_config(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    base = f"config={config},cache_dir={tmp_path / 'cache'}"
    fstab.write_text(f"lr:bk {mnt} fuse.storefs {base},write_back=600,drain_timeout=0 0 0\n")
    with _cleanup(mnt) as pids:
        assert _mount8("mount", "-T", str(fstab), str(mnt)).returncode == 0
        pids.append(_daemon_pid(mnt) or 0)
        (mnt / "late.bin").write_bytes(b"z" * 100_000)
        assert _mount8("umount", str(mnt)).returncode == 0
        _wait(lambda: not pid_alive(pids[0]), 60, "the daemon to exit")
    staged = list((tmp_path / "cache" / "staging").rglob("*"))
    assert any(p.is_file() and p.stat().st_size == 100_000 for p in staged), staged
    fstab.write_text(f"lr:bk {mnt} fuse.storefs {base},write_back=0 0 0\n")
    with _cleanup(mnt):
        assert _mount8("mount", "-T", str(fstab), str(mnt)).returncode == 0
        _wait(lambda: (bucket / "late.bin").exists() and (bucket / "late.bin").stat().st_size == 100_000, 60,
              "the staged file to be uploaded by the next mount")
        assert _mount8("umount", str(mnt)).returncode == 0


# -- systemd ---------------------------------------------------------------------------------------

class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[str] = []

    def wait_for(self, predicate, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        for message in self.messages:
            if predicate(message):
                return message
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                message = self.sock.recv(4096).decode()
            except socket.timeout:
                break
            self.messages.append(message)
            if predicate(message):
                return message
        raise AssertionError(f"no {what} within {timeout:.0f}s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


def _run_unit_command(line: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(shlex.split(line.partition("=")[2]), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd="/")


def test_systemd_unit_commands_speak_the_notify_protocol(tmp_path, linked_storefs):
    """The unit `storefs systemd-unit` prints, its ExecStart and ExecStop run as systemd runs them."""
    config, bucket = _local_config(tmp_path)
    mnt = tmp_path / "mnt"
    result = subprocess.run([*STOREFS, "systemd-unit", "lr:bk", str(mnt), "-o",
                             f"config={config},cache_dir={tmp_path / 'cache'},write_back=600"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    unit = result.stdout.splitlines()
    assert "Type=notify" in unit
    pre = [line for line in unit if line.startswith("ExecStartPre=") and "mkdir" in line]
    start = next(line for line in unit if line.startswith("ExecStart="))
    stop = next(line for line in unit if line.startswith("ExecStop="))
    assert start.split()[0] == "ExecStart=/usr/local/bin/storefs"
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {"PATH": CLEAN_PATH, "NOTIFY_SOCKET": notify.path}
    try:
        with _cleanup(mnt) as pids:
            subprocess.run(shlex.split(pre[0].partition("=")[2]), check=True)
            service = _run_unit_command(start, env)
            pids.append(service.pid)
            notify.wait_for(lambda m: m == "READY=1", 60, "READY=1")
            assert is_mounted(str(mnt))
            (mnt / "a.bin").write_bytes(b"a" * 50_000)
            notify.wait_for(lambda m: m.startswith("STATUS=1 upload(s) pending"), 30, "STATUS with the upload")
            stopper = _run_unit_command(stop, env)
            assert stopper.wait(timeout=120) == 0, stopper.stderr.read() if stopper.stderr else ""
            assert service.wait(timeout=60) == 0
            notify.wait_for(lambda m: m == "STOPPING=1", 5, "STOPPING=1")
            notify.wait_for(lambda m: m == "STATUS=all uploaded", 5, "STATUS=all uploaded")
            assert (bucket / "a.bin").stat().st_size == 50_000
            order = [m for m in notify.messages if m in ("READY=1", "STOPPING=1")]
            assert order == ["READY=1", "STOPPING=1"]
    finally:
        notify.close()


# -- credentials where each ecosystem keeps them ------------------------------------------------------

def _aws_env(tmp_path: Path, server, *, good: str) -> tuple[Env, dict[str, str]]:
    """An Env whose remote `s` has no keys; `good` says which source holds the right ones:
    "env" (AWS_*), "credentials" (~/.aws/credentials default), "profile" (a named profile)."""
    bad = "WRONG-" + server.secret_key
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    default_secret = server.secret_key if good == "credentials" else bad
    work_secret = server.secret_key if good == "profile" else bad
    (home / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = {server.access_key}\naws_secret_access_key = {default_secret}\n\n"
        f"[work]\naws_access_key_id = {server.access_key}\naws_secret_access_key = {work_secret}\n")
    (home / ".aws" / "config").write_text("[default]\nregion = us-east-1\n")
    env = Env(tmp_path, {"s": {"type": "s3", "endpoint": server.endpoint}})
    env.vars = {k: v for k, v in env.vars.items() if not k.startswith("AWS_")}
    env.vars["HOME"] = str(home)
    extra: dict[str, str] = {}
    if good == "env":
        extra = {"AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key}
    elif good == "profile":
        extra = {"AWS_PROFILE": "work"}
    env.vars.update(extra)
    return env, extra


@pytest.mark.parametrize("good", ["env", "credentials", "profile"])
def test_s3_keys_from_the_aws_places(tmp_path, seaweed_server, good):
    """SeaweedFS checks signatures: only the source that should win holds the right secret."""
    env, _ = _aws_env(tmp_path, seaweed_server, good=good)
    result = env.run("config", "check", "s", timeout=60)
    assert result.returncode == 0, result.stderr
    assert seaweed_server.secret_key not in result.stdout + result.stderr


def test_profile_key_beats_aws_env_and_storefs_env_beats_everything(tmp_path, seaweed_server):
    env, _ = _aws_env(tmp_path, seaweed_server, good="profile")
    bad = "WRONG-" + seaweed_server.secret_key
    env.vars.update({"AWS_ACCESS_KEY_ID": seaweed_server.access_key, "AWS_SECRET_ACCESS_KEY": bad})
    env.vars.pop("AWS_PROFILE")
    # AWS_* env (wrong) beats the default profile (wrong too): fails, with the mount's message
    failed = env.run("config", "check", "s", timeout=60)
    assert failed.returncode == 2 and "cannot use s:" in failed.stderr, failed.stderr
    assert bad not in failed.stderr and seaweed_server.secret_key not in failed.stderr
    # profile = work in the remote (right) beats AWS_* (wrong), as the CLI's --profile does
    env.config.write_text(env.config.read_text() + "profile = work\n")
    assert env.run("config", "check", "s", timeout=60).returncode == 0
    # a wrong secret_key in STOREFS_S_SECRET_KEY beats the profile
    env.vars["STOREFS_S_SECRET_KEY"] = bad
    env.vars["STOREFS_S_ACCESS_KEY"] = seaweed_server.access_key
    assert env.run("config", "check", "s", timeout=60).returncode == 2
    # and a right one beats a wrong file key
    env.config.write_text(f"[s]\ntype = s3\nendpoint = {seaweed_server.endpoint}\n"
                          f"access_key = {seaweed_server.access_key}\nsecret_key = {bad}\n")
    env.vars["STOREFS_S_SECRET_KEY"] = seaweed_server.secret_key
    assert env.run("config", "check", "s", timeout=60).returncode == 0


def test_mount_with_keys_only_in_aws_credentials(tmp_path, seaweed_server):
    env, _ = _aws_env(tmp_path, seaweed_server, good="credentials")
    bucket = seaweed_server.create_bucket()
    try:
        mount = env.mount(f"s:{bucket}", options=("write_back=0",))
        (mount.path / "hello.txt").write_text("from ~/.aws/credentials")
        mount.unmount()
        body = seaweed_server.client().get_object(Bucket=bucket, Key="hello.txt")["Body"].read()
        assert body == b"from ~/.aws/credentials"
    finally:
        env.close()


# -- storefs config --------------------------------------------------------------------------------

def test_config_commands(tmp_path, seaweed_server):
    conf = tmp_path / "new" / "dir" / "storefs.conf"
    env = Env(tmp_path, {})
    env.vars["STOREFS_CONFIG"] = str(conf)
    secret = seaweed_server.secret_key
    outputs: list[str] = []

    def run(*args: str) -> subprocess.CompletedProcess:
        result = env.run("config", *args, timeout=60)
        outputs.append(result.stdout + result.stderr)
        return result

    assert run("path").stdout.strip() == str(conf)
    made = run("create", "sw", "s3", f"endpoint={seaweed_server.endpoint}",
               f"access_key={seaweed_server.access_key}", f"secret_key={secret}")
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert stat.S_IMODE(conf.parent.stat().st_mode) == 0o700
    conf.write_text(conf.read_text().replace("[sw]", "# my remotes\n[sw]"))
    assert run("create", "local2", "local", f"root={tmp_path / 'l2'}", "create_buckets=yes").returncode == 0
    assert "# my remotes" in conf.read_text()      # comments survive edits
    again = run("create", "sw", "s3", "endpoint=http://127.0.0.1:1", "access_key=AKID", "secret_key=abcdef")
    assert again.returncode == 2 and "already exists" in again.stderr
    typo = run("create", "x", "s3", "endpont=http://127.0.0.1:1")
    assert typo.returncode == 2 and "unknown key 'endpont'" in typo.stderr
    bad_type = run("create", "x", "s4")
    assert bad_type.returncode == 2 and "unknown type 's4'" in bad_type.stderr
    missing = run("create", "x", "s3", "endpoint=http://127.0.0.1:1", "access_key=AKID")
    assert missing.returncode == 2 and "secret_key" in missing.stderr

    shown = run("show")
    assert shown.returncode == 0 and "[sw]" in shown.stdout and "[local2]" in shown.stdout
    assert "secret_key = ********" in shown.stdout
    env.vars["STOREFS_SW_REGION"] = "eu-west-1"
    one = run("show", "sw")
    assert "[local2]" not in one.stdout and "region = eu-west-1    # from env STOREFS_SW_REGION" in one.stdout
    del env.vars["STOREFS_SW_REGION"]

    assert run("check", "sw").returncode == 0
    conf.write_text(conf.read_text().replace(secret, "WRONG-" + secret))
    wrong = run("check", "sw")
    assert wrong.returncode == 2 and "cannot use sw:" in wrong.stderr
    (tmp_path / "m").mkdir()
    mount_says = env.run("mount", "sw:", str(tmp_path / "m"), timeout=60)
    assert mount_says.returncode == 2
    assert wrong.stderr.split("): ", 1)[1] == mount_says.stderr.split("): ", 1)[1]   # the same reason

    assert run("delete", "sw").returncode == 0
    assert "[sw]" not in conf.read_text() and "[local2]" in conf.read_text()
    assert run("delete", "sw").returncode == 2
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    for text in outputs:
        assert secret not in text


# -- status --json ---------------------------------------------------------------------------------

def test_status_json_for_scripts(local_env):
    mount = local_env.mount("r:b", options=("write_back=600",))
    (mount.path / "pending.bin").write_bytes(b"p" * 12345)
    (mount.path / "pending.bin").read_bytes()
    deadline = time.monotonic() + 30
    while True:
        result = local_env.run("status", "--json", str(mount.path), check=True)
        reports = json.loads(result.stdout)
        if reports and reports[0].get("pending_count") == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (report,) = reports
    assert report["mountpoint"] == os.path.realpath(mount.path) and report["pid"] == mount.pid
    assert report["pending_count"] == 1 and report["pending_bytes"] == 12345
    (item,) = report["pending"]
    assert item["path"] == "/pending.bin" and item["attempts"] == 0 and not item["last_error"]
    assert report["conflicts"] == []
    assert report["staging_bytes"] >= 12345
    assert report["read_cache_limit"] == 2 << 30 and report["read_cache_bytes"] >= 0
    assert mount.unmount().returncode == 0


def test_status_forgets_mounts_whose_daemon_died(tmp_path):
    """A record left by a killed daemon is not shown as a mount (and is removed)."""
    env = Env(tmp_path, {})
    runtime = tmp_path / "run" / "storefs"
    runtime.mkdir(parents=True, exist_ok=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    record = runtime / "mount-0123456789abcdef.json"
    record.write_text(json.dumps({"pid": dead.pid, "mountpoint": str(tmp_path / "gone"), "remote": "r:b",
                                  "log_file": None, "started": 0}))
    result = env.run("status", "--json", check=True)
    assert json.loads(result.stdout) == [] and not record.exists()
