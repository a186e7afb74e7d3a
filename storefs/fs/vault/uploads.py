"""Write-once uploads into a vault (`-o vault_writes`): a new file is staged on disk while it is
written and becomes a new archive when its creator closes it (flush or release), once. From then on
it is an archive like any other: immutable, shown at once (the view records the upload until an
inventory lists it). An empty file is refused (a vault archive holds at least one byte); a failed
upload leaves nothing in the vault and the file is gone.

Locking: `VaultUploads._lock` guards the table of files being written; `Upload.lock` one file, held
during its upload too (writes to it wait, then fail: it is immutable by then). Never nested the other
way round.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import stat
import threading
import time
from pathlib import Path

from ...attrs import Attrs
from ...errors import AlreadyExists, InvalidArgument, NameTooLong, ReadOnly, StoreError
from ...vaults.base import ArchiveInfo, short_id
from .names import clean_path, upload_description
from .view import VaultView

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Upload:
    """A new file being written, uploaded as an archive when its creator closes it."""

    view: VaultView
    rel: str
    staged: Path
    fd: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    state: str = "open"             # open | uploaded | failed
    archive: ArchiveInfo | None = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def attrs(self) -> Attrs:
        """Writable while open; read-only once uploaded."""
        size = os.fstat(self.fd).st_size if self.state == "open" else (self.archive.size if self.archive else 0)
        mode = stat.S_IMODE(self.mode) if self.state == "open" else stat.S_IMODE(self.mode) & ~0o222
        return Attrs(mode=stat.S_IFREG | mode, size=size, uid=self.uid, gid=self.gid,
                     mtime_ns=self.mtime_ns, ctime_ns=self.mtime_ns)


def _description_limit(view: VaultView) -> int:
    return view.vault.capabilities.max_description_bytes


class VaultUploads:
    """The files being written into the vaults of one mount. `keep_uploads`: an uploaded file's
    bytes stay in the cache, readable without a retrieval job."""

    def __init__(self, keep_uploads: bool) -> None:
        self.keep_uploads = keep_uploads
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], Upload] = {}

    def pending(self, view: VaultView, rel: str) -> Upload | None:
        with self._lock:
            return self._pending.get((view.name, rel))

    def names_in(self, view: VaultView, rel_dir: str) -> set[str]:
        """Names of the files being written directly in directory `rel_dir` of `view`."""
        prefix = rel_dir.rstrip("/") + "/"
        with self._lock:
            return {rel[len(prefix):] for vault, rel in self._pending
                    if vault == view.name and rel.startswith(prefix) and "/" not in rel[len(prefix):]}

    def start(self, view: VaultView, rel: str, path: str, mode: int, uid: int, gid: int) -> Upload:
        """Stage a new file at `rel` (the caller checked that nothing is there). AlreadyExists if
        another create won the race to it."""
        if clean_path(rel[1:]) != rel[1:]:
            raise InvalidArgument(f"{path}: this name would not read back as the same path")
        if upload_description(rel[1:], time.time(), _description_limit(view)) is None:
            raise NameTooLong(f"{path}: the path does not fit in an archive description")
        staged = view.state.staging_file()
        fd = os.open(staged, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        up = Upload(view, rel, staged, fd, stat.S_IFREG | stat.S_IMODE(mode), uid, gid, time.time_ns())
        with self._lock:
            if (view.name, rel) in self._pending:  # lost a race with another create
                os.close(fd)
                staged.unlink(missing_ok=True)
                raise AlreadyExists(path)
            self._pending[(view.name, rel)] = up
        return up

    @staticmethod
    def write(up: Upload, data: bytes | memoryview, offset: int) -> int:
        with up.lock:
            if up.state != "open":
                raise ReadOnly(f"{up.rel}: already uploaded as an archive; archives are immutable")
            written = os.pwrite(up.fd, data, offset)
            up.mtime_ns = time.time_ns()
        return written

    @staticmethod
    def truncate(up: Upload, length: int) -> None:
        if length < 0:
            raise InvalidArgument("negative length")
        with up.lock:
            if up.state != "open":
                raise ReadOnly(f"{up.rel}: already uploaded as an archive; archives are immutable")
            os.ftruncate(up.fd, length)
            up.mtime_ns = time.time_ns()

    def finish(self, up: Upload) -> None:
        """Upload a written file as a new archive (once); the tree shows it at once."""
        with up.lock:
            if up.state == "uploaded":
                return
            if up.state == "failed":
                raise StoreError(f"{up.rel}: the upload failed earlier")
            size = os.fstat(up.fd).st_size
            if size == 0:
                raise InvalidArgument(f"{up.rel}: a vault archive cannot be empty; nothing was uploaded")
            view = up.view
            description = upload_description(up.rel[1:], up.mtime_ns / 1e9, _description_limit(view))
            if description is None:
                raise NameTooLong(f"{up.rel}: the path does not fit in an archive description")
            try:
                with open(up.staged, "rb") as f:
                    archive = view.vault.upload_archive(f, size, description)
            except BaseException as exc:
                up.state = "failed"
                self.drop(up)
                log.error("vault %s: upload of %s failed: %s; it is not in the vault", view.name, up.rel, exc)
                raise
            up.state, up.archive = "uploaded", archive
            view.add_uploaded(archive, up.rel)
            if self.keep_uploads:
                self._keep(up, archive)
            self.drop(up)
        log.info("vault %s: uploaded %s as archive %s (%d bytes)", view.name, up.rel,
                 short_id(archive.archive_id), size)

    @staticmethod
    def _keep(up: Upload, archive: ArchiveInfo) -> None:
        """Put the staged bytes in the cache as the archive's (verified by the upload itself)."""
        tmp = up.view.state.new_download()
        try:
            os.link(up.staged, tmp)
            up.view.state.commit_data(tmp, archive, archive.tree_hash, None)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("vault %s: cannot keep %s in the cache: %s", up.view.name, up.rel, exc)

    def drop(self, up: Upload) -> None:
        """Forget a file being written (uploaded, failed or empty) and remove its staged bytes."""
        with self._lock:
            if self._pending.get((up.view.name, up.rel)) is up:
                del self._pending[(up.view.name, up.rel)]
        up.staged.unlink(missing_ok=True)  # open descriptors keep reading it
