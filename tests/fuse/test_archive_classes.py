"""Archive-class objects (S3 GLACIER, DEEP_ARCHIVE) in a bucket mounted for real, on moto's S3 server:
restore on open, EAGAIN until restored, `vault_wait`, xattrs and `storefs restore` on bucket paths."""
from __future__ import annotations

import errno
import os
import time

import pytest
import requests

from tests.fuse.harness import Env, errno_of

MiB = 1 << 20
TRANSITIONS = "/moto-api/state-manager"


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def xattr(path, name: str) -> str:
    return os.getxattr(path, name).decode()


def restore_requests(env: Env) -> int:
    logs = (env.tmp / "cache" / "storefs" / "logs").glob("*.log")
    return sum(p.read_text(errors="replace").count("restore requested") for p in logs)


@pytest.fixture
def s3_env(tmp_path, moto_server):
    bucket = moto_server.create_bucket()
    env = Env(tmp_path, {"m": {"type": "s3", **moto_server.options()}})
    env.bucket, env.client, env.server = bucket, moto_server.client(), moto_server
    yield env
    env.close()
    requests.post(moto_server.endpoint + TRANSITIONS + "/unset-transition",
                  json={"model_name": "s3::keyrestore"}, timeout=10)


def test_archived_object_restored_on_open(s3_env):
    client, bucket = s3_env.client, s3_env.bucket
    cold = os.urandom(3 * MiB + 5)
    deep = b"deep archive bytes" * 100
    client.put_object(Bucket=bucket, Key="cold/a.bin", Body=cold, StorageClass="GLACIER")
    client.put_object(Bucket=bucket, Key="cold/sub/b.bin", Body=deep, StorageClass="DEEP_ARCHIVE")
    client.put_object(Bucket=bucket, Key="warm.txt", Body=b"plain")

    mount = s3_env.mount(f"m:{bucket}", options=("vault_tier=Expedited", "xattr"))
    root = mount.path
    # Listed like any file, with its size; its storage class and state readable without opening.
    assert os.path.getsize(root / "cold/a.bin") == len(cold)
    assert sorted(os.listdir(root)) == ["cold", "warm.txt"]
    assert xattr(root / "cold/a.bin", "user.storefs.storage_class") == "GLACIER"
    assert xattr(root / "cold/a.bin", "user.storefs.retrieval") == "none"
    assert xattr(root / "warm.txt", "user.storefs.storage_class") == "STANDARD"
    assert errno_of(lambda: os.getxattr(root / "warm.txt", "user.storefs.retrieval")) == errno.ENODATA
    assert errno_of(lambda: os.getxattr(root / "cold/a.bin", "user.other")) == errno.ENODATA
    assert sorted(os.listxattr(root / "cold/a.bin")) == ["user.storefs.retrieval", "user.storefs.storage_class"]
    assert read(root / "warm.txt") == b"plain"
    # What copies it server-side waits for the restore too (S3 refuses to copy it until then).
    assert errno_of(lambda: os.chmod(root / "cold/sub/b.bin", 0o600)) == errno.EAGAIN
    assert errno_of(lambda: os.rename(root / "cold/sub/b.bin", root / "cold/b2.bin")) == errno.EAGAIN
    assert os.path.exists(root / "cold/sub/b.bin") and not os.path.exists(root / "cold/b2.bin")

    # The first open fails at once with EAGAIN and asks for exactly one restore.
    started = time.monotonic()
    assert errno_of(lambda: read(root / "cold/a.bin")) == errno.EAGAIN
    assert time.monotonic() - started < 10
    assert restore_requests(s3_env) == 1
    # moto restores at once: the state says so, and the same open now reads the bytes.
    assert xattr(root / "cold/a.bin", "user.storefs.retrieval").startswith("ready until 20")
    assert read(root / "cold/a.bin") == cold
    assert restore_requests(s3_env) == 1  # a restored object needs none

    # `storefs restore --wait` on a directory of the mount restores what is below it.
    result = s3_env.run("restore", "--wait", "--timeout", "60", str(root / "cold"))
    assert result.returncode == 0, result.stderr
    assert "2 archive(s): 2 ready, 0 in progress, 0 failed; 1 job(s) started now" in result.stdout
    assert read(root / "cold/sub/b.bin") == deep
    head = client.head_object(Bucket=bucket, Key="cold/sub/b.bin")
    assert 'ongoing-request="false"' in head["Restore"]

    # Mutations of an archived object work as on any object: overwrite replaces it.
    (root / "cold/a.bin").write_bytes(b"new")
    assert mount.unmount().returncode == 0
    assert client.get_object(Bucket=bucket, Key="cold/a.bin")["Body"].read() == b"new"


def test_vault_wait_blocks_until_the_restore_is_done(s3_env):
    client, bucket, server = s3_env.client, s3_env.bucket, s3_env.server
    body = os.urandom(64 * 1024)
    client.put_object(Bucket=bucket, Key="slow.bin", Body=body, StorageClass="GLACIER")
    # moto moves a restore one state per second from now: IN_PROGRESS, then RESTORED.
    answer = requests.post(server.endpoint + TRANSITIONS + "/set-transition", timeout=10,
                           json={"model_name": "s3::keyrestore",
                                 "transition": {"progression": "time", "seconds": 1}})
    assert answer.status_code == 201
    mount = s3_env.mount(f"m:{bucket}", options=("vault_wait=60",))
    # moto counts a key's seconds from its creation: let its first state change happen first.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and time.time() - _created(client, bucket, "slow.bin") < 1.5:
        time.sleep(0.1)
    started = time.monotonic()
    assert read(mount.path / "slow.bin") == body  # blocked in open until restored
    waited = time.monotonic() - started
    assert 0.5 < waited < 30, waited
    assert restore_requests(s3_env) == 1


def _created(client, bucket: str, key: str) -> float:
    return client.head_object(Bucket=bucket, Key=key)["LastModified"].timestamp()


def test_xattrs_only_with_the_xattr_option(s3_env):
    """Restore-on-open works on every S3 mount; its xattrs only with -o xattr (they slow `ls -l`)."""
    client, bucket = s3_env.client, s3_env.bucket
    client.put_object(Bucket=bucket, Key="cold.bin", Body=b"zzz", StorageClass="GLACIER")
    mount = s3_env.mount(f"m:{bucket}")
    assert errno_of(lambda: os.getxattr(mount.path / "cold.bin", "user.storefs.storage_class")) == errno.EOPNOTSUPP
    assert errno_of(lambda: read(mount.path / "cold.bin")) == errno.EAGAIN
    assert read(mount.path / "cold.bin") == b"zzz"  # moto restores at once


def test_archive_options_are_checked_at_mount(s3_env, tmp_path):
    (tmp_path / "bad").mkdir()
    result = s3_env.run("mount", f"m:{s3_env.bucket}", str(tmp_path / "bad"), "-o", "vault_writes")
    assert result.returncode == 2 and "for vault mounts only" in result.stderr
    (tmp_path / "l" / "buckets" / "b").mkdir(parents=True)
    local = Env(tmp_path / "l", {"l": {"type": "local", "root": str(tmp_path / "l" / "buckets")}})
    result = local.run("mount", "l:b", str(tmp_path / "bad"), "-o", "vault_wait=5")
    assert result.returncode == 2 and "without archive storage classes" in result.stderr
