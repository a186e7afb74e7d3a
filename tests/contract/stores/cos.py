"""The contract suite against the COS v4 provider and its loopback emulator (one emulator per test)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from storefs.providers.cos import CosStore, open_provider
from tests.emulators.cos import CosEmulator

NAME = "cos"


@contextlib.contextmanager
def open_store(request, tmp_path) -> Iterator[CosStore]:
    with CosEmulator(root=tmp_path / "cos-emulator", buckets=("contract",)) as emulator:
        provider = open_provider("cos-contract", emulator.config())
        try:
            yield provider.bucket("contract")
        finally:
            provider.close()
