"""Fixtures of the VaultFS tests: a fresh vault on two backends, both with a clock the test moves.

- local: storefs.vaults.local on a temporary directory (ManualClock);
- cas:   the CAS REST dialect against the loopback emulator (tests/emulators/cas.py), whose
         `clock.advance()` finishes jobs; one emulator per session, one new vault per test.
Job delays are the documented upper bounds on both (Expedited 5 min, Standard 5 h, Bulk 12 h,
inventory 5 h), so nothing finishes until a test advances the clock. No test sleeps for them.

`VaultFS` instances made by `env.mount()` share the env's state directory (a remount is another
`mount()`) and are closed at the end of the test.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from storefs.fs.vault.filesystem import VaultFS
from storefs.options import VaultOptions
from storefs.vaults import cas as cas_vault
from storefs.vaults.base import ArchiveInfo, JobAction, JobInfo
from storefs.vaults.local import open_vault_provider
from tests.vaults.clock import ManualClock
from tests.emulators.cas import CasEmulator

HOURS = 3600.0
STANDARD_DONE = 5 * HOURS + 1
_names = itertools.count(1)


@dataclasses.dataclass
class Env:
    kind: str
    provider: Any
    vault_name: str
    reopen: Callable[[], Any]              # a new provider on the same backend (a remount)
    clock: Callable[[], float]             # the service's clock
    advance: Callable[[float], None]
    fail_job: Callable[[str, str], None]
    corrupt_output: Callable[..., None]
    expire_job: Callable[[str], None]
    tmp: Path
    emulator: CasEmulator | None = None
    mounted: list = dataclasses.field(default_factory=list)
    providers: list = dataclasses.field(default_factory=list)

    @property
    def vault(self) -> Any:
        return self.provider.vault(self.vault_name)

    @property
    def state_dir(self) -> Path:
        return self.tmp / "state"

    def options(self, **changes: Any) -> VaultOptions:
        base: dict[str, Any] = {"poll_min": 0.01, "poll_max": 0.05, "inventory_poll": 0, "status_ttl": 0}
        base.update(changes)
        return VaultOptions(**base)

    def mount(self, *, vault: str | None | bool = True, fresh_provider: bool = False, start: bool = True,
              **options: Any) -> VaultFS:
        provider = self.provider
        if fresh_provider:
            provider = self.reopen()
            self.providers.append(provider)
        name = self.vault_name if vault is True else (vault or None)
        fs = VaultFS(provider, name, self.options(**options), self.state_dir, clock=self.clock)
        self.mounted.append(fs)
        if start:
            fs.start()
        return fs

    def upload(self, description: str, data: bytes, *, vault: str | None = None) -> ArchiveInfo:
        """An archive put straight into the vault (by another tool), one second after the last."""
        self.advance(1.0)
        target = self.provider.vault(vault or self.vault_name)
        return target.upload_archive(data, len(data), description)

    def jobs(self, action: JobAction = JobAction.ARCHIVE_RETRIEVAL, vault: str | None = None) -> list[JobInfo]:
        target = self.provider.vault(vault or self.vault_name)
        return [j for j in target.list_jobs() if j.action is action]

    def inventory_jobs(self, vault: str | None = None) -> list[JobInfo]:
        return self.jobs(JobAction.INVENTORY_RETRIEVAL, vault)

    def mounted_with_inventory(self, **options: Any) -> VaultFS:
        """A mount whose inventory (of everything uploaded so far) is cached and in the tree."""
        fs = self.mount(**options)
        self.advance(STANDARD_DONE)
        assert fs.check_inventory()
        return fs

    def close(self) -> None:
        for fs in self.mounted:
            fs.close()
        for provider in self.providers:
            provider.close()


@pytest.fixture(scope="session")
def cas_emulator() -> Iterator[CasEmulator]:
    with CasEmulator() as emulator:
        yield emulator


def _vault_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def _local_env(tmp_path: Path) -> Env:
    clock = ManualClock()
    root = tmp_path / "vaults"
    root.mkdir()
    options = {"root": str(root), "expedited_delay": "300", "standard_delay": str(5 * HOURS),
               "bulk_delay": str(12 * HOURS), "inventory_delay": str(5 * HOURS)}

    def reopen():
        return open_vault_provider("local-test", options, clock=clock)

    provider = reopen()
    name = _vault_name("local")
    provider.create_vault(name)

    def hook(method: str) -> Callable[..., None]:
        def call(job_id: str, *args: Any) -> None:
            for info in provider.list_vaults():
                vault = provider.vault(info.name)
                if (vault.base / "jobs" / f"{job_id}.json").is_file():
                    getattr(vault, method)(job_id, *args)
                    return
            raise KeyError(job_id)
        return call

    return Env("local", provider, name, reopen, clock.now, clock.advance, hook("fail_job"),
               hook("corrupt_output"), hook("expire_job"), tmp_path, providers=[provider])


def _cas_env(emulator: CasEmulator, tmp_path: Path) -> Env:
    # Small multipart thresholds: a 40 MiB file goes up in 8 MiB parts.
    options = {**emulator.config(), "retries": "3", "part_size": str(8 << 20),
               "single_upload_max": str(16 << 20), "download_piece": str(4 << 20)}

    def reopen():
        return cas_vault.open_provider("cas-test", options)

    provider = reopen()
    name = _vault_name("cas")
    provider.create_vault(name)
    return Env("cas", provider, name, reopen, emulator.clock.now, emulator.clock.advance, emulator.fail_job,
               emulator.corrupt_output, emulator.expire_job, tmp_path, emulator=emulator, providers=[provider])


@pytest.fixture(params=["local", "cas"])
def env(request, tmp_path) -> Iterator[Env]:
    if request.param == "local":
        made = _local_env(tmp_path)
    else:
        made = _cas_env(request.getfixturevalue("cas_emulator"), tmp_path)
    try:
        yield made
    finally:
        made.close()
        if made.emulator is not None:
            made.emulator.faults.clear()


@pytest.fixture
def local_env(tmp_path) -> Iterator[Env]:
    made = _local_env(tmp_path)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def cas_env(cas_emulator, tmp_path) -> Iterator[Env]:
    made = _cas_env(cas_emulator, tmp_path)
    try:
        yield made
    finally:
        made.close()
        cas_emulator.faults.clear()
