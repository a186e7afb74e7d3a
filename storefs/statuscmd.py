"""`storefs status` and `storefs flush`: what running mounts report through their status files
(status.py), shown to a person or (`--json`) to a script, and a flush request with its progress."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .mounting import MountError, MountRecord, is_mounted, pid_alive, runtime_dir
from .status import flush_request_path, human_size, read_status


def _running_mounts(mountpoint: str | None) -> list[str]:
    if mountpoint is not None:
        real = os.path.realpath(mountpoint)
        if not is_mounted(real) or MountRecord.load(real) is None:
            raise MountError(f"{mountpoint} is not a storefs mount")
        return [real]
    found = []
    for record_file in sorted(runtime_dir().glob("mount-*.json")):
        try:
            record = json.loads(record_file.read_text())
            mountpoint, pid = record["mountpoint"], int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not pid_alive(pid):
            # Left by a daemon that was killed (kill -9, a power cut): not a mount any more. Its
            # staged files wait for the next mount, which reports them.
            record_file.unlink(missing_ok=True)
            continue
        found.append(mountpoint)
    return found


def cmd_status(args: argparse.Namespace) -> int:
    mounts = _running_mounts(args.mountpoint)
    reports = [read_status(runtime_dir(), mp) or {"mountpoint": mp, "pending": [], "conflicts": []}
               for mp in mounts]
    if args.json:
        print(json.dumps(reports, indent=2))
        return 0
    if not reports:
        print("no storefs mounts")
    for report in reports:
        pending = report.get("pending", [])
        print(f"{report['mountpoint']}  {report.get('remote', '')}  pid {report.get('pid', '?')}")
        limit = report.get("staging_limit")
        print(f"  staging: {human_size(report.get('staging_bytes', 0))}"
              f"{' of ' + human_size(limit) if limit else ''} in {report.get('staging_dir', '?')}")
        if report.get("read_cache_limit"):
            print(f"  read cache: {human_size(report.get('read_cache_bytes', 0))} of "
                  f"{human_size(report['read_cache_limit'])}")
        count = report.get("pending_count", len(pending))
        print(f"  pending uploads: {count}   retried requests: {report.get('retries', 0)}")
        for item in pending:
            error = f"  last error: {item['last_error']}" if item.get("last_error") else ""
            print(f"    {item['path']}  {human_size(item['size'])}  sent {human_size(item['bytes_sent'])}  "
                  f"{item['state']}  attempts {item['attempts']}{error}")
        if count > len(pending):
            print(f"    … and {count - len(pending)} more ({human_size(report.get('pending_bytes', 0))} in all)")
        for conflict in report.get("conflicts", []):
            print(f"  conflict: {conflict['path']} changed remotely; this mount's version is {conflict['saved_as']}")
    return 0


def cmd_flush(args: argparse.Namespace) -> int:
    (mountpoint,) = _running_mounts(args.mountpoint)
    runtime = runtime_dir()
    flush_request_path(runtime, mountpoint).touch()
    deadline = time.monotonic() + args.timeout
    shown = ""
    while time.monotonic() < deadline:
        time.sleep(0.3)
        report = read_status(runtime, mountpoint)
        if report is None:
            continue
        if flush_request_path(runtime, mountpoint).exists():
            continue  # not picked up yet
        pending = report.get("pending", [])
        count = report.get("pending_count", len(pending))
        if not count:
            if sys.stderr.isatty():
                print(file=sys.stderr)
            print(f"{mountpoint}: everything is uploaded")
            return 0
        total = report.get("pending_bytes", sum(item["size"] for item in pending))
        sent = report.get("pending_sent", sum(item["bytes_sent"] for item in pending))
        line = f"{count} file(s) pending, {human_size(sent)} of {human_size(total)} sent"
        failing = [item for item in pending if item.get("last_error")]
        if failing:
            line += f", {len(failing)} failing (last: {failing[0]['last_error'][:80]})"
        if sys.stderr.isatty():
            width = 30
            done = int(width * sent / total) if total else 0
            print(f"\r[{'#' * done}{'.' * (width - done)}] {line}   ", end="", file=sys.stderr, flush=True)
        elif line != shown:
            print(line, file=sys.stderr)
        shown = line
    print(f"storefs: error: {mountpoint}: uploads still pending after {args.timeout:.0f}s "
          f"(see: storefs status {mountpoint})", file=sys.stderr)
    return 1
