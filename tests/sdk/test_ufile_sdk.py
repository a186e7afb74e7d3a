"""The vendor SDK `ufile` 3.2.11 as a real client of our UFile emulator (and of objects our provider wrote).

The SDK builds URLs `http://<bucket><suffix>/<key>` and sends them through one module-level requests.Session;
pointing that session at the emulator as an HTTP proxy makes it send absolute-form request targets with
`Host: <bucket>.ufile.test` (PROTOCOLS.md §4.5). If the SDK and the emulator disagree, the SDK is right.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import uuid
from pathlib import Path

import pytest
import requests

pytest.importorskip("ufile")

import ufile.bucketmanager as ubm
import ufile.httprequest as uh
from ufile import config as ucfg
from ufile import filemanager, multipartuploadufile, util

from storefs.errors import (
    AccessDenied,
    InvalidArgument,
    NotFound,
    ProtocolError,
    Throttled,
)
from storefs.wire.auth import ufile as auth
from storefs.providers.ufile import UfileConfig, UfileProvider, open_provider
from storefs.wire.retry import RetryPolicy
from storefs.store.contract import UploadedPart
from tests.emulators.base import Fault
from tests.emulators.ufile import (
    API_HOST,
    RET_AUTH_FAILED,
    RET_BUCKET_NOT_EXIST,
    RET_FILE_NOT_EXIST,
    SUFFIX,
    UfileEmulator,
)

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def emulator():
    with UfileEmulator() as emu:
        yield emu


@pytest.fixture
def sdk(emulator, monkeypatch):
    """Route the SDK's module-level session through the emulator; undo everything afterwards."""
    monkeypatch.setattr(uh.requests, "proxies", {"http": emulator.url})
    monkeypatch.setattr(uh.requests, "trust_env", False)
    monkeypatch.setattr(ubm, "UCLOUD_API_URL", f"http://{API_HOST}")
    monkeypatch.setitem(ucfg._config, "connection_timeout", 30)
    level = logging.getLogger("UCLOUD").level
    logging.getLogger("UCLOUD").setLevel(logging.WARNING)
    # The emulator lives for the module: each test starts with no faults and zero request counts
    # (with pytest-xdist, which tests ran before this one in the worker varies).
    emulator.faults.clear()
    yield emulator
    emulator.faults.clear()
    logging.getLogger("UCLOUD").setLevel(level)
    uh.requests.close()


@pytest.fixture
def bucket(sdk):
    name = f"sdk-{uuid.uuid4().hex[:10]}"
    sdk.create_bucket(name)
    yield name
    sdk.blobs.delete_bucket(name)


@pytest.fixture
def fm(sdk):
    return filemanager.FileManager(sdk.public_key, sdk.private_key, upload_suffix=SUFFIX, download_suffix=SUFFIX)


@pytest.fixture
def store(sdk, bucket):
    provider = open_provider("sdk", {k: str(v) for k, v in sdk.config().items() if k != "type"})
    yield provider.bucket(bucket)
    provider.close()


def write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_putfile_head_and_ranged_download(fm, bucket, tmp_path):
    data = os.urandom(100_000)
    local = write(tmp_path, "a.txt", data)
    _, resp = fm.putfile(bucket, "dir/a.txt", local)
    assert resp.status_code == 200, resp.error
    _, resp = fm.head_file(bucket, "dir/a.txt")
    assert resp.status_code == 200
    assert int(resp.content_length) == len(data)
    assert resp.content_type == "text/plain"
    assert fm.compare_file_etag(bucket, "dir/a.txt", local)  # our ETag is the SDK's file_etag
    out = str(tmp_path / "out")
    _, resp = fm.download_file(bucket, "dir/a.txt", out, content_range=(10, 13))
    assert resp.status_code == 206 and resp.content_range == (10, 13)
    assert Path(out).read_bytes() == data[10:14]
    _, resp = fm.download_file(bucket, "dir/a.txt", out)
    assert resp.status_code == 200 and Path(out).read_bytes() == data


def test_empty_files_and_ranges_past_the_end(fm, bucket, store, tmp_path):
    """A zero-byte putfile goes out chunked (requests sends no Content-Length for an empty file object);
    the SDK parses any Content-Range header as `bytes a-b/n`, so a 416 must not carry `bytes */n`."""
    empty = write(tmp_path, "empty.txt", b"")
    _, resp = fm.putfile(bucket, "empty.txt", empty)
    assert resp.ok(), resp.error
    _, resp = fm.putstream(bucket, "dir/", io.BytesIO(b""))
    assert resp.ok(), resp.error
    assert fm.compare_file_etag(bucket, "empty.txt", empty)  # "AAAAAA==": file_etag of 0 blocks
    assert store.stat("empty.txt").size == 0 and store.stat("dir/").is_dir_marker
    out = str(tmp_path / "out")
    _, resp = fm.download_file(bucket, "empty.txt", out, content_range=(0, 10))
    assert resp.status_code == 416 and resp.ret_code != 0
    store.put("ten", io.BytesIO(b"0123456789"), 10, {})
    _, resp = fm.download_file(bucket, "ten", out, content_range=(20, 30))
    assert resp.status_code == 416
    assert store.read_range("ten", 10, 20) == b"" and store.read_range("ten", 8, 20) == b"89"


def test_unicode_and_odd_keys(fm, bucket, store, tmp_path):
    # Not "per%cent": the SDK puts keys into URLs unescaped, so "%ce" reaches any server as an escape.
    for i, key in enumerate(["ünï 名字.txt", "a+b c", "semi;colon", "eq=al", "tilde~"]):
        _, resp = fm.putstream(bucket, key, io.BytesIO(str(i).encode()))
        assert resp.ok(), (key, resp.error)
        assert store.read_range(key, 0, 10) == str(i).encode()
        store.put(key, io.BytesIO(b"ours"), 4, {})
        out = str(tmp_path / "o")
        _, resp = fm.download_file(bucket, key, out)
        assert resp.ok() and Path(out).read_bytes() == b"ours", key
    ret, _ = fm.listobjects(bucket, prefix="ünï", marker="", maxkeys=10, delimiter="")
    assert [c["Key"] for c in ret["Contents"]] == ["ünï 名字.txt"]


def test_putstream_meta_is_visible_to_our_provider(fm, bucket, store):
    _, resp = fm.putstream(bucket, "s.bin", io.BytesIO(b"stream body"),
                             header={"X-Ufile-Meta-Mtime": "1700000000.5", "X-Ufile-Meta-Mode": "33188"})
    assert resp.ok(), resp.error
    info = store.stat("s.bin")
    assert info.size == 11 and info.meta == {"mtime": "1700000000.5", "mode": "33188"}
    (listed,) = store.list("").objects
    assert listed.meta == info.meta and listed.meta_complete and listed.etag == info.etag


def test_md5_option_is_checked(fm, bucket, tmp_path, monkeypatch):
    monkeypatch.setitem(ucfg._config, "md5", True)
    _, resp = fm.putfile(bucket, "m.txt", write(tmp_path, "m.txt", b"checked"))
    assert resp.ok(), resp.error
    _, resp = fm.putstream(bucket, "n.bin", io.BytesIO(b"checked too"))
    assert resp.ok(), resp.error


def test_objects_from_our_provider_read_by_the_sdk(fm, bucket, store, tmp_path):
    data = os.urandom(5 * MiB + 17)
    store.upload("big/ours.bin", io.BytesIO(data), len(data), {"mtime": "42", "symlink": "ünï/target"})
    out = str(tmp_path / "ours")
    _, resp = fm.download_file(bucket, "big/ours.bin", out)
    assert resp.ok() and Path(out).read_bytes() == data
    assert fm.compare_file_etag(bucket, "big/ours.bin", out)
    store.put("small.txt", io.BytesIO(b"tiny"), 4, {})
    assert fm.compare_file_etag(bucket, "small.txt", write(tmp_path, "tiny", b"tiny"))


def test_listobjects_paging_and_prefixes(fm, bucket, store):
    keys = [f"p/{i:02d}" for i in range(5)] + ["p/sub/a", "p/sub/b", "p/zz/"]
    for key in keys:
        store.put(key, io.BytesIO(b"x"), 1, {"mode": "1"})
    seen, prefixes, marker, pages = [], [], "", 0
    while True:
        ret, resp = fm.listobjects(bucket, prefix="p/", marker=marker, maxkeys=2, delimiter="/")
        assert resp.ok(), resp.error
        pages += 1
        seen += [c["Key"] for c in ret["Contents"]]
        prefixes += [p["Prefix"] for p in ret["CommonPrefixes"]]
        assert all(c["UserMeta"] == {"mode": "1"} and int(c["Size"]) == 1 for c in ret["Contents"])
        if not ret["IsTruncated"]:
            break
        marker = ret["NextMarker"]
        assert pages < 20
    assert seen == [f"p/{i:02d}" for i in range(5)]
    assert prefixes == ["p/sub/", "p/zz/"]
    ret, resp = fm.listobjects(bucket, prefix="p/", marker="", maxkeys=100, delimiter="")
    assert [c["Key"] for c in ret["Contents"]] == sorted(keys)


def test_prefix_file_list(fm, bucket, store):
    for key in ("a/1", "a/2", "b/3"):
        store.put(key, io.BytesIO(b"12"), 2, {})
    ret, resp = fm.getfilelist(bucket, prefix="a/", limit=1)
    assert resp.ok() and [d["FileName"] for d in ret["DataSet"]] == ["a/1"] and ret["NextMarker"] == "a/1"
    ret, resp = fm.getfilelist(bucket, prefix="a/", marker="a/1", limit=10)
    assert [d["FileName"] for d in ret["DataSet"]] == ["a/2"] and ret["NextMarker"] == ""


def test_multipart_uploadfile(sdk, bucket, store, fm, tmp_path):
    data = os.urandom(9 * MiB + 123)
    local = write(tmp_path, "big.bin", data)
    mpu = multipartuploadufile.MultipartUploadUFile(sdk.public_key, sdk.private_key, upload_suffix=SUFFIX)
    ret, resp = mpu.uploadfile(bucket, "mp/big.bin", local, maxthread=3, retryinterval=0)
    assert resp.ok(), resp.error
    assert ret["FileSize"] == len(data) and ret["Key"] == "mp/big.bin"
    assert mpu.blocksize == sdk.blk_size and len(mpu.etaglist) == 3
    assert store.read_range("mp/big.bin", 0, len(data)) == data
    assert fm.compare_file_etag(bucket, "mp/big.bin", local)


def test_multipart_part_retry_after_injected_503(sdk, bucket, store, tmp_path):
    data = os.urandom(4 * MiB + 5)
    sdk.faults.add(Fault(op="upload_part", nth=1, action="status", status=503))
    mpu = multipartuploadufile.MultipartUploadUFile(sdk.public_key, sdk.private_key, upload_suffix=SUFFIX)
    _, resp = mpu.uploadstream(bucket, "mp/retried.bin", io.BytesIO(data), maxthread=1, retryinterval=0)
    try:
        assert resp.ok(), resp.error
        assert ("upload_part", "status") in sdk.faults.fired
        assert store.read_range("mp/retried.bin", 0, len(data)) == data
    finally:
        sdk.faults.clear()


def test_multipart_low_level_part_copy_and_list_parts(sdk, bucket, store):
    source = os.urandom(sdk.blk_size + 1000)
    store.put("src.bin", io.BytesIO(source), len(source), {})
    mpu = multipartuploadufile.MultipartUploadUFile(sdk.public_key, sdk.private_key, upload_suffix=SUFFIX)
    _, resp = mpu.init_multipart_upload(bucket, "copied.bin", upload_suffix=SUFFIX)
    assert resp.ok(), resp.error
    # The SDK sends `bytes=<offset>-<size-1>`: `size` is really the end of the range.
    _, resp = mpu.upload_part_copy(bucket, "src.bin", "application/octet-stream", 0, sdk.blk_size, 0,
                                     upload_suffix=SUFFIX)
    assert resp.ok(), resp.error
    _, resp = mpu.upload_part_copy(bucket, "src.bin", "application/octet-stream", sdk.blk_size, len(source), 1,
                                     upload_suffix=SUFFIX)
    assert resp.ok(), resp.error
    ret, resp = mpu.get_multi_upload_part(bucket, mpu.uploadid, max_parts=1, upload_suffix=SUFFIX)
    assert resp.ok(), resp.error
    assert [p["PartNum"] for p in ret["Parts"]] == [0] and ret["IsTruncated"] is True
    _, resp = mpu.finish_upload()
    assert resp.ok(), resp.error
    assert store.read_range("copied.bin", 0, len(source)) == source


def test_finish_errors(sdk, bucket):
    mpu = multipartuploadufile.MultipartUploadUFile(sdk.public_key, sdk.private_key, upload_suffix=SUFFIX)
    _, resp = mpu.init_multipart_upload(bucket, "broken.bin", upload_suffix=SUFFIX)
    assert resp.ok()
    # No parts uploaded: finishing with a made-up ETag is refused in the UFile error shape.
    mpu.etaglist = ["AQAAAKnKJlRyLe1O-BlwwkHMRSyK6Z2h"]
    _, resp = mpu.finish_upload()
    assert resp.status_code == 400 and resp.ret_code != 0 and "missing parts" in resp.error


def test_delete_then_not_found_shape(fm, bucket, store, tmp_path):
    store.put("gone.txt", io.BytesIO(b"x"), 1, {})
    _, resp = fm.deletefile(bucket, "gone.txt")
    assert resp.status_code == 204
    _, resp = fm.download_file(bucket, "gone.txt", str(tmp_path / "o"))
    assert resp.status_code == 404 and resp.ret_code == RET_FILE_NOT_EXIST and resp.error == "file not exist"
    assert resp.x_session_id
    _, resp = fm.deletefile(bucket, "gone.txt")
    assert resp.status_code == 404
    _, resp = fm.head_file("no-such-bucket", "k")
    assert resp.status_code == 404


def test_copy_with_odd_source_key(fm, bucket, store):
    store.put("dir/a b+c.txt", io.BytesIO(b"copy me"), 7, {"mtime": "3"})
    _, resp = fm.copy(bucket, "dst.txt", bucket, "dir/a b+c.txt")
    assert resp.ok(), resp.error
    assert store.read_range("dst.txt", 0, 100) == b"copy me" and store.stat("dst.txt").meta == {"mtime": "3"}
    _, resp = fm.copy(bucket, "x", "no-such-bucket", "k")
    assert resp.status_code == 404 and resp.ret_code == RET_BUCKET_NOT_EXIST


def test_bad_signature_is_refused(sdk, bucket, tmp_path):
    wrong = filemanager.FileManager(sdk.public_key, "not-the-key", upload_suffix=SUFFIX, download_suffix=SUFFIX)
    _, resp = wrong.putfile(bucket, "k.txt", write(tmp_path, "k.txt", b"x"))
    assert resp.status_code == 403 and resp.ret_code == RET_AUTH_FAILED and "signature" in resp.error
    _, resp = wrong.download_file(bucket, "k.txt", str(tmp_path / "o"))
    assert resp.status_code == 403


def test_signed_url_expires(sdk, fm, bucket, store):
    store.put("u.txt", io.BytesIO(b"url"), 3, {})
    url = fm.private_download_url(bucket, "u.txt", expires=60)
    proxies = {"http": sdk.url}
    assert requests.get(url, proxies=proxies, timeout=10).content == b"url"
    head = requests.head(fm.private_head_url(bucket, "u.txt", expires=60), proxies=proxies, timeout=10)
    assert head.status_code == 200 and head.headers["Content-Length"] == "3"
    sdk.clock.advance(120)
    try:
        answer = requests.get(url, proxies=proxies, timeout=10)
        assert answer.status_code == 403 and answer.json()["RetCode"] == RET_AUTH_FAILED
    finally:
        sdk.clock.advance(-120)


def test_postfile_without_closing_boundary(fm, bucket, store, tmp_path):
    _, resp = fm.postfile(bucket, "form.txt", write(tmp_path, "form.txt", b"posted"))
    assert resp.ok(), resp.error
    assert store.read_range("form.txt", 0, 100) == b"posted"


def test_opmeta_class_switch_restore(fm, bucket, store, sdk):
    store.put("m.bin", io.BytesIO(b"m"), 1, {})
    _, resp = fm.opMeta(bucket, "m.bin", "mimetype", "text/x-test")
    assert resp.ok(), resp.error
    _, resp = fm.head_file(bucket, "m.bin")
    assert resp.content_type == "text/x-test"
    _, resp = fm.class_switch_file(bucket, "m.bin", "IA")
    assert resp.ok(), resp.error
    assert store.stat("m.bin").storage_class == "IA" and store.read_range("m.bin", 0, 1) == b"m"
    _, resp = fm.restore_file(bucket, "m.bin")
    assert resp.ok(), resp.error


def test_bucket_manager(sdk, store):
    manager = ubm.BucketManager(sdk.public_key, sdk.private_key)
    name = f"made-{uuid.uuid4().hex[:8]}"
    ret, resp = manager.createbucket(name, "cn-bj")
    assert resp.ok() and ret["RetCode"] == 0
    ret, resp = manager.describebucket(name)
    assert ret["RetCode"] == 0 and ret["DataSet"][0]["BucketName"] == name
    assert name in store.provider.list_buckets()
    ret, resp = manager.deletebucket(name)
    assert ret["RetCode"] == 0
    ret, resp = ubm.BucketManager(sdk.public_key, "wrong").describebucket()
    assert ret["RetCode"] != 0


def test_etag_helper_agrees_with_sdk(tmp_path):
    data = os.urandom(8 * MiB + 1)
    path = write(tmp_path, "e", data)
    assert util.file_etag(path) == auth.etag_of(data)
    assert util.file_etag(write(tmp_path, "empty", b"")) == auth.etag_of(b"")


def test_raw_and_url_encoded_signed_urls(sdk, fm, bucket, store):
    """Signatures often hold '+' and '/': the SDK sends them raw (private_download_url) or url-encoded
    (download_file); both must verify."""
    proxies = {"http": sdk.url}
    signatures = ""
    for i in range(12):
        key = f"sig/{i}"
        store.put(key, io.BytesIO(b"s"), 1, {})
        for internal in (False, True):
            url = fm.private_download_url(bucket, key, expires=60, internal=internal)
            signatures += url.split("Signature=")[-1]
            assert requests.get(url, proxies=proxies, timeout=10).content == b"s", url
    assert "+" in signatures or "%2B" in signatures


def test_go_sdk_style_listobjects_signature(sdk, bucket, store):
    """The Go SDK signs listobjects as a plain GET of key "" (no extra block): accepted too."""
    store.put("g/1", io.BytesIO(b"1"), 1, {})
    sts = auth.string_to_sign("GET", bucket, "")
    answer = requests.get(f"{sdk.url}/?listobjects&prefix=g%2F&marker=&delimiter=%2F&max-keys=10",
                          headers={"Host": f"{bucket}{SUFFIX}",
                                   "Authorization": auth.authorization(sdk.public_key, sdk.private_key, sts)},
                          timeout=10)
    assert answer.status_code == 200 and [c["Key"] for c in answer.json()["Contents"]] == ["g/1"]


# ----------------------------------------------------------------------------------------------
# Our provider against the emulator's error cases and injected faults (no SDK involved)


@pytest.fixture
def fast(sdk, bucket):
    """A store whose retries are quick, so fault tests stay fast."""
    cfg = UfileConfig.from_options({k: str(v) for k, v in sdk.config().items() if k != "type"})
    provider = UfileProvider("fast", dataclasses.replace(
        cfg, retry=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)))
    yield provider.bucket(bucket)
    provider.close()
    sdk.faults.clear()


@pytest.mark.parametrize("op,action,status", [
    ("upload_part", "status", 503), ("upload_part", "reset", 0), ("get", "reset", 0), ("get", "truncate", 0),
    ("get", "status", 500), ("head", "status", 429), ("list", "status", 503), ("put", "delay", 0),
])
def test_transient_faults_are_retried(sdk, fast, op, action, status):
    data = os.urandom(fast.capabilities.single_put_max + 10)  # multipart
    fast.put("warm", io.BytesIO(b"w"), 1, {})
    sdk.faults.add(Fault(op=op, nth=1, action=action, status=status or 503, delay=0.05))
    fast.upload("obj", io.BytesIO(data), len(data), {"mtime": "1"}, workers=2)
    assert fast.stat("obj").size == len(data)
    assert fast.read_range("obj", 5, 4000) == data[5:4000]
    assert fast.list("")
    fast.put("after", io.BytesIO(b"a"), 1, {})
    assert (op, action) in sdk.faults.fired


def test_large_single_put_streams_and_survives_a_retry(sdk, fast):
    data = os.urandom(fast.capabilities.single_put_max + 3 * MiB)
    sdk.faults.add(Fault(op="put", nth=1, action="status", status=500))
    info = fast.put("streamed.bin", io.BytesIO(data), len(data), {"mtime": "2"})
    assert info.etag == auth.etag_of(data) == fast.stat("streamed.bin").etag
    assert fast.read_range("streamed.bin", 0, len(data)) == data
    assert ("put", "status") in sdk.faults.fired


def test_retries_run_out_into_eio(sdk, fast):
    fast.put("k", io.BytesIO(b"x"), 1, {})
    sdk.faults.add(Fault(op="get", nth=1, count=10, action="status", status=503))
    with pytest.raises(Throttled) as info:
        fast.read_range("k", 0, 1)
    assert info.value.errno == 5 and sdk.faults.counts["get"] == 3


def test_garbled_listing_is_protocol_error(sdk, fast):
    sdk.faults.add(Fault(op="list", nth=1, action="garble"))
    with pytest.raises(ProtocolError):
        fast.list("")


def test_auth_failure_maps_to_access_denied(sdk, bucket):
    provider = open_provider("bad", dict({k: str(v) for k, v in sdk.config().items() if k != "type"},
                                         private_key="wrong"))
    with pytest.raises(AccessDenied):
        provider.bucket(bucket).stat("x")
    with pytest.raises(AccessDenied):
        provider.bucket(bucket).read_range("x", 0, 1)
    with pytest.raises(AccessDenied):
        provider.list_buckets()
    provider.close()


def test_missing_bucket_is_not_found_even_for_delete(sdk, fast):
    other = fast.provider.bucket("no-such-bucket")
    with pytest.raises(NotFound):
        other.delete("k")
    with pytest.raises(NotFound):
        fast.provider.check("no-such-bucket")
    fast.provider.check(fast.name)
    fast.provider.check(None)


def test_failed_upload_is_aborted(sdk, fast):
    data = os.urandom(fast.capabilities.single_put_max + 1)
    sdk.faults.add(Fault(op="upload_part", nth=2, count=100, action="status", status=400))
    with pytest.raises(InvalidArgument):
        fast.upload("doomed", io.BytesIO(data), len(data), {}, workers=1)
    assert sdk.live_uploads(fast.name) == [] and fast.list_multipart() == []
    with pytest.raises(NotFound):
        fast.stat("doomed")


def _two_parts(sdk, store, key):
    data = os.urandom(sdk.blk_size + 100)
    upload = store.create_multipart(key, len(data), sdk.blk_size, {})
    first = store.upload_part(upload, 1, 0, data[: sdk.blk_size])
    second = store.upload_part(upload, 2, sdk.blk_size, data[sdk.blk_size:])
    return data, upload, first, second


def test_finish_refuses_wrong_order(sdk, fast):
    data, upload, first, second = _two_parts(sdk, fast, "order")
    swapped = [UploadedPart(1, second.etag, second.size), UploadedPart(2, first.etag, first.size)]
    with pytest.raises(InvalidArgument, match="wrong part order"):
        fast.complete_multipart(upload, swapped)
    fast.complete_multipart(upload, [second, first])  # order of the list does not matter, numbers do
    assert fast.read_range("order", 0, len(data)) == data


def test_finish_refuses_missing_parts_and_bad_sizes(sdk, fast):
    _, upload, first, second = _two_parts(sdk, fast, "missing")
    with pytest.raises(InvalidArgument, match="not in the finish body"):
        fast.complete_multipart(upload, [first])
    short = fast.create_multipart("short", 0, 0, {})
    small = fast.upload_part(short, 1, 0, b"x" * 10)
    fast.upload_part(short, 2, short.part_size, b"y" * 10)
    tail = UploadedPart(2, second.etag, 10)
    with pytest.raises(InvalidArgument):
        fast.complete_multipart(short, [small, tail])
    with pytest.raises(InvalidArgument):
        fast.upload_part(short, 3, 2 * short.part_size, b"z" * (short.part_size + 1))


def test_oversized_part_and_bad_checksum_are_refused_by_the_server(sdk, fast, bucket):
    upload = fast.create_multipart("raw", 0, 0, {})
    url = f"{sdk.url}/raw?uploadId={upload.upload_id}&partNumber=0"

    def put(body: bytes, md5: str = "") -> requests.Response:
        sts = auth.string_to_sign("PUT", bucket, "raw", content_md5=md5, content_type="application/octet-stream")
        headers = {"Host": f"{bucket}{SUFFIX}", "Content-Type": "application/octet-stream",
                   "Authorization": auth.authorization(sdk.public_key, sdk.private_key, sts)}
        if md5:
            headers["Content-MD5"] = md5
        return requests.put(url, data=body, headers=headers, timeout=10)

    answer = put(b"x" * (sdk.blk_size + 1))
    assert answer.status_code == 400 and answer.headers["Content-Type"] == "application/json"
    assert answer.json()["ErrMsg"].startswith("body larger") and answer.headers["X-SessionId"]
    answer = put(b"abc", md5=hashlib.md5(b"abd").hexdigest())
    assert answer.status_code == 400 and "Content-MD5" in answer.json()["ErrMsg"]
    assert put(b"abc", md5=hashlib.md5(b"abc").hexdigest()).status_code == 200


def test_expired_session(sdk, fast):
    upload = fast.create_multipart("late", 0, 0, {})
    fast.upload_part(upload, 1, 0, b"early")
    sdk.clock.advance(sdk.upload_ttl + 1)
    try:
        with pytest.raises(NotFound):
            fast.upload_part(upload, 1, 0, b"late")
        with pytest.raises(NotFound):
            fast.complete_multipart(upload, [UploadedPart(1, "x", 4)])
    finally:
        sdk.clock.advance(-(sdk.upload_ttl + 1))


def test_finish_answer_lost_then_retried(sdk, fast):
    """The first finish succeeds on the server but its answer is lost: the retry (404, upload gone) finds
    the finished object instead of failing."""
    import socket
    data, upload, first, second = _two_parts(sdk, fast, "lost")
    handler = type(sdk).handler
    original = handler._op_finish_multipart
    calls = []

    def finish_then_hang_up(self, req):
        calls.append(1)
        if len(calls) == 1:
            def hang_up(*args, **kwargs):
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            self.send_json = hang_up
        original(self, req)

    handler._op_finish_multipart = finish_then_hang_up
    try:
        info = fast.complete_multipart(upload, [first, second])
    finally:
        handler._op_finish_multipart = original
    assert len(calls) == 2 and info.size == len(data)
    assert fast.read_range("lost", 0, len(data)) == data


def test_sdk_archive_restore_as_storefs_sees_it(fm, bucket, store, sdk, tmp_path):
    """The SDK's own archive flow (its example: put with X-Ufile-Storage-Class ARCHIVE, restore_file, then
    read the restore state from HEAD) against the emulator, and storefs's view of the same file."""
    local = write(tmp_path, "cold.bin", b"archived by the sdk")
    _, resp = fm.putfile(bucket, "cold.bin", local, header={"X-Ufile-Storage-Class": "ARCHIVE"})
    assert resp.status_code == 200, resp.error
    assert store.stat("cold.bin").storage_class == "ARCHIVE"
    assert "x-amz-restore" not in store.stat("cold.bin").meta
    _, resp = fm.restore_file(bucket, "cold.bin")
    assert resp.status_code == 200, resp.error
    _, resp = fm.head_file(bucket, "cold.bin")
    assert resp.x_ufile_restore.startswith('ongoing-request="false"')  # the emulator restores at once
    assert store.stat("cold.bin").meta["x-amz-restore"] == resp.x_ufile_restore
    assert store.read_range("cold.bin", 0, 8) == b"archived"
    # storefs's restore() is the same request: the SDK sees its effect on a second archived file.
    _, resp = fm.putfile(bucket, "cold2.bin", local, header={"X-Ufile-Storage-Class": "ARCHIVE"})
    assert resp.status_code == 200, resp.error
    _, resp = fm.head_file(bucket, "cold2.bin")
    assert not resp.x_ufile_restore
    assert store.restore("cold2.bin", days=1, tier="Standard") is True
    _, resp = fm.head_file(bucket, "cold2.bin")
    assert resp.x_ufile_restore.startswith('ongoing-request="false"')


def test_sdk_downloads_through_a_download_suffix(sdk, bucket, store, tmp_path):
    """FileManager(download_suffix=<CDN suffix>) reads what storefs wrote through the emulator's CDN host,
    and a storefs store set up with the SDK's spelling (downloadsuffix) reads through it too."""
    cdn = ".uvideo.ucloud.com.cn"
    sdk.download_suffix = cdn
    try:
        store.put("v/a.txt", io.BytesIO(b"via the cdn"), 11, {})
        before = sdk.hosts[("get", bucket + cdn)]
        fm_cdn = filemanager.FileManager(sdk.public_key, sdk.private_key, upload_suffix=SUFFIX, download_suffix=cdn)
        out = tmp_path / "out.txt"
        _, resp = fm_cdn.download_file(bucket, "v/a.txt", str(out))
        assert resp.status_code == 200, resp.error
        assert out.read_bytes() == b"via the cdn"
        assert sdk.hosts[("get", bucket + cdn)] == before + 1
        options = {k: str(v) for k, v in sdk.config().items() if k != "type"}
        provider = open_provider("sdk", {**options, "downloadsuffix": cdn})
        try:
            assert provider.bucket(bucket).read_range("v/a.txt", 4, 7) == b"the"
        finally:
            provider.close()
        assert sdk.hosts[("get", bucket + cdn)] == before + 2
    finally:
        sdk.download_suffix = None
