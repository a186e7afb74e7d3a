"""Resumable multipart uploads: what the journal keeps of an upload in progress, how the parts the
server already holds are trusted again after a crash, and which unfinished uploads are aborted.

The record (`UploadRecord`, in the journal entry's `upload` field) is written once the upload exists:
its id, part size, provider state, the staged file's identity (size and mtime_ns when the upload
began) and, where the server cannot list parts (`Capabilities.resume == "journal"`, WCS), every
finished part with the MD5 of the bytes sent. At the next try (same run or next mount) the uploader:

- starts afresh, aborting the old upload, if the file is not the one the upload began with;
- else lists the parts (`list_parts`) or takes them from the record, and reuses a part only if it has
  the expected size and its ETag (or recorded MD5) is the hash of the local bytes of that slice now
  (`store/partcheck.py`); everything else is sent again; then completes.

"This mount started it" is the ledger (`Journal.ledger_*`): a record `uploads/<token>.json` in the
staging directory, written *before* the upload is created (key, time, no id yet) and again with the
id once the server answered, removed when the upload is completed or aborted. At mount start
(`sweep_orphans`), a ledger upload that no journal entry references is aborted at once (the staging
directory is locked to one mount, so nobody else writes it); a ledger record without an id (a crash
between the request and its answer) matches the server's unfinished uploads of its key started
around its time, and those are aborted only once they are older than a day (another host writing
the same key may own one); such a record is dropped after a day. Uploads not in the ledger are never
touched.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
import time
from typing import Any, Callable

from ...errors import NotFound, StoreError
from ...store.contract import MultipartUpload, ObjectStore, UploadedPart
from ...store.partcheck import part_matches
from .journal import Journal

log = logging.getLogger(__name__)

# An upload of someone else may be younger than this: it is never aborted on a guess.
ORPHAN_MIN_AGE = 24 * 3600.0
# A server upload matches a ledger record without an id if it began within this window of the request.
MATCH_WINDOW = (-300.0, 3600.0)


@dataclasses.dataclass
class UploadRecord:
    """A multipart upload in progress, as the journal keeps it (JSON-able)."""

    upload_id: str
    key: str
    part_size: int
    size: int                 # the staged file's size when the upload began
    mtime_ns: int             # and its mtime: a file changed since then never reuses parts
    token: str = ""           # its ledger record
    state: dict = dataclasses.field(default_factory=dict)
    # "journal" resume only: [number, etag, size, md5 of the bytes sent], as parts finish.
    parts: list[list[Any]] = dataclasses.field(default_factory=list)
    # Begun while the file was written (streaming.py): created without an mtime, whose completion
    # dates the file by its Last-Modified.
    streamed: bool = False

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> UploadRecord:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})

    def upload(self) -> MultipartUpload:
        return MultipartUpload(key=self.key, upload_id=self.upload_id, part_size=self.part_size,
                               state=dict(self.state))

    def same_file(self, key: str, size: int, mtime_ns: int) -> bool:
        return self.key == key and self.size == size and self.mtime_ns == mtime_ns


class UploadTracker:
    """The committer's side of one file's multipart upload: the uploader tells it what happens, it
    keeps the journal entry and the ledger in step. `record` is the upload to resume, if any."""

    def __init__(self, journal: Journal, record: UploadRecord | None,
                 save: Callable[[UploadRecord | None], None]) -> None:
        """`save(record)` writes the file's journal entry with that upload record (None: without)."""
        self.journal = journal
        self.record = record
        self._save = save
        self._lock = threading.Lock()

    def intent(self, key: str) -> str:
        """Before the upload is created: the ledger learns that this mount is about to start one."""
        return self.journal.ledger_write(None, key)

    def started(self, token: str, upload: MultipartUpload, size: int, mtime_ns: int) -> None:
        record = UploadRecord(upload_id=upload.upload_id, key=upload.key, part_size=upload.part_size, size=size,
                              mtime_ns=mtime_ns, token=token, state=_jsonable(upload.state))
        self.journal.ledger_write(upload.upload_id, upload.key, token=token)
        with self._lock:
            self.record = record
            self._save(record)

    def part_done(self, part: UploadedPart, md5: str, state: dict) -> None:
        """A part of a "journal"-resumed upload finished: recorded before the next one counts."""
        with self._lock:
            if self.record is None:
                return
            self.record.parts.append([part.number, part.etag, part.size, md5])
            self.record.state = _jsonable(state)
            self._save(self.record)

    def ended(self) -> None:
        """The upload was completed or aborted: nothing is left to resume or to abort."""
        with self._lock:
            record, self.record = self.record, None
        if record is not None:
            if record.token:
                self.journal.ledger_remove(record.token)
            self._save(None)


def _jsonable(state: dict) -> dict:
    return {k: v for k, v in state.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}


def verified_parts(store: ObjectStore, upload: MultipartUpload, fd: int, size: int,
                   record: UploadRecord) -> dict[int, UploadedPart]:
    """The parts of `upload` that hold exactly the local bytes of their slice, by number. NotFound
    when the server no longer knows the upload."""
    caps = store.capabilities
    if caps.resume == "journal":
        listed = [(UploadedPart(int(n), str(etag), int(psize)), str(md5)) for n, etag, psize, md5 in record.parts]
    else:
        listed = [(part, "") for part in store.list_parts(upload)]
    trusted: dict[int, UploadedPart] = {}
    for part, md5 in listed:
        offset = (part.number - 1) * upload.part_size
        if part.number < 1 or offset >= size or part.size != min(upload.part_size, size - offset):
            continue
        data = os.pread(fd, part.size, offset)
        if len(data) != part.size:
            continue
        if md5:
            ok = hashlib.md5(data).hexdigest() == md5
        else:
            ok = part_matches(caps.part_etag, part.etag, data)
        if ok:
            trusted[part.number] = part
        else:
            log.warning("part %d of the upload of %r differs from the local bytes: it is sent again",
                        part.number, upload.key)
    return trusted


def sweep_orphans(store: ObjectStore, journal: Journal, referenced: set[str],
                  now: Callable[[], float] = time.time, records: list[dict] | None = None) -> list[str]:
    """Abort the multipart uploads this mount started that no journal entry references (see the
    module's docstring for the rule). `records`: the ledger as it was before this run started any
    upload (the default reads it now); an upload this run started is never a candidate. Returns the
    upload ids aborted. Failures are logged; the ledger record stays for the next mount."""
    aborted: list[str] = []
    listing: list[MultipartUpload] | None = None
    records = journal.ledger_load() if records is None else records
    known = {rec["upload_id"] for rec in records if rec.get("upload_id")}
    for rec in records:
        token, key, upload_id = rec["token"], rec["key"], rec.get("upload_id")
        try:
            if upload_id:
                if upload_id in referenced:
                    continue
                store.abort_multipart(MultipartUpload(key=key, upload_id=upload_id, part_size=0))
                log.warning("aborted multipart upload %s of %r: started by an earlier run, no longer needed",
                            _short(upload_id), key)
                aborted.append(upload_id)
                journal.ledger_remove(token)
                continue
            requested = float(rec.get("requested") or 0)
            if listing is None:
                listing = store.list_multipart()
            waiting = False
            # Uploads recorded since (this run's own, resumed or new) are never candidates.
            known |= {r["upload_id"] for r in journal.ledger_load() if r.get("upload_id")}
            for upload in listing:
                started = upload.started if upload.started is not None else requested
                if (upload.key != key or upload.upload_id in referenced or upload.upload_id in known
                        or not MATCH_WINDOW[0] <= started - requested <= MATCH_WINDOW[1]):
                    continue
                if now() - started < ORPHAN_MIN_AGE:
                    waiting = True   # may be another host's, still being written: not yet
                    continue
                store.abort_multipart(upload)
                log.warning("aborted multipart upload %s of %r: this mount asked for it before a crash, "
                            "and it is over a day old", _short(upload.upload_id), key)
                aborted.append(upload.upload_id)
            if not waiting and now() - requested >= ORPHAN_MIN_AGE:
                journal.ledger_remove(token)
        except NotFound:
            journal.ledger_remove(token)   # already gone
        except StoreError as exc:
            log.info("could not clean up multipart upload of %r left by an earlier run: %s", key, exc)
    return aborted


def _short(upload_id: str) -> str:
    return upload_id if len(upload_id) <= 24 else upload_id[:20] + "…"
