"""The archive-vault contract, one suite run against the local vault, the CAS emulator and moto's Glacier
(see conftest.py), followed by the wire-level checks only the CAS emulator can make, the emulator script,
and the error mapping.

Where a backend cannot do something, the test reads it from `vault.capabilities` (moto: no multipart,
no ranges, untrustworthy tree hashes, no paging, no sizes) or from the hooks its `VaultEnv` has
(advance the job clock, fail a job, corrupt an output); tests never ask which backend they run on.
"""
from __future__ import annotations

import hashlib
import io
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from storefs import errors
from storefs.vaults import cas as cas_vault
from storefs.vaults import treehash
from storefs.vaults.base import (
    ArchiveVault,
    JobAction,
    JobStatus,
    Tier,
    TreeHashMismatch,
    VaultProvider,
)
from storefs.vaults.glacier import GlacierDialect
from storefs.vaults.rest.dialect import error_from_answer
from storefs.vaults.rest.parse import parse_inventory, parse_job
from storefs.vaults.treehash import MiB, tree_hash
from storefs.wire.auth import cas as cas_auth
from storefs.wire.body import Body
from tests.emulators.base import Fault
from tests.emulators.cas import CasEmulator
from tests.vaults.conftest import VaultEnv, cas_options, vault_name

ROOT = Path(__file__).resolve().parents[2]


def payload(size: int, seed: int = 1) -> bytes:
    """Deterministic bytes that differ in every MiB (so every tree leaf differs)."""
    return random.Random(seed).randbytes(size)


def upload(env: VaultEnv, size: int, description: str, seed: int = 1) -> tuple[bytes, str]:
    data = payload(size, seed)
    info = env.vault.upload_archive(data, len(data), description)
    assert info.size == size and info.description == description and info.archive_id
    assert info.tree_hash == tree_hash(data)
    return data, info.archive_id


# ------------------------------------------------------------------------------------------------
# Vaults


def test_backends_implement_the_protocols(vault_env: VaultEnv):
    assert isinstance(vault_env.vault, ArchiveVault)
    assert isinstance(vault_env.provider, VaultProvider)


def test_list_and_describe_vaults(vault_env: VaultEnv):
    name = vault_env.vault.name
    assert name in [v.name for v in vault_env.provider.list_vaults()]
    info = vault_env.vault.describe()
    assert info.name == name and info.resource_name and info.creation_date
    vault_env.provider.create_vault(name)  # idempotent
    with pytest.raises(errors.NotFound):
        vault_env.provider.vault(vault_name("missing")).describe()
    with pytest.raises(errors.InvalidArgument):
        vault_env.provider.vault("bad/name")
    remounted = vault_env.reopen()
    try:
        assert name in [v.name for v in remounted.list_vaults()]
        remounted.check(name)
    finally:
        remounted.close()


@pytest.mark.needs("pages")
def test_list_vaults_in_pages(vault_env: VaultEnv):
    assert vault_env.caps.pages_listings
    names = {vault_env.vault.name}
    for _ in range(3):
        name = vault_name("page")
        vault_env.provider.create_vault(name)
        names.add(name)
    seen, marker, pages = [], None, 0
    while True:
        page = vault_env.provider.list_vaults_page(marker, 2)
        assert len(page.items) <= 2
        seen += [v.name for v in page.items]
        pages += 1
        if not page.marker:
            break
        marker = page.marker
    assert names <= set(seen) and len(seen) == len(set(seen)) and pages >= 2
    for name in names - {vault_env.vault.name}:
        vault_env.provider.delete_vault(name)
    assert not (names - {vault_env.vault.name}) & {v.name for v in vault_env.provider.list_vaults()}


# ------------------------------------------------------------------------------------------------
# Uploads and the inventory


def test_upload_then_inventory_lists_the_archives(vault_env: VaultEnv):
    small, small_id = upload(vault_env, 1000, "small.txt", seed=1)
    big, big_id = upload(vault_env, 3 * MiB + 5, "dir/big file.bin", seed=2)
    job_id = vault_env.vault.start_inventory(tier=vault_env.fast_tier)
    job = vault_env.vault.describe_job(job_id)
    assert job.action is JobAction.INVENTORY_RETRIEVAL and job.status is JobStatus.IN_PROGRESS
    with pytest.raises(errors.ArchiveNotReady):
        vault_env.vault.read_inventory(job_id)
    job = vault_env.settle(job_id)
    assert job.status is JobStatus.SUCCEEDED and job.completion_date
    if vault_env.caps.job_sizes_reported:
        assert job.inventory_size and job.inventory_size > 0
    listed = {a.archive_id: a for a in vault_env.vault.read_inventory(job_id)}
    assert set(listed) == {small_id, big_id}
    for archive_id, data, description in ((small_id, small, "small.txt"), (big_id, big, "dir/big file.bin")):
        entry = listed[archive_id]
        assert entry.description == description and entry.size == len(data) and entry.creation_date > 0
        if vault_env.caps.tree_hash_trustworthy:
            assert entry.tree_hash == tree_hash(data)


def test_upload_rejects_what_no_vault_stores(vault_env: VaultEnv):
    with pytest.raises(errors.InvalidArgument):
        vault_env.vault.upload_archive(b"", 0, "empty")
    with pytest.raises(errors.InvalidArgument):
        vault_env.vault.upload_archive(b"x", 1, "non-ascii ü")
    with pytest.raises(errors.InvalidArgument):
        vault_env.vault.upload_archive(b"x", 1, "d" * 1025)


@pytest.mark.needs("multipart")
def test_multipart_upload_of_40_mib_in_8_mib_parts(vault_env: VaultEnv):
    assert vault_env.caps.supports_multipart
    vault = vault_env.vault
    data = payload(40 * MiB + 12345, seed=3)
    upload_ = vault.initiate_multipart(8 * MiB, "forty.bin")
    assert upload_.upload_id in [u.upload_id for u in vault.list_multipart_uploads()]
    starts = list(range(0, len(data), 8 * MiB))
    parts = {}
    for start in reversed(starts):  # any order
        parts[start] = vault.upload_part(upload_, start, data[start:start + 8 * MiB])
        assert parts[start].tree_hash == tree_hash(data[start:start + 8 * MiB])
    vault.upload_part(upload_, 0, data[:8 * MiB])  # overwriting a part is allowed
    listed = vault.list_parts(upload_)
    assert [(p.start, p.end, p.tree_hash) for p in listed] == \
        [(s, parts[s].end, parts[s].tree_hash) for s in starts]
    whole = treehash.combine_hex([parts[s].tree_hash for s in starts])
    assert whole == tree_hash(data)
    info = vault.complete_multipart(upload_, len(data), whole)
    assert info.tree_hash == whole and info.size == len(data)
    assert upload_.upload_id not in [u.upload_id for u in vault.list_multipart_uploads()]

    job_id = vault.start_retrieval(info.archive_id, tier=vault_env.fast_tier)
    job = vault_env.settle(job_id)
    assert job.succeeded and job.sha256_tree_hash == whole and job.archive_size == len(data)
    out = io.BytesIO()
    assert vault.download_job_output(job_id, out, job=job) == whole
    assert out.getvalue() == data


@pytest.mark.needs("multipart")
def test_upload_archive_of_a_large_file_goes_in_parts(vault_env: VaultEnv, tmp_path):
    assert vault_env.caps.supports_multipart
    data = payload(24 * MiB + 7, seed=4)
    path = tmp_path / "big"
    path.write_bytes(data)
    with open(path, "rb") as f:
        info = vault_env.vault.upload_archive(f, len(data), "big")
    assert info.tree_hash == tree_hash(data)
    assert vault_env.vault.list_multipart_uploads() == []
    job = vault_env.settle(vault_env.vault.start_retrieval(info.archive_id, tier=vault_env.fast_tier))
    out = io.BytesIO()
    vault_env.vault.download_job_output(job.job_id, out, job=job)
    assert out.getvalue() == data


@pytest.mark.needs("multipart")
def test_multipart_rules(vault_env: VaultEnv):
    assert vault_env.caps.supports_multipart
    vault = vault_env.vault
    with pytest.raises(errors.InvalidArgument):
        vault.initiate_multipart(3 * MiB)            # not 1 MiB x 2^n
    upload_ = vault.initiate_multipart(2 * MiB, "rules")
    data = payload(5 * MiB, seed=5)
    with pytest.raises(errors.InvalidArgument):
        vault.upload_part(upload_, MiB, data[MiB:3 * MiB])   # not on a part boundary
    with pytest.raises(errors.InvalidArgument):
        vault.upload_part(upload_, 0, data[:3 * MiB])        # longer than the part size
    first = vault.upload_part(upload_, 0, data[:2 * MiB])
    last = vault.upload_part(upload_, 4 * MiB, data[4 * MiB:])
    whole = tree_hash(data)
    with pytest.raises(errors.InvalidArgument):
        vault.complete_multipart(upload_, len(data), whole)  # the middle part is missing
    middle = vault.upload_part(upload_, 2 * MiB, data[2 * MiB:4 * MiB])
    with pytest.raises(errors.InvalidArgument):
        vault.complete_multipart(upload_, len(data) + MiB, whole)  # size does not match the parts
    with pytest.raises(TreeHashMismatch):
        vault.complete_multipart(upload_, len(data), tree_hash(b"something else"))
    assert treehash.combine_hex([first.tree_hash, middle.tree_hash, last.tree_hash]) == whole
    vault.abort_multipart(upload_)
    assert upload_.upload_id not in [u.upload_id for u in vault.list_multipart_uploads()]
    with pytest.raises(errors.NotFound):
        vault.upload_part(upload_, 0, data[:2 * MiB])
    with pytest.raises(errors.NotFound):
        vault.abort_multipart(upload_)


# ------------------------------------------------------------------------------------------------
# Retrieval jobs


def test_retrieval_job_lifecycle(vault_env: VaultEnv):
    vault = vault_env.vault
    data, archive_id = upload(vault_env, 3 * MiB + 5, "lifecycle", seed=6)
    job_id = vault.start_retrieval(archive_id, tier=vault_env.fast_tier, description="restore lifecycle")
    job = vault.describe_job(job_id)
    assert job.status is JobStatus.IN_PROGRESS and not job.completed
    assert job.action is JobAction.ARCHIVE_RETRIEVAL and job.archive_id == archive_id
    assert job.tier is Tier.EXPEDITED and job.creation_date
    with pytest.raises(errors.ArchiveNotReady):
        vault.read_job_output(job_id, 0, MiB)
    if vault_env.advance is not None:
        vault_env.advance(200)  # Expedited takes up to 5 minutes
        assert vault.describe_job(job_id).status is JobStatus.IN_PROGRESS
    job = vault_env.settle(job_id)
    assert job.status is JobStatus.SUCCEEDED and job.completion_date and job.completion_date >= job.creation_date
    if vault_env.caps.job_sizes_reported:
        assert job.archive_size == len(data) and job.output_size == len(data)
        assert job.byte_range == (0, len(data))
        assert job.sha256_tree_hash == tree_hash(data) == job.archive_tree_hash
    assert vault.read_job_output(job_id, MiB, 2 * MiB) == data[MiB:2 * MiB]         # tree-aligned
    assert vault.read_job_output(job_id, 100, 5000) == data[100:5000]               # not aligned
    assert vault.read_job_output(job_id, 3 * MiB, 3 * MiB + 5) == data[3 * MiB:]    # the tail
    out = io.BytesIO()
    got = vault.download_job_output(job_id, out)
    assert out.getvalue() == data
    if vault_env.caps.tree_hash_trustworthy:
        assert got == tree_hash(data)


def test_ranged_retrieval(vault_env: VaultEnv):
    vault = vault_env.vault
    data, archive_id = upload(vault_env, 5 * MiB + 3, "ranged", seed=7)
    if not vault_env.caps.supports_ranges:
        with pytest.raises(errors.NotSupported):
            vault.start_retrieval(archive_id, byte_range=(2 * MiB, 4 * MiB))
        return
    with pytest.raises(errors.InvalidArgument):
        vault.start_retrieval(archive_id, byte_range=(1000, MiB))        # start not on a MiB
    with pytest.raises(errors.InvalidArgument):
        vault.start_retrieval(archive_id, byte_range=(0, MiB + 5))       # end neither MiB nor the end
    aligned = vault.start_retrieval(archive_id, tier=vault_env.fast_tier, byte_range=(2 * MiB, 4 * MiB))
    unaligned = vault.start_retrieval(archive_id, tier=vault_env.fast_tier, byte_range=(MiB, 3 * MiB))
    tail = vault.start_retrieval(archive_id, tier=vault_env.fast_tier, byte_range=(4 * MiB, len(data)))
    for job_id, (start, end), tree in ((aligned, (2 * MiB, 4 * MiB), tree_hash(data[2 * MiB:4 * MiB])),
                                       (unaligned, (MiB, 3 * MiB), None),
                                       (tail, (4 * MiB, len(data)), tree_hash(data[4 * MiB:]))):
        job = vault_env.settle(job_id)
        assert job.succeeded and job.byte_range == (start, end) and job.output_size == end - start
        assert job.sha256_tree_hash == tree
        out = io.BytesIO()
        vault.download_job_output(job_id, out, job=job)
        assert out.getvalue() == data[start:end]
        assert vault.read_job_output(job_id, 0, MiB) == data[start:start + MiB]


@pytest.mark.needs("corrupt_output")
def test_corrupt_output_is_detected(vault_env: VaultEnv):
    assert vault_env.corrupt_output is not None
    vault = vault_env.vault
    _, archive_id = upload(vault_env, 2 * MiB + 10, "corrupt", seed=8)
    job = vault_env.settle(vault.start_retrieval(archive_id, tier=vault_env.fast_tier))
    vault_env.corrupt_output(job.job_id)
    with pytest.raises(TreeHashMismatch) as caught:
        vault.read_job_output(job.job_id, 0, MiB)
    assert caught.value.errno == errors.errno_for(caught.value) == 5  # EIO
    with pytest.raises(TreeHashMismatch):
        vault.download_job_output(job.job_id, io.BytesIO(), job=job)


@pytest.mark.needs("corrupt_next")
def test_corruption_in_transit_is_retried_once(vault_env: VaultEnv):
    assert vault_env.corrupt_next is not None
    vault = vault_env.vault
    data, archive_id = upload(vault_env, 2 * MiB, "transit", seed=9)
    job = vault_env.settle(vault.start_retrieval(archive_id, tier=vault_env.fast_tier))
    vault_env.corrupt_next(1)
    assert vault.read_job_output(job.job_id, 0, MiB) == data[:MiB]   # second fetch is clean
    vault_env.corrupt_next(2)
    with pytest.raises(TreeHashMismatch):
        vault.read_job_output(job.job_id, 0, MiB)


@pytest.mark.needs("fail_job")
def test_failed_job_reports_its_message(vault_env: VaultEnv):
    assert vault_env.fail_job is not None
    vault = vault_env.vault
    _, archive_id = upload(vault_env, 4096, "doomed", seed=10)
    job_id = vault.start_retrieval(archive_id, tier=vault_env.fast_tier)
    vault_env.fail_job(job_id, "archive damaged in the vault")
    job = vault_env.settle(job_id)
    assert job.status is JobStatus.FAILED and job.completed and not job.succeeded
    assert job.status_message == "archive damaged in the vault"
    with pytest.raises(errors.StoreError):
        vault.read_job_output(job_id, 0, 100)
    assert job_id in [j.job_id for j in vault.list_jobs(status=JobStatus.FAILED)]


def test_jobs_started_earlier_are_seen_after_a_remount(vault_env: VaultEnv):
    vault = vault_env.vault
    _, archive_id = upload(vault_env, 5000, "adopt me", seed=11)
    retrieval = vault.start_retrieval(archive_id, tier=vault_env.fast_tier)
    inventory = vault.start_inventory(tier=vault_env.fast_tier)
    remounted = vault_env.reopen()
    try:
        again = remounted.vault(vault.name)
        jobs = {j.job_id: j for j in again.list_jobs()}
        assert jobs[retrieval].action is JobAction.ARCHIVE_RETRIEVAL and jobs[retrieval].archive_id == archive_id
        assert jobs[inventory].action is JobAction.INVENTORY_RETRIEVAL
        pending = {j.job_id for j in again.list_jobs(completed=False)}
        assert {retrieval, inventory} <= pending
        assert again.describe_job(retrieval).status is JobStatus.IN_PROGRESS
        vault_env.settle(retrieval)
        vault_env.settle(inventory)
        done = {j.job_id for j in again.list_jobs(status=JobStatus.SUCCEEDED)}
        assert {retrieval, inventory} <= done
        assert not {retrieval, inventory} & {j.job_id for j in again.list_jobs(completed=False)}
        assert again.read_job_output(retrieval, 0, 5000) == payload(5000, 11)
    finally:
        remounted.close()


@pytest.mark.needs("pages")
def test_list_jobs_in_pages(vault_env: VaultEnv):
    assert vault_env.caps.pages_listings
    vault = vault_env.vault
    _, archive_id = upload(vault_env, 100, "pages", seed=12)
    started = {vault.start_retrieval(archive_id, tier=Tier.BULK) for _ in range(5)}
    seen, marker = [], None
    for _ in range(10):
        page = vault.list_jobs_page(marker, 2)
        assert len(page.items) <= 2
        seen += [j.job_id for j in page.items]
        marker = page.marker
        if not marker:
            break
    assert set(seen) == started and len(seen) == 5


def test_delete_archive(vault_env: VaultEnv):
    vault = vault_env.vault
    _, keep = upload(vault_env, 2000, "keep", seed=13)
    _, gone = upload(vault_env, 3000, "gone", seed=14)
    vault.delete_archive(gone)
    with pytest.raises(errors.NotFound):
        vault.delete_archive(gone)
    job = vault_env.settle(vault.start_inventory(tier=vault_env.fast_tier))
    assert [a.archive_id for a in vault.read_inventory(job.job_id)] == [keep]


def test_missing_jobs_and_archives(vault_env: VaultEnv):
    vault = vault_env.vault
    with pytest.raises(errors.NotFound):
        vault.describe_job("NOSUCHJOB0123456789")
    with pytest.raises(errors.NotFound):
        vault.read_job_output("NOSUCHJOB0123456789", 0, 10)
    with pytest.raises(errors.NotFound):
        vault.delete_archive("NOSUCHARCHIVE0123456789")


@pytest.mark.needs("clock")
def test_finished_jobs_expire_after_a_day(vault_env: VaultEnv):
    assert vault_env.advance is not None
    vault = vault_env.vault
    _, archive_id = upload(vault_env, 100, "expiring", seed=15)
    job = vault_env.settle(vault.start_retrieval(archive_id, tier=vault_env.fast_tier))
    vault_env.advance(23 * 3600)
    assert vault.describe_job(job.job_id).succeeded
    vault_env.advance(2 * 3600)
    with pytest.raises(errors.NotFound):
        vault.describe_job(job.job_id)
    assert job.job_id not in [j.job_id for j in vault.list_jobs()]


@pytest.mark.needs("signatures")
def test_bad_credentials_are_access_denied(vault_env: VaultEnv):
    assert vault_env.checks_signatures
    provider = cas_vault.open_provider("bad", {**vault_env.options, "secret_key": "not-the-secret"})
    try:
        with pytest.raises(errors.AccessDenied) as caught:
            provider.list_vaults()
        assert "not-the-secret" not in str(caught.value) and "not-the-secret" not in repr(provider)
    finally:
        provider.close()


# ------------------------------------------------------------------------------------------------
# What only the CAS emulator can show: the wire itself


@pytest.fixture
def cas(cas_emulator: CasEmulator):
    provider = cas_vault.open_provider("cas-wire", cas_options(cas_emulator))
    name = vault_name("wire")
    provider.create_vault(name)
    try:
        yield cas_emulator, provider, provider.vault(name)
    finally:
        cas_emulator.faults.clear()
        provider.close()


def _signed_get(emulator: CasEmulator, path: str, host: str, params: dict | None = None) -> requests.Response:
    """A GET signed the way the vendor SDK signs it (Host without a port)."""
    auth = cas_auth.authorization(emulator.secret_id, emulator.secret_key, "GET", path, params or {},
                                   {"Host": host}, now=int(time.time()))
    return requests.get(f"{emulator.url}{path}", params=params, timeout=10,
                        headers={"Host": host, "Authorization": auth})


def test_cas_answers_carry_request_id_and_exact_json(cas):
    emulator, _, vault = cas
    ok = _signed_get(emulator, f"/{emulator.appid}/vaults/{vault.name}", "127.0.0.1")  # Host as the SDK sends it
    assert ok.status_code == 200 and ok.headers["Content-Type"] == "application/json"
    assert ok.headers["x-cas-requestid"]
    assert ok.json()["VaultQCS"] == emulator.qcs(vault.name)
    bare = requests.get(f"{emulator.url}/{emulator.appid}/vaults", timeout=10)
    assert bare.status_code == 400 and bare.headers["x-cas-requestid"]
    assert bare.headers["Content-Type"] == "application/json"
    assert set(bare.json()) == {"code", "message", "type"}
    assert bare.json()["code"] == "MissingAuthenticationTokenException"


def test_cas_signature_checks(cas):
    emulator, provider, vault = cas
    path = f"/{emulator.appid}/vaults/{vault.name}"
    wrong_host = requests.get(f"{emulator.url}{path}", timeout=10, headers={
        "Host": "127.0.0.1", "Authorization": cas_auth.authorization(
            emulator.secret_id, emulator.secret_key, "GET", path, {}, {"Host": "cas.example"},
            now=int(time.time()))})
    assert wrong_host.status_code == 400 and wrong_host.json()["code"] == "InvalidSignatureException"
    expired = cas_auth.authorization(emulator.secret_id, emulator.secret_key, "GET", path, {},
                                      {"Host": "127.0.0.1"}, now=int(time.time()) - 5000)
    answer = requests.get(f"{emulator.url}{path}", timeout=10, headers={"Host": "127.0.0.1", "Authorization": expired})
    assert answer.status_code == 403 and answer.json()["code"] == "ExpiredTokenException"
    params = {"limit": "5", "marker": "QCS:Vault/X"}  # values are signed lower-cased
    listed = _signed_get(emulator, f"/{emulator.appid}/vaults", "127.0.0.1", params)
    assert listed.status_code == 400 and listed.json()["code"] == "InvalidParameterValueException"  # bad marker
    # An x-cas-* header left out of the signature is refused.
    original = provider.dialect.sign

    def sign_without_description(method, host, wire_path, params, headers, payload_hash):
        headers = {k: v for k, v in headers.items() if k != "x-cas-archive-description"}
        return original(method, host, wire_path, params, headers, payload_hash)

    provider.dialect.sign = sign_without_description
    try:
        with pytest.raises(errors.AccessDenied):
            vault.upload_archive(b"data", 4, "described")
    finally:
        del provider.dialect.sign


@pytest.mark.parametrize("status,code,cls", [
    (400, "ThrottlingException", errors.Throttled),
    (500, "ServiceUnavailableException", errors.Throttled),
    (408, "RequestTimeoutException", errors.Transient),
])
def test_cas_transient_errors_are_retried(cas, status, code, cls):
    emulator, _, vault = cas
    fault = emulator.faults.add(Fault(op="describe_vault", status=status, code=code))
    assert vault.describe().name == vault.name
    assert ("describe_vault", "status") in emulator.faults.fired and fault._seen == 2
    emulator.faults.add(Fault(op="describe_vault", status=status, code=code, count=10))
    with pytest.raises(cls):
        vault.describe()


@pytest.mark.parametrize("action", ["reset", "truncate"])
def test_cas_broken_transfers_are_retried(cas, action):
    emulator, _, vault = cas
    data = payload(3 * MiB, seed=22)
    emulator.faults.add(Fault(op="upload_part", nth=2, action=action))
    upload_ = vault.initiate_multipart(MiB, "broken")
    parts = [vault.upload_part(upload_, s, data[s:s + MiB]) for s in range(0, len(data), MiB)]
    info = vault.complete_multipart(upload_, len(data), treehash.combine_hex([p.tree_hash for p in parts]))
    job_id = vault.start_retrieval(info.archive_id, tier=Tier.EXPEDITED)
    emulator.clock.advance(301)
    emulator.faults.add(Fault(op="get_job_output", action=action))
    assert vault.read_job_output(job_id, MiB, 2 * MiB) == data[MiB:2 * MiB]
    emulator.faults.add(Fault(op="get_job_output", action=action))  # the one piece of the download
    out = io.BytesIO()
    assert vault.download_job_output(job_id, out) == tree_hash(data) and out.getvalue() == data
    assert [f for f in emulator.faults.fired if f[1] == action] == [
        ("upload_part", action), ("get_job_output", action), ("get_job_output", action)]


def test_cas_malformed_answer_is_protocol_error(cas):
    emulator, _, vault = cas
    emulator.faults.add(Fault(op="describe_vault", action="garble"))
    with pytest.raises(errors.ProtocolError):
        vault.describe()


def test_cas_part_checksums_are_checked(cas):
    _, provider, vault = cas
    upload_ = vault.initiate_multipart(MiB, "checksums")
    data = payload(MiB, seed=20)
    good = hashlib.sha256(data).hexdigest()
    path = provider.path(vault.name, "multipart-uploads", upload_.upload_id)
    for sha, tree in ((good, "0" * 64), ("0" * 64, good)):
        with pytest.raises(TreeHashMismatch):
            provider.request("PUT", path, what="bad part", op="upload_part", body=Body(data=data),
                             headers={"Content-Range": f"bytes 0-{MiB - 1}/*", "x-cas-content-sha256": sha,
                                      "x-cas-sha256-tree-hash": tree})
    with pytest.raises(errors.InvalidArgument):  # Content-Range that does not match the body
        provider.request("PUT", path, what="short part", op="upload_part", body=Body(data=data),
                         headers={"Content-Range": "bytes 0-99/*", "x-cas-content-sha256": good,
                                  "x-cas-sha256-tree-hash": good})
    assert vault.list_parts(upload_) == []
    vault.abort_multipart(upload_)


def test_cas_output_tree_hash_header_only_when_aligned(cas):
    emulator, provider, vault = cas
    data = payload(3 * MiB, seed=21)
    info = vault.upload_archive(data, len(data), "headers")
    job_id = vault.start_retrieval(info.archive_id, tier=Tier.EXPEDITED)
    emulator.clock.advance(301)
    path = provider.path(vault.name, "jobs", job_id, "output")

    def get(range_: str | None):
        headers = {"Range": range_} if range_ else {}
        return provider.request("GET", path, what="output", op="job_output", headers=headers)

    whole = get(None)
    assert whole.status == 200 and whole.content == data
    assert whole.headers["x-cas-sha256-tree-hash"] == info.tree_hash
    assert whole.headers["Content-Type"] == "application/octet-stream"
    assert whole.headers["x-cas-archive-description"] == "headers"
    aligned = get(f"bytes={2 * MiB}-{3 * MiB - 1}")
    assert aligned.status == 206 and aligned.headers["Content-Range"] == f"bytes {2 * MiB}-{3 * MiB - 1}/{3 * MiB}"
    assert aligned.headers["x-cas-sha256-tree-hash"] == tree_hash(data[2 * MiB:])
    unaligned = get(f"bytes={MiB}-{3 * MiB - 1}")
    assert unaligned.status == 206 and "x-cas-sha256-tree-hash" not in unaligned.headers
    assert unaligned.content == data[MiB:]


def test_cas_failed_job_fault_and_expiry_hook(cas):
    emulator, _, vault = cas
    data = b"x" * 5000
    info = vault.upload_archive(data, len(data), "faults")
    emulator.fail_next_job("the tape is gone")
    failing = vault.start_retrieval(info.archive_id, tier=Tier.EXPEDITED)
    fine = vault.start_retrieval(info.archive_id, tier=Tier.EXPEDITED)
    emulator.clock.advance(301)
    job = vault.describe_job(failing)
    assert job.status is JobStatus.FAILED and job.status_message == "the tape is gone"
    assert vault.describe_job(fine).succeeded
    emulator.expire_job(fine)
    with pytest.raises(errors.NotFound):
        vault.describe_job(fine)


def test_cas_job_delay_runs_in_real_time(tmp_path):
    with CasEmulator(root=tmp_path / "cas", buckets=("quick",), job_delay=0.3) as emulator:
        provider = cas_vault.open_provider("quick", emulator.config())
        try:
            vault = provider.vault("quick")
            info = vault.upload_archive(b"hello", 5, "quick")
            job_id = vault.start_retrieval(info.archive_id, tier=Tier.BULK)
            assert vault.describe_job(job_id).status is JobStatus.IN_PROGRESS
            time.sleep(0.4)
            assert vault.describe_job(job_id).succeeded
            assert vault.read_job_output(job_id, 0, 5) == b"hello"
        finally:
            provider.close()


def test_cas_emulator_script_prints_config_and_stops_on_sigterm(tmp_path):
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "emulator.py"), "cas", "--bucket", "v1",
                             "--root", str(tmp_path / "root"), "--job-delay", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stdout is not None
        config = json.loads(proc.stdout.readline())
        assert config["type"] == "cas" and set(config) == {"type", "appid", "secret_id", "secret_key", "endpoint"}
        provider = cas_vault.open_provider("script", config)
        try:
            assert [v.name for v in provider.list_vaults()] == ["v1"]
            vault = provider.vault("v1")
            info = vault.upload_archive(b"abc", 3, "by hand")
            job_id = vault.start_retrieval(info.archive_id)
            assert vault.read_job_output(job_id, 0, 3) == b"abc"   # --job-delay 0: done at once
        finally:
            provider.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


# ------------------------------------------------------------------------------------------------
# Error mapping and parsing (pure functions)


@pytest.mark.parametrize("status,body,op,cls", [
    (404, {"code": "ResourceNotFoundException", "message": "no job"}, "describe_job", errors.NotFound),
    (400, {"__type": "VaultNotFound", "message": "Vault not found"}, "describe_vault", errors.NotFound),
    (403, {"code": "AccessDeniedException"}, "list_vaults", errors.AccessDenied),
    (400, {"code": "InvalidSignatureException"}, "list_vaults", errors.AccessDenied),
    (403, {"code": "ExpiredTokenException"}, "list_vaults", errors.AccessDenied),
    (400, {"code": "MissingAuthenticationTokenException"}, "list_vaults", errors.AccessDenied),
    (400, {"code": "ThrottlingException"}, "describe_job", errors.Throttled),
    (408, {"code": "RequestTimeoutException"}, "upload_part", errors.Transient),
    (500, {"code": "ServiceUnavailableException"}, "upload_part", errors.Throttled),
    (400, {"code": "InvalidParameterValueException", "message": "The job is not currently available for "
           "download"}, "job_output", errors.ArchiveNotReady),
    (400, {"code": "InvalidParameterValueException", "message": "Checksum mismatch"}, "upload_part",
     TreeHashMismatch),
    (400, {"code": "InvalidParameterValueException", "message": "bad"}, "initiate_job", errors.InvalidArgument),
    (400, {"code": "LimitExceededException"}, "create_vault", errors.NotPermitted),
    (500, None, "describe_job", errors.Transient),
    (502, None, "list_jobs", errors.Transient),
])
def test_error_mapping(status, body, op, cls):
    raw = json.dumps(body).encode() if body else b"<html>Internal Server Error</html>"
    error = error_from_answer(cas_vault.CasDialect("id", "secret"), status, {}, raw, what="x", op=op)
    assert type(error) is cls


def test_moto_quirks_are_mapped_only_in_the_moto_profile():
    from storefs.wire.auth.sigv4 import SigV4Signer
    signer = SigV4Signer("a", "b", "us-east-1", "glacier")
    moto, aws = GlacierDialect(signer, profile="moto"), GlacierDialect(signer)
    html = b"<!doctype html><title>500 Internal Server Error</title>"
    assert type(error_from_answer(moto, 500, {}, html, what="x", op="describe_job")) is errors.NotFound
    assert type(error_from_answer(aws, 500, {}, html, what="x", op="describe_job")) is errors.Transient
    assert type(error_from_answer(moto, 404, {}, b"404 Not Found", what="x", op="job_output")) is \
        errors.ArchiveNotReady
    assert type(error_from_answer(aws, 404, {}, b"404 Not Found", what="x", op="job_output")) is errors.NotFound
    headers = {"x-amzn-errortype": "VaultNotFound"}
    assert type(error_from_answer(moto, 400, headers, b"", what="x", op="describe_vault")) is errors.NotFound


@pytest.mark.parametrize("doc", [
    {}, {"JobId": "j"}, {"JobId": "j", "StatusCode": "Weird"},
    {"JobId": "j", "StatusCode": "Succeeded", "CreationDate": "yesterday"},
    {"JobId": "j", "StatusCode": "Succeeded", "RetrievalByteRange": "5-1"},
    {"JobId": "j", "StatusCode": "Succeeded", "ArchiveSizeInBytes": "lots"},
    {"JobId": 7, "StatusCode": "Succeeded"},
])
def test_malformed_jobs_are_protocol_errors(doc):
    with pytest.raises(errors.ProtocolError):
        parse_job(doc)


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b"{}", b'{"ArchiveList": [1]}', b'{"ArchiveList": [{"ArchiveId": "a"}]}',
    b'{"ArchiveList": [{"ArchiveId": "a", "Size": 1, "CreationDate": "no"}]}',
])
def test_malformed_inventories_are_protocol_errors(body):
    with pytest.raises(errors.ProtocolError):
        parse_inventory(body, "inventory")


def test_inventory_parsing_keeps_every_field():
    body = json.dumps({"VaultARN": "arn", "InventoryDate": "2024-01-02T03:04:05Z", "ArchiveList": [
        {"ArchiveId": "a1", "ArchiveDescription": "name", "CreationDate": "2024-01-01T00:00:00.500Z",
         "Size": 12, "SHA256TreeHash": "AB" * 32}]}).encode()
    (entry,) = parse_inventory(body, "inventory")
    assert (entry.archive_id, entry.description, entry.size, entry.tree_hash) == ("a1", "name", 12, "ab" * 32)
    assert entry.creation_date == 1704067200.5


def test_options_are_checked():
    with pytest.raises(errors.ConfigError):
        cas_vault.open_provider("x", {"appid": "12", "secret_id": "i", "secret_key": "k"})   # no region/endpoint
    with pytest.raises(errors.ConfigError):
        cas_vault.open_provider("x", {"appid": "abc", "secret_id": "i", "secret_key": "k", "region": "ap-chengdu"})
    from storefs.vaults import glacier
    with pytest.raises(errors.ConfigError):
        glacier.open_provider("x", {"access_key": "a", "secret_key": "s", "region": "r", "profile": "minio"})
    provider = glacier.open_provider("x", {"access_key": "a", "secret_key": "sekrit", "region": "eu-west-1"})
    try:
        assert provider.netloc == "glacier.eu-west-1.amazonaws.com" and provider.account == "-"
        assert provider.capabilities.supports_multipart and "sekrit" not in repr(provider.dialect)
    finally:
        provider.close()


def test_glacier_signature_matches_botocore():
    """The Glacier dialect signs exactly as AWS's own botocore does (non-S3 path canonicalisation,
    x-amz-glacier-version and the payload hash signed)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from storefs.wire.auth.sigv4 import SigV4Signer
    body = b'{"Type": "archive-retrieval", "ArchiveId": "abc-_DEF", "Tier": "Bulk"}'
    sha = hashlib.sha256(body).hexdigest()
    path = "/-/vaults/my.vault_1/jobs"
    headers = {"Host": "glacier.eu-west-1.amazonaws.com", "x-amz-glacier-version": "2012-06-01",
               "Content-Length": str(len(body)), "x-amz-date": "20240102T030405Z", "x-amz-content-sha256": sha}
    dialect = GlacierDialect(SigV4Signer("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                                         "eu-west-1", "glacier"))
    ours = dialect.sign("POST", headers["Host"], path, [("limit", "5")], headers, sha)["Authorization"]
    request = AWSRequest("POST", f"https://{headers['Host']}{path}?limit=5", headers=headers, data=body)
    request.context["timestamp"] = "20240102T030405Z"
    auth = SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), "glacier",
                     "eu-west-1")
    canonical = auth.canonical_request(request)
    theirs = auth.signature(auth.string_to_sign(request, canonical), request)
    assert ours.endswith(f"Signature={theirs}")
    assert "x-amz-glacier-version" in ours.split("SignedHeaders=")[1]
