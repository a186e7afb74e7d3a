"""What one bucket store can do, declared once when the store is opened.

The contract (`contract.py`) says what every store does; this record says how each one differs: its
size limits, its quirks and its fast paths. Upload code, the reader and the namespace read it;
nothing above the providers checks a store's type or looks for a method on it.

Which conditional writes the server enforces is not here: for S3 only the endpoint can say (a probe,
once per remote), so it is the store's `conditional_writes()` and its record (conditions.py).
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a provider can do and its size limits. Upload code reads these; nothing checks types."""

    min_part_size: int = 5 * 1024 * 1024
    max_part_size: int = 5 * 1024 * 1024 * 1024
    max_parts: int = 10_000
    # Objects up to this size go up in one request; larger ones use multipart.
    single_put_max: int = 16 * 1024 * 1024
    # The server picks the part size (UFile's BlkSize): create_multipart() returns it.
    server_chosen_part_size: bool = False
    # Parts must be uploaded in order (WCS ctx chains within a block, COS v4 serial_upload).
    parts_in_order: bool = False
    # A multipart upload can begin before the object's size is known (create_multipart's `size` may be
    # 0), and a part number sent again replaces the bytes sent before under it: parts can go up while
    # a file is still being written (fs/bucket/streaming.py). S3 and local; not COS v4 (its slice init
    # needs the file size), nor UFile and WCS (not verified against their servers).
    streamed_uploads: bool = False
    # The server dates a multipart object by the time its upload began, not by its completion (AWS S3
    # documents this): a streamed file's mtime would be early, so streaming is off unless asked for.
    multipart_dated_at_start: bool = False
    server_side_copy: bool = True
    server_side_move: bool = False
    # Listing entries carry user metadata (UFile's UserMeta), so no per-entry stat is needed.
    list_has_metadata: bool = False
    # Folders are real objects of their own kind (COS v4) rather than `dir/` marker objects.
    real_folders: bool = False
    list_page_size: int = 1000
    # Keys directly under the mount root can be written (False for a `REMOTE:` mount, where the top
    # level holds buckets).
    root_writable: bool = True
    # Storage classes whose objects must be restored before a GET (S3 GLACIER…, UFile ARCHIVE). Non-empty:
    # the store has `restore(key, *, days, tier) -> bool` and stat() reports the restore state in S3's
    # `x-amz-restore` form as `meta["x-amz-restore"]` (UFile's X-Ufile-Restore has that form).
    archive_classes: frozenset[str] = frozenset()
    # How an interrupted multipart upload is resumed (fs/bucket/resume.py):
    # "list": the server lists an upload's parts (list_parts); each listed part is trusted only if its
    #         ETag is `part_etag` of the local bytes of that slice (S3, UFile, local);
    # "journal": the server cannot list parts, but a part's ETag stays valid for completion (WCS block
    #         contexts): the journal records each finished part with the MD5 of the bytes sent;
    # "": nothing can be resumed (COS v4): an interrupted upload starts again at byte 0.
    resume: str = ""
    # What a part's ETag is, for verifying a listed part against local bytes (store/partcheck.py):
    # "md5" (hex MD5 of the part: S3 without SSE-KMS/SSE-C, local), "ufile" (UFile's SHA-1 ETag),
    # "" (cannot be verified: listed parts are never trusted).
    part_etag: str = ""

    # Fast paths beyond the contract's required methods. Each flag says that the store has the
    # method named beside it; callers read the flag and never look for the method themselves.
    # S3 reads a range as pieces straight off the answer: read_range_pieces().
    ranged_pieces: bool = False
    # S3 writes a range into local files from the socket: read_range_to_files().
    ranged_into_files: bool = False
    # S3 sends many HEADs from one thread: stat_many().
    batched_stat: bool = False
    # S3 sends a part from a file descriptor without holding it in memory: upload_part_from_file().
    parts_from_files: bool = False
