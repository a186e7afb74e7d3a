"""Everything about a mount except FUSE itself: opening and checking the remote, building the
filesystem and wiring its collaborators (the one place objects are composed; hooks go in through
constructors), the per-mount record that `storefs unmount` reads, and unmounting.
"""
from __future__ import annotations

import atexit
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from typing import Callable

from .attrs import Defaults
from .retrieval.gate import ArchiveGate
from .fs.bucket.blockcache import BlockCache
from .fs.bucket.committer import CommitSettings, Committer
from .fs.bucket.namespace import CacheSettings, Namespace
from .fs.bucket.uploader import UploadSettings
from .store.buckets import AllBuckets
from .config import Config, RemoteSpec
from .errors import ConfigError, StoreError
from .fs.bucket.filesystem import StoreFS
from .fs.bucket.openfiles import OpenFiles
from .fs.bucket.staging import Staging
from .fuse.pagecache import PageCacheWarmer
from .options import MountOptions, RetrievalOptions, VaultOptions
from .paths import KeyMap
from .status import StatusReporter
from .store.registry import provider_module
from .store.contract import ObjectStore, Provider
from .fs.vault.filesystem import VaultFS
from .fs.vault.state import legacy_state_dir, mark_identity, state_dir_for

log = logging.getLogger(__name__)


class MountError(Exception):
    """A mount-time failure with a message for the user. `usage`: exit code 2 (fix the input)."""

    def __init__(self, message: str, usage: bool = True) -> None:
        super().__init__(message)
        self.usage = usage


def open_store(config: Config, spec: RemoteSpec) -> tuple[Provider, ObjectStore]:
    """Open the remote and prove that it answers with these credentials (and that the bucket exists)."""
    remote = config.remote(spec.remote)
    module = provider_module(remote.type)
    if module.SPEC.kind != "bucket":
        raise MountError(f"remote [{remote.name}] is a {remote.type} archive vault, not a bucket store")
    try:
        provider = module.open_provider(remote.name, remote.options)
    except ConfigError:
        raise
    except StoreError as exc:
        raise MountError(f"remote [{remote.name}]: {exc}") from None
    try:
        provider.check(spec.bucket)
    except StoreError as exc:
        provider.close()
        where = f"{spec.remote}:{spec.bucket}" if spec.bucket else f"{spec.remote}:"
        raise MountError(f"cannot use {where} ({remote.type} remote [{remote.name}] in {config.path}): {exc}") from None
    store: ObjectStore = provider.bucket(spec.bucket) if spec.bucket else AllBuckets(provider)
    return provider, store


def check_remote(config: Config, name: str) -> str:
    """Connect to remote `name` and prove its credentials (the check a mount makes, without a bucket
    or vault): a line for the user, or MountError with the message a mount would give."""
    remote = config.remote(name)
    try:
        provider = provider_module(remote.type).open_provider(remote.name, remote.options)
    except ConfigError:
        raise
    except StoreError as exc:
        raise MountError(f"remote [{remote.name}]: {exc}") from None
    try:
        provider.check(None)
    except StoreError as exc:
        raise MountError(f"cannot use {name}: ({remote.type} remote [{remote.name}] in {config.path}): {exc}") from None
    finally:
        provider.close()
    return f"{name}: {remote.type} remote answers, credentials accepted"


def is_vault_remote(config: Config, spec: RemoteSpec) -> bool:
    return provider_module(config.remote(spec.remote).type).SPEC.kind == "vault"


def open_vault_fs(config: Config, spec: RemoteSpec, options: MountOptions, *, poll: bool = True,
                  state_dir: Path | None = None) -> VaultFS:
    """The read-only tree of a vault (or of every vault with `REMOTE:`), its provider checked.
    `poll`: this is a mount: watch the state and pending inventory jobs, and say where the state is
    for `storefs vault refresh` (one-shot commands do neither). `state_dir`: the state directory to
    use (default: the one of the vault's identity under `options.cache_dir`)."""
    remote = config.remote(spec.remote)
    if spec.prefix:
        raise MountError(f"{spec}: a vault is mounted whole (REMOTE:VAULT), not below a path")
    vault_options = VaultOptions(uid=options.uid, gid=options.gid, umask=options.umask,
                                 write_back=options.write_back, transfers=options.transfers)
    for name, value in options.vault.items():
        vault_options.set(name, value)
    if not poll:
        vault_options.inventory_poll = 0
    provider = provider_module(remote.type).open_provider(remote.name, remote.options)
    try:
        provider.check(spec.bucket)
    except StoreError as exc:
        provider.close()
        where = f"{spec.remote}:{spec.bucket or ''}"
        raise MountError(f"cannot use {where} ({remote.type} remote [{remote.name}] in {config.path}): {exc}") from None
    state_dir = state_dir or state_dir_for(options.cache_dir, provider.identity)
    mark_identity(state_dir, provider.identity)
    if poll:
        legacy = legacy_state_dir(options.cache_dir, remote.name)
        if legacy.is_dir():
            log.warning("vault state kept by an older storefs in %s is not used (it does not say which "
                        "endpoint it came from; the state is now kept per vault service in %s): remove it "
                        "when no older storefs uses it", legacy, state_dir)
        register_vault_mount(provider.identity, state_dir)
    fs = VaultFS(provider, spec.bucket, vault_options, state_dir)
    fs.start()
    return fs


# -- where running vault mounts keep their state (`storefs vault refresh` hands new inventories on) --

def _vault_mount_record(pid: int) -> Path:
    return runtime_dir() / f"vault-mount-{pid}.json"


def register_vault_mount(identity: str, state_dir: Path) -> None:
    """Tell `storefs vault refresh` that this process mounts the vaults of `identity` with its state in
    `state_dir` (a mount with `-o cache_dir` keeps it elsewhere than the default). Removed at exit; a
    record whose process is gone is ignored and removed by the reader."""
    path = _vault_mount_record(os.getpid())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "identity": identity, "state_dir": str(state_dir)}))
    os.replace(tmp, path)
    atexit.register(path.unlink, missing_ok=True)


def vault_mount_state_dirs(identity: str) -> list[Path]:
    """The state directories of the running mounts of vaults of `identity`."""
    found = []
    for path in sorted(runtime_dir().glob("vault-mount-*.json")):
        try:
            record = json.loads(path.read_text())
            pid, state_dir = int(record["pid"]), Path(str(record["state_dir"]))
            same = record["identity"] == identity
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not pid_alive(pid):
            path.unlink(missing_ok=True)
            continue
        if same and state_dir not in found:
            found.append(state_dir)
    return found


def vault_identity(config: Config, spec: RemoteSpec) -> str:
    """The identity of a vault remote's service, from its configuration alone (no request)."""
    remote = config.remote(spec.remote)
    provider = provider_module(remote.type).open_provider(remote.name, remote.options)
    try:
        return provider.identity
    finally:
        provider.close()


def mount_id(spec: RemoteSpec) -> str:
    """A stable name for a remote location, for its staging and cache directories."""
    text = str(spec)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60]
    return f"{safe}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def archive_gate(store: ObjectStore, spec: RemoteSpec, options: MountOptions) -> ArchiveGate | None:
    """Restore-on-open for a store with archive storage classes, tuned by the vault_* mount options."""
    if not store.capabilities.archive_classes:
        if options.vault:
            raise MountError(f"-o {', '.join(sorted(options.vault))}: vault options, but {spec.remote} is a "
                             f"bucket store without archive storage classes")
        return None
    retrieval = RetrievalOptions()
    for name, value in options.vault.items():
        if name not in RetrievalOptions.HELP:
            raise MountError(f"-o {name}: for vault mounts only; a bucket mount takes "
                             f"{', '.join(sorted(RetrievalOptions.HELP))}")
        retrieval.set(name, value)
    return ArchiveGate(store, retrieval)


def bucket_fs(store: ObjectStore, prefix: str, options: MountOptions, staging: Staging, *,
              cache: BlockCache | None = None, location: str = "", archive: ArchiveGate | None = None,
              warm_page_cache: Callable[[str], None] | None = None,
              on_change: Callable[[], None] = lambda: None) -> StoreFS:
    """The bucket filesystem over `store` below `prefix`, its collaborators built from the options.
    `warm_page_cache(path)`: reads a file through the mount (fuse/pagecache.py); `on_change`: the
    upload queue changed (the status reporter's wake-up)."""
    keys = KeyMap.for_prefix(prefix)
    defaults = Defaults(uid=options.uid, gid=options.gid, file_mode=0o666 & ~options.umask,
                        dir_mode=0o777 & ~options.umask)
    ns = Namespace(store, keys, defaults,
                   CacheSettings(options.attr_ttl, options.dir_ttl, options.neg_ttl,
                                 stat_ahead=0 if options.listing_attrs == "fast" else CacheSettings.stat_ahead))
    table = OpenFiles()
    committer = Committer(store, ns, staging, table,
                          UploadSettings(part_size=options.part_size, workers=options.upload_workers,
                                         drop_sent=True),
                          CommitSettings(write_back=options.write_back, transfers=options.transfers,
                                         fsync_uploads=options.fsync != "local",
                                         stream_uploads=options.stream_uploads),
                          on_change=on_change)
    return StoreFS(store, keys, options, ns=ns, staging=staging, table=table, committer=committer,
                   cache=cache, location=location, archive=archive, warm_page_cache=warm_page_cache)


def lock_staging(staging: Staging, spec: RemoteSpec, options: MountOptions) -> int:
    """Exclusive use of this remote location's staging area and journal, for the life of the process:
    the descriptor holding the lock (kept open)."""
    lock_fd = os.open(staging.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        raise MountError(f"{spec} is already mounted with cache_dir {options.cache_dir}: two mounts of one "
                         f"location would share its upload journal (unmount the other, or use -o cache_dir=)")
    return lock_fd


def build_fs(store: ObjectStore, spec: RemoteSpec, options: MountOptions, *,
             warm_page_cache: Callable[[str], None] | None = None,
             on_change: Callable[[], None] = lambda: None) -> StoreFS:
    """The mount's filesystem, with exclusive use of this remote location's staging area and journal."""
    archive = archive_gate(store, spec, options)
    staging = Staging(options.cache_dir / "staging" / mount_id(spec), options.staging_size)
    lock_staging(staging, spec, options)
    cache = BlockCache(options.cache_dir / "blocks", options.cache_size) if options.cache_size else None
    return bucket_fs(store, spec.prefix, options, staging, cache=cache, location=f"{spec.remote}:{spec.bucket or ''}",
                     archive=archive, warm_page_cache=warm_page_cache, on_change=on_change)


@dataclasses.dataclass
class BucketMount:
    """A bucket mount's filesystem and the helpers that live as long as it is mounted."""
    fs: StoreFS
    warmer: PageCacheWarmer     # reads files through the mount for the kernel's page cache
    reporter: StatusReporter    # `storefs status` and `storefs flush`; start() once mounted

    def stop(self) -> None:
        self.warmer.stop()
        self.reporter.stop()


def mount_bucket(store: ObjectStore, spec: RemoteSpec, options: MountOptions, mountpoint: str) -> BucketMount:
    """Everything a bucket mount on `mountpoint` runs, wired: the filesystem (build_fs), the page-cache
    warmer it calls on random access, and the status reporter woken by its upload queue."""
    warmer, changes = PageCacheWarmer(mountpoint), threading.Event()
    fs = build_fs(store, spec, options, warm_page_cache=warmer.warm, on_change=changes.set)
    reporter = StatusReporter(fs.committer, fs.staging, runtime_dir(), mountpoint, str(spec), changes,
                              cache=fs.cache, cache_limit=options.cache_size)
    return BucketMount(fs, warmer, reporter)


def check_mountpoint(path: str) -> str:
    real = os.path.realpath(path)
    if not os.path.exists(real):
        raise MountError(f"mountpoint {path} does not exist: create it with mkdir -p {path}")
    if not os.path.isdir(real):
        raise MountError(f"mountpoint {path} is not a directory")
    if is_mounted(real):
        raise MountError(f"{path} is already a mount point: unmount it first (storefs unmount {path})")
    if os.listdir(real):
        raise MountError(f"mountpoint {path} is not empty: use an empty directory")
    return real


# -- the record of a running mount ----------------------------------------------------------------

def runtime_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base:
        base = "/run" if os.geteuid() == 0 else os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "storefs"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


@dataclasses.dataclass
class MountRecord:
    pid: int
    mountpoint: str
    remote: str
    log_file: str | None
    started: float
    # where the mount keeps its staging and vault state (-o cache_dir), for commands run beside it
    # (`storefs restore` of a path inside it); None in records of older versions: the default
    cache_dir: str | None = None

    @staticmethod
    def path_for(mountpoint: str) -> Path:
        # abspath, not realpath: this runs inside FUSE's init, where a stat of the mountpoint would
        # wait for the very filesystem that is starting (a deadlock). Callers pass resolved paths.
        digest = hashlib.sha1(os.path.abspath(mountpoint).encode()).hexdigest()[:16]
        return runtime_dir() / f"mount-{digest}.json"

    def save(self) -> None:
        path = self.path_for(self.mountpoint)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self)))
        os.replace(tmp, path)

    @classmethod
    def load(cls, mountpoint: str) -> "MountRecord | None":
        try:
            return cls(**json.loads(cls.path_for(mountpoint).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def remove(self) -> None:
        self.path_for(self.mountpoint).unlink(missing_ok=True)


def is_mounted(path: str) -> bool:
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and _unescape(fields[4]) == real:
                    return True
    except OSError:
        pass
    return False


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def stop_on_signals(mountpoint: str) -> threading.Thread:
    """Unmount when SIGTERM, SIGINT or SIGHUP arrives; the daemon then drains its queue and exits.

    libfuse 2's own handlers only set a flag that its loop notices when a FUSE worker's read() is
    interrupted; delivered to any other thread (ours), the signal stops nothing. So the caller blocks
    these signals in every thread before starting any, and this thread alone takes them."""
    def wait() -> None:
        number = signal.sigwait(STOP_SIGNALS)
        log.warning("%s: unmounting %s (pending uploads finish first)", signal.Signals(number).name, mountpoint)
        tool = shutil.which("fusermount") or shutil.which("fusermount3")
        plain = [tool, "-u", mountpoint] if tool else ["umount", mountpoint]
        lazy = [tool, "-uz", mountpoint] if tool else ["umount", "-l", mountpoint]
        if subprocess.run(plain, capture_output=True).returncode:
            # Busy: detach now; the kernel ends the session when the last file is closed.
            subprocess.run(lazy, capture_output=True)
    thread = threading.Thread(target=wait, name="stop-signals", daemon=True)
    thread.start()
    return thread


def unmount(mountpoint: str, timeout: float) -> str:
    """Unmount and wait for the daemon to finish its uploads. Returns a line for the user."""
    real = os.path.realpath(mountpoint)
    if not is_mounted(real):
        raise MountError(f"{mountpoint} is not mounted")
    record = MountRecord.load(real)
    tool = shutil.which("fusermount") or shutil.which("fusermount3")
    cmd = [tool, "-u", real] if tool else ["umount", real]
    for _ in range(10):
        result = subprocess.run(cmd, capture_output=True, text=True)
        # Busy for a moment can be storefs itself: its page-cache warmer holds a file open for the
        # time of one chunk read (pagecache.py). Busy for two seconds is a user's open file.
        if result.returncode == 0 or "busy" not in (result.stderr + result.stdout).lower():
            break
        time.sleep(0.2)
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["unknown error"]
        if "busy" in reason[0].lower():
            raise MountError(f"{mountpoint} is busy: close the files open on it (see: fuser -vm {mountpoint})",
                             usage=False)
        raise MountError(f"unmounting {mountpoint} failed: {reason[0]}", usage=False)
    if record is None or not pid_alive(record.pid):
        return f"unmounted {mountpoint}"
    deadline = time.monotonic() + timeout
    while pid_alive(record.pid):
        if time.monotonic() > deadline:
            raise MountError(f"unmounted {mountpoint}, but storefs (pid {record.pid}) is still uploading "
                             f"after {timeout:.0f}s; it keeps going, and its data stays staged on disk",
                             usage=False)
        time.sleep(0.05)
    left = take_exit_report(real)
    if left:
        raise MountError(f"unmounted {mountpoint}, but {len(left)} file(s) could not be uploaded: "
                         f"{'; '.join(left[:5])}. They stay staged; the next mount uploads them", usage=False)
    return f"unmounted {mountpoint}"


def exit_report_path(mountpoint: str) -> Path:
    digest = hashlib.sha1(os.path.abspath(mountpoint).encode()).hexdigest()[:16]
    return runtime_dir() / f"exit-{digest}.json"


def write_exit_report(mountpoint: str, left: list[str]) -> None:
    """What the daemon could not upload before exiting, for `storefs unmount` to report."""
    exit_report_path(mountpoint).write_text(json.dumps({"left": left}))


def take_exit_report(mountpoint: str) -> list[str]:
    path = exit_report_path(mountpoint)
    try:
        left = json.loads(path.read_text()).get("left", [])
    except (OSError, ValueError):
        return []
    path.unlink(missing_ok=True)
    return left
