"""The records of the local vault (this package) on disk: ids, JSON files, chunked bodies, pages.

Records are JSON files written to a private temporary file and renamed into place, so a reader sees
the old record or the new one. Ids come from clients: only URL-safe base64 can name a file.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from ...errors import InvalidArgument, NotFound, ProtocolError
from .. import treehash
from ..base import MiB, Page, TreeHashMismatch

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
COPY_CHUNK = 1 * MiB
LEAF = 32   # bytes of one leaf (1 MiB) hash in a .leaves file


def check_id(value: str, what: str) -> str:
    """Ids come from clients: anything but URL-safe base64 cannot exist (and must not reach a path)."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise NotFound(f"{what} {value[:40]!r} does not exist")
    return value


def new_id(nbytes: int) -> str:
    return secrets.token_urlsafe(nbytes)


def write_json(path: Path, record: Mapping) -> None:
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def read_json(path: Path, what: str) -> dict:
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


def chunks_of(data: bytes | bytearray | memoryview | Iterable[bytes]) -> Iterable[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)
        return (view[pos: pos + COPY_CHUNK] for pos in range(0, len(view), COPY_CHUNK))
    return data


def file_chunks(fileobj: BinaryIO, size: int) -> Iterator[bytes]:
    remaining = size
    while remaining > 0:
        chunk = fileobj.read(min(COPY_CHUNK, remaining))
        if not chunk:
            raise InvalidArgument(f"upload body ended {remaining} bytes before its declared size")
        remaining -= len(chunk)
        yield chunk


def check_sums(hasher: treehash.TreeHasher, expect_sha256: str | None, expect_tree_hash: str | None) -> None:
    if expect_sha256 is not None and expect_sha256.lower() != hasher.linear_hexdigest():
        raise TreeHashMismatch(f"checksum mismatch: the body's SHA-256 is {hasher.linear_hexdigest()}, "
                               f"not {expect_sha256[:64]}")
    if expect_tree_hash is not None and expect_tree_hash.lower() != hasher.hexdigest():
        raise TreeHashMismatch(f"checksum mismatch: the body's tree hash is {hasher.hexdigest()}, "
                               f"not {expect_tree_hash[:64]}")


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except FileNotFoundError:
        raise NotFound("archive data is missing") from None
    except OSError:
        shutil.copyfile(src, dst)  # a filesystem without hard links


def page(items: list, marker: str | None, limit: int, key: Callable[[object], str]) -> Page:
    """Items from the one whose key is `marker` (inclusive); the next page's marker or None."""
    if marker:
        keys = [key(i) for i in items]
        if marker not in keys:
            raise InvalidArgument(f"marker {marker[:40]!r} is not valid")
        items = items[keys.index(marker):]
    return Page(items[:limit], key(items[limit]) if len(items) > limit else None)
