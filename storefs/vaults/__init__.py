"""Archive vaults: Tencent CAS and Amazon Glacier (one REST implementation, two dialects) and a
`local` vault simulated on disk. The contract is in `base.py`; the tree hash in `treehash.py`.

Type names for the registry: "cas" -> storefs.vaults.cas, "glacier" -> storefs.vaults.glacier
(each has `SPEC` with kind="vault" and `open_provider(remote, options)`, also exported as
`open_vault_provider`); the local vault is storefs.vaults.local (`open_vault_provider`).
"""
from .base import (
                   ArchiveInfo,
                   ArchivePart,
                   ArchiveUpload,
                   ArchiveVault,
                   JobAction,
                   JobFailed,
                   JobInfo,
                   JobStatus,
                   Page,
                   Tier,
                   TreeHashMismatch,
                   VaultCapabilities,
                   VaultInfo,
                   VaultProvider,
)

__all__ = [
    "ArchiveInfo", "ArchivePart", "ArchiveUpload", "ArchiveVault", "JobAction", "JobFailed", "JobInfo",
    "JobStatus", "Page", "Tier", "TreeHashMismatch", "VaultCapabilities", "VaultInfo", "VaultProvider",
]
