"""An emulator drops a request whose body the client cut short, as a real server does: it must never
store the part that arrived. (The COS emulator once did: a reset while uploading left a truncated
object without its metadata, and storefs, finding "another writer's" object, made a false conflict
copy in test_faults.)"""
from __future__ import annotations

import io
import os

import pytest

from storefs.errors import StoreError
from storefs.providers.cos import open_provider as open_cos
from storefs.providers.wcs import open_provider as open_wcs
from tests.faultproxy import FaultProxy

DATA = os.urandom(256 * 1024)
OPENERS = {"cos": open_cos, "wcs": open_wcs}
UPLOAD_URL = {"cos": "endpoint", "wcs": "put_url"}   # the config key of the host uploads go to


@pytest.mark.parametrize("kind", ["cos", "wcs"])
def test_an_upload_cut_midway_stores_nothing(kind, request):
    emulator = request.getfixturevalue(f"{kind}_emulator")
    bucket = f"cut{kind}"
    emulator.create_bucket(bucket)
    section = {k: str(v) for k, v in emulator.config().items()}
    url_key = UPLOAD_URL[kind]
    proxy = FaultProxy(int(section[url_key].rsplit(":", 1)[1]), rate=1.0, weights={"reset_upload": 1},
                       profile=kind)
    try:
        proxied = {**section, url_key: proxy.url, "retry_base_delay": "0.01"}
        store = OPENERS[kind]("t", proxied).bucket(bucket)
        with pytest.raises(StoreError):
            store.put("cut.bin", io.BytesIO(DATA), len(DATA), {"mode": "420"})
        assert proxy.stats()["faults"].get("reset_upload", 0) >= 1
        assert emulator.blobs.get(bucket, "cut.bin") is None
        # The emulator still serves: the same upload, uncut, is stored whole.
        direct = OPENERS[kind]("t", section).bucket(bucket)
        direct.put("cut.bin", io.BytesIO(DATA), len(DATA), {"mode": "420"})
        assert direct.read_range("cut.bin", 0, len(DATA)) == DATA
    finally:
        proxy.stop()
