"""The bucket-provider contract: what every provider (local, s3, cos, wcs, ufile) implements.

Providers speak a wire protocol and nothing else: they hold no caches and no policy. Quirks are data
(`Capabilities`), never isinstance checks in the layers above. Every wire error is translated once into
`storefs.errors` (NotFound, AccessDenied, Transient, …).

Keys are the provider's object keys, relative to the bucket, `/`-separated, never starting with `/`.
A key ending in `/` is a directory marker. Metadata (`meta`) is a flat str→str mapping with lower-case
names *without* any vendor prefix (`mtime`, `mode`, …); each provider maps them onto its own headers
(`x-amz-meta-mtime`, …) and back.
"""
from __future__ import annotations

import dataclasses
from typing import BinaryIO, Iterator, Mapping, Protocol, Sequence, runtime_checkable

from ..errors import StoreError
# Re-exported for providers/s3.py, which imports them from here until it takes them from localfiles.
from .conditions import ConditionalWrites, WriteCondition
from .features import Capabilities


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    mtime: float  # server's last-modified time, seconds since the epoch
    meta: Mapping[str, str] = dataclasses.field(default_factory=dict)
    storage_class: str | None = None
    # Whether `meta` is complete. Listings of most providers return no user metadata.
    meta_complete: bool = True

    @property
    def is_dir_marker(self) -> bool:
        return self.key.endswith("/")


@dataclasses.dataclass(frozen=True)
class ListPage:
    """One page of a listing. With a delimiter, `prefixes` are the sub-"directories" (ending in it)."""

    objects: list[ObjectInfo]
    prefixes: list[str]
    next_token: str | None  # None: this was the last page


@dataclasses.dataclass
class MultipartUpload:
    key: str
    upload_id: str
    # The part size the upload must use (chosen by the server for UFile, by us elsewhere).
    part_size: int
    # Provider-specific state that must survive until completion (WCS block contexts, …), JSON-able.
    state: dict = dataclasses.field(default_factory=dict)
    # When the server says the upload was initiated (listings), epoch seconds; None where unknown.
    started: float | None = None


@dataclasses.dataclass(frozen=True)
class UploadedPart:
    number: int  # 1-based everywhere above the provider; a provider that counts from 0 converts
    etag: str
    size: int


@runtime_checkable
class ObjectStore(Protocol):
    """One bucket of one provider."""

    capabilities: Capabilities
    name: str  # the bucket name, for messages and cache keys

    def stat(self, key: str) -> ObjectInfo:
        """Metadata of one object. Raises NotFound."""

    def list(self, prefix: str, *, delimiter: str = "/", token: str | None = None,
             limit: int | None = None) -> ListPage:
        """One page of keys under `prefix` in key order. `delimiter=""` lists recursively."""

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        """Bytes [start, end) of an object (end is exclusive). RemoteChanged if `if_match` fails."""

    def put(self, key: str, body: BinaryIO, size: int, meta: Mapping[str, str], *,
            condition: WriteCondition | None = None) -> ObjectInfo:
        """Create or replace an object in one request. `body` is read for exactly `size` bytes.
        `condition` (given only where conditional_writes() enforces it): PreconditionFailed, and
        nothing written, when the object exists (condition.absent) or has another ETag."""

    def create_multipart(self, key: str, size: int, part_size: int, meta: Mapping[str, str], *,
                         condition: WriteCondition | None = None) -> MultipartUpload:
        """Start a multipart upload; the returned part_size is the one to use. `condition` is the one
        complete_multipart() will be given (COS v4 sends it here already)."""

    def upload_part(self, upload: MultipartUpload, number: int, offset: int, data: bytes) -> UploadedPart:
        """Upload part `number` (1-based) that starts at byte `offset` of the object."""

    def complete_multipart(self, upload: MultipartUpload, parts: list[UploadedPart], *,
                           condition: WriteCondition | None = None) -> ObjectInfo:
        """PreconditionFailed when `condition` does not hold; the upload is then still to be aborted."""

    def abort_multipart(self, upload: MultipartUpload) -> None:
        ...

    def list_multipart(self) -> list[MultipartUpload]:
        """Unfinished multipart uploads of the bucket (for aborting orphans at start), with `started`
        where the server says. [] if the protocol cannot say."""

    def list_parts(self, upload: MultipartUpload) -> list[UploadedPart]:
        """The parts the server holds for `upload`, in number order, each with the ETag the server
        keeps for it and its size (for resuming after a crash; capabilities.resume == "list").
        NotFound when the upload is gone (completed, aborted, expired)."""

    def delete(self, key: str) -> None:
        """Delete an object. Idempotent: deleting a missing key is not an error."""

    def copy(self, src: str, dst: str, meta: Mapping[str, str] | None = None) -> ObjectInfo:
        """Server-side copy, replacing metadata with `meta` when given. NotSupported if impossible."""

    def move(self, src: str, dst: str) -> ObjectInfo:
        """Server-side move (WCS, COS v4). NotSupported where the protocol has none."""

    def conditional_writes(self, key: str) -> ConditionalWrites:
        """The write conditions the server enforces for `key` (its bucket): declared, or probed once per
        remote on first need (S3). Never raises: a probe that fails says NO_CONDITIONAL_WRITES."""

    def set_meta(self, key: str, meta: Mapping[str, str]) -> ObjectInfo:
        """Replace an object's user metadata (S3: copy onto itself). NotSupported if impossible."""

    # -- fast paths: called only where `capabilities` declares them (see features.py) -----------------

    def read_range_pieces(self, key: str, start: int, end: int, piece: int, *,
                          if_match: str | None = None) -> list[bytes]:
        """read_range as pieces of `piece` bytes, each read off the answer (capabilities.ranged_pieces)."""

    def read_range_to_files(self, key: str, start: int, end: int, piece: int, files: Sequence[int], *,
                            if_match: str | None = None) -> bool:
        """Bytes [start, end) into `files` as fs/bucket/ranges.read_to_files cuts them; False, with nothing written,
        when the answer is not exactly that range (capabilities.ranged_into_files)."""

    def stat_many(self, keys: list[str], parallel: int) -> list[ObjectInfo | StoreError]:
        """stat() of every key, each tried once: a StoreError in place of a failed one
        (capabilities.batched_stat)."""

    def upload_part_from_file(self, upload: MultipartUpload, number: int, fd: int, offset: int,
                              size: int) -> UploadedPart:
        """upload_part of bytes [offset, offset+size) of `fd`, sent from the file
        (capabilities.parts_from_files)."""


@runtime_checkable
class Provider(Protocol):
    """A connection to one account of one service: the factory of per-bucket stores."""

    remote: str  # the config section name

    def check(self, bucket: str | None) -> None:
        """Prove that the endpoint answers and the credentials work (and the bucket exists, if given).
        Raises AccessDenied / NotFound / Transient with a message fit for the user."""

    def list_buckets(self) -> list[str]:
        """Bucket names. NotSupported where the protocol cannot list them."""

    def bucket(self, name: str) -> ObjectStore:
        ...

    def close(self) -> None:
        ...


def iter_list(store: ObjectStore, prefix: str, *, delimiter: str = "/") -> Iterator[ListPage]:
    """Every page of a listing, one request per page, lazily."""
    token: str | None = None
    while True:
        page = store.list(prefix, delimiter=delimiter, token=token)
        yield page
        if not page.next_token:
            return
        token = page.next_token
