"""What a bucket mount says about itself and its objects besides attributes: the extended attributes
of archive-class objects (user.storefs.storage_class, .retrieval; only where the store has archive
storage classes) and statfs (the staging disk's room, capped by total_size and staging_size).
"""
from __future__ import annotations

import shutil

from ...errors import NoAttribute
from ...options import MountOptions
from ...paths import KeyMap, check_path
from ...retrieval.gate import XATTR_RETRIEVAL, XATTR_STORAGE_CLASS, ArchiveGate
from .namespace import Entry, Namespace
from .openfiles import OpenFiles
from .staging import Staging


class BucketFacts:
    def __init__(self, keys: KeyMap, ns: Namespace, table: OpenFiles, archive: ArchiveGate | None,
                 staging: Staging, options: MountOptions) -> None:
        self.keys, self.ns, self.table = keys, ns, table
        self.archive, self.staging, self.options = archive, staging, options

    def _archive_entry(self, path: str) -> Entry | None:
        check_path(path)
        if path == "/" or self.archive is None:
            return None
        opened = self.table.get(path)
        if opened is not None and (opened.staged or opened.info is None):
            return None  # being written: not (yet) an object with a storage class
        entry = self.ns.lookup(path)
        return None if entry.is_dir or entry.info is None else entry

    def listxattr(self, path: str) -> list[str]:
        entry = self._archive_entry(path)
        if entry is None:
            return []
        assert self.archive is not None
        names = [XATTR_STORAGE_CLASS]
        if self.archive.is_archived(entry.info):
            names.append(XATTR_RETRIEVAL)
        return names

    def getxattr(self, path: str, name: str) -> bytes:
        entry = self._archive_entry(path)
        if entry is not None and entry.info is not None and self.archive is not None:
            if name == XATTR_STORAGE_CLASS:
                return (entry.info.storage_class or "STANDARD").encode("ascii", "replace")
            if name == XATTR_RETRIEVAL and self.archive.is_archived(entry.info):
                key = self.keys.key(path)
                _, state = self.archive.state(key)  # asked afresh: a restore finishes server-side
                return self.archive.describe_state(key, state).encode("utf-8")
        raise NoAttribute(f"{path}: no attribute {name}")

    def statfs(self) -> dict[str, int]:
        disk = shutil.disk_usage(self.staging.directory)
        block = 4096
        total = self.options.total_size or disk.total
        free = min(disk.free, total)
        if self.options.staging_size is not None:
            free = min(free, max(0, self.options.staging_size - self.staging.used_bytes()))
        return {
            "f_bsize": block, "f_frsize": block,
            "f_blocks": total // block, "f_bfree": free // block, "f_bavail": free // block,
            "f_files": 1 << 32, "f_ffree": 1 << 32, "f_favail": 1 << 32,
            "f_namemax": 255,
        }
