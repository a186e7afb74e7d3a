"""Whether a part the server lists holds the same bytes as a slice of the local file.

A resumed upload reuses a listed part only when this says yes (SEMANTICS.md, resumable uploads): the
part's ETag must equal the ETag the provider computes for those bytes (`Capabilities.part_etag`).
Where the form is unknown, nothing is trusted and the part is sent again.
"""
from __future__ import annotations

import hashlib

from ..wire.answer import strip_etag
from ..wire.auth.ufile import EtagHasher


def local_part_etag(kind: str, data: bytes | memoryview) -> str | None:
    """The ETag a server of `kind` gives a part holding `data`; None when it cannot be computed."""
    if kind == "md5":
        return hashlib.md5(data).hexdigest()
    if kind == "ufile":
        hasher = EtagHasher()
        hasher.update(data)
        return hasher.etag()
    return None


def part_matches(kind: str, server_etag: str, data: bytes | memoryview) -> bool:
    """True only if the server's part ETag is the one these bytes have (quotes and case ignored for
    hex forms; UFile's base64 ETag is compared exactly)."""
    expected = local_part_etag(kind, data)
    if expected is None or not server_etag:
        return False
    got = strip_etag(server_etag)
    return got.lower() == expected if kind == "md5" else got == expected
