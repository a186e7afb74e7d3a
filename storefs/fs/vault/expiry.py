"""When a retrieval job's output is gone, on the service's clock (whole and ranged jobs alike)."""
from __future__ import annotations

from ...vaults.base import JOB_OUTPUT_TTL, JobInfo

# Treat job output as gone this long before the services drop it: a download must not start on
# output that vanishes under it.
EXPIRY_MARGIN = 600.0


def output_expired(info: JobInfo, now: float) -> bool:
    """Whether a job's output is gone (or about to be) at `now`, on the service's clock."""
    return bool(info.completed and info.completion_date is not None
                and now >= info.completion_date + JOB_OUTPUT_TTL - EXPIRY_MARGIN)


def completed_expired(completed: float | None, now: float) -> bool:
    """The same, for a job record that knows only its completion date (None: not completed)."""
    return completed is not None and now >= completed + JOB_OUTPUT_TTL - EXPIRY_MARGIN
