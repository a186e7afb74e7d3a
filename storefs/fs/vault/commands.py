"""The commands a running vault mount answers besides file operations: `storefs vault refresh`,
`storefs restore` (whole archives or a byte range) and `storefs jobs`, and `path_of` for reports.

A mix-in of VaultFS (filesystem.py), kept apart because these run over many archives and views at
once, not one path: they use VaultFS's routing (`_route`, `_view`, `_mount_path`) and its view table,
declared below so a reader sees what this part relies on.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from ...errors import NotFound, StoreError
from ...options import VaultOptions
from ...retrieval.poll import JobPoll, follow_restores
from ...retrieval.report import RestoreItem, RestoreReport
from ...vaults.base import ArchiveInfo, JobInfo, VaultProvider
from .view import RefreshReport, VaultView

log = logging.getLogger(__name__)


class VaultCommands:
    """refresh/restore/jobs/path_of over VaultFS's views (see the module's docstring)."""

    # What VaultFS provides (filesystem.py).
    provider: VaultProvider
    vault_name: str | None
    options: VaultOptions
    stopping: threading.Event
    _lock: threading.Lock
    _views: dict[str, VaultView]
    _vault_names: list[str]
    _view: Callable[[str], VaultView]
    _route: Callable[..., tuple[VaultView | None, str]]
    _mount_path: Callable[[VaultView, str], str]
    reload_vaults: Callable[[], None]



    def _started_views(self) -> list[VaultView]:
        if self.vault_name:
            return [self._view(self.vault_name)]
        with self._lock:
            names = list(self._vault_names)
        views = [self._view(n) for n in names]
        for view in views:
            view.activate()
        return views

    def refresh(self, wait: bool = False, timeout: float | None = None) -> list[RefreshReport]:
        """Start an inventory job per vault (adopting one still pending) and, with `wait`, swap the
        tree in when it is done (up to `timeout` seconds in all)."""
        if not self.vault_name:
            self.reload_vaults()
        deadline = None if timeout is None else time.monotonic() + timeout
        reports = []
        for view in self._started_views():
            view.activate()
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            reports.append(view.refresh(wait, left))
        return reports

    def restore(self, paths: Iterable[str], wait: bool = False, timeout: float | None = None,
                progress: Callable[[int, int], None] | None = None,
                byte_range: tuple[int, int] | None = None) -> RestoreReport:
        """Start retrieval jobs for the archives at `paths` (a directory: every archive below it);
        with `wait`, poll until every job is done (or `timeout` seconds pass), calling
        `progress(done, total)` after each round. Never downloads: a later open does.
        `byte_range` ([start, end)): one ranged job per archive for those bytes (rangejobs.py)."""
        targets: dict[tuple[str, str], tuple[VaultView, str, ArchiveInfo]] = {}
        for path in paths:
            view, rel = self._route(path)
            views = [(view, rel)] if view is not None else [(v, "/") for v in self._started_views()]
            for one_view, one_rel in views:
                found = one_view.lookup(one_rel)
                if found is None:
                    raise NotFound(path)
                for file_rel, node in one_view.files_below(one_rel):
                    key = (one_view.name, node.archive.archive_id)
                    targets.setdefault(key, (one_view, self._mount_path(one_view, file_rel), node.archive))
        items: list[RestoreItem] = []
        by_view: dict[str, list[RestoreItem]] = {}
        views: dict[str, VaultView] = {}
        listings: dict[str, dict[str, JobInfo]] = {}
        for (vault, _), (view, mpath, archive) in targets.items():
            if vault not in listings:
                listings[vault] = {j.job_id: j for jobs in view.retrievals.jobs_by_archive(fresh=True).values()
                                   for j in jobs}
            if byte_range is not None:
                item = view.retrievals.ranges.request(archive, byte_range, mpath)
            else:
                item = view.retrievals.request(archive, mpath, listings[vault])
            items.append(item)
            by_view.setdefault(vault, []).append(item)
            views[vault] = view
        def update() -> None:
            for vault, vault_items in by_view.items():
                try:
                    views[vault].retrievals.poll_items(vault_items)
                except StoreError as exc:
                    log.warning("vault %s: polling jobs: %s", vault, exc)

        poll = JobPoll(self.options.poll_min, self.options.poll_max, timeout, self.stopping) if wait else None
        return follow_restores(RestoreReport(items), poll, update, progress)

    def jobs(self) -> list[JobInfo]:
        """Every job the server knows, of this vault (or of every vault)."""
        if self.vault_name:
            return self._view(self.vault_name).vault.list_jobs()
        self.reload_vaults()
        with self._lock:
            names = list(self._vault_names)
        found: list[JobInfo] = []
        for name in names:
            found.extend(self.provider.vault(name).list_jobs())
        return found

    def path_of(self, archive_id: str, vault: str | None = None) -> str | None:
        """The mount path showing `archive_id`, if the tree has it."""
        with self._lock:
            views = [self._views[vault]] if vault in self._views else list(self._views.values())
        for view in views:
            rel = view.path_of(archive_id)
            if rel is not None:
                return self._mount_path(view, rel)
        return None

