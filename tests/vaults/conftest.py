"""Fixtures of the vault contract suite: `vault_env` gives a fresh, empty vault on each backend:

- local: storefs.vaults.local on a temporary directory, jobs on a ManualClock;
- cas:   the CAS REST dialect against the loopback emulator (tests/emulators/cas.py), jobs on the
         emulator's clock; one emulator per session, one new vault per test;
- moto:  the Glacier REST dialect (`profile = moto`) against moto's server, jobs in real time
         (Expedited 2 s). This moto server is tests/conftest.py's `moto_glacier` (not its
         `moto_server`): the S3 contract tests reset that one between tests, which would wipe vaults.

Backends differ only in what `VaultEnv` says: the hooks a test double has (advance the job clock, fail
a job, corrupt its output) and the vault's own `capabilities`. Tests branch on those, never on `kind`.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from storefs.vaults import cas as cas_vault
from storefs.vaults import glacier as glacier_vault
from storefs.vaults.base import ArchiveVault, JobInfo, Tier, VaultCapabilities
from storefs.vaults.local import open_vault_provider
from tests.vaults.clock import ManualClock
from tests.emulators.cas import CasEmulator
from tests.servers import S3Server

# Cumulative clock positions that finish Expedited, Standard/inventory and Bulk jobs on the emulator
# and the local vault (both use the documented upper bounds: 5 min, 5 h, 12 h).
CLOCK_STEPS = (301.0, 5 * 3600 + 1.0, 12 * 3600 + 1.0)
_names = itertools.count(1)


@dataclasses.dataclass
class VaultEnv:
    kind: str
    provider: Any
    vault: ArchiveVault
    reopen: Callable[[], Any]                         # a new provider on the same backend ("remount")
    advance: Callable[[float], None] | None = None    # move the job clock; None: real time only
    fail_job: Callable[[str, str], None] | None = None
    corrupt_output: Callable[[str], None] | None = None   # every read of that job's output corrupt
    corrupt_next: Callable[[int], None] | None = None     # the next n output answers corrupt in transit
    checks_signatures: bool = False
    emulator: CasEmulator | None = None
    options: dict = dataclasses.field(default_factory=dict, repr=False)  # holds the secret

    @property
    def caps(self) -> VaultCapabilities:
        return self.vault.capabilities

    @property
    def fast_tier(self) -> Tier:
        return Tier.EXPEDITED

    def settle(self, job_id: str, timeout: float = 15.0) -> JobInfo:
        """Let a job finish: move the clock past every delay, or poll (bounded) on a real-time server."""
        if self.advance is not None:
            # Step through the documented delays (Expedited 5 min, Standard/inventory 5 h, Bulk 12 h)
            # instead of jumping a day: earlier jobs of the same test must not expire on the way.
            moved = 0.0
            for target in CLOCK_STEPS:
                job = self.vault.describe_job(job_id)
                if job.completed:
                    return job
                self.advance(target - moved)
                moved = target
            return self.vault.describe_job(job_id)
        deadline = time.monotonic() + timeout
        while True:
            job = self.vault.describe_job(job_id)
            if job.completed:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job.status} after {timeout}s")
            time.sleep(0.2)


def vault_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_names)}"


@pytest.fixture(scope="session")
def cas_emulator() -> Iterator[CasEmulator]:
    with CasEmulator() as emulator:
        yield emulator


def cas_options(emulator: CasEmulator, **extra: str) -> dict[str, str]:
    # Small multipart thresholds so that tests exercise parts without huge bodies; few quick retries.
    return {**emulator.config(), "retries": "3", "part_size": str(8 << 20),
            "single_upload_max": str(16 << 20), **extra}


def moto_options(server: S3Server, **extra: str) -> dict[str, str]:
    return {"endpoint": server.endpoint, "access_key": server.access_key, "secret_key": server.secret_key,
            "region": server.region, "profile": "moto", "retries": "2", **extra}


def _local_env(tmp_path) -> VaultEnv:
    clock = ManualClock()
    options = {"root": str(tmp_path / "vaults"), "expedited_delay": "300", "standard_delay": str(5 * 3600),
               "bulk_delay": str(12 * 3600), "inventory_delay": str(5 * 3600)}
    (tmp_path / "vaults").mkdir()

    def reopen():
        return open_vault_provider("local-test", options, clock=clock)

    provider = reopen()
    name = vault_name("local")
    provider.create_vault(name)
    vault = provider.vault(name)
    return VaultEnv("local", provider, vault, reopen, advance=clock.advance, fail_job=vault.fail_job,
                    corrupt_output=vault.corrupt_output, options=options)


def _cas_env(emulator: CasEmulator) -> VaultEnv:
    options = cas_options(emulator)

    def reopen():
        return cas_vault.open_provider("cas-test", options)

    provider = reopen()
    name = vault_name("cas")
    provider.create_vault(name)
    return VaultEnv("cas", provider, provider.vault(name), reopen, advance=emulator.clock.advance,
                    fail_job=emulator.fail_job, corrupt_output=emulator.corrupt_output,
                    corrupt_next=emulator.corrupt_next_outputs, checks_signatures=True, emulator=emulator,
                    options=options)


def _moto_env(server: S3Server) -> VaultEnv:
    options = moto_options(server)

    def reopen():
        return glacier_vault.open_provider("moto-test", options)

    provider = reopen()
    name = vault_name("moto")
    provider.create_vault(name)
    return VaultEnv("moto", provider, provider.vault(name), reopen, options=options)


# What each test environment can do. A contract test marked `@pytest.mark.needs(feature, ...)` runs only
# on the environments that have every feature it needs, and asserts that the environment really has it,
# so this table cannot drift from the capabilities the vaults report.
FEATURES = {
    "local": {"pages", "multipart", "corrupt_output", "fail_job", "clock"},
    "cas": {"pages", "multipart", "corrupt_output", "corrupt_next", "fail_job", "clock", "signatures"},
    "moto": set(),  # no paging, multipart, fault hooks, test clock or signature checks
}


def pytest_generate_tests(metafunc):
    if "vault_env" not in metafunc.fixturenames:
        return
    needed: set[str] = set()
    for marker in metafunc.definition.iter_markers("needs"):
        needed.update(marker.args)
    backends = [name for name, features in FEATURES.items() if needed <= features]
    metafunc.parametrize("vault_env", backends, indirect=True)


@pytest.fixture
def vault_env(request, tmp_path) -> Iterator[VaultEnv]:
    if request.param == "local":
        env = _local_env(tmp_path)
    elif request.param == "cas":
        env = _cas_env(request.getfixturevalue("cas_emulator"))
    else:
        env = _moto_env(request.getfixturevalue("moto_glacier"))
    try:
        yield env
    finally:
        if env.emulator is not None:
            env.emulator.faults.clear()
        env.provider.close()
