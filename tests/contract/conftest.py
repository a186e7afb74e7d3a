"""The provider contract suite runs against every module in tests/contract/stores/.

Each module there defines
    NAME = "s3-moto"
    @contextlib.contextmanager
    def open_store(request, tmp_path) -> Iterator[ObjectStore]: a fresh, empty bucket
and may use session fixtures through `request.getfixturevalue(...)`. Adding a provider to the suite is
adding one module; no file here changes.
"""
from __future__ import annotations

import importlib
import pkgutil

import pytest

from tests.contract import stores

STORE_MODULES = sorted(m.name for m in pkgutil.iter_modules(stores.__path__) if not m.name.startswith("_"))


@pytest.fixture(params=STORE_MODULES)
def store(request, tmp_path):
    module = importlib.import_module(f"tests.contract.stores.{request.param}")
    with module.open_store(request, tmp_path) as opened:
        yield opened
