"""How the archives of a vault become a tree of files: archive description → path.

A vault names an archive only by a server-chosen id; the free-text *description* (printable ASCII,
at most 1024 bytes) is where tools keep a name. The tree a vault mount shows is built here.

Descriptions understood (in this order):
- `mt2 <base64url(json_utf8({"filename": REL, "mtime": "YYYYMMDDTHHMMSSZ"}))>`: mt-aws-glacier's
  format (App::MtAws::MetaData). base64url without `=` padding (padding, and the `+/` alphabet,
  are accepted too, as mt-aws-glacier's decoder does); the JSON is UTF-8, so non-ASCII names survive
  the ASCII-only description. `mtime` is the file's modification time (UTC, leap seconds read as 59);
  a missing or unreadable `mtime` keeps the name and falls back to the archive's creation date.
- `mt1 <…>`: mt-aws-glacier's first format (0.80-0.84 beta), the same JSON double UTF-8 encoded.
- anything else: the description itself is a relative path (glacier-cli, App::Glacier, most
  scripts). A description that is empty or blank, or starts with `mt1 `/`mt2 ` but does not decode,
  has no name.

Paths are cleaned before use: leading `/` and `.` components are dropped (`/a/./b` → `a/b`); a
path with a `..` component, an empty component (`a//b`, a trailing `/`), a NUL or other control
character, a component over 255 bytes, more than 1024 bytes in all, or whose first component starts
with `id:` (the id names below) has no usable name.

The naming scheme (SEMANTICS.md, "Vaults"):
- An archive with a usable path appears under it. Directories are implied by the paths.
- Several archives with the same path (versions: a file uploaded again) are all reachable, newest
  first by creation date, as App::Glacier numbers them: the newest keeps the plain name; older ones
  are `NAME;2`, `NAME;3`, … (`;2` is the second newest).
- If a path is needed both as a file and as a directory (archives `a` and `a/b`), the directory keeps
  the name and every file version is numbered from 1: `a;1` (newest), `a;2`, …
- An archive with no usable name, or whose numbered name would clash with a real path or exceed the
  limits, appears at the top of the vault as `id:<archiveId>`. Ids that are not 1-240 characters of
  `A-Za-z0-9_-` (Glacier's are 138) appear as `id:~<first 32 hex digits of the id's SHA-256>`. Every
  name is at most 255 bytes; the full id is always in the `user.storefs.archive_id` xattr.
The tree depends only on the set of archives, so every mount and every process names them alike.

Everything here is pure, except `Tree`, which is not thread-safe (its owner holds a lock).
"""
from __future__ import annotations

import base64
import binascii
import calendar
import dataclasses
import datetime
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator

from ...vaults.base import ArchiveInfo

NAME_MAX = 255          # bytes per component
PATH_MAX = 1024         # bytes per path (storefs.paths.KEY_MAX)
DESCRIPTION_MAX = 1024  # Glacier and CAS
ID_PREFIX = "id:"
VERSION_SEP = ";"

_ID_OK = re.compile(r"^[A-Za-z0-9_-]{1,240}$")
# mt-aws-glacier's own (lenient) reading of its mtime field.
_MT_TIME = re.compile(r"^\s*(\d{4})[-\s]*(\d{2})[-\s]*(\d{2})\s*T\s*(\d{2})[:\s]*(\d{2})[:\s]*(\d{2})"
                      r"[,.\d]{0,10}\s*Z\s*$", re.IGNORECASE)


# ------------------------------------------------------------------------------------------------
# mt2 (mt-aws-glacier) encoding


def _b64url_decode(text: str) -> bytes | None:
    text = text.strip().replace("+", "-").replace("/", "_").rstrip("=")
    if len(text) % 4 == 1:
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def parse_mt_time(text: object) -> float | None:
    """Epoch seconds of mt-aws-glacier's `YYYYMMDDTHHMMSSZ` (read as leniently as it does), or None."""
    if not isinstance(text, str):
        return None
    match = _MT_TIME.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups())
    leap = max(0, second - 59) if second in (60, 61) else 0  # as mt-aws-glacier counts them
    try:
        moment = datetime.datetime(year, month, day, hour, minute, second - leap,
                                   tzinfo=datetime.timezone.utc)  # noqa: UP017 - Python 3.10 too
    except ValueError:
        return None
    return float(calendar.timegm(moment.utctimetuple())) + leap


def format_mt_time(seconds: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(int(seconds)))


def encode_mt2(rel_path: str, mtime: float) -> str:
    """The mt2 description of a file (what mt-aws-glacier writes: compact JSON, no padding)."""
    doc = {"filename": rel_path, "mtime": format_mt_time(mtime)}
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return "mt2 " + _b64url_encode(body)


def decode_mt(description: str) -> tuple[str, float | None] | None:
    """(filename, mtime or None) of an `mt1`/`mt2` description, or None if it is not a valid one."""
    fields = description.split()  # any whitespace, as Perl's split(' ') (tabs, leading blanks)
    if len(fields) < 2 or fields[0] not in ("mt1", "mt2") or len(fields[1]) > DESCRIPTION_MAX:
        return None
    marker, payload = fields[0], fields[1]
    raw = _b64url_decode(payload)
    if raw is None:
        return None
    if marker == "mt1":  # double encoded: UTF-8 of the Latin-1 reading of the UTF-8 JSON
        try:
            raw = raw.decode("utf-8").encode("latin-1")
        except (UnicodeDecodeError, UnicodeEncodeError):
            return None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("filename"), str):
        return None
    return doc["filename"], parse_mt_time(doc.get("mtime"))


# ------------------------------------------------------------------------------------------------
# Paths


def clean_path(text: str) -> str | None:
    """`text` as a relative path `a/b/c` that can be shown, or None (see the module docstring)."""
    if not text or not text.strip():
        return None
    parts = text.lstrip("/").split("/")
    kept: list[str] = []
    for i, part in enumerate(parts):
        if part == ".":
            continue
        if part in ("", ".."):
            return None  # a//b, a trailing /, or an escape upwards
        if any(ord(c) < 32 or ord(c) == 127 for c in part):
            return None  # NUL, newlines, escapes: no name a shell can handle
        try:
            size = len(part.encode("utf-8"))
        except UnicodeEncodeError:
            return None  # lone surrogates from JSON
        if size > NAME_MAX:
            return None
        kept.append(part)
    if not kept or kept[0].startswith(ID_PREFIX):
        return None
    rel = "/".join(kept)
    if len(rel.encode("utf-8")) + 1 > PATH_MAX:
        return None
    return rel


def name_of(archive: ArchiveInfo) -> tuple[str | None, float | None]:
    """(clean relative path or None, mtime from the description or None)."""
    description = archive.description or ""
    fields = description.split(None, 1)
    if fields and fields[0] in ("mt1", "mt2") and len(fields) == 2:
        decoded = decode_mt(description)
        if decoded is None:
            return None, None
        return clean_path(decoded[0]), decoded[1]
    return clean_path(description), None


def id_name(archive_id: str) -> str:
    """The top-level name of an archive without a usable path (at most 255 bytes, no `/`)."""
    if _ID_OK.match(archive_id):
        return ID_PREFIX + archive_id
    return ID_PREFIX + "~" + hashlib.sha256(archive_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def upload_description(rel_path: str, mtime: float, limit: int = DESCRIPTION_MAX) -> str | None:
    """The mt2 description for a file storefs uploads at `rel_path`, or None if that path cannot be
    one (it would not read back as the same path, or the description would exceed `limit`)."""
    if clean_path(rel_path) != rel_path:
        return None
    description = encode_mt2(rel_path, mtime)
    return description if len(description) <= limit else None


# ------------------------------------------------------------------------------------------------
# The tree


@dataclasses.dataclass(frozen=True)
class FileNode:
    archive: ArchiveInfo
    mtime: float            # from the description (mt2) or the archive's creation date
    wanted: str | None      # the path its description asks for (None: nameless)


class Tree:
    """Paths (`/a/b`, relative to the vault) → files and directories. Not thread-safe."""

    def __init__(self) -> None:
        self.files: dict[str, FileNode] = {}
        self.dirs: dict[str, set[str]] = {"/": set()}
        self.dir_mtime: dict[str, float] = {"/": 0.0}
        self.by_id: dict[str, str] = {}
        self.total_size = 0
        self.fallbacks = 0      # archives with a usable path shown as `id:` (their numbered name clashed)

    def add(self, path: str, node: FileNode) -> None:
        """Put a file at `path` (its parent directories appear as needed). The caller checked that
        nothing lives at `path`."""
        self.files[path] = node
        self.by_id[node.archive.archive_id] = path
        self.total_size += node.archive.size
        child = path
        while child != "/":
            parent = child.rsplit("/", 1)[0] or "/"
            name = child.rsplit("/", 1)[1]
            known = parent in self.dirs
            self.dirs.setdefault(parent, set()).add(name)
            self.dir_mtime[parent] = max(self.dir_mtime.get(parent, 0.0), node.mtime)
            if known:
                # the ancestors above exist already; only their times may still move
                for up in _ancestors(parent):
                    self.dir_mtime[up] = max(self.dir_mtime.get(up, 0.0), node.mtime)
                break
            child = parent

    def is_dir(self, path: str) -> bool:
        return path in self.dirs

    def file(self, path: str) -> FileNode | None:
        return self.files.get(path)

    def exists(self, path: str) -> bool:
        return path in self.files or path in self.dirs

    def listdir(self, path: str) -> list[str]:
        return sorted(self.dirs.get(path, ()))

    def files_below(self, path: str) -> Iterator[tuple[str, FileNode]]:
        """Every file at or below `path`, in path order."""
        if path in self.files:
            yield path, self.files[path]
            return
        prefix = path.rstrip("/") + "/"
        for candidate in sorted(self.files):
            if candidate.startswith(prefix) or path == "/":
                yield candidate, self.files[candidate]

    def __len__(self) -> int:
        return len(self.files)


def _ancestors(path: str) -> Iterator[str]:
    while path != "/":
        path = path.rsplit("/", 1)[0] or "/"
        yield path


def _newest_first(archives: list[ArchiveInfo]) -> list[ArchiveInfo]:
    return sorted(archives, key=lambda a: (-a.creation_date, a.archive_id))


def build_tree(archives: Iterable[ArchiveInfo]) -> Tree:
    """The tree of a vault holding `archives` (duplicates by id are taken once)."""
    unique: dict[str, ArchiveInfo] = {}
    for archive in archives:
        unique.setdefault(archive.archive_id, archive)
    groups: dict[str, list[ArchiveInfo]] = {}
    mtimes: dict[str, float] = {}
    nameless: list[ArchiveInfo] = []
    for archive in unique.values():
        rel, mtime = name_of(archive)
        mtimes[archive.archive_id] = mtime if mtime is not None else archive.creation_date
        if rel is None:
            nameless.append(archive)
        else:
            groups.setdefault("/" + rel, []).append(archive)
    # Every directory some wanted path implies: a file there must give way.
    dirs: set[str] = set()
    for path in groups:
        dirs.update(a for a in _ancestors(path) if a != "/")
    taken = set(groups) | dirs  # real names always win over generated ones
    fallbacks = 0
    placed: list[tuple[str, ArchiveInfo, str | None]] = []
    for path in sorted(groups):
        versions = _newest_first(groups[path])
        first = 1
        if path not in dirs:
            placed.append((path, versions[0], path))
            versions, first = versions[1:], 2
        for number, archive in enumerate(versions, start=first):
            candidate = f"{path}{VERSION_SEP}{number}"
            leaf = candidate.rsplit("/", 1)[1]
            if (candidate in taken or len(leaf.encode("utf-8")) > NAME_MAX
                    or len(candidate.encode("utf-8")) > PATH_MAX):
                nameless.append(archive)
                fallbacks += 1
                continue
            taken.add(candidate)
            placed.append((candidate, archive, path))
    for archive in _newest_first(nameless):
        placed.append(("/" + id_name(archive.archive_id), archive, None))
    tree = Tree()
    tree.fallbacks = fallbacks
    for path, archive, wanted in placed:
        if path in tree.files:  # two ids hashing alike: keep the newest, the other by its path only
            continue
        tree.add(path, FileNode(archive, mtimes[archive.archive_id], wanted))
    return tree


def without_archive(tree: Tree, archive_id: str, remaining: Callable[[], Iterable[ArchiveInfo]]) -> Tree:
    """The tree of the vault once `archive_id` is gone: always `build_tree(remaining())`, where
    `remaining()` gives every archive but that one.

    Rebuilding costs seconds for 100,000 archives, and backup tools prune archive after archive, so
    the usual case is done in place: a file shown under its own path, of a path no other archive
    wants (or an archive without a name), in a tree where no name clashed. Removing it changes no other name: only it, the
    directories it leaves empty and their ancestors' times go. When other versions share its path
    (`NAME;2` becomes `NAME`), a directory it empties is also a numbered file's path (`a;1` becomes
    `a`), or some archive was pushed to an `id:` name, the tree is rebuilt. `tree` is changed in
    place or replaced: callers use the result."""
    path = tree.by_id.get(archive_id)
    if path is None:
        return tree
    node = tree.files[path]
    if tree.fallbacks or node.wanted not in (path, None) or _has_versions(tree, path):
        return build_tree(remaining())
    parent = path.rsplit("/", 1)[0] or "/"
    vanished: list[str] = []
    entries = {parent: tree.dirs[parent] - {path.rsplit("/", 1)[1]}}
    while parent != "/" and not entries[parent]:
        vanished.append(parent)
        if _has_versions(tree, parent):
            return build_tree(remaining())
        up = parent.rsplit("/", 1)[0] or "/"
        entries[up] = tree.dirs[up] - {parent.rsplit("/", 1)[1]}
        parent = up
    del tree.files[path]
    del tree.by_id[archive_id]
    tree.total_size -= node.archive.size
    for gone in vanished:
        del tree.dirs[gone]
        tree.dir_mtime.pop(gone, None)
    tree.dirs[parent] = entries[parent]
    # Directory times are the newest file below: recompute them upwards from the last one kept.
    here: str | None = parent
    while here is not None:
        newest = 0.0
        for name in tree.dirs[here]:
            child = f"{here.rstrip('/')}/{name}"
            found = tree.files.get(child)
            newest = max(newest, found.mtime if found is not None else tree.dir_mtime.get(child, 0.0))
        tree.dir_mtime[here] = newest
        here = None if here == "/" else (here.rsplit("/", 1)[0] or "/")
    return tree


def _has_versions(tree: Tree, path: str) -> bool:
    """Whether some entry beside `path` is named `<its name>;…` (a version of it, numbered)."""
    parent, _, name = path.rpartition("/")
    return any(entry.startswith(name + VERSION_SEP) for entry in tree.dirs.get(parent or "/", ()))
