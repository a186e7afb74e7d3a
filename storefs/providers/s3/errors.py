"""The one translation of an S3 error answer into a StoreError: the WireClient's error hook for every
S3 request. The S3 error code decides first (it is kept in StoreError.code), then the status."""
from __future__ import annotations

from ...errors import (AccessDenied, ArchiveNotReady, InvalidArgument, NameTooLong, NotFound, NotSupported,
                      PreconditionFailed, ProtocolError, StoreError, Throttled, Transient)
from ...wire.answer import Answer
from .xml import child_text, parse_xml

_CODE_ERRORS: dict[str, type[StoreError]] = {
    "NoSuchKey": NotFound, "NoSuchUpload": NotFound, "NoSuchVersion": NotFound, "NoSuchBucket": NotFound,
    "AccessDenied": AccessDenied, "InvalidAccessKeyId": AccessDenied, "SignatureDoesNotMatch": AccessDenied,
    "AllAccessDisabled": AccessDenied, "AccountProblem": AccessDenied, "ExpiredToken": AccessDenied,
    "InvalidToken": AccessDenied, "TokenRefreshRequired": AccessDenied, "RequestTimeTooSkewed": AccessDenied,
    "AuthorizationHeaderMalformed": AccessDenied, "InvalidSecurity": AccessDenied,
    "MissingSecurityHeader": AccessDenied, "RequestIsNotMultiPartContent": InvalidArgument,
    "SlowDown": Throttled, "ServiceUnavailable": Throttled, "Throttling": Throttled,
    "TooManyRequests": Throttled, "RequestLimitExceeded": Throttled,
    "InternalError": Transient, "RequestTimeout": Transient, "OperationAborted": Transient,
    "BadGateway": Transient, "GatewayTimeout": Transient,
    "InvalidObjectState": ArchiveNotReady,
    "ObjectNotInActiveTierError": ArchiveNotReady,  # CopyObject of an archived, unrestored source
    "PreconditionFailed": PreconditionFailed,
    # A conditional write met another in flight on the same key: AWS says to send it again.
    "ConditionalRequestConflict": Transient,
    "NotImplemented": NotSupported, "MethodNotAllowed": NotSupported,
    "KeyTooLongError": NameTooLong,
    "InvalidArgument": InvalidArgument, "InvalidRequest": InvalidArgument, "EntityTooSmall": InvalidArgument,
    "EntityTooLarge": InvalidArgument, "InvalidPart": InvalidArgument, "InvalidPartOrder": InvalidArgument,
    "MetadataTooLarge": InvalidArgument, "InvalidStorageClass": InvalidArgument,
    "InvalidDigest": Transient, "BadDigest": Transient, "IncompleteBody": Transient,
    "XAmzContentSHA256Mismatch": Transient,
}

_STATUS_ERRORS: dict[int, type[StoreError]] = {
    400: InvalidArgument, 403: AccessDenied, 404: NotFound, 405: NotSupported, 408: Transient,
    412: PreconditionFailed, 429: Throttled, 500: Transient, 501: NotSupported, 502: Transient, 503: Throttled,
    504: Transient,
}


def error_from_response(answer: Answer, what: str) -> StoreError:
    """The StoreError for an S3 error answer (status >= 300, or a 200 carrying an <Error> document,
    passed here as a 500). `what` names the call in the message."""
    code = message = request_id = bucket = ""
    if answer.content:
        try:
            root = parse_xml(answer.content, what)
            if root.tag == "Error":
                code = child_text(root, "Code", "") or ""
                message = child_text(root, "Message", "") or ""
                request_id = child_text(root, "RequestId", "") or ""
                bucket = child_text(root, "BucketName", "") or ""
        except ProtocolError:
            pass  # the status still says enough; a proxy's HTML error page lands here
    status, headers = answer.status, answer.headers
    request_id = request_id or headers.get("x-amz-request-id") or ""
    cls = _CODE_ERRORS.get(code) or _STATUS_ERRORS.get(status)
    if cls is None:
        cls = Transient if status >= 500 else StoreError
    label = code or f"HTTP {status}"
    text = f"{what}: {label}"
    if message:
        text += f": {message[:300]}"
    if code == "NoSuchBucket" or (code == "" and status == 404 and what.startswith("bucket ")):
        # The error hook serves every bucket of the endpoint: the name comes from the answer.
        text = f"{what}: bucket {bucket!r} does not exist ({label})" if bucket else \
            f"{what}: the bucket does not exist ({label})"
    elif cls is ArchiveNotReady:
        text = f"{what}: object is in an archive storage class and not restored ({label})"
    elif status in (301, 307) or code in ("PermanentRedirect", "TemporaryRedirect"):
        endpoint = headers.get("x-amz-bucket-region") or ""
        text = f"{what}: the bucket lives at another endpoint/region {endpoint!r} ({label})"
    detail = f"status={status} code={code} message={message[:500]} request_id={request_id}"
    return cls(text, detail=detail, code=code)
