"""Whether an S3 endpoint enforces If-None-Match / If-Match on PutObject and CompleteMultipartUpload,
found by trying (once per remote, on the first upload that needs to know: ProbedOnce in client.py).

S3-compatible servers differ (AWS honours both since 2024, moto 5.2 ignores If-Match on completion,
older servers ignore the headers altogether and silently overwrite), so the probe never trusts the
server's name or version, only what it does with a probe key of its own:
  1. PUT the key with If-None-Match: *          (it must not exist yet: a random name)
  2. PUT it again with If-None-Match: *          → 412 means `absent` is enforced
  3. PUT it with If-Match: <an ETag it never had> → 412 means `match` is enforced
  4. a one-part multipart upload of the key, completed with If-None-Match: * → 412: `absent_multipart`
  5. the same upload completed with If-Match: <wrong ETag> → 412: `match_multipart`
  6. abort the upload and delete the key.
Nine requests at most. A server that ignores a header overwrites only the probe key. Any other
answer (AccessDenied, an unknown error) means "not enforced": the HEAD check then stands in.
"""
from __future__ import annotations

import io
import logging
import secrets
import time

from ...errors import PreconditionFailed, StoreError, Transient
from ...store.conditions import NO_CONDITIONAL_WRITES, ConditionalWrites, WriteCondition
from ...store.contract import MultipartUpload, ObjectStore

log = logging.getLogger(__name__)

# An ETag no object has: the MD5 of nothing is d41d8cd9…, this is not an MD5 of anything we write.
_WRONG_ETAG = "00000000000000000000000000000000"
PROBE_PREFIX = ".storefs-probe-"
_PROBE_KEY_LENGTH = len(PROBE_PREFIX) + 16


def is_probe_key(key: str) -> bool:
    """Whether `key` is a probe object's (of this host or another): listings leave it out, so that
    a probe running during an upload never shows up as a file in the bucket's root."""
    return (len(key) == _PROBE_KEY_LENGTH and key.startswith(PROBE_PREFIX)
            and all(c in "0123456789abcdef" for c in key[len(PROBE_PREFIX):]))


def condition_headers(condition: WriteCondition | None) -> dict[str, str]:
    """The request headers of a write condition (none without one)."""
    if condition is None:
        return {}
    if condition.absent:
        return {"If-None-Match": "*"}
    return {"If-Match": f'"{condition.etag}"'}


def _refused(write) -> bool:
    """Whether `write()` was refused as a failed precondition (True) or done (False)."""
    try:
        write()
    except PreconditionFailed:
        return True
    return False


def probe_conditional_writes(store: ObjectStore, remote: str) -> ConditionalWrites:
    """What the endpoint of `store` (an S3Store of `remote`) enforces (see the module's comment).
    Transient errors propagate, so that the next upload probes again; any other error means nothing
    is enforced."""
    key = f"{PROBE_PREFIX}{secrets.token_hex(8)}"
    started = time.monotonic()
    try:
        found = _probe(store, key)
    except Transient:
        raise
    except StoreError as exc:
        log.warning("[%s] cannot probe conditional writes in bucket %r (%s): uploads check the server with a "
                    "HEAD first, which leaves a window for another host's write", remote,
                    store.name, exc)
        found = NO_CONDITIONAL_WRITES
    finally:
        try:
            store.delete(key)
        except StoreError as exc:
            log.warning("could not remove the probe object %r: %s", key, exc)
    log.info("[%s] conditional writes: %s (probed in %.0f ms)", remote, found.how,
             (time.monotonic() - started) * 1000)
    return found


def _probe(store: ObjectStore, key: str) -> ConditionalWrites:
    def put(condition: WriteCondition) -> None:
        store.put(key, io.BytesIO(b"probe"), 5, {}, condition=condition)

    put(WriteCondition())
    absent = _refused(lambda: put(WriteCondition()))
    match = _refused(lambda: put(WriteCondition(_WRONG_ETAG)))
    upload: MultipartUpload = store.create_multipart(key, 1, 0, {})
    try:
        part = store.upload_part(upload, 1, 0, b"p")
        absent_multipart = _refused(lambda: store.complete_multipart(upload, [part], condition=WriteCondition()))
        # Only while the upload still exists (a server that ignored step 4 completed it).
        match_multipart = absent_multipart and _refused(
            lambda: store.complete_multipart(upload, [part], condition=WriteCondition(_WRONG_ETAG)))
    finally:
        try:
            store.abort_multipart(upload)
        except StoreError:
            pass   # completed by a server that ignored the condition: nothing to abort
    enforced = [name for name, on in (("If-None-Match on PUT", absent), ("If-Match on PUT", match),
                                      ("If-None-Match on complete", absent_multipart),
                                      ("If-Match on complete", match_multipart)) if on]
    return ConditionalWrites(absent=absent, match=match, absent_multipart=absent_multipart,
                             match_multipart=match_multipart,
                             how="probed: " + (", ".join(enforced) if enforced else "none enforced"))
