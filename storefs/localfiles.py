"""Writing a buffer wholly into a local file, where the failure is the local disk's, not the remote's."""
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
