"""Attributes a vault cannot keep, remembered in the mount's state (`-o vault_writes` only).

An archive's description carries its path and its mtime (mt2, to the second) and nothing else, and a
vault has no directories at all. Backup tools set more than that: `rsync -a` and `cp -p` chmod what
they copy and set directory times, and on their next run compare what they set with what they see.
So that a second `rsync -a` finds nothing to do (instead of a chmod that an immutable archive must
refuse), this module remembers, on this host only:

- the mode of every file uploaded through this mount (the mode it had when it was uploaded), by
  archive id: `<vault state>/attrs/files/<archive key>.json`;
- the mode and mtime set on directories (chmod, utimens), by vault-relative path:
  `<vault state>/attrs/dirs.json`.

Another host, or a lost cache directory, shows the defaults (files 0444, directories 0755 with
vault_writes, after the umask; a directory's mtime is its newest file's). Records are written to a
temporary file, fsynced and renamed into place (a crash leaves the old record or the new one); an
unreadable record counts as absent. Thread-safe (one lock); only the mount process writes them.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from .state import FORMAT as STATE_FORMAT, archive_key, read_record, write_record

log = logging.getLogger(__name__)

FORMAT = STATE_FORMAT   # records are read back by state.read_record, which checks it


def _write(path: Path, record: dict) -> None:
    write_record(path, {"format": FORMAT, **record})


def _read(path: Path) -> dict | None:
    return read_record(path)


class LocalAttrs:
    """The remembered attributes of one vault, under `root` (its state directory)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "attrs"
        self._lock = threading.Lock()
        self._file_modes: dict[str, int | None] = {}   # archive id -> mode (None: none recorded)
        self._recorded: set[str] | None = None          # names in files/: one listing, not a stat per archive
        self._dirs: dict[str, dict[str, int]] | None = None  # rel -> {"mode": m, "mtime_ns": t}

    # -- files -----------------------------------------------------------------------------------

    def _file_path(self, archive_id: str) -> Path:
        return self.root / "files" / f"{archive_key(archive_id)}.json"

    def file_mode(self, archive_id: str) -> int | None:
        """The permission bits the archive was uploaded with here, or None."""
        path = self._file_path(archive_id)
        with self._lock:
            if archive_id in self._file_modes:
                return self._file_modes[archive_id]
            if self._recorded is None:
                try:
                    self._recorded = set(os.listdir(path.parent))
                except FileNotFoundError:
                    self._recorded = set()
            if path.name not in self._recorded:
                return None
        record = _read(path)
        mode = None
        if record is not None and record.get("id") == archive_id and isinstance(record.get("mode"), int):
            mode = record["mode"] & 0o7777
        with self._lock:
            self._file_modes[archive_id] = mode
        return mode

    def set_file_mode(self, archive_id: str, mode: int) -> None:
        path = self._file_path(archive_id)
        _write(path, {"id": archive_id, "mode": mode & 0o7777})
        with self._lock:
            self._file_modes[archive_id] = mode & 0o7777
            if self._recorded is not None:
                self._recorded.add(path.name)

    # -- directories -----------------------------------------------------------------------------

    def _load_dirs(self) -> dict[str, dict[str, int]]:
        """Call with the lock held."""
        if self._dirs is None:
            record = _read(self.root / "dirs.json")
            dirs = record.get("dirs") if record is not None else None
            self._dirs = {}
            if isinstance(dirs, dict):
                for rel, attrs in dirs.items():
                    if isinstance(rel, str) and isinstance(attrs, dict):
                        self._dirs[rel] = {k: int(v) for k, v in attrs.items()
                                           if k in ("mode", "mtime_ns") and isinstance(v, int)}
        return self._dirs

    def dir_attrs(self, rel: str) -> tuple[int | None, int | None]:
        """(mode, mtime_ns) set on directory `rel`, each None if never set here."""
        with self._lock:
            attrs = self._load_dirs().get(rel, {})
        return attrs.get("mode"), attrs.get("mtime_ns")

    def set_dir(self, rel: str, *, mode: int | None = None, mtime_ns: int | None = None) -> None:
        with self._lock:
            dirs = self._load_dirs()
            attrs = dict(dirs.get(rel, {}))
            if mode is not None:
                attrs["mode"] = mode & 0o7777
            if mtime_ns is not None:
                attrs["mtime_ns"] = mtime_ns
            updated = {**dirs, rel: attrs}
            _write(self.root / "dirs.json", {"dirs": updated})
            self._dirs = updated

    def forget_dir(self, rel: str) -> None:
        with self._lock:
            dirs = self._load_dirs()
            if rel in dirs:
                updated = {k: v for k, v in dirs.items() if k != rel}
                _write(self.root / "dirs.json", {"dirs": updated})
                self._dirs = updated
