"""The vendor SDK (wcs-python3-sdk 5.0.36) as a real client of our WCS emulator, plus the emulator's
protocol error cases and the provider's behaviour under injected faults.

The SDK's Config is a class-attribute singleton and its progress recorder copies `tmp_record_folder` at
import time, so the fixture sets and restores both; the emulator runs in a thread of this process.
If the SDK and the emulator disagree, the SDK is right.
"""
from __future__ import annotations

import gc
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from storefs import errors
from storefs.providers import wcs as wcs_provider
from storefs.wire.auth import wcs as wcs_auth
from storefs.wire.retry import RetryPolicy
from tests.emulators.base import Fault
from tests.emulators.wcs import WcsEmulator

pytest.importorskip("wcs")

from wcs.commons.config import Config
from wcs.commons.util import etag as sdk_file_etag
from wcs.services import uploadprogressrecorder
from wcs.services.client import Client

BUCKET = "sdk-bucket"
MiB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def emulator(tmp_path):
    with WcsEmulator(root=tmp_path / "emu", buckets=(BUCKET, "other-bucket")) as emu:
        yield emu


@pytest.fixture
def sdk(emulator, tmp_path, monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    records = str(tmp_path / "records") + "/"
    settings = {"access_key": emulator.access_key, "secret_key": emulator.secret_key,
                "put_url": emulator.url, "mgr_url": emulator.url, "tmp_record_folder": records,
                "concurrency": 2, "bput_size": 1 * MiB, "block_size": 4 * MiB, "overwrite": 1,
                "connection_timeout": 20}
    for name, value in settings.items():
        monkeypatch.setattr(Config, name, value)
    monkeypatch.setattr(uploadprogressrecorder, "tmp_record_folder", records)
    yield Client(Config())
    gc.collect()  # the multipart uploader's multiprocessing Manager goes away with it


@pytest.fixture
def store(emulator):
    provider = wcs_provider.open_provider("sdk-test", {k: v for k, v in emulator.config().items() if k != "type"})
    provider.api.client.retry = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, deadline=10)
    yield provider.bucket(BUCKET)
    provider.close()


def _file(tmp_path: Path, name: str, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


# -- the vendor SDK against the emulator ----------------------------------------------------------


def test_sdk_simple_upload_and_stat(sdk, store, tmp_path):
    path, data = _file(tmp_path, "small.bin", 123_457)
    status, text, *_ = sdk.simple_upload(str(path), BUCKET, "dir/small.bin")
    assert status == 200, text
    assert json.loads(text)["hash"] == sdk_file_etag(str(path))
    status, stat, _ = sdk.stat(BUCKET, "dir/small.bin")
    assert status == 200, stat
    assert stat["fsize"] == str(len(data)) and stat["hash"] == sdk_file_etag(str(path))
    assert store.read_range("dir/small.bin", 0, len(data)) == data
    assert store.stat("dir/small.bin").etag == stat["hash"]


def test_sdk_unicode_key(sdk, store, tmp_path):
    path, data = _file(tmp_path, "u.bin", 1000)
    key = "ünïcødé/名字 ?#%.txt"
    status, text, *_ = sdk.simple_upload(str(path), BUCKET, key)
    assert status == 200, text
    assert sdk.stat(BUCKET, key)[1]["name"] == key
    assert store.read_range(key, 0, 1000) == data
    status, page, _ = sdk.bucket_list(BUCKET, prefix="ünïcødé/", mode=0)
    assert [i["key"] for i in page["items"]] == [key]


@pytest.mark.parametrize("bput_size, concurrency", [(4 * MiB, 0), (4 * MiB, 4)])
def test_sdk_multipart_with_sdk_defaults(sdk, store, emulator, tmp_path, monkeypatch, bput_size, concurrency):
    monkeypatch.setattr(Config, "bput_size", bput_size)
    monkeypatch.setattr(Config, "concurrency", concurrency)
    path, _ = _file(tmp_path, "big.bin", 12 * MiB)
    status, reply, _ = sdk.multipart_upload(str(path), BUCKET, "exact")
    assert status == 200, reply
    assert emulator.faults.counts == {"mkblk": 3, "mkfile": 1}
    assert store.stat("exact").etag == sdk_file_etag(str(path))


def test_sdk_multipart_upload_over_8_mib(sdk, store, emulator, tmp_path, caplog):
    path, data = _file(tmp_path, "big.bin", 9 * MiB + 4321)
    status, reply, _ = sdk.multipart_upload(str(path), BUCKET, "big/file.bin")
    assert status == 200, reply
    assert reply["hash"] == sdk_file_etag(str(path))
    # 3 blocks of up to 4 MiB in 1 MiB chunks: mkblk + bputs with cumulative offsets, and no
    # request failed and was retried by the SDK.
    assert emulator.faults.counts["mkblk"] == 3 and emulator.faults.counts["bput"] == 3 + 3 + 1
    assert emulator.faults.counts["mkfile"] == 1
    assert "retry" not in caplog.text
    assert emulator.pending_blocks() == 0
    status, stat, _ = sdk.stat(BUCKET, "big/file.bin")
    assert int(stat["fsize"]) == len(data)
    assert store.read_range("big/file.bin", 0, len(data)) == data


def test_sdk_list_with_prefix_and_mode(sdk, store):
    for key in ["d/a", "d/b", "d/c", "d/sub/x", "d/sub2/y", "e"]:
        store.put(key, io.BytesIO(b"1"), 1, {})
    status, page, _ = sdk.bucket_list(BUCKET, prefix="d/", limit=2, mode=0)
    assert status == 200, page
    assert [i["key"] for i in page["items"]] == ["d/a", "d/b"] and page["marker"]
    items, prefixes, marker = [], [], None
    for _ in range(10):
        status, page, _ = sdk.bucket_list(BUCKET, prefix="d/", limit=2, mode=0, marker=marker)
        items += [i["key"] for i in page["items"]]
        prefixes += page["commonPrefixes"]
        marker = page["marker"]
        if not marker:
            break
    assert items == ["d/a", "d/b", "d/c"] and prefixes == ["d/sub/", "d/sub2/"]
    status, page, _ = sdk.bucket_list(BUCKET, prefix="d/", limit=10, mode=1)
    assert page["commonPrefixes"] == ["d/sub/", "d/sub2/"] and len(page["items"]) == 3
    status, everything, _ = sdk.bucket_listAll(BUCKET, limit=2)  # no mode: recursive
    assert status == 200
    assert [i["key"] for i in everything["items"]] == ["d/a", "d/b", "d/c", "d/sub/x", "d/sub2/y", "e"]


def test_sdk_move_copy_delete_setdeadline(sdk, store, emulator):
    store.put("m/src", io.BytesIO(b"payload"), 7, {"mode": "33188"})
    status, reply, _ = sdk.copy(BUCKET, "m/src", BUCKET, "m/copy")
    assert status == 200, reply
    status, reply, _ = sdk.move(BUCKET, "m/src", "other-bucket", "moved")
    assert status == 200, reply
    assert sdk.stat(BUCKET, "m/src")[0] == 404
    assert emulator.blobs.read("other-bucket", "moved") == b"payload"
    assert store.stat("m/copy").meta == {"mode": "33188"}  # mimeType carried our metadata along
    status, reply, _ = sdk.setdeadline(BUCKET, "m/copy", 0)  # 0 = delete as soon as possible
    assert status == 200, reply
    assert sdk.stat(BUCKET, "m/copy")[0] == 404
    store.put("m/gone", io.BytesIO(b"x"), 1, {})
    assert sdk.delete(BUCKET, "m/gone")[0] == 200
    assert sdk.delete(BUCKET, "m/gone")[0] == 404
    status, reply, _ = sdk.list_buckets()
    assert status == 200 and sorted(b["name"] for b in reply["buckets"]) == ["other-bucket", BUCKET]


def test_sdk_bad_credentials_are_rejected(sdk, tmp_path, monkeypatch):
    path, _ = _file(tmp_path, "f", 10)
    monkeypatch.setattr(Config, "secret_key", "wrong")
    bad = Client(Config())
    status, reply, _ = bad.stat(BUCKET, "anything")
    assert status == 401 and reply["code"] == "401"
    status, text, *_ = bad.simple_upload(str(path), BUCKET, "f")
    assert status == 401 and json.loads(text)["code"] == "401"


def test_sdk_upload_without_overwrite_keeps_existing(sdk, store, tmp_path, monkeypatch):
    store.put("keep", io.BytesIO(b"old"), 3, {})
    monkeypatch.setattr(Config, "overwrite", 0)
    path, _ = _file(tmp_path, "new", 10)
    status, _, *_ = Client(Config()).simple_upload(str(path), BUCKET, "keep")
    assert status == 614
    assert store.read_range("keep", 0, 10) == b"old"


# -- emulator protocol error cases (raw wire) ------------------------------------------------------


def _token(emulator, key: str, deadline_ms: int | None = None) -> str:
    deadline = deadline_ms or int(emulator.clock.now() * 1000) + 3_600_000
    return wcs_auth.upload_token(emulator.access_key, emulator.secret_key,
                                 wcs_auth.upload_policy(BUCKET, key, deadline))


def _post(emulator, path: str, token: str, data: bytes) -> requests.Response:
    return requests.post(emulator.url + path, data=data, timeout=10,
                         headers={"Authorization": token, "UploadBatch": "b" * 32})


def _block(emulator, token: str, index: int, data: bytes) -> str:
    reply = _post(emulator, f"/mkblk/{len(data)}/{index}", token, data)
    assert reply.status_code == 200, reply.text
    return reply.json()["ctx"]


def test_bput_offsets_are_cumulative_and_checked(emulator):
    token = _token(emulator, "k")
    first = _post(emulator, f"/mkblk/{3 * MiB}/0", token, b"a" * MiB).json()
    assert first["offset"] == MiB
    second = _post(emulator, f"/bput/{first['ctx']}/{MiB}", token, b"b" * MiB).json()
    assert second["offset"] == 2 * MiB
    stale = _post(emulator, f"/bput/{first['ctx']}/{2 * MiB}", token, b"c" * MiB)
    assert stale.status_code == 701  # a ctx is valid for the next chunk only
    wrong = _post(emulator, f"/bput/{second['ctx']}/{MiB}", token, b"c" * MiB)
    assert wrong.status_code == 400 and wrong.json()["code"] == "400"
    too_much = _post(emulator, f"/bput/{second['ctx']}/{2 * MiB}", token, b"c" * (MiB + 1))
    assert too_much.status_code == 400


@pytest.mark.parametrize("case", ["order", "missing", "size", "incomplete", "unit"])
def test_mkfile_rejects_bad_block_lists(emulator, case):
    token = _token(emulator, "k")
    unit = 4 * MiB
    if case == "unit":
        ctxs = [_block(emulator, token, 0, b"x" * MiB), _block(emulator, token, 1, b"y")]
        size = MiB + 1
    elif case == "incomplete":
        ctxs = [_post(emulator, f"/mkblk/{unit}/0", token, b"x" * MiB).json()["ctx"]]
        size = unit
    else:
        ctxs = [_block(emulator, token, i, bytes([i]) * unit) for i in range(3)]
        size = 3 * unit
        if case == "order":
            ctxs[0], ctxs[1] = ctxs[1], ctxs[0]
        elif case == "missing":
            del ctxs[1]
            size = 2 * unit
        elif case == "size":
            size += 1
    reply = _post(emulator, f"/mkfile/{size}", token, ",".join(ctxs).encode())
    assert reply.status_code == 400, reply.text
    assert emulator.blobs.get(BUCKET, "k") is None


def test_go_sdk_style_key_and_mime(emulator):
    """The Go SDK scopes the token to the bucket and names the key in a `Key` header (base64) on
    mkblk/bput/mkfile, with `MimeType`; the py2 SDK uses mkfile path segments; forms may carry `key`."""
    deadline = int(emulator.clock.now() * 1000) + 60_000
    token = wcs_auth.upload_token(emulator.access_key, emulator.secret_key,
                                  wcs_auth.upload_policy(BUCKET, None, deadline))
    ctx = _block(emulator, token, 0, b"go")
    reply = requests.post(emulator.url + "/mkfile/2", data=ctx.encode(), timeout=10,
                          headers={"Authorization": token, "Key": wcs_auth.urlsafe_b64("go/key"),
                                   "MimeType": "text/x-go"})
    assert reply.status_code == 200 and reply.json()["key"] == "go/key"
    assert emulator.blobs.get(BUCKET, "go/key").content_type == "text/x-go"
    ctx = _block(emulator, token, 0, b"py2")
    path = f"/mkfile/3/key/{wcs_auth.urlsafe_b64('py2/key')}/mimeType/{wcs_auth.urlsafe_b64('text/x-py')}"
    reply = requests.post(emulator.url + path, data=ctx.encode(), headers={"Authorization": token}, timeout=10)
    assert reply.status_code == 200, reply.text
    assert emulator.blobs.get(BUCKET, "py2/key").content_type == "text/x-py"
    files = {"token": (None, token), "key": (None, "form/key"), "file": ("x", b"data", "text/plain")}
    reply = requests.post(emulator.url + "/file/upload", files=files, timeout=10)
    assert reply.status_code == 200 and emulator.blobs.read(BUCKET, "form/key") == b"data"
    ctx = _block(emulator, token, 0, b"nokey")
    assert _post(emulator, "/mkfile/5", token, ctx.encode()).status_code == 400  # no key anywhere


def test_expired_session_and_token(emulator):
    token = _token(emulator, "k")
    ctx = _block(emulator, token, 0, b"z" * 100)
    emulator.clock.advance(31 * 86400)
    fresh = _token(emulator, "k")
    assert _post(emulator, "/mkfile/100", fresh, ctx.encode()).status_code == 701
    assert _post(emulator, "/mkfile/100", token, ctx.encode()).status_code == 401  # token deadline passed


def test_management_signature_and_shape(emulator):
    path = "/stat/" + wcs_auth.encoded_entry(BUCKET, "nope")
    good = wcs_auth.management_token(emulator.access_key, emulator.secret_key, path)
    reply = requests.get(emulator.url + path, headers={"Authorization": good}, timeout=10)
    assert reply.status_code == 404 and set(reply.json()) == {"code", "message"} and reply.headers["X-Reqid"]
    forged = wcs_auth.management_token(emulator.access_key, "not-the-secret", path)
    reply = requests.get(emulator.url + path, headers={"Authorization": forged}, timeout=10)
    assert reply.status_code == 401 and reply.json()["code"] == "401"


def test_download_ranges_follow_the_docs(store, emulator):
    data = bytes(range(250)) * 4  # 1000 bytes, as the docs' table
    store.put("r", io.BytesIO(data), len(data), {})
    url = emulator.url + f"/dl/{BUCKET}/r"
    for header, status, body in [("bytes=0-888", 206, data[:889]), ("bytes=-888", 206, data[-888:]),
                                 ("bytes=-1888", 206, data), ("bytes=666-", 206, data[666:]),
                                 ("bytes=1-1888", 206, data[1:]), ("bytes=1666-1888", 416, None),
                                 ("bytes=888-666", 416, None), ("bytes=-a888-", 416, None)]:
        reply = requests.get(url, headers={"Range": header}, timeout=10)
        assert reply.status_code == status, header
        if body is not None:
            assert reply.content == body, header


# -- the provider under injected faults ------------------------------------------------------------


def test_block_upload_retries_after_5xx_reset_and_bad_crc(store, emulator):
    data = os.urandom(4 * 4 * MiB + 10)  # over single_put_max: 5 blocks
    emulator.faults.add(Fault(op="mkblk", nth=1, action="status", status=503))
    emulator.faults.add(Fault(op="mkblk", nth=3, action="reset"))
    emulator.faults.add(Fault(op="mkblk", nth=5, action="status", status=200, code="badcrc"))
    info = store.upload_file("faulty", io.BytesIO(data), len(data), {"mtime": "1"}, concurrency=1)
    assert store.read_range("faulty", 0, len(data)) == data
    assert info.etag == wcs_auth.etag_bytes(data) == store.stat("faulty").etag
    assert sorted(emulator.faults.fired) == [("mkblk", "reset"), ("mkblk", "status"), ("mkblk", "status")]
    assert emulator.faults.counts["mkblk"] == 5 + 3


def test_lost_bput_reply_restarts_the_block(store, emulator):
    store.api.bput_size = 1 * MiB
    data = os.urandom(4 * MiB)
    emulator.faults.add(Fault(op="bput", nth=2, action="status", status=500))
    upload = store.create_multipart("chunked", len(data), 4 * MiB, {})
    part = store.upload_part(upload, 1, 0, data)
    store.complete_multipart(upload, [part])
    assert store.read_range("chunked", 0, len(data)) == data
    assert emulator.faults.counts["mkblk"] == 2  # the block started over


def test_throttling_is_retried_then_gives_eio(store, emulator):
    store.put("t", io.BytesIO(b"x"), 1, {})
    emulator.faults.add(Fault(op="stat", nth=1, count=2, action="status", status=429))
    assert store.stat("t").size == 1
    emulator.faults.add(Fault(op="stat", nth=1, count=100, action="status", status=503))
    with pytest.raises(errors.Throttled) as caught:
        store.stat("t")
    assert caught.value.errno == errors.Transient.errno


def test_garbled_and_truncated_replies(store, emulator):
    store.put("g", io.BytesIO(b"abc"), 3, {})
    emulator.faults.add(Fault(op="stat", nth=1, count=10, action="garble"))
    with pytest.raises(errors.ProtocolError):
        store.stat("g")
    emulator.faults.clear()
    emulator.faults.add(Fault(op="get", nth=1, action="truncate"))
    emulator.faults.add(Fault(op="list", nth=1, action="delay", delay=0.2))
    assert store.read_range("g", 0, 3) == b"abc"
    assert [o.key for o in store.list("").objects] == ["g"]


def test_if_match_and_missing(store):
    first = store.put("v", io.BytesIO(b"one"), 3, {})
    store.put("v", io.BytesIO(b"two!"), 4, {})
    with pytest.raises(errors.RemoteChanged):
        store.read_range("v", 0, 3, if_match=first.etag)
    with pytest.raises(errors.NotFound):
        store.read_range("missing", 0, 3)
    with pytest.raises(errors.NotFound):
        store.move("missing", "x")
    store.delete("missing")


def test_grouped_listing_for_other_delimiters(store):
    for key in ["a-1-x", "a-1-y", "a-2", "a3", "b"]:
        store.put(key, io.BytesIO(b"1"), 1, {})
    keys, prefixes, token = [], [], None
    for _ in range(10):
        page = store.list("a", delimiter="-", token=token, limit=1)
        keys += [o.key for o in page.objects]
        prefixes += page.prefixes
        token = page.next_token
        if not token:
            break
    assert keys == ["a3"] and prefixes == ["a-"]


def test_large_set_meta_rewrites_through_blocks(store, emulator):
    data = os.urandom(17 * MiB)
    store.upload_file("huge", io.BytesIO(data), len(data), {"mode": "1"})
    emulator.faults.clear()
    info = store.set_meta("huge", {"mode": "2"})
    assert info.size == len(data) and store.stat("huge").meta == {"mode": "2"}
    assert store.read_range("huge", 0, len(data)) == data
    assert emulator.faults.counts["mkblk"] == 3  # 8 MiB blocks


# -- the runner ------------------------------------------------------------------------------------


def test_runner_prints_config_and_stops_on_sigterm(tmp_path):
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "emulator.py"), "wcs", "--root",
                             str(tmp_path / "root"), "--bucket", "one", "--bucket", "two"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        config = json.loads(proc.stdout.readline())
        assert set(config) == {"type", "access_key", "secret_key", "put_url", "mgr_url", "get_url"}
        assert config["type"] == "wcs" and config["put_url"].startswith("http://127.0.0.1:")
        provider = wcs_provider.open_provider("runner", {k: v for k, v in config.items() if k != "type"})
        try:
            assert provider.list_buckets() == ["one", "two"]
            provider.bucket("one").put("k", io.BytesIO(b"v"), 1, {})
        finally:
            provider.close()
        assert any((tmp_path / "root").rglob("*"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def test_sdk_resumes_an_upload_by_its_upload_id(sdk, store, emulator, tmp_path, monkeypatch):
    """The WCS SDK's resume (PROTOCOLS.md §3.3): blocks finished under an upload id are recorded with
    their ctx; the same upload id later sends only the missing blocks and merges the recorded ctxs.
    That the emulator honours old ctxs at mkfile is what storefs's journal-kept WCS parts rely on."""
    monkeypatch.setattr(Config, "bput_size", 4 * MiB)   # one mkblk per block
    path, data = _file(tmp_path, "resumed.bin", 5 * 4 * MiB + 99)
    emulator.faults.add(Fault(op="mkblk", nth=4, count=20, action="status", status=400))
    result = sdk.multipart_upload(str(path), BUCKET, "resumed")
    assert emulator.faults.counts["mkblk"] == 6 and "mkfile" not in emulator.faults.counts, result
    with pytest.raises(errors.NotFound):
        store.stat("resumed")
    (upload_id,) = os.listdir(tmp_path / "records")   # the SDK's progress records, by upload id
    emulator.faults.clear()   # the counts too
    status, reply, _ = sdk.multipart_upload(str(path), BUCKET, "resumed", upload_id)
    assert status == 200, reply
    # Three blocks were recorded as done: only the other three went again.
    assert emulator.faults.counts["mkblk"] == 3 and emulator.faults.counts["mkfile"] == 1
    assert store.read_range("resumed", 0, len(data)) == data
