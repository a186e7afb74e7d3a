"""The wire layer on its own: bodies, the range rules, and WireClient against a scripted loopback server
(signing per try, retries, error decoding, both transports)."""
from __future__ import annotations

import contextlib
import io
import os
import threading
from typing import Iterator

import pytest

from storefs.errors import AccessDenied, InvalidArgument, ProtocolError, RemoteChanged, StoreError, Transient
from storefs.wire.answer import Answer, AnswerHeaders
from storefs.wire.body import Body, FileSlice, read_exactly
from storefs.wire.client import Request, WireClient
from storefs.wire.ranges import content_range, parse_content_range, range_header, take_range
from storefs.wire.retry import RetryPolicy
from storefs.wire.settings import HttpSettings
from tests.unit.test_s3_xml import Scripted, _Server


class FakeAnswer:
    """A StreamedAnswer over bytes, to drive the range rules without a server."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = AnswerHeaders.of(headers.items())
        self._body = io.BytesIO(body)

    def read(self, size: int) -> bytes:
        return self._body.read(size)


# -- bodies ---------------------------------------------------------------------------------------


def test_a_file_slice_reads_its_region_and_becomes_a_region_body(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDONLY)
    try:
        piece = FileSlice(fd, 2, 5)
        assert piece.read(2) == b"23" and piece.read() == b"456" and piece.read() == b""
        piece.seek(1)
        body = Body.upload(piece, 4)
        assert body.region is not None and (body.region.offset, body.size) == (3, 4)
        assert b"".join(body.chunks()) == b"3456"
        assert body.sha256_hex() == Body(data=b"3456").sha256_hex()
        with pytest.raises(InvalidArgument):
            Body.upload(FileSlice(fd, 0, 3), 5)
    finally:
        os.close(fd)


def test_a_region_body_hashes_across_chunks_and_refuses_a_short_file(tmp_path):
    """The SHA-256 SigV4 signs, read through one reused buffer: the same as hashing the bytes, whatever
    the region's size against the 1 MiB chunk; a file shorter than the region is InvalidArgument."""
    import hashlib
    from storefs.wire.body import CHUNK, FileRegion
    data = os.urandom(2 * CHUNK + 12345)
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        for offset, size in ((0, len(data)), (7, CHUNK), (CHUNK - 1, CHUNK + 2), (3, 0)):
            body = Body(region=FileRegion(fd, offset, size))
            assert body.sha256_hex() == hashlib.sha256(data[offset:offset + size]).hexdigest()
        with pytest.raises(InvalidArgument, match="ended 7 bytes before"):
            Body(region=FileRegion(fd, len(data) - 3, 10)).sha256_hex()
    finally:
        os.close(fd)


def test_a_streamed_body_rewinds_per_try_and_an_unseekable_one_is_sent_once():
    stream = io.BytesIO(b"xxabcdef")
    stream.seek(2)
    body = Body.upload(stream, 6)
    assert body.stream is stream and body.retryable
    assert b"".join(body.chunks()) == b"abcdef" and b"".join(body.chunks()) == b"abcdef"
    assert Body.upload(io.BytesIO(b"abc"), 3, in_memory_max=10).data == b"abc"
    with pytest.raises(InvalidArgument):
        b"".join(Body(stream=io.BytesIO(b"ab"), size=3).chunks())
    with pytest.raises(InvalidArgument):
        read_exactly(io.BytesIO(b"ab"), 3)

    class Pipe(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

    assert not Body(stream=Pipe(), size=1).retryable


# -- range rules ------------------------------------------------------------------------------------


def test_content_range_is_parsed_and_formatted_in_one_place():
    got = parse_content_range("bytes 5-9/10", "r")
    assert (got.start, got.end, got.total) == (5, 10, 10)
    assert parse_content_range("bytes 0-0/*", "r").total is None
    for bad in ("", "bytes 9-5/10", "items 0-1/2", "bytes 0-1"):
        with pytest.raises(ProtocolError):
            parse_content_range(bad, "r")
    assert range_header(10, 20) == "bytes=10-19"
    assert content_range(0, 1024) == "bytes 0-1023/*" and content_range(0, 4, 4) == "bytes 0-3/4"


def test_the_answers_to_a_ranged_get():
    # 206 exactly as asked, in pieces
    read = take_range(FakeAnswer(206, {"Content-Range": "bytes 2-7/10"}, b"234567"), 2, 8, "r", piece=4)
    assert read.pieces == [b"2345", b"67"] and read.total == 10
    # 206 where the object ends first
    assert take_range(FakeAnswer(206, {"Content-Range": "bytes 8-9/10"}, b"89"), 8, 20, "r").data == b"89"
    # 206 cut short: Transient, never cached as data
    with pytest.raises(Transient):
        take_range(FakeAnswer(206, {"Content-Range": "bytes 0-9/10"}, b"01234"), 0, 10, "r")
    # 206 that starts elsewhere
    with pytest.raises(ProtocolError):
        take_range(FakeAnswer(206, {"Content-Range": "bytes 1-9/10"}, b"123456789"), 0, 10, "r")
    # 206 with more than asked is cut to the range; without Content-Range it must be the whole range
    assert take_range(FakeAnswer(206, {"Content-Range": "bytes 0-9/10"}, b"0123456789"), 0, 4, "r").data == b"0123"
    assert take_range(FakeAnswer(206, {}, b"0123"), 0, 4, "r").data == b"0123"
    with pytest.raises(Transient):
        take_range(FakeAnswer(206, {}, b"01"), 0, 4, "r")
    # 200: the whole object, cut here
    whole = take_range(FakeAnswer(200, {"Content-Length": "10"}, b"0123456789"), 3, 6, "r")
    assert whole.data == b"345" and whole.status == 200
    assert take_range(FakeAnswer(200, {"Content-Length": "10"}, b"0123456789"), 8, 20, "r").data == b"89"
    assert take_range(FakeAnswer(200, {"Content-Length": "2"}, b"01"), 5, 9, "r").data == b""
    with pytest.raises(Transient):
        take_range(FakeAnswer(200, {"Content-Length": "10"}, b"01234"), 0, 10, "r")
    # 200 cut short a little past the range (the rest is read when small): Transient too
    with pytest.raises(Transient):
        take_range(FakeAnswer(200, {"Content-Length": "1000"}, b"0123456789"), 0, 3, "r")
    # 416: nothing there
    assert take_range(FakeAnswer(416, {}, b""), 100, 200, "r").pieces == []


# -- the client --------------------------------------------------------------------------------------


def decode(answer: Answer, what: str) -> StoreError:
    cls = AccessDenied if answer.status == 403 else Transient if answer.status >= 500 else StoreError
    return cls(f"{what}: HTTP {answer.status} {answer.content[:20]!r}")


@contextlib.contextmanager
def client_for(*script, fast: bool = False) -> Iterator[tuple[WireClient, _Server, str]]:
    server = _Server(("127.0.0.1", 0), Scripted)
    server.script = list(script)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    signatures = iter(range(1, 100))

    def sign(request: Request) -> None:
        request.headers["Authorization"] = f"try-{next(signatures)}"

    client = WireClient("t", HttpSettings(read_timeout=5), RetryPolicy(attempts=3, base_delay=0.01), decode,
                        sign=sign, user_agent="storefs/test", fast=fast)
    try:
        yield client, server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        client.close()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("fast", [False, True])
def test_each_try_is_signed_afresh_and_errors_go_through_the_decoder(fast):
    with client_for((503, {}, b"busy"), (200, {}, b"done"), (403, {}, b"no"), fast=fast) as (client, server, base):
        answer = client.call(Request("PUT", base, "/b/k", body=Body(data=b"abc"), what="put k"))
        assert answer.status == 200 and answer.content == b"done"
        with pytest.raises(AccessDenied, match="put k: HTTP 403"):
            client.call(Request("GET", base, "/b/k", what="put k"))
    assert [seen[2]["Authorization"] for seen in server.seen] == ["try-1", "try-2", "try-3"]
    assert server.seen[0][3] == b"abc" and server.seen[1][3] == b"abc"
    assert server.seen[0][2]["User-Agent"] == "storefs/test"


def test_a_body_streamed_from_a_file_is_sent_again_on_a_retry(tmp_path):
    with client_for((500, {}, b""), (200, {}, b""), fast=True) as (client, server, base):
        stream = io.BytesIO(b"hello world")
        client.call(Request("PUT", base, "/b/k", body=Body(stream=stream, size=11), what="put"))
    assert [seen[3] for seen in server.seen] == [b"hello world", b"hello world"]


def test_read_range_retries_a_short_body_and_honours_if_match():
    script = [(206, {"Content-Range": "bytes 0-9/10"}, b"01234", "truncate"),
              (206, {"Content-Range": "bytes 0-9/10"}, b"0123456789"),
              (412, {}, b"")]
    with client_for(*script) as (client, server, base):
        read = client.read_range(Request("GET", base, "/b/k", what="read k"), 0, 10, if_match="e1")
        assert read.data == b"0123456789"
        with pytest.raises(RemoteChanged):
            client.read_range(Request("GET", base, "/b/k", what="read k"), 0, 10, if_match="e1")
    headers = server.seen[0][2]
    assert headers["Range"] == "bytes=0-9" and headers["If-Match"] == '"e1"'
    assert headers["Accept-Encoding"] == "identity"


def test_read_range_into_files_and_head_many_over_the_fast_transport(tmp_path):
    files = [os.open(tmp_path / name, os.O_RDWR | os.O_CREAT, 0o600) for name in ("a", "b")]
    script = [(206, {"Content-Range": "bytes 0-5/6"}, b"abcdef"),
              (200, {"Content-Length": "6"}, b"abcdef"),
              (200, {"ETag": '"x"'}, b""), (404, {}, b"")]
    try:
        with client_for(*script, fast=True) as (client, server, base):
            request = Request("GET", base, "/b/k", what="read k")
            assert client.read_range_into_files(request, 0, 6, [(files[0], 4), (files[1], 2)]) is True
            assert (tmp_path / "a").read_bytes() == b"abcd" and (tmp_path / "b").read_bytes() == b"ef"
            assert client.read_range_into_files(request, 0, 6, [(files[0], 6)]) is False   # a 200
            heads = client.head_many([Request("HEAD", base, "/b/x"), Request("HEAD", base, "/b/y")], 2)
            assert sorted(answer.status for answer in heads) == [200, 404]
    finally:
        for fd in files:
            os.close(fd)
