"""Ranged retrievals on the wire (issue #13 item 1), below the vault contract:

- the CAS emulator refuses a RetrievalByteRange that is not MiB-aligned as the service does (400
  InvalidParameterValueException), even when the client's own check is bypassed; a ranged job's
  SHA256TreeHash is null while it runs and for a range that is not tree-hash aligned; its output
  carries x-cas-sha256-tree-hash for output ranges that are tree nodes, so downloads are verified;
- the Glacier dialect (profile aws) sends RetrievalByteRange inclusive ("start-end") in the
  initiate-job JSON and parses it back from DescribeJob: checked against a loopback server that
  records the request (no Glacier account here: what AWS does with it is the documentation's word);
- moto's Glacier ignores RetrievalByteRange (moto/glacier/responses.py passes only Type, Tier and
  ArchiveId to initiate_job; its job JSON has RetrievalByteRange null and the output is always the
  whole archive): with `profile = moto` storefs refuses ranges (NotSupported) instead of trusting it.
"""
from __future__ import annotations

import errno
import http.server
import io
import json
import threading
from collections.abc import Iterator

import pytest

from storefs import errors
from storefs.vaults import cas as cas_vault
from storefs.vaults import glacier
from storefs.vaults.base import Tier
from storefs.vaults.treehash import MiB, tree_hash
from tests.emulators.cas import CasEmulator


@pytest.fixture(scope="module")
def emulator() -> Iterator[CasEmulator]:
    with CasEmulator() as made:
        yield made


@pytest.fixture
def cas(emulator):
    provider = cas_vault.open_provider("cas-wire", {**emulator.config(), "retries": "1"})
    name = f"ranged-{threading.get_ident()}-{id(provider)}"
    provider.create_vault(name)
    yield provider.vault(name), emulator
    provider.close()


def _upload(vault, size: int, seed: int) -> tuple[bytes, str]:
    data = bytes((i * seed + i // 7) % 251 for i in range(size))
    return data, vault.upload_archive(data, size, f"blob-{seed}").archive_id


def test_emulator_refuses_unaligned_ranges_on_the_wire(cas):
    vault, _ = cas
    _, archive_id = _upload(vault, 3 * MiB + 9, 3)
    for bad in ("1000-2097151", "0-1048580", f"0-{4 * MiB - 1}"):   # start, end, beyond the archive
        with pytest.raises(errors.InvalidArgument) as caught:
            vault._initiate({"Type": "archive-retrieval", "ArchiveId": archive_id, "RetrievalByteRange": bad},
                            "initiate ranged retrieval")
        assert errors.errno_for(caught.value) == errno.EINVAL
    job_id = vault._initiate({"Type": "archive-retrieval", "ArchiveId": archive_id,
                              "RetrievalByteRange": f"{2 * MiB}-{3 * MiB + 8}"}, "initiate tail retrieval")
    assert vault.describe_job(job_id).byte_range == (2 * MiB, 3 * MiB + 9)


def test_ranged_output_tree_hashes(cas):
    vault, emulator = cas
    data, archive_id = _upload(vault, 5 * MiB + 3, 5)
    aligned = vault.start_retrieval(archive_id, byte_range=(4 * MiB, len(data)))
    unaligned = vault.start_retrieval(archive_id, byte_range=(MiB, 4 * MiB))
    assert vault.describe_job(aligned).sha256_tree_hash is None        # null while InProgress
    emulator.clock.advance(6 * 3600)
    job = vault.describe_job(aligned)
    assert job.sha256_tree_hash == tree_hash(data[4 * MiB:])
    job = vault.describe_job(unaligned)
    assert job.sha256_tree_hash is None and job.output_size == 3 * MiB  # not a node of the archive's tree
    # Its output's 1 MiB and 2 MiB nodes still carry the server's hash: each piece is verified.
    piece, node = vault.output.read(unaligned, 0, 2 * MiB)
    assert piece == data[MiB:3 * MiB] and node is not None and node.hex() == tree_hash(piece)
    piece, node = vault.output.read(unaligned, 2 * MiB, 3 * MiB)
    assert piece == data[3 * MiB:4 * MiB] and node is not None
    _, node = vault.output.read(unaligned, 100, 2 * MiB)                 # not a node: no hash to check
    assert node is None
    out = io.BytesIO()
    vault.download_job_output(unaligned, out)
    assert out.getvalue() == data[MiB:4 * MiB]


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers InitiateJob with 202 and a job id, DescribeJob with a ranged job; keeps each request."""

    seen: list[tuple[str, str, dict, bytes]] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append(("POST", self.path, dict(self.headers), body))
        self._answer(202, b"", {"x-amz-job-id": "JOB1", "Location": "/-/vaults/v/jobs/JOB1"})

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(("GET", self.path, dict(self.headers), b""))
        doc = {"Action": "ArchiveRetrieval", "JobId": "JOB1", "ArchiveId": "A1", "StatusCode": "InProgress",
               "Completed": False, "CreationDate": "2026-12-07T00:00:00.000Z", "ArchiveSizeInBytes": 5 * MiB,
               "RetrievalByteRange": f"{MiB}-{3 * MiB - 1}", "SHA256TreeHash": None, "Tier": "Bulk"}
        self._answer(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_glacier_sends_retrieval_byte_range(recorder):
    provider = glacier.open_provider("g", {"endpoint": recorder, "access_key": "AKIDEXAMPLE",
                                           "secret_key": "secret", "region": "eu-west-1", "retries": "1"})
    try:
        vault = provider.vault("v")
        assert vault.start_retrieval("A1", tier=Tier.BULK, byte_range=(MiB, 3 * MiB)) == "JOB1"
        method, path, headers, body = _Recorder.seen[-1]
        assert method == "POST" and path == "/-/vaults/v/jobs"
        assert json.loads(body) == {"Type": "archive-retrieval", "ArchiveId": "A1", "Tier": "Bulk",
                                    "RetrievalByteRange": f"{MiB}-{3 * MiB - 1}"}
        lowered = {k.lower(): v for k, v in headers.items()}
        assert lowered["x-amz-glacier-version"] == "2012-06-01"
        assert "/eu-west-1/glacier/aws4_request" in lowered["authorization"]
        job = vault.describe_job("JOB1")
        assert job.byte_range == (MiB, 3 * MiB) and job.output_size == 2 * MiB
        sent = len(_Recorder.seen)
        with pytest.raises(errors.InvalidArgument):     # refused before anything is sent
            vault.start_retrieval("A1", byte_range=(1000, 3 * MiB))
        assert len(_Recorder.seen) == sent
    finally:
        provider.close()


def test_moto_profile_refuses_ranges(recorder):
    provider = glacier.open_provider("m", {"endpoint": recorder, "access_key": "AKIDEXAMPLE",
                                           "secret_key": "secret", "region": "us-east-1", "profile": "moto"})
    try:
        with pytest.raises(errors.NotSupported):
            provider.vault("v").start_retrieval("A1", byte_range=(0, MiB))
        assert _Recorder.seen == []
    finally:
        provider.close()
