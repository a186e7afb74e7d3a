"""Fixtures for real mounts. `backend` runs a test once per provider; `env` gives an isolated storefs;
`own_cas` a CAS emulator per test module (vault tests that move its clock)."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from storefs.providers.local import open_provider as open_local
from storefs.providers.wcs import open_provider as open_wcs
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


@pytest.fixture
def wcs_env(tmp_path, wcs_emulator):
    """A fresh bucket `w:BUCKET` on the WCS emulator, with `.store` to look behind the mount and
    `.served(op)`: how many requests of that kind (get, upload, …) the emulator has answered."""
    bucket = f"w{time.time_ns() % 10**8}"
    wcs_emulator.create_bucket(bucket)
    config = {k: str(v) for k, v in wcs_emulator.config().items()}
    environment = Env(tmp_path, {"w": config})
    environment.bucket = bucket
    environment.store = open_wcs("t", {k: v for k, v in config.items() if k != "type"}).bucket(bucket)
    environment.served = lambda op: wcs_emulator.faults.counts.get(op, 0)
    yield environment
    environment.close()


@pytest.fixture(scope="module")
def own_cas() -> Iterator[CasEmulator]:
    """A CAS emulator of each test module that uses it: its tests move the job clock by hours or days,
    which must not age the session emulator's jobs that other modules compare with real time."""
    with CasEmulator() as emulator:
        yield emulator
