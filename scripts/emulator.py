#!/usr/bin/env python3
"""Run a loopback protocol emulator by hand or from a test.

    python scripts/emulator.py PROTOCOL [--port N] [--root DIR] [--bucket NAME]... [--fault SPEC]...

The first line printed is one JSON object holding exactly the config keys a storefs remote needs to use
this emulator, e.g. to turn it into a config section:

    python scripts/emulator.py wcs --bucket demo | head -1
    {"type": "wcs", "access_key": "...", "secret_key": "...", "put_url": "...", "mgr_url": "..."}

Listens on 127.0.0.1 only and stops cleanly on SIGTERM or SIGINT.
"""
from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# protocol -> "module:EmulatorClass"
EMULATORS = {
    "cos": "tests.emulators.cos:CosEmulator",
    "wcs": "tests.emulators.wcs:WcsEmulator",
    "ufile": "tests.emulators.ufile:UfileEmulator",
    "cas": "tests.emulators.cas:CasEmulator",
}


def load(protocol: str):
    module_name, class_name = EMULATORS[protocol].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("protocol", choices=sorted(EMULATORS))
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--root", help="directory for stored objects (default: a temporary one)")
    parser.add_argument("--bucket", action="append", default=[], help="create this bucket (repeatable)")
    parser.add_argument("--fault", action="append", default=[],
                        help="inject a fault: op:nth:action[:arg], e.g. upload_part:2:status:503")
    parser.add_argument("--job-delay", type=float, default=None,
                        help="(cas) seconds until a job completes")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    try:
        cls = load(args.protocol)
    except (ImportError, AttributeError) as exc:
        parser.error(f"the {args.protocol} emulator is not available: {exc}")
    kwargs = {}
    if args.job_delay is not None:
        kwargs["job_delay"] = args.job_delay
    emulator = cls(root=args.root, port=args.port, buckets=tuple(args.bucket), verbose=args.verbose, **kwargs)
    from tests.emulators.base import Fault
    for spec in args.fault:
        emulator.faults.add(Fault.parse(spec))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    emulator.start()
    print(json.dumps(emulator.config()), flush=True)
    print(f"{args.protocol} emulator on {emulator.url}, data in {emulator.root}; Ctrl-C stops it",
          file=sys.stderr, flush=True)
    stop.wait()
    emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
