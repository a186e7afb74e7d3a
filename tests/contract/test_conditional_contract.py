"""Conditional writes (issue #17) on every store: what `conditional_writes()` says a server enforces,
it enforces (PreconditionFailed, the other writer's object untouched, on PUT and on multipart
completion), and a condition it does not enforce is refused, never silently dropped."""
from __future__ import annotations

import io

import pytest

from storefs.errors import NotSupported, PreconditionFailed
from storefs.providers.s3.probe import PROBE_PREFIX
from storefs.providers.s3.store import S3Store
from storefs.providers.s3.xml import parse_list_v2
from storefs.store.conditions import WriteCondition
from storefs.store.contract import MultipartUpload, ObjectStore

from .test_store_contract import all_keys, put_bytes

WRONG_ETAG = "0123456789abcdef0123456789abcdef"


def conditional_put(store: ObjectStore, key: str, data: bytes, condition: WriteCondition):
    return store.put(key, io.BytesIO(data), len(data), {}, condition=condition)


def conditional_multipart(store: ObjectStore, key: str, data: bytes, condition: WriteCondition):
    """A one-part multipart upload with `condition`; aborted if refused (COS refuses at the start)."""
    upload: MultipartUpload | None = None
    try:
        upload = store.create_multipart(key, len(data), store.capabilities.min_part_size, {}, condition=condition)
        part = store.upload_part(upload, 1, 0, data)
        return store.complete_multipart(upload, [part], condition=condition)
    except BaseException:
        if upload is not None:
            store.abort_multipart(upload)
        raise


def outcome(write) -> str:
    """"refused" (PreconditionFailed), "unsupported" (the store refuses a condition it cannot enforce)
    or "written" (the server ignored the condition: the probe must have said so)."""
    try:
        write()
    except PreconditionFailed:
        return "refused"
    except NotSupported:
        return "unsupported"
    return "written"


def check(store: ObjectStore, key: str, enforced: bool, write, theirs: bytes, mine: bytes) -> None:
    """`write` meets another writer's object `theirs`: refused if the store says it enforces the
    condition, else refused up front or (an honest probe) written."""
    result = outcome(write)
    if enforced:
        assert result == "refused"
    else:
        assert result in ("unsupported", "written")
    expected = mine if result == "written" else theirs
    assert store.read_range(key, 0, 4096) == expected


def test_the_store_says_what_it_enforces_and_says_it_once(store):
    first = store.conditional_writes("k")
    assert store.conditional_writes("other") == first
    assert first.how
    # A probe (S3) leaves nothing behind: not even in a listing that shows probe objects.
    assert all_keys(store, "", delimiter="")[0] == []
    if isinstance(store, S3Store):
        raw = store._call("GET", None, what="raw list", params=[("list-type", "2"), ("prefix", PROBE_PREFIX)])
        assert parse_list_v2(raw.content).objects == []


def test_listings_never_show_a_probe_object(store):
    """Another host's probe, or ours while an upload probes: S3 listings leave the name out (only S3
    stores probe; elsewhere such a name is a file like any other)."""
    probe = PROBE_PREFIX + "0123456789abcdef"
    put_bytes(store, probe, b"probe")
    put_bytes(store, PROBE_PREFIX + "mine.txt", b"a user's file that only looks like one")
    shown = sorted([probe] * (not isinstance(store, S3Store)) + [PROBE_PREFIX + "mine.txt"])
    try:
        assert sorted(all_keys(store, "", delimiter="")[0]) == shown
        assert sorted(all_keys(store, "", delimiter="/")[0]) == shown
        assert store.stat(probe).size == 5   # by name it is still there (the probe deletes it)
    finally:
        store.delete(probe)
        store.delete(PROBE_PREFIX + "mine.txt")


def test_create_only_put(store):
    put_bytes(store, "new", b"theirs")
    check(store, "new", store.conditional_writes("new").absent,
          lambda: conditional_put(store, "new", b"mine", WriteCondition()), b"theirs", b"mine")


def test_create_only_put_of_a_free_name_is_written(store):
    if not store.conditional_writes("free").absent:
        pytest.raises(NotSupported, conditional_put, store, "free", b"mine", WriteCondition())
        return
    made = conditional_put(store, "free", b"mine", WriteCondition())
    assert made.etag == store.stat("free").etag
    assert store.read_range("free", 0, 100) == b"mine"


def test_replace_only_the_version_seen(store):
    put_bytes(store, "doc", b"v1")
    seen = store.stat("doc").etag
    put_bytes(store, "doc", b"v2 by another host")
    enforced = store.conditional_writes("doc").match
    check(store, "doc", enforced, lambda: conditional_put(store, "doc", b"mine", WriteCondition(seen)),
          b"v2 by another host", b"mine")
    if enforced:
        done = conditional_put(store, "doc", b"mine, over v2", WriteCondition(store.stat("doc").etag))
        assert store.read_range("doc", 0, 100) == b"mine, over v2"
        assert done.etag == store.stat("doc").etag


def test_create_only_multipart(store):
    put_bytes(store, "big", b"theirs")
    check(store, "big", store.conditional_writes("big").absent_multipart,
          lambda: conditional_multipart(store, "big", b"m" * 1000, WriteCondition()), b"theirs", b"m" * 1000)
    if store.conditional_writes("big").absent_multipart:
        conditional_multipart(store, "free-big", b"f" * 1000, WriteCondition())
        assert store.read_range("free-big", 0, 2000) == b"f" * 1000


def test_replace_only_the_version_seen_multipart(store):
    put_bytes(store, "big", b"v1")
    seen = store.stat("big").etag
    put_bytes(store, "big", b"v2")
    enforced = store.conditional_writes("big").match_multipart
    check(store, "big", enforced, lambda: conditional_multipart(store, "big", b"m" * 1000, WriteCondition(seen)),
          b"v2", b"m" * 1000)
    if enforced:
        conditional_multipart(store, "big", b"n" * 1000, WriteCondition(store.stat("big").etag))
        assert store.read_range("big", 0, 2000) == b"n" * 1000
