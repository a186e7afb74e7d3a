"""One COS v4 bucket as an ObjectStore (the package's docstring has the mapping onto the contract).

Thread safety: all per-call state is local; what the buckets of an account share is their CosApi
(whose `page_cap` is an int, set once) and their SerialGates (guarded by its lock).
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import BinaryIO

from ...errors import AlreadyExists, InvalidArgument, NotFound, NotSupported, ProtocolError, RemoteChanged, StoreError
from ...store.conditions import ConditionalWrites, WriteCondition, create_only, exists_refusal
from ...store.contract import Capabilities, ListPage, MultipartUpload, ObjectInfo, UploadedPart
from ...wire.answer import strip_etag
from ...wire.body import read_exactly
from .config import LIST_NUM_MAX, SINGLE_UPLOAD_MAX, SLICE_SIZES, pick_slice
from .listing import CosLister, file_etag
from .names import content_type_of, cos_path, meta_from_wire, meta_to_biz_attr
from .wire import CosApi, to_number

_SHA1_HEX = re.compile(r"[0-9a-f]{40}")
log = logging.getLogger(__name__)


class SerialGate:
    """Lets upload_part calls of one session through in offset order, whatever thread they run on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.next_offset = 0

    def wait_turn(self, offset: int, timeout: float) -> None:
        with self._cond:
            # On timeout we go ahead anyway and let the server judge (a caller may resend a slice).
            self._cond.wait_for(lambda: offset <= self.next_offset, timeout=timeout)

    def done(self, offset: int, length: int) -> None:
        with self._cond:
            self.next_offset = max(self.next_offset, offset + length)
            self._cond.notify_all()


class SerialGates:
    """The gates of an account's serial upload sessions (the server may demand slices in offset order:
    serial_upload=1), by session id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[str, SerialGate] = {}

    def open(self, session: str) -> None:
        with self._lock:
            self._gates[session] = SerialGate()

    def get(self, session: str) -> SerialGate | None:
        with self._lock:
            return self._gates.get(session)

    def close(self, session: str) -> None:
        with self._lock:
            self._gates.pop(session, None)


# insertOnly=1 on upload and slice init ("don't overwrite", PROTOCOLS.md §2.2; -177 when the file
# exists). COS v4 has no form of If-Match: a changed file falls back to the HEAD check.
COS_CONDITIONAL_WRITES = ConditionalWrites(absent=True, absent_multipart=True, how="COS v4 insertOnly=1 (create only)")


class CosStore:
    """One COS v4 bucket."""

    capabilities = Capabilities(
        min_part_size=SLICE_SIZES[1],
        max_part_size=SLICE_SIZES[-1],
        max_parts=1_000_000,  # slices are addressed by offset; no documented count limit
        single_put_max=SINGLE_UPLOAD_MAX,
        server_chosen_part_size=True,
        parts_in_order=False,  # serial_upload sessions are ordered inside the provider
        server_side_copy=True,
        server_side_move=True,
        list_has_metadata=False,
        real_folders=True,
        list_page_size=LIST_NUM_MAX,
    )

    def __init__(self, api: CosApi, gates: SerialGates, name: str) -> None:
        self.api = api
        self._cfg = api.config
        self._gates = gates
        self._lister = CosLister(api, name)
        self.name = name

    def __repr__(self) -> str:
        return f"CosStore({self.name!r})"

    def _call(self, method: str, key: str, what: str, **kwargs) -> dict:
        return self.api.call(self.name, method, cos_path(key), what, **kwargs)

    # --- reading ------------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo:
        data = self._call("GET", key, f"stat {key!r}", params={"op": "stat"})
        meta = meta_from_wire(data.get("biz_attr"), data.get("custom_headers"))
        mtime = to_number(data.get("mtime") or data.get("ctime"), f"stat {key}", 0.0)
        if key.endswith("/") or key == "":
            return ObjectInfo(key=key, size=0, etag="", mtime=mtime, meta=meta)
        size = int(to_number(data.get("filesize"), f"stat {key} filesize"))
        filelen = data.get("filelen")
        if filelen not in (None, "") and int(to_number(filelen, f"stat {key} filelen")) < size:
            raise NotFound(f"stat {key}: upload not finished ({filelen}/{size} bytes)")
        return ObjectInfo(key=key, size=size, etag=file_etag(data.get("sha"), size, mtime), mtime=mtime, meta=meta)

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        if key.endswith("/") or not key:
            raise NotFound(f"{key!r} is a folder")
        if end <= start:
            return b""
        what = f"read {key!r}"
        read = self.api.download(self.name, cos_path(key), start, end, what)
        if if_match:
            current = strip_etag(read.headers.get("ETag")).lower()
            if not (_SHA1_HEX.fullmatch(current) and _SHA1_HEX.fullmatch(if_match)):
                current = self.stat(key).etag  # not comparable with our etag: ask for the sha
            if current != if_match:
                raise RemoteChanged(f"{what}: etag is now {current}, expected {if_match}")
        return read.data

    def list(self, prefix: str, *, delimiter: str = "/", token: str | None = None,
             limit: int | None = None) -> ListPage:
        return self._lister.list(prefix, delimiter, token, limit)

    # --- writing ------------------------------------------------------------------------------

    def conditional_writes(self, key: str) -> ConditionalWrites:
        return COS_CONDITIONAL_WRITES

    def put(self, key: str, body: BinaryIO, size: int, meta: Mapping[str, str], *,
            condition: WriteCondition | None = None) -> ObjectInfo:
        insert_only = create_only(condition, "COS v4")
        if key.endswith("/"):
            if size:
                raise InvalidArgument(f"{key!r} is a folder: it cannot hold data")
            return self._put_folder(key, meta)
        if not key:
            raise InvalidArgument("empty key")
        if size > SINGLE_UPLOAD_MAX:
            return self._put_sliced(key, body, size, meta, condition)
        data = read_exactly(body, size)
        sha = hashlib.sha1(data).hexdigest()
        form = [("op", "upload"), ("filecontent", data), ("sha", sha), ("biz_attr", meta_to_biz_attr(meta)),
                ("insertOnly", "1" if insert_only else "0")]
        with exists_refusal(condition):
            self._call("POST", key, f"upload {key!r}", form=form)
        self._set_content_type(key)
        return ObjectInfo(key=key, size=size, etag=sha, mtime=time.time(), meta=dict(meta))

    def _put_folder(self, key: str, meta: Mapping[str, str]) -> ObjectInfo:
        biz_attr = meta_to_biz_attr(meta)
        try:
            self._call("POST", key, f"create folder {key!r}", json_body={"op": "create", "biz_attr": biz_attr})
        except AlreadyExists:
            # put replaces: an existing folder takes the new metadata.
            self._call("POST", key, f"update folder {key!r}", once=True,
                       json_body={"op": "update", "biz_attr": biz_attr})
        return ObjectInfo(key=key, size=0, etag="", mtime=time.time(), meta=dict(meta))

    def _put_sliced(self, key: str, body: BinaryIO, size: int, meta: Mapping[str, str],
                    condition: WriteCondition | None) -> ObjectInfo:
        """A large put: slices read in order, uploaded by a few threads, memory bounded."""
        upload = self.create_multipart(key, size, self._cfg.slice_size, meta, condition=condition)
        window = self._cfg.upload_concurrency
        parts: list[UploadedPart] = []
        pending: deque[concurrent.futures.Future] = deque()
        with concurrent.futures.ThreadPoolExecutor(window, thread_name_prefix="cos-slice") as pool:
            try:
                for part_number, offset in enumerate(range(0, size, upload.part_size), start=1):
                    chunk = read_exactly(body, min(upload.part_size, size - offset))
                    pending.append(pool.submit(self.upload_part, upload, part_number, offset, chunk))
                    while len(pending) > window:
                        parts.append(pending.popleft().result())
                while pending:
                    parts.append(pending.popleft().result())
            except BaseException:
                for future in pending:
                    future.cancel()
                self.abort_multipart(upload)
                raise
        return self.complete_multipart(upload, parts)

    def create_multipart(self, key: str, size: int, part_size: int, meta: Mapping[str, str], *,
                         condition: WriteCondition | None = None) -> MultipartUpload:
        """insertOnly goes with the init: the server checks it there and again at the finish."""
        insert_only = create_only(condition, "COS v4")
        if key.endswith("/") or not key:
            raise InvalidArgument(f"{key!r} is not a file key")
        slice_size = pick_slice(max(part_size, self._cfg.slice_size))
        form = [("op", "upload_slice_init"), ("filesize", str(size)), ("slice_size", str(slice_size)),
                ("biz_attr", meta_to_biz_attr(meta)), ("insertOnly", "1" if insert_only else "0")]
        with exists_refusal(condition):
            data = self._call("POST", key, f"upload_slice_init {key!r}", form=form)
        if "access_url" in data and "session" not in data:  # instant upload: the file is already there
            return MultipartUpload(key=key, upload_id="", part_size=slice_size,
                                   state={"done": True, "size": size})
        session = data.get("session")
        if not isinstance(session, str) or not session:
            raise ProtocolError(f"upload_slice_init {key!r}: no session in reply")
        chosen = int(to_number(data.get("slice_size"), "slice_size", slice_size))
        if chosen <= 0:
            raise ProtocolError(f"upload_slice_init {key!r}: slice_size {chosen}")
        serial = str(data.get("serial_upload", "0")) == "1"
        if serial:
            self._gates.open(session)
        return MultipartUpload(key=key, upload_id=session, part_size=chosen,
                               state={"session": session, "size": size, "serial": serial, "done": False})

    def upload_part(self, upload: MultipartUpload, number: int, offset: int, data: bytes) -> UploadedPart:
        size = int(upload.state.get("size", 0))
        if upload.state.get("done"):
            return UploadedPart(number=number, etag=f"slice-{offset}", size=len(data))
        if offset != (number - 1) * upload.part_size or offset >= max(size, 1):
            raise InvalidArgument(f"part {number} of {upload.key!r} cannot start at {offset}")
        if len(data) != min(upload.part_size, size - offset):
            raise InvalidArgument(f"part {number} of {upload.key!r} has {len(data)} bytes")
        gate = self._gates.get(upload.upload_id) if upload.state.get("serial") else None
        if gate is not None:
            gate.wait_turn(offset, timeout=2 * self._cfg.http.read_timeout)
        form = [("op", "upload_slice_data"), ("filecontent", data), ("session", upload.upload_id),
                ("offset", str(offset))]
        self._call("POST", upload.key, f"upload_slice_data {upload.key!r}@{offset}", form=form)
        if gate is not None:
            gate.done(offset, len(data))
        return UploadedPart(number=number, etag=f"slice-{offset}", size=len(data))

    def complete_multipart(self, upload: MultipartUpload, parts: list[UploadedPart], *,
                           condition: WriteCondition | None = None) -> ObjectInfo:
        """`condition` was sent with the init (insertOnly); a finish refused by it is PreconditionFailed."""
        size = int(upload.state.get("size", 0))
        self._gates.close(upload.upload_id)
        if upload.state.get("done"):
            return self.stat(upload.key)
        numbers = sorted(p.number for p in parts)
        if numbers != list(range(1, len(numbers) + 1)) or sum(p.size for p in parts) != size:
            raise InvalidArgument(f"complete {upload.key!r}: parts do not cover {size} bytes")

        def finished_before(exc: StoreError) -> dict | None:
            # The first finish may have succeeded with its answer lost: the session is then gone.
            if isinstance(exc, NotFound):
                try:
                    if self.stat(upload.key).size == size:
                        return {}
                except NotFound:
                    pass
            return None

        form = [("op", "upload_slice_finish"), ("session", upload.upload_id), ("filesize", str(size))]
        with exists_refusal(condition):
            self._call("POST", upload.key, f"upload_slice_finish {upload.key!r}", form=form,
                       recover=finished_before)
        self._set_content_type(upload.key)
        return self.stat(upload.key)

    def _set_content_type(self, key: str) -> None:
        """Give a file just written the Content-Type its name suggests, so that the download host
        serves it as such (COS v4 takes no type with the upload itself: `update` with custom_headers
        is its only way). Names mimetypes does not know keep the server's default; a failure leaves
        the bytes, which are safely stored, with that default and is logged."""
        content_type = content_type_of(key)
        if content_type is None:
            return
        try:
            self._call("POST", key, f"set Content-Type of {key!r}", once=True,
                       json_body={"op": "update", "custom_headers": {"Content-Type": content_type}})
        except StoreError as exc:
            log.warning("%s: uploaded, but its Content-Type could not be set: %s", key, exc)

    def abort_multipart(self, upload: MultipartUpload) -> None:
        # COS v4 has no abort: the server drops unfinished sessions on its own, and a new
        # upload_slice_init of the same path replaces one. Deleting the path instead would destroy
        # the previous version of the file, so nothing is sent.
        self._gates.close(upload.upload_id)

    def list_multipart(self) -> list[MultipartUpload]:
        return []  # upload_slice_list is per path; there is no bucket-wide listing

    def list_parts(self, upload: MultipartUpload) -> list[UploadedPart]:
        # upload_slice_list exists (docs), but the 0.0.9 SDK never calls it and the slices it lists
        # carry no checksum storefs could verify: capabilities.resume is "" and this is never asked.
        raise NotSupported("COS v4: storefs does not resume slice uploads")

    def delete(self, key: str) -> None:
        if not key:
            raise InvalidArgument("empty key")
        try:
            self._call("POST", key, f"delete {key!r}", once=True, json_body={"op": "delete"})
        except NotFound:
            pass  # idempotent (also: a retried delete that had worked)

    def _transfer(self, op: str, src: str, dst: str) -> None:
        if src.endswith("/") or dst.endswith("/") or not src or not dst:
            raise NotSupported(f"COS v4 {op} works on files only")

        def done_before(exc: StoreError) -> dict | None:
            if op == "move" and isinstance(exc, NotFound):  # the source is gone: did we move it?
                try:
                    self.stat(dst)
                    return {}
                except NotFound:
                    return None
            return None

        # As the SDK does: params in the query string, no body; to_over_write=1 gives rename() semantics.
        self._call("POST", src, f"{op} {src!r} -> {dst!r}", once=True,
                   params={"op": op, "dest_fileid": cos_path(dst), "to_over_write": "1"}, recover=done_before)

    def move(self, src: str, dst: str) -> ObjectInfo:
        self._transfer("move", src, dst)
        return self.stat(dst)

    def copy(self, src: str, dst: str, meta: Mapping[str, str] | None = None) -> ObjectInfo:
        self._transfer("copy", src, dst)
        if meta is not None:
            return self.set_meta(dst, meta)
        return self.stat(dst)

    def set_meta(self, key: str, meta: Mapping[str, str]) -> ObjectInfo:
        self._call("POST", key, f"update {key!r}", once=True,
                   json_body={"op": "update", "biz_attr": meta_to_biz_attr(meta)})
        return self.stat(key)
