"""S3's wire mapping: where a bucket or key is addressed, what every S3 request carries, and the one
WireClient (with the fast transport) that signs, sends, decodes and retries all of them.

What every request carries: `Host` as signed (the bucket's virtual host, or the endpoint), SigV4 over
the body's SHA-256 (UNSIGNED-PAYLOAD for a stream), `Accept-Encoding: identity` (the bytes of an
object are the bytes of the file, even for objects stored with `Content-Encoding: gzip`) and
`User-Agent: storefs/<version>`.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

from ... import __version__
from ...errors import InvalidArgument
from ...wire.answer import Answer
from ...store.conditions import ProbedOnce
from ...wire.auth.sigv4 import SigV4Signer, build_query, encode_path
from ...wire.body import EMPTY, Body
from ...wire.client import Request, WireClient
from ...wire.retry import RetryPolicy
from .config import S3Options
from .errors import error_from_response
from .xml import parse_xml


class S3Client:
    """One endpoint's requests, shared by its buckets and safe to use from many threads (the signer
    caches its derived key under a lock; nothing else is mutable after construction)."""

    def __init__(self, remote: str, options: Mapping[str, str]) -> None:
        self.remote = remote
        self.options = S3Options.parse(remote, options)
        opts = self.options
        self.signer = SigV4Signer(opts.access_key, opts.secret_key, opts.region, "s3",
                                  session_token=opts.session_token or None,
                                  unsigned_regions_over_http=opts.unsigned_payload == "always")
        self.wire = WireClient(remote, opts.settings, opts.retry, error_from_response,
                               sign=self.signer.sign_request, user_agent=f"storefs/{__version__}", fast=True)
        # Which conditional writes the endpoint enforces: probed once, shared by the remote's buckets.
        self.conditional = ProbedOnce()

    def __repr__(self) -> str:
        return f"S3Client({self.remote!r}, {self.options.endpoint}, addressing={self.options.addressing})"

    def close(self) -> None:
        self.wire.close()

    def locate(self, bucket: str | None, key: str | None) -> tuple[str, str]:
        """(Host header, wire path) of a bucket, an object, or the service (bucket None).

        Keys with a `.` or `..` path segment are refused: HTTP stacks (urllib3) remove dot segments
        from URLs, so such a request would address a different key."""
        if key is not None and any(seg in (".", "..") for seg in key.split("/")):
            raise InvalidArgument(f"key {key!r} has a '.' or '..' segment, which HTTP clients rewrite")
        netloc = self.options.netloc
        if bucket is None:
            return netloc, "/"
        if self.options.addressing == "virtual":
            return f"{bucket}.{netloc}", encode_path("/" + (key or ""))
        return netloc, encode_path(f"/{bucket}" + ("" if key is None else f"/{key}"))

    def request(self, method: str, bucket: str | None, key: str | None, *, what: str,
                params: Sequence[tuple[str, str]] = (), headers: Mapping[str, str] | None = None,
                body: Body = EMPTY) -> Request:
        """The Request of one S3 call (the service's with bucket None, a bucket's with key None)."""
        host, path = self.locate(bucket, key)
        return Request(method, f"{self.options.scheme}://{host}", path, build_query(params),
                       {"Host": host, "Accept-Encoding": "identity", **(headers or {})}, body, what)

    def call(self, request: Request, *, error_in_body: bool = False,
             policy: RetryPolicy | None = None) -> Answer:
        """The request's whole answer, retried under the remote's policy (or `policy`).

        `error_in_body`: the call may answer 200 with an <Error> document (CompleteMultipartUpload,
        CopyObject, UploadPartCopy), which is then decoded and raised (retried if Transient) like an
        error status."""
        if not error_in_body:
            return self.wire.call(request, policy=policy)
        return self.wire.retried(self.checked_attempt(request), request.what, policy)

    def checked_attempt(self, request: Request) -> Callable[[], Answer]:
        """One try of call(..., error_in_body=True), for callers that count tries."""
        attempt = self.wire.attempt(request)

        def checked() -> Answer:
            answer = attempt()
            if b"<Error" in answer.content[:512] and parse_xml(answer.content, request.what).tag == "Error":
                raise error_from_response(Answer(500, answer.headers, answer.content), request.what)
            return answer

        return checked
