"""Mount options (`-o name=value,flag,…`): parsing, validation and defaults, in one place.

Pure data: MountOptions (every mount), RetrievalOptions (an open of what is not retrieved yet: the
archive-class objects of a bucket mount) and VaultOptions (a vault mount: retrievals, plus writes).
Nothing here imports the filesystems, vaults or providers that read them; values that name things of
theirs (a retrieval tier) stay plain strings, checked against a list kept here.
Unknown names are an error that lists the known ones, so a typo never passes silently.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import re
from pathlib import Path
from typing import ClassVar

from .errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str, what: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"{what}: {text!r} is not a size (examples: 4096, 512M, 10G)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _flag(value: str | None) -> bool:
    return value is None or value.strip().lower() in ("", "1", "yes", "true", "on")


# mount(8)'s generic options: an fstab line carries them, mount.fuse3 passes them on, and they mean
# nothing to storefs (the kernel and libfuse already apply nosuid and nodev to a FUSE mount). Accepted
# and ignored. `ro`/`rw` are honoured; `noatime` and friends are what storefs does anyway (SEMANTICS.md).
MOUNT8_IGNORED = frozenset({
    "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "suid", "nosuid",
    "dev", "nodev", "exec", "noexec", "nofail", "_netdev", "async", "atime", "noatime", "relatime",
    "strictatime", "nodiratime", "diratime", "lazytime", "nolazytime", "loud", "silent",
})
MOUNT8_IGNORED_PREFIXES = ("x-", "comment=")


def is_mount8_generic(option: str) -> bool:
    """Is `option` (`name` or `name=value`) one of mount(8)'s that storefs ignores?"""
    return option in MOUNT8_IGNORED or option.startswith(MOUNT8_IGNORED_PREFIXES)


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
    fuse: str | None = None   # the FUSE binding (fuse.bindings.FUSE_LIBRARIES); None: the default
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
    write_back: float = 0.2
    transfers: int = 4
    fsync: str = "upload"
    # S3 and local: large files written in sequence go up while written: auto (on, except where the
    # server dates a multipart object by its start, AWS), on, or off (fs/bucket/streaming.py)
    stream_uploads: str = "auto"
    drain_timeout: float = 3600.0
    # statfs: the size the mount reports; None = the size of the disk holding the cache directory
    total_size: int | None = None
    # vault_* options (VaultOptions.HELP; bucket mounts take RetrievalOptions.HELP): name -> value
    # (None for a bare flag), checked by the composition root, which knows what is mounted
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
        "write_back": "seconds from close to upload, buckets and vault_writes (default 0.2; 0 = upload before "
                      "close returns)",
        "transfers": "large files uploaded at once (default 4); files of one PUT each: 4 times as many",
        "stream_uploads": "S3 and local buckets: a large file written in sequence goes up in parts while it is "
                          "written: auto (default: on, except on AWS S3 endpoints), on or off (its mtime is "
                          "then the object's Last-Modified, see SEMANTICS.md)",
        "fsync": "upload (default: fsync uploads the file) or local (fsync only makes it durable on disk)",
        "drain_timeout": "seconds unmount waits for pending uploads (default 3600)",
    }

    @classmethod
    def parse(cls, specs: list[str]) -> "MountOptions":
        opts = cls()
        for spec in specs:
            for item in filter(None, (s.strip() for s in spec.split(","))):
                if is_mount8_generic(item):
                    continue
                name, _, value = item.partition("=")
                opts._set(name.strip(), value.strip(), bool(_))
        return opts

    def _set(self, name: str, value: str, has_value: bool) -> None:
        flags = {"allow_other": "allow_other", "default_permissions": "default_permissions", "ro": "read_only",
                 "xattr": "xattr"}
        if name == "stream_uploads":   # a bare flag means on (as before it had values)
            self.stream_uploads = STREAM_MODES.get(value.lower() if has_value else "on", "")
            if not self.stream_uploads:
                raise ConfigError("-o stream_uploads must be auto, on or off")
            return
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
                # Kept in step with fuse.bindings.FUSE_LIBRARIES (not imported here: that loads libfuse).
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


# -o stream_uploads's values and their spellings.
STREAM_MODES = {"auto": "auto", "on": "on", "1": "on", "yes": "on", "off": "off", "0": "off", "no": "off"}


# Retrieval tiers (storefs.vaults.base.Tier, S3 and COS restore tiers), as the services spell them.
TIERS = ("Expedited", "Standard", "Bulk")
NOT_READY_ERRNOS = {"EAGAIN": errno.EAGAIN, "EREMOTE": errno.EREMOTE, "EACCES": errno.EACCES,
                    "EIO": errno.EIO}


def parse_tier(value: str | None) -> str | None:
    """The tier named `value` (any case), spelled as in TIERS; None for a missing or unknown name."""
    for tier in TIERS:
        if value and value.lower() == tier.lower():
            return tier
    return None


@dataclasses.dataclass
class RetrievalOptions:
    """What an open of something not retrieved yet does (a bucket's archive-class object; a vault's
    archive, see VaultOptions): which restore it asks for, how long it waits, how it fails."""

    tier: str = "Standard"             # of TIERS
    wait: float = 0.0                  # seconds open() waits for a retrieval; 0: fail at once
    not_ready_errno: str = "EAGAIN"    # of NOT_READY_ERRNOS
    days: int = 7                      # bucket archive classes only: lifetime of a restored copy
    # waits look at the job after poll_min seconds, then back off, doubling up to poll_max
    poll_min: float = 1.0
    poll_max: float = 30.0

    HELP: ClassVar[dict[str, str]] = {
        "vault_tier": "retrieval tier for jobs started on open: Expedited, Standard (default) or Bulk",
        "vault_wait": "seconds open() waits for a retrieval job before failing (default 0)",
        "vault_errno": "errno of an open whose archive is not retrieved yet: EAGAIN (default), EREMOTE, "
                       "EACCES or EIO",
        "vault_days": "archive storage classes in buckets: days a restored copy stays readable (default 7)",
    }

    def __post_init__(self) -> None:
        tier = parse_tier(self.tier)
        if tier is None:
            raise ConfigError(f"vault_tier={self.tier}: use Expedited, Standard or Bulk")
        self.tier = tier
        if self.not_ready_errno.upper() not in NOT_READY_ERRNOS:
            raise ConfigError(f"vault_errno={self.not_ready_errno}: use one of {', '.join(NOT_READY_ERRNOS)}")
        self.not_ready_errno = self.not_ready_errno.upper()
        if self.wait < 0:
            raise ConfigError("vault_wait must not be negative")

    @property
    def errno(self) -> int:
        return NOT_READY_ERRNOS[self.not_ready_errno]

    def set(self, name: str, value: str | None) -> None:
        """Apply one `-o name[=value]` mount option of HELP (ConfigError if it is not valid)."""
        if name == "vault_tier":
            tier = parse_tier(value)
            if tier is None:
                raise ConfigError(f"vault_tier={value}: use Expedited, Standard or Bulk")
            self.tier = tier
        elif name == "vault_wait":
            try:
                self.wait = float(value or "")
            except ValueError:
                raise ConfigError(f"vault_wait={value}: a number of seconds") from None
            if self.wait < 0:
                raise ConfigError("vault_wait must not be negative")
        elif name == "vault_errno":
            if (value or "").upper() not in NOT_READY_ERRNOS:
                raise ConfigError(f"vault_errno={value}: use one of {', '.join(NOT_READY_ERRNOS)}")
            self.not_ready_errno = (value or "").upper()
        elif name == "vault_days":
            try:
                self.days = int(value or "")
            except ValueError:
                raise ConfigError(f"vault_days={value}: a whole number of days") from None
            if not 1 <= self.days <= 30000:
                raise ConfigError("vault_days must be between 1 and 30000")
        else:
            raise ConfigError(f"unknown vault option {name!r} (known: {', '.join(sorted(self.HELP))})")


@dataclasses.dataclass
class VaultOptions(RetrievalOptions):
    """Options of a vault mount: its retrievals (RetrievalOptions; `days` is accepted and unused) and
    what is its own. `cache_dir`: downloaded archive bytes go to
    `<cache_dir>/vault-data/<remote>/<vault>/data` (default: the state directory)."""

    vault_writes: bool = False         # new files are uploaded as new archives at close
    vault_deletes: bool = False        # unlink deletes the archive on the service
    keep_uploads: bool = False         # keep uploaded bytes in the cache (readable without a job)
    uid: int = dataclasses.field(default_factory=os.getuid)
    gid: int = dataclasses.field(default_factory=os.getgid)
    umask: int = 0o022
    cache_dir: Path | None = None
    poll_max: float = 60.0
    # the inventory poller runs every inventory_poll seconds (0: never, callers use
    # check_inventory()); an xattr read asks the server about an in-progress job at most every
    # status_ttl seconds.
    inventory_poll: float = 60.0
    status_ttl: float = 30.0
    # every `watch` seconds the mount looks (a stat, a few bytes read) whether another process changed
    # a vault's state: `storefs vault refresh` swapped an inventory in, an archive was deleted
    watch: float = 0.2
    # -o vault_ranges: archives of at least ranges_min bytes are read by ranged jobs of range_window
    # bytes around the offset read (None: off, the default: see README "Partial retrieval")
    ranges_min: int | None = None
    range_window: int = 8 << 20
    # -o vault_cache_size: bytes of downloaded data kept per vault (None: as much as the disk holds)
    data_cache_size: int | None = None

    RANGES_MIN_DEFAULT: ClassVar[int] = 64 << 20   # what a bare `-o vault_ranges` means
    # vault_writes: seconds a closed new file stays staged (chmod, utimens, rename, unlink are still
    # possible) before its upload; 0 uploads inside close. A mount passes its `-o write_back` (default
    # 0.5, as for buckets) and `-o transfers` (uploads at once).
    write_back: float = 0.0
    transfers: int = 4

    HELP: ClassVar[dict[str, str]] = {
        **RetrievalOptions.HELP,
        "vault_writes": "new files become new archives write_back seconds after close (until then they can "
                        "be renamed, chmod-ed, re-timed or removed); archives stay immutable",
        "vault_keep_uploads": "keep the bytes of uploaded files in the cache, readable at once",
        "vault_deletes": "rm deletes the archive on the service (without it, rm is EROFS)",
        "vault_ranges": "a read of an archive not retrieved yet starts a ranged job for a window around "
                        "the offset read, not a whole-archive job: bare, for archives of 64M and more; "
                        "=SIZE for archives of at least SIZE; off (default)",
        "vault_range_window": "bytes one ranged job of vault_ranges retrieves, rounded up to 1 MiB x 2^n "
                              "(default 8M)",
        "vault_cache_size": "bytes of downloaded archives and ranges kept per vault, least recently used "
                            "evicted first, never one being read, e.g. 20G (default: as much as the disk "
                            "holds, evicting when it is full)",
    }

    def set(self, name: str, value: str | None) -> None:
        if name == "vault_writes":
            self.vault_writes = _flag(value)
        elif name == "vault_keep_uploads":
            self.keep_uploads = _flag(value)
        elif name == "vault_deletes":
            self.vault_deletes = _flag(value)
        elif name == "vault_ranges":
            text = (value or "").strip().lower()
            if value is None or text in ("", "1", "yes", "true", "on"):
                self.ranges_min = self.RANGES_MIN_DEFAULT
            elif text in ("0", "no", "false", "off"):
                self.ranges_min = None
            else:
                self.ranges_min = parse_size(text, "-o vault_ranges")
        elif name == "vault_range_window":
            window = parse_size(value or "", "-o vault_range_window")
            if not 1 << 20 <= window <= 4 << 30:
                raise ConfigError("-o vault_range_window must be between 1M and 4G")
            size = 1 << 20
            while size < window:  # 1 MiB x 2^n: a window that starts at a multiple of it is a tree node
                size *= 2
            self.range_window = size
        elif name == "vault_cache_size":
            size = parse_size(value or "", "-o vault_cache_size")
            self.data_cache_size = size or None
        else:
            super().set(name, value)
