"""The local provider: a bucket directory under pytest's tmp_path."""
from __future__ import annotations

import contextlib

from storefs.providers.local import open_provider

NAME = "local"


@contextlib.contextmanager
def open_store(request, tmp_path):
    provider = open_provider("test-local", {"root": str(tmp_path / "buckets"), "create_buckets": "yes"})
    provider.check("bucket")
    yield provider.bucket("bucket")
    provider.close()
