"""Mount options (`-o name=value,flag,…`): parsing, validation and defaults, in one place.

Unknown names are an error that lists the known ones, so a typo never passes silently.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from .errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str, what: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"{what}: {text!r} is not a size (examples: 4096, 512M, 10G)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "storefs"


@dataclasses.dataclass
class MountOptions:
    # who owns files that carry no uid/gid, and their permissions
    uid: int = dataclasses.field(default_factory=os.getuid)
    gid: int = dataclasses.field(default_factory=os.getgid)
    umask: int = 0o022
    # FUSE
    allow_other: bool = False
    default_permissions: bool = False
    read_only: bool = False
    xattr: bool = False  # S3 mounts: answer user.storefs.* extended attributes (costs `ls -l` time)
    fuse: str | None = None   # the FUSE binding (fuse_ops.FUSE_LIBRARIES); None: the default
    # metadata caches, seconds
    attr_ttl: float = 10.0
    dir_ttl: float = 10.0
    neg_ttl: float = 5.0
    listing_attrs: str = "exact"   # or "fast": see CacheSettings.stat_ahead
    # local disk
    cache_dir: Path = dataclasses.field(default_factory=default_cache_dir)
    cache_size: int = 2 << 30     # the read block cache (0: no disk cache)
    staging_size: int | None = None
    # transfers
    part_size: int = 8 << 20
    upload_workers: int = 4
    read_ahead: int = 64 << 20
    # write-back: seconds between close and upload (0: upload inside close), files uploaded at once,
    # what fsync promises, and how long unmount waits for the queue
    write_back: float = 2.0
    transfers: int = 4
    fsync: str = "upload"
    drain_timeout: float = 3600.0
    # statfs: the size the mount reports; None = the size of the disk holding the cache directory
    total_size: int | None = None
    # vault mounts only (VaultOptions.HELP): name -> value (None for a bare flag), checked there
    vault: dict = dataclasses.field(default_factory=dict)

    HELP = {
        "uid": "owner of files without stored ownership (default: you)",
        "gid": "group of files without stored ownership (default: yours)",
        "umask": "octal umask for files without stored modes (default 022)",
        "allow_other": "let other users use the mount, with the shown modes enforced by the kernel "
                       "(implies default_permissions; needs user_allow_other for non-root)",
        "default_permissions": "let the kernel enforce file modes (always on with allow_other)",
        "ro": "mount read-only (every change is EROFS)",
        "xattr": "S3 buckets: show user.storefs.storage_class and user.storefs.retrieval (off by default: "
                 "answering extended attributes makes `ls -l` ~10x slower on big directories)",
        "fuse": "FUSE binding: mfusepy (default: libfuse 3, requests up to 1 MiB; falls back to fusepy "
                "if libfuse 3 is missing) or fusepy (libfuse 2, 128 KiB requests)",
        "attr_ttl": "seconds an attribute is cached (default 10)",
        "dir_ttl": "seconds a directory listing is cached (default 10)",
        "neg_ttl": "seconds a 'does not exist' is cached (default 5)",
        "listing_attrs": "exact (default: fetch stored mtimes/modes with a listing, in parallel) or fast",
        "cache_dir": "where staged files live (default ~/.cache/storefs)",
        "cache_size": "size of the read cache on disk, e.g. 10G (default 2G; 0 turns it off)",
        "staging_size": "cap on staged data, e.g. 10G; writes past it fail with ENOSPC",
        "part_size": "multipart part size, e.g. 8M (raised to the provider's minimum)",
        "upload_workers": "parts uploaded in parallel (default 4)",
        "read_ahead": "largest read-ahead window per open file (default 64M; at most 4 GETs of 8 MiB in flight)",
        "total_size": "size statfs reports, e.g. 1T (default: the cache disk's size)",
        "write_back": "seconds from close to upload (default 2; 0 = upload before close returns)",
        "transfers": "files uploaded at once (default 4)",
        "fsync": "upload (default: fsync uploads the file) or local (fsync only makes it durable on disk)",
        "drain_timeout": "seconds unmount waits for pending uploads (default 3600)",
    }

    @classmethod
    def parse(cls, specs: list[str]) -> "MountOptions":
        opts = cls()
        for spec in specs:
            for item in filter(None, (s.strip() for s in spec.split(","))):
                name, _, value = item.partition("=")
                opts._set(name.strip(), value.strip(), bool(_))
        return opts

    def _set(self, name: str, value: str, has_value: bool) -> None:
        flags = {"allow_other": "allow_other", "default_permissions": "default_permissions", "ro": "read_only",
                 "xattr": "xattr"}
        if name in flags:
            if has_value:
                raise ConfigError(f"option {name} takes no value")
            setattr(self, flags[name], True)
            if name == "allow_other":
                # storefs checks no modes itself: letting others in without the kernel's checks would
                # let every user read and write every file, whatever its mode.
                self.default_permissions = True
            return
        if name == "rw":
            self.read_only = False
            return
        from .fs.vault.filesystem import VaultOptions
        if name in VaultOptions.HELP:
            self.vault[name] = value if has_value else None
            return
        if name not in self.HELP:
            known = ", ".join(sorted(set(self.HELP) | set(VaultOptions.HELP)))
            raise ConfigError(f"unknown mount option {name!r} (known: {known})")
        if not has_value:
            raise ConfigError(f"option {name} needs a value: -o {name}=…")
        try:
            if name in ("uid", "gid", "upload_workers", "transfers"):
                setattr(self, name, int(value))
            elif name == "listing_attrs":
                if value not in ("exact", "fast"):
                    raise ConfigError("-o listing_attrs must be exact or fast")
                self.listing_attrs = value
            elif name == "fuse":
                # Kept in step with fuse_ops.FUSE_LIBRARIES (not imported here: that loads libfuse).
                if value not in ("mfusepy", "fusepy"):
                    raise ConfigError("-o fuse must be mfusepy or fusepy")
                self.fuse = value
            elif name == "fsync":
                if value not in ("upload", "local"):
                    raise ConfigError("-o fsync must be upload or local")
                self.fsync = value
            elif name == "umask":
                self.umask = int(value, 8)
            elif name in ("attr_ttl", "dir_ttl", "neg_ttl", "write_back", "drain_timeout"):
                setattr(self, name, float(value))
            elif name == "cache_dir":
                self.cache_dir = Path(os.path.expanduser(value)).absolute()
            else:
                setattr(self, name, parse_size(value, f"-o {name}"))
        except ValueError:
            raise ConfigError(f"-o {name}={value}: not a valid value") from None
        if (name == "upload_workers" and self.upload_workers < 1) or (name == "transfers" and self.transfers < 1):
            raise ConfigError(f"-o {name} must be at least 1")
