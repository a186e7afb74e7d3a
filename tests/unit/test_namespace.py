"""Namespace caching: what a listing costs and what it saves, counted on a wrapped local store."""
from __future__ import annotations

import dataclasses
import io
import threading

import pytest

from storefs.attrs import Defaults
from storefs.errors import NotFound
from storefs.fs.bucket.namespace import CacheSettings, Namespace
from storefs.paths import KeyMap
from storefs.providers.local import open_provider


class Counting:
    """An ObjectStore wrapper that counts calls, and whose listings carry no metadata (like S3)."""

    def __init__(self, store) -> None:
        self.store = store
        self.capabilities = dataclasses.replace(store.capabilities, list_has_metadata=False)
        self.counts = {"stat": 0, "list": 0}
        self._lock = threading.Lock()

    def stat(self, key):
        with self._lock:
            self.counts["stat"] += 1
        return self.store.stat(key)

    def list(self, prefix, **kwargs):
        with self._lock:
            self.counts["list"] += 1
        return self.store.list(prefix, **kwargs)


@pytest.fixture
def store(tmp_path):
    provider = open_provider("t", {"root": str(tmp_path), "create_buckets": "yes"})
    provider.check("b")
    inner = provider.bucket("b")
    for i in range(50):
        inner.put(f"d/f{i:02d}", io.BytesIO(b"x"), 1, {"mtime": "1600000000", "mode": "33152"})
    return Counting(inner)


def test_listing_fills_exact_attributes_so_ls_l_costs_no_request_per_entry(store):
    ns = Namespace(store, KeyMap(), Defaults(0, 0), CacheSettings())
    names = ns.listdir("/d")
    assert len(names) == 50
    assert store.counts["list"] == 1 and store.counts["stat"] == 50  # fetched together, in parallel
    before = dict(store.counts)
    for name in names:  # what `ls -l` asks next: all answered from the cache
        attrs = ns.lookup(f"/d/{name}").attrs
        assert attrs.mtime_ns == 1_600_000_000 * 10**9 and attrs.mode & 0o777 == 0o600
    assert store.counts == before
    with pytest.raises(NotFound):  # absent from a fresh listing: no request either
        ns.lookup("/d/nope")
    assert store.counts == before


def test_fast_listing_attributes_make_no_stat_at_all(store):
    ns = Namespace(store, KeyMap(), Defaults(0, 0), CacheSettings(stat_ahead=0))
    ns.listdir("/d")
    assert store.counts == {"list": 1, "stat": 0}


def test_huge_directories_are_not_stat_ahead(store):
    ns = Namespace(store, KeyMap(), Defaults(0, 0), CacheSettings(stat_ahead=10))
    ns.listdir("/d")
    assert store.counts == {"list": 1, "stat": 0}


def test_a_failing_batched_stat_falls_back_to_one_request_per_entry(store):
    from storefs.errors import InvalidArgument, Transient

    calls = []

    def stat_many(keys, parallel):
        calls.append(len(keys))
        if len(calls) == 1:
            raise InvalidArgument("a key the HTTP layer refuses")
        # Second listing: one answer lost in transit, one entry gone, the rest answered.
        return [Transient("reset")] + [NotFound(keys[1])] + [store.store.stat(k) for k in keys[2:]]

    store.stat_many = stat_many
    store.capabilities = dataclasses.replace(store.capabilities, batched_stat=True)
    ns = Namespace(store, KeyMap(), Defaults(0, 0), CacheSettings(dir_ttl=0, attr_ttl=0))
    names = ns.listdir("/d")
    assert len(names) == 50 and all(entry.exact for entry in names.values())
    assert store.counts["stat"] == 50            # all 50 through stat() after the batch failed
    store.counts.update(stat=0, list=0)
    names = ns.listdir("/d")
    assert calls == [50, 50]
    assert len(names) == 49 and "f01" not in names   # gone since the listing
    assert store.counts["stat"] == 1 and names["f00"].exact   # the lost one, retried alone
