"""The `storefs` command: mount, unmount, ls.

Exit codes: 0 success; 2 a usage, config or credential problem (the message says what to fix);
1 a failure at run time (a backend error, a busy mount point, uploads that did not finish).
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import select
import subprocess
import sys
import time

from . import __version__
from .config import Config, RemoteSpec
from .errors import ConfigError, StoreError
from .logsetup import redact, setup_logging
from .mounting import MountError, MountRecord, build_fs, check_mountpoint, mount_id, open_store, unmount
from .options import MountOptions
from .store import iter_list

log = logging.getLogger("storefs")

READY_TIMEOUT = 60.0


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that says what to do, with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="storefs", description="Cloud buckets and archive vaults as a local filesystem.")
    parser.add_argument("--version", action="version", version=f"storefs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE",
                       help="config file (default: $STOREFS_CONFIG or ~/.config/storefs/storefs.conf)")
        p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
        p.add_argument("--log-file", metavar="FILE", help="write the log to FILE")

    m = sub.add_parser("mount", help="mount REMOTE:BUCKET[/PREFIX] (or REMOTE: for every bucket)",
                       description="Mount a bucket (or every bucket of a remote) on MOUNTPOINT. Returns once "
                                   "the mount is ready, or fails with a message.",
                       epilog="mount options (-o):\n" + "\n".join(
                           f"  {name:20} {text}" for name, text in MountOptions.HELP.items())
                       + "\n  allow_other, default_permissions, ro  (flags)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("remote", metavar="REMOTE:BUCKET[/PREFIX]")
    m.add_argument("mountpoint", metavar="MOUNTPOINT")
    m.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT…]",
                   help="mount options, see below")
    m.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    m.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    common(m)

    u = sub.add_parser("unmount", aliases=["umount"], help="upload what is pending, then unmount",
                       description="Unmount MOUNTPOINT after storefs has uploaded everything written to it.")
    u.add_argument("mountpoint", metavar="MOUNTPOINT")
    u.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="how long to wait for pending uploads (default 3600)")
    u.add_argument("-v", "--verbose", action="count", default=0, help=argparse.SUPPRESS)

    ls = sub.add_parser("ls", help="list REMOTE:BUCKET[/PATH] without mounting",
                        description="List a directory of a bucket (or the buckets of REMOTE:) without mounting.")
    ls.add_argument("remote", metavar="REMOTE:BUCKET[/PATH]")
    ls.add_argument("-l", "--long", action="store_true", help="sizes and dates too")
    common(ls)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except UsageError as exc:
        print(f"storefs: error: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.verbose, getattr(args, "log_file", None))
    try:
        if args.command == "mount":
            return cmd_mount(args)
        if args.command in ("unmount", "umount"):
            print(unmount(args.mountpoint, args.timeout))
            return 0
        if args.command == "ls":
            return cmd_ls(args)
    except (ConfigError, UsageError) as exc:
        print(f"storefs: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except MountError as exc:
        print(f"storefs: error: {redact(str(exc))}", file=sys.stderr)
        return 2 if exc.usage else 1
    except StoreError as exc:
        print(f"storefs: error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


# -- mount -----------------------------------------------------------------------------------------

def _load_config(args: argparse.Namespace) -> Config:
    from pathlib import Path
    return Config.load(Path(args.config) if args.config else None)


def cmd_mount(args: argparse.Namespace) -> int:
    spec = RemoteSpec.parse(args.remote)
    options = MountOptions.parse(args.options)
    config = _load_config(args)
    config.remote(spec.remote)
    if not args.foreground:
        mountpoint = check_mountpoint(args.mountpoint)
        return _spawn_daemon(args, options, spec, mountpoint)
    return _mount_foreground(args, options, spec, config)


def _default_log_file(options: MountOptions, spec: RemoteSpec) -> str:
    folder = options.cache_dir / "logs"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return str(folder / f"{mount_id(spec)}.log")


def _spawn_daemon(args: argparse.Namespace, options: MountOptions, spec: RemoteSpec, mountpoint: str) -> int:
    """Run the mount in a detached child and return once it is ready (or has failed)."""
    log_file = args.log_file or _default_log_file(options, spec)
    read_end, write_end = os.pipe()
    cmd = [sys.executable, "-m", "storefs", "mount", "--foreground", "--ready-fd", str(write_end),
           "--log-file", log_file, args.remote, mountpoint]
    for opt in args.options:
        cmd += ["-o", opt]
    if args.config:
        cmd += ["--config", os.path.abspath(args.config)]
    cmd += ["-v"] * args.verbose
    with open(os.devnull, "rb") as devnull:
        child = subprocess.Popen(cmd, pass_fds=(write_end,), stdin=devnull, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
    os.close(write_end)
    message = b""
    deadline = time.monotonic() + READY_TIMEOUT
    with os.fdopen(read_end, "rb") as pipe:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([pipe], [], [], 0.2)
            if ready:
                chunk = os.read(pipe.fileno(), 4096)
                if not chunk:
                    break
                message += chunk
                if message.endswith(b"\n"):
                    break
            elif child.poll() is not None:
                break
    text = message.decode("utf-8", "replace").strip()
    if text == "ready":
        return 0
    if text.startswith("error "):
        code, _, detail = text[6:].partition(" ")
        print(f"storefs: error: {detail}", file=sys.stderr)
        return int(code) if code.isdigit() else 1
    if child.poll() is None:
        print(f"storefs: error: the mount did not become ready in {READY_TIMEOUT:.0f}s; "
              f"see {log_file}", file=sys.stderr)
        child.terminate()
        return 1
    print(f"storefs: error: the mount process exited ({child.returncode}); see {log_file}", file=sys.stderr)
    return 1


def _mount_foreground(args: argparse.Namespace, options: MountOptions, spec: RemoteSpec,
                      config: Config) -> int:
    ready_fd = args.ready_fd

    def report_failure(code: int, message: str) -> int:
        if ready_fd is not None:
            os.write(ready_fd, f"error {code} {redact(message)}\n".encode())
            os.close(ready_fd)
        print(f"storefs: error: {redact(message)}", file=sys.stderr)
        log.error("%s", message)
        return code

    try:
        mountpoint = check_mountpoint(args.mountpoint)
        provider, store = open_store(config, spec)
        fs = build_fs(store, spec, options)
    except (ConfigError, UsageError) as exc:
        return report_failure(2, str(exc))
    except MountError as exc:
        return report_failure(2 if exc.usage else 1, str(exc))
    except StoreError as exc:
        return report_failure(1, str(exc))

    record = MountRecord(pid=os.getpid(), mountpoint=mountpoint, remote=str(spec),
                         log_file=args.log_file, started=time.time())

    def on_ready() -> None:
        nonlocal ready_fd
        record.save()
        log.warning("mounted %s on %s (pid %d)", spec, mountpoint, os.getpid())
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
            ready_fd = None

    from . import fuse_ops
    try:
        fuse_ops.run(fs, mountpoint, fsname=f"storefs#{spec}", on_ready=on_ready,
                     allow_other=options.allow_other, default_permissions=options.default_permissions,
                     read_only=options.read_only)
    except RuntimeError as exc:
        return report_failure(1, f"mounting {mountpoint} failed: {exc}") if ready_fd is not None else 1
    finally:
        record.remove()
        provider.close()
    pending = fs.pending_uploads()
    if pending:
        log.error("exited with %d file(s) not uploaded: %s", len(pending), ", ".join(pending[:10]))
        return 1
    log.warning("unmounted %s", mountpoint)
    return 0


# -- ls --------------------------------------------------------------------------------------------

def cmd_ls(args: argparse.Namespace) -> int:
    spec = RemoteSpec.parse(args.remote)
    config = _load_config(args)
    provider, store = open_store(config, spec)
    try:
        if spec.bucket is None:
            for name in provider.list_buckets():
                print(f"{name}/")
            return 0
        prefix = spec.prefix.strip("/")
        dir_key = prefix + "/" if prefix else ""
        shown = 0
        for page in iter_list(store, dir_key, delimiter="/"):
            for info in page.objects:
                name = info.key[len(dir_key):]
                if not name:
                    continue
                if args.long:
                    when = datetime.datetime.fromtimestamp(info.mtime).strftime("%Y-%m-%d %H:%M")
                    print(f"{info.size:>14}  {when}  {name}")
                else:
                    print(name)
                shown += 1
            for sub_prefix in page.prefixes:
                name = sub_prefix[len(dir_key):]
                print(f"{'DIR':>14}  {'':16}  {name}" if args.long else name)
                shown += 1
        if shown == 0 and dir_key:
            try:
                info = store.stat(prefix)
            except StoreError:
                print(f"storefs: {args.remote}: no such file or directory", file=sys.stderr)
                return 1
            print(f"{info.size:>14}  {prefix}" if args.long else prefix.rsplit("/", 1)[-1])
        return 0
    finally:
        provider.close()


if __name__ == "__main__":
    raise SystemExit(main())
