"""Fixtures for real mounts. `backend` runs a test once per provider; `env` gives an isolated storefs;
`own_cas` a CAS emulator per test module (vault tests that move its clock)."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from storefs.providers.local import open_provider as open_local
from tests.emulators.cas import CasEmulator
from tests.fuse.harness import Env, make_backend

BACKENDS = ["local", "s3_moto", "s3_seaweed", "cos", "wcs", "ufile"]


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.fuse)


@pytest.fixture(autouse=True)
def _need_fuse():
    if not os.path.exists("/dev/fuse") or os.geteuid() != 0:
        pytest.fail("these tests mount through the kernel: they need /dev/fuse and root")


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    return make_backend(request.param, request, tmp_path)


@pytest.fixture
def env(tmp_path, backend):
    environment = Env(tmp_path, {"r": backend.section})
    yield environment
    environment.close()


@pytest.fixture
def mounted(env, backend):
    """A mount of the backend's fresh bucket."""
    return env.mount(f"r:{backend.bucket}")


@pytest.fixture
def local_env(tmp_path):
    """A local bucket `b` and an environment to mount it (`r:b`), with `.store` to look behind the mount.
    (test_semantics.py has its own, with two buckets.)"""
    root = tmp_path / "buckets"
    (root / "b").mkdir(parents=True)
    environment = Env(tmp_path, {"r": {"type": "local", "root": str(root)}})
    environment.store = open_local("t", {"root": str(root)}).bucket("b")
    yield environment
    environment.close()


@pytest.fixture(scope="module")
def own_cas() -> Iterator[CasEmulator]:
    """A CAS emulator of each test module that uses it: its tests move the job clock by hours or days,
    which must not age the session emulator's jobs that other modules compare with real time."""
    with CasEmulator() as emulator:
        yield emulator
