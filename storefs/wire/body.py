"""The one request body type of the wire layer: nothing, bytes in memory, a region of a local file
(sent from the file, never held whole), or `size` bytes of a stream (rewound before each try when it
can be; sent once when it cannot).

Above the wire, the store contract's put() takes a binary file object; the uploader hands it a
`FileSlice`, a file object that also names its region, so that a provider that can send straight from
the file (S3 over the fast transport) does, and every other one reads it like any file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from typing import BinaryIO, Iterator

from ..errors import InvalidArgument

CHUNK = 1 << 20   # what a streamed body is read and sent in


@dataclasses.dataclass(frozen=True)
class FileRegion:
    """`size` bytes of file descriptor `fd` from `offset` (a part of a staged file)."""
    fd: int
    offset: int
    size: int

    def chunks(self) -> Iterator[bytes]:
        """The region's bytes, CHUNK at a time; a file that turned out shorter is InvalidArgument."""
        offset, end = self.offset, self.offset + self.size
        while offset < end:
            chunk = os.pread(self.fd, min(CHUNK, end - offset), offset)
            if not chunk:
                raise _short(end - offset)
            offset += len(chunk)
            yield chunk

    def digest_into(self, digest: "hashlib._Hash") -> None:
        """Feed the region's bytes to `digest` through one buffer read into again and again: hashing
        every part of a large upload allocates no new 1 MiB object per chunk (less malloc churn, so a
        lower peak RSS in the threads that send parts)."""
        view = memoryview(bytearray(min(CHUNK, self.size)))
        offset, end = self.offset, self.offset + self.size
        while offset < end:
            got = os.preadv(self.fd, [view[:min(CHUNK, end - offset)]], offset)
            if not got:
                raise _short(end - offset)
            digest.update(view[:got])
            offset += got


def _short(missing: int) -> InvalidArgument:
    return InvalidArgument(f"the file ended {missing} bytes before the request body did")


class FileSlice(io.RawIOBase):
    """A readable, seekable file object over one region of an open file descriptor. The fd stays the
    caller's (closing the slice does not close it)."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__()
        self.region = FileRegion(fd, offset, size)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.region.size}[whence]
        self._pos = max(0, min(self.region.size, base + pos))
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        left = self.region.size - self._pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        data = os.pread(self.region.fd, n, self.region.offset + self._pos)
        self._pos += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:   # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def __len__(self) -> int:   # what is left: HTTP libraries size a body from it
        return self.region.size - self._pos


class Body:
    """What one request sends; see the module docstring. Make one per call, not per try."""

    def __init__(self, *, data: bytes = b"", region: FileRegion | None = None,
                 stream: BinaryIO | None = None, size: int | None = None) -> None:
        self.data = data
        self.region = region
        self.stream = stream
        if region is not None:
            self.size = region.size
        elif stream is not None:
            if size is None:
                raise InvalidArgument("a streamed body needs its size")
            self.size = size
        else:
            self.size = len(data)
        self._start: int | None = None
        if stream is not None:
            try:
                self._start = stream.tell() if stream.seekable() else None
            except (OSError, ValueError):   # a pipe or socket: sent once, never retried
                self._start = None
        self._sha256: str | None = None

    @classmethod
    def upload(cls, source: BinaryIO, size: int, *, in_memory_max: int = 0) -> Body:
        """The body of a put() of `size` bytes from `source`: the bytes themselves when there are at
        most `in_memory_max` of them (a small request goes out in one send), else the region of a
        FileSlice (sent from the file), else the stream."""
        if isinstance(source, FileSlice) and source.region.size - source.tell() != size:
            raise InvalidArgument(f"upload body has {source.region.size - source.tell()} bytes, not {size}")
        if size <= in_memory_max:
            return cls(data=read_exactly(source, size))
        if isinstance(source, FileSlice):
            region = source.region
            return cls(region=FileRegion(region.fd, region.offset + source.tell(), size))
        return cls(stream=source, size=size)

    @property
    def in_memory(self) -> bool:
        return self.region is None and self.stream is None

    @property
    def retryable(self) -> bool:
        """Whether a second try can send the same bytes again."""
        return self.stream is None or self._start is not None

    def sha256_hex(self) -> str:
        """SHA-256 of the payload (SigV4 signs it, CAS sends it), read 1 MiB at a time from a file.
        A stream cannot be hashed without reading it: InvalidArgument."""
        if self._sha256 is None:
            if self.stream is not None:
                raise InvalidArgument("a streamed body has no hash before it is sent")
            digest = hashlib.sha256()
            if self.region is not None:
                self.region.digest_into(digest)
            else:
                for chunk in self.chunks():
                    digest.update(chunk)
            self._sha256 = digest.hexdigest()
        return self._sha256

    def chunks(self) -> Iterator[bytes]:
        """The payload from its start, CHUNK at a time (a stream is rewound first where it can be)."""
        if self.region is not None:
            yield from self.region.chunks()
            return
        if self.stream is None:
            if self.data:
                yield self.data
            return
        if self._start is not None:
            self.stream.seek(self._start)
        remaining = self.size
        while remaining > 0:
            chunk = self.stream.read(min(CHUNK, remaining))
            if not chunk:
                # Our own input ran short: not retryable, and the server must not get a short object.
                raise InvalidArgument(f"upload body ended {remaining} bytes before its declared size")
            remaining -= len(chunk)
            yield chunk


EMPTY = Body()


def read_exactly(stream: BinaryIO, size: int) -> bytes:
    """Exactly `size` bytes of a file object; a stream that ends first is InvalidArgument (our own
    input ran short: an upload must never send a short object)."""
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            raise InvalidArgument(f"upload body ended {remaining} bytes short of {size}")
        chunks.append(chunk)
        remaining -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
