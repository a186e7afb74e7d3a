"""New vaults for the vault mount tests, one per backend: the CAS emulator (whose job clock a test
moves), the local vault and moto's Glacier (both on real clocks). Each gives the config section a
mount uses, and a provider of the test's own on the same service, to act behind the mount's back."""
from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

from storefs.vaults import cas, glacier
from storefs.vaults.base import ArchiveVault, VaultProvider
from storefs.vaults.local import open_vault_provider
from tests.emulators.cas import CasEmulator


@dataclasses.dataclass
class NewVault:
    section: dict[str, str]      # the config section that mounts it (with its "type")
    provider: VaultProvider      # the test's own client of the service
    name: str
    vault: ArchiveVault


def new_vault_name() -> str:
    return f"v{uuid.uuid4().hex[:10]}"


def _open(section: dict[str, str], opener) -> VaultProvider:
    return opener("t", {k: v for k, v in section.items() if k != "type"})


@contextlib.contextmanager
def cas_vault(emulator: CasEmulator) -> Iterator[NewVault]:
    """A new, empty vault on the CAS emulator."""
    name = new_vault_name()
    emulator.create_bucket(name)
    section = {k: str(v) for k, v in emulator.config().items()}
    provider = _open(section, cas.open_provider)
    try:
        yield NewVault(section, provider, name, provider.vault(name))
    finally:
        provider.close()


def local_vault_section(root: Path, *, expedited: float, standard: float = 3600, bulk: float = 3600,
                        inventory: float = 1) -> dict[str, str]:
    """A `local-vault` under `root` whose jobs finish after these delays (seconds)."""
    return {"type": "local-vault", "root": str(root), "expedited_delay": str(expedited),
            "standard_delay": str(standard), "bulk_delay": str(bulk), "inventory_delay": str(inventory)}


@contextlib.contextmanager
def local_vault(root: Path, **delays: float) -> Iterator[NewVault]:
    """A new vault on a local vault service kept in `root` (made here); `delays` as local_vault_section."""
    root.mkdir(parents=True, exist_ok=True)
    section = local_vault_section(root, **delays)
    provider = _open(section, open_vault_provider)
    name = new_vault_name()
    provider.create_vault(name)
    try:
        yield NewVault(section, provider, name, provider.vault(name))
    finally:
        provider.close()


@contextlib.contextmanager
def glacier_vault(moto_glacier) -> Iterator[NewVault]:
    """A new vault on moto's Glacier (the session's `moto_glacier` server)."""
    section = {"type": "glacier", "endpoint": moto_glacier.endpoint, "access_key": moto_glacier.access_key,
               "secret_key": moto_glacier.secret_key, "region": moto_glacier.region, "profile": "moto",
               "retries": "2"}
    provider = _open(section, glacier.open_provider)
    name = new_vault_name()
    provider.create_vault(name)
    try:
        yield NewVault(section, provider, name, provider.vault(name))
    finally:
        provider.close()


def retrievals(vault: ArchiveVault) -> list:
    """The vault's archive retrieval jobs, as the service lists them."""
    return [j for j in vault.list_jobs() if j.action.value == "ArchiveRetrieval"]
