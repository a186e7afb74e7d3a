"""The jobs of the local vault (this package): a simulated clock, delays per tier, job records, output.

A job is InProgress until `clock.now() >= completes_at`, Succeeded (or Failed, when a test failed
it) after that, and gone 24 h later (`output_ttl`). A retrieval's output is a hard link of the
archive (its leaf hashes beside it); an inventory lists the archives that existed when it completed
and is written the first time anyone looks at the finished job. Time comes from an injectable clock
(tests pass one they move by hand).

`LocalJobs` is the job half of `LocalVault`, mixed into it: it reads the vault's archives through
the archive half (`archive_record`, `archives`, `_archive_paths`) and the provider's settings.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from collections.abc import Callable
from typing import BinaryIO, Protocol

from ...errors import ArchiveNotReady, InvalidArgument, NotFound, ProtocolError, StoreError
from .. import treehash
from ..base import (ArchiveInfo, JobAction, JobFailed, JobInfo, JobStatus, MiB, Page, Tier, TreeHashMismatch,
                   VaultCapabilities, check_description, check_range, copy_output_in_pieces, iso8601,
                   short_id)
from .files import COPY_CHUNK, LEAF, check_id, link_or_copy, new_id, page, read_json, write_json
from ..rest.parse import parse_inventory


class Clock(Protocol):
    def now(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class JobDelays(Protocol):
    def for_job(self, action: JobAction, tier: Tier | None) -> float:
        """Seconds from the start of a job to its completion (local.Delays)."""


class JobSettings(Protocol):
    """What the jobs of a local vault take from its provider (LocalVaultProvider)."""

    clock: Clock
    delays: JobDelays
    output_ttl: float                       # seconds a finished job is kept
    resource_field: str                     # the inventory's field naming its vault (VaultARN / VaultQCS)
    resource_name: Callable[[str], str]     # vault name -> the value of that field


@dataclasses.dataclass
class OutputHandle:
    """A finished job's output: `size` bytes of `path` from `base`, with its leaf hashes."""

    path: Path
    base: int
    size: int
    content_type: str
    leaves: bytes | None     # 32 raw bytes per MiB of output; None when unknown
    corrupt: bool = False    # test fault: every read has its first byte flipped
    archive_description: str | None = None

    def range_tree_hash(self, start: int, end: int) -> str | None:
        """The tree hash of output bytes [start, end) if that range is tree-aligned, else None."""
        if self.leaves is None or not treehash.is_tree_aligned(start, end, self.size):
            return None
        first, last = start // MiB, -(-end // MiB)
        nodes = [self.leaves[i * LEAF:(i + 1) * LEAF] for i in range(first, last)]
        return treehash.combine_hex(nodes)

    def whole_tree_hash(self) -> str | None:
        if self.size == 0:
            return treehash.EMPTY_TREE_HASH
        return self.range_tree_hash(0, self.size)

    def iter_range(self, start: int, end: int, chunk: int = COPY_CHUNK) -> Iterator[bytes]:
        """The bytes of [start, end), as served (the corrupt fault applied)."""
        first = True
        with open(self.path, "rb") as f:
            f.seek(self.base + start)
            remaining = end - start
            while remaining > 0:
                data = f.read(min(chunk, remaining))
                if not data:
                    raise ProtocolError("job output file is shorter than its record")
                remaining -= len(data)
                if first and self.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                first = False
                yield data

    def read(self, start: int, end: int) -> bytes:
        return b"".join(self.iter_range(start, end, 8 * MiB))


class LocalJobs:
    """Retrieval and inventory jobs of one local vault (the half of LocalVault that runs on the clock)."""

    provider: JobSettings
    name: str
    base: Path
    capabilities: VaultCapabilities
    _lock: threading.RLock

    @property
    def clock(self) -> Clock:
        return self.provider.clock

    def _require(self) -> None:
        if not (self.base / ".vault.json").is_file():
            raise NotFound(f"vault {self.name!r} does not exist")

    # What the archive half (LocalVault) provides.
    def archive_record(self, archive_id: str) -> dict:
        raise NotImplementedError

    def _archive_paths(self, archive_id: str) -> tuple[Path, Path, Path]:
        raise NotImplementedError

    def archives(self, as_of: float | None = None) -> list[ArchiveInfo]:
        raise NotImplementedError

    def _job_paths(self, job_id: str) -> tuple[Path, Path, Path]:
        check_id(job_id, "job")
        folder = self.base / "jobs"
        return folder / f"{job_id}.json", folder / f"{job_id}.out", folder / f"{job_id}.leaves"

    def initiate_job(self, action: JobAction, *, archive_id: str | None = None, tier: Tier | None = None,
                     byte_range: tuple[int, int] | None = None, description: str = "",
                     output_format: str = "JSON", fail_message: str | None = None) -> str:
        """Start a job; `fail_message` (a test fault) makes it end Failed with that message."""
        self._require()
        check_description(description, self.capabilities.max_description_bytes)
        now = self.clock.now()
        job_id = new_id(69)  # 92 characters, like Glacier's
        meta_path, out_path, leaves_path = self._job_paths(job_id)
        record = {"job_id": job_id, "action": action.value, "tier": (tier or Tier.STANDARD).value,
                  "description": description, "created": now,
                  "completes_at": now + self.provider.delays.for_job(action, tier),
                  "fail_message": fail_message, "corrupt": False, "output_ready": False}
        with self._lock:
            if action is JobAction.ARCHIVE_RETRIEVAL:
                archive = self.archive_record(check_id(archive_id or "", "archive"))
                size = int(archive["size"])
                start, end = byte_range if byte_range is not None else (0, size)
                if not treehash.is_mib_aligned_range(start, end, size):
                    raise InvalidArgument(f"RetrievalByteRange {start}-{end - 1} is not megabyte-aligned "
                                          f"within the archive of {size} bytes")
                data_path, _, archive_leaves = self._archive_paths(archive_id or "")
                link_or_copy(data_path, out_path)
                first, last = start // MiB, -(-end // MiB)
                leaves = archive_leaves.read_bytes()[first * LEAF:last * LEAF]
                leaves_path.write_bytes(leaves)
                # The job's SHA256TreeHash exists only for a tree-aligned range (the whole archive is).
                tree = None
                if treehash.is_tree_aligned(start, end, size):
                    tree = treehash.combine_hex([leaves[i:i + LEAF] for i in range(0, len(leaves), LEAF)])
                record.update({
                    "archive_id": archive_id, "range": [start, end], "archive_size": size,
                    "archive_tree_hash": archive["tree_hash"], "archive_description": archive["description"],
                    "tree_hash": tree, "output_size": end - start, "output_ready": True})
            elif action is JobAction.INVENTORY_RETRIEVAL:
                if output_format not in ("JSON", "CSV"):
                    raise InvalidArgument(f"inventory format {output_format!r}: JSON or CSV")
                record["format"] = output_format
            else:
                raise InvalidArgument(f"job type {action.value} is not supported")
            write_json(meta_path, record)
        return job_id

    def start_inventory(self, *, tier: Tier | None = None, description: str = "") -> str:
        return self.initiate_job(JobAction.INVENTORY_RETRIEVAL, tier=tier, description=description)

    def start_retrieval(self, archive_id: str, *, tier: Tier = Tier.STANDARD,
                        byte_range: tuple[int, int] | None = None, description: str = "") -> str:
        if byte_range is not None:
            check_range(*byte_range)
        return self.initiate_job(JobAction.ARCHIVE_RETRIEVAL, archive_id=archive_id, tier=tier,
                                 byte_range=byte_range, description=description)

    def job_record(self, job_id: str) -> dict:
        """The live record: expired jobs are removed, finished inventories written on first sight."""
        meta_path, out_path, leaves_path = self._job_paths(job_id)
        with self._lock:
            self._require()
            record = read_json(meta_path, f"job {short_id(job_id)} in vault {self.name!r}")
            now = self.clock.now()
            if now >= float(record["completes_at"]) + self.provider.output_ttl:
                for path in (meta_path, out_path, leaves_path):
                    path.unlink(missing_ok=True)
                raise NotFound(f"job {short_id(job_id)} has expired")
            if (now >= float(record["completes_at"]) and not record["output_ready"]
                    and not record.get("fail_message")):
                self._write_inventory(record, out_path, leaves_path)
                write_json(meta_path, record)
            return record

    def _write_inventory(self, record: dict, out_path: Path, leaves_path: Path) -> None:
        """Materialise an inventory as of its completion time (called under the lock)."""
        completed = float(record["completes_at"])
        archives = [a for a in self.archives(as_of=completed) if a.creation_date <= completed]
        if record.get("format") == "CSV":
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(["ArchiveId", "ArchiveDescription", "CreationDate", "Size", "SHA256TreeHash"])
            for a in archives:
                writer.writerow([a.archive_id, a.description, iso8601(a.creation_date), a.size, a.tree_hash])
            body = buf.getvalue().encode("utf-8")
        else:
            body = json.dumps({
                self.provider.resource_field: self.provider.resource_name(self.name),
                "InventoryDate": iso8601(completed),
                "ArchiveList": [{"ArchiveId": a.archive_id, "ArchiveDescription": a.description,
                                 "CreationDate": iso8601(a.creation_date), "Size": a.size,
                                 "SHA256TreeHash": a.tree_hash} for a in archives],
            }).encode("utf-8")
        out_path.write_bytes(body)
        leaves = treehash.leaf_hashes(body)
        leaves_path.write_bytes(b"".join(leaves))
        record.update({"output_ready": True, "output_size": len(body),
                       "tree_hash": treehash.tree_hash(body)})
        vault_meta = self.base / ".vault.json"
        vault_record = read_json(vault_meta, "vault")
        vault_record["last_inventory"] = completed
        write_json(vault_meta, vault_record)

    def _job_info(self, record: dict) -> JobInfo:
        now = self.clock.now()
        done = now >= float(record["completes_at"])
        action = JobAction(record["action"])
        if not done:
            status, message = JobStatus.IN_PROGRESS, None
        elif record.get("fail_message"):
            status, message = JobStatus.FAILED, record["fail_message"]
        else:
            status, message = JobStatus.SUCCEEDED, "Succeeded"
        byte_range = tuple(record["range"]) if record.get("range") else None
        partial = byte_range is not None and byte_range != (0, record.get("archive_size"))
        # Glacier leaves SHA256TreeHash null while a partial-range job is InProgress.
        tree = record.get("tree_hash") if (done or not partial) else None
        if status is JobStatus.FAILED:
            tree = None
        return JobInfo(
            job_id=record["job_id"], action=action, status=status, status_message=message,
            archive_id=record.get("archive_id"), tier=Tier.parse(record.get("tier")),
            byte_range=byte_range,  # type: ignore[arg-type]
            creation_date=float(record["created"]),
            completion_date=float(record["completes_at"]) if done else None,
            sha256_tree_hash=tree, archive_size=record.get("archive_size"),
            inventory_size=record.get("output_size") if (done and action is JobAction.INVENTORY_RETRIEVAL
                                                         and status is JobStatus.SUCCEEDED) else None,
            description=record.get("description") or None,
            archive_tree_hash=record.get("archive_tree_hash"))

    def describe_job(self, job_id: str) -> JobInfo:
        return self._job_info(self.job_record(job_id))

    def list_jobs_page(self, marker: str | None = None, limit: int = 1000, *, completed: bool | None = None,
                       status: JobStatus | None = None) -> Page:
        """Jobs oldest first; `marker` is the id of the first job of the page (opaque to clients)."""
        self._require()
        jobs = []
        for meta in (self.base / "jobs").glob("*.json"):
            try:
                jobs.append(self._job_info(self.job_record(meta.stem)))
            except StoreError:
                continue  # expired or deleted while we looked
        jobs = [j for j in jobs if (completed is None or j.completed == completed)
                and (status is None or j.status is status)]
        jobs.sort(key=lambda j: (j.creation_date, j.job_id))
        return page(jobs, marker, limit, lambda j: j.job_id)

    def list_jobs(self, *, completed: bool | None = None, status: JobStatus | None = None) -> list[JobInfo]:
        return self.list_jobs_page(None, 1 << 30, completed=completed, status=status).items

    def open_output(self, job_id: str) -> OutputHandle:
        """What a GET of the job's output serves. ArchiveNotReady while InProgress, JobFailed after a
        failure, NotFound for unknown or expired jobs."""
        record = self.job_record(job_id)
        info = self._job_info(record)
        if info.status is JobStatus.IN_PROGRESS:
            raise ArchiveNotReady(f"the job is not currently available for download: job {short_id(job_id)} "
                                  f"is still InProgress")
        if info.status is JobStatus.FAILED:
            raise JobFailed(f"job {short_id(job_id)} failed: {info.status_message}")
        _, out_path, leaves_path = self._job_paths(job_id)
        inventory = info.action is JobAction.INVENTORY_RETRIEVAL
        content_type = ("text/csv" if record.get("format") == "CSV" else "application/json") if inventory \
            else "application/octet-stream"
        base = 0 if inventory else int(record["range"][0])
        try:
            leaves = leaves_path.read_bytes()
        except FileNotFoundError:
            leaves = None
        return OutputHandle(out_path, base, int(record["output_size"]), content_type, leaves,
                            bool(record.get("corrupt")), record.get("archive_description"))

    def read_job_output(self, job_id: str, start: int, end: int) -> bytes:
        handle = self.open_output(job_id)
        end = min(end, handle.size)
        if start >= end:
            return b""
        data = handle.read(start, end)
        expected = handle.range_tree_hash(start, end)
        if expected is not None and treehash.tree_hash(data) != expected:
            raise TreeHashMismatch(f"output of job {short_id(job_id)} bytes {start}-{end - 1}: tree hash "
                                   f"differs from the vault's {expected}")
        return data

    def download_job_output(self, job_id: str, dest: BinaryIO, *, job: JobInfo | None = None) -> str:
        job = job or self.describe_job(job_id)
        if not job.succeeded:
            self.open_output(job_id)  # raises the right error
        return copy_output_in_pieces(self, job, dest, 32 * MiB)

    def read_inventory(self, job_id: str) -> list[ArchiveInfo]:
        handle = self.open_output(job_id)
        if handle.content_type != "application/json":
            raise InvalidArgument(f"job {short_id(job_id)} is not a JSON inventory")
        return parse_inventory(self.read_job_output(job_id, 0, handle.size), "local inventory")

    # -- test faults -----------------------------------------------------------------------------

    def fail_job(self, job_id: str, message: str = "Job failed (injected)") -> None:
        """Make a job end Failed with `message` (at once if it has already completed)."""
        meta_path, _, _ = self._job_paths(job_id)
        with self._lock:
            record = read_json(meta_path, f"job {short_id(job_id)}")
            record["fail_message"] = message
            write_json(meta_path, record)

    def expire_job(self, job_id: str) -> None:
        """Forget a job as the services do 24 h after completion."""
        meta_path, out_path, leaves_path = self._job_paths(job_id)
        with self._lock:
            for path in (meta_path, out_path, leaves_path):
                path.unlink(missing_ok=True)

    def corrupt_output(self, job_id: str, corrupt: bool = True) -> None:
        """Serve the job's output with a flipped byte at the start of every read."""
        meta_path, _, _ = self._job_paths(job_id)
        with self._lock:
            record = read_json(meta_path, f"job {short_id(job_id)}")
            record["corrupt"] = corrupt
            write_json(meta_path, record)
