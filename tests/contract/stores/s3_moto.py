"""The s3 provider against moto's S3 server: a fresh bucket per test, moto reset first."""
from __future__ import annotations

import contextlib

from storefs.providers.s3 import open_provider

NAME = "s3-moto"


@contextlib.contextmanager
def open_store(request, tmp_path):
    server = request.getfixturevalue("moto_server")
    server.reset()
    bucket = server.create_bucket()
    provider = open_provider("test-s3-moto", server.options())
    try:
        provider.check(bucket)
        yield provider.bucket(bucket)
    finally:
        provider.close()
