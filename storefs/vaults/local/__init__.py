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
    <vault>/archives/<id>.deleted       a deleted archive's record, kept while inventories still list it
    <vault>/uploads/<id>.json|.data     multipart uploads in progress (parts written in place)
    <vault>/jobs/<id>.json              job records: a new provider on the same root adopts them
    <vault>/jobs/<id>.out|.leaves       job output: a hard link of the archive (or the inventory)

Archives and multipart uploads are here; jobs, their clock and their output are jobs.py's
(the job half of `LocalVault`); the record files of both, files.py's.

Lock order: one provider-wide lock guards every metadata file; data is written outside it to
private temporary files that are renamed into place under the lock.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import BinaryIO

from ...errors import ConfigError, InvalidArgument, NotEmpty, NotFound, StoreError
from ...store.registry import ProviderSpec
from .. import treehash
from ..base import (JOB_OUTPUT_TTL, ArchiveInfo, ArchivePart, ArchiveUpload, JobAction, MiB, Page, Tier,
                   TreeHashMismatch, VaultCapabilities, VaultInfo, check_description, check_vault_name, short_id,
                   upload_in_parts)
from .files import check_id, check_sums, chunks_of, file_chunks, new_id, page, read_json, write_json
from .jobs import Clock, LocalJobs, SystemClock

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
        "inventory_lag": "0",       # seconds a deleted archive is still listed by inventories
    },
    doc="Archive vaults simulated in a directory: each sub-directory of `root` is a vault. Retrieval "
        "and inventory jobs complete after the configured delays (seconds), and outputs are kept 24 h. "
        "`create_vaults = yes` creates a missing vault at mount time. `inventory_lag` (seconds, default "
        "0) keeps a deleted archive in the inventories completed that long after its deletion, as the "
        "services do (their inventories are refreshed about daily).",
)

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




# ------------------------------------------------------------------------------------------------
# The provider: every vault under one root


class LocalVaultProvider:
    """Vaults in a directory. Thread-safe; several providers on one root see each other's records."""

    def __init__(self, root: str | Path, *, remote: str = "local", delays: Delays = Delays(),
                 clock: Clock | None = None, create_vaults: bool = False, inventory_lag: float = 0.0,
                 resource_field: str = "VaultARN",
                 resource_name: Callable[[str], str] | None = None,
                 capabilities: VaultCapabilities | None = None) -> None:
        self.remote = remote
        self.root = Path(root)
        self.identity = f"local-vault {os.path.realpath(self.root)}"
        self.delays = delays
        self.clock: Clock = clock or SystemClock()
        self.create_vaults = create_vaults
        # Glacier and CAS refresh a vault's inventory about once a day, so an inventory job finished
        # after a deletion may still list the archive: inventories list a deleted archive while it was
        # deleted less than this long before they completed.
        self.inventory_lag = inventory_lag
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
            write_json(base / ".vault.json", {"created": self.clock.now(), "last_inventory": None})

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
            record = read_json(base / ".vault.json", f"vault {name!r}")
            count = size = 0
            for meta in (base / "archives").glob("*.json"):
                try:
                    size += int(read_json(meta, "archive").get("size", 0))
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


class LocalVault(LocalJobs):
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

    def describe(self) -> VaultInfo:
        return self.provider.describe_vault(self.name)

    # -- archives --------------------------------------------------------------------------------

    def _archive_paths(self, archive_id: str) -> tuple[Path, Path, Path]:
        check_id(archive_id, "archive")
        folder = self.base / "archives"
        return folder / archive_id, folder / f"{archive_id}.json", folder / f"{archive_id}.leaves"

    def archive_record(self, archive_id: str) -> dict:
        self._require()
        _, meta, _ = self._archive_paths(archive_id)
        return read_json(meta, f"archive {short_id(archive_id)} in vault {self.name!r}")

    def _tmp(self) -> Path:
        return self.base / "uploads" / f".tmp-{new_id(12)}"

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
                for chunk in chunks_of(data):
                    hasher.update(chunk)
                    f.write(chunk)
            if hasher.size != size:
                raise InvalidArgument(f"archive body holds {hasher.size} bytes, not the declared {size}")
            check_sums(hasher, expect_sha256, expect_tree_hash)
            return self._adopt(tmp, size, description, hasher.hexdigest(), hasher.linear_hexdigest(),
                               b"".join(hasher.all_leaves()))
        finally:
            tmp.unlink(missing_ok=True)

    def _adopt(self, tmp: Path, size: int, description: str, tree_hash: str, sha256: str | None,
               leaves: bytes) -> ArchiveInfo:
        archive_id = new_id(102)  # 136 characters, like Glacier's 138-character ids
        data_path, meta_path, leaves_path = self._archive_paths(archive_id)
        now = self.clock.now()
        with self._lock:
            self._require()
            os.replace(tmp, data_path)
            leaves_path.write_bytes(leaves)
            write_json(meta_path, {"archive_id": archive_id, "description": description, "size": size,
                                    "created": now, "tree_hash": tree_hash, "sha256": sha256})
        return ArchiveInfo(archive_id, description, size, now, tree_hash)

    def upload_archive(self, body: BinaryIO | bytes, size: int, description: str = "", *,
                       on_initiated: Callable[[ArchiveUpload], None] | None = None) -> ArchiveInfo:
        if size > self.capabilities.single_upload_max:
            part = treehash.part_size_for(size, 16 * MiB, self.capabilities.max_parts)
            return upload_in_parts(self, body, size, description, part, on_initiated=on_initiated)
        if isinstance(body, (bytes, bytearray, memoryview)):
            if len(body) != size:
                raise InvalidArgument(f"body holds {len(body)} bytes, not {size}")
            return self.put_archive(body, size, description)
        return self.put_archive(file_chunks(body, size), size, description)

    def delete_archive(self, archive_id: str) -> None:
        """The archive is gone at once: no retrieval can start, a vault listing no longer counts it.
        Inventories keep listing it for `inventory_lag` seconds (see LocalVaultProvider)."""
        data_path, meta_path, leaves_path = self._archive_paths(archive_id)
        with self._lock:
            self._require()
            if not meta_path.is_file():
                raise NotFound(f"archive {short_id(archive_id)} does not exist in vault {self.name!r}")
            if self.provider.inventory_lag > 0:
                record = read_json(meta_path, "archive")
                write_json(meta_path.with_suffix(".deleted"), {**record, "deleted": self.clock.now()})
            meta_path.unlink()
            data_path.unlink(missing_ok=True)
            leaves_path.unlink(missing_ok=True)

    def archives(self, as_of: float | None = None) -> list[ArchiveInfo]:
        """Every archive, oldest first: what an inventory completed at `as_of` (default: now) lists,
        deleted archives within the provider's `inventory_lag` included."""
        self._require()
        now = self.clock.now()
        as_of = now if as_of is None else as_of
        found = []
        for meta in (self.base / "archives").glob("*.json"):
            try:
                r = read_json(meta, "archive")
                found.append(ArchiveInfo(r["archive_id"], r["description"], int(r["size"]),
                                         float(r["created"]), r["tree_hash"]))
            except (StoreError, KeyError, TypeError, ValueError):
                continue  # deleted while we looked
        lag = self.provider.inventory_lag
        for meta in (self.base / "archives").glob("*.deleted"):
            try:
                r = read_json(meta, "deleted archive")
                deleted = float(r["deleted"])
                if deleted + lag < now - JOB_OUTPUT_TTL:
                    meta.unlink(missing_ok=True)  # no inventory still to be written can list it
                elif deleted + lag > as_of:
                    found.append(ArchiveInfo(r["archive_id"], r["description"], int(r["size"]),
                                             float(r["created"]), r["tree_hash"]))
            except (StoreError, KeyError, TypeError, ValueError):
                continue
        return sorted(found, key=lambda a: (a.creation_date, a.archive_id))

    # -- multipart -------------------------------------------------------------------------------

    def _upload_paths(self, upload_id: str) -> tuple[Path, Path]:
        check_id(upload_id, "multipart upload")
        folder = self.base / "uploads"
        return folder / f"{upload_id}.json", folder / f"{upload_id}.data"

    def _upload_record(self, upload_id: str) -> dict:
        self._require()
        meta, _ = self._upload_paths(upload_id)
        return read_json(meta, f"multipart upload {short_id(upload_id)}")

    def initiate_multipart(self, part_size: int, description: str = "") -> ArchiveUpload:
        self._require()
        check_description(description, self.capabilities.max_description_bytes)
        if not treehash.is_valid_part_size(part_size):
            raise InvalidArgument(f"part size {part_size} is not 1 MiB x 2^n between 1 MiB and 4 GiB")
        upload_id = new_id(69)
        meta, data = self._upload_paths(upload_id)
        now = self.clock.now()
        with self._lock:
            data.touch()
            write_json(meta, {"upload_id": upload_id, "part_size": part_size, "description": description,
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
            for chunk in chunks_of(data):
                if offset + len(chunk) > end:
                    raise InvalidArgument(f"part body is longer than its range {start}-{end - 1}")
                hasher.update(chunk)
                os.pwrite(fd, chunk, offset)
                offset += len(chunk)
        finally:
            os.close(fd)
        if hasher.size != end - start:
            raise InvalidArgument(f"part body holds {hasher.size} bytes, its range {end - start}")
        check_sums(hasher, expect_sha256, expect_tree_hash)
        tree = hasher.hexdigest()
        meta_path, _ = self._upload_paths(upload_id)
        with self._lock:
            record = self._upload_record(upload_id)  # aborted meanwhile: NotFound
            # Leaves go beside the record, not in it: the record is rewritten for every part.
            (meta_path.parent / f"{upload_id}.{start}.leaves").write_bytes(b"".join(hasher.all_leaves()))
            record["parts"][str(start)] = {"end": end, "tree_hash": tree}
            write_json(meta_path, record)
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
                r = read_json(meta, "upload")
                uploads.append(ArchiveUpload(r["upload_id"], int(r["part_size"]), r["description"],
                                             float(r["created"])))
            except (StoreError, KeyError, TypeError, ValueError):
                continue
        uploads.sort(key=lambda u: (u.creation_date, u.upload_id))
        return page(uploads, marker, limit, lambda u: u.upload_id)

    def list_multipart_uploads(self) -> list[ArchiveUpload]:
        return self.list_uploads_page(None, 1 << 30).items


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
    return LocalVaultProvider(root_path, remote=remote, delays=delays, clock=clock, create_vaults=create,
                              inventory_lag=_seconds(options, "inventory_lag", remote))


# The registry's name for the factory, as for every provider module.
open_provider = open_vault_provider
