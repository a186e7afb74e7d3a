"""Which provider module serves which `type =` in the config, and what keys each one takes.

Each provider module defines:
    SPEC = ProviderSpec(type="s3", required=(...), optional={...}, secrets=(...), doc="...")
    def open_provider(remote: str, options: Mapping[str, str]) -> Provider
Modules are imported lazily, so a broken optional provider cannot stop the others from mounting.
"""
from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Mapping

from ..errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ProviderSpec:
    type: str
    required: tuple[str, ...]
    optional: Mapping[str, str] = dataclasses.field(default_factory=dict)  # key -> default ("" = none)
    secrets: tuple[str, ...] = ()
    doc: str = ""
    # Alternatives: at least one key of each group must be present (e.g. region or endpoint).
    one_of: tuple[tuple[str, ...], ...] = ()
    kind: str = "bucket"  # or "vault"
    # Remotes signed with AWS keys: the name of the remote's key that names an AWS profile. Set, the
    # keys a section leaves out come from the AWS CLI's chain (wire/auth/aws_credentials.py).
    aws_profile_key: str = ""


# type name -> module path. Later issues add cos, wcs, ufile, cas, glacier here.
PROVIDERS: dict[str, str] = {
    "local": "storefs.providers.local",
    "s3": "storefs.providers.s3",
    "cos": "storefs.providers.cos",
    "wcs": "storefs.providers.wcs",
    "ufile": "storefs.providers.ufile",
    "cas": "storefs.vaults.cas",
    "glacier": "storefs.vaults.glacier",
    "local-vault": "storefs.vaults.local",
}


def provider_module(type_name: str) -> ModuleType:
    if type_name not in PROVIDERS:
        known = ", ".join(sorted(PROVIDERS))
        raise ConfigError(f"unknown type {type_name!r} (known types: {known})")
    return importlib.import_module(PROVIDERS[type_name])


def provider_spec(type_name: str) -> ProviderSpec:
    return provider_module(type_name).SPEC
