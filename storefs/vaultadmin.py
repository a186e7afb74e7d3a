"""Managing the vaults of an archive remote without mounting them: `storefs vault ls|create|delete`.

Each command opens the remote's vault provider, proves the credentials work, and makes one call. The
service's own refusals (a vault that is not empty, a name it does not accept) reach the user as its
message, with exit code 1.
"""
from __future__ import annotations

import datetime

from .config import Config, RemoteSpec
from .errors import ConfigError
from .store.registry import provider_module
from .vaults.base import VaultInfo, VaultProvider


def open_vault_provider(config: Config, spec: RemoteSpec, *, needs_vault: bool) -> VaultProvider:
    """The vault provider of `spec`'s remote, its credentials checked. `needs_vault`: the command works
    on one vault (REMOTE:VAULT), else on the remote (REMOTE:)."""
    remote = config.remote(spec.remote)
    module = provider_module(remote.type)
    if module.SPEC.kind != "vault":
        raise ConfigError(f"remote [{remote.name}] is a {remote.type} bucket store, not an archive vault remote")
    if needs_vault and not spec.bucket:
        raise ConfigError(f"name the vault: {spec.remote}:VAULT")
    if not needs_vault and spec.bucket:
        raise ConfigError(f"give the remote alone: {spec.remote}:")
    if spec.prefix:
        raise ConfigError(f"{spec}: a vault has no paths")
    provider = module.open_provider(remote.name, remote.options)
    try:
        provider.check(None)
    except BaseException:
        provider.close()
        raise
    return provider


def vault_lines(vaults: list[VaultInfo]) -> list[str]:
    """`ls -l`-like lines: archives, bytes, last inventory (UTC), name. Counts and sizes are what the
    service last computed (about daily on the real services): '-' where it has none yet."""
    lines = [f"{'ARCHIVES':>9} {'BYTES':>15}  {'LAST INVENTORY':16}  NAME"]
    for info in sorted(vaults, key=lambda v: v.name):
        count = "-" if info.archive_count is None else str(info.archive_count)
        size = "-" if info.size is None else str(info.size)
        when = "-" if info.last_inventory_date is None else datetime.datetime.fromtimestamp(
            info.last_inventory_date, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
        lines.append(f"{count:>9} {size:>15}  {when:16}  {info.name}")
    return lines


def run(command: str, config: Config, spec: RemoteSpec) -> str:
    """Carry out `storefs vault COMMAND` (ls, create, delete); what to print."""
    provider = open_vault_provider(config, spec, needs_vault=command != "ls")
    try:
        if command == "ls":
            return "\n".join(vault_lines(provider.list_vaults()))
        assert spec.bucket is not None
        if command == "create":
            provider.create_vault(spec.bucket)
            return f"created vault {spec.bucket}"
        provider.delete_vault(spec.bucket)
        return f"deleted vault {spec.bucket}"
    finally:
        provider.close()
