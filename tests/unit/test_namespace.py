"""Namespace caching: what a listing costs and what it saves, counted on a wrapped local store."""
from __future__ import annotations

import dataclasses
import io
import threading
import time

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
    for i in range(50):   # all changed: a listing again keeps only unchanged objects' attributes
        store.store.put(f"d/f{i:02d}", io.BytesIO(b"z"), 1, {})
    names = ns.listdir("/d")
    assert calls == [50, 50]
    assert len(names) == 49 and "f01" not in names   # gone since the listing
    assert store.counts["stat"] == 1 and names["f00"].exact   # the lost one, retried alone


class HeldListing(Counting):
    """Its listing of `d/` waits until the test says go, so the test can change things meanwhile."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.listing = threading.Event()
        self.go = threading.Event()

    def list(self, prefix, **kwargs):
        page = super().list(prefix, **kwargs)
        self.listing.set()
        assert self.go.wait(10)
        return page


def test_changes_made_while_a_listing_is_in_flight_are_not_lost(store):
    """An upload that finishes (remember) and a delete (forget gone) while the directory's listing is
    in flight: the listing, fetched before, lands without them; both are applied to it, and what is
    cached for dir_ttl is right too (seen through a mount under load: a file uploaded during `ls`
    vanished from the listings for dir_ttl)."""
    held = HeldListing(store.store)
    ns = Namespace(held, KeyMap(), Defaults(0, 0), CacheSettings(stat_ahead=0))
    result: dict = {}
    lister = threading.Thread(target=lambda: result.update(ns.listdir("/d")))
    lister.start()
    assert held.listing.wait(10)
    store.store.put("d/new", io.BytesIO(b"y"), 1, {})          # the upload lands on the server...
    ns.remember("/d/new", ns.lookup("/d/new"))                  # ...and is remembered, after the LIST
    store.store.delete("d/f00")
    ns.forget("/d/f00", gone=True)
    held.go.set()
    lister.join(10)
    assert "new" in result and "f00" not in result
    cached = ns.listdir("/d")   # from the cache, no request
    assert "new" in cached and "f00" not in cached and held.counts["list"] == 1


def test_a_listing_whose_directory_was_forgotten_meanwhile_is_not_cached(store):
    held = HeldListing(store.store)
    ns = Namespace(held, KeyMap(), Defaults(0, 0), CacheSettings(stat_ahead=0))
    lister = threading.Thread(target=ns.listdir, args=("/d",))
    lister.start()
    assert held.listing.wait(10)
    ns.forget("/d/f01")          # not known any more (e.g. renamed over elsewhere)
    held.go.set()
    lister.join(10)
    ns.listdir("/d")
    assert held.counts["list"] == 2   # listed again: the first result was not cached

@pytest.mark.parametrize("other_misses", [0, 80], ids=["listing-bigger-than-cache", "cache-bigger-than-listing"])
def test_a_listing_clears_the_negative_answers_of_names_it_has(store, other_misses):
    """A name looked up before it existed is found once a listing of its parent has it, whichever of
    the listing and the negative cache is walked (Namespace._note_listed walks the smaller)."""
    ns = Namespace(store, KeyMap(), Defaults(0, 0), CacheSettings(stat_ahead=0, dir_ttl=0.05))
    for i in range(other_misses):
        with pytest.raises(NotFound):
            ns.lookup(f"/elsewhere/x{i}")
    with pytest.raises(NotFound):
        ns.lookup("/d/late")
    store.store.put("d/late", io.BytesIO(b"hello"), 5, {})
    time.sleep(0.1)   # the first listing's TTL, not the negative answer's (5 s)
    assert "late" in ns.listdir("/d")
    assert ns.lookup("/d/late").attrs.size == 5
    with pytest.raises(NotFound):   # other negative answers stay
        ns.lookup("/d/still-missing")


def test_a_listing_refreshes_exact_entries_and_keeps_lookups_request_free(store):
    """Listing entries with metadata replace what was cached (attr_ttl outlives the listing); entries
    without it are answered from the listing, with no entry of their own and no request."""
    exact_store = Counting(store.store)
    exact_store.capabilities = store.store.capabilities   # the local store lists with metadata
    ns = Namespace(exact_store, KeyMap(), Defaults(0, 0), CacheSettings(dir_ttl=0.05, attr_ttl=60))
    assert ns.lookup("/d/f00").attrs.size == 1
    store.store.put("d/f00", io.BytesIO(b"longer"), 6, {})
    time.sleep(0.1)
    ns.listdir("/d")
    before = dict(exact_store.counts)
    assert ns.lookup("/d/f00").attrs.size == 6 and exact_store.counts == before
    plain = Namespace(store, KeyMap(), Defaults(0, 0), CacheSettings(stat_ahead=0))
    plain.listdir("/d")
    assert len(plain._entries) == 0   # a million listed children cost no cache entry each


def test_a_listing_again_keeps_the_attributes_of_unchanged_objects(store):
    """After dir_ttl, `ls -l` lists again: only the objects that changed are stat'ed again."""
    ns = Namespace(store, KeyMap(), Defaults(0, 0), CacheSettings(dir_ttl=0.05, attr_ttl=0.05))
    assert len(ns.listdir("/d")) == 50 and store.counts == {"list": 1, "stat": 50}
    time.sleep(0.1)
    store.store.put("d/f07", io.BytesIO(b"changed"), 7, {"mtime": "1700000000", "mode": "33152"})
    entries = ns.listdir("/d")
    assert store.counts == {"list": 2, "stat": 51}          # the changed one only
    assert entries["f07"].attrs.mtime_ns == 1_700_000_000 * 10**9 and entries["f07"].attrs.size == 7
    assert entries["f08"].exact and entries["f08"].attrs.mtime_ns == 1_600_000_000 * 10**9


def test_a_listing_again_keeps_a_change_made_here_after_the_listing_expired(store):
    """chmod of an object changes its metadata, not its ETag or size: a listing made after the
    previous one expired must show the new mode, not the one that previous listing fetched (with
    READDIRPLUS the kernel takes a listing's attributes as they are)."""
    from storefs.fs.bucket.namespace import Entry
    ns = Namespace(store, KeyMap(), Defaults(0, 0), CacheSettings(dir_ttl=0.05, attr_ttl=0.05))
    old = ns.listdir("/d")["f07"]
    time.sleep(0.1)   # the listing expires; the last one is kept for _keep_known
    info = store.store.set_meta("d/f07", {**old.info.meta, "mode": "33184"})
    changed = old.attrs.copy()
    changed.mode = 0o100640
    ns.remember("/d/f07", Entry(changed, info))
    assert ns.listdir("/d")["f07"].attrs.mode == 0o100640
    assert ns.lookup("/d/f07").attrs.mode == 0o100640


def test_new_names_in_a_small_directory_cost_one_listing_per_dir_ttl(store):
    """A loop creating files looks each new name up: after the listing expired, one LIST answers them
    all, not a HEAD and a LIST per name."""
    ns = Namespace(store, KeyMap(), Defaults(0, 0), CacheSettings(dir_ttl=0.2, attr_ttl=0.2))
    ns.listdir("/d")
    time.sleep(0.3)
    before = dict(store.counts)
    for i in range(20):
        with pytest.raises(NotFound):
            ns.lookup(f"/d/new{i}")
    assert store.counts["list"] - before["list"] == 1 and store.counts["stat"] == before["stat"]
    assert ns.lookup("/d/f03").attrs.size == 1   # an existing name is still found, from that listing


def test_a_large_directory_is_not_listed_again_for_one_name(tmp_path):
    provider = open_provider("t", {"root": str(tmp_path), "create_buckets": "yes"})
    provider.check("b")
    inner = provider.bucket("b")
    small_pages = Counting(inner)
    small_pages.capabilities = dataclasses.replace(small_pages.capabilities, list_page_size=10)
    for i in range(12):
        inner.put(f"d/f{i:02d}", io.BytesIO(b"x"), 1, {})
    ns = Namespace(small_pages, KeyMap(), Defaults(0, 0), CacheSettings(dir_ttl=0.05, attr_ttl=0.05))
    ns.listdir("/d")
    time.sleep(0.1)
    lists = small_pages.counts["list"]
    with pytest.raises(NotFound):
        ns.lookup("/d/nope")
    assert small_pages.counts["list"] - lists == 1   # the name's own LIST (directory check), no relisting


def _miss(ns: Namespace, path: str) -> None:
    with pytest.raises(NotFound):
        ns.lookup(path)


def test_new_names_in_a_directory_never_listed_cost_one_listing_from_the_second_name(store):
    """`tar -x` or `cp` into an existing directory this mount never listed: the first new name is asked
    by name, the second lists the directory once (one page, no attributes fetched ahead), the rest
    cost nothing."""
    ns = Namespace(store, KeyMap(), Defaults(0, 0), CacheSettings())
    _miss(ns, "/d/new0")
    by_name = dict(store.counts)
    _miss(ns, "/d/new1")
    assert store.counts == {"stat": by_name["stat"], "list": by_name["list"] + 1}
    for i in range(2, 20):
        _miss(ns, f"/d/new{i}")
    assert store.counts == {"stat": by_name["stat"], "list": by_name["list"] + 1}
    assert ns.lookup("/d/f03").attrs.size == 1     # found in that listing (made exact by name)
    lists = store.counts["list"]
    entries = ns.listdir("/d")                     # readdir (ls -l): listed again, attributes ahead
    assert len(entries) == 50 and all(entry.exact for entry in entries.values())
    assert store.counts["list"] == lists + 1


class SmallPages(Counting):
    """Listings of at most `page` entries a page, as a server with a small page size would answer."""

    def __init__(self, store, page: int) -> None:
        super().__init__(store)
        self.capabilities = dataclasses.replace(self.capabilities, list_page_size=page)

    def list(self, prefix, **kwargs):
        kwargs.setdefault("limit", self.capabilities.list_page_size)
        return super().list(prefix, **kwargs)


def test_a_directory_never_listed_that_is_more_than_a_page_is_asked_by_name(store):
    ns = Namespace(SmallPages(store.store, 10), KeyMap(), Defaults(0, 0), CacheSettings())
    paged = ns.store
    _miss(ns, "/d/new0")
    by_name = dict(paged.counts)
    for i in range(1, 20):
        _miss(ns, f"/d/new{i}")
    # Each name asked by name, and one page of the listing (not all five): not listed again.
    assert paged.counts == {"stat": 20 * by_name["stat"], "list": 20 * by_name["list"] + 1}


def test_a_directory_found_in_a_listing_for_names_keeps_its_markers_attributes(tmp_path):
    """Where listings carry metadata (UFile), a directory listed as a prefix has none: found in a
    listing made for names, its attributes still come from its marker (found by the remount test)."""
    provider = open_provider("t", {"root": str(tmp_path), "create_buckets": "yes"})
    provider.check("b")
    inner = provider.bucket("b")
    inner.put("d/", io.BytesIO(b""), 0, {"mode": str(0o40700)})
    inner.put("d/e/", io.BytesIO(b""), 0, {})
    store = Counting(inner)
    store.capabilities = dataclasses.replace(store.capabilities, list_has_metadata=True)
    ns = Namespace(store, KeyMap(), Defaults(0, 0), CacheSettings())
    _miss(ns, "/f")                                   # the first name, asked by name
    assert ns.lookup("/d").attrs.mode & 0o777 == 0o700


def test_relisting_for_a_lookup_fetches_no_attributes_ahead(store):
    """A lookup that lists a directory again (its listing expired) fetches no entry's attributes: a
    long `tar -x` into a directory would otherwise ask for every entry's anew each dir_ttl."""
    ns = Namespace(store, KeyMap(), Defaults(0, 0), CacheSettings(dir_ttl=0.2, attr_ttl=0.2))
    _miss(ns, "/d/new0")
    _miss(ns, "/d/new1")                 # lists /d for names
    time.sleep(0.3)
    stats = store.counts["stat"]
    _miss(ns, "/d/new2")                 # lists /d again, for names
    assert store.counts["stat"] == stats
