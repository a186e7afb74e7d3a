"""What every loopback emulator shares: a threaded HTTP/1.1 server on 127.0.0.1, a blob store on disk,
fault injection, and a clock the tests control.

An emulator is a subclass of `EmulatorHandler` (its protocol) plus a subclass of `Emulator` that says
which config keys a storefs remote needs to reach it (`config()`), printed as the first line of
`scripts/emulator.py`.

Faults: `emulator.faults.add(Fault(op="upload_part", nth=2, action="status", status=503))` makes the
2nd request of that kind answer 503. Handlers call `self.inject(op)` once they know the operation name;
it returns True when the fault already answered (or dropped) the request.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import os
import shutil
import socket
import socketserver
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

# ----------------------------------------------------------------------------------------------
# Clock


class Clock:
    """Wall clock plus an offset the tests can advance (jobs that take hours finish at once)."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


# ----------------------------------------------------------------------------------------------
# Faults


@dataclasses.dataclass
class Fault:
    op: str = "*"              # operation name the handler reports, or "*" for any
    nth: int = 1               # the first matching request it hits (1-based, counted per op)
    count: int = 1             # how many consecutive matching requests it hits
    action: str = "status"     # status | reset | delay | truncate | garble
    status: int = 503
    body: bytes = b""          # for action=status; empty means the emulator's own error shape
    delay: float = 0.0         # for action=delay (then the request proceeds normally)
    code: str = ""             # protocol error code for action=status, when the emulator supports one
    _seen: int = 0

    @classmethod
    def parse(cls, spec: str) -> "Fault":
        """`op:nth:action[:arg]` e.g. `upload_part:2:status:503`, `*:1:delay:2.5`, `get:3:reset`."""
        parts = spec.split(":")
        if len(parts) < 3:
            raise ValueError(f"fault spec {spec!r}: want op:nth:action[:arg]")
        fault = cls(op=parts[0], nth=int(parts[1]), action=parts[2])
        if len(parts) > 3:
            if fault.action == "status":
                fault.status = int(parts[3])
            elif fault.action == "delay":
                fault.delay = float(parts[3])
        return fault


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.counts: dict[str, int] = {}
        self.fired: list[tuple[str, str]] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.counts.clear()
            self.fired.clear()

    def pick(self, op: str) -> Fault | None:
        """Count one request of kind `op` and return the fault that hits it, if any."""
        with self._lock:
            self.counts[op] = self.counts.get(op, 0) + 1
            hit = None
            for fault in self._faults:
                if fault.op not in ("*", op):
                    continue
                # Every fault counts every matching request, so two faults on one op do not interfere.
                fault._seen += 1
                if hit is None and fault.nth <= fault._seen < fault.nth + fault.count:
                    hit = fault
            if hit is not None:
                self.fired.append((op, hit.action))
            return hit


# ----------------------------------------------------------------------------------------------
# Blob storage shared by the bucket emulators


@dataclasses.dataclass
class Blob:
    key: str
    size: int
    etag: str
    mtime: float
    meta: dict
    content_type: str = "application/octet-stream"
    storage_class: str = "STANDARD"


class KeyExists(Exception):
    """A put with `if_absent` found the key taken (checked atomically with the write, as a service
    that refuses to overwrite must)."""


class BlobStore:
    """Buckets of objects on disk: data under root/<bucket>/data/<sha1(key)>, an index in memory.

    Keys are arbitrary strings (no filesystem meaning), so `../x` or `a//b` are just keys here, as on
    a real service. Thread-safe.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.RLock()
        self._buckets: dict[str, dict[str, Blob]] = {}
        self.root.mkdir(parents=True, exist_ok=True)

    # buckets
    def create_bucket(self, bucket: str) -> None:
        with self._lock:
            self._buckets.setdefault(bucket, {})
            (self.root / _safe(bucket) / "data").mkdir(parents=True, exist_ok=True)

    def has_bucket(self, bucket: str) -> bool:
        with self._lock:
            return bucket in self._buckets

    def buckets(self) -> list[str]:
        with self._lock:
            return sorted(self._buckets)

    def delete_bucket(self, bucket: str) -> None:
        with self._lock:
            self._buckets.pop(bucket, None)
            shutil.rmtree(self.root / _safe(bucket), ignore_errors=True)

    # objects
    def path_of(self, bucket: str, key: str) -> Path:
        return self.root / _safe(bucket) / "data" / hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()

    def put(self, bucket: str, key: str, data: bytes | Iterator[bytes], *, meta: dict | None = None,
            content_type: str = "application/octet-stream", etag: str | None = None,
            mtime: float | None = None, storage_class: str = "STANDARD", if_absent: bool = False) -> Blob:
        """Store an object. `etag` defaults to the MD5 hex of the data. `if_absent`: KeyExists, and
        nothing stored, if the key exists when the object would be stored."""
        path = self.path_of(bucket, key)
        tmp = path.with_name(path.name + f".tmp{threading.get_ident()}")
        md5 = hashlib.md5()
        size = 0
        with open(tmp, "wb") as f:
            for chunk in ([data] if isinstance(data, (bytes, bytearray)) else data):
                f.write(chunk)
                md5.update(chunk)
                size += len(chunk)
        blob = Blob(key=key, size=size, etag=etag or md5.hexdigest(), mtime=mtime or time.time(),
                    meta=dict(meta or {}), content_type=content_type, storage_class=storage_class)
        with self._lock:
            if bucket not in self._buckets:
                tmp.unlink()
                raise KeyError(bucket)
            if if_absent and key in self._buckets[bucket]:
                tmp.unlink()
                raise KeyExists(key)
            os.replace(tmp, path)
            self._buckets[bucket][key] = blob
        return blob

    def get(self, bucket: str, key: str) -> Blob | None:
        with self._lock:
            return self._buckets.get(bucket, {}).get(key)

    def read(self, bucket: str, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of an object (end exclusive, None = to the end)."""
        with open(self.path_of(bucket, key), "rb") as f:
            f.seek(start)
            return f.read(-1 if end is None else max(0, end - start))

    def delete(self, bucket: str, key: str) -> bool:
        with self._lock:
            blob = self._buckets.get(bucket, {}).pop(key, None)
            if blob is not None:
                self.path_of(bucket, key).unlink(missing_ok=True)
            return blob is not None

    def copy(self, bucket: str, src: str, dst_bucket: str, dst: str, *, meta: dict | None = None) -> Blob:
        with self._lock:
            blob = self._buckets[bucket][src]
            data = self.read(bucket, src)
            return self.put(dst_bucket, dst, data, meta=blob.meta if meta is None else meta,
                            content_type=blob.content_type, etag=blob.etag,
                            storage_class=blob.storage_class)

    def keys(self, bucket: str, prefix: str = "", after: str = "") -> list[str]:
        """Sorted keys (by UTF-8 bytes, as S3 sorts) with `prefix`, strictly after `after`."""
        with self._lock:
            names = [k for k in self._buckets.get(bucket, {}) if k.startswith(prefix) and k > after]
        return sorted(names, key=lambda k: k.encode("utf-8", "surrogatepass"))

    def list(self, bucket: str, prefix: str, delimiter: str, after: str, limit: int
             ) -> tuple[list[Blob], list[str], str | None]:
        """One page: (objects, common prefixes, next marker or None), S3-style grouping."""
        objects: list[Blob] = []
        prefixes: list[str] = []
        last = None
        for key in self.keys(bucket, prefix, after):
            if len(objects) + len(prefixes) >= limit:
                return objects, prefixes, last
            if delimiter:
                cut = key.find(delimiter, len(prefix))
                if cut >= 0:
                    common = key[: cut + len(delimiter)]
                    if prefixes and prefixes[-1] == common:
                        continue
                    if after and common <= after:
                        continue
                    prefixes.append(common)
                    last = common
                    continue
            blob = self.get(bucket, key)
            if blob is not None:
                objects.append(blob)
                last = key
        return objects, prefixes, None


def _safe(bucket: str) -> str:
    return hashlib.sha1(bucket.encode()).hexdigest()[:16] + "-" + "".join(
        c for c in bucket if c.isalnum() or c in "-_.")[:40]


# ----------------------------------------------------------------------------------------------
# HTTP server


class ClientHungUp(ConnectionResetError):
    """The client went away before it sent the whole body. A real server drops such a request
    unprocessed; handling the part that had arrived stored a truncated object without its metadata
    (faultproxy's reset_upload: a COS upload then found "another writer's" object, a false conflict)."""


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: "Emulator"


class EmulatorHandler(http.server.BaseHTTPRequestHandler):
    """Base request handler. Subclasses implement do_GET/do_PUT/… and call `self.inject(op)`."""

    protocol_version = "HTTP/1.1"
    # Headers and body leave in one segment: unbuffered writes plus Nagle cost 40 ms per small reply.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: _Server

    def end_headers(self) -> None:
        # A client that sent `Connection: close` (the WCS SDK always does) is told so in the reply too;
        # without it, http.client keeps the socket in its pool and the next request dies on it.
        if self.close_connection and not any(line.lower().startswith(b"connection:")
                                             for line in getattr(self, "_headers_buffer", [])):
            self.send_header("Connection", "close")
        super().end_headers()

    @property
    def emulator(self) -> "Emulator":
        return self.server.emulator

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature from the base
        if self.emulator.verbose:
            super().log_message(format, *args)

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        if len(data) != length:
            self.close_connection = True
            raise ClientHungUp(f"{len(data)} of {length} body bytes came before the client hung up")
        return data

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except ClientHungUp:   # dropped unprocessed, as a real server does
            self.close_connection = True

    def send(self, status: int, body: bytes = b"", headers: dict | None = None,
             content_type: str | None = None) -> None:
        """Send a whole response with Content-Length (keep-alive safe)."""
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def send_json(self, status: int, obj, headers: dict | None = None,
                  content_type: str = "application/json") -> None:
        self.send(status, json.dumps(obj).encode(), headers, content_type)

    def error_response(self, fault: Fault) -> None:
        """Answer an injected status fault. Subclasses give it their protocol's error shape."""
        self.send(fault.status, fault.body or b'{"error":"injected fault"}', content_type="application/json")

    def inject(self, op: str) -> bool:
        """Apply a fault for this request if one is due. True: the request has been dealt with."""
        fault = self.emulator.faults.pick(op)
        if fault is None:
            return False
        if fault.action == "delay":
            time.sleep(fault.delay)
            return False
        # Drain the request body so a status answer is readable by the client.
        if fault.action in ("status", "garble", "truncate"):
            self.read_body()
        if fault.action == "status":
            self.error_response(fault)
        elif fault.action == "reset":
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        elif fault.action == "garble":
            self.send(200, b"\x00garbage{not json<not xml", content_type="application/json")
        elif fault.action == "truncate":
            # Promise more bytes than we send, then hang up.
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"{\"partial\":")
            self.close_connection = True
        return True


class Emulator:
    """Base of a protocol emulator. Use as a context manager or start()/stop()."""

    protocol = "base"
    handler: type[EmulatorHandler] = EmulatorHandler

    def __init__(self, root: str | Path | None = None, port: int = 0, buckets: tuple[str, ...] = (),
                 verbose: bool = False) -> None:
        self._tmp = None if root else tempfile.TemporaryDirectory(prefix=f"storefs-{self.protocol}-")
        self.root = Path(root or self._tmp.name)
        self.blobs = BlobStore(self.root / "blobs")
        self.faults = FaultInjector()
        self.clock = Clock()
        self.verbose = verbose
        self._server = _Server(("127.0.0.1", port), self.handler, bind_and_activate=True)
        self._server.emulator = self
        self._thread: threading.Thread | None = None
        for bucket in buckets:
            self.create_bucket(bucket)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_bucket(self, name: str) -> None:
        self.blobs.create_bucket(name)

    def config(self) -> dict:
        """The config keys of a storefs remote that uses this emulator (type, endpoint, credentials)."""
        raise NotImplementedError

    def start(self) -> "Emulator":
        # A short poll interval keeps stop() (and so each test's teardown) quick.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{self.protocol}-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
