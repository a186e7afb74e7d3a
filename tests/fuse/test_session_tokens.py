"""Temporary credentials (issue #13 item 11). Of the signature schemes storefs speaks, only AWS SigV4 (S3,
Glacier) documents a session token (`X-Amz-Security-Token`, config key `session_token`); COS v4, CAS,
UFile and WCS document none (SEMANTICS.md "Temporary credentials" says what each offers instead). Here:
the token reaches the wire on every request of a real mount and of a vault command, and never appears in
logs, status output or error messages. A recording front on 127.0.0.1 stands between storefs and moto."""
from __future__ import annotations

import os
import threading

import pytest

from tests.fuse.harness import Env
from tests.fuse.test_security import encoded_forms, unique_secret
from tests.tlsserver import Front, FrontHandler


class TokenHandler(FrontHandler):
    """The front's handler, also writing down the X-Amz-Security-Token header of every request."""

    def _forward(self) -> None:
        self.emulator.note_token(self.headers.get("X-Amz-Security-Token", ""))  # type: ignore[attr-defined]
        super()._forward()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


class TokenFront(Front):
    handler = TokenHandler

    def __init__(self, upstream: str) -> None:
        self.tokens: list[str] = []
        self._tokens_lock = threading.Lock()
        super().__init__(upstream)

    def note_token(self, token: str) -> None:
        with self._tokens_lock:
            self.tokens.append(token)


def logs_and_outputs(env: Env, *outputs: str) -> str:
    logs = (env.tmp / "cache" / "storefs" / "logs").glob("*.log")
    return "\n".join([p.read_text(errors="replace") for p in logs] + list(outputs))


def test_s3_session_token_reaches_the_wire_and_never_the_logs(tmp_path, moto_server):
    token = unique_secret("tok")
    bucket = moto_server.create_bucket()
    with TokenFront(moto_server.endpoint) as front:
        env = Env(tmp_path, {"t": {"type": "s3", **moto_server.options(endpoint=front.url, session_token=token)}})
        try:
            mount = env.mount(f"t:{bucket}", options=("write_back=0",))
            (mount.path / "a.txt").write_bytes(b"with a session token")
            assert (mount.path / "a.txt").read_bytes() == b"with a session token"
            status = env.run("status")
            assert status.returncode == 0, status.stderr
            assert mount.unmount().returncode == 0
            # A second mount (the harness mounts with -v): listing with the token again.
            mount = env.mount(f"t:{bucket}", options=("write_back=0",))
            assert sorted(os.listdir(mount.path)) == ["a.txt"]
            assert mount.unmount().returncode == 0
        finally:
            env.close()
        assert len(front.tokens) >= 3
        assert set(front.tokens) == {token}            # on every request, unchanged
        text = logs_and_outputs(env, status.stdout, status.stderr)
        assert not [form for form in encoded_forms(token) if form in text]


def test_glacier_session_token_reaches_the_wire(tmp_path, moto_glacier):
    token = unique_secret("gla")
    with TokenFront(moto_glacier.endpoint) as front:
        section = {"type": "glacier", "endpoint": front.url, "access_key": moto_glacier.access_key,
                   "secret_key": moto_glacier.secret_key, "region": moto_glacier.region, "session_token": token}
        env = Env(tmp_path, {"g": section})
        name = f"tok{os.getpid()}"
        created = env.run("vault", "create", f"g:{name}")
        assert created.returncode == 0, created.stderr
        listed = env.run("vault", "ls", "g:")
        assert listed.returncode == 0 and name in listed.stdout, listed.stderr
        deleted = env.run("vault", "delete", f"g:{name}")
        assert deleted.returncode == 0, deleted.stderr
        assert len(front.tokens) >= 3 and set(front.tokens) == {token}
        text = logs_and_outputs(env, *(r.stdout + r.stderr for r in (created, listed, deleted)))
        assert not [form for form in encoded_forms(token) if form in text]


@pytest.mark.parametrize("kind, section", [
    ("cos", {"appid": "1250000000", "secret_id": "AKIDEXAMPLE", "secret_key": "s3cr3tvalue", "region": "gz",
             "security_token": "x"}),
    ("ufile", {"public_key": "PUB", "private_key": "s3cr3tvalue", "security_token": "x"}),
    ("wcs", {"access_key": "AK", "secret_key": "s3cr3tvalue", "put_url": "http://127.0.0.1:9",
             "mgr_url": "http://127.0.0.1:9", "get_url": "none", "session_token": "x"}),
    ("cas", {"appid": "1250000000", "secret_id": "AKIDEXAMPLE", "secret_key": "s3cr3tvalue",
             "region": "ap-chengdu", "security_token": "x"}),
])
def test_services_without_session_tokens_refuse_a_token_key(tmp_path, kind, section):
    """A token key on a service whose signature has no place for it is an unknown key: refused at mount
    time rather than silently dropped (the request would then be signed without it and fail later)."""
    env = Env(tmp_path, {"r": {"type": kind, **section}})
    result = env.run("mount", "r:b", str(tmp_path / "m"), timeout=60)
    assert result.returncode == 2, result.stderr
    assert "unknown key" in result.stderr and "token" in result.stderr, result.stderr
