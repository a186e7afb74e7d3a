"""UCloud UFile (US3) signatures, ETag and the wire encodings they depend on, as pure functions (no I/O,
no clock): the raw key is signed while the path carries it percent-encoded; user metadata travels in
`X-Ufile-Meta-*` headers.

Sources (see /work/shared/PROTOCOLS.md §4.3–4.4): the `ufile` 3.2.11 Python SDK (`baseufile.py`, `auth.py`,
`util.py::file_etag`) and the Go SDK `ufile-gosdk/auth.go`. The emulator verifies with the same functions.

Request signature (header `Authorization: UCloud <PublicKey>:<Signature>`):

    StringToSign = METHOD "\\n" Content-MD5 "\\n" Content-Type "\\n" Date "\\n" CanonUCloudHeaders "/" bucket "/" key
                   [ "\\nlistobjects\\ndelimiter:<d>\\nmarker:<m>\\nmax-keys:<n>\\nprefix:<p>" ]   (Python SDK only)
    Signature    = Base64_std( HMAC-SHA1(PrivateKey, StringToSign) )

The key is the raw (unencoded) object key. Signed download URL: the same with `Expires` (unix seconds) in place of
Date, passed as `?UCloudPublicKey=&Expires=&Signature=`. Bucket-management API (api.ucloud.cn):
`Signature = SHA1_hex(concat(k + v for params sorted by name, PublicKey included) + PrivateKey)`.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ...errors import InvalidArgument

# UFile hashes objects in 4 MiB blocks for its ETag (`ufile/config.py::BLOCKSIZE`).
ETAG_BLOCK = 4 * 1024 * 1024
_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
META_PREFIX = "x-ufile-meta-"
# The service allows only letters, digits and '-' after X-Ufile-Meta- (US3 FAQ).
_META_NAME = re.compile(r"^[A-Za-z0-9-]+$")


def canonical_ucloud_headers(headers: Mapping[str, str]) -> str:
    """Sorted `x-ucloud-*` headers as `name:value` lines. The Python SDK crashes on these, so in practice
    it is always empty; `X-Ufile-*` headers (meta, copy source) are never signed."""
    picked = {name.lower().strip(): value.strip() for name, value in headers.items()
              if name.lower().strip().startswith("x-ucloud-")}
    return "\n".join(f"{name}:{picked[name]}" for name in sorted(picked))


def listobjects_block(params: Mapping[str, str]) -> str:
    """The extra block the Python SDK appends when signing `?listobjects` (the Go SDK omits it)."""
    return (f"\nlistobjects\ndelimiter:{params.get('delimiter', '')}\nmarker:{params.get('marker', '')}"
            f"\nmax-keys:{params.get('max-keys', '')}\nprefix:{params.get('prefix', '')}")


def string_to_sign(method: str, bucket: str, key: str, *, content_md5: str = "", content_type: str = "",
                   date: str = "", ucloud_headers: Mapping[str, str] | None = None,
                   list_params: Mapping[str, str] | None = None) -> str:
    """The request StringToSign. `list_params` adds the listobjects block."""
    data = f"{method.upper()}\n{content_md5}\n{content_type}\n{date}\n"
    data += canonical_ucloud_headers(ucloud_headers or {})
    data += f"/{bucket}/{key}"
    if list_params is not None:
        data += listobjects_block(list_params)
    return data


def signature(private_key: str, data: str) -> str:
    digest = hmac.new(private_key.encode("utf-8"), data.encode("utf-8", "surrogatepass"), hashlib.sha1).digest()
    return base64.standard_b64encode(digest).decode("ascii")


def authorization(public_key: str, private_key: str, data: str) -> str:
    """The `Authorization` header value for a StringToSign."""
    return f"UCloud {public_key}:{signature(private_key, data)}"


def url_string_to_sign(method: str, bucket: str, key: str, expires: int, *, content_md5: str = "",
                       content_type: str = "") -> str:
    """StringToSign of a signed download (GET) or head (HEAD) URL."""
    return f"{method.upper()}\n{content_md5}\n{content_type}\n{int(expires)}\n/{bucket}/{key}"


def signed_url_query(public_key: str, private_key: str, method: str, bucket: str, key: str,
                     expires: int) -> str:
    """`UCloudPublicKey=..&Expires=..&Signature=..`, url-encoded (as the SDK's `download_file` sends it)."""
    sig = signature(private_key, url_string_to_sign(method, bucket, key, expires))
    return (f"UCloudPublicKey={quote(public_key, safe='')}&Expires={int(expires)}"
            f"&Signature={quote(sig, safe='')}")


def api_signature(params: Mapping[str, str], public_key: str, private_key: str) -> str:
    """Signature of a bucket-management API call; `params` excludes PublicKey and Signature."""
    merged = dict(params)
    merged["PublicKey"] = public_key
    text = "".join(f"{name}{merged[name]}" for name in sorted(merged)) + private_key
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def parse_authorization(value: str) -> tuple[str, str] | None:
    """(public_key, signature) of an `UCloud pub:sig` header, or None if it is not one. Split at the
    last ':' because a base64 signature never contains one."""
    if not value.startswith("UCloud "):
        return None
    pub, sep, sig = value[len("UCloud "):].rpartition(":")
    if not sep or not pub or not sig:
        return None
    return pub, sig


# ----------------------------------------------------------------------------------------------
# ETag


class EtagHasher:
    """Incremental UFile ETag (`ufile/util.py::file_etag`): SHA-1 of each 4 MiB block; one block → that
    SHA-1, more → SHA-1 of the concatenated block SHA-1s; prefixed by the block count as a 4-byte
    little-endian integer (`struct.pack('@I')` on x86), urlsafe base64. An empty input has 0 blocks:
    `AAAAAA==`."""

    def __init__(self, block: int = ETAG_BLOCK) -> None:
        self._block = block
        self._digests: list[bytes] = []
        self._current = hashlib.sha1()
        self._filled = 0
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        self.size += len(view)
        while len(view):
            take = min(len(view), self._block - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self._block:
                self._digests.append(self._current.digest())
                self._current = hashlib.sha1()
                self._filled = 0

    def block_digests(self) -> list[bytes]:
        """SHA-1 of every block so far, the partial last one included."""
        return self._digests + ([self._current.digest()] if self._filled else [])

    def etag(self) -> str:
        return etag_from_block_digests(self.block_digests())


def etag_from_block_digests(digests: list[bytes]) -> str:
    """The UFile ETag from the SHA-1 of each 4 MiB block, in order."""
    if len(digests) > 1:
        core = hashlib.sha1(b"".join(digests)).digest()
    else:
        core = b"".join(digests)
    return base64.urlsafe_b64encode(struct.pack("<I", len(digests)) + core).decode("ascii")


def etag_of(data: bytes) -> str:
    hasher = EtagHasher()
    hasher.update(data)
    return hasher.etag()


def etag_block_count(etag: str) -> int | None:
    """The block count encoded in a UFile ETag, or None if `etag` is not in that format (24 bytes).
    An MD5 hex string also decodes to 24 bytes, so those are ruled out first."""
    etag = etag.strip('"')
    if _HEX32.match(etag):
        return None
    try:
        raw = base64.urlsafe_b64decode(etag.encode("ascii"))
    except (ValueError, UnicodeError):
        return None
    if len(raw) != 24:
        return None
    return struct.unpack("<I", raw[:4])[0]


def blocks_for(size: int) -> int:
    return -(-size // ETAG_BLOCK)


# ----------------------------------------------------------------------------------------------
# Wire encodings


def encode_meta_value(value: str) -> str:
    """Header-safe form of a metadata value: printable ASCII as is, anything else RFC 2047 B-encoded."""
    if value.isascii() and value.isprintable() and value == value.strip() and not value.startswith("=?"):
        return value
    data = value.encode("utf-8", "surrogateescape")
    return "=?UTF-8?B?" + base64.b64encode(data).decode("ascii") + "?="


def decode_meta_value(value: str) -> str:
    if value[:10].upper() == "=?UTF-8?B?" and value.endswith("?="):
        try:
            return base64.b64decode(value[10:-2], validate=True).decode("utf-8", "surrogateescape")
        except (binascii.Error, ValueError):
            return value
    return value


def meta_headers(meta: Mapping[str, str]) -> dict[str, str]:
    headers = {}
    for name, value in meta.items():
        if not _META_NAME.match(name):
            raise InvalidArgument(f"ufile: metadata name {name!r} may only hold letters, digits and '-'")
        headers["X-Ufile-Meta-" + name.lower()] = encode_meta_value(str(value))
    return headers


def meta_from_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name[len(META_PREFIX):].lower(): decode_meta_value(value)
            for name, value in headers.items() if name.lower().startswith(META_PREFIX)}


def meta_from_listing(user_meta: Any) -> dict[str, str]:
    """`UserMeta` of a listobjects entry: names may come with or without the header prefix."""
    if not isinstance(user_meta, dict):
        return {}
    meta = {}
    for name, value in user_meta.items():
        name = str(name).lower()
        name = name.removeprefix(META_PREFIX)
        meta[name] = decode_meta_value(str(value))
    return meta


def quote_key(key: str) -> str:
    """Percent-encode a key for the request path. Dot segments are encoded so that no HTTP layer
    normalises `a/../b` away; the signature uses the raw key."""
    parts = []
    for segment in key.split("/"):
        if segment in (".", ".."):
            parts.append(segment.replace(".", "%2E"))
        else:
            parts.append(quote(segment, safe="~", encoding="utf-8", errors="surrogatepass"))
    return "/".join(parts)


def strip_etag(etag: str | None) -> str:
    return (etag or "").strip().strip('"')
