"""Mapping between mount paths (`/a/b`) and object keys (`<prefix>a/b`), and which names are legal.

A mount of `REMOTE:BUCKET/PREFIX` sees the keys under `PREFIX/`. A directory `/a` is the key prefix
`a/` (and its optional marker object `a/`). Listing entries that no filesystem can show as-is
(`a//b`, `.`, `..`) are skipped by `child_name()` with a log line, never shown.
"""
from __future__ import annotations

import dataclasses
import logging

from .errors import InvalidArgument, NameTooLong

log = logging.getLogger(__name__)

NAME_MAX = 255          # bytes per path component, as ext4 and the kernel's NAME_MAX
KEY_MAX = 1024          # bytes per object key, the S3 limit shared by the providers we know


@dataclasses.dataclass(frozen=True)
class KeyMap:
    prefix: str = ""  # "" or ends with "/"

    @staticmethod
    def for_prefix(prefix: str) -> "KeyMap":
        prefix = prefix.strip("/")
        return KeyMap(prefix + "/" if prefix else "")

    def key(self, path: str) -> str:
        """Object key of a file path. `/` (the mount root) maps to the prefix itself."""
        check_path(path)
        key = self.prefix + path.lstrip("/")
        # The limit is on the key, prefix included (SEMANTICS.md: at most 1024 bytes per key); a
        # longer key would only fail later at the server, as EIO.
        check_key_length(key)
        return key

    def dir_key(self, path: str) -> str:
        """Key prefix of a directory path: its children's keys start with it ("" for the root)."""
        key = self.key(path)
        return key if not key or key.endswith("/") else key + "/"

    def path(self, key: str) -> str:
        if not key.startswith(self.prefix):
            raise InvalidArgument(f"key {key!r} is outside prefix {self.prefix!r}")
        return "/" + key[len(self.prefix):].rstrip("/")


def check_path(path: str) -> None:
    if not path.startswith("/"):
        raise InvalidArgument(f"not an absolute path: {path!r}")
    try:
        raw = path.encode("utf-8")
    except UnicodeEncodeError:
        # Bytes that are not UTF-8 (mfusepy hands them over as surrogates): object keys are UTF-8, so
        # such a file could never be uploaded, or would vanish from listings once it was (EINVAL).
        raise InvalidArgument(f"name is not valid UTF-8: {path!r}") from None
    for part in raw.split(b"/"):
        if len(part) > NAME_MAX:
            raise NameTooLong(f"name longer than {NAME_MAX} bytes: {part[:40].decode(errors='replace')!r}…")
    # "/" + a key of KEY_MAX bytes is fine: the key is the path without its leading "/" (the old
    # check counted the "/" and refused keys of exactly 1024 bytes).
    if len(raw) > KEY_MAX + 1:
        raise NameTooLong(f"path longer than {KEY_MAX} bytes")


def check_key_length(key: str) -> None:
    """Refuse a key (a file's, or a directory's marker `dir/`) over KEY_MAX bytes: ENAMETOOLONG."""
    if len(key.encode("utf-8", "surrogateescape")) > KEY_MAX:
        raise NameTooLong(f"object key longer than {KEY_MAX} bytes")


def parent(path: str) -> str:
    head = path.rstrip("/").rsplit("/", 1)[0]
    return head or "/"


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


def is_within(path: str, directory: str) -> bool:
    """True if `path` is `directory` or below it."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def child_name(dir_key: str, key: str) -> str | None:
    """The name a listed key shows under directory `dir_key`, or None if it cannot be shown."""
    rest = key[len(dir_key):]
    if not rest:
        return None  # the directory's own marker
    rest = rest.removesuffix("/")
    # `not rest`: the prefix `d//` of a key `d//x` (an empty component), skipped with a log line too.
    if not rest or "/" in rest or rest in (".", "..") or "\0" in rest:
        log.warning("skipping key %r: it has no file name a filesystem can show", key)
        return None
    try:
        rest.encode("utf-8")
    except UnicodeEncodeError:
        # Not UTF-8 (a provider kept undecodable bytes as surrogates): the kernel side encodes names
        # strictly, so one such name would make the whole directory unreadable (EINVAL).
        log.warning("skipping key %r: its name is not valid UTF-8", key)
        return None
    if len(rest.encode("utf-8", "surrogateescape")) > NAME_MAX:
        log.warning("skipping key %r: name longer than %d bytes", key, NAME_MAX)
        return None
    return rest
