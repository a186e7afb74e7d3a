"""What `storefs restore` reports, for vault archives and archive-class bucket objects alike."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class RestoreItem:
    path: str
    archive_id: str                 # the archive id (vaults) or the object key (buckets)
    size: int
    state: str                      # cached | ready | in-progress | failed
    job_id: str | None = None
    message: str | None = None
    started_job: bool = False       # this call started the job
    byte_range: tuple[int, int] | None = None   # vaults: [start, end) of a ranged job; None: whole

    @property
    def done(self) -> bool:
        return self.state in ("cached", "ready", "failed")


@dataclasses.dataclass
class RestoreReport:
    items: list[RestoreItem]
    timed_out: bool = False

    def count(self, state: str) -> int:
        return sum(1 for item in self.items if item.state == state)

    @property
    def done(self) -> int:
        return sum(1 for item in self.items if item.done)

    @property
    def jobs_started(self) -> int:
        return sum(1 for item in self.items if item.started_job)

    @property
    def all_ready(self) -> bool:
        return all(item.state in ("cached", "ready") for item in self.items)
