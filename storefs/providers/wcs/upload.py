"""WCS uploads of one bucket: small objects as one form post, large ones as blocks.

A part is one block (a multiple of 4 MiB), sent as mkblk with its first chunk and bput of the rest
(`bput_size` each, cumulative offsets), each reply carrying the ctx the next call chains from; mkfile
merges the blocks (its body: the last ctx of each block, comma-joined, in block order). Blocks are
independent, so parts upload in parallel. WCS has no initiate/abort/list of uploads: the uploadBatch id
is made up here (32 characters, as the SDK's).
"""
from __future__ import annotations

import concurrent.futures
import io
import json
import secrets
import time
import zlib
from collections.abc import Callable, Mapping
from urllib.parse import quote

from ...errors import InvalidArgument, ProtocolError, Transient
from ...store.contract import MultipartUpload, ObjectInfo, UploadedPart
from ...wire.auth.wcs import etag_bytes
from ...wire.body import Body
from ...wire.client import Request
from .config import BLOCK_UNIT, CAPABILITIES
from .meta import DEFAULT_MIME, encode_meta_mime
from .wire import ContextExpired, WcsApi, to_int


class WcsUploads:
    """The uploads of one bucket."""

    def __init__(self, api: WcsApi, bucket: str) -> None:
        self._api = api
        self._bucket = bucket

    def put_bytes(self, key: str, data: bytes, mime: str, meta: Mapping[str, str], *,
                  overwrite: bool = True) -> ObjectInfo:
        """One form post (`POST /file/upload`: token, mimeType, file), retried as one. overwrite=False:
        refused (614, AlreadyExists) if the key exists."""
        boundary = secrets.token_hex(16)

        def sign(request: Request) -> None:   # the upload token goes in the form: a fresh one per try
            fields = [("token", self._api.upload_token(self._bucket, key, overwrite=overwrite)), ("mimeType", mime)]
            request.body = Body(data=_form(boundary, fields, quote(key, safe=""), data))

        answer = self._api.upload_form("/file/upload", {"Content-Type": f"multipart/form-data; boundary={boundary}"},
                                       sign, f"upload {key}")
        return ObjectInfo(key=key, size=len(data), etag=_reply_hash(answer.content) or etag_bytes(data),
                          mtime=time.time(), meta=dict(meta))

    def create(self, key: str, size: int, part_size: int, meta: Mapping[str, str]) -> MultipartUpload:
        part = max(BLOCK_UNIT, -(-max(part_size, 1) // BLOCK_UNIT) * BLOCK_UNIT)
        need = -(-size // CAPABILITIES.max_parts)  # parts must fit in max_parts
        part = max(part, -(-need // BLOCK_UNIT) * BLOCK_UNIT)
        if part > CAPABILITIES.max_part_size:
            raise InvalidArgument(f"{key}: {size} bytes do not fit in {CAPABILITIES.max_parts} parts")
        # WCS has no "initiate": the session is just the uploadBatch id the SDK makes up (32 chars).
        return MultipartUpload(key=key, upload_id=secrets.token_hex(16), part_size=part,
                               state={"mime": encode_meta_mime(meta), "meta": dict(meta), "size": size})

    def upload_part(self, upload: MultipartUpload, number: int, offset: int, data: bytes) -> UploadedPart:
        if number < 1 or offset != (number - 1) * upload.part_size or len(data) > upload.part_size:
            raise InvalidArgument(f"part {number} at {offset} ({len(data)} bytes) does not fit "
                                  f"part size {upload.part_size}")
        if not data:
            raise InvalidArgument("empty part")
        what = f"upload block {number} of {upload.key}"
        ctx = self._api.client.retried(lambda: self._upload_block(upload, number - 1, data), what)
        return UploadedPart(number=number, etag=ctx, size=len(data))

    def _block_post(self, upload: MultipartUpload, path: str, chunk: bytes, what: str) -> dict:
        headers = {"UploadBatch": upload.upload_id, "Content-Type": DEFAULT_MIME}
        return self._api.upload_once(self._bucket, upload.key, path, headers, chunk, what)

    def _upload_block(self, upload: MultipartUpload, index: int, data: bytes) -> str:
        """mkblk with the first chunk, then bput the rest with cumulative offsets. One attempt of the
        whole block: a lost reply leaves a stale ctx, so a retry starts the block again."""
        what = f"block {index} of {upload.key}"
        chunk_size = self._api.bput_size
        view = memoryview(data)
        first = data if len(data) <= chunk_size else bytes(view[:chunk_size])
        try:
            reply = self._block_post(upload, f"/mkblk/{len(data)}/{index}", first, what)
            ctx, done = _check_chunk(reply, first, 0, len(data), what)
            while done < len(data):
                piece = bytes(view[done: done + chunk_size])
                reply = self._block_post(upload, f"/bput/{ctx}/{done}", piece, what)
                ctx, done = _check_chunk(reply, piece, done, len(data), what)
        except ContextExpired as exc:
            raise Transient(f"{what}: block context lost ({exc}); uploading the block again") from None
        return ctx

    def mkfile(self, upload: MultipartUpload, parts: list[UploadedPart], mime: str, *,
               overwrite: bool = True) -> str:
        """Merge the blocks of `parts` (in order, at least one) into the object: the hash the reply
        names, "" when it names none. overwrite=False: refused (AlreadyExists) if the key exists."""
        size = sum(p.size for p in parts)
        body = ",".join(p.etag for p in parts).encode("ascii")
        what = f"mkfile {upload.key}"
        headers = {"UploadBatch": upload.upload_id, "MimeType": mime, "Content-Type": "text/plain"}
        tried = False

        def attempt() -> dict | None:
            nonlocal tried
            try:
                return self._api.upload_once(self._bucket, upload.key, f"/mkfile/{size}", headers, body, what,
                                             overwrite=overwrite)
            except Transient:
                tried = True
                raise
            except (ContextExpired, InvalidArgument):
                # A retry after a lost reply finds the blocks already merged: accept the object if it is there.
                if tried:
                    return None
                raise

        reply = self._api.client.retried(attempt, what)
        return str(reply.get("hash") or "") if reply else ""

    def upload_parts(self, upload: MultipartUpload, size: int, read: Callable[[int], bytes],
                     concurrency: int | None) -> list[UploadedPart]:
        """The parts of `size` bytes from `read`, at most `concurrency` in flight (memory stays at
        concurrency × part_size)."""
        workers = concurrency or self._api.config.upload_concurrency
        parts: list[UploadedPart] = []
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="wcs-part") as pool:
            pending: set[concurrent.futures.Future] = set()
            for number, offset in enumerate(range(0, size, upload.part_size), start=1):
                data = read(min(upload.part_size, size - offset))
                if len(data) != min(upload.part_size, size - offset):
                    raise InvalidArgument(f"{upload.key}: source ended at {offset + len(data)} of {size}")
                pending.add(pool.submit(self.upload_part, upload, number, offset, data))
                if len(pending) >= workers:
                    done, pending = concurrent.futures.wait(pending, return_when="FIRST_COMPLETED")
                    parts += [f.result() for f in done]
            parts += [f.result() for f in pending]
        return parts


def _form(boundary: str, fields: list[tuple[str, str]], filename: str, data: bytes) -> bytes:
    """multipart/form-data body: text fields, then the file part (the order the SDKs use)."""
    out = io.BytesIO()
    for name, value in fields:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode("utf-8") + b"\r\n")
    out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
              f"Content-Type: {DEFAULT_MIME}\r\n\r\n".encode())
    out.write(data)
    out.write(f"\r\n--{boundary}--\r\n".encode())
    return out.getvalue()


def _reply_hash(body: bytes) -> str:
    """The hash of a normal-upload reply. Its default shape is UNVERIFIED (the SDK treats it as text):
    take `hash` from JSON, else nothing (the caller falls back to the locally computed ETag)."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return ""
    return str(obj.get("hash") or "") if isinstance(obj, dict) else ""


def _check_chunk(reply: dict, chunk: bytes, before: int, block_size: int, what: str) -> tuple[str, int]:
    """(ctx, cumulative offset in the block) from a mkblk/bput reply, checking its crc32."""
    ctx = reply.get("ctx")
    if not isinstance(ctx, str) or not ctx:
        raise ProtocolError(f"{what}: reply without ctx", detail=str(reply)[:200])
    if reply.get("crc32") is not None and to_int(reply["crc32"], what) != zlib.crc32(chunk) & 0xFFFFFFFF:
        raise Transient(f"{what}: crc32 mismatch, sending the block again")
    offset = to_int(reply.get("offset", before + len(chunk)), what)
    if offset != before + len(chunk) or offset > block_size:
        raise ProtocolError(f"{what}: server offset {offset}, expected {before + len(chunk)}")
    return ctx, offset
