"""TLS certificate verification: always on, `ca_file` the only way to trust a private CA, and a refusal
that says so (and never shows the request URL, whose query may carry a signature).

The end-to-end counterpart (every provider refusing a self-signed endpoint, then working with
`ca_file`) is tests/fuse/test_security.py.
"""
from __future__ import annotations

import contextlib
import re
import socket
import threading
from pathlib import Path

import pytest
import requests

from storefs.wire.body import EMPTY
from storefs.wire.settings import HttpSettings
from storefs.wire.transport_requests import RequestsTransport
from storefs.config import Config
from storefs.errors import AccessDenied, ConfigError, Transient
from storefs.store.registry import provider_module
from tests.emulators.cos import CosEmulator
from tests.tlsserver import Front, make_certs

ROOT = Path(__file__).resolve().parents[2] / "storefs"

# One valid section per HTTP provider type (nothing is contacted: open_provider makes no request).
SECTIONS = {
    "s3": "endpoint = https://s3.example.invalid\naccess_key = AKIDEXAMPLE\nsecret_key = s3cr3tvalue\n",
    "cos": "appid = 1250000000\nsecret_id = AKIDEXAMPLE\nsecret_key = s3cr3tvalue\nregion = sh\n",
    "wcs": "access_key = AKEXAMPLE\nsecret_key = s3cr3tvalue\nput_url = https://put.example.invalid\n"
           "mgr_url = https://mgr.example.invalid\n",
    "ufile": "public_key = PUBEXAMPLE\nprivate_key = s3cr3tvalue\n",
    "cas": "appid = 1250000000\nsecret_id = AKIDEXAMPLE\nsecret_key = s3cr3tvalue\nregion = ap-chengdu\n",
    "glacier": "access_key = AKIDEXAMPLE\nsecret_key = s3cr3tvalue\nregion = eu-west-1\n",
}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Nothing here may resolve (let alone reach) an address other than 127.0.0.1."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        if host not in ("127.0.0.1", b"127.0.0.1"):
            raise AssertionError(f"a TLS unit test tried to resolve {host!r}")
        return real(host, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", guarded)


def load(tmp_path: Path, kind: str, extra: str = ""):
    path = tmp_path / "storefs.conf"
    path.write_text(f"[r]\ntype = {kind}\n{SECTIONS[kind]}{extra}")
    path.chmod(0o600)
    return Config.load(path).remote("r")


def sessions_of(obj, depth: int = 4, seen: set | None = None) -> list[requests.Session]:
    """Every requests.Session reachable from a provider through its attributes."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth < 0:
        return []
    seen.add(id(obj))
    if isinstance(obj, requests.Session):
        return [obj]
    found = []
    children = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
    if hasattr(obj, "__slots__"):
        children += [getattr(obj, name, None) for name in obj.__slots__]
    for child in children:
        if isinstance(child, (str, bytes, int, float, bool, type(None))):
            continue
        if isinstance(child, (list, tuple, set)):
            for item in child:
                found += sessions_of(item, depth - 1, seen)
        elif isinstance(child, dict):
            for item in child.values():
                found += sessions_of(item, depth - 1, seen)
        else:
            found += sessions_of(child, depth - 1, seen)
    return found


def get(settings: HttpSettings, url: str) -> int:
    """The status of one GET over the requests transport."""
    with RequestsTransport(settings).open("GET", url, {}, EMPTY) as answer:
        return answer.status


def test_no_code_path_turns_verification_off():
    pattern = re.compile(r"verify\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False|_create_unverified_context|"
                         r"disable_warnings|InsecureRequestWarning")
    offenders = [f"{path.relative_to(ROOT.parent)}:{n}: {line.strip()}"
                 for path in sorted(ROOT.rglob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []
    session = RequestsTransport(HttpSettings()).session
    assert session.verify is True and session.trust_env is False


@pytest.mark.parametrize("kind", sorted(SECTIONS))
def test_every_provider_verifies_and_takes_ca_file(kind, tmp_path):
    module = provider_module(kind)
    assert "ca_file" in module.SPEC.optional
    for extra, expected in (("", True), (f"ca_file = {tmp_path / 'ca.pem'}\n", str(tmp_path / "ca.pem"))):
        (tmp_path / "ca.pem").write_text("placeholder: only the path is checked here\n")
        remote = load(tmp_path, kind, extra)
        provider = module.open_provider(remote.name, remote.options)
        try:
            found = sessions_of(provider)
            assert found, f"no requests.Session found in the {kind} provider"
            assert {s.verify for s in found} == {expected}, (kind, extra, [s.verify for s in found])
        finally:
            provider.close()
    remote = load(tmp_path, kind, f"ca_file = {tmp_path / 'missing.pem'}\n")
    with pytest.raises(ConfigError, match="ca_file"):
        module.open_provider(remote.name, remote.options)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """An HTTPS front (private CA, cert for 127.0.0.1) and a plain HTTP server, both on loopback."""
    base = tmp_path_factory.mktemp("tls")
    certs = make_certs(base / "good")
    with CosEmulator() as upstream, Front(upstream.url, certs) as front:
        yield front, certs, upstream, base


def test_refusal_names_the_fix_and_hides_the_url(tls_server, monkeypatch):
    front, certs, _upstream, base = tls_server
    url = front.url + "/files/v2/1250000000/bucket/key?sign=SIGNATUREabc123&uploadId=u"
    # Trust comes only from ca_file: a CA bundle named in the environment changes nothing.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certs.ca_pem))
    monkeypatch.setenv("CURL_CA_BUNDLE", "")
    with pytest.raises(AccessDenied) as info:
        get(HttpSettings(), url)
    message = str(info.value)
    assert "certificate verification failed" in message and "ca_file" in message, message
    assert "SIGNATURE" not in message and "/files/" not in message and "uploadId" not in message, message
    assert front.seen == []  # no request left before the handshake failed

    settings = HttpSettings(verify=str(certs.ca_pem))
    assert get(settings, url) < 500  # the emulator answered through TLS (its answer does not matter)

    other = make_certs(base / "other", "another")
    settings = HttpSettings(verify=str(other.ca_pem))
    with pytest.raises(AccessDenied) as info:
        get(settings, url)
    assert "certificate verification failed" in str(info.value) and str(other.ca_pem) in str(info.value)


def test_host_name_is_checked(tmp_path):
    certs = make_certs(tmp_path, "elsewhere", ip="127.0.0.2")   # trusted CA, but for another address
    with CosEmulator() as upstream, Front(upstream.url, certs) as front:
        settings = HttpSettings(verify=str(certs.ca_pem))
        with pytest.raises(AccessDenied) as info:
            get(settings, front.url + "/x")
    assert "certificate verification failed" in str(info.value)
    assert "127.0.0.2" in str(info.value) or "mismatch" in str(info.value).lower(), str(info.value)


def test_plain_http_server_on_https_url_is_not_retried(tls_server):
    _front, certs, upstream, _base = tls_server
    settings = HttpSettings(verify=str(certs.ca_pem))
    with pytest.raises(AccessDenied) as info:
        get(settings, upstream.url.replace("http:", "https:") + "/x?sign=S1G")
    assert not isinstance(info.value, Transient)
    assert "TLS handshake" in str(info.value) and "S1G" not in str(info.value)


def test_hang_up_in_the_handshake_is_transient():
    """An overloaded balancer closing the connection mid-handshake is retried, not a refusal."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(10)

        def hang_up() -> None:
            with contextlib.suppress(OSError):  # accept() times out if the client never came
                conn, _ = listener.accept()
                conn.close()
        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        settings = HttpSettings(connect_timeout=5, read_timeout=5)
        with pytest.raises(Transient) as info:
            get(settings, f"https://127.0.0.1:{listener.getsockname()[1]}/x?sign=S1G")
        thread.join(10)
    assert "S1G" not in str(info.value)
