"""Checks of what COS v4 clients send, for the emulator (tests/emulators/cos.py) and the unit tests:
signatures taken apart and verified, and the `uploadparts` list of the vendor SDK.

`uploadparts` (`qcloud_cos/cos_common.py::Sha1Util.get_sha1_by_slice`): per slice, the SHA-1 *internal
state* after all bytes up to the slice end, its five 32-bit words each byte-swapped (packed little-endian,
read big-endian); the last slice carries the normal SHA-1 hex of the whole file. hashlib does not expose
the internal state, so a small pure-Python SHA-1 compression function lives here (storefs itself never
sends `uploadparts`). The signing side is storefs.wire.auth.cos.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import struct
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True)
class ParsedSign:
    """A decoded signature, for verifiers (the emulator): the HMAC, the plaintext and its fields."""

    digest: bytes
    plain: str
    appid: str       # a=
    secret_id: str   # k=
    expired: int     # e=: absolute expiry, 0 for a single-use sign
    now: int         # t=
    file_id: str     # f=
    bucket: str      # b=


def parse_sign(sign: str) -> ParsedSign:
    """Split a signature into its HMAC and plaintext. ValueError if it is not one."""
    try:
        raw = base64.b64decode(sign.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("signature is not base64") from exc
    if len(raw) <= 20:
        raise ValueError("signature too short")
    try:
        plain = raw[20:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("signature plaintext is not UTF-8") from exc
    fields: dict = {}
    for item in plain.split("&"):
        name, sep, value = item.partition("=")
        if not sep or name in fields:
            raise ValueError("malformed signature plaintext")
        fields[name] = value
    for name in ("a", "k", "e", "t", "r", "f", "b"):
        if name not in fields:
            raise ValueError(f"signature lacks {name}=")
    for name in ("e", "t", "r"):
        if not fields[name].isdigit():
            raise ValueError(f"signature field {name}= is not a number")
    return ParsedSign(raw[:20], plain, appid=fields["a"], secret_id=fields["k"], expired=int(fields["e"]),
                      now=int(fields["t"]), file_id=fields["f"], bucket=fields["b"])


def verify_hmac(parsed: ParsedSign, secret_key: str) -> bool:
    expected = hmac.new(secret_key.encode("utf-8"), parsed.plain.encode("utf-8"), hashlib.sha1).digest()
    return hmac.compare_digest(expected, parsed.digest)


# -----------------------------------------------------------------------------------------------
# SHA-1 internal state for `uploadparts`

_SHA1_INIT = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0)
_MASK = 0xFFFFFFFF


def _compress(state: tuple[int, int, int, int, int], block: bytes) -> tuple[int, int, int, int, int]:
    """One SHA-1 compression step (FIPS 180-4 §6.1.2) over a 64-byte block."""
    w = list(struct.unpack(">16I", block))
    for i in range(16, 80):
        x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]
        w.append(((x << 1) | (x >> 31)) & _MASK)
    a, b, c, d, e = state
    for i in range(80):
        if i < 20:
            f, k = (b & c) | (~b & d), 0x5A827999
        elif i < 40:
            f, k = b ^ c ^ d, 0x6ED9EBA1
        elif i < 60:
            f, k = (b & c) | (b & d) | (c & d), 0x8F1BBCDC
        else:
            f, k = b ^ c ^ d, 0xCA62C1D6
        a, b, c, d, e = ((((a << 5) | (a >> 27)) + f + e + k + w[i]) & _MASK, a,
                         ((b << 30) | (b >> 2)) & _MASK, c, d)
    h0, h1, h2, h3, h4 = state
    return ((h0 + a) & _MASK, (h1 + b) & _MASK, (h2 + c) & _MASK, (h3 + d) & _MASK, (h4 + e) & _MASK)


class Sha1State:
    """SHA-1 whose internal state can be read between blocks (slow, pure Python: small data only)."""

    def __init__(self) -> None:
        self._h = _SHA1_INIT
        self._pending = b""
        self._length = 0
        self._md = hashlib.sha1()  # the real digest, computed fast in parallel

    def update(self, data: bytes) -> None:
        self._md.update(data)
        self._length += len(data)
        buf = self._pending + data
        usable = len(buf) - len(buf) % 64
        h = self._h
        for pos in range(0, usable, 64):
            h = _compress(h, buf[pos: pos + 64])
        self._h = h
        self._pending = buf[usable:]

    def inner_hex(self) -> str:
        """The state words byte-swapped, as cos_common.py prints them. Meaningful at 64-byte boundaries."""
        if self._pending:
            raise ValueError("uploadparts needs slices that are multiples of 64 bytes")
        return "".join(f"{word:08x}" for word in struct.unpack(">5I", struct.pack("<5I", *self._h)))

    def hexdigest(self) -> str:
        return self._md.hexdigest()


def uploadparts(slices: Iterable[bytes]) -> list[dict]:
    """The `uploadparts` list the vendor SDK sends with upload_slice_init (enable_sha1)."""
    state = Sha1State()
    parts: list[dict] = []
    offset = 0
    for data in slices:
        if parts:  # the previous slice was not the last: it carries the internal state
            parts[-1]["datasha"] = state.inner_hex()
        state.update(data)
        parts.append({"offset": offset, "datalen": len(data), "datasha": ""})
        offset += len(data)
    if parts:
        parts[-1]["datasha"] = state.hexdigest()
    return parts
