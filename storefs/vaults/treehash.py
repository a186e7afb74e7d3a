"""The SHA-256 tree hash of Amazon Glacier and Tencent CAS (one algorithm, PROTOCOLS.md §1.4).

1. Split the data into 1 MiB chunks (the last may be shorter); a leaf is the raw SHA-256 of a chunk.
2. Pair nodes left to right, parent = SHA-256(left_raw || right_raw); an odd trailing node is promoted
   unchanged to the next level. Repeat until one node is left; its lowercase hex is the tree hash.

Data of 1 MiB or less hashes to its plain SHA-256; empty data hashes to SHA-256(b"") (as botocore's
`calculate_tree_hash` does). Parts of a multipart upload whose size is 1 MiB x 2^n are whole subtrees,
so combining their tree hashes with the same pairing gives the whole archive's tree hash.

A byte range [start, end) is *tree-hash aligned* when it is one node of the archive's tree: the node at
level k covers the 2^k MiB-aligned block [j * 2^k MiB, (j+1) * 2^k MiB), cut short at the end of the data.
Servers return a tree hash for a job-output range only when the range is aligned.

Every function here is pure and thread-safe; `TreeHasher` instances are not shared between threads.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import BinaryIO

MiB = 1024 * 1024
CHUNK = MiB
EMPTY_TREE_HASH = hashlib.sha256(b"").hexdigest()

__all__ = [
    "CHUNK",
    "EMPTY_TREE_HASH",
    "MiB",
    "TreeHasher",
    "combine",
    "combine_hex",
    "align_outward",
    "is_mib_aligned_range",
    "is_tree_aligned",
    "is_valid_part_size",
    "leaf_hashes",
    "part_size_for",
    "to_raw",
    "tree_hash",
    "tree_hash_file",
    "tree_hash_raw",
    "tree_window",
    "window_size",
]


def to_raw(value: bytes | str) -> bytes:
    """A node as 32 raw bytes, from raw bytes or a hex string. ValueError for anything else."""
    if isinstance(value, str):
        raw = bytes.fromhex(value)
    else:
        raw = bytes(value)
    if len(raw) != 32:
        raise ValueError(f"a tree-hash node is 32 bytes, not {len(raw)}")
    return raw


def leaf_hashes(data: bytes | bytearray | memoryview) -> list[bytes]:
    """The raw SHA-256 of each 1 MiB chunk of `data` (no leaves for empty data)."""
    view = memoryview(data)
    return [hashlib.sha256(view[pos: pos + CHUNK]).digest() for pos in range(0, len(view), CHUNK)]


def combine(nodes: Sequence[bytes | str]) -> bytes:
    """Reduce sibling nodes (leaves, or the tree hashes of aligned parts) to their root, raw.

    The level-by-level pairing of the SDKs (`compute_combine_tree_etag_from_list`). ValueError for none.
    """
    level = [to_raw(n) for n in nodes]
    if not level:
        raise ValueError("no nodes to combine")
    while len(level) > 1:
        paired = [hashlib.sha256(level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])  # the odd one out is promoted unchanged
        level = paired
    return level[0]


def combine_hex(nodes: Sequence[bytes | str]) -> str:
    return combine(nodes).hex()


def tree_hash_raw(data: bytes | bytearray | memoryview) -> bytes:
    leaves = leaf_hashes(data)
    return combine(leaves) if leaves else bytes.fromhex(EMPTY_TREE_HASH)


def tree_hash(data: bytes | bytearray | memoryview) -> str:
    """The tree hash of data held in memory, as lowercase hex."""
    return tree_hash_raw(data).hex()


class TreeHasher:
    """Incremental tree hash (and optionally plain SHA-256) over a stream fed in pieces of any size.

    Memory is O(log n): full subtrees are merged as soon as they complete (a stack of perfect subtrees,
    folded from the right at the end, gives exactly the level-by-level pairing). `keep_leaves` also
    keeps every leaf, 32 bytes per MiB, for servers that answer range tree hashes later.
    """

    def __init__(self, *, linear: bool = False, keep_leaves: bool = False) -> None:
        self._pending = bytearray()
        self._stack: list[tuple[int, bytes]] = []  # (level, raw node), levels strictly decreasing
        self._linear = hashlib.sha256() if linear else None
        self.leaves: list[bytes] | None = [] if keep_leaves else None
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        self.size += len(view)
        if self._linear is not None:
            self._linear.update(view)
        pos = 0
        if self._pending:
            take = min(CHUNK - len(self._pending), len(view))
            self._pending += view[:take]
            pos = take
            if len(self._pending) < CHUNK:
                return
            self._push(hashlib.sha256(self._pending).digest())
            self._pending = bytearray()
        # Whole chunks straight from the caller's buffer: no copy.
        while len(view) - pos >= CHUNK:
            self._push(hashlib.sha256(view[pos: pos + CHUNK]).digest())
            pos += CHUNK
        if pos < len(view):
            self._pending += view[pos:]

    def _push(self, leaf: bytes) -> None:
        if self.leaves is not None:
            self.leaves.append(leaf)
        level, node = 0, leaf
        while self._stack and self._stack[-1][0] == level:
            _, left = self._stack.pop()
            node = hashlib.sha256(left + node).digest()
            level += 1
        self._stack.append((level, node))

    def digest(self) -> bytes:
        """The raw tree hash of everything fed so far (the hasher stays usable)."""
        stack = list(self._stack)
        if self._pending:
            leaf = hashlib.sha256(self._pending).digest()
            stack.append((0, leaf))
        if not stack:
            return bytes.fromhex(EMPTY_TREE_HASH)
        node = stack[-1][1]
        for _, left in reversed(stack[:-1]):
            node = hashlib.sha256(left + node).digest()
        return node

    def hexdigest(self) -> str:
        return self.digest().hex()

    def all_leaves(self) -> list[bytes]:
        """Every leaf including the partial last chunk (needs keep_leaves=True)."""
        if self.leaves is None:
            raise ValueError("TreeHasher(keep_leaves=True) is needed for leaves")
        tail = [hashlib.sha256(self._pending).digest()] if self._pending else []
        return self.leaves + tail

    def linear_hexdigest(self) -> str:
        """The plain SHA-256 of the data (needs linear=True): x-*-content-sha256."""
        if self._linear is None:
            raise ValueError("TreeHasher(linear=True) is needed for the linear SHA-256")
        return self._linear.hexdigest()


def tree_hash_file(fileobj: BinaryIO, length: int | None = None, *, linear: bool = False,
                   keep_leaves: bool = False, buffer_size: int = 8 * MiB) -> TreeHasher:
    """Feed `length` bytes (None: to EOF) from the current position of `fileobj` into a TreeHasher.

    Raises ValueError if the file ends before `length` bytes.
    """
    hasher = TreeHasher(linear=linear, keep_leaves=keep_leaves)
    remaining = length
    while remaining is None or remaining > 0:
        want = buffer_size if remaining is None else min(buffer_size, remaining)
        chunk = fileobj.read(want)
        if not chunk:
            if remaining is not None:
                raise ValueError(f"data ended {remaining} bytes early")
            break
        hasher.update(chunk)
        if remaining is not None:
            remaining -= len(chunk)
    return hasher


def iter_tree_hash(chunks: Iterable[bytes]) -> str:
    hasher = TreeHasher()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.hexdigest()


# ----------------------------------------------------------------------------------------------
# Ranges and part sizes


def is_tree_aligned(start: int, end: int, total: int) -> bool:
    """Whether bytes [start, end) of data of `total` bytes are one node of its tree hash."""
    if not 0 <= start < end <= total or start % MiB:
        return False
    length = end - start
    block = MiB
    while block < length:
        block *= 2
    # The node of level log2(block / MiB) that starts here: aligned to its own size, and either full
    # or cut short by the end of the data.
    return start % block == 0 and (length == block or end == total)


def is_mib_aligned_range(start: int, end: int, total: int) -> bool:
    """The RetrievalByteRange rule: start on a MiB boundary, end on one or at the end of the archive."""
    return 0 <= start < end <= total and start % MiB == 0 and (end % MiB == 0 or end == total)


def align_outward(start: int, end: int, total: int) -> tuple[int, int]:
    """[start, end) of data of `total` bytes widened to the RetrievalByteRange rule: start down to a
    MiB boundary, end up to one or to the end of the data. ValueError for a range outside the data."""
    if not 0 <= start < end or start >= total:
        raise ValueError(f"byte range {start}-{end - 1} is outside data of {total} bytes")
    return start - start % MiB, min(total, -(-end // MiB) * MiB)


def window_size(requested: int) -> int:
    """`requested` rounded up to 1 MiB x 2^n (at least 1 MiB, at most 4 GiB): a window of that size
    that starts at a multiple of it is one node of the tree."""
    size = MiB
    while size < min(requested, 4096 * MiB):
        size *= 2
    return size


def tree_window(offset: int, window: int, total: int) -> tuple[int, int]:
    """The tree-hash-aligned window of `window` bytes (1 MiB x 2^n) holding byte `offset` of data of
    `total` bytes: [k * window, min(total, (k+1) * window))."""
    if not 0 <= offset < total:
        raise ValueError(f"offset {offset} is outside data of {total} bytes")
    start = offset - offset % window
    return start, min(total, start + window)


def is_valid_part_size(part_size: int) -> bool:
    """1 MiB x 2^n, from 1 MiB to 4 GiB (Glacier and CAS)."""
    return MiB <= part_size <= 4096 * MiB and part_size % MiB == 0 and (part_size // MiB) & (
        part_size // MiB - 1) == 0


def part_size_for(size: int, preferred: int, max_parts: int = 10_000) -> int:
    """The smallest valid part size >= `preferred` (rounded up to 1 MiB x 2^n) that needs at most
    `max_parts` parts for `size` bytes. ValueError if even 4 GiB parts are not enough."""
    part = MiB
    while part < preferred:
        part *= 2
    while -(-size // part) > max_parts:
        part *= 2
    if part > 4096 * MiB:
        raise ValueError(f"{size} bytes need more than {max_parts} parts of 4 GiB")
    return part
