"""New vault files that are large go up in parts; after a crash or a failed try their upload resumes
from the parts the service holds instead of starting again (issue #13, resumable uploads).

As for buckets (fs/bucket/resume.py), the staging journal keeps what a resume needs: once a multipart
upload exists, the file's journal entry records its id, part size and description (`upload`). The
next try, in this run or the next mount, lists the parts the service holds and reuses each one whose
tree hash is the tree hash of the local bytes of its range (vaults/base.resume_in_parts, as the CAS
SDK's resume checks); an upload the service forgot (CAS keeps an upload id 24 h) starts afresh, and so
does one begun for other bytes or another description (the file was renamed or re-timed before a
retry): that one is aborted.

"This mount started it" is the journal's ledger: a record written before the upload is created and
again with its id, removed when it is completed. At mount start an upload of the ledger that no
journal entry references is aborted (`sweep_orphans`); uploads not in the ledger are never touched:
another host may be writing them.
"""
from __future__ import annotations

import logging
import time
from typing import BinaryIO, Callable

from ...errors import NotFound, StoreError
from ...vaults.base import ArchiveInfo, ArchiveUpload, ArchiveVault, abort_orphan_uploads, resume_in_parts, short_id
from ..bucket.journal import Journal, JournalEntry

log = logging.getLogger(__name__)

LEDGER_MAX_AGE = 24 * 3600.0   # a ledger record without an id (crash before the answer) is dropped then


def send(vault: ArchiveVault, journal: Journal, body: BinaryIO, size: int, description: str, rel: str,
         record: dict | None, save: Callable[[dict | None], None]) -> ArchiveInfo:
    """Upload `size` bytes of `body` as an archive, resuming the multipart upload `record` (the
    journal's `upload` field) where it still fits. `save(record)` writes the file's journal entry with
    that upload record (None: without one)."""
    if record is not None:
        upload = ArchiveUpload(record["upload_id"], int(record["part_size"]), record.get("description", ""))
        if int(record.get("size", -1)) == size and upload.description == description:
            try:
                archive = resume_in_parts(vault, upload, body, size)
            except NotFound:
                log.warning("%s: the service no longer has upload %s; starting again", rel, short_id(upload.upload_id))
                body.seek(0)
            else:
                log.warning("%s: resumed upload %s", rel, short_id(upload.upload_id))
                _forget(journal, record, save)
                return archive
        else:   # begun for other bytes or another description: never completed as this file
            try:
                vault.abort_multipart(upload)
            except StoreError as exc:
                log.info("%s: aborting the stale upload %s: %s", rel, short_id(upload.upload_id), exc)
        _forget(journal, record, save)
    token = journal.ledger_write(None, rel)
    started: list[dict] = []

    def initiated(upload: ArchiveUpload) -> None:
        journal.ledger_write(upload.upload_id, rel, token=token)
        new = {"upload_id": upload.upload_id, "part_size": upload.part_size, "description": description,
               "size": size, "token": token}
        started.append(new)
        save(new)

    try:
        archive = vault.upload_archive(body, size, description, on_initiated=initiated)
    except BaseException:
        if not started:   # nothing was begun on the service: nothing to resume or abort
            journal.ledger_remove(token)
        raise
    journal.ledger_remove(token)
    return archive


def _forget(journal: Journal, record: dict, save: Callable[[dict | None], None]) -> None:
    if record.get("token"):
        journal.ledger_remove(record["token"])
    save(None)


def sweep_orphans(vault: ArchiveVault, journal: Journal, entries: list[JournalEntry]) -> list[str]:
    """Abort the multipart uploads an earlier run of this staging area started that no journal entry
    will resume; drop their ledger records. No request when the ledger is empty."""
    records = journal.ledger_load()
    if not records:
        return []
    referenced = {e.upload["upload_id"] for e in entries if isinstance(e.upload, dict) and e.upload.get("upload_id")}
    started = {r["upload_id"] for r in records if r.get("upload_id")}
    aborted = abort_orphan_uploads(vault, started - referenced, referenced) if started - referenced else []
    now = time.time()
    for record in records:
        upload_id = record.get("upload_id")
        if (upload_id and upload_id not in referenced) or (
                not upload_id and now - float(record.get("requested", now)) > LEDGER_MAX_AGE):
            journal.ledger_remove(record["token"])
    for upload_id in aborted:
        log.warning("aborted the unfinished upload %s that an earlier run left", short_id(upload_id))
    return aborted
