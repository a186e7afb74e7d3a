"""The `local` vault: archive vaults simulated in a directory, jobs that finish after a delay per tier.

It is the embedded vault that needs no account, the fastest test double, and the engine behind the
CAS loopback emulator (tests/emulators/cas.py), which puts the CAS wire protocol in front of it. So
it keeps the rules of the real services (PROTOCOLS.md §1): 1 MiB x 2^n part sizes, part-aligned
ranges, checked checksums, MiB-aligned retrieval ranges, tree hashes of tree-aligned output ranges
only, jobs kept 24 h after completion, paged listings with opaque markers.

Layout under `root` (one directory per vault; names are [A-Za-z0-9_.-], so safe as file names):
    <vault>/.vault.json                 creation date, last inventory date
    <vault>/archives/<id>               archive data (immutable; ids are URL-safe base64)
    <vault>/archives/<id>.json          description, size, creation date, tree hash, SHA-256
    <vault>/archives/<id>.leaves        the 1 MiB leaf hashes, 32 raw bytes each
    <vault>/uploads/<id>.json|.data     multipart uploads in progress (parts written in place)
    <vault>/jobs/<id>.json              job records: a new provider on the same root adopts them
    <vault>/jobs/<id>.out|.leaves       job output: a hard link of the archive (or the inventory)

Time comes from an injectable clock (`ManualClock` in tests): a job is InProgress until
`clock.now() >= completes_at`, Succeeded (or Failed, when a test failed it) after that, and gone
24 h later. An inventory lists the archives that existed when it completed; it is written the first
time anyone looks at the finished job.

Lock order: one provider-wide lock guards every metadata file; data is written outside it to
private temporary files that are renamed into place under the lock.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, Protocol

from ..errors import (
    ArchiveNotReady,
    ConfigError,
    InvalidArgument,
    NotEmpty,
    NotFound,
    ProtocolError,
    StoreError,
)
from ..store.registry import ProviderSpec
from . import treehash
from .base import (
    JOB_OUTPUT_TTL,
    ArchiveInfo,
    ArchivePart,
    ArchiveUpload,
    JobAction,
    JobFailed,
    JobInfo,
    JobStatus,
    MiB,
    Page,
    Tier,
    TreeHashMismatch,
    VaultCapabilities,
    VaultInfo,
    check_description,
    check_range,
    check_vault_name,
    copy_output_in_pieces,
    iso8601,
    short_id,
    upload_in_parts,
)

SPEC = ProviderSpec(
    type="local-vault",
    kind="vault",
    required=("root",),
    optional={
        "create_vaults": "no",
        "expedited_delay": "2",     # seconds until a retrieval job of each tier completes
        "standard_delay": "10",
        "bulk_delay": "30",
        "inventory_delay": "5",     # inventory jobs ignore the tier (as CAS does)
    },
    doc="Archive vaults simulated in a directory: each sub-directory of `root` is a vault. Retrieval "
        "and inventory jobs complete after the configured delays (seconds), and outputs are kept 24 h. "
        "`create_vaults = yes` creates a missing vault at mount time.",
)

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
COPY_CHUNK = 1 * MiB
LEAF = 32


class Clock(Protocol):
    def now(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to (tests): `advance(hours * 3600)`."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@dataclasses.dataclass(frozen=True)
class Delays:
    """Seconds from initiation to completion. Defaults are short: this vault is for trying things."""

    expedited: float = 2.0
    standard: float = 10.0
    bulk: float = 30.0
    inventory: float = 5.0

    def for_job(self, action: JobAction, tier: Tier | None) -> float:
        if action is JobAction.INVENTORY_RETRIEVAL:
            return self.inventory
        return {Tier.EXPEDITED: self.expedited, Tier.BULK: self.bulk}.get(tier, self.standard)  # type: ignore[arg-type]


def _check_id(value: str, what: str) -> str:
    """Ids come from clients: anything but URL-safe base64 cannot exist (and must not reach a path)."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise NotFound(f"{what} {value[:40]!r} does not exist")
    return value


def _new_id(nbytes: int) -> str:
    return secrets.token_urlsafe(nbytes)


def _write_json(path: Path, record: Mapping) -> None:
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def _read_json(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except FileNotFoundError:
        raise NotFound(f"{what} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ProtocolError(f"{what}: unreadable record ({exc.__class__.__name__})") from None
    if not isinstance(record, dict):
        raise ProtocolError(f"{what}: malformed record")
    return record


def _chunks_of(data: bytes | bytearray | memoryview | Iterable[bytes]) -> Iterable[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)
        return (view[pos: pos + COPY_CHUNK] for pos in range(0, len(view), COPY_CHUNK))
    return data


def _file_chunks(fileobj: BinaryIO, size: int) -> Iterator[bytes]:
    remaining = size
    while remaining > 0:
        chunk = fileobj.read(min(COPY_CHUNK, remaining))
        if not chunk:
            raise InvalidArgument(f"upload body ended {remaining} bytes before its declared size")
        remaining -= len(chunk)
        yield chunk


# ------------------------------------------------------------------------------------------------
# Job output


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


# ------------------------------------------------------------------------------------------------
# The provider: every vault under one root


class LocalVaultProvider:
    """Vaults in a directory. Thread-safe; several providers on one root see each other's records."""

    def __init__(self, root: str | Path, *, remote: str = "local", delays: Delays = Delays(),
                 clock: Clock | None = None, create_vaults: bool = False,
                 resource_field: str = "VaultARN",
                 resource_name: Callable[[str], str] | None = None,
                 capabilities: VaultCapabilities | None = None) -> None:
        self.remote = remote
        self.root = Path(root)
        self.delays = delays
        self.clock: Clock = clock or SystemClock()
        self.create_vaults = create_vaults
        self.output_ttl = JOB_OUTPUT_TTL
        # The inventory document names its vault: VaultARN (Glacier) or VaultQCS (CAS emulator).
        self.resource_field = resource_field
        self.resource_name = resource_name or (lambda name: f"arn:local:glacier:vault/{name}")
        self.capabilities = capabilities or VaultCapabilities()
        self.lock = threading.RLock()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalVaultProvider({self.remote!r}, {str(self.root)!r})"

    # -- vaults ----------------------------------------------------------------------------------

    def vault_dir(self, name: str) -> Path:
        return self.root / check_vault_name(name)

    def has_vault(self, name: str) -> bool:
        return (self.vault_dir(name) / ".vault.json").is_file()

    def create_vault(self, name: str) -> None:
        base = self.vault_dir(name)
        with self.lock:
            if (base / ".vault.json").is_file():
                return  # idempotent, like Glacier's CreateVault
            for sub in ("archives", "uploads", "jobs"):
                (base / sub).mkdir(parents=True, exist_ok=True)
            _write_json(base / ".vault.json", {"created": self.clock.now(), "last_inventory": None})

    def delete_vault(self, name: str) -> None:
        base = self.vault_dir(name)
        with self.lock:
            if not self.has_vault(name):
                raise NotFound(f"vault {name!r} does not exist")
            if any(p.suffix == ".json" for p in (base / "archives").iterdir()):
                raise NotEmpty(f"vault {name!r} still holds archives")
            shutil.rmtree(base)

    def describe_vault(self, name: str) -> VaultInfo:
        base = self.vault_dir(name)
        with self.lock:
            record = _read_json(base / ".vault.json", f"vault {name!r}")
            count = size = 0
            for meta in (base / "archives").glob("*.json"):
                try:
                    size += int(_read_json(meta, "archive").get("size", 0))
                    count += 1
                except StoreError:
                    continue
        return VaultInfo(name=name, creation_date=record.get("created"),
                         last_inventory_date=record.get("last_inventory"), archive_count=count,
                         size=size, resource_name=self.resource_name(name))

    def list_vaults_page(self, marker: str | None = None, limit: int = 1000) -> Page:
        """Vaults in name order from `marker` (a vault name, inclusive)."""
        with self.lock:
            names = sorted(p.name for p in self.root.iterdir() if (p / ".vault.json").is_file())
        if marker:
            names = [n for n in names if n >= marker]
        items = [self.describe_vault(n) for n in names[:limit] if self.has_vault(n)]
        return Page(items, names[limit] if len(names) > limit else None)

    def list_vaults(self) -> list[VaultInfo]:
        return self.list_vaults_page(None, 1 << 30).items

    def vault(self, name: str) -> LocalVault:
        return LocalVault(self, check_vault_name(name))

    def check(self, vault: str | None) -> None:
        if not self.root.is_dir():
            raise NotFound(f"local vault root {self.root} is not a directory")
        if vault and not self.has_vault(vault):
            if not self.create_vaults:
                raise NotFound(f"vault {vault!r} does not exist under {self.root}")
            self.create_vault(vault)

    def close(self) -> None:
        pass


class LocalVault:
    """One vault directory. Also the engine the CAS emulator serves: its `put_*` methods take the
    checksums a client sent, and `open_output` hands out what a GET of job output serves."""

    def __init__(self, provider: LocalVaultProvider, name: str) -> None:
        self.provider = provider
        self.name = name
        self.capabilities = provider.capabilities
        self.base = provider.root / name
        self._lock = provider.lock

    def __repr__(self) -> str:
        return f"LocalVault({self.name!r})"

    @property
    def clock(self) -> Clock:
        return self.provider.clock

    def _require(self) -> None:
        if not (self.base / ".vault.json").is_file():
            raise NotFound(f"vault {self.name!r} does not exist")

    def describe(self) -> VaultInfo:
        return self.provider.describe_vault(self.name)

    # -- archives --------------------------------------------------------------------------------

    def _archive_paths(self, archive_id: str) -> tuple[Path, Path, Path]:
        _check_id(archive_id, "archive")
        folder = self.base / "archives"
        return folder / archive_id, folder / f"{archive_id}.json", folder / f"{archive_id}.leaves"

    def archive_record(self, archive_id: str) -> dict:
        self._require()
        _, meta, _ = self._archive_paths(archive_id)
        return _read_json(meta, f"archive {short_id(archive_id)} in vault {self.name!r}")

    def _tmp(self) -> Path:
        return self.base / "uploads" / f".tmp-{_new_id(12)}"

    def put_archive(self, data: bytes | Iterable[bytes], size: int, description: str = "", *,
                    expect_sha256: str | None = None, expect_tree_hash: str | None = None) -> ArchiveInfo:
        """Store an archive from bytes or an iterable of chunks holding exactly `size` bytes, checking
        the checksums a client sent (TreeHashMismatch: the "Checksum mismatch" of the services)."""
        self._require()
        check_description(description, self.capabilities.max_description_bytes)
        if size <= 0:
            raise InvalidArgument("an archive must hold at least one byte")
        tmp = self._tmp()
        hasher = treehash.TreeHasher(linear=True, keep_leaves=True)
        try:
            with open(tmp, "wb") as f:
                for chunk in _chunks_of(data):
                    hasher.update(chunk)
                    f.write(chunk)
            if hasher.size != size:
                raise InvalidArgument(f"archive body holds {hasher.size} bytes, not the declared {size}")
            _check_sums(hasher, expect_sha256, expect_tree_hash)
            return self._adopt(tmp, size, description, hasher.hexdigest(), hasher.linear_hexdigest(),
                               b"".join(hasher.all_leaves()))
        finally:
            tmp.unlink(missing_ok=True)

    def _adopt(self, tmp: Path, size: int, description: str, tree_hash: str, sha256: str | None,
               leaves: bytes) -> ArchiveInfo:
        archive_id = _new_id(102)  # 136 characters, like Glacier's 138-character ids
        data_path, meta_path, leaves_path = self._archive_paths(archive_id)
        now = self.clock.now()
        with self._lock:
            self._require()
            os.replace(tmp, data_path)
            leaves_path.write_bytes(leaves)
            _write_json(meta_path, {"archive_id": archive_id, "description": description, "size": size,
                                    "created": now, "tree_hash": tree_hash, "sha256": sha256})
        return ArchiveInfo(archive_id, description, size, now, tree_hash)

    def upload_archive(self, body: BinaryIO | bytes, size: int, description: str = "") -> ArchiveInfo:
        if size > self.capabilities.single_upload_max:
            part = treehash.part_size_for(size, 16 * MiB, self.capabilities.max_parts)
            return upload_in_parts(self, body, size, description, part)
        if isinstance(body, (bytes, bytearray, memoryview)):
            if len(body) != size:
                raise InvalidArgument(f"body holds {len(body)} bytes, not {size}")
            return self.put_archive(body, size, description)
        return self.put_archive(_file_chunks(body, size), size, description)

    def delete_archive(self, archive_id: str) -> None:
        data_path, meta_path, leaves_path = self._archive_paths(archive_id)
        with self._lock:
            self._require()
            if not meta_path.is_file():
                raise NotFound(f"archive {short_id(archive_id)} does not exist in vault {self.name!r}")
            meta_path.unlink()
            data_path.unlink(missing_ok=True)
            leaves_path.unlink(missing_ok=True)

    def archives(self) -> list[ArchiveInfo]:
        """Every archive, oldest first (what an inventory taken now would list)."""
        self._require()
        found = []
        for meta in (self.base / "archives").glob("*.json"):
            try:
                r = _read_json(meta, "archive")
                found.append(ArchiveInfo(r["archive_id"], r["description"], int(r["size"]),
                                         float(r["created"]), r["tree_hash"]))
            except (StoreError, KeyError, TypeError, ValueError):
                continue  # deleted while we looked
        return sorted(found, key=lambda a: (a.creation_date, a.archive_id))

    # -- multipart -------------------------------------------------------------------------------

    def _upload_paths(self, upload_id: str) -> tuple[Path, Path]:
        _check_id(upload_id, "multipart upload")
        folder = self.base / "uploads"
        return folder / f"{upload_id}.json", folder / f"{upload_id}.data"

    def _upload_record(self, upload_id: str) -> dict:
        self._require()
        meta, _ = self._upload_paths(upload_id)
        return _read_json(meta, f"multipart upload {short_id(upload_id)}")

    def initiate_multipart(self, part_size: int, description: str = "") -> ArchiveUpload:
        self._require()
        check_description(description, self.capabilities.max_description_bytes)
        if not treehash.is_valid_part_size(part_size):
            raise InvalidArgument(f"part size {part_size} is not 1 MiB x 2^n between 1 MiB and 4 GiB")
        upload_id = _new_id(69)
        meta, data = self._upload_paths(upload_id)
        now = self.clock.now()
        with self._lock:
            data.touch()
            _write_json(meta, {"upload_id": upload_id, "part_size": part_size, "description": description,
                               "created": now, "parts": {}})
        return ArchiveUpload(upload_id, part_size, description, now)

    def put_part(self, upload_id: str, start: int, end: int, data: bytes | Iterable[bytes], *,
                 expect_sha256: str | None = None, expect_tree_hash: str | None = None) -> ArchivePart:
        """Write part [start, end) of an upload (the Content-Range rules of Glacier and CAS)."""
        record = self._upload_record(upload_id)
        part_size = int(record["part_size"])
        if start < 0 or end <= start:
            raise InvalidArgument(f"part range {start}-{end - 1} is empty")
        if start % part_size:
            raise InvalidArgument(f"part range starts at {start}, not on a multiple of the part size "
                                  f"{part_size}")
        if end - start > part_size:
            raise InvalidArgument(f"part of {end - start} bytes exceeds the part size {part_size}")
        if start // part_size >= self.capabilities.max_parts:
            raise InvalidArgument(f"part at {start} would be part number {start // part_size + 1} "
                                  f"(at most {self.capabilities.max_parts})")
        _, data_path = self._upload_paths(upload_id)
        hasher = treehash.TreeHasher(linear=True, keep_leaves=True)
        fd = os.open(data_path, os.O_WRONLY)
        try:
            offset = start
            for chunk in _chunks_of(data):
                if offset + len(chunk) > end:
                    raise InvalidArgument(f"part body is longer than its range {start}-{end - 1}")
                hasher.update(chunk)
                os.pwrite(fd, chunk, offset)
                offset += len(chunk)
        finally:
            os.close(fd)
        if hasher.size != end - start:
            raise InvalidArgument(f"part body holds {hasher.size} bytes, its range {end - start}")
        _check_sums(hasher, expect_sha256, expect_tree_hash)
        tree = hasher.hexdigest()
        meta_path, _ = self._upload_paths(upload_id)
        with self._lock:
            record = self._upload_record(upload_id)  # aborted meanwhile: NotFound
            # Leaves go beside the record, not in it: the record is rewritten for every part.
            (meta_path.parent / f"{upload_id}.{start}.leaves").write_bytes(b"".join(hasher.all_leaves()))
            record["parts"][str(start)] = {"end": end, "tree_hash": tree}
            _write_json(meta_path, record)
        return ArchivePart(start, end, tree)

    def upload_part(self, upload: ArchiveUpload, start: int, data: bytes) -> ArchivePart:
        return self.put_part(upload.upload_id, start, start + len(data), data)

    def list_parts_page(self, upload_id: str, marker: str | None = None, limit: int = 1000
                        ) -> tuple[ArchiveUpload, Page]:
        record = self._upload_record(upload_id)
        parts = sorted((int(s), p) for s, p in record["parts"].items())
        if marker:
            try:
                first = int(marker)
            except ValueError:
                raise InvalidArgument(f"bad marker {marker[:40]!r}") from None
            parts = [(s, p) for s, p in parts if s >= first]
        items = [ArchivePart(s, int(p["end"]), p["tree_hash"]) for s, p in parts[:limit]]
        upload = ArchiveUpload(upload_id, int(record["part_size"]), record["description"], record["created"])
        return upload, Page(items, str(parts[limit][0]) if len(parts) > limit else None)

    def list_parts(self, upload: ArchiveUpload) -> list[ArchivePart]:
        return self.list_parts_page(upload.upload_id, None, 1 << 30)[1].items

    def complete_upload(self, upload_id: str, size: int, tree_hash: str) -> ArchiveInfo:
        """Every part present and full (the last one ending at `size`), and the combined tree hash
        equal to `tree_hash`; then the upload becomes an archive."""
        meta_path, data_path = self._upload_paths(upload_id)
        with self._lock:
            record = self._upload_record(upload_id)
            part_size = int(record["part_size"])
            parts = {int(s): p for s, p in record["parts"].items()}
            if size <= 0:
                raise InvalidArgument("an archive must hold at least one byte")
            expected = list(range(0, size, part_size))
            for start in expected:
                part = parts.get(start)
                if part is None:
                    raise InvalidArgument(f"part at {start}-{min(size, start + part_size) - 1} is missing")
                if int(part["end"]) != min(size, start + part_size):
                    raise InvalidArgument(f"part at {start} holds {int(part['end']) - start} bytes; "
                                          f"an archive of {size} bytes needs "
                                          f"{min(size, start + part_size) - start}")
            extra = sorted(set(parts) - set(expected))
            if extra:
                raise InvalidArgument(f"part at {extra[0]} lies beyond the archive size {size}")
            combined = treehash.combine_hex([parts[s]["tree_hash"] for s in expected])
            if combined != tree_hash.lower():
                raise TreeHashMismatch(f"checksum mismatch: the parts combine to tree hash {combined}, "
                                       f"not {tree_hash}")
            leaves = b"".join((meta_path.parent / f"{upload_id}.{s}.leaves").read_bytes() for s in expected)
            with open(data_path, "r+b") as f:
                f.truncate(size)
            tmp = self._tmp()
            os.replace(data_path, tmp)
            self._remove_upload(upload_id)
            return self._adopt(tmp, size, record["description"], combined, None, leaves)

    def complete_multipart(self, upload: ArchiveUpload, size: int, tree_hash: str) -> ArchiveInfo:
        return self.complete_upload(upload.upload_id, size, tree_hash)

    def abort_upload(self, upload_id: str) -> None:
        meta_path, _ = self._upload_paths(upload_id)
        with self._lock:
            self._require()
            if not meta_path.is_file():
                raise NotFound(f"multipart upload {short_id(upload_id)} does not exist")
            self._remove_upload(upload_id)

    def _remove_upload(self, upload_id: str) -> None:
        meta_path, data_path = self._upload_paths(upload_id)
        for leaves in meta_path.parent.glob(f"{upload_id}.*.leaves"):
            leaves.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        data_path.unlink(missing_ok=True)

    def abort_multipart(self, upload: ArchiveUpload) -> None:
        self.abort_upload(upload.upload_id)

    def list_uploads_page(self, marker: str | None = None, limit: int = 1000) -> Page:
        self._require()
        uploads = []
        for meta in (self.base / "uploads").glob("*.json"):
            try:
                r = _read_json(meta, "upload")
                uploads.append(ArchiveUpload(r["upload_id"], int(r["part_size"]), r["description"],
                                             float(r["created"])))
            except (StoreError, KeyError, TypeError, ValueError):
                continue
        uploads.sort(key=lambda u: (u.creation_date, u.upload_id))
        return _page(uploads, marker, limit, lambda u: u.upload_id)

    def list_multipart_uploads(self) -> list[ArchiveUpload]:
        return self.list_uploads_page(None, 1 << 30).items

    # -- jobs ------------------------------------------------------------------------------------

    def _job_paths(self, job_id: str) -> tuple[Path, Path, Path]:
        _check_id(job_id, "job")
        folder = self.base / "jobs"
        return folder / f"{job_id}.json", folder / f"{job_id}.out", folder / f"{job_id}.leaves"

    def initiate_job(self, action: JobAction, *, archive_id: str | None = None, tier: Tier | None = None,
                     byte_range: tuple[int, int] | None = None, description: str = "",
                     output_format: str = "JSON", fail_message: str | None = None) -> str:
        """Start a job; `fail_message` (a test fault) makes it end Failed with that message."""
        self._require()
        check_description(description, self.capabilities.max_description_bytes)
        now = self.clock.now()
        job_id = _new_id(69)  # 92 characters, like Glacier's
        meta_path, out_path, leaves_path = self._job_paths(job_id)
        record = {"job_id": job_id, "action": action.value, "tier": (tier or Tier.STANDARD).value,
                  "description": description, "created": now,
                  "completes_at": now + self.provider.delays.for_job(action, tier),
                  "fail_message": fail_message, "corrupt": False, "output_ready": False}
        with self._lock:
            if action is JobAction.ARCHIVE_RETRIEVAL:
                archive = self.archive_record(_check_id(archive_id or "", "archive"))
                size = int(archive["size"])
                start, end = byte_range if byte_range is not None else (0, size)
                if not treehash.is_mib_aligned_range(start, end, size):
                    raise InvalidArgument(f"RetrievalByteRange {start}-{end - 1} is not megabyte-aligned "
                                          f"within the archive of {size} bytes")
                data_path, _, archive_leaves = self._archive_paths(archive_id or "")
                _link_or_copy(data_path, out_path)
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
            _write_json(meta_path, record)
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
            record = _read_json(meta_path, f"job {short_id(job_id)} in vault {self.name!r}")
            now = self.clock.now()
            if now >= float(record["completes_at"]) + self.provider.output_ttl:
                for path in (meta_path, out_path, leaves_path):
                    path.unlink(missing_ok=True)
                raise NotFound(f"job {short_id(job_id)} has expired")
            if (now >= float(record["completes_at"]) and not record["output_ready"]
                    and not record.get("fail_message")):
                self._write_inventory(record, out_path, leaves_path)
                _write_json(meta_path, record)
            return record

    def _write_inventory(self, record: dict, out_path: Path, leaves_path: Path) -> None:
        """Materialise an inventory as of its completion time (called under the lock)."""
        completed = float(record["completes_at"])
        archives = [a for a in self.archives() if a.creation_date <= completed]
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
        vault_record = _read_json(vault_meta, "vault")
        vault_record["last_inventory"] = completed
        _write_json(vault_meta, vault_record)

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
        return _page(jobs, marker, limit, lambda j: j.job_id)

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
        from .rest import parse_inventory
        return parse_inventory(self.read_job_output(job_id, 0, handle.size), "local inventory")

    # -- test faults -----------------------------------------------------------------------------

    def fail_job(self, job_id: str, message: str = "Job failed (injected)") -> None:
        """Make a job end Failed with `message` (at once if it has already completed)."""
        meta_path, _, _ = self._job_paths(job_id)
        with self._lock:
            record = _read_json(meta_path, f"job {short_id(job_id)}")
            record["fail_message"] = message
            _write_json(meta_path, record)

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
            record = _read_json(meta_path, f"job {short_id(job_id)}")
            record["corrupt"] = corrupt
            _write_json(meta_path, record)


def _check_sums(hasher: treehash.TreeHasher, expect_sha256: str | None, expect_tree_hash: str | None) -> None:
    if expect_sha256 is not None and expect_sha256.lower() != hasher.linear_hexdigest():
        raise TreeHashMismatch(f"checksum mismatch: the body's SHA-256 is {hasher.linear_hexdigest()}, "
                               f"not {expect_sha256[:64]}")
    if expect_tree_hash is not None and expect_tree_hash.lower() != hasher.hexdigest():
        raise TreeHashMismatch(f"checksum mismatch: the body's tree hash is {hasher.hexdigest()}, "
                               f"not {expect_tree_hash[:64]}")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except FileNotFoundError:
        raise NotFound("archive data is missing") from None
    except OSError:
        shutil.copyfile(src, dst)  # a filesystem without hard links


def _page(items: list, marker: str | None, limit: int, key: Callable[[object], str]) -> Page:
    """Items from the one whose key is `marker` (inclusive); the next page's marker or None."""
    if marker:
        keys = [key(i) for i in items]
        if marker not in keys:
            raise InvalidArgument(f"marker {marker[:40]!r} is not valid")
        items = items[keys.index(marker):]
    return Page(items[:limit], key(items[limit]) if len(items) > limit else None)


# ------------------------------------------------------------------------------------------------
# Opening from config


def _seconds(options: Mapping[str, str], key: str, remote: str) -> float:
    value = str(options.get(key) or SPEC.optional[key])
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"[{remote}] {key} = {value!r} is not a number of seconds") from None
    if seconds < 0:
        raise ConfigError(f"[{remote}] {key} must not be negative")
    return seconds


def open_vault_provider(remote: str, options: Mapping[str, str], *, clock: Clock | None = None
                        ) -> LocalVaultProvider:
    root = str(options.get("root") or "").strip()
    if not root:
        raise ConfigError(f"[{remote}] type = {SPEC.type} needs root (a directory)")
    root_path = Path(os.path.expanduser(root))
    if not root_path.is_dir():
        raise ConfigError(f"[{remote}] root {root!r} is not a directory: create it with mkdir -p {root}")
    delays = Delays(expedited=_seconds(options, "expedited_delay", remote),
                    standard=_seconds(options, "standard_delay", remote),
                    bulk=_seconds(options, "bulk_delay", remote),
                    inventory=_seconds(options, "inventory_delay", remote))
    create = str(options.get("create_vaults") or "no").strip().lower() in ("yes", "true", "1", "on")
    return LocalVaultProvider(root_path, remote=remote, delays=delays, clock=clock, create_vaults=create)


# The registry's name for the factory, as for every provider module.
open_provider = open_vault_provider
