"""COS v4 endpoint conventions (issue #13 item 8): the API host and the download host derived as the
SDK's `CosConfig(region | hostname, download_hostname)` does, https by default, and the Content-Type of
the files storefs writes. Requests go to the loopback emulator only: a Tencent host name appears in Host
headers, never in a DNS lookup (the emulator is reached through `endpoint` / `download_endpoint`)."""
from __future__ import annotations

import io

import pytest

from storefs.errors import ConfigError, StoreError
from storefs.providers.cos import open_provider
from storefs.providers.cos.config import CosConfig
from tests.emulators.cos import CosEmulator

APPID = "1250000000"
KEYS = {"appid": APPID, "secret_id": "AKIDcosEmulator", "secret_key": "cosEmulatorSecretKey"}


def config(**options: str) -> CosConfig:
    return CosConfig.from_options({**KEYS, **options})


@pytest.mark.parametrize("options, api, download", [
    # The README's own example: the endpoint names region gz, so downloads go to cosgz, over https.
    ({"endpoint": "https://gz.file.myqcloud.com"}, "https://gz.file.myqcloud.com",
     "https://bkt-1250000000.cosgz.myqcloud.com"),
    ({"region": "sh"}, "https://sh.file.myqcloud.com", "https://bkt-1250000000.cossh.myqcloud.com"),
    ({"region": "singapore"}, "https://sgp.file.myqcloud.com", "https://bkt-1250000000.cossgp.myqcloud.com"),
    # 0.0.27's rule for any other region name.
    ({"region": "cd"}, "https://cd.file.myqcloud.com", "https://bkt-1250000000.coscd.myqcloud.com"),
    # The SDK's own key names.
    ({"hostname": "tj.file.myqcloud.com"}, "https://tj.file.myqcloud.com",
     "https://bkt-1250000000.costj.myqcloud.com"),
    ({"hostname": "cos.internal.example", "download_hostname": "dl.internal.example"},
     "https://cos.internal.example", "https://bkt-1250000000.dl.internal.example"),
    # Plain http only when asked for.
    ({"region": "gz", "scheme": "http", "download_scheme": "http"}, "http://gz.file.myqcloud.com",
     "http://bkt-1250000000.cosgz.myqcloud.com"),
    # An emulator or proxy endpoint that names no region serves downloads too (Host names the bucket).
    ({"endpoint": "http://127.0.0.1:9000"}, "http://127.0.0.1:9000", "http://127.0.0.1:9000"),
])
def test_hosts_are_derived_as_the_sdk_does(options, api, download):
    cfg = config(**options)
    assert cfg.api_base == api
    base, host = cfg.download_url("bkt")
    assert base == download
    if "127.0.0.1" not in download:
        assert host == download.split("://")[1]


def test_the_download_request_goes_to_the_download_host_over_https():
    """The request CosApi builds for a read of the README's example config (no connection made)."""
    provider = open_provider("r", {**KEYS, "endpoint": "https://gz.file.myqcloud.com"})
    try:
        request = provider.api.download_request("bkt", "/dir/a b.txt", "read")
        assert request.base == "https://bkt-1250000000.cosgz.myqcloud.com"
        assert request.host == "bkt-1250000000.cosgz.myqcloud.com"
        assert request.path == "/dir/a%20b.txt"
    finally:
        provider.close()


@pytest.mark.parametrize("options, words", [
    ({"region": "sh", "endpoint": "https://gz.file.myqcloud.com"}, ["region", "sh", "gz", "disagree"]),
    ({"region": "sh", "hostname": "gz.file.myqcloud.com"}, ["hostname", "disagree"]),
    ({"hostname": "https://gz.file.myqcloud.com"}, ["hostname", "no scheme", "endpoint"]),
    ({"region": "gz", "download_hostname": "cosgz.myqcloud.com/x"}, ["download_hostname"]),
    ({"region": "gz", "download_scheme": "ftp"}, ["download_scheme", "http or https"]),
    ({"region": "gz", "download_endpoint": "cosgz.myqcloud.com"}, ["download_endpoint", "http://"]),
    ({}, ["region", "hostname", "endpoint"]),
])
def test_wrong_host_settings_fail_with_what_to_fix(options, words):
    with pytest.raises(ConfigError) as info:
        config(**options)
    assert all(word in str(info.value) for word in words), str(info.value)


@pytest.fixture
def emu(tmp_path):
    # The emulator plays both real hosts: the API answers only to gz.file.myqcloud.com, downloads only
    # to <bucket>-<appid>.cosgz.myqcloud.com.
    with CosEmulator(root=tmp_path / "cos", buckets=("bkt",), download_host="cosgz.myqcloud.com") as emulator:
        emulator.api_host = "gz.file.myqcloud.com"
        emulator.strict_download_host = True
        yield emulator


def _sdk_style(emu: CosEmulator, **extra: str) -> dict[str, str]:
    """The SDK's CosConfig(hostname=...) settings, connected to the emulator."""
    return {**KEYS, "hostname": "gz.file.myqcloud.com", "endpoint": emu.url, "download_endpoint": emu.url,
            **extra}


def test_reads_and_writes_reach_the_two_hosts_by_name(emu):
    provider = open_provider("r", _sdk_style(emu))
    try:
        store = provider.bucket("bkt")
        store.put("dir/notes.txt", io.BytesIO(b"hello hosts"), 11, {})
        assert store.read_range("dir/notes.txt", 0, 11) == b"hello hosts"
    finally:
        provider.close()
    kinds = {(kind, host) for kind, host in emu.hosts}
    assert ("api", "gz.file.myqcloud.com") in kinds
    assert ("download", "bkt-1250000000.cosgz.myqcloud.com") in kinds
    assert {kind for kind, host in kinds if not host.endswith("myqcloud.com")} == set()


def test_a_wrong_download_host_is_refused_by_the_emulator(emu):
    """The check above has teeth: the emulator refuses a download host that is not the bucket's."""
    provider = open_provider("r", _sdk_style(emu, download_hostname="cossh.myqcloud.com"))
    try:
        store = provider.bucket("bkt")
        store.put("a.bin", io.BytesIO(b"x"), 1, {})
        with pytest.raises(StoreError, match="download hosts are"):
            store.read_range("a.bin", 0, 1)
    finally:
        provider.close()


def test_files_get_the_content_type_of_their_name(emu):
    provider = open_provider("r", _sdk_style(emu))
    try:
        store = provider.bucket("bkt")
        updates = emu.request_counts.get("update", 0)
        store.put("pics/cat.jpg", io.BytesIO(b"\xff\xd8jpeg"), 6, {"mode": "33188"})
        store.put("data.json", io.BytesIO(b"{}"), 2, {})
        store.put("README", io.BytesIO(b"plain"), 5, {})  # no extension: no type, no extra request
        assert emu.request_counts.get("update", 0) - updates == 2
        # Sliced uploads too (above the 8 MiB single-upload limit).
        big = bytes(range(256)) * (9 * 4096)
        store.put("big.tar.gz", io.BytesIO(big), len(big), {})
        served = {key: provider.api.download("bkt", "/" + key, 0, 1, "read").headers.get("Content-Type")
                  for key in ("pics/cat.jpg", "data.json", "README", "big.tar.gz")}
        assert served == {"pics/cat.jpg": "image/jpeg", "data.json": "application/json",
                          "README": "application/octet-stream", "big.tar.gz": "application/gzip"}
        # The type is no user metadata and leaves biz_attr (storefs's metadata) alone.
        info = store.stat("pics/cat.jpg")
        assert info.meta.get("mode") == "33188" and "Content-Type" not in info.meta
    finally:
        provider.close()
