"""The two libfuse bindings and mounting with one: loading a binding, the FUSE class with storefs's
fixes, and run(). The only module that imports a binding; `ops.py` holds the callbacks.

Two bindings (`-o fuse=`, FUSE_LIBRARIES): mfusepy on libfuse 3, the default, and fusepy 3.0.1 on
libfuse 2. On libfuse 3 the kernel sends write requests of up to 1 MiB instead of libfuse 2's 128 KiB,
and read requests too where the daemon may raise the mount's read-ahead (root): 8x fewer Python calls
per byte; sequential reads and writes are faster (BENCHMARKS.md). The binding is imported only in
run(), once per process (mfusepy picks its libfuse when imported); if libfuse 3 is missing the default
falls back to fusepy. The differences are absorbed in `_binding_class()`, never in FuseOps.

Traps handled here (ARCHITECTURE.md):
- libfuse 2 passes UTIME_OMIT/UTIME_NOW only with `flag_utime_omit_ok`, which fusepy never sets: it is
  set on the operations struct; on both libfuse versions the raw timespecs are read (the bindings turn
  them into numbers that lose UTIME_OMIT/NOW), so both work and nanoseconds survive;
- mfusepy on libfuse 3 drops the file handle of truncate (ftruncate is merged into truncate there) and
  the flags of rename (RENAME_NOREPLACE/EXCHANGE, which must not be ignored): both are handled here;
- raw_fi=True keeps create()'s flags.
"""
from __future__ import annotations

import ctypes.util
import dataclasses
import errno
import importlib
import itertools
import logging
import os
import signal
import sys
import threading
import time
from types import ModuleType
from typing import Any, Callable

from ..fs.api import MountedFS
from . import splicedread
from .ops import FuseOps

log = logging.getLogger(__name__)

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2



@dataclasses.dataclass(frozen=True)
class Binding:
    """A Python binding for libfuse: the module it is imported as and the libfuse major it drives."""
    module: str
    libfuse: int


# `-o fuse=` values, the default first.
FUSE_LIBRARIES = {"mfusepy": Binding(module="mfusepy", libfuse=3), "fusepy": Binding(module="fuse", libfuse=2)}
DEFAULT_FUSE = next(iter(FUSE_LIBRARIES))
# libfuse 3 on a kernel with max_pages (4.20+) takes requests up to 1 MiB (its own ceiling: 256 pages).
BIG_REQUEST = 1 << 20
# Read requests stop 16 KiB short of that: libfuse splices a reply (splicedread.py) only if its pipe can
# hold the data, the header and three spare pages, and an unprivileged process (or root without
# CAP_SYS_RESOURCE, as in containers) gets pipes of at most 1 MiB (/proc/sys/fs/pipe-max-size).
READ_REQUEST = BIG_REQUEST - 16 * 1024
SPLICE_PIPE = BIG_REQUEST    # read_buf's own pipe: 256 slots, for 252 pages that may straddle pages
FUSE_READDIR_PLUS = 1 << 0     # libfuse 3: readdir's flags
FUSE_FILL_DIR_PLUS = 1 << 1    # libfuse 3: filler's flags
FUSE_CAP_READDIRPLUS_AUTO = 1 << 14   # libfuse 3: fuse_conn_info.want

# Whether this libfuse worker thread keeps its Python thread state (_keep_thread_state).
_worker = threading.local()


def _keep_thread_state() -> None:
    """Keep the calling libfuse worker thread's Python thread state for the thread's lifetime.

    libfuse calls back from threads of its own. ctypes gives such a thread a new Python thread state
    for each callback and frees it on return (PyGILState_Ensure/Release): a memory map and unmap of the
    state's frame stack on every request (13% of the mount's CPU in a loop of lookups, with perf), and
    the thread's thread-locals lost each time. One PyGILState_Ensure never released keeps the state.
    Only on libfuse 3, whose workers live as long as the mount (idle ones are not destroyed since
    3.12); libfuse 2 ends idle workers beyond ten, and each would leave its state behind."""
    if not getattr(_worker, "kept", False):
        ctypes.pythonapi.PyGILState_Ensure()
        _worker.kept = True


def load_binding(name: str) -> ModuleType:
    """Import the binding for `-o fuse=NAME`. Raises RuntimeError (the mount fails with it) if it or
    its libfuse is missing. Both bindings take their library from FUSE_LIBRARY_PATH when it is set
    (the user's choice, for both); otherwise mfusepy would take libfuse 2 first, so it is pointed at
    libfuse 3 for its import only (fusepy, imported after a failure, must not see that)."""
    if name not in FUSE_LIBRARIES:
        raise RuntimeError(f"-o fuse={name}: pick one of {', '.join(FUSE_LIBRARIES)}")
    module = FUSE_LIBRARIES[name].module
    if module in sys.modules:
        return sys.modules[module]
    set_path = None
    if name == "mfusepy" and not os.environ.get("FUSE_LIBRARY_PATH"):
        set_path = ctypes.util.find_library("fuse3")
        if not set_path:
            raise RuntimeError("-o fuse=mfusepy needs libfuse 3 (Debian: apt-get install fuse3); "
                               "or mount with -o fuse=fusepy")
        os.environ["FUSE_LIBRARY_PATH"] = set_path
    try:
        return importlib.import_module(module)
    except (ImportError, OSError, AttributeError) as exc:
        raise RuntimeError(f"-o fuse={name}: the binding cannot be loaded: {exc}") from None
    finally:
        if set_path:
            os.environ.pop("FUSE_LIBRARY_PATH", None)


def choose_binding(fuse: str | None) -> tuple[str, ModuleType]:
    """(name, module) for `-o fuse=` (None: the default, or the other binding, with a warning, if the
    default cannot be loaded). Raises RuntimeError."""
    name = fuse or DEFAULT_FUSE
    try:
        return name, load_binding(name)
    except RuntimeError as exc:
        if fuse is not None:
            raise
        other = next(n for n in FUSE_LIBRARIES if n != DEFAULT_FUSE)
        log.warning("%s; using -o fuse=%s", exc, other)
        return other, load_binding(other)


def _times(buf: Any) -> tuple[int | None, int | None]:
    """(atime_ns, mtime_ns) from utimens' raw timespecs: None for UTIME_OMIT; UTIME_NOW and a NULL
    buffer (= now, now) resolved here."""
    now = time.time_ns()
    if not buf:
        return (now, now)
    pair: list[int | None] = []
    for ts in (buf.contents.actime, buf.contents.modtime):
        if ts.tv_nsec == UTIME_OMIT:
            pair.append(None)
        elif ts.tv_nsec == UTIME_NOW:
            pair.append(now)
        else:
            pair.append(ts.tv_sec * 1_000_000_000 + ts.tv_nsec)
    return (pair[0], pair[1])


def _mount_device(mountpoint: str) -> str | None:
    """"major:minor" of the newest mount on `mountpoint`, from /proc/self/mountinfo (a stat() of the
    mount point would wait for the very INIT reply that init() is preparing)."""
    # Not realpath(): it lstat()s every component, the mount point included, and so hangs in the very
    # way the docstring describes. The caller passes check_mountpoint()'s already resolved path.
    target = os.path.abspath(mountpoint)
    found = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[4].replace("\\040", " ") == target:
                    found = fields[2]
    except OSError:
        return None
    return found


def _raise_readahead(mountpoint: str) -> None:
    """Let the kernel read ahead (and so send read requests of) up to READ_REQUEST on this mount.
    The kernel offers FUSE 128 KiB and takes the smaller of its offer and init's answer, so the offer
    (the mount's backing-device read_ahead_kb) is raised first. Needs root; without it reads stay at
    128 KiB (writes are 1 MiB either way)."""
    device = _mount_device(mountpoint)
    if device is None:
        return
    try:
        with open(f"/sys/class/bdi/{device}/read_ahead_kb", "w", encoding="ascii") as f:
            f.write(str(READ_REQUEST // 1024))
    except OSError as exc:
        log.info("read-ahead stays at the kernel's default (128 KiB requests): %s", exc)


def _buffer(buf: Any, size: int) -> memoryview:
    """libfuse's request buffer as a writable view of `size` bytes, valid for the callback only."""
    if not size:
        return memoryview(bytearray())
    address = ctypes.cast(buf, ctypes.c_void_p).value
    return memoryview((ctypes.c_char * size).from_address(address)).cast("B")


def _binding_class(lib: ModuleType, fuse3: bool) -> type:
    """The binding's FUSE class with storefs's fixes (see the module docstring); `fuse3`: it drives
    libfuse 3."""

    class Operations(lib.fuse_operations):  # type: ignore[name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if not fuse3:   # libfuse 3 has no such flag: it always passes UTIME_OMIT/NOW through
                self.flag_utime_omit_ok = 1
                # With hard_remove (run()), a file unlinked while open has no path: libfuse 2 then
                # calls read/write/fgetattr/release with a NULL path instead of failing them with
                # ENOENT (libfuse 3 does so by itself). FuseOps works from the file handle there.
                self.flag_nullpath_ok = 1

    class Fuse(lib.FUSE):  # type: ignore[name-defined]
        def __init__(self, operations: Any, mountpoint: str, *args: Any, **kwargs: Any) -> None:
            self._mountpoint = mountpoint
            self._dir_handles = itertools.count(1)          # opendir's handles (libfuse 3)
            self._listings: dict[int, list[Any]] = {}        # open directory handle -> its listing
            # Both bindings build the struct from the module-level name inside __init__, which only
            # returns at unmount; one mount per process, so swapping the name for that time is safe.
            original = lib.fuse_operations
            lib.fuse_operations = Operations
            try:
                super().__init__(operations, mountpoint, *args, **kwargs)
            finally:
                lib.fuse_operations = original

        if fuse3:
            def _wrapper(self: Any, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
                _keep_thread_state()
                return lib.FUSE._wrapper(self, func, *args, **kwargs)

        def _path(self, path: bytes | None) -> str | None:
            return None if path is None else path.decode(self.encoding)

    methods: dict[str, Callable[..., Any]] = {}

    def read(self: Any, path: bytes | None, buf: Any, size: int, offset: int, fip: Any) -> int:
        # Both bindings take read()'s bytes and copy them into libfuse's buffer; here the filesystem
        # writes into that buffer itself (a preadv from a cache or staged file), so a 1 MiB read makes
        # no Python bytes object, no page faults on a fresh allocation and no extra copy.
        return self.operations.read_into(self._path(path), _buffer(buf, size), offset, fip.contents)

    def write(self: Any, path: bytes | None, buf: Any, size: int, offset: int, fip: Any) -> int:
        # Likewise, both bindings copy each write request into a new bytes object; the filesystem
        # writes straight from libfuse's buffer instead (the view lives for this call only).
        return self.operations.write(self._path(path), _buffer(buf, size), offset, fip.contents)
    methods.update(read=read, write=write)
    if lib.__name__ == "fuse":   # fusepy dispatches through Operations.__call__
        def utimens(self: Any, path: bytes, buf: Any) -> int:
            return self.operations("utimens", self._path(path), _times(buf))
        methods["utimens"] = utimens
    else:
        # mfusepy: `X_fuse_2`/`X_fuse_3` are the callbacks (defining a plain `utimens` is refused);
        # utimens_fuse_3 calls utimens_fuse_2.
        def utimens_fuse_2(self: Any, path: bytes | None, buf: Any) -> int:
            return self.operations.utimens(self._path(path), _times(buf))
        methods["utimens_fuse_2"] = utimens_fuse_2
    if fuse3:
        def truncate_fuse_3(self: Any, path: bytes | None, length: int, fip: Any) -> int:
            # ftruncate(2) arrives here with the open file; mfusepy would drop it.
            return self.operations.truncate(self._path(path), length, fip.contents if fip else None)

        # fchmod, fchown and futimens come with their open file; mfusepy would drop it.
        def chmod_fuse_3(self: Any, path: bytes | None, mode: int, fip: Any) -> int:
            return self.operations.chmod(self._path(path), mode, fip.contents if fip else None)

        def chown_fuse_3(self: Any, path: bytes | None, uid: int, gid: int, fip: Any) -> int:
            unchanged = 0xFFFFFFFF   # (uid_t)-1: leave it
            return self.operations.chown(self._path(path), -1 if uid == unchanged else uid,
                                         -1 if gid == unchanged else gid, fip.contents if fip else None)

        def utimens_fuse_3(self: Any, path: bytes | None, buf: Any, fip: Any) -> int:
            return self.operations.utimens(self._path(path), _times(buf), fip.contents if fip else None)

        def rename_fuse_3(self: Any, old: bytes, new: bytes, flags: int) -> int:
            # RENAME_NOREPLACE / RENAME_EXCHANGE (renameat2): not supported, as on libfuse 2 (where the
            # kernel answers EINVAL itself); callers such as mv then fall back to a plain rename.
            if flags:
                return -errno.EINVAL
            return self.operations.rename(self._path(old), self._path(new))

        def init_fuse_3(self: Any, conn: Any, config: Any) -> None:
            # Ask for 1 MiB requests (libfuse caps max_write at its buffer, the kernel at max_pages).
            # max_readahead can only lower what the kernel offers: raise the offer first.
            _raise_readahead(self._mountpoint)
            if conn:
                conn.contents.max_write = BIG_REQUEST
                conn.contents.max_readahead = READ_REQUEST
                # READDIRPLUS for every chunk of a listing, not only the first (the kernel's "auto"
                # mode asks with plain READDIR from the second ~4 KiB request on).
                conn.contents.want &= ~FUSE_CAP_READDIRPLUS_AUTO
                # Let libfuse splice read replies from read_buf's pipe to the kernel.
                conn.contents.want |= conn.contents.capable & splicedread.FUSE_CAP_SPLICE_WRITE
            return lib.FUSE.init_fuse_3(self, conn, config)
        def opendir(self: Any, path: bytes | None, fip: Any) -> int:
            # A handle per open directory: its listing is kept from the first READDIRPLUS to the
            # release, so that the chunks after the first are cut from the same list.
            fip.contents.fh = next(self._dir_handles)
            return 0

        def releasedir(self: Any, path: bytes | None, fip: Any) -> int:
            self._listings.pop(fip.contents.fh, None)
            return 0

        def readdir_fuse_3(self: Any, path: bytes | None, buf: Any, filler: Any, offset: int, fip: Any,
                           flags: int) -> int:
            # READDIRPLUS (mfusepy leaves it out): each entry goes to the kernel with its attributes,
            # so `ls -l` or `find -ls` of a listed directory costs no LOOKUP per entry (5,000 fewer
            # round trips for 5,000 files). Entries without exact attributes go without (the kernel
            # looks those up as before). Every entry carries its offset (its index + 1): only then
            # does libfuse 3.14 hand the attributes on (with offset 0 it buffers the listing itself
            # and sends each entry with node id 0, which the kernel ignores), and the kernel asks
            # for the next chunk from where the last one ended.
            if not flags & FUSE_READDIR_PLUS:
                return lib.FUSE.readdir_fuse_3(self, path, buf, filler, offset, fip, flags)
            handle = fip.contents.fh
            listing = self._listings.get(handle) if offset else None
            if listing is None:
                listing = self.operations.readdir_plus(self._path(path))
                self._listings[handle] = listing
            st = lib.c_stat()
            for index in range(offset, len(listing)):
                name, attrs = listing[index]
                encoded = name.encode(self.encoding, self.errors)
                if attrs is None:
                    full = filler(buf, encoded, None, index + 1, 0)
                else:
                    ctypes.memset(ctypes.byref(st), 0, ctypes.sizeof(st))
                    lib.set_st_attrs(st, self.operations.stat_of(attrs), use_ns=self.use_ns)
                    full = filler(buf, encoded, ctypes.byref(st), index + 1, FUSE_FILL_DIR_PLUS)
                if full:
                    # The entry that did not fit leaves one lookup count in libfuse's node table
                    # (filled entries are looked up before the buffer check): one per chunk, until
                    # unmount. The kernel asks for it again in the next chunk.
                    break
            return 0
        def read_buf(self: Any, path: bytes | None, bufpp: Any, size: int, offset: int, fip: Any) -> int:
            # libfuse 3 calls this instead of read(): cached bytes are spliced to the kernel through a
            # pipe (splicedread.py), small reads go through a buffer as before.
            name, fi = self._path(path), fip.contents
            return splicedread.read_buf(lambda sink: self.operations.read_buf(name, sink, offset, fi),
                                        lambda into: self.operations.read_into(name, into, offset, fi),
                                        bufpp, size, SPLICE_PIPE)

        methods.update(truncate_fuse_3=truncate_fuse_3, rename_fuse_3=rename_fuse_3, init_fuse_3=init_fuse_3,
                       read_buf=read_buf,
                       readdir_fuse_3=readdir_fuse_3, opendir=opendir, releasedir=releasedir,
                       chmod_fuse_3=chmod_fuse_3, chown_fuse_3=chown_fuse_3, utimens_fuse_3=utimens_fuse_3)
    return type("StorefsFuse", (Fuse,), methods)



def run(fs: MountedFS, mountpoint: str, *, fsname: str, on_ready: Callable[[], None] | None,
        drain_timeout: float, allow_other: bool, default_permissions: bool, read_only: bool,
        debug: bool = False, fuse: str | None = None, on_unmount: Callable[[], None] | None = None) -> None:
    """Mount and serve until unmounted. Blocks. `fuse`: a FUSE_LIBRARIES name; None = the default, or the
    other binding (with a warning) if the default's libfuse is not installed. `drain_timeout`: seconds
    the unmount waits for pending work (fs.close); `on_unmount` is called when the unmount begins."""
    # Blocked before libfuse and our workers start threads, so every thread inherits it: a write to a
    # reset connection then fails with EPIPE instead of killing the daemon (see destroy()).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
    name, lib = choose_binding(fuse)
    fuse3 = FUSE_LIBRARIES[name].libfuse == 3
    log.info("FUSE binding %s on libfuse %d", name, 3 if fuse3 else 2)
    # A file unlinked (or renamed over) while open: without hard_remove libfuse renames it to a hidden
    # name (`.fuse_hiddenNNN`) and unlinks that at the last close, so fstat, fchmod and ftruncate still
    # find it by path; a filesystem that keeps such names to itself (StoreFS) wants that. With
    # hard_remove the path is dropped at once (VaultFS: archives are not renamed).
    options: dict[str, Any] = {"foreground": True, "nothreads": False, "fsname": fsname, "subtype": "storefs"}
    if fs.hard_remove:
        options["hard_remove"] = True
    if not fuse3:   # libfuse 3: big writes always on, sizes negotiated in init (_binding_class)
        # libfuse 2 splits writes into 4 KiB requests unless big_writes is on; 128 KiB is its ceiling.
        options.update(big_writes=True, max_read=131072, max_write=131072)
    if fs.kernel_cache_ttl is not None:
        # The kernel's own entry and attribute caches (libfuse's default: 1 s) spare a FUSE round trip
        # per entry of a repeated `ls -l`.
        options.update(entry_timeout=fs.kernel_cache_ttl, attr_timeout=fs.kernel_cache_ttl)
    if allow_other:
        options["allow_other"] = True
    if default_permissions:
        options["default_permissions"] = True
    if read_only:
        options["ro"] = True
    if debug:
        options["debug"] = True
    ops_class = type("FuseOps", (FuseOps, lib.Operations), {})
    ops = ops_class(fs, on_ready, context=lib.fuse_get_context, drain_timeout=drain_timeout,
                    blksize=BIG_REQUEST if fuse3 else 128 * 1024, on_unmount=on_unmount)
    _binding_class(lib, fuse3)(ops, mountpoint, raw_fi=True, encoding="utf-8", **options)
