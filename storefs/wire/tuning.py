"""The connection tuning keys every HTTP provider and vault accepts, named and parsed in one place.

Each provider merges `HTTP_TUNING` into its `SPEC.optional` and calls `parse_http_tuning` once, so a
user can write `read_timeout = 5` or `ca_file = ...` in any section and it means the same thing.
"""
from __future__ import annotations

import os
from typing import Mapping

from ..errors import ConfigError
from .settings import HttpSettings
from .retry import RetryPolicy

HTTP_TUNING: dict[str, str] = {
    "connect_timeout": "10",    # seconds to establish a connection
    "read_timeout": "60",       # seconds of silence while waiting for bytes (not for a whole body)
    "retries": "6",             # tries per request, the first included
    "retry_base_delay": "0.2",  # seconds before the first retry, doubled each time (full jitter)
    "retry_deadline": "120",    # no retry starts this many seconds after a request's first try
    "ca_file": "",              # CA bundle for https endpoints (verification is always on)
}


def parse_http_tuning(remote: str, opts: Mapping[str, str], *, pool_size: int | None = None
                      ) -> tuple[HttpSettings, RetryPolicy]:
    """HttpSettings and RetryPolicy from a section's options (HTTP_TUNING defaults merged in)."""
    def value(key: str) -> str:
        return str(opts.get(key) or HTTP_TUNING[key]).strip()

    try:
        connect_timeout = float(value("connect_timeout"))
        read_timeout = float(value("read_timeout"))
        attempts = int(value("retries"))
        base_delay = float(value("retry_base_delay"))
        deadline = float(value("retry_deadline"))
    except ValueError as exc:
        raise ConfigError(f"[{remote}] a timeout or retry option is not a number: {exc}") from None
    if min(connect_timeout, read_timeout) <= 0 or attempts < 1 or base_delay < 0 or deadline <= 0:
        raise ConfigError(f"[{remote}] timeouts and retry_deadline must be > 0, retries >= 1, "
                          "retry_base_delay >= 0")
    ca_file = value("ca_file") if opts.get("ca_file") else ""
    if ca_file and not os.path.isfile(ca_file):
        # Checked here: requests would only raise a bare OSError at the first request.
        raise ConfigError(f"[{remote}] ca_file {ca_file!r} is not a readable file")
    extra = {"pool_size": pool_size} if pool_size else {}
    settings = HttpSettings(connect_timeout=connect_timeout, read_timeout=read_timeout,
                            verify=ca_file or True, **extra)
    return settings, RetryPolicy(attempts=attempts, base_delay=base_delay, deadline=deadline)
