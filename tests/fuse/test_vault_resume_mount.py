"""A new vault file's multipart upload, interrupted by kill -9, is resumed by the next mount from the
parts the CAS service holds (issue #13, resumable uploads; fs/vault/resumable.py). A relay counts
the bytes the mount sends; the archive is read back through a retrieval and compared."""
from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid

import pytest

from storefs.vaults import cas
from storefs.vaults.treehash import tree_hash
from tests.fuse.harness import Env
from tests.fuse.test_resume import CountingRelay, settled

MiB = 1 << 20
SIZE = 24 * MiB
PART = MiB


def _wait(predicate, timeout: float, what: str, env: Env) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{env.log_tail(60)}")
        time.sleep(0.01)


def test_kill_9_mid_upload_resumes_from_the_parts_the_service_holds(tmp_path, own_cas):
    name = f"v{uuid.uuid4().hex[:10]}"
    own_cas.create_bucket(name)
    section = {k: str(v) for k, v in own_cas.config().items()}
    direct = cas.open_provider("t", {k: v for k, v in section.items() if k != "type"})
    vault = direct.vault(name)
    vault.start_inventory()
    own_cas.clock.advance(6 * 3600)
    relay = CountingRelay(int(section["endpoint"].rsplit(":", 1)[1]))
    section.update(endpoint=relay.url, single_upload_max=str(4 * MiB), part_size=str(PART),
                   upload_concurrency="2")
    env = Env(tmp_path, {"c": section})
    source = tmp_path / "source.bin"
    data = os.urandom(SIZE)
    source.write_bytes(data)
    options = ("vault_writes", "write_back=0.2")
    try:
        mount = env.mount(f"c:{name}", options=options)
        shutil.copyfile(source, mount.path / "big.bin")     # closed: staged and journaled
        relay.reset()

        def held() -> int:
            uploads = vault.list_multipart_uploads()
            return sum(p.end - p.start for u in uploads for p in vault.list_parts(u)) if len(uploads) == 1 else 0

        _wait(lambda: relay.bytes_up >= 0.4 * SIZE and held() > 0, 120, "the upload to get under way", env)
        mount.kill()
        relay.reset()
        held_bytes = settled(held)   # a part forwarded before the kill may be stored after it
        assert 0 < held_bytes < SIZE, held_bytes

        again = env.mount(f"c:{name}", options=options)
        _wait(lambda: not vault.list_multipart_uploads() and "big.bin" in os.listdir(again.path)
              and not list((env.tmp / "cache").rglob("staging/*.json")), 120, "the resumed upload to complete", env)
        sent_after = relay.bytes_up
        missing = SIZE - held_bytes
        # The missing parts, the listing and the requests' heads; never a held part again.
        assert missing <= sent_after <= missing + MiB, (sent_after, missing)
        assert "resumed upload" in env.log_tail(200)
        print(f"\ncas: file {SIZE} B; held {held_bytes} B; sent after restart {sent_after} B (missing {missing} B)")

        # Read it back through a retrieval: the bytes are the file's.
        assert again.unmount().returncode == 0
        third = env.mount(f"c:{name}")
        jobs_before = len(vault.list_jobs())
        with pytest.raises(OSError):
            (third.path / "big.bin").read_bytes()   # starts the retrieval job (EAGAIN)
        assert len(vault.list_jobs()) == jobs_before + 1
        own_cas.clock.advance(6 * 3600)
        got = (third.path / "big.bin").read_bytes()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
        assert os.getxattr(third.path / "big.bin", "user.storefs.tree_hash").decode() == tree_hash(data)
    finally:
        env.close()
        relay.stop()
        direct.close()
