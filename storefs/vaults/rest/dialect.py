"""What CAS and Glacier do differently (a `Dialect`), and the one translation of their error answers
into StoreErrors: the JSON `{code|__type, message, type}` body first, then the dialect's per-server
quirks that only a status can reveal (moto answers 500 for a missing job), then the status."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from ...errors import (
    AccessDenied,
    ArchiveNotReady,
    InvalidArgument,
    NotEmpty,
    NotFound,
    NotPermitted,
    NotSupported,
    StoreError,
    Throttled,
    Transient,
)
from ...wire.answer import Answer
from ..base import TreeHashMismatch, VaultCapabilities


class Dialect:
    """What CAS and Glacier do differently. Subclasses set the attributes and implement sign()."""

    name = "rest"
    header_prefix = "x-amz-"
    request_id_header = "x-amzn-requestid"
    resource_field = "VaultARN"
    extra_headers: Mapping[str, str] = {}
    capabilities = VaultCapabilities()
    # (operation, HTTP status) -> error class, for answers without a JSON error code.
    error_overrides: Mapping[tuple[str, int], type[StoreError]] = {}
    # Whether an inventory job may carry a Tier (the APIs document Tier for retrievals only; moto
    # honours it for inventories, which is how its tests stay at 2 s).
    inventory_tier = False

    def sign(self, method: str, host: str, wire_path: str, params: Sequence[tuple[str, str]],
             headers: Mapping[str, str], payload_hash: str) -> dict[str, str]:
        """Headers to add (Authorization, dates …) to a request that sends exactly `headers`."""
        raise NotImplementedError

    def quirk_statuses(self, op: str) -> frozenset[int]:
        """The statuses whose code-less answers to `op` mean something only this dialect knows (the
        requests of `op` take them as answers and decode them with the op in hand)."""
        return frozenset(status for (quirk_op, status) in self.error_overrides if quirk_op == op)

    def h(self, name: str) -> str:
        """A protocol header name: h("archive-id") -> x-cas-archive-id / x-amz-archive-id."""
        return self.header_prefix + name


# -- errors -----------------------------------------------------------------------------------------

_CODE_ERRORS: dict[str, type[StoreError]] = {
    "ResourceNotFoundException": NotFound, "VaultNotFound": NotFound, "NoSuchVault": NotFound,
    "AccessDeniedException": AccessDenied, "AccessDenied": AccessDenied,
    "ExpiredTokenException": AccessDenied, "ExpiredToken": AccessDenied,
    "InvalidSignatureException": AccessDenied, "SignatureDoesNotMatch": AccessDenied,
    "MissingAuthenticationTokenException": AccessDenied, "UnrecognizedClientException": AccessDenied,
    "InvalidClientTokenId": AccessDenied, "IncompleteSignature": AccessDenied,
    "PolicyEnforcedException": AccessDenied,
    "ThrottlingException": Throttled, "Throttling": Throttled, "ServiceUnavailableException": Throttled,
    "ServiceUnavailable": Throttled, "InsufficientCapacityException": Throttled,
    "RequestTimeoutException": Transient, "RequestTimeout": Transient, "InternalFailure": Transient,
    "InternalError": Transient, "InternalServerError": Transient,
    "InvalidDigest": Transient,  # the CAS SDK retries it for parts
    "InvalidParameterValueException": InvalidArgument, "MissingParameterValueException": InvalidArgument,
    "BadRequest": InvalidArgument, "SerializationException": InvalidArgument,
    "LimitExceededException": NotPermitted,  # a vault or account quota: retrying does not help
}

_STATUS_ERRORS: dict[int, type[StoreError]] = {
    400: InvalidArgument, 401: AccessDenied, 403: AccessDenied, 404: NotFound, 405: NotSupported,
    408: Transient, 429: Throttled, 500: Transient, 501: NotSupported, 502: Transient, 503: Throttled,
    504: Transient,
}


def error_from_answer(dialect: Dialect, status: int, headers: Mapping[str, str], body: bytes, *,
                      what: str, op: str) -> StoreError:
    """The one translation of an error answer into a StoreError: code first, then quirks, then status."""
    code = message = ""
    try:
        doc = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError):
        doc = None  # a proxy's HTML page, moto's Werkzeug 500: the status says enough
    if isinstance(doc, dict):
        code = str(doc.get("code") or doc.get("__type") or doc.get("Code") or "")
        message = str(doc.get("message") or doc.get("Message") or "")
    code = code or headers.get("x-amzn-errortype", "")
    code = code.rsplit("#", 1)[-1].split(":", 1)[0].strip()  # "com.amazon…#Name" and "Name:http…" forms
    cls = _CODE_ERRORS.get(code) if code else None
    lowered = message.lower()
    if code == "InvalidParameterValueException":
        if "not currently available" in lowered or "not yet" in lowered or "inprogress" in lowered:
            cls = ArchiveNotReady
        elif "checksum" in lowered or "tree hash" in lowered:
            cls = TreeHashMismatch
        elif "not empty" in lowered:
            cls = NotEmpty
    if cls is None and not code:
        cls = dialect.error_overrides.get((op, status))
    if cls is None:
        cls = _STATUS_ERRORS.get(status) or (Transient if status >= 500 else StoreError)
    label = code or f"HTTP {status}"
    text = f"{what}: {label}" + (f": {message[:300]}" if message else "")
    request_id = headers.get(dialect.request_id_header, "")
    return cls(text, detail=f"status={status} code={code} message={message[:500]} request_id={request_id}",
               code=code)


def decode_answer(dialect: Dialect, answer: Answer, what: str, op: str = "") -> StoreError:
    """error_from_answer() of a wire answer."""
    return error_from_answer(dialect, answer.status, answer.headers, answer.content, what=what, op=op)
