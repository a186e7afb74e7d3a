#!/usr/bin/env python3
"""Another client of the bucket, in its own process (its own GIL, as another user's program would be):
the raw client (a storefs provider) doing one thing in a loop, bounded in count and time.

    client.py list-until PREFIX COUNT SIZE SECONDS   ListObjectsV2 of PREFIX until COUNT objects of SIZE
                                                     bytes are there; prints {"seen_at": ...} (time.monotonic,
                                                     the system-wide clock, comparable with the parent's)
    client.py put-loop PREFIX SECONDS                PUT 4 KiB objects under PREFIX (a writer elsewhere)
    client.py get-loop KEY SECONDS                   1 MiB ranged GETs of KEY, start to end, again and again

The provider's config section (with its secret) comes as one JSON line on stdin, never on the command
line. Every mode first prints {"ready": true}; the loops stop at SIGTERM or after SECONDS and print what
they did as one JSON line.
"""
from __future__ import annotations

import io
import json
import signal
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2])]

from storefs.store.contract import iter_list  # noqa: E402
from storefs.store.registry import provider_module  # noqa: E402

MAX_OPS = 1_000_000        # a bound on every loop besides its time
_stop = False


def _on_term(signum: int, frame: object) -> None:
    global _stop
    _stop = True


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def open_store(line: str):
    config = json.loads(line)
    section, bucket = config["section"], config["bucket"]
    options = {k: v for k, v in section.items() if k != "type"}
    return provider_module(section["type"]).open_provider("bench-client", options).bucket(bucket)


def count_listed(store, prefix: str, size: int) -> int:
    return sum(1 for page in iter_list(store, prefix, delimiter="")
               for obj in page.objects if not obj.key.endswith("/") and obj.size == size)


def list_until(store, prefix: str, count: int, size: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    seen = count_listed(store, prefix, size)
    say(ready=True)
    lists = 1
    while seen < count and time.monotonic() < deadline and lists < MAX_OPS and not _stop:
        seen = count_listed(store, prefix, size)
        lists += 1
    say(seen_at=time.monotonic() if seen >= count else None, seen=seen, lists=lists)


def put_loop(store, prefix: str, seconds: float) -> None:
    data = b"w" * 4096
    deadline = time.monotonic() + seconds
    say(ready=True)
    done = 0
    while not _stop and time.monotonic() < deadline and done < MAX_OPS:
        store.put(f"{prefix}o{done:07d}", io.BytesIO(data), len(data), {})
        done += 1
    say(puts=done)


def get_loop(store, key: str, seconds: float) -> None:
    size = store.stat(key).size
    deadline = time.monotonic() + seconds
    say(ready=True)
    done = total = 0
    while not _stop and time.monotonic() < deadline and done < MAX_OPS:
        offset = (done * (1 << 20)) % max(size, 1)
        total += len(store.read_range(key, offset, min(size, offset + (1 << 20))))
        done += 1
    say(gets=done, bytes=total)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _on_term)
    store = open_store(sys.stdin.readline())
    mode, *args = argv
    if mode == "list-until":
        list_until(store, args[0], int(args[1]), int(args[2]), float(args[3]))
    elif mode == "put-loop":
        put_loop(store, args[0], float(args[1]))
    elif mode == "get-loop":
        get_loop(store, args[0], float(args[1]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
