"""Metadata: what exists at a path, with TTL caches for attributes, listings and negative answers.

The namespace knows the remote only. Files being written (staged) are overlaid by `filesystem.py`.

Cache rules:
- an entry is trusted for `attr_ttl` seconds, a listing for `dir_ttl`, a "does not exist" for `neg_ttl`;
- a child missing from a fresh listing of its parent is a negative answer without another request;
- listing entries carry no user metadata on most providers (`exact=False`), so the first `lookup` of
  such an entry costs one stat, after which it is exact for `attr_ttl`;
- listing a directory again (its listing expired) keeps the exact attributes of every entry whose
  object is unchanged (same ETag, size and second of modification), so a warm `ls -l` costs the LIST
  only, not a stat per entry again;
- looking up a name in a directory whose listing expired, where that listing fit in one page, lists
  the directory again (one request, no attributes fetched ahead) instead of a stat and a LIST for that
  name: a loop creating files costs one LIST per `dir_ttl`, not two requests per new name;
- the same for a directory never listed, from the second name looked up in it within `dir_ttl`
  (`tar -x` or `cp` into an existing directory): one page is listed, and if the directory fits in it
  the names after that cost nothing; a bigger one is asked by name, as before, for `dir_ttl` more.

Locking: one lock around the caches (cachetools is not thread-safe); no request is ever made while it
is held. A listing in flight while this mount changes a child of that directory (an upload finished,
a file deleted) would land without the change, and be cached so for dir_ttl: the changes made during
a listing are kept aside (`_OwnChanges`) and applied to its result before it is used.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time

import cachetools

from ...attrs import Attrs, Defaults, attrs_from_object, implicit_dir_attrs
from ...errors import NotFound, StoreError, Transient
from ...paths import KeyMap, basename, child_name, join, parent
from ...store.contract import ObjectInfo, ObjectStore, iter_list

log = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class Entry:
    attrs: Attrs
    info: ObjectInfo | None   # the object (file, symlink or directory marker); None: implicit dir
    exact: bool = True        # attrs include the object's user metadata

    @property
    def is_dir(self) -> bool:
        return self.attrs.is_dir


@dataclasses.dataclass
class Listing:
    entries: dict[str, Entry]
    at: float
    subdirs: int | None = None   # how many entries are directories; None: count again
    # The exact attributes of its entries were fetched ahead (CacheSettings.stat_ahead). A listing made
    # to answer lookups (from the second name in a directory never listed) is not: it answers names,
    # and a readdir lists again.
    attrs_fetched: bool = True

    def count_subdirs(self) -> int:
        if self.subdirs is None:
            self.subdirs = sum(1 for entry in self.entries.values() if entry.is_dir)
        return self.subdirs


@dataclasses.dataclass(frozen=True)
class CacheSettings:
    attr_ttl: float = 10.0
    dir_ttl: float = 10.0
    neg_ttl: float = 5.0
    max_entries: int = 100_000
    max_listings: int = 1_000
    # Where listings carry no user metadata (S3), readdir fetches the attributes of up to this many
    # entries in parallel, so that `ls -l` and rsync are answered from the cache with exact mtimes and
    # modes. 0 ("-o listing_attrs=fast"): listing attributes are shown as they are (server times).
    stat_ahead: int = 5_000
    stat_ahead_parallel: int = 64   # HEADs in flight (S3: on as many connections, from one thread)


class _TooBig(Exception):
    """A listing asked for at most a number of pages has more."""


_UNKNOWN = object()   # an own change that makes a listing in flight unusable for the cache (see forget)


class _OwnChanges:
    """This mount's changes to the children of directories that are being listed, each with a sequence
    number, so that a listing which started before a change can have it applied when it lands.
    Kept only while a listing of that directory is in flight. Not locked: Namespace's lock covers it."""

    def __init__(self) -> None:
        self._seq = 0
        self._in_flight: dict[str, int] = {}                       # directory -> listings in flight
        self._changes: dict[str, dict[str, tuple[int, object]]] = {}   # directory -> name -> (seq, change)

    def listing_started(self, path: str) -> int:
        self._in_flight[path] = self._in_flight.get(path, 0) + 1
        return self._seq

    def note(self, path: str, name: str, change: object) -> None:
        """`change`: the child's new Entry, None (deleted) or _UNKNOWN. Only where a listing is in flight."""
        if path in self._in_flight:
            self._seq += 1
            self._changes.setdefault(path, {})[name] = (self._seq, change)

    def listing_landed(self, path: str, since: int, entries: dict[str, Entry]) -> bool:
        """Apply to `entries` the changes made since `since`; False if one leaves the listing unknown."""
        usable = True
        for name, (seq, change) in self._changes.get(path, {}).items():
            if seq <= since:
                continue
            if change is _UNKNOWN:
                usable = False
            elif change is None:
                entries.pop(name, None)
            else:
                entries[name] = change  # type: ignore[assignment]
        return usable

    def listing_ended(self, path: str) -> None:
        left = self._in_flight.get(path, 1) - 1
        if left > 0:
            self._in_flight[path] = left
        else:
            self._in_flight.pop(path, None)
            self._changes.pop(path, None)


# Directories, and stores without stat_many: a thread per request in flight.
_stat_pool = concurrent.futures.ThreadPoolExecutor(32, thread_name_prefix="stat-ahead")


class Namespace:
    def __init__(self, store: ObjectStore, keys: KeyMap, defaults: Defaults, settings: CacheSettings) -> None:
        self.store = store
        self.keys = keys
        self.defaults = defaults
        self.settings = settings
        self._lock = threading.Lock()
        self._entries: cachetools.TTLCache = cachetools.TTLCache(settings.max_entries, settings.attr_ttl)
        self._missing: cachetools.TTLCache = cachetools.TTLCache(settings.max_entries // 10 or 1,
                                                                 settings.neg_ttl)
        self._listings: cachetools.TTLCache = cachetools.TTLCache(settings.max_listings, settings.dir_ttl)
        # The last listing of each directory, kept past its TTL: shown (with a log line) when the
        # server cannot be reached, so a mount with an unreachable backend still lists what it knew.
        self._last_listings: cachetools.LRUCache = cachetools.LRUCache(settings.max_listings)
        # Directories never listed where a name was looked up (the next name lists them), and those
        # whose first page was not all of them (asked by name).
        self._asked_in: cachetools.TTLCache = cachetools.TTLCache(settings.max_listings, settings.dir_ttl)
        self._too_big: cachetools.TTLCache = cachetools.TTLCache(settings.max_listings, 2 * settings.dir_ttl)
        self._own = _OwnChanges()

    # -- queries ---------------------------------------------------------------------------------

    def lookup(self, path: str) -> Entry:
        """The entry at `path`. Raises NotFound."""
        if path == "/":
            return Entry(implicit_dir_attrs(self.defaults), None)
        with self._lock:
            entry = self._entries.get(path)
            if entry is not None and entry.exact:
                return entry
            if entry is None and path in self._missing:
                raise NotFound(path)
            listing = self._listings.get(parent(path))
            relist = entry is None and listing is None and self._small_when_last_listed(parent(path))
            first_page = entry is None and listing is None and not relist and self._worked_in(parent(path))
        if relist or first_page:
            try:
                # For names: a lookup needs no attributes fetched ahead (a relisting's unchanged
                # entries keep theirs, _keep_known); a readdir lists again with them.
                listing_entries: dict[str, Entry] | None = self._listdir_if_small(parent(path))
            except StoreError:
                listing_entries = None   # asked by name below, with its own error handling
            with self._lock:
                entry = self._entries.get(path)
                if entry is not None and entry.exact:
                    return entry
        else:
            listing_entries = listing.entries if listing is not None else None
        # A listing made for names only: its entries without user metadata (a directory's prefix) are
        # no answer for attributes, even where listings carry metadata.
        names_only = relist or first_page or (listing is not None and not listing.attrs_fetched)
        if entry is None and listing_entries is not None:
            entry = listing_entries.get(basename(path))
            if entry is None:
                with self._lock:
                    self._missing[path] = True
                raise NotFound(path)
        if entry is not None and not entry.exact and self.store.capabilities.list_has_metadata \
                and not names_only:
            return entry
        try:
            found = self._fetch(path, entry)
        except NotFound:
            with self._lock:
                self._missing[path] = True
                self._entries.pop(path, None)
            raise
        except Transient as exc:
            # The store is unreachable: answer from the parent's last known listing, as listdir()
            # does, or a directory listed a minute ago (with staged files in it) turns EIO as soon as
            # its attributes expire (found by tests/fuse/test_faults.py, backend gone mid-copy).
            # A name that listing does not have is answered "does not exist" from it too, so a copy
            # goes on creating new files through a short outage (a filer restart); if another client
            # made the name meanwhile, the upload's conflict check keeps both versions.
            with self._lock:
                last = self._last_listings.get(parent(path))
                known = last.entries.get(basename(path)) if last is not None else None
            if last is None:
                raise
            log.warning("looking up %s failed (%s); answering from the listing of %.0fs ago", path, exc,
                        time.monotonic() - last.at)
            if known is None:
                raise NotFound(path) from None
            return known
        with self._lock:
            self._entries[path] = found
            self._missing.pop(path, None)
        return found

    def _fetch(self, path: str, hint: Entry | None) -> Entry:
        key = self.keys.key(path)
        if hint is None or not hint.is_dir:
            try:
                info = self.store.stat(key)
                return Entry(attrs_from_object(info, self.defaults), info)
            except NotFound:
                if hint is not None:
                    raise
        # A directory: one LIST of `key/` finds its marker (listed first, as `key/` sorts before every
        # key below it) or any key below it; only a marker's metadata costs one more request.
        dir_key = key + "/"
        if self.store.capabilities.real_folders:
            # A real folder (COS v4) holds its own attributes and need not list itself: stat it first.
            try:
                marker = self.store.stat(dir_key)
                return Entry(attrs_from_object(marker, self.defaults, is_dir=True), marker)
            except NotFound:
                pass
        page = self.store.list(dir_key, delimiter="/", limit=1)
        if not (page.objects or page.prefixes):
            raise NotFound(path)
        if page.objects and page.objects[0].key == dir_key:
            marker = page.objects[0]
            if not marker.meta_complete or not self.store.capabilities.list_has_metadata:
                try:
                    marker = self.store.stat(dir_key)
                except NotFound:  # a COS v4 virtual folder is listed but is no object
                    return Entry(implicit_dir_attrs(self.defaults), None)
            return Entry(attrs_from_object(marker, self.defaults, is_dir=True), marker)
        return Entry(implicit_dir_attrs(self.defaults, _newest_ns(page.objects)), None)

    def _worked_in(self, path: str) -> bool:
        """Whether a name was looked up in directory `path` (never listed, lock held) within dir_ttl,
        and it may fit in one page: then it is worth listing. Notes this lookup."""
        if path in self._too_big or path in self._last_listings:
            return False
        if path in self._asked_in:
            return True
        self._asked_in[path] = True
        return False

    def _listdir_if_small(self, path: str) -> dict[str, Entry] | None:
        """listdir() of a directory that fits in one page of a listing, else None (for a while)."""
        try:
            return self.listdir(path, max_pages=1)
        except _TooBig:
            with self._lock:
                self._too_big[path] = True
            return None

    def _small_when_last_listed(self, path: str) -> bool:
        """Whether `path` was listed before (lock held) and that listing fit in one page."""
        last = self._last_listings.get(path)
        return last is not None and len(last.entries) < self.store.capabilities.list_page_size

    def _keep_known(self, path: str, entries: dict[str, Entry]) -> None:
        """Give listed entries whose object is unchanged since the last listing the exact attributes
        fetched then (see the module's docstring)."""
        with self._lock:
            last = self._last_listings.get(path)
        if last is None:
            return
        for name, entry in entries.items():
            known = last.entries.get(name)
            if (not entry.exact and known is not None and known.exact and not entry.is_dir
                    and _same_object(known.info, entry.info)):
                entries[name] = known

    def listdir(self, path: str, max_pages: int | None = None) -> dict[str, Entry]:
        """name -> entry of a directory's children, from one paged listing (cached for dir_ttl).
        `max_pages`: raise _TooBig rather than ask for more pages than that."""
        for_names = max_pages is not None   # for lookups: no attributes fetched ahead
        with self._lock:
            listing = self._listings.get(path)
            if listing is not None and (listing.attrs_fetched or for_names):
                return dict(listing.entries)
            since = self._own.listing_started(path)
        try:
            entries = self._list_remote(path, max_pages)
            self._keep_known(path, entries)
            if not for_names:
                self._complete(path, entries)
        except Transient as exc:
            with self._lock:
                self._own.listing_ended(path)
                last = self._last_listings.get(path)
            if last is None:
                raise
            log.warning("listing %s failed (%s); showing the listing from %.0fs ago", path, exc,
                        time.monotonic() - last.at)
            return dict(last.entries)
        except BaseException:
            with self._lock:
                self._own.listing_ended(path)
            raise
        with self._lock:
            usable = self._own.listing_landed(path, since, entries)
            self._own.listing_ended(path)
            if not usable:
                return dict(entries)
            listing = Listing(entries, time.monotonic(), attrs_fetched=not for_names)
            self._listings[path] = listing
            self._last_listings[path] = listing
            self._note_listed(path, entries)
        return dict(entries)

    def _note_listed(self, path: str, entries: dict[str, Entry]) -> None:
        """Bring the entry and negative caches in line with a fresh listing of `path` (lock held).

        Costs O(min(listed, cached)) cache operations, not one per listed child: a directory of a
        million objects made a million TTLCache lookups here, half the time of a cold listing
        (scripts/bench_cluster.py). A listed child nobody cached needs no entry of its own while the
        listing lives (`lookup` reads the listing), except an exact one, which outlives it for attr_ttl.
        """
        for name, entry in entries.items():
            if entry.exact:   # listings with metadata (list_has_metadata) only
                self._entries[join(path, name)] = entry
        for cache, refresh in ((self._entries, True), (self._missing, False)):
            if not cache:
                continue
            if len(entries) <= len(cache):
                children = [join(path, name) for name in entries]
            else:
                children = [known for known in list(cache.keys()) if parent(known) == path]
            for child in children:
                entry = entries.get(basename(child))
                if entry is None:
                    continue
                if not refresh:
                    cache.pop(child, None)
                    continue
                known = cache.get(child)
                # A stale entry would mislead lookup (its hint says file or directory): refresh it,
                # unless it is exact and the listing's is not.
                if known is not None and (not known.exact or entry.exact):
                    cache[child] = entry

    def _complete(self, path: str, entries: dict[str, Entry]) -> None:
        """Fetch, in parallel, the exact attributes of listed entries that lack them (see CacheSettings)."""
        inexact = [name for name, entry in entries.items() if not entry.exact]
        if not inexact:
            return
        if self.settings.stat_ahead <= 0 or len(inexact) > self.settings.stat_ahead:
            if self.settings.stat_ahead > 0:
                log.info("%s has %d entries: their attributes are fetched when asked for", path, len(inexact))
            return
        hints = {name: entries[name] for name in inexact}
        files = [name for name in inexact if not hints[name].is_dir]
        if self.store.capabilities.batched_stat and files:
            # All HEADs from this thread (S3: the fast transport's head_many), which costs less CPU than a
            # thread per request; whatever fails there is retried below as usual.
            keys = [self.keys.key(join(path, name)) for name in files]
            try:
                batch = self.store.stat_many(keys, self.settings.stat_ahead_parallel)
            except StoreError as exc:   # e.g. a key the HTTP layer refuses: each its own way below
                log.info("batched stat of %s failed (%s); one request per entry", path, exc)
                batch = []
            for name, found in zip(files, batch):
                if isinstance(found, NotFound):
                    entries.pop(name, None)  # gone since the listing
                elif not isinstance(found, Exception):
                    entries[name] = Entry(attrs_from_object(found, self.defaults), found)
            inexact = [name for name in inexact if name in entries and not entries[name].exact]

        def fetch(name: str) -> tuple[str, Entry | None]:
            try:
                return name, self._fetch(join(path, name), hints[name])
            except NotFound:
                return name, None  # gone since the listing
        for name, entry in _stat_pool.map(fetch, inexact):
            if entry is None:
                entries.pop(name, None)
            else:
                entries[name] = entry

    def _list_remote(self, path: str, max_pages: int | None = None) -> dict[str, Entry]:
        dir_key = self.keys.dir_key(path)
        entries: dict[str, Entry] = {}
        exact = self.store.capabilities.list_has_metadata
        for number, page in enumerate(iter_list(self.store, dir_key, delimiter="/"), 1):
            if max_pages is not None and number >= max_pages and page.next_token:
                raise _TooBig(path)   # before iter_list asks for the next page
            for info in page.objects:
                name = child_name(dir_key, info.key)
                if name is None:
                    continue
                if info.is_dir_marker:
                    # A marker listed as an object (`d/` under a prefix): a directory.
                    entries.setdefault(name, Entry(attrs_from_object(info, self.defaults, is_dir=True),
                                                   info, exact))
                    continue
                if name in entries:
                    log.warning("key %r and a directory of the same name both exist; showing the file",
                                info.key)
                entries[name] = Entry(attrs_from_object(info, self.defaults), info, exact)
            for prefix in page.prefixes:
                name = child_name(dir_key, prefix)
                if name is None:
                    continue
                if name in entries and not entries[name].is_dir:
                    log.warning("directory %r hides behind a file of the same name", prefix)
                    continue
                entries[name] = Entry(implicit_dir_attrs(self.defaults), None, exact=False)
        return entries

    # -- updates after our own changes -----------------------------------------------------------

    def remember(self, path: str, entry: Entry) -> None:
        with self._lock:
            self._own.note(parent(path), basename(path), entry)
            self._entries[path] = entry
            self._missing.pop(path, None)
            # The last listing too, once expired: a relist keeps its exact attributes for objects it
            # finds unchanged (_keep_known), and a metadata change (chmod) keeps the ETag and size.
            for listing in self._listings_of(parent(path)):
                listing.entries[basename(path)] = entry
                listing.subdirs = None

    def subdir_count(self, path: str) -> int | None:
        """How many subdirectories `path` has, where its listing is cached (None: not known now)."""
        with self._lock:
            listing = self._listings.get(path)
            return None if listing is None else listing.count_subdirs()

    def seed_empty(self, path: str) -> None:
        """`path` is a directory we just created: it has no children (for dir_ttl, as any listing)."""
        with self._lock:
            listing = Listing({}, time.monotonic())
            self._listings[path] = listing
            self._last_listings[path] = listing

    def creating(self, path: str) -> None:
        """We are creating `path` (it did not exist): drop the negative answer only. The parent's listing
        stays valid, so the next new name in it needs no request (the filesystem shows the staged file
        until its upload `remember`s it)."""
        with self._lock:
            self._entries.pop(path, None)
            self._missing.pop(path, None)

    def forget(self, path: str, *, gone: bool = False) -> None:
        """Drop what we know of `path` (and its listing). `gone`: we just deleted it."""
        with self._lock:
            self._own.note(parent(path), basename(path), None if gone else _UNKNOWN)
            self._own.note(path, "", _UNKNOWN)   # a listing of `path` itself in flight is stale too
            self._entries.pop(path, None)
            self._listings.pop(path, None)
            if gone:
                self._missing[path] = True
            else:
                self._missing.pop(path, None)
            if not gone:
                self._listings.pop(parent(path), None)
                return
            for listing in self._listings_of(parent(path)):   # the last one too: see remember()
                listing.entries.pop(basename(path), None)
                listing.subdirs = None

    def _listings_of(self, path: str) -> list[Listing]:
        """The cached and the last listing of `path`, each once (lock held)."""
        found: list[Listing] = []
        for listing in (self._listings.get(path), self._last_listings.get(path)):
            if listing is not None and all(listing is not other for other in found):
                found.append(listing)
        return found

    def forget_tree(self, path: str) -> None:
        """Drop everything cached at or below `path` (its parent's listing is the caller's: `forget`)."""
        prefix = path.rstrip("/") + "/"
        with self._lock:
            for cache in (self._entries, self._missing, self._listings):
                for known in [p for p in list(cache.keys()) if p == path or p.startswith(prefix)]:
                    cache.pop(known, None)


def _same_object(known: ObjectInfo | None, listed: ObjectInfo | None) -> bool:
    """The same object version: ETag, size and the second of its last change (a HEAD gives whole
    seconds, a listing may give milliseconds; a metadata change by copy keeps an S3 ETag but not
    the time)."""
    return (known is not None and listed is not None and known.etag == listed.etag
            and known.size == listed.size and int(known.mtime) == int(listed.mtime))


def _newest_ns(objects: list[ObjectInfo]) -> int:
    return int(max((o.mtime for o in objects), default=0) * 1_000_000_000)
