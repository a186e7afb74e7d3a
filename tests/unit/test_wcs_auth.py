"""WCS signing, ETag and pure helpers: every vector of shared/PROTOCOLS.md §3.5, and the vendor SDK's own
code as a second oracle."""
from __future__ import annotations

import datetime
import io
import json
import types

import pytest

from storefs import errors
from storefs.providers import wcs
from storefs.providers.wcs import meta as wcs_meta
from storefs.providers.wcs import wire as wcs_wire
from storefs.wire.auth import wcs as wcs_auth

AK, SK = "AKexampleWCS", "SKexampleWCSsecret"

UPLOAD_VECTOR = ("AKexampleWCS:MmJhMDFiMmUwNmJhYzJkYjg1MTE0M2NlZmFlZjE2YThiYzFmM2UwOA==:"
                 "eyJzY29wZSI6ICJteWJ1Y2tldDpkaXIvZmlsZS50eHQiLCAiZGVhZGxpbmUiOiAxNTAwMDA3MjAwMDAwfQ==")
LIST_VECTOR = "AKexampleWCS:YWFmYjY0N2Q3NmZhNzI0OGQ4NWE4NzcxOWE4YWJiZTM5Mjg4YjAxNA=="
STAT_VECTOR = "AKexampleWCS:MWRkNzNkNDA5MzhkZDU5ZWU1ZmUwYWRiY2VmMWE3ODhiMzAzMGMyNw=="
SETDEADLINE_VECTOR = "AKexampleWCS:ZWQxYWExOTBjZDFjZWRiYzliYWI2ZWYxNWY0ZWNmZmNjNTMxY2VkYQ=="


def test_upload_token_vector():
    policy = {"scope": "mybucket:dir/file.txt", "deadline": 1500007200000}
    assert wcs_auth.upload_token(AK, SK, policy) == UPLOAD_VECTOR


def test_upload_policy_shape():
    policy = wcs_auth.upload_policy("mybucket", "dir/file.txt", 1500007200000, overwrite=False)
    assert policy == {"scope": "mybucket:dir/file.txt", "deadline": 1500007200000}
    assert wcs_auth.upload_token(AK, SK, policy) == UPLOAD_VECTOR
    assert wcs_auth.upload_policy("b", None, 1)["scope"] == "b"
    assert wcs_auth.upload_policy("b", "k", 1)["overwrite"] == 1


def test_management_token_vectors():
    assert wcs_auth.management_token(AK, SK, "/list?bucket=mybucket&limit=1000&prefix=ZGlyLw==&mode=0") \
        == LIST_VECTOR
    assert wcs_auth.management_token(AK, SK, "/stat/bXlidWNrZXQ6ZGlyL2ZpbGUudHh0") == STAT_VECTOR
    body = "bucket=bXlidWNrZXQ=&key=ZGlyL2ZpbGUudHh0&deadline=30"
    assert wcs_auth.management_token(AK, SK, "/setdeadline", body) == SETDEADLINE_VECTOR
    assert wcs_auth.management_token(AK, SK, "/setdeadline", body.encode()) == SETDEADLINE_VECTOR


def test_signature_is_base64_of_hex():
    sign = LIST_VECTOR.split(":")[1]
    decoded = wcs_auth.urlsafe_b64decode(sign).decode()
    assert len(decoded) == 40 and all(c in "0123456789abcdef" for c in decoded)


def test_encoded_entry():
    assert wcs_auth.encoded_entry("mybucket", "dir/file.txt") == "bXlidWNrZXQ6ZGlyL2ZpbGUudHh0"
    assert wcs_auth.encoded_entry("mybucket") == "bXlidWNrZXQ="
    assert wcs_auth.urlsafe_b64decode("bXlidWNrZXQ") == b"mybucket"  # padding tolerated


def _data(n: int, mul: int, add: int, mod: int) -> bytes:
    """byte[i] = (mul*i + add) % mod, built from one period (the sequence repeats every `mod` bytes)."""
    period = bytes((mul * i + add) % mod for i in range(mod))
    return (period * (n // mod + 1))[:n]


def test_etag_vectors():
    data2 = _data(2 * 1024 * 1024 + 1000, 7, 3, 251)
    data9 = _data(9 * 1024 * 1024, 13, 5, 253)
    assert wcs_auth.etag_bytes(data2) == "FqnKJlRyLe1O-BlwwkHMRSyK6Z2h"
    assert wcs_auth.etag_bytes(data9) == "lgnckURS0Z1EYHqSobHSz4VN0gWR"
    assert wcs_auth.etag_bytes(b"") == "Fto5o-5ea0sNMlW_75VgGJCv2AcJ"
    # Fed in odd pieces, and from a stream: the same.
    assert _etag_of_pieces(data9[i: i + 777_777] for i in range(0, len(data9), 777_777)) == \
        "lgnckURS0Z1EYHqSobHSz4VN0gWR"
    stream = io.BytesIO(data2)
    assert _etag_of_pieces(iter(lambda: stream.read(1 << 20), b"")) == "FqnKJlRyLe1O-BlwwkHMRSyK6Z2h"


def _etag_of_pieces(pieces) -> str:
    builder = wcs_auth.EtagBuilder()
    for piece in pieces:
        builder.update(piece)
    return builder.result()


def test_exactly_one_block_is_single_block_form():
    block = b"\x01" * wcs_auth.ETAG_BLOCK
    assert wcs_auth.etag_bytes(block).startswith("F")  # 0x16 prefix
    assert wcs_auth.etag_bytes(block + b"x").startswith("l")  # 0x96 prefix


# -- the vendor SDK as an oracle -------------------------------------------------------------------


def test_matches_vendor_sdk(monkeypatch):
    from wcs.commons import auth as sdk_auth
    from wcs.commons import util as sdk_util

    class FixedDatetime(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime.fromtimestamp(1500000000)

    monkeypatch.setattr(sdk_auth, "datetime", FixedDatetime)
    # util.py does `import datetime`: give it a module stand-in rather than patching the real module.
    monkeypatch.setattr(sdk_util, "datetime", types.SimpleNamespace(
        datetime=FixedDatetime, date=datetime.date, timedelta=datetime.timedelta))
    sdk = sdk_auth.Auth(AK, SK)
    assert sdk.uploadtoken({"scope": "mybucket:dir/file.txt", "deadline": "7200"}) == UPLOAD_VECTOR
    for url, body in [("http://mgr.example.com/list?bucket=b&limit=10&prefix=YS8=&mode=1", None),
                      ("http://mgr.example.com/copy/YjpzcmM=/YjpkZXN0", None),
                      ("http://mgr.example.com/setdeadline", "bucket=Yg==&key=aw==&deadline=-1")]:
        path = url.split("mgr.example.com", 1)[1]
        assert wcs_auth.management_token(AK, SK, path, body) == sdk.managertoken(url, body=body)
    data = _data(5 * 1024 * 1024 + 3, 3, 1, 256)
    assert wcs_auth.etag_bytes(data) == sdk_util.etag_stream(io.BytesIO(data))
    assert wcs_auth.encoded_entry("b", "k/é") == sdk_util.entry("b", "k/é")


# -- metadata in mimeType, time units, error mapping ----------------------------------------------


def test_meta_mime_roundtrip():
    meta = {"mtime": "1700000000.25", "mode": "33188", "symlink": "../a b/ü"}
    mime = wcs_meta.encode_meta_mime(meta)
    assert mime.startswith("application/octet-stream; x-storefs-meta=")
    assert "=" not in mime.split("x-storefs-meta=")[1]  # a MIME token: no padding
    assert wcs_meta.decode_meta_mime(mime) == ("application/octet-stream", meta)
    assert wcs_meta.encode_meta_mime({}) == "application/octet-stream"
    assert wcs_meta.decode_meta_mime(wcs_meta.encode_meta_mime(meta, "image/png; charset=x"))[0] == "image/png"


def test_meta_mime_foreign_values():
    assert wcs_meta.decode_meta_mime("") == ("application/octet-stream", {})
    assert wcs_meta.decode_meta_mime(None) == ("application/octet-stream", {})
    assert wcs_meta.decode_meta_mime("text/plain") == ("text/plain", {})
    assert wcs_meta.decode_meta_mime("text/plain; x-storefs-meta=!!!") == ("text/plain", {})
    assert wcs_meta.decode_meta_mime("text/plain; x-storefs-meta=WzFd") == ("text/plain", {})  # [1]: not a dict


def test_meta_too_large():
    with pytest.raises(errors.InvalidArgument):
        wcs_meta.encode_meta_mime({"symlink": "x" * 10_000})


@pytest.mark.parametrize("value, seconds", [
    ("13603956734587420", 1360395673.458742),   # the docs' example: 100 ns units
    (1360395673458, 1360395673.458),            # milliseconds, as the docs' text says
    ("1360395673458742", 1360395673.458742),    # microseconds
    (1360395673, 1360395673.0),
    ("garbage", 0.0), (None, 0.0),
])
def test_put_time_units(value, seconds):
    assert wcs_meta.parse_put_time(value) == pytest.approx(seconds, abs=1e-3)


@pytest.mark.parametrize("status, code, cls", [
    (401, "401", errors.AccessDenied), (403, None, errors.AccessDenied),
    (404, "404", errors.NotFound), (612, "612", errors.NotFound), (400, "612", errors.NotFound),
    (631, "631", errors.NotFound), (614, "614", errors.AlreadyExists),
    (429, None, errors.Throttled), (503, "503", errors.Throttled), (509, None, errors.Throttled),
    (500, "500", errors.Transient), (502, None, errors.Transient), (408, None, errors.Transient),
    (701, "701", wcs_wire.ContextExpired), (400, "400", errors.InvalidArgument), (418, None, errors.StoreError),
])
def test_error_mapping(status, code, cls):
    body = json.dumps({"code": code, "message": "boom"}).encode() if code else b"<html>oops</html>"
    exc = wcs_wire.map_error(status, body, "op")
    assert type(exc) is cls
    assert exc.errno == cls.errno


def test_throttled_is_retried_transient():
    assert isinstance(wcs_wire.map_error(503, b"", "x"), errors.Transient)


def test_provider_repr_and_errors_hold_no_secret():
    provider = wcs.open_provider("r", {"access_key": "AK1", "secret_key": "TOPSECRET", "put_url": "up.example",
                                       "mgr_url": "https://mgr.example/"})
    try:
        assert "TOPSECRET" not in repr(provider) and "TOPSECRET" not in repr(provider.bucket("b"))
        assert provider.api.config.put_url == "http://up.example" and provider.api.config.mgr_url == "https://mgr.example"
        with pytest.raises(errors.NotSupported):
            provider.bucket("b").read_range("k", 0, 1)  # no get_url configured
    finally:
        provider.close()


def test_config_errors():
    with pytest.raises(errors.ConfigError):
        wcs.open_provider("r", {"access_key": "a", "secret_key": "s", "put_url": "p"})
    with pytest.raises(errors.ConfigError):
        wcs.open_provider("r", {"access_key": "a", "secret_key": "s", "put_url": "p", "mgr_url": "m",
                                "bput_size": "lots"})


def test_spec():
    assert wcs.SPEC.type == "wcs"
    assert wcs.SPEC.required == ("access_key", "secret_key", "put_url", "mgr_url")
    assert "secret_key" in wcs.SPEC.secrets and "get_url" in wcs.SPEC.optional
