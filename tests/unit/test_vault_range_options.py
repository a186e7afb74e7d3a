"""The mount options of partial retrieval and the vault download cache (issue #13 items 1 and 5)."""
from __future__ import annotations

import pytest

from storefs.errors import ConfigError
from storefs.options import MountOptions, VaultOptions

MiB = 1 << 20


def vault_options(*specs: str) -> VaultOptions:
    options = VaultOptions()
    for name, value in MountOptions.parse(list(specs)).vault.items():
        options.set(name, value)
    return options


def test_defaults_are_off_and_unbounded():
    options = VaultOptions()
    assert options.ranges_min is None and options.range_window == 8 * MiB and options.data_cache_size is None


@pytest.mark.parametrize("spec, expected", [
    ("vault_ranges", 64 * MiB), ("vault_ranges=yes", 64 * MiB), ("vault_ranges=1G", 1 << 30),
    ("vault_ranges=off", None), ("vault_ranges=0", None),
])
def test_vault_ranges(spec, expected):
    assert vault_options(spec).ranges_min == expected


def test_window_is_rounded_up_to_a_tree_node():
    assert vault_options("vault_range_window=3M").range_window == 4 * MiB
    assert vault_options("vault_range_window=1M").range_window == MiB
    for bad in ("vault_range_window=100K", "vault_range_window=5G", "vault_range_window=lots"):
        with pytest.raises(ConfigError):
            vault_options(bad)


def test_cache_size():
    assert vault_options("vault_cache_size=20G").data_cache_size == 20 << 30
    assert vault_options("vault_cache_size=0").data_cache_size is None
    with pytest.raises(ConfigError):
        vault_options("vault_cache_size=big")
    with pytest.raises(ConfigError):
        vault_options("vault_ranges=huge")
