"""Partial retrieval on a service without ranged jobs: moto's Glacier (real time; Expedited jobs take
2 s). moto ignores RetrievalByteRange, so `profile = moto` declares no ranges: a `vault_ranges` mount
opens such an archive as without the option (a whole-archive job, the open refused meanwhile), and a
ranged restore fails that item with the reason, starting nothing."""
from __future__ import annotations

import os
import time

import pytest

from storefs.errors import ArchiveNotReady
from storefs.fs.vault.filesystem import VaultFS
from storefs.options import VaultOptions
from storefs.vaults import glacier
from storefs.vaults.base import JobAction
from tests.vaults.conftest import moto_options, vault_name

MiB = 1 << 20


def test_vault_ranges_fall_back_to_whole_jobs_on_moto(moto_glacier, tmp_path):
    provider = glacier.open_provider("moto-ranges", moto_options(moto_glacier))
    name = vault_name("ranges")
    provider.create_vault(name)
    vault = provider.vault(name)
    data = os.urandom(2 * MiB)
    vault.upload_archive(data, len(data), "big.bin")
    options = VaultOptions(tier="Expedited", ranges_min=MiB, range_window=MiB, inventory_poll=0,
                           poll_min=0.05, poll_max=0.2, status_ttl=0)
    fs = VaultFS(provider, name, options, tmp_path / "state")
    try:
        fs.start()
        deadline = time.monotonic() + 30
        while not fs.check_inventory():   # moto's inventory job: about 2 s
            assert time.monotonic() < deadline, "moto's inventory job did not finish"
            time.sleep(0.2)
        [item] = fs.restore(["/big.bin"], byte_range=(0, MiB)).items
        assert item.state == "failed" and "cannot retrieve a byte range" in item.message
        retrievals = [j for j in vault.list_jobs() if j.action is JobAction.ARCHIVE_RETRIEVAL]
        assert retrievals == []
        with pytest.raises(ArchiveNotReady):   # as without vault_ranges: the open starts a whole job
            fs.open("/big.bin", os.O_RDONLY)
        [job] = [j for j in vault.list_jobs() if j.action is JobAction.ARCHIVE_RETRIEVAL]
        assert job.byte_range is None   # moto reports none; nothing ranged was asked for
    finally:
        fs.close()
        provider.close()
