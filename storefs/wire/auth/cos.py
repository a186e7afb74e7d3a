"""Tencent COS v4 (JSON API) signatures, as pure functions.

Signature (`qcloud_cos/cos_auth.py::Auth.app_sign` of tencentyun/cos-python-sdk-v4):

    plain = "a=<appid>&k=<secret_id>&e=<expired>&t=<now>&r=<rand>&f=<fileid>&b=<bucket>"
    sign  = base64( HMAC-SHA1(secret_key, plain) [20 raw bytes] + plain )

- `sign_more`: multi-use, `e` = absolute unix expiry; `fileid` = "/<appid>/<bucket><quoted path>".
- `sign_once`: single-use (delete, update, move, copy), `e=0`, same fileid.
- `sign_download`: for the download host, `fileid` = the quoted path only.

Paths are quoted with `quote(utf8, safe='~/')` both in URLs and in `f=`.

Verifying signatures and the SDK's `uploadparts` serve only the emulator: tests/emulators/cos_auth_check.py.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from urllib.parse import quote


def quote_path(path: str) -> str:
    """Percent-encode a cos path ("/dir/file name") the way the SDK does for URLs and `f=`."""
    return quote(path.encode("utf-8"), safe="~/")


def fileid(appid: str, bucket: str, path: str) -> str:
    return f"/{appid}/{bucket}{quote_path(path)}"


def plaintext(appid: str, secret_id: str, expired: int, now: int, rand: int, file_id: str,
              bucket: str) -> str:
    return f"a={appid}&k={secret_id}&e={expired}&t={now}&r={rand}&f={file_id}&b={bucket}"


def sign_plain(secret_key: str, plain: str) -> str:
    digest = hmac.new(secret_key.encode("utf-8"), plain.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest + plain.encode("utf-8")).decode("ascii")


@dataclasses.dataclass(frozen=True)
class Credentials:
    appid: str
    secret_id: str
    secret_key: str = dataclasses.field(repr=False)

    def __repr__(self) -> str:  # never show the secret id/key in logs or tracebacks
        return f"Credentials(appid={self.appid!r}, secret_id=***, secret_key=***)"


class Signer:
    """Makes the three kinds of COS v4 signatures. `clock` and `rand` are injectable for test vectors."""

    def __init__(self, creds: Credentials, *, clock: Callable[[], float] = time.time,
                 rand: Callable[[], int] = lambda: secrets.randbelow(1_000_000_000)) -> None:
        self._creds = creds
        self._clock = clock
        self._rand = rand

    def __repr__(self) -> str:
        return f"Signer(appid={self._creds.appid!r})"

    def _sign(self, bucket: str, file_id: str, expired: int) -> str:
        c = self._creds
        plain = plaintext(c.appid, c.secret_id, expired, int(self._clock()), self._rand(), file_id, bucket)
        return sign_plain(c.secret_key, plain)

    def sign_more(self, bucket: str, path: str, expired: int) -> str:
        """Multi-use signature valid until the absolute unix time `expired`."""
        return self._sign(bucket, fileid(self._creds.appid, bucket, path), expired)

    def sign_once(self, bucket: str, path: str) -> str:
        """Single-use signature (e=0) bound to one path: delete, update, move, copy."""
        return self._sign(bucket, fileid(self._creds.appid, bucket, path), 0)

    def sign_download(self, bucket: str, path: str, expired: int) -> str:
        """Download-host signature: `f=` is the quoted path alone."""
        return self._sign(bucket, quote_path(path), expired)
