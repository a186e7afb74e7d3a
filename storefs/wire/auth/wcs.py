"""Wangsu/CDNetworks WCS ("restV1") signing and hashing, as the vendor SDK does it.

Pure functions, no I/O. Facts (see shared/PROTOCOLS.md §3.4–3.5, checked against wcs-python3-sdk 5.0.36
`wcs/commons/auth.py` and `util.py`, and against the Java/Go SDKs of Wangsu-Cloud-Storage):

- Upload token: `AK:urlsafe_b64(hex(HMAC-SHA1(SK, encodedPolicy))):encodedPolicy` where
  `encodedPolicy = urlsafe_b64(json.dumps(policy))` with json's default separators. The signature is the
  base64 of the 40-character *hex string*, not of the raw digest (a quirk every WCS SDK shares).
- Management token: `AK:urlsafe_b64(hex(HMAC-SHA1(SK, signingStr)))` with
  `signingStr = path + ("?" + query if query) + "\\n" + (body if body)`, path and query exactly as sent.
- EncodedEntryURI: `urlsafe_b64("<bucket>:<key>")`, `=` padding kept.
- ETag: 4 MiB blocks, SHA-1 each; one block → `0x16 || sha1`, more → `0x96 || sha1(concat(sha1s))`,
  urlsafe base64 (the Qiniu "qetag").
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping

ETAG_BLOCK = 4 * 1024 * 1024


def urlsafe_b64(data: bytes | str) -> str:
    """URL-safe base64 with `=` padding kept (as `base64.urlsafe_b64encode`, which the SDK uses)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.urlsafe_b64encode(data).decode("ascii")


def urlsafe_b64decode(text: str) -> bytes:
    """Inverse of `urlsafe_b64`, tolerant of missing padding. Raises ValueError on garbage."""
    text = text.strip()
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.urlsafe_b64decode(padded.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"not URL-safe base64: {exc}") from None


def encoded_entry(bucket: str, key: str | None = None) -> str:
    """EncodedEntryURI: `urlsafe_b64("bucket:key")`, or of the bare bucket name when key is None."""
    return urlsafe_b64(bucket if key is None else f"{bucket}:{key}")


def _hex_sign(secret_key: str, message: bytes) -> str:
    digest = hmac.new(secret_key.encode("utf-8"), message, hashlib.sha1).hexdigest()
    return urlsafe_b64(digest)


def upload_policy(bucket: str, key: str | None, deadline_ms: int, *, overwrite: bool = True,
                  extra: Mapping[str, object] | None = None) -> dict:
    """A put policy. `deadline_ms` is an absolute unix time in milliseconds (docs; the SDK converts its
    "seconds from now" setting into this). overwrite=1 is needed to replace an existing key: the
    service's default is 0, "do not overwrite" (docs "Upload Credential")."""
    policy: dict = {"scope": bucket if key is None else f"{bucket}:{key}", "deadline": int(deadline_ms)}
    if overwrite:
        policy["overwrite"] = 1
    if extra:
        policy.update(extra)
    return policy


def upload_token(access_key: str, secret_key: str, policy: Mapping[str, object]) -> str:
    """`AK:sign:encodedPolicy` for a put policy (dict order is kept, as json.dumps keeps it)."""
    encoded_policy = urlsafe_b64(json.dumps(dict(policy)))
    return f"{access_key}:{_hex_sign(secret_key, encoded_policy.encode('ascii'))}:{encoded_policy}"


def management_token(access_key: str, secret_key: str, path_and_query: str,
                     body: bytes | str | None = None) -> str:
    """The `Authorization` value of a management request. `path_and_query` is the request target as
    sent on the wire (e.g. `/list?bucket=b&limit=1000`), without scheme and host."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    message = path_and_query.encode("utf-8") + b"\n" + (body or b"")
    return f"{access_key}:{_hex_sign(secret_key, message)}"


class EtagBuilder:
    """Incremental WCS ETag over a byte stream fed in arbitrary pieces."""

    def __init__(self) -> None:
        self._digests: list[bytes] = []
        self._current = hashlib.sha1()
        self._filled = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while len(view):
            take = min(ETAG_BLOCK - self._filled, len(view))
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == ETAG_BLOCK:
                self._digests.append(self._current.digest())
                self._current = hashlib.sha1()
                self._filled = 0

    def result(self) -> str:
        digests = list(self._digests)
        if self._filled or not digests:
            digests.append(self._current.digest())
        if len(digests) == 1:
            return urlsafe_b64(b"\x16" + digests[0])
        return urlsafe_b64(b"\x96" + hashlib.sha1(b"".join(digests)).digest())


def etag_bytes(data: bytes) -> str:
    builder = EtagBuilder()
    builder.update(data)
    return builder.result()
