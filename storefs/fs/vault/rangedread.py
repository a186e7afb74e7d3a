"""An open archive served piece by piece: the reads of a handle opened before its whole bytes are here.

VaultFS opens an archive this way when `-o vault_ranges` applies to it (then a read at offset X that
no cached bytes hold retrieves a window around X: rangejobs.py), or when some of its ranges are
already cached or on their way (`storefs restore --range`; then a read outside them retrieves the
whole archive, as an open without ranges does). A read never comes back short before the end of the
archive (FUSE would take a short read for the end of the file): it is filled from as many pieces as
it spans, or fails with the not-ready errno. Only the piece holding a read's *first* byte may start
a job: the kernel's read-ahead asks for bytes past what the program read, and bytes past a cached
piece must not cost a window (or, without vault_ranges, the whole archive) that nobody asked for.
A read that fails that way is asked again by the kernel page by page, so a program that really
reads on gets to the next piece's first byte, which starts its job.

Read-ahead also comes as requests of its own that *start* just past a piece this handle read (the
kernel reads ahead of a sequential reader). So the first request for bytes at most READ_AHEAD_SLACK
past the end of a piece this handle read is refused without a job, once per offset: a program that
really reads there makes the kernel ask for that page again at once (its synchronous read after
failed read-ahead), and that second request starts the job. Pure read-ahead is never asked again.
(Opening these handles with FUSE's direct_io would say it outright; that flag belongs to the FUSE
edge, fuse/ops.py.) The not-ready errno is — never EAGAIN, though: read(2)
callers take EAGAIN for "no data yet on a non-blocking descriptor" (GNU `tail -c` prints nothing
and exits 0), so a read uses EREMOTE ("Object is remote") where `vault_errno` says EAGAIN.

The data files a read uses stay open, with the shared lock that keeps them from eviction
(datacache.py), until a later read needs a piece they do not hold (then those the new read does not
touch are let go: a handle reading a huge archive window by window pins only what it reads now) or
the handle is released.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import threading
from collections.abc import Callable

from ...errors import ArchiveNotReady, ProtocolError
from ...retrieval.poll import JobPoll
from ...vaults.base import ArchiveInfo
from ..sinks import Sink
from .datacache import open_pinned
from .rangejobs import Piece
from .retrievals import Retrievals

# A piece evicted between its look-up and its open is looked up again this many times.
_REOPEN_TRIES = 3
# How far past a piece the kernel's read-ahead starts its own requests (its window is 128 KiB by
# default; FUSE's max_readahead caps it); generous, since a real read there is only asked twice.
READ_AHEAD_SLACK = 1 << 20


@dataclasses.dataclass(eq=False)
class _Pinned:
    """An open data file holding archive bytes [start, end); `users`: reads using its fd right now
    (FUSE reads one handle from several threads: an fd in use is never closed under them)."""

    start: int
    end: int
    fd: int
    users: int = 0


class RangedReader:
    """The reads of one open archive. `window`: bytes of the job a read outside cached pieces starts
    (None: such a read retrieves the whole archive); `new_poll` makes the wait of one read."""

    def __init__(self, retrievals: Retrievals, archive: ArchiveInfo, where: str, window: int | None,
                 new_poll: Callable[[], JobPoll], not_ready_errno: int) -> None:
        self.retrievals = retrievals
        self.archive = archive
        self.where = where
        self.window = window
        self.new_poll = new_poll
        self.not_ready_errno = errno.EREMOTE if not_ready_errno == errno.EAGAIN else not_ready_errno
        self._lock = threading.Lock()
        self._open: list[_Pinned] = []
        self._read_ends: set[int] = set()   # ends of the pieces this handle has read from
        self._refused: set[int] = set()     # offsets refused once as likely read-ahead

    def _take(self, pos: int) -> _Pinned | None:
        """A pinned piece holding `pos`, marked in use."""
        with self._lock:
            pinned = next((p for p in self._open if p.start <= pos < p.end), None)
            if pinned is not None:
                pinned.users += 1
            return pinned

    def _done(self, pinned: _Pinned) -> None:
        with self._lock:
            pinned.users -= 1

    def _locate(self, pos: int, first: bool) -> Piece:
        ranges = self.retrievals.ranges
        piece = ranges.cached_piece(self.archive, pos)
        if piece is not None:
            return piece
        if first and not self._likely_read_ahead(pos):
            return ranges.fetch(self.archive, pos, self.window, self.new_poll(), self.where, self.not_ready_errno)
        piece = ranges.ready_piece(self.archive, pos)
        if piece is None:  # read-ahead past what is here: no job for it (see the module docstring)
            exc = ArchiveNotReady(f"{self.where}: bytes from {pos} on are not retrieved yet")
            exc.errno = self.not_ready_errno
            raise exc
        return piece

    def _likely_read_ahead(self, pos: int) -> bool:
        """A request starting just past a piece this handle read, asked for the first time."""
        with self._lock:
            if pos in self._refused or not any(end <= pos < end + READ_AHEAD_SLACK for end in self._read_ends):
                return False
            self._refused.add(pos)
            return True

    def _let_go(self, start: int, end: int) -> None:
        """Unpin the idle pieces that hold nothing of [start, end): they may be evicted now."""
        with self._lock:
            gone = [p for p in self._open if p.users == 0 and not (p.start < end and start < p.end)]
            self._open = [p for p in self._open if p not in gone]
        for pinned in gone:
            os.close(pinned.fd)

    def _piece(self, pos: int, read: tuple[int, int]) -> _Pinned:
        """The pinned piece holding `pos`, for the read of bytes `read` ([start, end))."""
        pinned = self._take(pos)
        if pinned is not None:
            return pinned
        self._let_go(*read)  # before a download that may have to make room
        for _ in range(_REOPEN_TRIES):
            piece = self._locate(pos, pos == read[0])
            fd = open_pinned(piece.path)
            if fd is None:
                continue  # evicted just now: look again (a download, if need be)
            pinned = _Pinned(piece.start, piece.end, fd, users=1)
            with self._lock:
                self._open.append(pinned)
                self._read_ends.add(piece.end)
            return pinned
        raise ProtocolError(f"{self.where}: cached bytes vanished {_REOPEN_TRIES} times while being opened")

    def read_to(self, sink: Sink, offset: int) -> int:
        want = max(0, min(sink.size, self.archive.size - offset))
        done = 0
        while done < want:
            pos = offset + done
            pinned = self._piece(pos, (offset, offset + want))
            try:
                n = sink.take_file(pinned.fd, pos - pinned.start, min(want - done, pinned.end - pos))
            finally:
                self._done(pinned)
            if n <= 0:
                raise ProtocolError(f"{self.where}: cached bytes {pinned.start}-{pinned.end - 1} end early")
            done += n
        return done

    def close(self) -> None:
        with self._lock:
            pieces, self._open = self._open, []
        for pinned in pieces:
            os.close(pinned.fd)
