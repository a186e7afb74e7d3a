"""The s3 provider below the contract suite.

1. Pure functions: XML parsing of listings and errors, the error table, metadata encoding, timestamps,
   addressing and config.
2. Wire behaviour against a scripted loopback server (127.0.0.1, port 0): retries with fresh signatures,
   malformed answers, 200-with-<Error>, ignored Range, cut-short bodies.
3. Things only real servers show (moto, SeaweedFS from tests/servers.py): signature checking, streamed
   PUTs, archive storage classes, UploadPartCopy, odd names in x-amz-copy-source.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import os
import socketserver
import threading
from typing import Iterator

import pytest

from storefs.errors import (
    AccessDenied,
    ArchiveNotReady,
    ConfigError,
    InvalidArgument,
    NameTooLong,
    NotFound,
    NotSupported,
    PreconditionFailed,
    ProtocolError,
    RemoteChanged,
    StoreError,
    Throttled,
    Transient,
)
from storefs.providers import s3
from storefs.providers.s3 import open_provider
from storefs.providers.s3.client import S3Client
from storefs.providers.s3.errors import error_from_response
from storefs.providers.s3.meta import decode_meta_value, encode_meta_value, meta_headers, parse_http_date
from storefs.providers.s3.xml import parse_iso8601, parse_list_uploads, parse_list_v2
from storefs.fs.bucket.uploader import UploadSettings, upload_file
from storefs.store.contract import MultipartUpload, UploadedPart
from storefs.wire.auth.sigv4 import UNSIGNED_PAYLOAD
from storefs.wire.answer import Answer, AnswerHeaders
from storefs.wire.retry import RetryPolicy

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'

# ------------------------------------------------------------------------------------------------
# 1. pure functions


def test_list_v2_url_encoded_keys_and_prefixes():
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult {NS}><Name>b</Name><Prefix>d%2F</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>
<Delimiter>%2F</Delimiter><IsTruncated>true</IsTruncated><EncodingType>url</EncodingType>
<Contents><Key>d/sp+ace%2Bplus%25%C3%BC</Key><LastModified>2009-10-12T17:50:30.000Z</LastModified>
<ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag><Size>434234</Size><StorageClass>GLACIER</StorageClass>
</Contents><CommonPrefixes><Prefix>d/sub%20dir/</Prefix></CommonPrefixes>
<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken></ListBucketResult>
""".encode()
    page = parse_list_v2(body)
    (obj,) = page.objects
    assert obj.key == "d/sp ace+plus%ü"
    assert obj.size == 434234 and obj.etag == "fba9dede5f27731c9771645a39863328"
    assert obj.mtime == 1255369830.0 and obj.storage_class == "GLACIER" and not obj.meta_complete
    assert page.prefixes == ["d/sub dir/"]
    assert page.next_token == "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="


def test_list_v2_raw_keys_when_server_ignores_encoding():
    body = b"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a+b%20c</Key><Size>1</Size>" \
           b"<LastModified>2024-01-02T03:04:05Z</LastModified><ETag>\"x\"</ETag></Contents></ListBucketResult>"
    page = parse_list_v2(body)
    assert [o.key for o in page.objects] == ["a+b%20c"] and page.next_token is None


@pytest.mark.parametrize("body", [
    b"<ListBucketResult><Contents><Key>a</Key>",                     # cut short
    b"not xml at all",
    b"<Something/>",                                                 # wrong document
    b"<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",  # no Key
    b"<ListBucketResult><Contents><Key>a</Key><Size>big</Size></Contents></ListBucketResult>",
    b"<ListBucketResult><Contents><Key>a</Key><LastModified>yesterday</LastModified></Contents></ListBucketResult>",
    b"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",  # truncated, no token
])
def test_malformed_listings_are_protocol_errors(body):
    with pytest.raises(ProtocolError):
        parse_list_v2(body)


def test_list_uploads_paging_markers():
    body = f"""<ListMultipartUploadsResult {NS}><Bucket>b</Bucket><EncodingType>url</EncodingType>
<IsTruncated>true</IsTruncated><NextKeyMarker>k%202</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>
<Upload><Key>k%201</Key><UploadId>u1</UploadId></Upload><Upload><Key>k%202</Key><UploadId>u2</UploadId></Upload>
</ListMultipartUploadsResult>""".encode()
    uploads, markers = parse_list_uploads(body, 8 << 20)
    assert [(u.key, u.upload_id) for u in uploads] == [("k 1", "u1"), ("k 2", "u2")]
    assert markers == [("key-marker", "k 2"), ("upload-id-marker", "u2")]


def _answer(status: int, body: bytes) -> Answer:
    return Answer(status, AnswerHeaders(), body)


def _error(code: str, status: int, message: str = "msg") -> StoreError:
    body = f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>R1</RequestId></Error>".encode()
    return error_from_response(_answer(status, body), "op")


@pytest.mark.parametrize("code,status,cls", [
    ("NoSuchKey", 404, NotFound), ("NoSuchBucket", 404, NotFound), ("NoSuchUpload", 404, NotFound),
    ("AccessDenied", 403, AccessDenied), ("InvalidAccessKeyId", 403, AccessDenied),
    ("SignatureDoesNotMatch", 403, AccessDenied), ("RequestTimeTooSkewed", 403, AccessDenied),
    ("SlowDown", 503, Throttled), ("ServiceUnavailable", 503, Throttled),
    ("InternalError", 500, Transient), ("RequestTimeout", 400, Transient),
    ("InvalidObjectState", 403, ArchiveNotReady), ("PreconditionFailed", 412, PreconditionFailed),
    ("ConditionalRequestConflict", 409, Transient),
    ("NotImplemented", 501, NotSupported), ("KeyTooLongError", 400, NameTooLong),
    ("EntityTooSmall", 400, InvalidArgument), ("SomethingNew", 502, Transient), ("", 504, Transient),
    ("", 404, NotFound), ("", 403, AccessDenied), ("", 412, PreconditionFailed), ("", 503, Throttled),
])
def test_error_table(code, status, cls):
    err = _error(code, status) if code else error_from_response(_answer(status, b""), "op")
    assert type(err) is cls
    if code:
        assert code in str(err) and "R1" in (err.detail or "")


def test_error_messages_carry_code_and_message():
    err = _error("SignatureDoesNotMatch", 403, "The request signature we calculated does not match")
    assert "SignatureDoesNotMatch: The request signature we calculated does not match" in str(err)
    assert "does not exist" in str(_error("NoSuchBucket", 404))
    assert type(error_from_response(_answer(502, b"<html>Bad gateway</html"), "op")) is Transient


@pytest.mark.parametrize("value", ["plain", "1700000000.25", "Zhang San 张三", " lead", "trail ", "tab\there",
                                   "line\nbreak", "=?UTF-8?B?looks-encoded?=", "", "ü", "😀 emoji"])
def test_meta_values_round_trip_through_ascii_headers(value):
    wire = encode_meta_value(value)
    assert wire.isascii() and wire.isprintable() and wire == wire.strip()
    assert decode_meta_value(wire) == value


def test_meta_decoding_of_foreign_forms():
    assert decode_meta_value("=?utf-8?q?caf=C3=A9_au_lait?=") == "café au lait"
    assert decode_meta_value("café".encode().decode("latin-1")) == "café"  # raw UTF-8 read as Latin-1
    assert decode_meta_value("=?UTF-8?B?!!!?=") == "=?UTF-8?B?!!!?="     # not decodable: left alone
    with pytest.raises(InvalidArgument):
        meta_headers({"bad name": "x"})
    assert meta_headers({"Mtime": "1"}) == {"x-amz-meta-mtime": "1"}


def test_timestamps():
    assert parse_iso8601("1970-01-01T00:00:00Z") == 0.0
    assert parse_iso8601("2009-10-12T17:50:30.5+01:00") == 1255369830.5 - 3600
    assert parse_http_date("Wed, 12 Oct 2009 17:50:00 GMT") == 1255369800.0


def _client(**extra: str) -> S3Client:
    return S3Client("r", {"endpoint": "https://s3.eu-west-1.amazonaws.com", "access_key": "AK",
                             "secret_key": "TOPSECRET", **extra})


def test_addressing():
    virtual = _client()
    assert virtual.options.addressing == "virtual"
    assert virtual.locate("bkt", "a b/c") == ("bkt.s3.eu-west-1.amazonaws.com", "/a%20b/c")
    assert virtual.locate("bkt", None) == ("bkt.s3.eu-west-1.amazonaws.com", "/")
    path = _client(addressing="path")
    assert path.locate("bkt", "a b/c") == ("s3.eu-west-1.amazonaws.com", "/bkt/a%20b/c")
    assert path.locate("bkt", None) == ("s3.eu-west-1.amazonaws.com", "/bkt")
    assert path.locate(None, None) == ("s3.eu-west-1.amazonaws.com", "/")
    custom = S3Client("r", {"endpoint": "http://127.0.0.1:9000", "access_key": "a", "secret_key": "b"})
    assert custom.options.addressing == "path" and custom.options.host_port == "127.0.0.1:9000"
    assert S3Client("r", {"endpoint": "minio.example", "access_key": "a", "secret_key": "b"}).options.host_port \
        == "minio.example:443"
    with pytest.raises(InvalidArgument):
        path.locate("bkt", "a/../b")


@pytest.mark.parametrize("options", [
    {"endpoint": "ftp://x", "access_key": "a", "secret_key": "b"},
    {"endpoint": "http://x/path", "access_key": "a", "secret_key": "b"},
    {"endpoint": "http://x", "access_key": "a"},
    {"endpoint": "http://x", "access_key": "a", "secret_key": "b", "addressing": "dns"},
    {"endpoint": "http://x", "access_key": "a", "secret_key": "b", "part_size": "big"},
    {"endpoint": "http://x", "access_key": "a", "secret_key": "b", "unsigned_payload": "yes"},
])
def test_config_errors(options):
    with pytest.raises(ConfigError):
        open_provider("r", options)


def test_secret_stays_out_of_reprs():
    client = _client(session_token="TOKENSECRET")
    for obj in (client, client.signer, client.options,
                s3.S3Provider("r", {"endpoint": "http://x", "access_key": "a", "secret_key": "TOPSECRET"}),
                s3.S3Store(client, "b")):
        assert "TOPSECRET" not in repr(obj) and "TOKENSECRET" not in repr(obj)
    assert set(s3.SPEC.secrets) == {"secret_key", "session_token"}


# ------------------------------------------------------------------------------------------------
# 2. a scripted loopback server


class Scripted(http.server.BaseHTTPRequestHandler):
    """Answers from `server.script` in order: (status, headers, body[, "truncate"])."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path, dict(self.headers), body))
        status, headers, payload, *mode = self.server.script.pop(0)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "truncate" in mode:
            self.send_header("Content-Length", str(len(payload) * 2))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
            self.close_connection = True
            return
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


@contextlib.contextmanager
def scripted(*script) -> Iterator[tuple[s3.S3Store, _Server]]:
    server = _Server(("127.0.0.1", 0), Scripted)
    server.script = list(script)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    provider = open_provider("scripted", {"endpoint": f"http://127.0.0.1:{server.server_address[1]}",
                                          "access_key": "AK", "secret_key": "SK", "read_timeout": "5"})
    provider.client.wire.retry = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.02)
    try:
        yield provider.bucket("bkt"), server
    finally:
        provider.close()
        server.shutdown()
        server.server_close()
        thread.join(5)


LIST_OK = b"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>"
SLOW_DOWN = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"


def test_throttling_is_retried_and_each_try_signed():
    with scripted((503, {}, SLOW_DOWN), (500, {}, b""), (200, {}, LIST_OK)) as (store, server):
        assert store.list("").objects == []
    assert len(server.seen) == 3
    for method, path, headers, _ in server.seen:
        assert method == "GET" and path.startswith("/bkt?")
        assert "list-type=2" in path and "encoding-type=url" in path
        assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AK/")
        assert headers["Accept-Encoding"] == "identity"


def test_retries_run_out():
    with scripted(*[(503, {}, SLOW_DOWN)] * 4) as (store, server):
        with pytest.raises(Throttled, match="SlowDown: Please reduce"):
            store.list("")
        assert len(server.seen) == 4


def test_malformed_success_answer_is_protocol_error():
    with scripted((200, {}, b"<ListBucketResult><Contents>")) as (store, _):
        with pytest.raises(ProtocolError):
            store.list("")


def test_complete_multipart_200_with_error_body_is_retried():
    internal = b'<?xml version="1.0"?>\n<Error><Code>InternalError</Code><Message>oops</Message></Error>'
    done = b"<CompleteMultipartUploadResult><ETag>\"abc-2\"</ETag></CompleteMultipartUploadResult>"
    upload = MultipartUpload("k", "U1", 5 << 20, {"meta": {"mtime": "3"}})
    parts = [UploadedPart(2, "e2", 10), UploadedPart(1, "e1", 5 << 20)]
    with scripted((200, {}, internal), (200, {}, done)) as (store, server):
        info = store.complete_multipart(upload, parts)
    assert info.etag == "abc-2" and info.size == (5 << 20) + 10 and info.meta == {"mtime": "3"}
    body = server.seen[-1][3].decode()
    assert body.index("<PartNumber>1</PartNumber>") < body.index("<PartNumber>2</PartNumber>")
    assert '<ETag>"e1"</ETag>' in body and server.seen[-1][1] == "/bkt/k?uploadId=U1"


def test_complete_multipart_whose_answer_was_lost():
    no_upload = b"<Error><Code>NoSuchUpload</Code><Message>gone</Message></Error>"
    upload = MultipartUpload("k", "U1", 5 << 20)
    head = {"ETag": '"abc-1"', "Last-Modified": "Wed, 12 Oct 2009 17:50:00 GMT"}
    with scripted((500, {}, b""), (404, {}, no_upload), (200, {**head, "Content-Length": "7"}, b"")) as (store, _):
        assert store.complete_multipart(upload, [UploadedPart(1, "e1", 7)]).etag == "abc-1"


def test_read_range_when_server_ignores_range():
    with scripted((200, {}, b"0123456789")) as (store, server):
        assert store.read_range("k", 3, 6) == b"345"
    assert server.seen[0][2]["Range"] == "bytes=3-5"


def test_read_range_cut_short_is_retried():
    with scripted((206, {"Content-Range": "bytes 0-9/10"}, b"01234", "truncate"),
                  (206, {"Content-Range": "bytes 0-9/10"}, b"0123456789")) as (store, server):
        assert store.read_range("k", 0, 10) == b"0123456789"
    assert len(server.seen) == 2


def test_read_range_statuses():
    changed = b"<Error><Code>PreconditionFailed</Code><Message>At least one precondition failed</Message></Error>"
    archived = b"<Error><Code>InvalidObjectState</Code><Message>not valid for the storage class</Message></Error>"
    with scripted((412, {}, changed), (403, {}, archived), (416, {}, b""),
                  (206, {"Content-Range": "bytes 7-9/10"}, b"789")) as (store, server):
        with pytest.raises(RemoteChanged):
            store.read_range("k", 0, 4, if_match="etag1")
        assert server.seen[0][2]["If-Match"] == '"etag1"'
        with pytest.raises(ArchiveNotReady):
            store.read_range("k", 0, 4)
        assert store.read_range("k", 100, 200) == b""
        with pytest.raises(ProtocolError):  # the server answered another range than we asked for
            store.read_range("k", 0, 4)


def test_stat_headers():
    headers = {"ETag": '"e"', "Last-Modified": "Wed, 12 Oct 2009 17:50:00 GMT", "x-amz-storage-class": "GLACIER",
               "x-amz-restore": 'ongoing-request="true"', "x-amz-meta-mtime": "1.5",
               "x-amz-meta-name": encode_meta_value("名字"), "Content-Length": "42"}
    with scripted((200, headers, b"")) as (store, server):
        info = store.stat("dir/f")
    assert (info.size, info.etag, info.mtime, info.storage_class) == (42, "e", 1255369800.0, "GLACIER")
    assert info.meta == {"mtime": "1.5", "name": "名字", "x-amz-restore": 'ongoing-request="true"'}
    assert server.seen[0][:2] == ("HEAD", "/bkt/dir/f")


def test_put_of_a_short_stream_never_sends_a_short_object():
    with scripted() as (store, server):
        with pytest.raises(InvalidArgument):
            store.put("k", io.BytesIO(b"x" * 10), 20, {})
        with pytest.raises(InvalidArgument):
            store.put("k", io.BytesIO(b"x" * (2 << 20)), 3 << 20, {})
    assert all(len(seen[3]) < (3 << 20) for seen in server.seen)


# ------------------------------------------------------------------------------------------------
# 3. real servers


def test_wrong_credentials_on_a_signature_checking_server(seaweed_server):
    bucket = seaweed_server.create_bucket()
    bad = open_provider("bad", seaweed_server.options(secret_key="not-the-secret"))
    with pytest.raises(AccessDenied, match="SignatureDoesNotMatch: The request signature"):
        bad.check(bucket)
    unknown = open_provider("unknown", seaweed_server.options(access_key="AKIDUNKNOWN"))
    with pytest.raises(AccessDenied, match="InvalidAccessKeyId"):
        unknown.check(None)
    good = open_provider("good", seaweed_server.options())
    good.check(bucket)
    good.check(None)
    assert bucket in good.list_buckets()
    with pytest.raises(NotFound, match="does not exist"):
        good.check("no-such-bucket-here")


def test_unreachable_endpoint_names_host_and_port():
    with contextlib.closing(__import__("socket").socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        provider = open_provider("gone", {"endpoint": f"http://127.0.0.1:{port}", "access_key": "a",
                                          "secret_key": "b"})
        with pytest.raises(Transient, match=f"127.0.0.1:{port}"):
            provider.check("bucket")


@pytest.mark.parametrize("server_name", ["seaweed_server", "moto_server"])
def test_streamed_put_multipart_copy_and_meta(request, server_name):
    server = request.getfixturevalue(server_name)
    provider = open_provider("rt", server.options(copy_cutoff=str(6 << 20), copy_part_size=str(5 << 20)))
    store = provider.bucket(server.create_bucket())
    data = os.urandom((11 << 20) + 321)  # over INLINE_BODY_MAX: streamed, UNSIGNED-PAYLOAD
    meta = {"mtime": "1700000000.5", "name": "Zhang San 张三", "blank": " padded "}
    info = store.put("dir/big ü+%.bin", io.BytesIO(data), len(data), meta)
    assert store.stat("dir/big ü+%.bin").etag == info.etag
    assert store.stat("dir/big ü+%.bin").meta == meta
    copied = store.copy("dir/big ü+%.bin", "copy?#&=.bin")  # over copy_cutoff: UploadPartCopy
    assert copied.etag.endswith("-3")
    assert store.stat("copy?#&=.bin").meta == meta
    assert store.read_range("copy?#&=.bin", 0, len(data)) == data
    store.set_meta("copy?#&=.bin", {"mode": "33188"})
    assert store.stat("copy?#&=.bin").meta == {"mode": "33188"}
    assert store.read_range("copy?#&=.bin", 5 << 20, 6 << 20) == data[5 << 20: 6 << 20]
    provider.close()


@pytest.mark.parametrize("server_name", ["seaweed_server", "moto_server"])
def test_unsigned_payload_always_uploads_staged_files_unsigned_over_plain_http(request, server_name, tmp_path):
    """`unsigned_payload = always`: the multipart parts of a staged file go UNSIGNED-PAYLOAD over plain
    http (the default signs them there), and the servers take them: the bytes come back whole. A small
    file's PUT is read into memory and stays signed either way (its hash costs next to nothing)."""
    server = request.getfixturevalue(server_name)
    small, big = os.urandom(70_000), os.urandom((11 << 20) + 321)
    (tmp_path / "small").write_bytes(small)
    (tmp_path / "big").write_bytes(big)
    for option, unsigned in (("auto", 0), ("always", 3)):   # the big file's three parts
        provider = open_provider("rt", server.options(unsigned_payload=option, single_put_max=str(6 << 20),
                                                      part_size=str(5 << 20)))
        store = provider.bucket(server.create_bucket())
        hashes: list[str | None] = []
        real_sign = store.client.signer.sign

        def noted(*args, **kwargs):
            hashes.append(kwargs.get("payload_hash"))
            return real_sign(*args, **kwargs)
        store.client.signer.sign = noted
        for name, data in (("small", small), ("big", big)):
            upload_file(store, f"up/{name}", str(tmp_path / name), {"mode": "33188"},
                        UploadSettings(part_size=5 << 20))
            assert store.read_range(f"up/{name}", 0, len(data)) == data
        assert hashes.count(UNSIGNED_PAYLOAD) == unsigned, (option, hashes)
        assert hashes[0] == hashlib.sha256(small).hexdigest()
        provider.close()


def test_archive_storage_class_on_moto(moto_server):
    bucket = moto_server.create_bucket()
    client = moto_server.client()
    client.put_object(Bucket=bucket, Key="cold", Body=b"frozen", StorageClass="GLACIER")
    provider = open_provider("cold", moto_server.options())
    store = provider.bucket(bucket)
    info = store.stat("cold")
    assert info.storage_class == "GLACIER" and "x-amz-restore" not in info.meta
    (entry,) = store.list("").objects
    assert entry.storage_class == "GLACIER"
    with pytest.raises(ArchiveNotReady):
        store.read_range("cold", 0, 6)
    client.restore_object(Bucket=bucket, Key="cold", RestoreRequest={"Days": 1})
    assert "x-amz-restore" in store.stat("cold").meta
    provider.close()


def test_storage_class_option(moto_server):
    provider = open_provider("ia", moto_server.options(storage_class="STANDARD_IA"))
    store = provider.bucket(moto_server.create_bucket())
    store.put("k", io.BytesIO(b"x"), 1, {})
    assert store.stat("k").storage_class == "STANDARD_IA"
    provider.close()


def test_http_dates_parse_in_every_form_servers_send():
    import email.utils

    for text in ("Sat, 21 Nov 2026 13:34:00 GMT", "Sun, 06 Nov 1994 08:49:37 GMT",   # IMF-fixdate
                 "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"):      # obsolete forms
        assert parse_http_date(text) == email.utils.parsedate_to_datetime(text).timestamp()
    assert parse_http_date("Sat, 21 Nov 2026 25:34:00 GMT") is None
    assert parse_http_date("not a date") is None and parse_http_date(None) is None
