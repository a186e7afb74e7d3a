"""Config mistakes met by the real `storefs mount` (issue #6), beyond tests/fuse/test_cli.py (S3 wrong
credentials, unreachable S3, readable config) and tests/unit/test_config.py (the loader's messages):
each fails with exit 2 and one line that names the remote and what to fix, within seconds, without
showing a secret and without mounting anything."""
from __future__ import annotations

import os
import socket
import time

import pytest

from tests.fuse.harness import Env

SECRET = "WRONGSECRETVALUE4711"
EMULATED = ["cos", "wcs", "ufile"]
# the key holding each emulated provider's API address
ENDPOINT_KEY = {"cos": "endpoint", "wcs": "mgr_url", "ufile": "endpoint"}


def fails_fast(env: Env, tmp_path, spec: str, *words: str, within: float) -> str:
    """Mount `spec`; assert exit 2, one line naming `words`, within `within` seconds, nothing mounted."""
    mountpoint = tmp_path / "m"
    mountpoint.mkdir(exist_ok=True)
    started = time.monotonic()
    result = env.run("mount", spec, str(mountpoint), timeout=within + 30)
    took = time.monotonic() - started
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert took < within, (took, lines[0])
    assert not os.path.ismount(mountpoint) and not os.listdir(mountpoint)
    assert SECRET not in result.stderr + result.stdout + env.log_tail(1000)
    return lines[0]


def free_port() -> int:
    with socket.socket() as sock:  # bound, then closed: nobody listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("section, words", [
    ({"endpoint": "http://127.0.0.1:9", "access_key": "AKIAEXAMPLE"}, ["[r]", "type"]),
    ({"type": "s4", "endpoint": "http://127.0.0.1:9"}, ["[r]", "unknown type 's4'", "s3"]),
    ({"type": "s3", "endpoint": "http://127.0.0.1:9", "access_key": "AKIAEXAMPLE"}, ["[r]", "secret_key"]),
    ({"type": "s3", "endpoint": "http://127.0.0.1:9", "access_key": "AKIAEXAMPLE", "secret_key": SECRET,
      "retires": "3"}, ["[r]", "retires", "retries"]),
    ({"type": "cos", "appid": "1250000000", "secret_id": "AKIDEXAMPLE", "secret_key": SECRET},
     ["[r]", "region", "endpoint"]),
    ({"type": "ufile", "public_key": "pub", "endpoint": "http://127.0.0.1:9"}, ["private_key"]),
    ({"type": "wcs", "access_key": "ak", "secret_key": SECRET, "put_url": "http://127.0.0.1:9"}, ["mgr_url"]),
])
def test_missing_unknown_and_misspelt_keys(tmp_path, section, words):
    env = Env(tmp_path, {"r": section})
    fails_fast(env, tmp_path, "r:bucket", *words, within=10)


@pytest.mark.parametrize("kind, endpoint", [
    ("s3", "http://127.0.0.1:notaport"), ("s3", "http://[::1"), ("s3", "ftp://127.0.0.1:21"),
    ("s3", "http://127.0.0.1:99999"), ("s3", "http://"),
    ("cos", "http://127.0.0.1:notaport"), ("cos", "http://[::1"), ("cos", "127.0.0.1:9000"),
    ("ufile", "http://127.0.0.1:notaport"), ("ufile", "http://[::1"), ("ufile", "http://"),
    ("wcs", "http://127.0.0.1:notaport"), ("wcs", "http://[::1"), ("wcs", "http://"),
])
def test_malformed_endpoint(tmp_path, kind, endpoint):
    """A URL that cannot be requested is a config error naming the key, found before any request
    (these used to end in a traceback and exit 1, or an InvalidURL from the first request)."""
    section = {
        "s3": {"type": "s3", "endpoint": endpoint, "access_key": "AKIAEXAMPLE", "secret_key": SECRET},
        "cos": {"type": "cos", "appid": "1250000000", "secret_id": "AKIDEXAMPLE", "secret_key": SECRET,
                "endpoint": endpoint},
        "ufile": {"type": "ufile", "public_key": "pub", "private_key": SECRET, "upload_suffix": ".example.com",
                  "endpoint": endpoint},
        "wcs": {"type": "wcs", "access_key": "ak", "secret_key": SECRET, "put_url": "http://127.0.0.1:9",
                "mgr_url": endpoint},
    }[kind]
    env = Env(tmp_path, {"r": section})
    key = "mgr_url" if kind == "wcs" else "endpoint"
    fails_fast(env, tmp_path, "r:bucket", key, "http", within=10)


@pytest.mark.parametrize("kind", EMULATED)
def test_wrong_credentials_native_protocols(tmp_path, request, kind):
    emulator = request.getfixturevalue(f"{kind}_emulator")
    emulator.create_bucket("creds")
    section = {k: str(v) for k, v in emulator.config().items()}
    secret_key = {"cos": "secret_key", "wcs": "secret_key", "ufile": "private_key"}[kind]
    section[secret_key] = SECRET
    env = Env(tmp_path, {"r": section})
    line = fails_fast(env, tmp_path, "r:creds", "[r]", "r:creds", within=15)
    # The server's own words are passed on, so the user can tell a bad key from a missing bucket.
    assert any(word in line.lower() for word in ("secret", "signature", "denied", "-47")), line


@pytest.mark.parametrize("kind", EMULATED)
def test_unreachable_endpoint_native_protocols(tmp_path, request, kind):
    emulator = request.getfixturevalue(f"{kind}_emulator")
    section = {k: str(v) for k, v in emulator.config().items()}
    port = free_port()
    section[ENDPOINT_KEY[kind]] = f"http://127.0.0.1:{port}"
    env = Env(tmp_path, {"r": section})
    fails_fast(env, tmp_path, "r:bucket", "[r]", f"127.0.0.1:{port}", within=20)
