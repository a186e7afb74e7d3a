"""Resumable multipart uploads into vaults (the vault contract, on every backend with multipart): an
upload interrupted midway is finished by a new provider ("after a crash") from the parts the server
lists, each reused only if its tree hash is the local bytes' tree hash; orphaned uploads the caller
started and no longer references are aborted, others never."""
from __future__ import annotations

import io
import threading

import pytest

from storefs import errors
from storefs.vaults import treehash
from storefs.vaults.base import ArchiveUpload, abort_orphan_uploads, resume_in_parts, upload_in_parts
from tests.vaults.conftest import VaultEnv

MiB = 1024 * 1024


def payload(size: int, seed: int) -> bytes:
    block = bytes((i * 31 + seed) % 251 for i in range(MiB))
    return (block * (size // MiB + 1))[:size]


class Interrupting:
    """The vault, with each part counted, failing transiently once `fail_after` parts went up."""

    def __init__(self, vault, fail_after: int | None = None) -> None:
        self._vault = vault
        self.capabilities = vault.capabilities
        self.fail_after = fail_after
        self.sent: list[int] = []
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._vault, name)

    def upload_part(self, upload, start, data):
        with self._lock:
            if self.fail_after is not None and len(self.sent) >= self.fail_after:
                raise errors.Transient("injected: the network went away")
            self.sent.append(start)
        return self._vault.upload_part(upload, start, data)


def _interrupted(vault_env: VaultEnv, data: bytes, part: int) -> tuple[ArchiveUpload, list[int]]:
    recorded: list[ArchiveUpload] = []
    flaky = Interrupting(vault_env.vault, fail_after=3)
    with pytest.raises(errors.Transient):
        upload_in_parts(flaky, data, len(data), "mt2 resumed", part, on_initiated=recorded.append)
    assert len(recorded) == 1
    # Kept on the server for the resume (not aborted), with the parts that went up.
    assert recorded[0].upload_id in [u.upload_id for u in vault_env.vault.list_multipart_uploads()]
    return recorded[0], flaky.sent


@pytest.mark.needs("multipart")
def test_an_interrupted_upload_resumes_from_the_listed_parts(vault_env: VaultEnv):
    data = payload(20 * MiB + 4321, seed=7)
    upload, first = _interrupted(vault_env, data, 4 * MiB)
    vault = vault_env.reopen().vault(vault_env.vault.name)   # a new process, as after kill -9
    counting = Interrupting(vault)
    info = resume_in_parts(counting, upload, io.BytesIO(data), len(data))
    all_starts = list(range(0, len(data), 4 * MiB))
    assert sorted(counting.sent) == sorted(set(all_starts) - set(first))   # only the missing parts
    assert info.tree_hash == treehash.tree_hash(data) and info.size == len(data)
    assert upload.upload_id not in [u.upload_id for u in vault.list_multipart_uploads()]
    job = vault_env.settle(vault.start_retrieval(info.archive_id, tier=vault_env.fast_tier))
    out = io.BytesIO()
    vault.download_job_output(job.job_id, out, job=job)
    assert out.getvalue() == data


@pytest.mark.needs("multipart")
def test_a_listed_part_that_differs_from_the_local_bytes_is_sent_again(vault_env: VaultEnv):
    data = bytearray(payload(12 * MiB, seed=8))
    upload, first = _interrupted(vault_env, bytes(data), 2 * MiB)
    changed = first[0]
    data[changed + 5] ^= 0xFF
    counting = Interrupting(vault_env.vault)
    info = resume_in_parts(counting, upload, bytes(data), len(data))
    assert changed in counting.sent
    assert set(counting.sent) == set(range(0, len(data), 2 * MiB)) - set(first) | {changed}
    assert info.tree_hash == treehash.tree_hash(bytes(data))


@pytest.mark.needs("multipart")
def test_a_gone_upload_is_not_found(vault_env: VaultEnv):
    upload = vault_env.vault.initiate_multipart(MiB, "mt2 gone")
    vault_env.vault.abort_multipart(upload)
    with pytest.raises(errors.NotFound):
        resume_in_parts(vault_env.vault, upload, b"x" * MiB, MiB)


@pytest.mark.needs("multipart")
def test_orphans_the_caller_started_are_aborted_and_no_others(vault_env: VaultEnv):
    vault = vault_env.vault
    mine_lost = vault.initiate_multipart(MiB, "mt2 lost")
    mine_kept = vault.initiate_multipart(MiB, "mt2 kept")
    foreign = vault.initiate_multipart(MiB, "another host's")
    aborted = abort_orphan_uploads(vault, {mine_lost.upload_id, mine_kept.upload_id}, {mine_kept.upload_id})
    assert aborted == [mine_lost.upload_id]
    left = {u.upload_id for u in vault.list_multipart_uploads()}
    assert left == {mine_kept.upload_id, foreign.upload_id}
    for upload in (mine_kept, foreign):
        vault.abort_multipart(upload)
