"""The `s3` provider: any S3-compatible endpoint (AWS, MinIO, SeaweedFS, COS v5, WCS S3, US3 S3, moto).

Our own SigV4 signer (wire/auth/sigv4.py) over the wire layer's WireClient; no SDK at runtime. The
client has the fast transport, which carries what the mount does most (HEADs, LISTs, small PUTs, parts
sent from staged files, ranged reads into block-cache files); the requests transport the rest (bodies
streamed from file objects, ranges read as pieces off the answer). Both belong to the provider, are
shared by its buckets and are safe to use from many threads.

The package: config.py (keys, limits, one remote's options), client.py (addressing, what every request
carries, the WireClient), errors.py (the one error decoder), xml.py (documents parsed and sent),
meta.py (user metadata and HEAD headers), store.py (S3Provider and the per-bucket S3Store).

Wire choices, and why:
- Listing is ListObjectsV2 with `encoding-type=url`, so keys holding characters XML 1.0 cannot carry
  still round-trip (xml.py).
- Bodies in memory and regions of staged files (small PUTs, parts, PUTs of staged files) are signed
  with their SHA-256, so the server checks their integrity; other file objects are streamed and sent
  UNSIGNED-PAYLOAD.
- Every request is signed inside its retried try, so each try carries a fresh date and signature; a
  file body is rewound before each try.
- Reads ask for `Accept-Encoding: identity` and never decode content: the bytes of the object are the
  bytes of the file, even for objects stored with `Content-Encoding: gzip`. Every range rule is the
  wire layer's (wire/ranges.py).
- Calls that may answer 200 with an <Error> document (CompleteMultipartUpload, CopyObject,
  UploadPartCopy) have their body checked inside the retried try.

Archive storage classes (GLACIER, DEEP_ARCHIVE; COS v5's ARCHIVE): `stat()` keeps the `x-amz-restore`
header in `meta["x-amz-restore"]`, `restore()` is RestoreObject, and a GET refused with
InvalidObjectState raises ArchiveNotReady.

Keys with a `.` or `..` path segment are refused (InvalidArgument): the HTTP stack (urllib3) removes
dot segments from URLs, so such a request would address a different key.
"""
from __future__ import annotations

from .config import SPEC
from .store import S3Provider, S3Store, open_provider

__all__ = ["SPEC", "open_provider", "S3Provider", "S3Store"]
