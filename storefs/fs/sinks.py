"""Where the bytes of one read go: a buffer (the FUSE reply buffer, a bytearray) or a pipe.

A read is served in pieces, in order (a block from a run file, the next from the block cache, a tail
from memory). Each source hands its piece to the sink: `take_file` for bytes in a file, `take_bytes`
for bytes in memory. A BufferSink copies them into its buffer (preadv). A PipeSink splices them from
the file into a pipe, where the FUSE edge hands the pipe to libfuse, which splices it to the kernel:
the bytes of a cached block are then never copied into the daemon's memory (a cold sequential read
spent ~12% of the mount's CPU on that copy and on pinning the reply buffer).

A piece that turns out short (a cache file shorter than its record says) is taken again from another
source: `undo_to` forgets it. A buffer simply takes the bytes again; a pipe cannot take back what it
holds, so it raises SinkSpoiled and the caller serves the whole read again through a buffer.
"""
from __future__ import annotations

import os
from typing import Protocol


class SinkSpoiled(Exception):
    """The pipe holds bytes of a piece that was abandoned: serve the read again through a buffer."""


class Sink(Protocol):
    size: int    # bytes the read asks for at most
    taken: int   # bytes taken so far

    def take_file(self, fd: int, pos: int, length: int) -> int:
        """Bytes [pos, pos+length) of the file `fd`: how many were taken (fewer only at its end)."""

    def take_bytes(self, data: bytes | memoryview) -> None:
        """`data`, whole."""

    def undo_to(self, taken: int) -> None:
        """Forget what was taken after the first `taken` bytes."""


class BufferSink:
    def __init__(self, into: memoryview) -> None:
        self.into, self.size, self.taken = into, len(into), 0

    def take_file(self, fd: int, pos: int, length: int) -> int:
        got = os.preadv(fd, [self.into[self.taken:self.taken + length]], pos)
        self.taken += got
        return got

    def take_bytes(self, data: bytes | memoryview) -> None:
        self.into[self.taken:self.taken + len(data)] = data
        self.taken += len(data)

    def undo_to(self, taken: int) -> None:
        self.taken = taken


class PipeSink:
    """Into the write end of a pipe that can hold `size` bytes (the caller sized it; a full pipe
    would block the splice forever, so the write end should be non-blocking: EAGAIN spoils the read)."""

    def __init__(self, pipe_w: int, size: int) -> None:
        self.pipe_w, self.size, self.taken = pipe_w, size, 0

    def take_file(self, fd: int, pos: int, length: int) -> int:
        got = 0
        while got < length:
            try:
                n = os.splice(fd, self.pipe_w, length - got, offset_src=pos + got)
            except BlockingIOError:
                raise SinkSpoiled("the pipe is full") from None
            if not n:
                break
            got += n
        self.taken += got
        return got

    def take_bytes(self, data: bytes | memoryview) -> None:
        view, done = memoryview(data), 0
        while done < len(view):
            try:
                done += os.write(self.pipe_w, view[done:])
            except BlockingIOError:
                raise SinkSpoiled("the pipe is full") from None
        self.taken += done

    def undo_to(self, taken: int) -> None:
        if taken != self.taken:
            raise SinkSpoiled(f"{self.taken - taken} bytes of an abandoned piece are in the pipe")
