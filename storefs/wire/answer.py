"""The one answer type of the wire layer, whichever transport carried it: a status, headers looked up
in any case, and either the whole body (`Answer`) or a body still to be read (`StreamedAnswer`)."""
from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator, Protocol


class AnswerHeaders(dict):
    """An answer's headers by lower-cased name, looked up in any case. (requests' CaseInsensitiveDict
    costs about 2 us per header to fill, and `ls -l` makes a HEAD with a dozen headers per entry.)"""

    __slots__ = ()

    @classmethod
    def of(cls, items: Iterable[tuple[str, str]]) -> AnswerHeaders:
        return cls((name.lower(), value) for name, value in items)

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return dict.get(self, name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


@dataclasses.dataclass(frozen=True)
class Answer:
    """A complete answer."""

    status: int
    headers: AnswerHeaders
    content: bytes


class StreamedAnswer(Protocol):
    """An answer whose body is read as it arrives. Transport failures while reading are Transient.
    The caller closes it (or uses it in a `with`)."""

    status: int
    headers: AnswerHeaders

    def read(self, size: int) -> bytes:
        """Up to `size` bytes of the body as sent (never decoded); fewer only where it ends."""

    def chunks(self, size: int) -> Iterator[bytes]:
        """The rest of the body, `size` bytes at a time."""

    def close(self) -> None:
        ...

    def __enter__(self) -> StreamedAnswer:
        ...

    def __exit__(self, *exc: object) -> None:
        ...


def declared_length(headers: AnswerHeaders) -> int | None:
    """The Content-Length of an answer, None where it has none (or a malformed one)."""
    text = headers.get("Content-Length")
    return int(text) if text is not None and text.strip().isdigit() else None


def strip_etag(etag: str | None) -> str:
    """An entity tag without its quotes and weak marker (`W/"abc"` -> `abc`)."""
    return (etag or "").strip().removeprefix("W/").strip('"')
