"""COS v4 on the wire: which request each API call is, its signature, and what its answer means.

- API:      <api_base>/files/v2/<appid>/<bucket><quoted cos path>, signed in `Authorization` with a
  multi-use sign (sign_more) or, for delete/update/move/copy, a single-use one (sign_once).
- Download: https://<bucket>-<appid>.cos<region>.myqcloud.com<quoted path>?sign=<sign_download> (the
  SDK's `download_hostname`; https unless download_scheme says http); with a download base set
  (download_endpoint, or an emulator's endpoint), the bucket host goes in the Host header instead.
- Replies are JSON `{"code": 0|<negative>, "message", "data", "request_id"}`. An answer of status >= 300
  is decoded by `decode_error` (the WireClient's hook); a 200 may still carry an error code, which
  `parse_reply` maps the same way. Codes become storefs errors in one place, `_error_for`.
- Form posts are multipart/form-data in which every field is a file part named after itself
  (`filename="op"`), exactly what the SDK's `requests.post(files=...)` sends.
"""
from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlencode

from ...errors import (
    AccessDenied,
    AlreadyExists,
    InvalidArgument,
    NotEmpty,
    NotFound,
    ProtocolError,
    RemoteChanged,
    StoreError,
    Throttled,
    Transient,
)
from ...wire.answer import Answer
from ...wire.auth.cos import Signer as CosSigner, quote_path
from ...wire.body import EMPTY, Body
from ...wire.client import Request, Signer, WireClient
from ...wire.ranges import RangeRead
from .config import LIST_NUM_MAX, CosConfig

USER_AGENT = "storefs-cos-v4"

# ----------------------------------------------------------------------------------------------
# Errors: the one place where COS v4 codes become storefs errors

_NOT_FOUND = {-197, -166, -133, -4017}  # -4017: upload session unknown/expired (emulator's code)
_EXISTS = {-177, -178, -176}
_THROTTLED = {-71, -143}  # -143: "writing too fast on a single dir" (clients retry it like -71)
_AUTH = {-47, -48, -59, -61, -63, -70, -96, -97}
_BACKEND = {-181, -195, -196, -5997, -4016}  # -4016 sha mismatch: the body was damaged in transit
_BAD_REQUEST = {-5999, -5965, -175, -284, -170, -165, -180, -4019, -4020, -29094}


def _error_for(code: int, message: str, status: int, request_id: str, what: str) -> StoreError:
    detail = f"code={code} message={message!r} http={status} request_id={request_id}"
    text = f"{what}: COS error {code} ({message})"
    if code in _NOT_FOUND:
        cls: type[StoreError] = NotFound
    elif code in _EXISTS:
        cls = AlreadyExists
    elif code == -173:
        cls = NotEmpty
    elif code in _THROTTLED:
        cls = Throttled
    elif code in _AUTH:
        cls = AccessDenied
    elif code in _BACKEND:
        cls = Transient
    elif code in _BAD_REQUEST:
        cls = InvalidArgument
    else:
        cls = _class_for_status(status)
    return cls(text, detail=detail, code=str(code))


def _class_for_status(status: int) -> type[StoreError]:
    if status == 404:
        return NotFound
    if status in (401, 403):
        return AccessDenied
    if status == 409:
        return AlreadyExists
    if status == 412:
        return RemoteChanged
    if status in (429, 503):
        return Throttled
    if status >= 500:
        return Transient
    if status >= 400:
        return InvalidArgument
    return ProtocolError


def _reply_code(answer: Answer, what: str) -> tuple[dict, int] | None:
    """(the reply, its code) of a COS JSON reply; None when the body is no COS JSON."""
    try:
        doc = json.loads(answer.content) if answer.content else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or "code" not in doc:
        return None
    try:
        return doc, int(doc["code"])
    except (TypeError, ValueError):
        raise ProtocolError(f"{what}: bad code in reply", detail=str(doc.get("code"))[:100]) from None


def _coded_error(doc: dict, code: int, status: int, what: str) -> StoreError:
    return _error_for(code, str(doc.get("message", "")), status, str(doc.get("request_id", "")), what)


def decode_error(answer: Answer, what: str) -> StoreError:
    """The WireClient's error hook: the StoreError an answer of status >= 300 stands for."""
    try:
        reply = _reply_code(answer, what)
    except ProtocolError as exc:
        return exc
    if reply is None:
        detail = answer.content[:200].decode("utf-8", "replace")
        return _class_for_status(answer.status)(f"{what}: HTTP {answer.status}", detail=detail)
    doc, code = reply
    if code != 0:
        return _coded_error(doc, code, answer.status, what)
    return ProtocolError(f"{what}: code 0 with HTTP {answer.status}")


def parse_reply(answer: Answer, what: str) -> dict:
    """The `data` of a successful (2xx) API reply, whose code may still say it failed: raised then."""
    reply = _reply_code(answer, what)
    if reply is None:
        raise ProtocolError(f"{what}: reply is not COS JSON", detail=answer.content[:200].decode("utf-8", "replace"))
    doc, code = reply
    if code != 0:
        raise _coded_error(doc, code, answer.status, what)
    data = doc.get("data")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProtocolError(f"{what}: `data` is not an object")
    return data


def to_number(value: object, what: str, default: float | None = None) -> float:
    """A number of a reply (they come as numbers or strings); ProtocolError when it is none."""
    if value is None or value == "":
        if default is not None:
            return default
        raise ProtocolError(f"{what}: missing number")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ProtocolError(f"{what}: not a number: {str(value)[:40]!r}") from None


def encode_form(fields: list[tuple[str, bytes | str]]) -> tuple[bytes, str]:
    """multipart/form-data where every field is a file part named after itself (the SDK's shape)."""
    boundary = secrets.token_hex(16)
    chunks: list[bytes] = []
    for name, value in fields:
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                      f'filename="{name}"\r\n\r\n'.encode())
        chunks.append(value if isinstance(value, bytes) else value.encode("utf-8"))
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


# ----------------------------------------------------------------------------------------------
# The requests of one account


# What a retried call does with the (not transient) error of a later try: a dict is the reply of an
# earlier try whose answer was lost but which did succeed; None lets the error stand.
Recovery = Callable[[StoreError], dict | None]


class CosApi:
    """One COS v4 account's requests, shared by its buckets and safe to use from many threads.
    `page_cap` is the largest list page the server takes (lowered once on an older server)."""

    def __init__(self, remote: str, config: CosConfig) -> None:
        self.config = config
        self.client = WireClient(remote, config.http, config.retry, decode_error, user_agent=USER_AGENT)
        self._signer = CosSigner(config.creds)
        self.page_cap = LIST_NUM_MAX

    def close(self) -> None:
        self.client.close()

    def _api_signer(self, bucket: str, cos_path: str, once: bool) -> Signer:
        def sign(request: Request) -> None:
            # Signed per try: a single-use sign cannot be sent twice, a multi-use one must be fresh.
            request.headers["Authorization"] = (
                self._signer.sign_once(bucket, cos_path) if once else
                self._signer.sign_more(bucket, cos_path, int(time.time()) + self.config.sign_expire))
        return sign

    def call(self, bucket: str, method: str, cos_path: str, what: str, *, once: bool = False,
             params: dict[str, str] | None = None, form: list[tuple[str, bytes | str]] | None = None,
             json_body: dict | None = None, recover: Recovery | None = None) -> dict:
        """One API request, retried as one; the `data` of its reply."""
        # identity: replies are small JSON and bodies binary slices (the SDK sends no gzip either).
        headers = {"Accept-Encoding": "identity"}
        if self.config.api_host:  # connected to an endpoint that is not the API host itself
            headers["Host"] = self.config.api_host
        body = EMPTY
        if form is not None:
            data, headers["Content-Type"] = encode_form(form)
            body = Body(data=data)
        elif json_body is not None:
            body = Body(data=json.dumps(json_body).encode())
            headers["Content-Type"] = "application/json"
        path = f"/files/v2/{self.config.creds.appid}/{bucket}{quote_path(cos_path)}"
        request = Request(method, self.config.api_base, path, urlencode(params or {}), headers, body, what)
        one_try = self.client.attempt(request, sign=self._api_signer(bucket, cos_path, once))
        tries = 0

        def attempt() -> dict:
            nonlocal tries
            tries += 1
            try:
                return parse_reply(one_try(), what)
            except StoreError as exc:
                # A retried request may find its own earlier, unanswered success.
                if tries > 1 and recover is not None and not isinstance(exc, Transient):
                    recovered = recover(exc)
                    if recovered is not None:
                        return recovered
                raise

        return self.client.retried(attempt, what)

    def download_request(self, bucket: str, cos_path: str, what: str) -> Request:
        """The unsigned GET of a file on its bucket's download host (see CosConfig.download_url)."""
        base, host = self.config.download_url(bucket)
        return Request("GET", base, quote_path(cos_path), headers={"Host": host}, what=what)

    def download(self, bucket: str, cos_path: str, start: int, end: int, what: str) -> RangeRead:
        """Bytes [start, end) of a file from the download host. No If-Match on the wire: the download
        host's own ETag need not be the v4 `sha` used as etag (it may be an MD5), and a server honouring
        If-Match would then refuse every read; the caller checks the ETag instead."""
        cfg = self.config
        request = self.download_request(bucket, cos_path, what)

        def sign(signed: Request) -> None:
            # The SDK appends the base64 sign unencoded; '+', '/' and '=' are legal in a query.
            signed.query = "sign=" + self._signer.sign_download(bucket, cos_path, int(time.time()) + cfg.sign_expire)

        return self.client.read_range(request, start, end, sign=sign)
