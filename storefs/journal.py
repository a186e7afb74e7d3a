"""The write-back journal: one JSON sidecar per staged file, beside its data, written and fsynced before
close() returns. It is what makes a closed file survive `kill -9` or a power cut: the next mount of the
same remote reads the sidecars and finishes the uploads.

Layout in the staging directory: `<id>` is the data, `<id>.json` its entry. An entry holds the file's
mount path and key, its attributes as object metadata, the ETag it was based on (to detect conflicting
remote changes), and upload state (attempts, last error, a multipart upload id to abort if we crash).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

VERSION = 1


@dataclasses.dataclass
class JournalEntry:
    id: str                      # the staged data file's name
    path: str                    # mount path
    key: str                     # object key
    meta: dict[str, str]         # attributes as object metadata
    base_etag: str | None        # remote ETag the staged copy started from; None for a new file
    size: int = 0
    closed_at: float = 0.0
    attempts: int = 0
    last_error: str = ""
    upload_id: str | None = None  # a multipart upload in progress, aborted on recovery

    def to_json(self) -> str:
        return json.dumps({"version": VERSION, **dataclasses.asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> "JournalEntry":
        data = json.loads(text)
        data.pop("version", None)
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


class Journal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, entry_id: str) -> Path:
        return self.directory / f"{entry_id}.json"

    def write(self, entry: JournalEntry, data_fd: int | None = None) -> None:
        """Durably record `entry` (and fsync its data file first, if given)."""
        if data_fd is not None:
            os.fsync(data_fd)
        path = self._path(entry.id)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, entry.to_json().encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self._sync_dir()

    def remove(self, entry_id: str) -> None:
        try:
            self._path(entry_id).unlink()
        except FileNotFoundError:
            return
        self._sync_dir()

    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def load(self) -> list[JournalEntry]:
        """Every entry whose data file exists, oldest close first. Unreadable entries are logged and kept."""
        entries = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                entry = JournalEntry.from_json(path.read_text())
            except (OSError, ValueError, TypeError) as exc:
                log.error("unreadable journal entry %s (%s); left in place for inspection", path, exc)
                continue
            if not (self.directory / entry.id).is_file():
                log.error("journal entry %s has no data file; removing it", path)
                path.unlink(missing_ok=True)
                continue
            entries.append(entry)
        entries.sort(key=lambda e: e.closed_at)
        return entries
