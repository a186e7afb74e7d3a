"""The s3 provider against SeaweedFS (`weed mini`, signatures checked): a fresh bucket per test."""
from __future__ import annotations

import contextlib

from storefs.providers.s3 import open_provider

NAME = "s3-seaweed"


@contextlib.contextmanager
def open_store(request, tmp_path):
    server = request.getfixturevalue("seaweed_server")
    bucket = server.create_bucket()
    provider = open_provider("test-s3-seaweed", server.options())
    try:
        provider.check(bucket)
        yield provider.bucket(bucket)
    finally:
        provider.close()
