"""Other clients of the bucket during a workload (scripts/bench/client.py in its own process), and the
CPU time a mount process spends (/proc/PID/stat)."""
from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

CLIENT = Path(__file__).resolve().parent / "client.py"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) in seconds, from /proc/PID/stat."""
    return parse_stat_cpu(Path(f"/proc/{pid}/stat").read_text())


def parse_stat_cpu(stat: str) -> float:
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])   # fields 14 and 15 of proc(5)
    return (utime + stime) / TICKS


class OtherClient:
    """`client.py MODE ARGS` with the raw client's config on stdin; ready when it says so."""

    def __init__(self, section: dict[str, str], bucket: str, mode: str, *args: object, ready_within: float = 60):
        self.proc = subprocess.Popen([sys.executable, str(CLIENT), mode, *map(str, args)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.result: dict = {}
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"section": section, "bucket": bucket}) + "\n")
            self.proc.stdin.close()
            if self._line(ready_within).get("ready") is not True:
                raise RuntimeError(f"the other client ({mode}) did not start: {self._stderr()}")
        except BaseException:
            self.stop()
            raise

    def _line(self, timeout: float) -> dict:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        with contextlib.suppress(ValueError):
            return json.loads(line) if line else {}
        return {}

    def _stderr(self) -> str:
        with contextlib.suppress(Exception):
            if self.proc.poll() is not None and self.proc.stderr is not None:
                return self.proc.stderr.read().strip().splitlines()[-1][:200]
        return "(no error output)"

    def finish(self, timeout: float) -> dict:
        """Wait (bounded) for the client's own end and its last line."""
        self.result = self._line(timeout)
        self.stop()
        return self.result

    def stop(self) -> dict:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            if not self.result:
                self.result = self._line(30)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return self.result

    def __enter__(self) -> OtherClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def busy(section: dict[str, str], bucket: str, load: str | None, **where: str) -> contextlib.AbstractContextManager:
    """The background load of a condition: None (alone), "writer" (PUTs under where['prefix']) or "reader"
    (ranged GETs of where['key']), for at most an hour."""
    if load is None:
        return contextlib.nullcontext()
    if load == "writer":
        return OtherClient(section, bucket, "put-loop", where["prefix"], 3600)
    if load == "reader":
        return OtherClient(section, bucket, "get-loop", where["key"], 3600)
    raise ValueError(load)
