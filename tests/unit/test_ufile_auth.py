"""UFile signing and ETag against the vendor vectors of PROTOCOLS.md §4.4 (produced by the real ufile 3.2.11
SDK), plus the provider's pure helpers: metadata encoding, key quoting, error mapping, listing parsing."""
from __future__ import annotations

import io
import json
from urllib.parse import quote

import pytest

from storefs.errors import (
    AccessDenied,
    ConfigError,
    InvalidArgument,
    NotFound,
    ProtocolError,
    RemoteChanged,
    StoreError,
    Throttled,
    Transient,
)
from storefs.providers import ufile
from storefs.providers.ufile import wire as ufile_wire
from storefs.wire.answer import Answer, AnswerHeaders
from storefs.wire.auth import ufile as auth

PUB, PRI = "PUBexampleUFile", "PRIexampleUFileSecret"


def data2() -> bytes:
    return bytes((7 * i + 3) % 251 for i in range(2 * 1024 * 1024 + 1000))


def data9() -> bytes:
    return bytes((13 * i + 5) % 253 for i in range(9 * 1024 * 1024))


@pytest.mark.parametrize("method,key,ctype,expected_sts,expected", [
    ("PUT", "dir/file.txt", "text/plain", "PUT\n\ntext/plain\n\n/mybucket/dir/file.txt",
     "UCloud PUBexampleUFile:WYVN6Pn/iKh3kpK4jsHHMqMrHyY="),
    ("HEAD", "dir/file.txt", "", "HEAD\n\n\n\n/mybucket/dir/file.txt",
     "UCloud PUBexampleUFile:+WzIyBiFZYcQwCVWtUY4Rky46dw="),
    ("DELETE", "dir/file.txt", "", "DELETE\n\n\n\n/mybucket/dir/file.txt",
     "UCloud PUBexampleUFile:57BYURmLgHNqmJiTOYFCCY/P1GY="),
    ("POST", "big.bin", "text/plain", "POST\n\ntext/plain\n\n/mybucket/big.bin",
     "UCloud PUBexampleUFile:dkd7Z5rAzjdwktPSH8qU6Ju0264="),
])
def test_request_vectors(method, key, ctype, expected_sts, expected):
    sts = auth.string_to_sign(method, "mybucket", key, content_type=ctype)
    assert sts == expected_sts
    assert auth.authorization(PUB, PRI, sts) == expected


def test_method_is_upper_cased_like_the_sdk():
    assert auth.string_to_sign("put", "mybucket", "dir/file.txt", content_type="text/plain").startswith("PUT\n")


def test_listobjects_vector():
    params = {"delimiter": "/", "marker": "", "max-keys": "100", "prefix": "dir/"}
    sts = auth.string_to_sign("GET", "mybucket", "", list_params=params)
    assert sts == "GET\n\n\n\n/mybucket/\nlistobjects\ndelimiter:/\nmarker:\nmax-keys:100\nprefix:dir/"
    assert auth.authorization(PUB, PRI, sts) == "UCloud PUBexampleUFile:nLHPbkyWgTPzYM7YrxfY7nAaerM="


def test_download_url_vector():
    sts = auth.url_string_to_sign("GET", "mybucket", "dir/file.txt", 1500000300)
    assert sts == "GET\n\n\n1500000300\n/mybucket/dir/file.txt"
    assert auth.signature(PRI, sts) == "zWuw8w5dAlu+3Ik4U/Xf/mG53BE="
    query = auth.signed_url_query(PUB, PRI, "GET", "mybucket", "dir/file.txt", 1500000300)
    assert query == ("UCloudPublicKey=PUBexampleUFile&Expires=1500000300&Signature="
                     + quote("zWuw8w5dAlu+3Ik4U/Xf/mG53BE=", safe=""))


def test_api_signature_vector():
    params = {"Action": "DescribeBucket", "Offset": "0", "Limit": "10"}
    assert auth.api_signature(params, PUB, PRI) == "eb1fa09d3779479f2da8425dead3c4fa76a8fa08"
    assert "PublicKey" not in params  # the caller's mapping is left alone


def test_etag_vectors():
    assert auth.etag_of(data2()) == "AQAAAKnKJlRyLe1O-BlwwkHMRSyK6Z2h"
    assert auth.etag_of(data9()) == "AwAAAAnckURS0Z1EYHqSobHSz4VN0gWR"
    assert auth.etag_of(b"") == "AAAAAA=="  # ufile/util.py::file_etag of an empty file: 0 blocks


def test_etag_is_incremental_with_any_chunking():
    data = data9()
    hasher = auth.EtagHasher()
    pos = 0
    for size in (1, 4095, 4 * 1024 * 1024, 3, 1 << 20, 10**7):
        hasher.update(data[pos: pos + size])
        pos += size
    assert hasher.etag() == "AwAAAAnckURS0Z1EYHqSobHSz4VN0gWR"
    assert auth.etag_block_count(hasher.etag()) == 3 == auth.blocks_for(len(data))
    assert auth.etag_block_count('"AQAAAKnKJlRyLe1O-BlwwkHMRSyK6Z2h"') == 1
    assert auth.etag_block_count("c5371fe3624d438cd8a59420a3221978") is None


def test_canonical_ucloud_headers():
    assert auth.canonical_ucloud_headers({"X-Ufile-Meta-A": "1", "Content-Type": "x"}) == ""
    assert auth.canonical_ucloud_headers({"X-UCloud-B": " 2 ", "x-ucloud-a": "1"}) == "x-ucloud-a:1\nx-ucloud-b:2"


def test_parse_authorization():
    assert auth.parse_authorization("UCloud PUB:abc/+=") == ("PUB", "abc/+=")
    assert auth.parse_authorization("Bearer x") is None
    assert auth.parse_authorization("UCloud nocolon") is None


# ----------------------------------------------------------------------------------------------
# provider helpers


@pytest.mark.parametrize("value", ["1700000000.25", "plain", "ünïcødé/名字", " padded ", "=?UTF-8?B?looks", "a\nb", ""])
def test_meta_values_round_trip(value):
    encoded = auth.encode_meta_value(value)
    assert encoded.isascii() and "\n" not in encoded
    assert auth.decode_meta_value(encoded) == value


def test_meta_headers_and_back():
    headers = auth.meta_headers({"mtime": "5", "storefs-mtime": "6"})
    assert headers == {"X-Ufile-Meta-mtime": "5", "X-Ufile-Meta-storefs-mtime": "6"}
    assert auth.meta_from_headers({"X-Ufile-Meta-Mtime": "5", "Content-Type": "x"}) == {"mtime": "5"}
    assert auth.meta_from_listing({"X-Ufile-Meta-Mode": "1", "uid": "0"}) == {"mode": "1", "uid": "0"}
    assert auth.meta_from_listing(None) == {}
    with pytest.raises(InvalidArgument):
        auth.meta_headers({"bad_name": "1"})


def test_quote_key_keeps_dot_segments_and_odd_characters():
    assert auth.quote_key("a b/c+d?e#f%g") == "a%20b/c%2Bd%3Fe%23f%25g"
    assert auth.quote_key("../x/./y") == "%2E%2E/x/%2E/y"
    assert auth.quote_key("名字") == quote("名字")


def _response(status: int, body: dict | bytes | None = None, headers: dict | None = None) -> Answer:
    raw = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    return Answer(status, AnswerHeaders.of((headers or {}).items()), raw)


@pytest.mark.parametrize("status,body,cls", [
    (404, {"RetCode": -148654, "ErrMsg": "file not exist"}, NotFound),
    (400, {"RetCode": -30010, "ErrMsg": "bucket not exist"}, NotFound),
    (403, {"RetCode": -1, "ErrMsg": "signature not match"}, AccessDenied),
    (401, b"", AccessDenied),
    (412, b"", RemoteChanged),
    (429, {"RetCode": -1, "ErrMsg": "slow down"}, Throttled),
    (503, b"<html>busy</html>", Throttled),
    (500, b"", Transient),
    (400, {"RetCode": -1, "ErrMsg": "bad"}, InvalidArgument),
    (418, b"", StoreError),
])
def test_error_mapping(status, body, cls):
    err = ufile_wire.decode_error(_response(status, body, {"X-SessionId": "sess-1"}), "op")
    assert type(err) is cls
    assert "sess-1" in (err.detail or "")


def test_error_messages_carry_no_secrets():
    err = ufile_wire.decode_error(_response(403, {"RetCode": -1, "ErrMsg": "signature not match"}), "put k")
    assert PRI not in str(err) and "signature not match" in str(err)


def _store() -> ufile.UfileStore:
    provider = ufile.open_provider("t", {"public_key": PUB, "private_key": PRI})
    return provider.bucket("mybucket")


def test_listing_parse_and_paging():
    store = _store()
    page = store._parse_listing({
        "IsTruncated": True, "NextMarker": "b/",
        "Contents": [{"Key": "a", "Size": "5", "LastModified": 1552039614, "ETag": '"AQAA"',
                      "UserMeta": {"mtime": "7"}},
                     {"Key": "c", "Size": "1", "LastModified": 1, "Etag": "x"}],
        "CommonPrefixes": [{"Prefix": "b/"}]}, "")
    assert [(o.key, o.size, o.etag, o.mtime) for o in page.objects] == [("a", 5, "AQAA", 1552039614.0), ("c", 1, "x", 1.0)]
    assert page.objects[0].meta == {"mtime": "7"} and page.objects[0].meta_complete
    assert not page.objects[1].meta_complete  # no UserMeta field: metadata unknown
    assert page.prefixes == ["b/"] and page.next_token == "b/"
    last = store._parse_listing({"IsTruncated": False, "NextMarker": "zzz", "Contents": []}, "")
    assert last.next_token is None
    fallback = store._parse_listing({"IsTruncated": "true", "Contents": [{"Key": "k", "Size": "1"}]}, "")
    assert fallback.next_token == "k"


@pytest.mark.parametrize("data", [
    {"Contents": [{"Size": "1"}]},
    {"Contents": [{"Key": "a", "Size": "not a number"}]},
    {"Contents": "nope"},
    {"Contents": [], "CommonPrefixes": [{"NoPrefix": 1}]},
    {"IsTruncated": True, "Contents": []},
])
def test_malformed_listing_is_protocol_error(data):
    with pytest.raises(ProtocolError):
        _store()._parse_listing(data, "")


def test_config_parsing_and_repr_hide_the_secret():
    provider = ufile.open_provider("r", {"public_key": PUB, "private_key": PRI, "upload_suffix": "cn-sh2.ufileos.com",
                                         "endpoint": "http://127.0.0.1:9/"})
    cfg = provider.config
    assert cfg.upload_suffix == ".cn-sh2.ufileos.com" == cfg.download_suffix
    assert cfg.endpoint == "http://127.0.0.1:9"
    assert PRI not in repr(cfg) and PRI not in repr(provider)
    store = provider.bucket("b")
    assert store._upload_host == "b.cn-sh2.ufileos.com"
    provider.close()
    with pytest.raises(ConfigError):
        ufile.open_provider("r", {"public_key": PUB})
    with pytest.raises(ConfigError):
        ufile.open_provider("r", {"public_key": PUB, "private_key": PRI, "endpoint": "ftp://x"})
    assert "private_key" in ufile.SPEC.secrets


def test_body_buffers_small_and_streams_large():
    small = ufile_wire.UploadBody(io.BytesIO(b"hello"), 5, hash_md5=True)
    assert small.body.data == b"hello" and small.md5 == "5d41402abc4b2a76b9719d911017c592"
    assert small.local_etag() == auth.etag_of(b"hello")
    big_data = data9() * 2
    big = ufile_wire.UploadBody(io.BytesIO(big_data), len(big_data), hash_md5=True)
    assert big.body.size == len(big_data) and big.md5 == ""
    out = b"".join(big.body.chunks())
    assert out == big_data and big.local_etag() == auth.etag_of(big_data)
    with pytest.raises(InvalidArgument):
        ufile_wire.UploadBody(io.BytesIO(b"abc"), 5, hash_md5=False)
