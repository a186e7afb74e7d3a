"""Writing a buffer wholly into a local file, where the failure is the local disk's, not the remote's;
and the arithmetic of cutting a byte range into block-sized pieces (no I/O)."""
from __future__ import annotations

import os

from .errors import LocalWriteError


def write_file(fd: int, data: bytes | memoryview, offset: int = 0) -> None:
    """All of `data` into `fd` at `offset`; a failure is LocalWriteError."""
    try:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
    except OSError as exc:
        raise LocalWriteError(exc) from None


def piece_sizes(start: int, end: int, piece: int) -> list[int]:
    """The sizes of the consecutive pieces of `piece` bytes [start, end) is cut into (the last may be
    shorter): the block cache's unit, for the reader and S3's piece reads."""
    return [min(piece, end - offset) for offset in range(start, end, piece)]


def cut_pieces(data: bytes, piece: int) -> list[bytes]:
    """`data` as consecutive pieces of `piece` bytes (the last may be shorter; none for no data)."""
    return [data[i:i + piece] for i in range(0, len(data), piece)]
