"""ISO 8601 timestamps as the services write them (`2009-10-12T17:50:30.000Z`, an offset, or none)."""
from __future__ import annotations

import calendar
import datetime
import re

_ISO = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?$")


def parse_iso8601(text: str) -> float:
    """Epoch seconds of an ISO 8601 timestamp (Z, an offset, or none meaning UTC). ValueError if not one."""
    match = _ISO.match(text.strip())
    if not match:
        raise ValueError(f"not an ISO 8601 timestamp: {text[:40]!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    seconds = float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))
    seconds += float(match.group(7) or 0.0)
    zone = match.group(8)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds


def iso8601(seconds: float) -> str:
    """`2013-03-20T17:03:43.221Z`: UTC with milliseconds, as the services write it."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)  # noqa: UP017 - Python 3.10 too
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
