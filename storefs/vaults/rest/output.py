"""Reading a job's output from a REST vault, verified against the server's tree hashes.

Output is downloaded in tree-aligned pieces (1 MiB x 2^n) so that every piece is checked against the
`x-*-sha256-tree-hash` the server returns for it, and the pieces combine into the job's own tree
hash. A server that ignores Range (moto) is read as one stream instead, hashed as it arrives. The
range rules themselves (206, 200 cut to the range, short bodies) are the wire layer's.
"""
from __future__ import annotations

import collections
import concurrent.futures
import io
import itertools
import logging
from typing import BinaryIO

from ...errors import StoreError
from ...wire.answer import AnswerHeaders, StreamedAnswer
from ...wire.client import Request
from ...wire.ranges import RangeRead, take_range
from ...wire.retry import NO_RETRY
from .. import treehash
from ..base import (
    ArchiveInfo,
    JobAction,
    JobInfo,
    JobStatus,
    MiB,
    TreeHashMismatch,
    VaultCapabilities,
    check_job_tree_hash,
    check_range,
    short_id,
)
from .config import Tuning
from .parse import parse_inventory
from .wire import RestWire

log = logging.getLogger(__name__)
STREAM_CHUNK = 1 * MiB


class JobOutput:
    """The output reads of one vault."""

    def __init__(self, wire: RestWire, vault: str, capabilities: VaultCapabilities, tuning: Tuning) -> None:
        self.wire = wire
        self.vault = vault
        self.capabilities = capabilities
        self.tuning = tuning

    def _request_of(self, job_id: str, what: str) -> Request:
        return self.wire.request("GET", self.wire.path(self.vault, "jobs", job_id, "output"),
                                 what=f"vault {self.vault}: {what}")

    def read(self, job_id: str, start: int, end: int) -> tuple[bytes, bytes | None]:
        """(bytes [start, end) of the output, their raw tree hash if it was computed to verify them)."""
        check_range(start, end)
        try:
            return self._read_once(job_id, start, end)
        except TreeHashMismatch as exc:
            # A transfer corrupted on the way is worth one more try; a corrupt output is not.
            log.warning("vault %s: %s; fetching once more", self.vault, exc)
            return self._read_once(job_id, start, end)

    def _read_once(self, job_id: str, start: int, end: int) -> tuple[bytes, bytes | None]:
        what = f"output of job {short_id(job_id)} bytes {start}-{end - 1}"
        request = self._request_of(job_id, what)
        if self.capabilities.supports_ranges:
            got = self.wire.read_range(request, start, end)
        else:   # no Range sent: the whole output comes, and the wire layer's rule cuts it
            got = self.wire.stream(request, "job_output", lambda answer: take_range(answer, start, end, what))
        if got.status == 416:
            raise StoreError(f"vault {self.vault}: {what}: HTTP 416")
        data = got.data
        if got.status == 206:
            return data, self._verify_piece(got, data, start, start + len(data), what)
        # 200: the whole output (a server that ignores Range, or a range that covers it all).
        if start == 0 and got.total == len(data):
            return data, self._verify_piece(got, data, 0, len(data), what)
        return data, None

    def _verify_piece(self, got: RangeRead, data: bytes, start: int, end: int, what: str) -> bytes | None:
        """Check data against the server's x-*-sha256-tree-hash, if it sent one we can check.
        Returns the raw tree hash it computed (None if it had nothing to check against)."""
        theirs = got.headers.get(self.wire.dialect.h("sha256-tree-hash"))
        if not theirs or not self.capabilities.tree_hash_trustworthy:
            return None
        if got.total is not None and not treehash.is_tree_aligned(start, end, got.total):
            return None  # a hash for a range that is not a tree node cannot be checked piecewise
        ours = treehash.tree_hash_raw(data)
        if ours.hex() != theirs.strip().lower():
            raise TreeHashMismatch(f"vault {self.vault}: {what}: tree hash {ours.hex()} differs from the "
                                   f"server's {theirs.strip()[:64]}")
        return ours

    def download(self, job: JobInfo, dest: BinaryIO) -> str:
        """The whole output into `dest`, verified; its tree hash."""
        size = job.output_size
        if self.capabilities.supports_ranges and size is not None:
            return self._download_in_pieces(job, dest, size)
        return self.download_stream(job, dest)

    def _download_in_pieces(self, job: JobInfo, dest: BinaryIO, size: int) -> str:
        """Aligned pieces (each one a tree node, verified), up to `download_concurrency` in flight,
        written in order; memory: about concurrency x piece."""
        piece = self.tuning.download_piece
        starts = iter(range(0, size, piece))
        nodes: list[bytes] = []

        def fetch(start: int) -> tuple[bytes, bytes]:
            data, node = self.read(job.job_id, start, min(size, start + piece))
            return data, node if node is not None else treehash.tree_hash_raw(data)

        concurrency = self.tuning.download_concurrency
        with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency,
                                                   thread_name_prefix="vault-output") as pool:
            pending: collections.deque = collections.deque(
                pool.submit(fetch, s) for s in itertools.islice(starts, concurrency))
            try:
                while pending:
                    data, node = pending.popleft().result()
                    nxt = next(starts, None)
                    if nxt is not None:
                        pending.append(pool.submit(fetch, nxt))
                    dest.write(data)
                    nodes.append(node)
            finally:
                for future in pending:
                    future.cancel()
        got = treehash.combine_hex(nodes) if nodes else treehash.EMPTY_TREE_HASH
        check_job_tree_hash(job, got, self.capabilities)
        return got

    def download_stream(self, job: JobInfo, dest: BinaryIO) -> str:
        """One GET of the whole output, hashed as it streams (servers without ranges, unknown sizes).
        Retried only where `dest` can be rewound to start again."""
        what = f"output of job {short_id(job.job_id)}"
        restart = dest.tell() if dest.seekable() else None

        def read(answer: StreamedAnswer) -> str:
            if restart is not None:
                dest.seek(restart)
                dest.truncate()
            hasher = treehash.TreeHasher()
            for chunk in answer.chunks(STREAM_CHUNK):
                hasher.update(chunk)
                dest.write(chunk)
            got = hasher.hexdigest()
            self._check_whole(answer.headers, got, what)
            return got

        got = self.wire.stream(self._request_of(job.job_id, what), "job_output", read,
                               policy=None if restart is not None else NO_RETRY)
        check_job_tree_hash(job, got, self.capabilities)
        return got

    def inventory(self, job_id: str) -> list[ArchiveInfo]:
        """The archives an inventory job's (JSON) output lists."""
        buf = io.BytesIO()
        self.download_stream(JobInfo(job_id, JobAction.INVENTORY_RETRIEVAL, JobStatus.SUCCEEDED), buf)
        return parse_inventory(buf.getvalue(), f"vault {self.vault}: inventory {short_id(job_id)}")

    def _check_whole(self, headers: AnswerHeaders, got: str, what: str) -> None:
        expected = headers.get(self.wire.dialect.h("sha256-tree-hash"))
        if expected and self.capabilities.tree_hash_trustworthy and expected.strip().lower() != got:
            raise TreeHashMismatch(f"vault {self.vault}: {what}: tree hash {got} differs from the "
                                   f"server's {expected.strip()[:64]}")
