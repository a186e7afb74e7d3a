"""The `storefs` command: mount, unmount, ls.

Exit codes: 0 success; 2 a usage, config or credential problem (the message says what to fix);
1 a failure at run time (a backend error, a busy mount point, uploads that did not finish).
"""
from __future__ import annotations

import argparse
import datetime
import faulthandler
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from . import __version__
from .retrieval.gate import ArchiveGate
from .config import Config, RemoteSpec
from .errors import ConfigError, StoreError
from .logsetup import redact, setup_logging
from .mounting import (
    STOP_SIGNALS,
    MountError,
    MountRecord,
    check_mountpoint,
    check_remote,
    is_vault_remote,
    mount_bucket,
    mount_id,
    open_store,
    open_vault_fs,
    runtime_dir,
    stop_on_signals,
    unmount,
    write_exit_report,
)
from .options import MountOptions, RetrievalOptions
from .paths import KeyMap
from .retrieval.report import RestoreReport
from .sdnotify import Notifier
from .status import status_line
from .store.contract import iter_list
from . import configcmd, mounthelper, unitfile, vaultadmin
from .statuscmd import cmd_flush, cmd_status

log = logging.getLogger("storefs")

READY_TIMEOUT = 60.0


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that says what to do, with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _parser() -> tuple[argparse.ArgumentParser, set[str]]:
    """The command line's parser and its command names (mount(8)'s form is told apart by them)."""
    parser = _Parser(prog="storefs", description="Cloud buckets and archive vaults as a local filesystem.")
    parser.add_argument("--version", action="version", version=f"storefs {__version__}")
    # Commands without -v or --log-file log at the default level to the default place.
    parser.set_defaults(verbose=0, log_file=None)
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
                       + "\n  allow_other, default_permissions, ro, rw, xattr  (flags)"
                       + "\n  config=FILE, log_file=FILE, verbose, debug  (the command's own flags, for fstab)"
                       + "\n  mount(8)'s generic options (defaults, auto, noauto, user, users, suid, dev, exec "
                         "and their no- forms, nofail, _netdev, x-systemd.*, comment=) are accepted and "
                         "ignored\n\nmount(8)'s form works too: storefs SOURCE MOUNTPOINT -o OPTIONS",
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

    st = sub.add_parser("status", help="pending uploads, conflicts and staging use of mounts",
                        description="Show each mount's pending uploads (size, bytes sent, attempts, last "
                                    "error), conflicts and staging use.")
    st.add_argument("mountpoint", nargs="?", metavar="MOUNTPOINT", help="one mount (default: all)")
    st.add_argument("--json", action="store_true", help="machine-readable output")

    fl = sub.add_parser("flush", help="upload everything pending now and wait",
                        description="Ask a mount to upload everything queued now, and wait until done.")
    fl.add_argument("mountpoint", metavar="MOUNTPOINT")
    fl.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                    help="how long to wait (default 3600)")

    vault = sub.add_parser("vault", help="archive vault commands (refresh, ls, create, delete)",
                           description="Commands for archive vaults (CAS, Glacier).")
    vault_sub = vault.add_subparsers(dest="vault_command", metavar="COMMAND", parser_class=_Parser)
    vault_sub.required = True
    refresh = vault_sub.add_parser("refresh", help="start an inventory job; with --wait, use it when done",
                                   description="Start an inventory job for REMOTE:VAULT (or every vault of "
                                               "REMOTE:) and, with --wait, swap the tree in when it is done. "
                                               "Exit 75 if it is still running.")
    refresh.add_argument("remote", metavar="REMOTE:VAULT")
    refresh.add_argument("--wait", action="store_true", help="wait for the job")
    refresh.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    refresh.add_argument("--cache-dir", action="append", default=[], metavar="DIR",
                         help="the cache_dir of the mounts to update (repeatable; running mounts are "
                              "found by themselves, and the default cache directory is used when it "
                              "holds this vault's state)")
    common(refresh)
    for name, target, text in (("ls", "REMOTE:", "list the vaults of REMOTE: (archives, bytes, last inventory)"),
                               ("create", "REMOTE:VAULT", "create a vault"),
                               ("delete", "REMOTE:VAULT", "delete a vault (the service refuses one that holds "
                                                          "archives)")):
        admin = vault_sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        admin.add_argument("remote", metavar=target)
        common(admin)

    restore = sub.add_parser("restore", help="start retrievals of archives (vaults, archive storage classes)",
                             description="Start retrieval jobs for the archives at PATH... (files or directories "
                                         "inside a mounted vault), or restores of the objects in an archive "
                                         "storage class (S3 GLACIER, DEEP_ARCHIVE…) inside a mounted bucket. "
                                         "With --wait, show progress until they are ready. Exit 0 when all are "
                                         "ready, 75 while some still run, 1 on failure.")
    restore.add_argument("paths", nargs="+", metavar="PATH")
    restore.add_argument("--wait", action="store_true", help="wait until every retrieval is ready")
    restore.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    restore.add_argument("--tier", default="Standard", choices=("Expedited", "Standard", "Bulk"),
                         help="retrieval tier of the jobs started (default Standard)")
    restore.add_argument("--days", type=int, default=7,
                         help="buckets: days a restored copy stays readable (default 7)")
    restore.add_argument("--range", type=_byte_range, default=None, metavar="START-END", dest="byte_range",
                         help="vaults: retrieve only bytes START to END (inclusive) of each archive, widened "
                              "to MiB boundaries as the services require; reads inside are served from it")
    common(restore)

    jobs = sub.add_parser("jobs", help="list the jobs of REMOTE:VAULT",
                          description="List the retrieval and inventory jobs the vault service knows.")
    jobs.add_argument("remote", metavar="REMOTE:VAULT")
    jobs.add_argument("--cache-dir", action="append", default=[], metavar="DIR",
                      help="the cache_dir of the mount whose paths to show for archive ids (default: a "
                           "running mount's, else the default cache directory)")
    common(jobs)

    conf = sub.add_parser("config", help="create, show, check and delete remotes (path: where the file is)",
                          description="Manage the config file's remotes. The file is created private "
                                      "(0600); secrets are never printed.")
    conf_sub = conf.add_subparsers(dest="config_command", metavar="COMMAND", parser_class=_Parser)
    conf_sub.required = True
    create = conf_sub.add_parser("create", help="add a remote: NAME TYPE KEY=VALUE…",
                                 description="Add remote NAME of TYPE with its keys, checked as a mount checks "
                                             "them (it does not connect: see `storefs config check`).")
    create.add_argument("name", metavar="NAME")
    create.add_argument("type", metavar="TYPE")
    create.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    show = conf_sub.add_parser("show", help="print the remotes (or one), secrets masked")
    show.add_argument("name", nargs="?", metavar="NAME")
    check = conf_sub.add_parser("check", help="connect to NAME and prove its credentials (exit 0, or 2)")
    check.add_argument("name", metavar="NAME")
    delete = conf_sub.add_parser("delete", help="remove a remote from the file")
    delete.add_argument("name", metavar="NAME")
    conf_sub.add_parser("path", help="print the config file's path")
    for p in (create, show, check, delete):
        common(p)
    conf_sub.choices["path"].add_argument("--config", metavar="FILE", help=argparse.SUPPRESS)

    unit = sub.add_parser("systemd-unit", help="print a systemd service that mounts REMOTE:BUCKET at boot",
                          description="Print a systemd unit (Type=notify) that mounts REMOTE:BUCKET on "
                                      "MOUNTPOINT at boot and unmounts it without losing pending uploads.")
    unit.add_argument("remote", metavar="REMOTE:BUCKET[/PREFIX]")
    unit.add_argument("mountpoint", metavar="MOUNTPOINT")
    unit.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT…]",
                      help="mount options, as for storefs mount")
    common(unit)

    ls = sub.add_parser("ls", help="list REMOTE:BUCKET[/PATH] without mounting",
                        description="List a directory of a bucket (or the buckets of REMOTE:) without mounting.")
    ls.add_argument("remote", metavar="REMOTE:BUCKET[/PATH]")
    ls.add_argument("-l", "--long", action="store_true", help="sizes and dates too")
    common(ls)
    return parser, set(sub.choices)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, commands = _parser()
    argv = mounthelper.from_mount8(argv, commands) or argv
    try:
        args = parser.parse_args(argv)
        if args.command in ("mount", "systemd-unit"):
            _take_command_options(args)
    except UsageError as exc:
        print(f"storefs: error: {exc}", file=sys.stderr)
        return 2
    # Everything storefs writes for itself (cache dir, staged data, journal, block cache, logs, vault
    # state and downloads, runtime records) is for this user only, whatever their umask: diskcache and
    # `mkdir(parents=True)` cannot be given modes one by one. Files made through the mount are not
    # affected (the kernel passes their modes), and a stricter umask is kept.
    os.umask(os.umask(0o077) | 0o077)
    setup_logging(args.verbose, args.log_file)
    try:
        if args.command == "mount":
            return cmd_mount(args)
        if args.command in ("unmount", "umount"):
            print(unmount(args.mountpoint, args.timeout))
            return 0
        if args.command == "ls":
            return cmd_ls(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "flush":
            return cmd_flush(args)
        if args.command == "vault" and args.vault_command == "refresh":
            return cmd_vault_refresh(args)
        if args.command == "vault":
            print(vaultadmin.run(args.vault_command, _load_config(args), RemoteSpec.parse(args.remote)))
            return 0
        if args.command == "restore":
            return cmd_restore(args)
        if args.command == "jobs":
            return cmd_jobs(args)
        if args.command == "config":
            return cmd_config(args)
        if args.command == "systemd-unit":
            return cmd_systemd_unit(args)
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

def _take_command_options(args: argparse.Namespace) -> None:
    """`-o config=FILE,log_file=FILE,verbose`: the command's own flags, as an fstab line gives them."""
    args.options, given, verbosity = mounthelper.split_command_options(args.options)
    if "config" in given:
        if args.config and args.config != given["config"]:
            raise UsageError("--config and -o config= name different files; give one")
        args.config = given["config"]
    if "log_file" in given:
        args.log_file = given["log_file"]
    args.verbose = max(args.verbose, verbosity)


def _load_config(args: argparse.Namespace) -> Config:
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
    # -P: the daemon imports the storefs this command runs, never a `storefs` folder that happens to
    # sit in the current directory (python -m puts the working directory first on sys.path).
    cmd = [sys.executable, "-P", "-m", "storefs", "mount", "--foreground", "--ready-fd", str(write_end),
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
    try:
        child.wait(timeout=5)  # it closed the pipe without a word: it is on its way out
    except subprocess.TimeoutExpired:
        timed_out = time.monotonic() >= deadline
        print("storefs: error: the mount " + (f"did not become ready in {READY_TIMEOUT:.0f}s" if timed_out
              else "process stopped answering before it was ready") + f"; see {log_file}", file=sys.stderr)
        # Never leave a half-started daemon behind: it may hold the staging lock or a dead mount.
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)
        return 1
    print(f"storefs: error: the mount process exited ({child.returncode}); see {log_file}", file=sys.stderr)
    return 1


def _mount_foreground(args: argparse.Namespace, options: MountOptions, spec: RemoteSpec,
                      config: Config) -> int:
    ready_fd = args.ready_fd
    # A fatal signal (e.g. inside libfuse) leaves its Python traceback in the log instead of nothing.
    crash_log = open(args.log_file, "a") if args.log_file else sys.stderr
    faulthandler.enable(file=crash_log, all_threads=True)
    # Before any thread starts (upload workers, libfuse's): a write to a reset connection must fail with
    # EPIPE, never kill the daemon; libfuse resets SIGPIPE to its default action at unmount.
    # The stop signals too: one thread takes them and unmounts (see mounting.stop_on_signals).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE} | STOP_SIGNALS)

    notifier = Notifier.from_environment()

    def report_failure(code: int, message: str) -> int:
        notifier.send(f"STATUS=failed: {redact(message)}")
        if ready_fd is not None:
            os.write(ready_fd, f"error {code} {redact(message)}\n".encode())
            os.close(ready_fd)
        print(f"storefs: error: {redact(message)}", file=sys.stderr)
        log.error("%s", message)
        return code

    vault = is_vault_remote(config, spec)
    bucket = None
    try:
        mountpoint = check_mountpoint(args.mountpoint)
        if vault:
            fs = open_vault_fs(config, spec, options)
            provider = fs.provider
        else:
            provider, store = open_store(config, spec)
            bucket = mount_bucket(store, spec, options, mountpoint)
            fs = bucket.fs
    except (ConfigError, UsageError) as exc:
        return report_failure(2, str(exc))
    except MountError as exc:
        return report_failure(2 if exc.usage else 1, str(exc))
    except StoreError as exc:
        return report_failure(1, str(exc))

    if bucket:
        recovered = bucket.fs.recover()
        if recovered:
            log.warning("%d upload(s) left by an earlier run are queued again: %s", len(recovered),
                        ", ".join(recovered[:10]))
    record = MountRecord(pid=os.getpid(), mountpoint=mountpoint, remote=str(spec),
                         log_file=args.log_file, started=time.time(), cache_dir=str(options.cache_dir))

    def on_ready() -> None:
        nonlocal ready_fd
        record.save()
        if bucket:
            bucket.reporter.add_listener(lambda report: notifier.status(status_line(report)))
            bucket.reporter.start()
        log.warning("mounted %s on %s (pid %d)", spec, mountpoint, os.getpid())
        notifier.ready()
        if not bucket:
            notifier.status(f"serving {spec}")
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
            ready_fd = None

    def on_unmount() -> None:
        notifier.stopping()
        pending = bucket.fs.pending_uploads() if bucket else []
        notifier.status(f"unmounting: uploading {len(pending)} pending file(s)" if pending else "unmounting")

    from .fuse import bindings
    stop_on_signals(mountpoint)
    try:
        read_only = options.read_only or (vault and not (fs.options.vault_writes or fs.options.vault_deletes))
        bindings.run(fs, mountpoint, fsname=f"storefs#{spec}", on_ready=on_ready,
                     drain_timeout=options.drain_timeout, allow_other=options.allow_other,
                     default_permissions=options.default_permissions, read_only=read_only, fuse=options.fuse,
                     on_unmount=on_unmount)
    except RuntimeError as exc:
        return report_failure(1, f"mounting {mountpoint} failed: {exc}") if ready_fd is not None else 1
    finally:
        if bucket:
            bucket.stop()
        record.remove()
        provider.close()
    pending = bucket.fs.pending_uploads() if bucket else fs.pending_uploads()
    if pending:
        log.error("exited with %d file(s) not uploaded (kept staged; the next mount uploads them): %s",
                  len(pending), ", ".join(pending[:10]))
        write_exit_report(mountpoint, pending)
        return 1
    log.warning("unmounted %s", mountpoint)
    return 0


# -- vaults ----------------------------------------------------------------------------------------

EX_TEMPFAIL = 75  # sysexits.h: try again later (a job is still running), as glacier-cli answers


def cmd_vault_refresh(args: argparse.Namespace) -> int:
    spec = RemoteSpec.parse(args.remote)
    config = _load_config(args)
    if not is_vault_remote(config, spec):
        raise MountError(f"{spec.remote} is not an archive vault remote")
    reports = vaultadmin.refresh(config, spec, args.cache_dir, args.wait, args.timeout)
    code = 0
    for report in reports:
        print(f"{report.vault}: {report.state}" + (f" ({report.message})" if report.message else ""))
        if report.state == "failed":
            code = 1
        elif report.state != "done" and code == 0:
            code = EX_TEMPFAIL
    return code


def _mounted_paths(paths: list[str]) -> tuple[RemoteSpec, list[str], str | None]:
    """(the mount's remote, paths inside it, its cache_dir) for paths under one storefs mount."""
    records = []
    for record_file in runtime_dir().glob("mount-*.json"):
        try:
            records.append(json.loads(record_file.read_text()))
        except (OSError, ValueError):
            continue
    spec, inner = None, []
    for path in paths:
        real = os.path.realpath(path)
        owner = max((r for r in records if real == r["mountpoint"] or real.startswith(r["mountpoint"] + "/")),
                    key=lambda r: len(r["mountpoint"]), default=None)
        if owner is None:
            raise MountError(f"{path} is not inside a storefs mount")
        this = RemoteSpec.parse(owner["remote"])
        if spec is not None and this != spec:
            raise MountError("give paths of one mount at a time")
        spec = this
        inner.append("/" + os.path.relpath(real, owner["mountpoint"]).lstrip(".").lstrip("/"))
    assert spec is not None
    return spec, ["/" if p == "/" else p.rstrip("/") for p in inner], owner.get("cache_dir")


def _byte_range(text: str) -> tuple[int, int]:
    """`START-END` (inclusive, as the services write ranges) -> [START, END + 1)."""
    start, dash, end = text.strip().partition("-")
    if not (dash and text.isascii() and start.strip().isdigit() and end.strip().isdigit()) or int(end) < int(start):
        raise argparse.ArgumentTypeError(f"{text!r}: give START-END, byte offsets with START <= END "
                                         f"(e.g. 0-1048575)")
    return int(start), int(end) + 1


def cmd_restore(args: argparse.Namespace) -> int:
    spec, inner, cache_dir = _mounted_paths(args.paths)
    config = _load_config(args)
    if not is_vault_remote(config, spec):
        if args.byte_range is not None:
            raise MountError(f"{spec.remote}: --range is for archives in vaults; bucket objects are restored whole")
        return _restore_in_bucket(args, config, spec, inner)
    options = MountOptions()
    options.vault["vault_tier"] = args.tier
    if cache_dir:   # the mount's own state (-o cache_dir), so it sees the job at once and never a second one
        options.cache_dir = Path(cache_dir)
    fs = open_vault_fs(config, spec, options, poll=False)
    try:
        report = fs.restore(inner, wait=args.wait, timeout=args.timeout, progress=_restore_progress(args),
                            byte_range=args.byte_range)
    finally:
        fs.close()
        fs.provider.close()
    return _print_restore_report(args, report)


def _restore_in_bucket(args: argparse.Namespace, config: Config, spec: RemoteSpec, inner: list[str]) -> int:
    provider, store = open_store(config, spec)
    try:
        if not store.capabilities.archive_classes:
            raise MountError(f"{spec.remote}: this provider has no archive storage classes: nothing to restore")
        gate = ArchiveGate(store, RetrievalOptions(tier=args.tier, days=args.days))
        keys = KeyMap.for_prefix(spec.prefix)
        targets: dict[str, str] = {}
        for path in inner:
            for key in gate.archived_below(keys.key(path) if path != "/" else keys.prefix):
                targets.setdefault(key, keys.path(key))
        report = gate.restore([(path, key) for key, path in targets.items()], wait=args.wait,
                              timeout=args.timeout, progress=_restore_progress(args))
    finally:
        provider.close()
    return _print_restore_report(args, report)


def _restore_progress(args: argparse.Namespace) -> Callable[[int, int], None] | None:
    if not args.wait:
        return None

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            width = 30
            filled = int(width * done / total) if total else width
            print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} ready", end="",
                  file=sys.stderr, flush=True)
        else:
            print(f"{done}/{total} ready", file=sys.stderr)
    return progress


def _print_restore_report(args: argparse.Namespace, report: RestoreReport) -> int:
    if args.wait and sys.stderr.isatty():
        print(file=sys.stderr)
    states = {state: report.count(state) for state in ("ready", "cached", "in-progress", "failed")}
    states["ready"] += states.pop("cached")
    print(f"{len(report.items)} archive(s): {states['ready']} ready, {states['in-progress']} in progress, "
          f"{states['failed']} failed; {report.jobs_started} job(s) started now")
    for item in report.items:
        if item.state == "failed":
            print(f"  failed: {item.path}: {item.message}")
        elif item.byte_range is not None:
            start, end = item.byte_range
            print(f"  {item.state}: {item.path} bytes {start}-{end - 1}" +
                  (f" (job {item.job_id[:16]})" if item.job_id else ""))
    if states["failed"]:
        return 1
    return 0 if report.all_ready else EX_TEMPFAIL


def cmd_jobs(args: argparse.Namespace) -> int:
    spec = RemoteSpec.parse(args.remote)
    config = _load_config(args)
    if not is_vault_remote(config, spec):
        raise MountError(f"{spec.remote} is not an archive vault remote")
    fs = vaultadmin.open_for_commands(config, spec, args.cache_dir)
    try:
        jobs = fs.jobs()
        for job in sorted(jobs, key=lambda j: j.creation_date):
            when = datetime.datetime.fromtimestamp(job.creation_date).strftime("%Y-%m-%d %H:%M")
            what = fs.path_of(job.archive_id) if job.archive_id else None
            part = ""
            if job.byte_range is not None and job.archive_size and job.byte_range != (0, job.archive_size):
                part = f" bytes {job.byte_range[0]}-{job.byte_range[1] - 1}"
            print(f"{when}  {job.action.value:18} {job.status.value:10} {(job.tier.value if job.tier else ''):9} "
                  f"{what or job.archive_id or ''}{part}  {job.job_id[:16]}")
        if not jobs:
            print("no jobs")
    finally:
        fs.close()
        fs.provider.close()
    return 0


# -- config and boot ---------------------------------------------------------------------------------

def cmd_config(args: argparse.Namespace) -> int:
    path = configcmd.config_path(args.config)
    if args.config_command == "path":
        print(path)
    elif args.config_command == "create":
        print(configcmd.create(path, args.name, args.type, args.pairs))
    elif args.config_command == "delete":
        print(configcmd.delete(path, args.name))
    elif args.config_command == "show":
        print(configcmd.show(_load_config(args), args.name))
    elif args.config_command == "check":
        print(check_remote(_load_config(args), args.name))
    return 0


def cmd_systemd_unit(args: argparse.Namespace) -> int:
    spec = RemoteSpec.parse(args.remote)
    options = MountOptions.parse(args.options)   # a wrong option fails now, not at boot
    config = _load_config(args)
    config.remote(spec.remote)
    # The stable name on PATH (install.sh links it) survives a reinstall; the venv's path otherwise.
    executable = shutil.which("storefs", path="/usr/local/bin:/usr/bin:/bin") or shutil.which("storefs")
    if not executable:
        raise UsageError("storefs is not on PATH: run the README's install step (it links /usr/local/bin/storefs)")
    print(unitfile.render(executable, str(spec), os.path.abspath(args.mountpoint), args.options,
                          str(config.path.absolute()) if config.path.exists() else None, options.drain_timeout))
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
