"""The contract suite against the UFile provider and its loopback emulator.

One emulator serves the whole test session (started on first use, stopped at session end); every test gets
a fresh, empty bucket on it and its own provider.
"""
from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator

from storefs.providers.ufile import open_provider
from storefs.store.contract import ObjectStore
from tests.emulators.ufile import UfileEmulator

NAME = "ufile"

_lock = threading.Lock()
_emulator: UfileEmulator | None = None


def shared_emulator(request) -> UfileEmulator:
    """The session's emulator, started once and stopped when pytest finishes."""
    global _emulator
    with _lock:
        if _emulator is None:
            emulator = UfileEmulator().start()
            _emulator = emulator

            def stop() -> None:
                global _emulator
                emulator.stop()
                _emulator = None

            request.config.add_cleanup(stop)
        return _emulator


@contextlib.contextmanager
def open_store(request, tmp_path) -> Iterator[ObjectStore]:
    emulator = shared_emulator(request)
    bucket = f"contract-{uuid.uuid4().hex[:12]}"
    emulator.create_bucket(bucket)
    provider = open_provider("ufile-contract", {k: str(v) for k, v in emulator.config().items() if k != "type"})
    try:
        yield provider.bucket(bucket)
    finally:
        provider.close()
        emulator.blobs.delete_bucket(bucket)
