"""WCS (restV1) on the wire: which request each call is, the token it carries, and what its answer means.

Three domains: uploads (`put_url`, an upload token in the form or in `Authorization`), management
(`mgr_url`, a management token over the path and query as sent, any path prefix of the domain included)
and downloads (`get_url`, unsigned). Error answers are decoded once, by `decode_error` (the WireClient's
hook), through `map_error`.
"""
from __future__ import annotations

import json
import time
from urllib.parse import quote, urlsplit

from ...errors import (
    AccessDenied,
    AlreadyExists,
    InvalidArgument,
    NotFound,
    NotSupported,
    ProtocolError,
    StoreError,
    Throttled,
    Transient,
)
from ...wire.answer import Answer
from ...wire.auth import wcs as wcs_auth
from ...wire.body import Body
from ...wire.client import Request, Signer, WireClient
from ...wire.ranges import RangeRead
from .config import WcsConfig


class ContextExpired(StoreError):
    """WCS 701: a block context (ctx) is invalid or expired. The block must be uploaded again."""


def _error_fields(body: bytes) -> tuple[int | None, str]:
    try:
        obj = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return None, body[:200].decode("utf-8", "replace")
    if not isinstance(obj, dict):
        return None, str(obj)[:200]
    code = obj.get("code")
    try:
        number = int(code) if code is not None else None
    except (TypeError, ValueError):
        number = None
    return number, str(obj.get("message") or obj.get("error") or "")[:500]


def map_error(status: int, body: bytes, what: str) -> StoreError:
    """The one translation of a WCS error answer into the storefs error classes."""
    code, message = _error_fields(body)
    detail = f"HTTP {status}, code {code if code is not None else '-'}: {message}"
    codes = {status} | ({code} if code is not None else set())
    text = f"{what}: {message or 'HTTP ' + str(status)}"
    if codes & {401, 403}:
        return AccessDenied(f"{what}: access denied ({message or status})", detail=detail)
    if codes & {404, 612, 631}:
        return NotFound(text, detail=detail)
    if 614 in codes:
        return AlreadyExists(text, detail=detail)
    if codes & {429, 503, 509}:
        return Throttled(text, detail=detail)
    if 701 in codes:
        return ContextExpired(text, detail=detail)
    if status == 408 or status >= 500:
        return Transient(text, detail=detail)
    if status == 400:
        return InvalidArgument(text, detail=detail)
    return StoreError(text, detail=detail)


def decode_error(answer: Answer, what: str) -> StoreError:
    """The WireClient's error hook."""
    return map_error(answer.status, answer.content, what)


def json_object(answer: Answer, what: str) -> dict:
    """The JSON object a reply must be."""
    try:
        obj = json.loads(answer.content.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(f"{what}: reply is not JSON",
                            detail=answer.content[:200].decode("utf-8", "replace")) from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what}: reply is not a JSON object", detail=str(obj)[:200])
    return obj


def to_int(value: object, what: str) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ProtocolError(f"{what}: bad number {value!r}") from None


def _origin_and_prefix(url: str) -> tuple[str, str]:
    """`scheme://host[:port]` and the path prefix of a domain URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}", parts.path


class WcsApi:
    """One WCS account's requests, shared by its buckets and safe to use from many threads.
    `bput_size`: the chunk size inside a block."""

    def __init__(self, remote: str, config: WcsConfig) -> None:
        self.remote = remote
        self.config = config
        self.client = WireClient(remote, config.http, config.retry, decode_error)
        self.bput_size = config.bput_size
        self._put = _origin_and_prefix(config.put_url)
        self._mgr = _origin_and_prefix(config.mgr_url)

    def close(self) -> None:
        self.client.close()

    # -- tokens

    def upload_token(self, bucket: str, key: str, *, overwrite: bool = True) -> str:
        """overwrite=False: the policy says `overwrite: 0` (don't overwrite), the server's create-only form."""
        deadline_ms = int(time.time() * 1000) + self.config.token_deadline * 1000
        policy = wcs_auth.upload_policy(bucket, key, deadline_ms, overwrite=overwrite,
                                        extra=None if overwrite else {"overwrite": 0})
        return wcs_auth.upload_token(self.config.access_key, self.config.secret_key, policy)

    def _sign_management(self, request: Request) -> None:
        request.headers["Authorization"] = wcs_auth.management_token(
            self.config.access_key, self.config.secret_key, request.target, request.body.data)

    def _upload_token_header(self, bucket: str, key: str, overwrite: bool) -> Signer:
        def sign(request: Request) -> None:
            request.headers["Authorization"] = self.upload_token(bucket, key, overwrite=overwrite)
        return sign

    # -- requests

    def mgr(self, method: str, path_and_query: str, *, what: str) -> dict:
        """A management request (no body), signed afresh on each try; its JSON reply."""
        path, _, query = path_and_query.partition("?")
        origin, prefix = self._mgr
        request = Request(method, origin, prefix + path, query, what=what)
        return json_object(self.client.call(request, sign=self._sign_management), what)

    def upload_form(self, path: str, headers: dict[str, str], sign: Signer, what: str) -> Answer:
        """A form upload retried as one; `sign` puts the form, with a fresh upload token, in the body."""
        origin, prefix = self._put
        return self.client.call(Request("POST", origin, prefix + path, headers=headers, what=what), sign=sign)

    def upload_once(self, bucket: str, key: str, path: str, headers: dict[str, str], data: bytes,
                    what: str, *, overwrite: bool = True) -> dict:
        """One try of an upload-domain POST with the upload token in `Authorization`: the block calls
        chain (a ctx from each reply), so the caller retries the whole chain."""
        origin, prefix = self._put
        request = Request("POST", origin, prefix + path, headers=headers, body=Body(data=data), what=what)
        return json_object(self.client.attempt(request, sign=self._upload_token_header(bucket, key, overwrite))(), what)

    def download(self, bucket: str, key: str, start: int, end: int, if_match: str | None) -> RangeRead:
        """Bytes [start, end) of an object from the download domain (unsigned)."""
        if not self.config.get_url:
            raise NotSupported(f"[{self.remote}] reading needs get_url (the bucket's download domain; this "
                               "remote says get_url = none): WCS serves file contents only from a download domain")
        origin, prefix = _origin_and_prefix(self.config.get_url.replace("{bucket}", bucket))
        request = Request("GET", origin, prefix + "/" + quote(key, safe="/~"), what=f"read {key}")
        return self.client.read_range(request, start, end, if_match=if_match)
