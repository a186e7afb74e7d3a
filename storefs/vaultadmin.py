"""Managing the vaults of an archive remote without mounting them: `storefs vault ls|create|delete`,
and `storefs vault refresh`; the state `storefs jobs` reads (open_for_commands).

ls, create and delete open the remote's vault provider, prove the credentials work, and make one
call. The service's own refusals (a vault that is not empty, a name it does not accept) reach the user
as its message, with exit code 1.

refresh runs the inventory job in one state directory and hands the inventory it read to every other
state directory of the same vault service it can find: the ones given with `--cache-dir`, those of
running mounts (which say where theirs is, mounting.register_vault_mount), and the default one if it
exists. A running mount notices the new inventory within its watch period (a fraction of a second).
"""
from __future__ import annotations

import datetime
import logging
from pathlib import Path

from .config import Config, RemoteSpec
from .errors import ConfigError
from .fs.vault.filesystem import VaultFS
from .fs.vault.state import VaultState, state_dir_for
from .fs.vault.view import RefreshReport
from .mounting import open_vault_fs, vault_identity, vault_mount_state_dirs
from .options import MountOptions, default_cache_dir
from .store.registry import provider_module
from .vaults.base import VaultInfo, VaultProvider

log = logging.getLogger(__name__)


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


def refresh_state_dirs(identity: str, cache_dirs: list[str] | list[Path]) -> list[Path]:
    """Where `storefs vault refresh` works (the first) and what it hands the inventory to (the rest):
    the state of each `--cache-dir` if given, else that of a running mount, else the default one;
    then every other running mount's, and the default one if it exists."""
    for given in cache_dirs:
        if Path(given).expanduser().exists() and not Path(given).expanduser().is_dir():
            raise ConfigError(f"--cache-dir {given}: not a directory")
    explicit = [state_dir_for(Path(d).expanduser().absolute(), identity) for d in cache_dirs]
    running = vault_mount_state_dirs(identity)
    default = state_dir_for(default_cache_dir(), identity)
    ordered = explicit + running + ([default] if not explicit and not running or default.is_dir() else [])
    unique: list[Path] = []
    for path in ordered:
        if path not in unique:
            unique.append(path)
    return unique


def open_for_commands(config: Config, spec: RemoteSpec, cache_dirs: list[str] | list[Path]) -> VaultFS:
    """The vault filesystem `storefs jobs` reads: on the state of a `--cache-dir`, else of a running
    mount, else the default one (refresh_state_dirs), so archive ids are shown as the paths that
    mount shows. The caller closes it and its provider."""
    state_dir = refresh_state_dirs(vault_identity(config, spec), cache_dirs)[0]
    return open_vault_fs(config, spec, MountOptions(), poll=False, state_dir=state_dir)


def refresh(config: Config, spec: RemoteSpec, cache_dirs: list[str] | list[Path], wait: bool,
            timeout: float | None) -> list[RefreshReport]:
    """`storefs vault refresh`: start (or adopt) an inventory job per vault; with `wait`, read it when
    done and hand it to every state directory of this vault service (refresh_state_dirs)."""
    first, *others = refresh_state_dirs(vault_identity(config, spec), cache_dirs)
    fs = open_vault_fs(config, spec, MountOptions(), poll=False, state_dir=first)
    try:
        reports = fs.refresh(wait=wait, timeout=timeout)
    finally:
        fs.close()
        fs.provider.close()
    for report in reports:
        if report.state != "done":
            continue
        inventory = VaultState(first / report.vault).load_inventory()
        if inventory is None:
            continue
        for other in others:
            if VaultState(other / report.vault).adopt_inventory(inventory):
                log.info("vault %s: inventory handed to %s", report.vault, other)
    return reports
