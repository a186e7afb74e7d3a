"""S3's batched stat (many HEADs from one thread, for a listing's stat-ahead) answers exactly as stat()
does, on moto and on SeaweedFS."""
from __future__ import annotations

import importlib
import io

import pytest

from storefs.errors import NotFound


@pytest.fixture(params=["s3_moto", "s3_seaweed"])
def s3_store(request, tmp_path):
    module = importlib.import_module(f"tests.contract.stores.{request.param}")
    with module.open_store(request, tmp_path) as opened:
        yield opened


def test_stat_many_answers_like_stat(s3_store):
    for i in range(12):
        s3_store.put(f"many/f{i}", io.BytesIO(b"x" * i), i, {"mtime": f"17000000{i:02d}", "mode": "33152"})
    keys = [f"many/f{i}" for i in range(12)] + ["many/missing"]
    found = s3_store.stat_many(keys, 5)
    assert len(found) == 13 and isinstance(found[-1], NotFound)
    for key, info in zip(keys[:-1], found):
        single = s3_store.stat(key)
        assert (info.key, info.size, info.etag, info.meta, info.mtime) == \
            (key, single.size, single.etag, single.meta, single.mtime)
    assert s3_store.stat_many([], 5) == []
