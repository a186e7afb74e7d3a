"""The provider contract against the WCS emulator: a fresh emulator and an empty bucket per test."""
from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

from storefs.providers import wcs
from storefs.store.contract import ObjectStore
from tests.emulators.wcs import WcsEmulator

NAME = "wcs"


@contextlib.contextmanager
def open_store(request, tmp_path) -> Iterator[ObjectStore]:
    bucket = "contract-" + secrets.token_hex(4)
    with WcsEmulator(root=tmp_path / "wcs-emulator", buckets=(bucket,)) as emulator:
        options = {k: v for k, v in emulator.config().items() if k != "type"}
        provider = wcs.open_provider("wcs-contract", options)
        try:
            yield provider.bucket(bucket)
        finally:
            provider.close()
