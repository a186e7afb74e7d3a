"""The fault-injecting proxy (tests/faultproxy.py) itself: transparent when quiet, each fault kind does
what it says, outages and stop() are real. Against a tiny HTTP/1.1 server on 127.0.0.1."""
from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
import time

import pytest
import requests

from tests.faultproxy import KINDS, FaultProxy

BIG = 20 * 1024 * 1024
DATA = bytes(range(256)) * 4096          # 1 MiB


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # else Nagle + delayed ACK add 40 ms per request

    def log_message(self, *args) -> None:   # quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/octet-stream") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._send(200, DATA)

    def do_GET(self) -> None:
        self.server.seen.append(("GET", self.path))
        if self.path == "/json":
            self._send(200, json.dumps({"items": list(range(50))}).encode(), "application/json")
        elif self.path == "/xml":
            self._send(200, b"<?xml version='1.0'?><List>" + b"<Key>k</Key>" * 50 + b"</List>", "application/xml")
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(DATA), 100_000):
                piece = DATA[i:i + 100_000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/big":
            self._send(200, DATA * (BIG // len(DATA)))
        else:
            self._send(200, DATA)

    def do_PUT(self) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or ""):
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if len(body) != int(self.headers.get("Content-Length", 0)):
                self.server.seen.append(("PUT-cut-short", self.path, len(body)))
                self.close_connection = True
                return
        self.server.seen.append(("PUT", self.path, len(body)))
        self._send(200, hashlib.md5(body).hexdigest().encode(), "text/plain")


@pytest.fixture(scope="module")
def upstream():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def session():
    with requests.Session() as s:
        s.trust_env = False
        yield s


def proxy_for(upstream, **kwargs) -> FaultProxy:
    return FaultProxy(upstream.server_address[1], **kwargs)


def test_transparent_when_quiet(upstream, session):
    with proxy_for(upstream) as proxy:
        for _ in range(20):   # keep-alive: one connection serves all of these
            assert session.get(proxy.url + "/x", timeout=10).content == DATA
        assert session.get(proxy.url + "/chunked", timeout=10).content == DATA
        big = session.get(proxy.url + "/big", timeout=30).content
        assert len(big) == BIG and big[:len(DATA)] == DATA
        payload = DATA * 17
        assert session.put(proxy.url + "/up", data=payload, timeout=30).text == hashlib.md5(payload).hexdigest()
        chunks = (DATA for _ in range(5))     # a generator: requests sends it chunked
        assert session.put(proxy.url + "/up", data=chunks, timeout=30).text == hashlib.md5(DATA * 5).hexdigest()
        assert session.head(proxy.url + "/x", timeout=10).headers["Content-Length"] == str(len(DATA))
        stats = proxy.stats()
        assert stats["requests"] == stats["forwarded"] == 25 and stats["faults_total"] == 0


def forced(upstream, kind: str, **kwargs) -> FaultProxy:
    return proxy_for(upstream, rate=1.0, weights={kind: 1}, **kwargs)


@pytest.mark.parametrize("kind,status,text", [("http500", 500, "InternalError"), ("http503", 503, "ServiceUnavailable"),
                                              ("throttle", 503, "<Code>SlowDown</Code>")])
def test_error_answers_never_reach_the_server(upstream, session, kind, status, text):
    with forced(upstream, kind, profile="s3") as proxy:
        before = len(upstream.seen)
        answer = session.put(proxy.url + "/never", data=DATA, timeout=10)
        assert answer.status_code == status and text in answer.text
        answer = session.get(proxy.url + "/never", timeout=10)   # the connection is still usable
        assert answer.status_code == status
        assert len(upstream.seen) == before
        assert proxy.stats()["faults"] == {kind: 2}


@pytest.mark.parametrize("profile,status,text", [("cos", 503, '"code":-71'), ("wcs", 429, '"code":"429"'),
                                                 ("ufile", 429, '"RetCode"')])
def test_throttling_per_profile(upstream, session, profile, status, text):
    with forced(upstream, "throttle", profile=profile) as proxy:
        answer = session.get(proxy.url + "/x", timeout=10)
        assert answer.status_code == status and text in answer.text
        answer.json()


def test_reset_while_uploading(upstream, session):
    with forced(upstream, "reset_upload") as proxy:
        with pytest.raises(requests.exceptions.ConnectionError):
            session.put(proxy.url + "/cut", data=DATA * 8, timeout=10)
        assert not [s for s in upstream.seen if s[:2] == ("PUT", "/cut")]
        # Without a body there is nothing to cut while sending: the answer is reset instead.
        with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            session.get(proxy.url + "/x", timeout=10)
        assert proxy.stats()["faults"] == {"reset_upload": 1, "reset_response": 1}


def test_reset_after_the_server_processed_it(upstream, session):
    with forced(upstream, "reset_response") as proxy:
        with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            session.put(proxy.url + "/done", data=b"abc", timeout=10)
        assert ("PUT", "/done", 3) in upstream.seen
        with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            session.get(proxy.url + "/x", timeout=10).content


def test_stall_past_the_read_timeout(upstream, session):
    with forced(upstream, "stall", stall_seconds=3) as proxy:
        started = time.monotonic()
        with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            session.get(proxy.url + "/x", timeout=(2, 0.5)).content
        with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            session.head(proxy.url + "/x", timeout=(2, 0.5))
        assert time.monotonic() - started < 2.5
    assert time.monotonic() - started < 5   # stop() ends the stalls at once


def test_truncated_body_is_a_short_read(upstream, session):
    with forced(upstream, "truncate") as proxy:
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            session.get(proxy.url + "/x", timeout=10).content
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            session.get(proxy.url + "/chunked", timeout=10).content   # chunked upstream: re-framed
        assert proxy.stats()["faults"] == {"truncate": 2}


def test_wrong_content_length(upstream, session):
    with forced(upstream, "wrong_length") as proxy:
        answer = session.get(proxy.url + "/x", timeout=10)   # too short but self-consistent
        assert answer.status_code == 200 and answer.content == DATA[:len(DATA) // 2]
        assert answer.headers["Content-Length"] == str(len(DATA) // 2)
        with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            session.head(proxy.url + "/x", timeout=10)   # a HEAD's length is never altered: it is cut
        assert proxy.stats()["faults"] == {"wrong_length": 1, "reset_response": 1}


def test_garbled_listing_is_unparseable(upstream, session):
    with forced(upstream, "garble") as proxy:
        answer = session.get(proxy.url + "/json", timeout=10)
        assert answer.status_code == 200
        with pytest.raises(ValueError):
            json.loads(answer.content)
        import xml.etree.ElementTree as ET
        with pytest.raises(ET.ParseError):
            ET.fromstring(session.get(proxy.url + "/xml", timeout=10).content)
        # Object data is never garbled: it is cut short instead, which a client can see.
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            session.get(proxy.url + "/x", timeout=10).content
        assert proxy.stats()["faults"] == {"garble": 2, "truncate": 1}


def test_rate_is_a_share_and_seeded(upstream, session):
    def run(seed: int) -> dict:
        with proxy_for(upstream, rate=0.1, seed=seed, weights={"http500": 1, "http503": 1}) as proxy:
            for _ in range(300):
                session.get(proxy.url + "/json", timeout=10)
            return proxy.stats()
    first = run(7)
    assert first["requests"] == 300 and 10 <= first["faults_total"] <= 60
    assert run(7)["faults"] == first["faults"]     # one client thread: the same faults again


def test_every_kind_is_known():
    with pytest.raises(ValueError):
        FaultProxy(1, weights={"nonsense": 1}).stop()
    assert len(KINDS) == 9


def test_down_up_and_outage(upstream, session):
    with proxy_for(upstream) as proxy:
        assert session.get(proxy.url + "/x", timeout=10).ok
        proxy.down()
        for _ in range(3):
            with pytest.raises(requests.exceptions.ConnectionError):
                session.get(proxy.url + "/x", timeout=5)
        proxy.up()
        assert session.get(proxy.url + "/x", timeout=10).ok
        proxy.outage(0.5)
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(proxy.url + "/x", timeout=5)
        deadline = time.monotonic() + 10
        while proxy.is_down and time.monotonic() < deadline:
            time.sleep(0.05)
        assert session.get(proxy.url + "/x", timeout=10).ok


def test_down_cuts_a_transfer_in_flight(upstream):
    with proxy_for(upstream) as proxy:
        with requests.get(proxy.url + "/big", stream=True, timeout=10) as answer:
            first = next(answer.iter_content(65536))
            assert first
            proxy.down()
            with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
                for _ in answer.iter_content(1 << 20):
                    pass


def test_stop_really_stops(upstream):
    proxy = forced(upstream, "stall", stall_seconds=60)
    hung = threading.Thread(target=lambda: _ignore(lambda: requests.get(proxy.url + "/x", timeout=30)))
    hung.start()
    deadline = time.monotonic() + 10
    while proxy.stats()["faults_total"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 3
    hung.join(10)
    assert not hung.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()


def _ignore(fn) -> None:
    try:
        fn()
    except requests.exceptions.RequestException:
        pass
