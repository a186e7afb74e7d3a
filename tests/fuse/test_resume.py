"""A large upload survives `kill -9` of the mount and resumes from the parts the server holds.

A 300 MiB file is copied into an S3 (moto) mount (96 MiB into UFile and WCS emulator mounts); the daemon is killed with SIGKILL while its multipart
upload is under way; the same mount is made again (same cache_dir). The upload must complete with the
right bytes, and what the client sends after the restart must be the missing parts only: every byte
from the mount to the server goes through a counting relay on 127.0.0.1.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from storefs.providers.s3 import open_provider as open_s3
from storefs.providers.ufile import open_provider as open_ufile
from storefs.providers.wcs import open_provider as open_wcs
from tests.fuse.harness import Env
from tests.servers import moto_s3

MiB = 1024 * 1024


class CountingRelay:
    """A TCP relay 127.0.0.1:port -> upstream that counts the bytes clients send upstream (and the
    bytes the upstream sends back, bytes_down)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self.bytes_up = 0
        self.bytes_down = 0
        self._socks: set[socket.socket] = set()
        self._stopping = False
        self._thread = threading.Thread(target=self._accept, name="relay", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> int:
        with self._lock:
            count, self.bytes_up = self.bytes_up, 0
        return count

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=60)
            with self._lock:
                self._socks |= {client, upstream}
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while True:
                data = src.recv(1 << 20)
                if not data:
                    break
                dst.sendall(data)
                with self._lock:
                    if counted:
                        self.bytes_up += len(data)
                    else:
                        self.bytes_down += len(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stopping = True
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            sock.close()
        self._thread.join(timeout=5)


def _wait(predicate, timeout: float, what: str, env: Env | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{env.log_tail() if env else ''}")
        time.sleep(0.01)


def _sha256_of(store, key: str, size: int) -> str:
    digest = hashlib.sha256()
    for start in range(0, size, 32 * MiB):
        digest.update(store.read_range(key, start, min(size, start + 32 * MiB)))
    return digest.hexdigest()


def _source(tmp_path, size: int) -> tuple[object, str]:
    source = tmp_path / "source.bin"
    digest = hashlib.sha256()
    with open(source, "wb") as f:
        for _ in range(size // (4 * MiB)):
            chunk = os.urandom(4 * MiB)
            digest.update(chunk)
            f.write(chunk)
    assert source.stat().st_size == size
    return source, digest.hexdigest()


def _held_bytes(env: Env, direct, key: str, quiet: bool = False) -> tuple[int, int]:
    """(bytes, parts) the interrupted upload of `key` has that a resume can reuse: the server's listing
    where the protocol has one, else (WCS) the parts the journal recorded. `quiet`: (0, 0) while there
    is no such upload yet."""
    if direct.capabilities.resume == "list":
        uploads = [u for u in direct.list_multipart() if u.key == key]
        if quiet and len(uploads) != 1:
            return 0, 0
        assert len(uploads) == 1, uploads
        held = direct.list_parts(uploads[0])
        return sum(p.size for p in held), len(held)
    records = []
    for sidecar in (env.tmp / "cache").rglob("*.json"):
        try:
            entry = json.loads(sidecar.read_text())
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("key") == key and entry.get("upload"):
            records.append(entry["upload"])
    if quiet and len(records) != 1:
        return 0, 0
    assert len(records) == 1, records
    return sum(int(p[2]) for p in records[0]["parts"]), len(records[0]["parts"])


def settled(measure: Callable[[], object], quiet: float = 1.0, limit: float = 20.0) -> object:
    """`measure()` once it stays the same for `quiet` seconds (at most `limit` s): what a server holds
    once it has finished what it was sent before a kill. A part whose body a relay had already
    forwarded may still be stored after the client died (seen once under load: the resume then found
    a part more than was counted)."""
    deadline = time.monotonic() + limit
    last = measure()
    stable_since = time.monotonic()
    while time.monotonic() - stable_since < quiet and time.monotonic() < deadline:
        time.sleep(0.1)
        now = measure()
        if now != last:
            last, stable_since = now, time.monotonic()
    return last


def _crash_and_resume(tmp_path, section: dict, direct, relay: CountingRelay, size: int, part_size: int,
                      etag_check) -> None:
    """Copy `size` bytes in, kill -9 mid-upload, remount, check the object and what was sent again."""
    source, expected = _source(tmp_path, size)
    bucket = direct.name
    env = Env(tmp_path, {"r": section})
    try:
        options = ("write_back=0.2", f"part_size={part_size // MiB}M", "upload_workers=4")
        mount = env.mount(f"r:{bucket}", options=options)
        relay.reset()
        shutil.copyfile(source, mount.path / "big.bin")   # closed: staged and journaled
        # Kill in the middle of the upload: once about 45% of the file went out (mid-part) and the
        # server (or, for WCS, the journal) holds at least one finished part. On S3 the parts start
        # going up while the file is written (a streamed upload, journaled at close: resumed as well).
        _wait(lambda: relay.bytes_up >= 0.45 * size and _held_bytes(env, direct, "big.bin", quiet=True)[0] > 0,
              120, "the upload to get under way", env)
        mount.kill()
        before = relay.reset()
        assert not _exists(direct, "big.bin")   # not completed before the kill
        held_bytes, held_parts = settled(lambda: _held_bytes(env, direct, "big.bin"))
        # Every part may be held already (seen once under the full suite's load: the streamed parts
        # outran the poll above); then the resume must send none again, only complete the upload.
        assert 0 < held_bytes <= size

        started = time.monotonic()
        again = env.mount(f"r:{bucket}", options=options)
        _wait(lambda: _exists(direct, "big.bin") and not (
            direct.capabilities.resume == "list" and [u for u in direct.list_multipart() if u.key == "big.bin"]),
            180, "the resumed upload to complete", env)
        elapsed = time.monotonic() - started
        after = relay.bytes_up
        info = direct.stat("big.bin")
        assert info.size == size
        etag_check(info)
        assert _sha256_of(direct, "big.bin", size) == expected
        missing = size - held_bytes
        # What went up after the restart: the missing parts, plus the requests' heads and the
        # listing/complete calls (well under 1 MiB), never a held part again. Under heavy load a part
        # cut off by a timeout is sent again (seen once: 2.3 MB more on moto): less than a part more.
        assert missing <= after < missing + part_size, (after, missing)
        print(f"\n{section['type']}: file {size} B; sent before kill {before} B; held {held_bytes} B "
              f"({held_parts} parts); sent after restart {after} B (missing {missing} B); "
              f"remount to complete {elapsed:.1f} s")
        assert "resuming the upload of 'big.bin'" in env.log_tail(200)
        assert again.unmount().returncode == 0
    finally:
        env.close()


def test_kill_9_mid_multipart_upload_resumes_without_resending_held_parts(tmp_path):
    """S3 on moto, 300 MiB in 8 MiB parts."""
    size, part = 300 * MiB, 8 * MiB
    with moto_s3() as server:
        relay = CountingRelay(int(server.endpoint.rsplit(":", 1)[1]))
        try:
            bucket = server.create_bucket()
            direct = open_s3("direct", server.options()).bucket(bucket)   # behind the mount's back
            parts = -(-size // part)
            _crash_and_resume(tmp_path, {"type": "s3", **server.options(endpoint=relay.url)}, direct, relay,
                              size, part, lambda info: info.etag.endswith(f"-{parts}"))
        finally:
            relay.stop()


@pytest.mark.parametrize("name", ["ufile", "wcs"])
def test_native_providers_resume_after_kill_9(request, tmp_path, name):
    """UFile (server part listing) and WCS (block contexts kept in the journal), 96 MiB."""
    emulator = request.getfixturevalue(f"{name}_emulator")
    bucket = f"t{uuid.uuid4().hex[:10]}"
    emulator.create_bucket(bucket)
    config = {k: str(v) for k, v in emulator.config().items()}
    url_key = "endpoint" if name == "ufile" else "put_url"    # where the parts go
    relay = CountingRelay(int(config[url_key].rsplit(":", 1)[1].split("/")[0]))
    try:
        opener = open_ufile if name == "ufile" else open_wcs
        direct = opener("direct", config).bucket(bucket)
        _crash_and_resume(tmp_path, {**config, url_key: relay.url}, direct, relay, 96 * MiB, 8 * MiB,
                          lambda info: None)
    finally:
        relay.stop()


def _exists(store, key: str) -> bool:
    try:
        store.stat(key)
        return True
    except Exception:
        return False
