"""COS v4: signature and `uploadparts` vectors (PROTOCOLS.md §2.5/§2.4), name and metadata mapping, and the
wire behaviour of the provider against the loopback emulator (signature checks, slice-flow errors, paging,
folders, faults). The vendor SDK is Python-2-only, so these vectors and the SDK's request shapes are what
the emulator is held to.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from storefs import errors
from storefs.providers.cos import CosStore, open_provider
from storefs.providers.cos.names import decode_name, encode_key, meta_from_wire, meta_to_biz_attr
from storefs.providers.cos.wire import _error_for, encode_form
from storefs.wire.auth.cos import Credentials, Signer, fileid, plaintext
from storefs.store.contract import iter_list
from tests.emulators.base import Fault
from tests.emulators.cos import CosEmulator, parse_multipart
from tests.emulators.cos_auth_check import parse_sign, uploadparts, verify_hmac

ROOT = Path(__file__).resolve().parents[2]

# ----------------------------------------------------------------------------------------------
# Vectors (PROTOCOLS.md §2.5, derived from qcloud_cos/cos_auth.py with the clock and nonce fixed)

CREDS = Credentials("1250000000", "AKIDexampleV4", "SKexampleV4Secret")
VECTOR_SIGNER = Signer(CREDS, clock=lambda: 1500000000, rand=lambda: 123456789)
PATH = "/dir/file name.txt"


def test_sign_more_vector():
    assert plaintext("1250000000", "AKIDexampleV4", 1500000300, 1500000000, 123456789,
                     fileid("1250000000", "mybucket", PATH), "mybucket") == (
        "a=1250000000&k=AKIDexampleV4&e=1500000300&t=1500000000&r=123456789"
        "&f=/1250000000/mybucket/dir/file%20name.txt&b=mybucket")
    assert VECTOR_SIGNER.sign_more("mybucket", PATH, 1500000300) == (
        "08o3K5xzQQV0EHYVpPkjUmo3T6RhPTEyNTAwMDAwMDAmaz1BS0lEZXhhbXBsZVY0JmU9MTUwMDAwMDMwMCZ0PTE1MDAwMDAwMDAmcj0x"
        "MjM0NTY3ODkmZj0vMTI1MDAwMDAwMC9teWJ1Y2tldC9kaXIvZmlsZSUyMG5hbWUudHh0JmI9bXlidWNrZXQ=")


def test_sign_once_vector():
    assert VECTOR_SIGNER.sign_once("mybucket", PATH) == (
        "h42j/7LInQd0T1i4OYUWHQLABVthPTEyNTAwMDAwMDAmaz1BS0lEZXhhbXBsZVY0JmU9MCZ0PTE1MDAwMDAwMDAmcj0xMjM0NTY3ODkm"
        "Zj0vMTI1MDAwMDAwMC9teWJ1Y2tldC9kaXIvZmlsZSUyMG5hbWUudHh0JmI9bXlidWNrZXQ=")


def test_sign_more_folder_vector():
    assert VECTOR_SIGNER.sign_more("mybucket", "/dir/", 1500000300) == (
        "DAJHBcx0AYTfzRc/BJXn5/wZxvNhPTEyNTAwMDAwMDAmaz1BS0lEZXhhbXBsZVY0JmU9MTUwMDAwMDMwMCZ0PTE1MDAwMDAwMDAmcj0x"
        "MjM0NTY3ODkmZj0vMTI1MDAwMDAwMC9teWJ1Y2tldC9kaXIvJmI9bXlidWNrZXQ=")


def test_sign_download_vector():
    assert VECTOR_SIGNER.sign_download("mybucket", PATH, 1500000300) == (
        "Fq2uYae/5ZOuX5cnHK2eSW2IlJ9hPTEyNTAwMDAwMDAmaz1BS0lEZXhhbXBsZVY0JmU9MTUwMDAwMDMwMCZ0PTE1MDAwMDAwMDAmcj0x"
        "MjM0NTY3ODkmZj0vZGlyL2ZpbGUlMjBuYW1lLnR4dCZiPW15YnVja2V0")


VECTOR_DATA = bytes((7 * i + 3) % 251 for i in range(2 * 1024 * 1024 + 1000))
VECTOR_PARTS = [
    {"offset": 0, "datalen": 1048576, "datasha": "dcbfa09dfd774f88000cbd5bbd816b060eda0706"},
    {"offset": 1048576, "datalen": 1048576, "datasha": "6b38bea2a59a52b1b21418e9767f0a2d17fe3a51"},
    {"offset": 2097152, "datalen": 1000, "datasha": "a9ca2654722ded4ef81970c241cc452c8ae99da1"},
]


def _slices(data: bytes, size: int) -> list[bytes]:
    return [data[o: o + size] for o in range(0, len(data), size)]


def test_uploadparts_internal_state_vector():
    parts = uploadparts(_slices(VECTOR_DATA, 1 << 20))
    assert parts == VECTOR_PARTS
    assert parts[-1]["datasha"] == hashlib.sha1(VECTOR_DATA).hexdigest()


def test_uploadparts_needs_64_byte_slices():
    with pytest.raises(ValueError):
        uploadparts([b"x" * 100, b"y"])


def test_parse_and_verify_sign():
    sign = VECTOR_SIGNER.sign_once("mybucket", PATH)
    parsed = parse_sign(sign)
    assert (parsed.appid, parsed.secret_id, parsed.expired, parsed.now, parsed.bucket) == (
        "1250000000", "AKIDexampleV4", 0, 1500000000, "mybucket")
    assert parsed.file_id == "/1250000000/mybucket/dir/file%20name.txt"
    assert verify_hmac(parsed, "SKexampleV4Secret")
    assert not verify_hmac(parsed, "wrong")
    for bad in ("", "!!!", "YWJj", "QUFBQUFBQUFBQUFBQUFBQUFBQUFhPTE="):
        with pytest.raises(ValueError):
            parse_sign(bad)


def test_secrets_stay_out_of_repr():
    assert "SKexampleV4Secret" not in repr(CREDS) and "AKIDexampleV4" not in repr(CREDS)
    assert "SKexampleV4Secret" not in repr(VECTOR_SIGNER)


# ----------------------------------------------------------------------------------------------
# Names, metadata, errors, form encoding


@pytest.mark.parametrize("key", ["q?mark", "a*b:c|d\\e<f>g\"h", "dir/ /x", "dir/\t/", " /lead", "x/ ",
                                 "\uff1f already", "quote\u201bit", "pic\u2420", "plain/name.txt"])
def test_name_encoding_round_trips_and_is_legal(key):
    encoded = encode_key(key)
    assert decode_name(encoded) == key
    assert not set('?*:|\\<>"') & set(encoded)
    import re
    assert not re.search(r"/[ \t\n\r\f\v]*/", "/" + encoded)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list('ab ?*:|\\<>"\t\uff1f\u201b\u2420/')), min_size=1,
                        max_size=6), min_size=1, max_size=4))
def test_name_encoding_property(segments):
    key = "/".join(segments)
    if "" in key.split("/")[:-1]:
        with pytest.raises(errors.InvalidArgument):
            encode_key(key)
        return
    assert decode_name(encode_key(key)) == key


def test_meta_mapping():
    biz = meta_to_biz_attr({"mtime": "1.5", "Mode": "33188"})
    assert json.loads(biz) == {"mtime": "1.5", "mode": "33188"}
    assert meta_to_biz_attr({}) == ""
    assert meta_from_wire(biz, {"x-cos-meta-uid": "7", "x-cos-meta-mode": "1", "Content-Type": "x"}) == {
        "uid": "7", "mtime": "1.5", "mode": "33188"}
    assert meta_from_wire("free text", None) == {"biz_attr": "free text"}
    assert meta_from_wire("", {}) == {}


@pytest.mark.parametrize("code,cls", [(-197, errors.NotFound), (-133, errors.NotFound), (-177, errors.AlreadyExists),
                                      (-178, errors.AlreadyExists), (-71, errors.Throttled), (-97, errors.AccessDenied),
                                      (-59, errors.AccessDenied), (-173, errors.NotEmpty),
                                      (-5997, errors.Transient), (-5999, errors.InvalidArgument)])
def test_error_codes(code, cls):
    err = _error_for(code, "msg", 400, "rid", "op")
    assert type(err) is cls and "msg" in str(err) and "rid" in err.detail


def test_form_matches_the_sdk_shape():
    body, ctype = encode_form([("op", "upload"), ("filecontent", b"\x00data\r\n--"), ("sha", "abc")])
    assert ctype.startswith("multipart/form-data; boundary=")
    assert b'Content-Disposition: form-data; name="op"; filename="op"\r\n\r\nupload\r\n' in body
    assert parse_multipart(body, ctype) == {"op": b"upload", "filecontent": b"\x00data\r\n--", "sha": b"abc"}


# ----------------------------------------------------------------------------------------------
# Against the emulator

FAST = {"retries": "3", "retry_base_delay": "0.01"}


@pytest.fixture
def emu(tmp_path):
    with CosEmulator(root=tmp_path / "cos", buckets=("bkt", "other")) as emulator:
        yield emulator


@pytest.fixture
def store(emu):
    provider = open_provider("t", {**emu.config(), **FAST})
    yield provider.bucket("bkt")
    provider.close()


def _raw(emu: CosEmulator, method: str, path: str, sign: str | None, *, bucket: str = "bkt", **kwargs):
    """One raw API request; returns (HTTP status, JSON reply)."""
    from storefs.wire.auth.cos import quote_path
    url = f"{emu.url}/files/v2/{emu.appid}/{bucket}{quote_path(path)}"
    headers = kwargs.pop("headers", {})
    if sign is not None:
        headers["Authorization"] = sign
    if "form" in kwargs:
        kwargs["data"], headers["Content-Type"] = encode_form(kwargs.pop("form"))
    resp = requests.request(method, url, headers=headers, timeout=60, **kwargs)   # a loaded machine is slow
    return resp.status_code, resp.json()


def _signer(emu: CosEmulator, **overrides) -> Signer:
    creds = Credentials(overrides.get("appid", emu.appid), overrides.get("secret_id", emu.secret_id),
                        overrides.get("secret_key", emu.secret_key))
    return Signer(creds, clock=overrides.get("clock", time.time))


def _more(emu: CosEmulator, path: str, bucket: str = "bkt", **overrides) -> str:
    return _signer(emu, **overrides).sign_more(bucket, path, int(time.time()) + 300)


def test_error_shape_and_signature_checks(emu, store):
    store.put("f", io.BytesIO(b"x"), 1, {})
    status, doc = _raw(emu, "GET", "/f", None, params={"op": "stat"})
    assert status == 403 and doc["code"] == -47 and doc["message"] and doc["request_id"]
    assert _raw(emu, "GET", "/f", _more(emu, "/f"), params={"op": "stat"})[1]["code"] == 0
    cases = {
        -97: _more(emu, "/f", secret_key="wrong"),
        -70: _more(emu, "/f", appid="1"),
        -61: _more(emu, "/f", bucket="other"),
        -63: _more(emu, "/g"),
        -47: _more(emu, "/f", secret_id="AKIDnobody"),
    }
    for code, sign in cases.items():
        status, doc = _raw(emu, "GET", "/f", sign, params={"op": "stat"})
        assert (status, doc["code"]) == (403, code), code
    # Bucket-wide multi-use signs (empty f=) are accepted, as other v4 clients use them.
    bucket_wide = Signer(Credentials(emu.appid, emu.secret_id, emu.secret_key))._sign("bkt", "", int(time.time()) + 60)
    assert _raw(emu, "GET", "/f", bucket_wide, params={"op": "stat"})[1]["code"] == 0


def test_sign_expiry_and_single_use(emu, store):
    store.put("f", io.BytesIO(b"x"), 1, {})
    expired = _signer(emu).sign_more("bkt", "/f", int(time.time()) - 1)
    assert _raw(emu, "GET", "/f", expired, params={"op": "stat"})[1]["code"] == -59
    sign = _more(emu, "/f")
    emu.clock.advance(400)  # the server's clock passes the sign's expiry
    assert _raw(emu, "GET", "/f", sign, params={"op": "stat"})[1]["code"] == -59
    emu.clock.advance(-400)
    # delete needs a single-use sign; a multi-use one is refused
    assert _raw(emu, "POST", "/f", _more(emu, "/f"), json={"op": "delete"})[1]["code"] == -97
    once = _signer(emu).sign_once("bkt", "/f")
    assert _raw(emu, "POST", "/f", once, json={"op": "update", "biz_attr": "a"})[1]["code"] == 0
    status, doc = _raw(emu, "POST", "/f", once, json={"op": "update", "biz_attr": "b"})
    assert (status, doc["code"]) == (403, -97)  # replayed
    stale = _signer(emu, clock=lambda: time.time() - 3600).sign_once("bkt", "/f")
    assert _raw(emu, "POST", "/f", stale, json={"op": "delete"})[1]["code"] == -59


def test_download_sign_is_checked(emu, store):
    store.put("d/f", io.BytesIO(b"0123456789"), 10, {})
    base = f"{emu.url}/d/f"
    host = {"Host": f"bkt-{emu.appid}.cos.example"}
    good = _signer(emu).sign_download("bkt", "/d/f", int(time.time()) + 60)
    resp = requests.get(f"{base}?sign={good}", headers={**host, "Range": "bytes=2-4"}, timeout=10)
    assert (resp.status_code, resp.content) == (206, b"234")
    api_style = _more(emu, "/d/f")  # f=/appid/bucket/path is not a download sign
    resp = requests.get(f"{base}?sign={api_style}", headers=host, timeout=10)
    assert resp.status_code == 403 and resp.json()["code"] == -63
    expired = _signer(emu).sign_download("bkt", "/d/f", int(time.time()) - 5)
    assert requests.get(f"{base}?sign={expired}", headers=host, timeout=10).json()["code"] == -59


def test_provider_maps_auth_failure(emu):
    provider = open_provider("t", {**emu.config(), "secret_key": "wrong", **FAST})
    with pytest.raises(errors.AccessDenied) as info:
        provider.bucket("bkt").stat("x")
    assert "wrong" not in str(info.value) and "-97" in str(info.value)
    with pytest.raises(errors.NotFound):
        open_provider("t", {**emu.config(), **FAST}).bucket("nobucket").stat("x")


def test_throttling_is_retried_then_eio(emu, store):
    store.put("f", io.BytesIO(b"x"), 1, {})
    emu.faults.add(Fault(op="stat", nth=1, count=2, status=503))
    assert store.stat("f").size == 1  # two -71 answers, then success
    emu.faults.clear()
    emu.faults.add(Fault(op="stat", nth=1, count=100, status=503))
    with pytest.raises(errors.Throttled) as info:
        store.stat("f")
    assert info.value.errno == errors.errno.EIO and "-71" in str(info.value)
    assert emu.request_counts["stat"] == 3  # retries


def test_resets_and_garbage(emu, store):
    store.put("f", io.BytesIO(b"abc"), 3, {})
    emu.faults.add(Fault(op="download", nth=1, action="reset"))
    emu.faults.add(Fault(op="upload", nth=1, action="reset"))
    assert store.read_range("f", 0, 3) == b"abc"
    store.put("g", io.BytesIO(b"x"), 1, {})
    emu.faults.add(Fault(op="stat", nth=1, count=10, action="garble"))
    with pytest.raises(errors.ProtocolError):
        store.stat("f")
    emu.faults.clear()
    emu.faults.add(Fault(op="list", nth=1, action="delay", delay=0.2))
    assert [o.key for o in store.list("").objects] == ["f", "g"]


def _init(emu, path, size, slice_size=1 << 20, **extra):
    form = [("op", "upload_slice_init"), *[(k, v) for k, v in extra.items()], ("filesize", str(size)),
            ("slice_size", str(slice_size)), ("biz_attr", ""), ("insertOnly", "0")]
    return _raw(emu, "POST", path, _more(emu, path), form=form)


def _data(emu, path, session, offset, data, **extra):
    form = [("op", "upload_slice_data"), ("filecontent", data), ("session", session), ("offset", str(offset)),
            *extra.items()]
    return _raw(emu, "POST", path, _more(emu, path), form=form)


def _finish(emu, path, session, size, **extra):
    form = [("op", "upload_slice_finish"), ("session", session), ("filesize", str(size)), *extra.items()]
    return _raw(emu, "POST", path, _more(emu, path), form=form)


def test_slice_flow_error_cases(emu):
    data = os.urandom(2 * 65536 + 100)
    assert _init(emu, "/s", len(data), slice_size=1000)[1]["code"] == -284
    status, doc = _init(emu, "/s", len(data), slice_size=65536)
    session = doc["data"]["session"]
    assert doc["data"]["slice_size"] == 65536
    assert _data(emu, "/s", session, 5, data[5:65541])[1]["code"] == -5999       # not a slice start
    assert _data(emu, "/s", session, 0, data[:100])[1]["code"] == -5999          # bad length
    assert _data(emu, "/s", "nosuch", 0, data[:65536])[1]["code"] == -4017       # unknown session
    assert _data(emu, "/s", session, 65536, data[65536:131072])[1]["code"] == 0  # any order is fine
    status, doc = _finish(emu, "/s", session, len(data))
    assert (status, doc["code"]) == (400, -175)                                 # slices missing
    assert _data(emu, "/s", session, 0, data[:65536])[1]["code"] == 0
    assert _data(emu, "/s", session, 131072, data[131072:])[1]["code"] == 0
    assert _finish(emu, "/s", session, len(data) + 1)[1]["code"] == -175         # filesize differs
    assert _finish(emu, "/s", session, len(data))[1]["code"] == 0
    assert _finish(emu, "/s", session, len(data))[1]["code"] == -4017            # session is gone
    emu.expire_sessions()


def test_serial_session_rejects_wrong_order(emu):
    emu.serial_upload = True
    data = os.urandom(3 * 65536)
    doc = _init(emu, "/o", len(data), slice_size=65536)[1]["data"]
    assert doc["serial_upload"] == 1
    session = doc["session"]
    assert _data(emu, "/o", session, 65536, data[65536:131072])[1]["code"] == -5999
    assert _data(emu, "/o", session, 0, data[:65536])[1]["code"] == 0
    assert _data(emu, "/o", session, 0, data[:65536])[1]["code"] == 0  # a resend of the last slice is fine


def test_expired_session_becomes_not_found(emu, store):
    upload = store.create_multipart("exp", 100, 0, {})
    emu.expire_sessions()
    with pytest.raises(errors.NotFound):
        store.upload_part(upload, 1, 0, b"x" * 100)


def test_vendor_sdk_sha_flow_with_uploadparts(emu):
    """What the SDK sends with enable_sha1: whole sha + uploadparts at init, sha on data and finish."""
    sha = VECTOR_PARTS[-1]["datasha"]
    path = "/vec.bin"
    _, doc = _init(emu, path, len(VECTOR_DATA), sha=sha, uploadparts=json.dumps(VECTOR_PARTS))
    session = doc["data"]["session"]
    for offset in range(0, len(VECTOR_DATA), 1 << 20):
        assert _data(emu, path, session, offset, VECTOR_DATA[offset: offset + (1 << 20)], sha=sha)[1]["code"] == 0
    assert _finish(emu, path, session, len(VECTOR_DATA))[1]["code"] == -29094  # init had sha: finish must too
    assert _finish(emu, path, session, len(VECTOR_DATA), sha=sha)[1]["code"] == 0
    stat = _raw(emu, "GET", path, _more(emu, path), params={"op": "stat"})[1]["data"]
    assert (stat["filesize"], stat["sha"]) == (len(VECTOR_DATA), sha)
    # A second upload of the same content hits "instant upload": no session, access_url at once.
    doc = _init(emu, "/twin.bin", len(VECTOR_DATA), sha=sha, uploadparts=json.dumps(VECTOR_PARTS))[1]
    assert "access_url" in doc["data"] and "session" not in doc["data"]


def test_uploadparts_mismatch_is_rejected(emu):
    data = bytes(range(256)) * 512  # 128 KiB, two 64 KiB slices
    parts = uploadparts(_slices(data, 65536))
    bad = [dict(parts[0], datasha="0" * 40), parts[1]]
    assert _init(emu, "/u", len(data), slice_size=65536, sha=parts[-1]["datasha"],
                 uploadparts="[not json")[1]["code"] == -5965
    session = _init(emu, "/u", len(data), slice_size=65536, sha=parts[-1]["datasha"],
                    uploadparts=json.dumps(bad))[1]["data"]["session"]
    for offset in (0, 65536):
        _data(emu, "/u", session, offset, data[offset: offset + 65536])
    assert _finish(emu, "/u", session, len(data), sha=parts[-1]["datasha"])[1]["code"] == -4016


def test_single_upload_sha_and_insert_only(emu):
    form = [("op", "upload"), ("filecontent", b"abc"), ("sha", "0" * 40), ("biz_attr", ""), ("insertOnly", "1")]
    assert _raw(emu, "POST", "/i", _more(emu, "/i"), form=form)[1]["code"] == -4016
    form[2] = ("sha", "a9993e364706816aba3e25717850c26c9cd0d89d")
    assert _raw(emu, "POST", "/i", _more(emu, "/i"), form=form)[1]["code"] == 0
    status, doc = _raw(emu, "POST", "/i", _more(emu, "/i"), form=form)
    assert (status, doc["code"]) == (409, -177)
    assert _raw(emu, "POST", "/bad?name", _more(emu, "/bad?name"), form=form)[1]["code"] == -180


def test_provider_serial_upload_from_threads(emu, store):
    emu.serial_upload = True
    data = os.urandom(3 * (3 << 20) + 5)
    upload = store.create_multipart("serial.bin", len(data), 0, {"mtime": "1"})
    size = upload.part_size
    offsets = list(range(0, len(data), size))
    parts: dict[int, object] = {}

    def send(i: int) -> None:
        parts[i] = store.upload_part(upload, i + 1, offsets[i], data[offsets[i]: offsets[i] + size])

    threads = [threading.Thread(target=send, args=(i,)) for i in reversed(range(len(offsets)))]
    for t in threads:
        t.start()
        time.sleep(0.02)  # later parts are sent first: the gate must hold them back
    for t in threads:
        t.join()
    info = store.complete_multipart(upload, [parts[i] for i in range(len(offsets))])
    assert info.size == len(data) and info.meta == {"mtime": "1"}
    assert store.read_range("serial.bin", 0, len(data)) == data


def test_large_put_goes_up_in_slices(emu, store):
    data = os.urandom(9 * 1024 * 1024 + 3)
    info = store.put("big", io.BytesIO(data), len(data), {"mode": "1"})
    counts = emu.request_counts
    assert counts["upload_slice_data"] == 4 and "upload" not in counts
    assert info.size == len(data) and store.stat("big").meta == {"mode": "1"}
    assert store.read_range("big", 5_000_000, 5_000_010) == data[5_000_000:5_000_010]


def test_listing_is_paged_not_per_entry(emu, store):
    for i in range(7):
        store.put(f"p/{i}", io.BytesIO(b"1"), 1, {})
    store.put("p/sub/x", io.BytesIO(b"1"), 1, {})
    before = emu.request_counts.get("list", 0)
    pages = list(iter_list(store, "p/"))
    assert emu.request_counts["list"] - before == len(pages) == 1
    page = store.list("p/", limit=3)
    keys = [o.key for o in page.objects]
    while page.next_token:
        page = store.list("p/", limit=3, token=page.next_token)
        keys += [o.key for o in page.objects] + page.prefixes
    assert keys == [f"p/{i}" for i in range(7)] + ["p/sub/"]
    assert emu.request_counts["list"] - before == 1 + 3
    # name prefixes within a folder
    assert [o.key for o in store.list("p/1").objects] == ["p/1"]


def test_recursive_walk(emu, store):
    for key in ["r/a", "r/b-x", "r/b/c", "r/b/d/e", "r/c"]:
        store.put(key, io.BytesIO(b"1"), 1, {})
    store.put("r/empty/", io.BytesIO(b""), 0, {})
    before = emu.request_counts.get("list", 0)
    keys = [o.key for page in iter_list(store, "r/", delimiter="") for o in page.objects]
    # Folders are reported as `d/` markers where they sort, so a directory rename carries empty ones.
    walked = ["r/a", "r/b-x", "r/b/", "r/b/c", "r/b/d/", "r/b/d/e", "r/c", "r/empty/"]
    assert keys == walked
    assert emu.request_counts["list"] - before == 4  # one page per folder: r/, r/b/, r/b/d/, r/empty/
    # tiny pages: the walk state rides in the token
    keys, token, calls = [], None, 0
    while True:
        page = store.list("r/", delimiter="", limit=1, token=token)
        keys += [o.key for o in page.objects]
        token, calls = page.next_token, calls + 1
        if not token:
            break
    assert keys == walked and calls < 20
    with pytest.raises(errors.InvalidArgument):
        store.list("r/", delimiter="", token="w1:garbage")


def test_real_and_virtual_folders(emu, store):
    store.put("v/deep/file", io.BytesIO(b"1"), 1, {})
    assert store.list("v/").prefixes == ["v/deep/"]  # virtual: shown in the listing ...
    with pytest.raises(errors.NotFound):
        store.stat("v/deep/")  # ... but not a folder of its own
    store.put("v/deep/", io.BytesIO(b""), 0, {"mode": "16877"})
    assert store.stat("v/deep/").meta == {"mode": "16877"}
    store.put("v/deep/", io.BytesIO(b""), 0, {"mode": "16832"})  # put again: replaces the attributes
    assert store.stat("v/deep/").meta == {"mode": "16832"}
    store.set_meta("v/deep/", {"mode": "16877", "mtime": "5"})
    assert store.stat("v/deep/").meta == {"mode": "16877", "mtime": "5"}
    store.delete("v/deep/")
    assert store.read_range("v/deep/file", 0, 1) == b"1"  # deleting a folder leaves its files
    store.delete("v/deep/")  # idempotent
    with pytest.raises(errors.InvalidArgument):
        store.put("v/x/", io.BytesIO(b"a"), 1, {})


def test_move_copy_wire_variants(emu, store):
    store.put("m/a", io.BytesIO(b"abc"), 3, {"mtime": "9"})
    store.put("m/b", io.BytesIO(b"old"), 3, {})
    store.move("m/a", "m/b")  # to_over_write=1: rename() replaces the target
    assert store.read_range("m/b", 0, 3) == b"abc" and store.stat("m/b").meta == {"mtime": "9"}
    # other clients: JSON body (PHP SDK) and a dest_fileid relative to the source's folder
    once = _signer(emu).sign_once("bkt", "/m/b")
    assert _raw(emu, "POST", "/m/b", once, json={"op": "move", "dest_fileid": "c", "to_over_write": 0})[1]["code"] == 0
    assert store.stat("m/c").size == 3
    store.put("m/d", io.BytesIO(b"d"), 1, {})
    once = _signer(emu).sign_once("bkt", "/m/c")
    assert _raw(emu, "POST", "/m/c", once, params={"op": "move", "dest_fileid": "/m/d",
                                                   "to_over_write": "0"})[1]["code"] == -177
    with pytest.raises(errors.NotSupported):
        store.move("m/", "n/")
    with pytest.raises(errors.NotFound):
        store.move("m/nothing", "m/x")


def test_update_custom_headers_are_read_as_meta(emu, store):
    store.put("h", io.BytesIO(b"x"), 1, {"mode": "1"})
    once = _signer(emu).sign_once("bkt", "/h")
    body = {"op": "update", "custom_headers": {"x-cos-meta-uid": "1000", "Content-Type": "text/plain"}}
    assert _raw(emu, "POST", "/h", once, json=body)[1]["code"] == 0
    assert store.stat("h").meta == {"mode": "1", "uid": "1000"}
    once = _signer(emu).sign_once("bkt", "/h")
    assert _raw(emu, "POST", "/h", once, json={"op": "update", "custom_headers": {"X-Bad": "1"}})[1]["code"] == -5999


def test_finish_answer_lost_is_recovered(emu, store, monkeypatch):
    data = os.urandom(1000)
    upload = store.create_multipart("lost", len(data), 0, {})
    part = store.upload_part(upload, 1, 0, data)
    transport = store.api.client.requests
    real_open = transport.open
    calls = {"n": 0}

    def open_(method, url, headers, body):
        answer = real_open(method, url, headers, body)
        if b"upload_slice_finish" in body.data and calls["n"] == 0:
            calls["n"] += 1
            answer.close()
            raise errors.Transient("answer lost")  # the server did finish
        return answer

    monkeypatch.setattr(transport, "open", open_)
    assert store.complete_multipart(upload, [part]).size == 1000


def test_config_errors():
    with pytest.raises(errors.ConfigError):
        open_provider("t", {"appid": "1", "secret_id": "a", "secret_key": "b"})
    with pytest.raises(errors.ConfigError):
        open_provider("t", {"appid": "x", "secret_id": "a", "secret_key": "b", "region": "sh"})
    provider = open_provider("t", {"appid": "1250000000", "secret_id": "a", "secret_key": "b", "region": "gz"})
    assert provider.config.api_base == "https://gz.file.myqcloud.com"
    assert provider.config.download_host == "cosgz.myqcloud.com"
    assert "secret" not in repr(provider) and isinstance(provider.bucket("b"), CosStore)
    with pytest.raises(errors.NotSupported):
        provider.list_buckets()


def test_emulator_script_prints_config_and_stops(tmp_path):
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "emulator.py"), "cos", "--bucket", "one",
                             "--bucket", "two", "--root", str(tmp_path / "root")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        config = json.loads(proc.stdout.readline())
        assert set(config) == {"type", "appid", "secret_id", "secret_key", "endpoint"}
        assert config["type"] == "cos" and config["endpoint"].startswith("http://127.0.0.1:")
        provider = open_provider("script", config)
        for bucket in ("one", "two"):
            provider.bucket(bucket).put("k", io.BytesIO(b"v"), 1, {})
            assert provider.bucket(bucket).read_range("k", 0, 1) == b"v"
        provider.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_multipart_parser_tolerates_plain_fields_and_no_closing_boundary():
    body = (b'--b\r\nContent-Disposition: form-data; name="op"\r\n\r\nupload\r\n'
            b'--b\r\nContent-Disposition: form-data; name="x"; filename="x"\r\n\r\nv\r\n')
    assert parse_multipart(body, "multipart/form-data; boundary=b") == {"op": b"upload", "x": b"v"}


def test_if_match_with_an_etag_the_download_host_cannot_confirm(emu, store, monkeypatch):
    info = store.put("e", io.BytesIO(b"abc"), 3, {})
    # A download host whose ETag is not the v4 sha (e.g. an MD5): the provider asks stat instead.
    monkeypatch.setattr(CosEmulator, "download_etag", lambda self, blob: hashlib.md5(b"abc").hexdigest(),
                        raising=False)
    before = emu.request_counts.get("stat", 0)
    assert store.read_range("e", 0, 3, if_match=info.etag) == b"abc"
    with pytest.raises(errors.RemoteChanged):
        store.read_range("e", 0, 3, if_match="0" * 40)
    assert emu.request_counts["stat"] - before == 2
