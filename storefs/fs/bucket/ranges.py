"""A remote byte range as block-sized pieces, the way the reader fetches it: into memory or straight
into block-cache files. Each store's fast path is taken where its features record declares it (S3
reads pieces off the answer, or writes them into files from the socket); otherwise the range is read
whole with the contract's read_range and cut.
"""
from __future__ import annotations

from typing import Sequence

from ...errors import InvalidArgument, Transient
from ...localfiles import write_file
from ...store.contract import ObjectStore


def read_pieces(store: ObjectStore, key: str, start: int, end: int, piece: int, *,
                if_match: str | None = None) -> list[bytes]:
    """Bytes [start, end) as consecutive pieces of `piece` bytes (the last may be shorter): the block
    cache's unit. A store with `ranged_pieces` (S3) reads each piece straight off its answer; for the
    others the range is read whole and cut, which costs a copy of every byte."""
    if store.capabilities.ranged_pieces:
        return store.read_range_pieces(key, start, end, piece, if_match=if_match)
    return cut_pieces(store.read_range(key, start, end, if_match=if_match), piece)


def read_all_pieces(store: ObjectStore, key: str, start: int, end: int, piece: int, *,
                    if_match: str | None = None) -> list[bytes]:
    """read_pieces, where fewer bytes than asked for (the object is shorter than the range, or the
    answer was cut) is Transient: what goes into the block cache must be exactly the range, or it
    would be served as the object's bytes until evicted."""
    pieces = read_pieces(store, key, start, end, piece, if_match=if_match)
    if [len(data) for data in pieces] != piece_sizes(start, end, piece):
        got = sum(len(data) for data in pieces)
        raise Transient(f"{key}: asked for {end - start} bytes at {start}, got {got}")
    return pieces


def read_to_files(store: ObjectStore, key: str, start: int, end: int, piece: int, files: Sequence[int], *,
                  if_match: str | None = None) -> None:
    """Bytes [start, end) into `files`, piece by piece as read_pieces cuts them, each from offset 0
    of its file (block-cache files; see blockcache.reserve). A store with `ranged_into_files` (S3) writes
    them itself, from the socket, where it can; otherwise the pieces are read and written. A short
    answer is Transient; a failed local write raises LocalWriteError."""
    if store.capabilities.ranged_into_files and \
            store.read_range_to_files(key, start, end, piece, files, if_match=if_match):
        return
    if len(files) != len(piece_sizes(start, end, piece)):
        raise InvalidArgument(f"bad range [{start}, {end}) in {len(files)} files for {key!r}")
    for fd, data in zip(files, read_all_pieces(store, key, start, end, piece, if_match=if_match)):
        write_file(fd, data)


def piece_sizes(start: int, end: int, piece: int) -> list[int]:
    """The sizes of the consecutive pieces of `piece` bytes [start, end) is cut into (the last may be
    shorter): the block cache's unit, for the reader."""
    return [min(piece, end - offset) for offset in range(start, end, piece)]


def cut_pieces(data: bytes, piece: int) -> list[bytes]:
    """`data` as consecutive pieces of `piece` bytes (the last may be shorter; none for no data)."""
    return [data[i:i + piece] for i in range(0, len(data), piece)]


def stretches(numbers: list[int]) -> list[tuple[int, int]]:
    """Ascending `numbers` as (first, count) runs of consecutive ones: [1, 2, 3, 7] -> [(1, 3), (7, 1)]."""
    runs: list[tuple[int, int]] = []
    for number in numbers:
        if runs and runs[-1][0] + runs[-1][1] == number:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((number, 1))
    return runs
