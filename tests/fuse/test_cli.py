"""The `storefs` command as a user meets it: errors are one line, say what to fix, exit 2, and never
show a secret; `ls` works without mounting; unmount reports what it did."""
from __future__ import annotations

import os
import socket
import time

import pytest

from tests.fuse.harness import Env

SECRET = "VERYSECRETKEYVALUE123"


def one_line_error(result, *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def local_env(tmp_path):
    root = tmp_path / "buckets"
    (root / "b").mkdir(parents=True)
    environment = Env(tmp_path, {"r": {"type": "local", "root": str(root)}})
    yield environment
    environment.close()


def test_usage_errors(local_env, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "empty").mkdir()
    one_line_error(local_env.run("mount", "r:b", str(tmp_path / "nope")), "does not exist", "mkdir")
    one_line_error(local_env.run("mount", "r:b", str(tmp_path / "full")), "not empty")
    one_line_error(local_env.run("mount", "-o", "bogus", "r:b", str(tmp_path / "empty")), "unknown mount option")
    one_line_error(local_env.run("mount", "--bogus", "r:b", str(tmp_path / "empty")), "--bogus", "--help")
    one_line_error(local_env.run("mount", "nosuch:b", str(tmp_path / "empty")), "no remote 'nosuch'")
    one_line_error(local_env.run("mount", "r:missing", str(tmp_path / "empty")), "missing")
    one_line_error(local_env.run("mount", "r:b"), "MOUNTPOINT")
    one_line_error(local_env.run("unmount", str(tmp_path / "empty")), "not mounted")
    assert not os.listdir(tmp_path / "empty")


def test_help_everywhere(local_env):
    for args in (["--help"], ["mount", "--help"], ["unmount", "--help"], ["ls", "--help"]):
        result = local_env.run(*args)
        assert result.returncode == 0 and "usage" in result.stdout.lower()
    assert "attr_ttl" in local_env.run("mount", "--help").stdout


def test_ls_without_mounting(local_env, tmp_path):
    (tmp_path / "buckets" / "b" / "dir").mkdir()
    (tmp_path / "buckets" / "b" / "dir" / "f.txt").write_text("12345")
    assert local_env.run("ls", "r:", check=True).stdout.split() == ["b/"]
    assert local_env.run("ls", "r:b", check=True).stdout.split() == ["dir/"]
    listing = local_env.run("ls", "-l", "r:b/dir", check=True).stdout
    assert "f.txt" in listing and "5" in listing


def test_config_readable_by_others_is_refused(tmp_path, seaweed_server):
    env = Env(tmp_path, {"s": {"type": "s3", "endpoint": seaweed_server.endpoint,
                               "access_key": seaweed_server.access_key, "secret_key": SECRET}})
    env.config.chmod(0o644)
    (tmp_path / "m").mkdir()
    result = env.run("mount", "s:x", str(tmp_path / "m"))
    one_line_error(result, "chmod 600")
    assert SECRET not in result.stderr + result.stdout


def test_wrong_credentials_fail_the_mount(tmp_path, seaweed_server):
    bucket = seaweed_server.create_bucket()
    env = Env(tmp_path, {"s": {"type": "s3", "endpoint": seaweed_server.endpoint,
                               "access_key": seaweed_server.access_key, "secret_key": SECRET}})
    (tmp_path / "m").mkdir()
    started = time.monotonic()
    result = env.run("mount", "-vv", f"s:{bucket}", str(tmp_path / "m"))
    one_line_error(result, "[s]", "SignatureDoesNotMatch")
    assert time.monotonic() - started < 30
    everything = result.stderr + result.stdout + env.log_tail(1000)
    assert SECRET not in everything
    assert not os.path.ismount(tmp_path / "m")


def test_unreachable_endpoint_fails_the_mount(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = Env(tmp_path, {"s": {"type": "s3", "endpoint": f"http://127.0.0.1:{port}",
                               "access_key": "AKIAEXAMPLE", "secret_key": SECRET}})
    (tmp_path / "m").mkdir()
    started = time.monotonic()
    result = env.run("mount", "s:bucket", str(tmp_path / "m"))
    one_line_error(result, f"127.0.0.1:{port}")
    assert time.monotonic() - started < 60
    assert SECRET not in result.stderr


def test_mount_unmount_report(local_env, tmp_path):
    mount = local_env.mount("r:b")
    (mount.path / "f").write_text("x")
    result = mount.unmount()
    assert result.returncode == 0 and "unmounted" in result.stdout
    assert not os.path.ismount(mount.path)
    assert (tmp_path / "buckets" / "b" / "f").read_text() == "x"
