"""UFile's multipart uploads: the server chooses the part size (`BlkSize`); part numbers count from 0
on the wire (1-based above this module); finish takes the part ETags, comma-joined, verbatim as the
server sent them. Unfinished uploads are listed with `GET /?muploadid`, the parts of one with
`GET /?muploadpart` (part ETags there are UFile ETags of the part's bytes, unquoted)."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping

from ...errors import InvalidArgument, NotFound, ProtocolError
from ...store.conditions import WriteCondition, no_condition
from ...store.contract import MultipartUpload, ObjectInfo, UploadedPart
from ...wire.auth.ufile import meta_headers
from ...wire.body import Body
from .wire import DEFAULT_CONTENT_TYPE, UfileBucketWire, decode_error, parse_json, q


class UfileMultipart(UfileBucketWire):
    """The multipart calls of one bucket."""

    def create_multipart(self, key: str, size: int, part_size: int, meta: Mapping[str, str], *,
                         condition: WriteCondition | None = None) -> MultipartUpload:
        no_condition(condition, "UFile")
        headers = dict(meta_headers(meta), **{"Content-Length": "0"})
        answer = self._call("POST", key, f"init multipart {key}", query="uploads", headers=headers,
                            content_type=DEFAULT_CONTENT_TYPE)
        data = parse_json(answer.content, "InitiateMultipartUpload")
        try:
            upload_id, blk_size = str(data["UploadId"]), int(data["BlkSize"])
        except (KeyError, TypeError, ValueError):
            raise ProtocolError("ufile InitiateMultipartUpload: no UploadId/BlkSize", detail=str(data)[:200]) from None
        if not upload_id or blk_size <= 0:
            raise ProtocolError("ufile InitiateMultipartUpload: empty UploadId or BlkSize", detail=str(data)[:200])
        return MultipartUpload(key=key, upload_id=upload_id, part_size=blk_size,
                               state={"meta": dict(meta), "size": size})

    def upload_part(self, upload: MultipartUpload, number: int, offset: int, data: bytes) -> UploadedPart:
        if number < 1 or offset != (number - 1) * upload.part_size:
            raise InvalidArgument(f"ufile: part {number} must start at {(number - 1) * upload.part_size}, "
                                  f"not {offset} (server part size {upload.part_size})")
        if not data or len(data) > upload.part_size:
            raise InvalidArgument(f"ufile: part {number} has {len(data)} bytes (part size {upload.part_size})")
        md5 = hashlib.md5(data).hexdigest() if self._cfg.verify_upload_md5 else ""
        query = f"uploadId={q(upload.upload_id)}&partNumber={number - 1}"
        what = f"upload part {number} of {upload.key}"
        answer = self._call("PUT", upload.key, what, query=query, content_type=DEFAULT_CONTENT_TYPE,
                            content_md5=md5, headers={"Content-Length": str(len(data))}, body=Body(data=data))
        etag = answer.headers.get("ETag")
        if not etag:
            raise ProtocolError(f"ufile {what}: no ETag")
        # Kept verbatim: the finish body must echo what the server sent.
        return UploadedPart(number=number, etag=etag.strip(), size=len(data))

    def complete_multipart(self, upload: MultipartUpload, parts: list[UploadedPart], *,
                           condition: WriteCondition | None = None) -> ObjectInfo:
        no_condition(condition, "UFile")
        ordered = sorted(parts, key=lambda p: p.number)
        if not ordered or [p.number for p in ordered] != list(range(1, len(ordered) + 1)):
            raise InvalidArgument(f"ufile: parts of {upload.key} must be 1..n without gaps")
        body = ",".join(p.etag for p in ordered).encode("ascii", "replace")
        total = sum(p.size for p in ordered)
        meta = upload.state.get("meta") or {}
        request = self._request("POST", upload.key, f"finish multipart {upload.key}",
                                query=f"uploadId={q(upload.upload_id)}", content_type=DEFAULT_CONTENT_TYPE,
                                headers=dict(meta_headers(meta), **{"Content-Length": str(len(body))}),
                                body=Body(data=body))
        once = self.client.attempt(request, sign=self._signer(upload.key), accept=(404,))
        tries = 0

        def attempt() -> None:
            nonlocal tries
            tries += 1
            answer = once()
            if answer.status == 404:
                # An earlier try may have finished the upload before its answer was lost.
                info = self._stat_or_none(upload.key) if tries > 1 else None
                if info is None or info.size != total:
                    raise decode_error(answer, request.what)

        self.client.retried(attempt, request.what)
        info = self.stat(upload.key)
        if info.size != total:
            raise ProtocolError(f"ufile finish multipart {upload.key}: object has {info.size} bytes, sent {total}")
        return info

    def _stat_or_none(self, key: str) -> ObjectInfo | None:
        try:
            return self.stat(key)
        except NotFound:
            return None

    def abort_multipart(self, upload: MultipartUpload) -> None:
        # 404: unknown, or already aborted or finished.
        self._call("DELETE", upload.key, f"abort multipart {upload.key}",
                   query=f"uploadId={q(upload.upload_id)}", accept=(404,))

    def list_multipart(self) -> list[MultipartUpload]:
        """Unfinished uploads (`GET /?muploadid`). The docs call this API opt-in ("灰度"): where the
        server refuses it, the answer is [] (the protocol cannot say)."""
        uploads: list[MultipartUpload] = []
        marker = ""
        for _ in range(1000):  # bounded paging
            answer = self._call("GET", "", "list multipart uploads",
                                query=f"muploadid&prefix=&marker={q(marker)}&limit=100",
                                accept=(400, 404, 405, 501))
            if answer.status >= 300:
                return uploads
            data = parse_json(answer.content, "GetMultiUploadId")
            if data.get("RetCode") not in (None, 0, "0"):
                return uploads
            try:
                for entry in data.get("DataSet") or []:
                    started = entry.get("StartTime")
                    uploads.append(MultipartUpload(key=str(entry["FileName"]), upload_id=str(entry["UploadId"]),
                                                   part_size=0, state={},
                                                   started=float(started) if started else None))
            except (KeyError, TypeError, ValueError):
                raise ProtocolError("ufile GetMultiUploadId: malformed DataSet") from None
            marker = str(data.get("NextMarker") or "")
            if not marker:
                return uploads
        return uploads

    def list_parts(self, upload: MultipartUpload) -> list[UploadedPart]:
        """`GET /?muploadpart&uploadId=…` (PROTOCOLS.md §4.2), every page; part numbers from 0 on the
        wire, 1-based here. NotFound when the upload is gone."""
        parts: list[UploadedPart] = []
        marker = ""
        what = f"list parts of {upload.key}"
        for _ in range(10_000):  # bounded paging: 1000 parts a page
            query = f"muploadpart&uploadId={q(upload.upload_id)}&max-parts=1000"
            if marker:
                query += f"&part-number-marker={q(marker)}"
            data = parse_json(self._call("GET", "", what, query=query).content, "ListParts")
            try:
                for entry in data.get("Parts") or []:
                    parts.append(UploadedPart(number=int(entry["PartNum"]) + 1, etag=str(entry["Etag"]),
                                              size=int(entry["Size"])))
            except (KeyError, TypeError, ValueError):
                raise ProtocolError(f"ufile {what}: malformed Parts", detail=str(data)[:200]) from None
            if not data.get("IsTruncated"):
                break
            marker = str(data.get("NextPartNumberMarker") or "")
            if not marker:
                raise ProtocolError(f"ufile {what}: truncated without NextPartNumberMarker")
        return sorted(parts, key=lambda p: p.number)
