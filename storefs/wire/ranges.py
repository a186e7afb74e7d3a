"""Byte ranges on the wire: every rule about Range, Content-Range and the answers to a ranged GET,
written once. A provider's read_range() sends its request through WireClient.read_range(), which
applies these rules to the answer; nothing else parses Content-Range.

The rules, for a GET of bytes [start, end):
- 416: the range starts at or past the end of the object: no bytes.
- 412: the object no longer has the ETag the caller named (If-Match): RemoteChanged.
- 206: Content-Range, where sent, must start at `start`; a server that sends more than asked is cut to
  the range. The body must hold every byte of the range that exists (fewer only where Content-Range
  says the object ends): a short body whose Content-Length matches it (a proxy or server that lost part
  of the object) is otherwise taken for the data and cached (found by tests/fuse/test_faults.py). Short
  is Transient, like any cut-short transfer.
- 200: the server ignored Range and sends the whole object: [start, end) of it is taken, reading no
  further than `end`, unless at most TAIL_CHECK_MAX bytes follow: those are read too, so that a body cut
  short just past the range is Transient rather than taken for the object (a truncated 200 whose first
  bytes happen to cover the range; found by tests/sdk/test_wcs_sdk.py).
"""
from __future__ import annotations

import dataclasses
import re

from ..errors import InvalidArgument, ProtocolError, Transient
from .answer import AnswerHeaders, StreamedAnswer, declared_length

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
TAIL_CHECK_MAX = 1 << 20   # what is read past the range of a 200 to see that the body is whole


def range_header(start: int, end: int) -> str:
    """The Range value for bytes [start, end) (end exclusive, as everywhere in storefs)."""
    return f"bytes={start}-{end - 1}"


def check_exact_range(headers: AnswerHeaders, start: int, end: int, what: str) -> None:
    """A 206 whose body went straight into files (the fast transport's get_into, which took it only
    because its length was end - start) must say it holds exactly [start, end)."""
    got = parse_content_range(headers.get("Content-Range"), what)
    if (got.start, got.end) != (start, end):
        raise ProtocolError(f"{what}: server answered range {got.start}-{got.end - 1}")


def part_range_headers(start: int, end: int, total: int | None = None) -> dict[str, str]:
    """The header that places an uploaded part at bytes [start, end) of `total` (`*`: unknown)
    (Glacier/CAS UploadMultipartPart)."""
    return {"Content-Range": content_range(start, end, total)}


def content_range(start: int, end: int, total: int | None = None) -> str:
    """The Content-Range value of bytes [start, end) of `total` (`*`: unknown), for uploads that
    place a part (Glacier/CAS UploadMultipartPart)."""
    return f"bytes {start}-{end - 1}/{'*' if total is None else total}"


@dataclasses.dataclass(frozen=True)
class ContentRange:
    start: int
    end: int              # exclusive
    total: int | None     # None: `*`


def parse_content_range(text: str | None, what: str) -> ContentRange:
    """`bytes 0-9/10` -> ContentRange(0, 10, 10). ProtocolError when it is not one."""
    match = _CONTENT_RANGE.match((text or "").strip())
    if not match or int(match.group(2)) < int(match.group(1)):
        raise ProtocolError(f"{what}: bad Content-Range {(text or '')[:60]!r}")
    total = None if match.group(3) == "*" else int(match.group(3))
    return ContentRange(int(match.group(1)), int(match.group(2)) + 1, total)


def check_range(start: int, end: int, what: str) -> None:
    if start < 0 or end < start:
        raise InvalidArgument(f"{what}: bad range [{start}, {end})")


@dataclasses.dataclass(frozen=True)
class RangeRead:
    """The bytes of a ranged GET and the answer they came in."""

    pieces: list[bytes]
    status: int                  # 206, 200 (whole object, cut here) or 416 (nothing)
    headers: AnswerHeaders
    total: int | None            # the object's size where the answer said it

    @property
    def data(self) -> bytes:
        return self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)


def take_range(answer: StreamedAnswer, start: int, end: int, what: str, piece: int = 0) -> RangeRead:
    """Apply the module's rules to a 200, 206 or 416 answer to a GET of [start, end): the bytes, in
    pieces of `piece` bytes (one piece if 0), each read off the answer into its own bytes object."""
    if answer.status == 416:
        return RangeRead([], 416, answer.headers, None)
    if answer.status == 206:
        text = answer.headers.get("Content-Range")
        if text is None:   # some servers omit it: the body must then be the whole range
            first, last_end, total = start, end, None
        else:
            got = parse_content_range(text, what)
            if got.start != start:
                raise ProtocolError(f"{what}: server answered range {got.start}-{got.end - 1}")
            first, last_end, total = got.start, min(got.end, end), got.total
        want = last_end - first
        return RangeRead(_read_pieces(answer, want, piece, what), 206, answer.headers, total)
    # 200: the whole object. Take what we asked for, reading no further than `end`.
    declared = declared_length(answer.headers)
    skip = start
    while skip > 0:
        dropped = answer.read(min(skip, 1 << 20))
        if not dropped:
            return RangeRead([], 200, answer.headers, declared)   # the object ends before `start`
        skip -= len(dropped)
    want = end - start if declared is None else max(0, min(end, declared) - start)
    pieces = _read_pieces(answer, want, piece, what, exact=declared is not None)
    tail = 0 if declared is None else declared - max(start, min(end, declared))
    if 0 < tail <= TAIL_CHECK_MAX:
        _read_pieces(answer, tail, 0, what)
    return RangeRead(pieces, 200, answer.headers, declared)


def _read_pieces(answer: StreamedAnswer, want: int, piece: int, what: str, *, exact: bool = True) -> list[bytes]:
    """`want` bytes off the answer in pieces; fewer is Transient (cut short) where `exact`."""
    pieces: list[bytes] = []
    remaining = want
    while remaining > 0:
        size = min(piece or remaining, remaining)
        data = answer.read(size)
        if data:
            pieces.append(data)
            remaining -= len(data)
        if len(data) != size:
            break
    if remaining and exact:
        got = want - remaining
        raise Transient(f"{what}: {got} bytes for a {want}-byte range; reading it again")
    return pieces
