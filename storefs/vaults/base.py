"""The archive-vault contract: what every vault backend (cas, glacier, local) implements.

A vault holds immutable archives named only by a server-chosen id (plus a free-text description).
Reading one is asynchronous: start a retrieval *job*, wait hours until it has Succeeded, then download
its output within 24 h. Listing is asynchronous too: an *inventory* job. Providers speak the wire and
nothing else; job bookkeeping, caches and the tree mounted over a vault live above them.

Conventions of this API:
- Byte ranges are half-open [start, end), like `ObjectStore.read_range`; the wire's inclusive
  `"start-end"` strings are converted at the protocol boundary.
- Times are epoch seconds (float), tree hashes lowercase hex (see `treehash.py`).
- Capabilities are data: what a server cannot do (moto's Glacier has no multipart and no ranges,
  and its "tree hashes" are plain SHA-256) is said in `VaultCapabilities`, never by isinstance checks.
- Errors are `storefs.errors` classes, plus `TreeHashMismatch` (EIO) for data that fails its check.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import enum
import errno
import io
import threading
from typing import BinaryIO, Callable, Collection, Protocol, runtime_checkable

from ..errors import StoreError
from ..isotime import iso8601, parse_iso8601  # noqa: F401 - part of this module's API
from . import treehash

MiB = treehash.MiB
GiB = 1024 * MiB
# Glacier and CAS keep a finished job's output (and the job) this long.
JOB_OUTPUT_TTL = 24 * 3600.0


class TreeHashMismatch(StoreError):
    """Data whose SHA-256 tree hash differs from the one the server vouches for (corrupt download,
    or an upload the server saw differently). Never served to a reader."""

    errno = errno.EIO


class JobFailed(StoreError):
    """The job ended Failed: its output will never exist. The message is the server's StatusMessage."""

    errno = errno.EIO


class Tier(str, enum.Enum):
    """Retrieval speed and price. CAS docs: Expedited 1-5 min, Standard 3-5 h, Bulk 5-12 h."""

    EXPEDITED = "Expedited"
    STANDARD = "Standard"
    BULK = "Bulk"

    @classmethod
    def parse(cls, value: str | None) -> Tier | None:
        """The tier named `value` (any case), or None for a missing or unknown name."""
        for tier in cls:
            if value and value.lower() == tier.value.lower():
                return tier
        return None


class JobStatus(str, enum.Enum):
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class JobAction(str, enum.Enum):
    ARCHIVE_RETRIEVAL = "ArchiveRetrieval"
    INVENTORY_RETRIEVAL = "InventoryRetrieval"
    OTHER = "Other"  # select, push-to-cos, pull-from-cos: listed, never started by storefs


@dataclasses.dataclass(frozen=True)
class ArchiveInfo:
    archive_id: str
    description: str
    size: int
    creation_date: float
    tree_hash: str | None  # None where the server gave none; moto's is a plain SHA-256


@dataclasses.dataclass(frozen=True)
class JobInfo:
    job_id: str
    action: JobAction
    status: JobStatus
    status_message: str | None = None
    archive_id: str | None = None
    tier: Tier | None = None
    byte_range: tuple[int, int] | None = None  # [start, end) of the archive a retrieval fetches
    creation_date: float | None = None
    completion_date: float | None = None
    sha256_tree_hash: str | None = None       # of the output; None if the range is not tree-aligned
    archive_size: int | None = None           # of the whole archive (retrievals)
    inventory_size: int | None = None         # of the output (inventories, once complete)
    description: str | None = None
    archive_tree_hash: str | None = None      # of the whole archive (retrievals)

    @property
    def completed(self) -> bool:
        return self.status is not JobStatus.IN_PROGRESS

    @property
    def succeeded(self) -> bool:
        return self.status is JobStatus.SUCCEEDED

    @property
    def output_size(self) -> int | None:
        """Bytes of output, when the server said enough to know it."""
        if self.action is JobAction.INVENTORY_RETRIEVAL:
            return self.inventory_size if self.completed else None
        if self.byte_range is not None:
            return self.byte_range[1] - self.byte_range[0]
        return self.archive_size


@dataclasses.dataclass(frozen=True)
class VaultInfo:
    name: str
    creation_date: float | None = None
    last_inventory_date: float | None = None
    archive_count: int | None = None   # updated about daily by real services; may be None
    size: int | None = None
    resource_name: str | None = None   # VaultQCS (CAS) / VaultARN (Glacier)


@dataclasses.dataclass(frozen=True)
class ArchiveUpload:
    """A multipart upload in progress. `part_size` is 1 MiB x 2^n; every part but the last is full."""

    upload_id: str
    part_size: int
    description: str = ""
    creation_date: float | None = None


@dataclasses.dataclass(frozen=True)
class ArchivePart:
    start: int
    end: int          # exclusive
    tree_hash: str


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of a listing; `marker` None means it was the last."""

    items: list
    marker: str | None


@dataclasses.dataclass(frozen=True)
class VaultCapabilities:
    """What a vault server can do. Callers branch on these, never on the provider's type."""

    supports_multipart: bool = True
    # RetrievalByteRange on jobs and Range on job output are honoured.
    supports_ranges: bool = True
    # The server's tree hashes (upload answers, inventory, job output) are real SHA-256 tree hashes.
    tree_hash_trustworthy: bool = True
    # Listings come in pages with a marker (moto always answers one page with Marker null).
    pages_listings: bool = True
    # Describe/list jobs report sizes and the job's tree hash (moto: ArchiveSizeInBytes is always 0).
    job_sizes_reported: bool = True
    min_part_size: int = MiB
    max_part_size: int = 4 * GiB
    max_parts: int = 10_000
    # Archives up to this size go up in one request; larger ones use multipart (when supported).
    single_upload_max: int = 100 * MiB
    max_description_bytes: int = 1024
    tiers: tuple[Tier, ...] = (Tier.EXPEDITED, Tier.STANDARD, Tier.BULK)


@runtime_checkable
class ArchiveVault(Protocol):
    """One vault of one account."""

    name: str
    capabilities: VaultCapabilities

    def describe(self) -> VaultInfo:
        """The vault's own record. NotFound if it does not exist."""

    # -- uploads ---------------------------------------------------------------------------------

    def upload_archive(self, body: BinaryIO | bytes, size: int, description: str = "", *,
                       on_initiated: Callable[[ArchiveUpload], None] | None = None) -> ArchiveInfo:
        """Store `size` bytes as a new archive: one request up to `single_upload_max`, multipart above
        (when supported). The tree hash is computed here and checked against the server's answer.
        `on_initiated` hears of a multipart upload as soon as it exists (upload_in_parts)."""

    def initiate_multipart(self, part_size: int, description: str = "") -> ArchiveUpload:
        ...

    def upload_part(self, upload: ArchiveUpload, start: int, data: bytes) -> ArchivePart:
        """Upload bytes [start, start+len(data)); start is a multiple of the part size. Thread-safe."""

    def list_parts(self, upload: ArchiveUpload) -> list[ArchivePart]:
        ...

    def complete_multipart(self, upload: ArchiveUpload, size: int, tree_hash: str) -> ArchiveInfo:
        """`tree_hash` is the whole archive's (treehash.combine of the part hashes in order)."""

    def abort_multipart(self, upload: ArchiveUpload) -> None:
        ...

    def list_multipart_uploads(self) -> list[ArchiveUpload]:
        ...

    def delete_archive(self, archive_id: str) -> None:
        """NotFound for an archive that does not exist (where the server says so)."""

    # -- jobs ------------------------------------------------------------------------------------

    def start_inventory(self, *, tier: Tier | None = None, description: str = "") -> str:
        """Initiate a JSON inventory retrieval; returns the job id. `tier` is a hint that only servers
        which time inventories by tier (moto) receive."""

    def start_retrieval(self, archive_id: str, *, tier: Tier = Tier.STANDARD,
                        byte_range: tuple[int, int] | None = None, description: str = "") -> str:
        """Initiate an archive retrieval of [start, end) (MiB-aligned, see treehash) or the whole archive."""

    def describe_job(self, job_id: str) -> JobInfo:
        """NotFound for an unknown or expired job."""

    def list_jobs(self, *, completed: bool | None = None,
                  status: JobStatus | None = None) -> list[JobInfo]:
        """Every job the server still knows, all pages (to adopt jobs started before a restart)."""

    def list_jobs_page(self, marker: str | None = None, limit: int = 1000, *, completed: bool | None = None,
                       status: JobStatus | None = None) -> Page:
        """One page of jobs (oldest first); `marker` is opaque, from the previous page."""

    def read_job_output(self, job_id: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of a finished job's output, verified against the server's tree hash when
        the range is tree-aligned. ArchiveNotReady while InProgress; TreeHashMismatch if corrupt."""

    def download_job_output(self, job_id: str, dest: BinaryIO, *, job: JobInfo | None = None) -> str:
        """Write the whole output to `dest` (from its current position) in verified pieces; return
        the output's tree hash. TreeHashMismatch if it differs from the job's SHA256TreeHash."""

    def read_inventory(self, job_id: str) -> list[ArchiveInfo]:
        """The archives listed by a finished inventory job."""


@runtime_checkable
class VaultProvider(Protocol):
    """A connection to one account of one vault service: the factory of `ArchiveVault`s."""

    remote: str
    # Which service and account this is, as configured (no secret in it): `cas https://host account
    # 1250000000`, `local-vault /srv/vaults`. Cached vault state is kept per identity and vault name,
    # so a remote re-pointed elsewhere never shows the old vault's tree.
    identity: str

    def check(self, vault: str | None) -> None:
        """Prove that the endpoint answers and the credentials work (and the vault exists, if given)."""

    def list_vaults(self) -> list[VaultInfo]:
        ...

    def list_vaults_page(self, marker: str | None = None, limit: int = 1000) -> Page:
        ...

    def create_vault(self, name: str) -> None:
        """Idempotent, as Glacier's CreateVault is."""

    def delete_vault(self, name: str) -> None:
        """The vault must be empty."""

    def vault(self, name: str) -> ArchiveVault:
        ...

    def close(self) -> None:
        ...


# ----------------------------------------------------------------------------------------------
# Helpers every backend shares


VAULT_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def check_vault_name(name: str) -> str:
    """Glacier's rule (CAS follows it): 1-255 of a-z A-Z 0-9 _ - . — and never . or .. (HTTP stacks
    rewrite those path segments)."""
    from ..errors import InvalidArgument
    if not 1 <= len(name) <= 255 or not set(name) <= VAULT_NAME_CHARS or name in (".", ".."):
        raise InvalidArgument(f"vault name {name!r}: use 1-255 characters of a-z A-Z 0-9 _ - .")
    return name


def check_description(description: str, limit: int = 1024) -> str:
    """Archive descriptions are printable ASCII (32-126), at most `limit` bytes (Glacier, CAS)."""
    from ..errors import InvalidArgument
    if len(description) > limit or any(not 32 <= ord(c) <= 126 for c in description):
        raise InvalidArgument(f"archive description must be printable ASCII of at most {limit} bytes "
                              f"(got {len(description)} characters)")
    return description


def check_range(start: int, end: int) -> None:
    from ..errors import InvalidArgument
    if start < 0 or end <= start:
        raise InvalidArgument(f"byte range [{start}, {end}) is empty or negative")


def copy_output_in_pieces(vault: ArchiveVault, job: JobInfo, dest: BinaryIO, piece: int) -> str:
    """download_job_output() for servers that answer ranges: aligned pieces of `piece` bytes
    (1 MiB x 2^n, so each one is a tree node that read_job_output verifies), combined and checked
    against the job's own tree hash. Memory: one piece."""
    size = job.output_size
    if size is None:
        raise ValueError("output size unknown")
    if size == 0:
        return treehash.EMPTY_TREE_HASH
    nodes: list[bytes] = []
    for start in range(0, size, piece):
        data = vault.read_job_output(job.job_id, start, min(size, start + piece))
        nodes.append(treehash.tree_hash_raw(data))
        dest.write(data)
    got = treehash.combine_hex(nodes)
    check_job_tree_hash(job, got, vault.capabilities)
    return got


def check_job_tree_hash(job: JobInfo, got: str, capabilities: VaultCapabilities) -> None:
    expected = job.sha256_tree_hash
    if expected and capabilities.tree_hash_trustworthy and expected.lower() != got:
        raise TreeHashMismatch(f"output of job {short_id(job.job_id)}: tree hash {got} differs from the "
                               f"job's {expected}")


def upload_in_parts(vault: ArchiveVault, body: BinaryIO | bytes, size: int, description: str,
                    part_size: int, *, concurrency: int = 1,
                    on_initiated: Callable[[ArchiveUpload], None] | None = None) -> ArchiveInfo:
    """upload_archive() through multipart: parts of `part_size` (1 MiB x 2^n), up to `concurrency` in
    flight (memory: that many parts), then complete with the combined tree hash. `on_initiated` hears
    of the upload as soon as it exists (to record it for a resume). A failed upload is aborted so that
    it leaves nothing behind, unless `on_initiated` recorded it and the failure is transient: then it
    is kept for resume_in_parts()."""
    upload = vault.initiate_multipart(part_size, description)
    if on_initiated is not None:
        on_initiated(upload)
    return _finish_parts(vault, upload, body, size, {}, concurrency, keep_on_transient=on_initiated is not None)


def resume_in_parts(vault: ArchiveVault, upload: ArchiveUpload, body: BinaryIO | bytes, size: int, *,
                    concurrency: int = 1) -> ArchiveInfo:
    """Finish an interrupted multipart `upload` of `body` (the same `size` bytes, seekable): the parts
    the server lists are reused only where their range is exactly a part of this upload and their tree
    hash is the tree hash of the local bytes of that range (as the CAS SDK's MultipartUpload.resume
    checks); every other part is sent (again); then complete. NotFound when the upload is gone (CAS
    documents an upload id as valid for 24 h): the caller starts a new one."""
    source: BinaryIO = io.BytesIO(body) if isinstance(body, (bytes, bytearray, memoryview)) else body
    base = source.tell()
    have: dict[int, ArchivePart] = {}
    for part in vault.list_parts(upload):
        length = min(upload.part_size, size - part.start)
        if part.start % upload.part_size or part.start >= size or part.end - part.start != length:
            continue
        source.seek(base + part.start)
        data = source.read(length)
        if len(data) == length and treehash.tree_hash(data) == part.tree_hash.lower():
            have[part.start] = part
    source.seek(base)
    return _finish_parts(vault, upload, source, size, have, concurrency, keep_on_transient=True)


def _finish_parts(vault: ArchiveVault, upload: ArchiveUpload, body: BinaryIO | bytes, size: int,
                  have: dict[int, ArchivePart], concurrency: int, *, keep_on_transient: bool) -> ArchiveInfo:
    """Send the parts of `body` not in `have` (by start), then complete."""
    from ..errors import InvalidArgument, Transient
    part_size = upload.part_size
    source: BinaryIO = io.BytesIO(body) if isinstance(body, (bytes, bytearray, memoryview)) else body
    read_lock = threading.Lock()
    starts = [start for start in range(0, size, part_size) if start not in have]
    base = source.tell() if source.seekable() else None

    def read_part(start: int) -> bytes:
        length = min(part_size, size - start)
        with read_lock:  # one reader at a time: a file position is shared state
            if base is not None:
                source.seek(base + start)
            data = source.read(length)
        if len(data) != length:
            raise InvalidArgument(f"upload body ended {size - start - len(data)} bytes before its size")
        return data

    def send(start: int) -> ArchivePart:
        return vault.upload_part(upload, start, read_part(start))

    try:
        if concurrency <= 1 or base is None:
            sent = [send(start) for start in starts]
        else:
            with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency,
                                                       thread_name_prefix="vault-part") as pool:
                sent = list(pool.map(send, starts))
        parts = sorted([*have.values(), *sent], key=lambda p: p.start)
        whole = treehash.combine_hex([p.tree_hash for p in parts]) if parts else treehash.EMPTY_TREE_HASH
        return vault.complete_multipart(upload, size, whole)
    except BaseException as exc:
        if keep_on_transient and isinstance(exc, Transient):
            raise   # the server keeps the parts sent: resume_in_parts() goes on from them
        try:
            vault.abort_multipart(upload)
        except StoreError:
            pass  # the original error matters more; an orphan is aborted at the next start
        raise


def abort_orphan_uploads(vault: ArchiveVault, started_here: Collection[str],
                         referenced: Collection[str]) -> list[str]:
    """Abort the unfinished multipart uploads the caller started (`started_here`: upload ids from its
    own durable record) that nothing it still means to resume references (`referenced`). Uploads it
    did not start are never touched: another host may be writing them (and CAS documents an upload
    id as valid for 24 h anyway). Returns the ids aborted."""
    aborted = []
    for upload in vault.list_multipart_uploads():
        if upload.upload_id in started_here and upload.upload_id not in referenced:
            vault.abort_multipart(upload)
            aborted.append(upload.upload_id)
    return aborted


# ----------------------------------------------------------------------------------------------
# Dates: the services speak ISO 8601 with milliseconds and a Z




def short_id(value: str, keep: int = 20) -> str:
    """An archive/job/upload id shortened for messages (they run to 138 characters)."""
    return value if len(value) <= keep + 1 else value[:keep] + "…"
