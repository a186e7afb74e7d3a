"""Loopback emulator of the UCloud UFile (US3) native file API and its bucket-management API.

    python scripts/emulator.py ufile [--port N] [--root DIR] [--bucket NAME]... [--fault SPEC]...

The bucket is the first label of the Host header (`<bucket>.ufile.test`); an absolute-form request target
(the SDK pointed at us as an HTTP proxy, PROTOCOLS.md §4.5) works too. `Host: api.ufile.test` reaches the
bucket API (`?Action=DescribeBucket|CreateBucket|DeleteBucket`).

What it checks, as the service does (PROTOCOLS.md §4, UCloudDoc-Team/api `ufile-api/*.md`):
- `Authorization: UCloud <pub>:<sig>` on every request, or a signed URL (`UCloudPublicKey/Expires/Signature`,
  expiry against `emulator.clock`) on GET/HEAD; listobjects signatures are accepted with or without the
  Python SDK's extra block. Errors are `{"RetCode", "ErrMsg"}` with `Content-Type: application/json` exactly
  and an `X-SessionId` header.
- Content-MD5 (hex, as the SDKs send it; base64 accepted too) against the body.
- Multipart: the server picks `BlkSize`; parts count from 0; every part but the last must be exactly BlkSize
  (a larger part is refused at once); finish takes the comma-joined part ETags in order (quotes stripped) and
  refuses missing parts, wrong order/unknown ETags and uploads older than `upload_ttl` (expired session).
- ETag: the UFile ETag (`ufile_auth.EtagHasher`) of the whole object, quoted in headers; part ETags are the
  UFile ETag of the part.

Shaped by the ufile 3.2.11 SDK (tests/sdk/test_ufile_sdk.py): a zero-byte `putfile` arrives chunked with no
Content-Length; `private_download_url` puts a raw base64 Signature ('+', '/') in the query; a 416 carries no
`Content-Range: bytes */n` (the SDK parses every Content-Range as `bytes a-b/n` and crashes); error JSON is
only read when Content-Type is exactly `application/json`; the form post has no closing boundary.

Fault-injection op names (`--fault op:nth:action[:arg]`): put, copy, post_form, get, head, delete, list
(listobjects), prefix_list, list_uploads, list_parts, init_multipart, upload_part, finish_multipart,
abort_multipart, opmeta, class_switch, restore, api (bucket API).

RetCodes: -30010 "bucket not exist" is from the official docs; -148654 "file not exist" from a recorded US3
answer in a third-party client's tests. The others below are placeholders of ours (UNVERIFIED).

Archive class (ufile-api/restore.md, the vendor SDKs' examples): a file put with `X-Ufile-Storage-Class:
ARCHIVE` refuses GET until `PUT /<key>?restore` has run for `restore_delay` seconds; HEAD then carries
`X-Ufile-Restore` in S3's form. With `download_suffix` set, `<bucket><download_suffix>` is a CDN-style
download host answering GET and HEAD only.
"""
from __future__ import annotations

import base64
import collections
import dataclasses
import email.utils
import hashlib
import hmac
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, unquote_plus, urlsplit

from storefs.wire.auth import ufile as auth

from .base import Blob, Emulator, EmulatorHandler, Fault

SUFFIX = ".ufile.test"
API_HOST = "api.ufile.test"
PUBLIC_KEY = "UFILE-EMULATOR-PUBLIC-KEY"
PRIVATE_KEY = "ufile-emulator-private-key-not-a-secret"
MiB = 1024 * 1024

RET_BUCKET_NOT_EXIST = -30010      # official docs (PutFile/Copy error examples)
RET_FILE_NOT_EXIST = -148654       # seen in a recorded US3 404 answer
RET_INVALID_ARGUMENT = -30000      # placeholder
RET_AUTH_FAILED = -30001           # placeholder
RET_THROTTLED = -30002             # placeholder
RET_INTERNAL = -30003              # placeholder
RET_NO_SUCH_UPLOAD = -30004        # placeholder
RET_BAD_RANGE = -30005             # placeholder
RET_CHECKSUM = -30006              # placeholder
RET_PRECONDITION = -30007          # placeholder
RET_ARCHIVED = -30008              # placeholder: GET of an archive-class file not restored
# Bucket API codes (ufile-api/error_code.md); 171 for a bad API signature is UNVERIFIED.
API_BUCKET_EXISTS, API_NO_BUCKET, API_NOT_EMPTY, API_BAD_PARAM, API_BAD_SIGNATURE = 15000, 15010, 15023, 15017, 171

STORAGE_CLASSES = ("STANDARD", "IA", "ARCHIVE")
_PLACEHOLDER_BY_STATUS = {400: RET_INVALID_ARGUMENT, 401: RET_AUTH_FAILED, 403: RET_AUTH_FAILED,
                          404: RET_FILE_NOT_EXIST, 412: RET_PRECONDITION, 416: RET_BAD_RANGE,
                          429: RET_THROTTLED, 503: RET_THROTTLED}


class Reject(Exception):
    """An error answer: HTTP status plus the UFile RetCode and message."""

    def __init__(self, status: int, ret_code: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.ret_code, self.message, self.headers = status, ret_code, message, headers or {}


@dataclasses.dataclass
class Part:
    number: int
    size: int
    etag: str
    digests: list[bytes]   # SHA-1 of each 4 MiB block inside the part (valid when BlkSize % 4 MiB == 0)
    mtime: float


@dataclasses.dataclass
class Upload:
    upload_id: str
    bucket: str
    key: str
    meta: dict
    content_type: str
    storage_class: str
    started: float
    parts: dict[int, Part] = dataclasses.field(default_factory=dict)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)


@dataclasses.dataclass
class Request:
    method: str
    host: str
    bucket: str
    key: str
    query: dict[str, str]
    raw_query: dict[str, str]   # values percent-decoded without '+' → ' ' (for base64 signatures)


class UfileHandler(EmulatorHandler):
    server_version = "UFileEmulator/1.0"

    # ------------------------------------------------------------------ entry points

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    @property
    def emu(self) -> UfileEmulator:
        return self.server.emulator  # type: ignore[return-value]

    def _dispatch(self) -> None:
        self._streaming = False  # True once an object's headers are out: no error answer is possible then
        self._left = self._content_length()
        self._chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        try:
            req = self._parse()
            if req.host == API_HOST:
                self._bucket_api(req)
                return
            op = self._operation(req)
            self.emu.note_host(op, req.host)
            if self.inject(op):
                return
            if op != "post_form":
                self._check_auth(req, op)
            if not self.emu.blobs.has_bucket(req.bucket):
                raise Reject(404, RET_BUCKET_NOT_EXIST, "bucket not exist")
            getattr(self, "_op_" + op)(req)
        except Reject as rej:
            self._reject(rej)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - an emulator bug or a race: answer 500, never hang up
            if self.emu.verbose:
                self.log_error("internal error: %r", exc)
            if self._streaming:
                self.close_connection = True
            else:
                self._reject(Reject(500, RET_INTERNAL, f"internal error: {exc.__class__.__name__}"))

    def _reject(self, rej: Reject) -> None:
        self._drain()
        headers = dict(rej.headers)
        headers["X-SessionId"] = str(uuid.uuid4())
        self.send_json(rej.status, {"RetCode": rej.ret_code, "ErrMsg": rej.message}, headers)

    def error_response(self, fault: Fault) -> None:
        code = int(fault.code) if fault.code.lstrip("-").isdigit() else _PLACEHOLDER_BY_STATUS.get(
            fault.status, RET_INTERNAL)
        self.send_json(fault.status, {"RetCode": code, "ErrMsg": "injected fault"},
                       {"X-SessionId": str(uuid.uuid4())})

    # ------------------------------------------------------------------ parsing

    def _parse(self) -> Request:
        target = self.path
        if target.startswith(("http://", "https://")):
            split = urlsplit(target)
            path, query, host = split.path or "/", split.query, self.headers.get("Host") or split.netloc
        else:
            path, _, query = target.partition("?")
            host = self.headers.get("Host") or ""
        host = host.rsplit(":", 1)[0] if ":" in host and not host.endswith("]") else host
        host = host.lower()
        try:
            key = unquote(path.removeprefix("/"), encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise Reject(400, RET_INVALID_ARGUMENT, "key is not valid UTF-8") from None
        parsed, raw = {}, {}
        for item in query.split("&") if query else []:
            name, _, value = item.partition("=")
            name = unquote_plus(name)
            parsed[name] = unquote_plus(value)
            raw[name] = unquote(value)
        bucket = ""
        if host != API_HOST:
            emu = self.emu
            dl = emu.download_suffix
            if dl and host.endswith(dl) and len(host) > len(dl):
                # The download (CDN) host serves reads only, as a CDN in front of the bucket does.
                if self.command not in ("GET", "HEAD"):
                    raise Reject(405, RET_INVALID_ARGUMENT, f"{host} is a download host: GET and HEAD only")
                bucket = host[: -len(dl)]
            elif not host.endswith(emu.suffix) or len(host) == len(emu.suffix):
                raise Reject(400, RET_INVALID_ARGUMENT, f"Host {host!r} names no bucket (want <bucket>{emu.suffix})")
            else:
                bucket = host[: -len(emu.suffix)]
        return Request(self.command, host, bucket, key, parsed, raw)

    def _operation(self, req: Request) -> str:
        q, method = req.query, req.method
        if method in ("GET", "HEAD") and req.key == "":
            for name, op in (("listobjects", "list"), ("list", "prefix_list"), ("muploadid", "list_uploads"),
                             ("muploadpart", "list_parts")):
                if name in q and method == "GET":
                    return op
            raise Reject(400, RET_INVALID_ARGUMENT, "no key and no known action")
        if method == "GET":
            return "get"
        if method == "HEAD":
            return "head"
        if method == "PUT":
            if "uploadId" in q:
                return "upload_part"
            if "storageClass" in q:
                return "class_switch"
            if "restore" in q:
                return "restore"
            known = {"UCloudPublicKey", "Expires", "Signature"}
            if set(q) - known:
                raise Reject(400, RET_INVALID_ARGUMENT, f"unsupported parameters {sorted(set(q) - known)}")
            return "copy" if self.headers.get("X-Ufile-Copy-Source") else "put"
        if method == "POST":
            if "uploads" in q:
                return "init_multipart"
            if "uploadId" in q:
                return "finish_multipart"
            if "opmeta" in q:
                return "opmeta"
            if req.key == "" and (self.headers.get("Content-Type") or "").startswith("multipart/form-data"):
                return "post_form"
            raise Reject(400, RET_INVALID_ARGUMENT, "unsupported POST")
        if method == "DELETE":
            return "abort_multipart" if "uploadId" in q else "delete"
        raise Reject(405, RET_INVALID_ARGUMENT, "method not allowed")

    # ------------------------------------------------------------------ auth

    def _check_auth(self, req: Request, op: str) -> None:
        emu = self.emu
        if req.method in ("GET", "HEAD") and "UCloudPublicKey" in req.query:
            self._check_signed_url(req)
            return
        header = self.headers.get("Authorization")
        if not header:
            raise Reject(401, RET_AUTH_FAILED, "no authorization")
        parsed = auth.parse_authorization(header)
        if parsed is None or parsed[0] != emu.public_key:
            raise Reject(403, RET_AUTH_FAILED, "invalid public key or authorization format")
        base = auth.string_to_sign(req.method, req.bucket, req.key,
                                   content_md5=self.headers.get("Content-MD5") or "",
                                   content_type=self.headers.get("Content-Type") or "",
                                   date=self.headers.get("Date") or "", ucloud_headers=dict(self.headers.items()))
        candidates = [base]
        if op == "list":  # the Python SDK signs an extra block, the Go SDK does not: both are accepted
            candidates.append(base + auth.listobjects_block(req.query))
        if not any(hmac.compare_digest(parsed[1], auth.signature(emu.private_key, c)) for c in candidates):
            raise Reject(403, RET_AUTH_FAILED, "signature not match")

    def _check_signed_url(self, req: Request) -> None:
        emu = self.emu
        if req.query.get("UCloudPublicKey") != emu.public_key:
            raise Reject(403, RET_AUTH_FAILED, "invalid public key")
        try:
            expires = int(req.query.get("Expires", ""))
        except ValueError:
            raise Reject(403, RET_AUTH_FAILED, "bad Expires") from None
        if expires < emu.clock.now():
            raise Reject(403, RET_AUTH_FAILED, "signature expired")
        data = auth.url_string_to_sign(req.method, req.bucket, req.key, expires,
                                       content_md5=self.headers.get("Content-MD5") or "",
                                       content_type=self.headers.get("Content-Type") or "")
        if not hmac.compare_digest(req.raw_query.get("Signature", ""), auth.signature(emu.private_key, data)):
            raise Reject(403, RET_AUTH_FAILED, "signature not match")

    # ------------------------------------------------------------------ body helpers

    def _content_length(self) -> int:
        try:
            return max(0, int(self.headers.get("Content-Length") or 0))
        except ValueError:
            return 0

    def _body_chunks(self, size: int = MiB) -> Iterator[bytes]:
        """The request body in pieces (Content-Length or chunked transfer coding)."""
        if self._chunked:
            yield from self._chunked_body()
            return
        while self._left > 0:
            chunk = self.rfile.read(min(size, self._left))
            if not chunk:
                raise ConnectionResetError("client hung up mid-body")
            self._left -= len(chunk)
            yield chunk

    def _chunked_body(self) -> Iterator[bytes]:
        while True:
            line = self.rfile.readline(1024)
            try:
                n = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise Reject(400, RET_INVALID_ARGUMENT, "bad chunked body") from None
            if n == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                self._chunked = False
                return
            data = self.rfile.read(n)
            self.rfile.readline(16)
            yield data

    def _body(self, limit: int) -> bytes:
        if not self._chunked and self._left > limit:
            raise Reject(400, RET_INVALID_ARGUMENT, f"body larger than {limit} bytes")
        if not self._chunked:
            data = self.rfile.read(self._left) if self._left else b""
            if len(data) != self._left:
                raise ConnectionResetError("client hung up mid-body")
            self._left = 0
            return data
        out = bytearray()
        for chunk in self._body_chunks():
            out += chunk
            if len(out) > limit:
                raise Reject(400, RET_INVALID_ARGUMENT, f"body larger than {limit} bytes")
        return bytes(out)

    def _drain(self) -> None:
        """Consume an unread body so the keep-alive connection stays in step (or give it up)."""
        try:
            if self._chunked:
                self.close_connection = True
                return
            while self._left > 0:
                chunk = self.rfile.read(min(MiB, self._left))
                if not chunk:
                    break
                self._left -= len(chunk)
        except (OSError, AttributeError):
            self.close_connection = True

    def _check_md5(self, md5: hashlib._Hash | None) -> None:
        given = (self.headers.get("Content-MD5") or "").strip()
        if not given or md5 is None:
            return
        if given.lower() != md5.hexdigest() and given != base64.b64encode(md5.digest()).decode():
            raise Reject(400, RET_CHECKSUM, "Content-MD5 does not match the body")

    def _meta_from_headers(self) -> dict:
        meta = {}
        for name, value in self.headers.items():
            lower = name.lower()
            if lower.startswith("x-ufile-meta-"):
                short = lower[len("x-ufile-meta-"):]
                if not short or not all(c.isalnum() and c.isascii() or c == "-" for c in short):
                    raise Reject(400, RET_INVALID_ARGUMENT, f"bad user meta name {name!r}")
                meta[short] = value
        if sum(len(k) + len(v) for k, v in meta.items()) > 8192:
            raise Reject(400, RET_INVALID_ARGUMENT, "user meta larger than 8 KB")
        return meta

    def _storage_class(self, default: str = "STANDARD") -> str:
        value = (self.headers.get("X-Ufile-Storage-Class") or default).upper()
        if value not in STORAGE_CLASSES:
            raise Reject(400, RET_INVALID_ARGUMENT, f"bad storage class {value!r}")
        return value

    # ------------------------------------------------------------------ objects

    def _op_put(self, req: Request) -> None:
        emu = self.emu
        if not self._chunked and "Content-Length" not in self.headers:
            raise Reject(411, RET_INVALID_ARGUMENT, "Content-Length required")
        if self._left > emu.max_put:
            raise Reject(400, RET_INVALID_ARGUMENT, "file too large for PutFile; use multipart upload")
        meta, storage_class = self._meta_from_headers(), self._storage_class()
        content_type = self.headers.get("Content-Type") or "application/octet-stream"
        # MD5 only when the client sent one to check against.
        hasher, md5 = auth.EtagHasher(), hashlib.md5() if self.headers.get("Content-MD5") else None
        with tempfile.SpooledTemporaryFile(max_size=8 * MiB, dir=emu.tmp_dir) as spool:
            for chunk in self._body_chunks():
                hasher.update(chunk)
                if md5 is not None:
                    md5.update(chunk)
                spool.write(chunk)
            self._check_md5(md5)
            spool.seek(0)
            blob = emu.blobs.put(req.bucket, req.key, iter(lambda: spool.read(MiB), b""), meta=meta,
                                 content_type=content_type, etag=hasher.etag(), mtime=emu.clock.now(),
                                 storage_class=storage_class)
        self.send(200, b"", {"ETag": f'"{blob.etag}"'})

    def _op_post_form(self, req: Request) -> None:
        """Form upload (PostFile). The Python SDK ends the body with `--boundary\\r\\n` (no closing `--`)."""
        emu = self.emu
        ctype = self.headers.get("Content-Type") or ""
        boundary = ctype.split("boundary=", 1)[-1].strip().strip('"').encode()
        body = self._body(emu.max_put + MiB)
        fields: dict[str, tuple[dict, bytes]] = {}
        for chunk in body.split(b"--" + boundary):
            if chunk.startswith(b"--") or not chunk.strip():
                continue
            chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
            head, sep, content = chunk.partition(b"\r\n\r\n")
            if not sep:
                continue
            content = content[:-2] if content.endswith(b"\r\n") else content
            headers = {}
            for line in head.decode("utf-8", "replace").split("\r\n"):
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            disposition = headers.get("content-disposition", "")
            name = disposition.split('name="', 1)[-1].split('"', 1)[0] if 'name="' in disposition else ""
            fields[name] = (headers, content)
        try:
            key = fields["FileName"][1].decode("utf-8")
            authorization = fields["Authorization"][1].decode("ascii")
            file_headers, data = fields["file"]
        except (KeyError, UnicodeDecodeError):
            raise Reject(400, RET_INVALID_ARGUMENT, "form needs FileName, Authorization and file") from None
        parsed = auth.parse_authorization(authorization)
        content_type = file_headers.get("content-type", "")
        sts = auth.string_to_sign("POST", req.bucket, key, content_md5=self.headers.get("Content-MD5") or "",
                                  content_type=content_type)
        if parsed is None or parsed[0] != emu.public_key or not hmac.compare_digest(
                parsed[1], auth.signature(emu.private_key, sts)):
            raise Reject(403, RET_AUTH_FAILED, "signature not match")
        blob = emu.blobs.put(req.bucket, key, data, content_type=content_type or "application/octet-stream",
                             etag=auth.etag_of(data), mtime=emu.clock.now())
        self.send(200, b"", {"ETag": f'"{blob.etag}"'})

    def _object_headers(self, blob: Blob, bucket: str) -> dict:
        headers = {"Content-Type": blob.content_type, "ETag": f'"{blob.etag}"',
                   "Last-Modified": email.utils.formatdate(blob.mtime, usegmt=True),
                   "Accept-Ranges": "bytes", "X-Ufile-Storage-Class": blob.storage_class}
        restore = self.emu.restore_header(bucket, blob)
        if restore:
            headers["X-Ufile-Restore"] = restore
        for name, value in blob.meta.items():
            headers["X-Ufile-Meta-" + name] = value
        return headers

    def _blob(self, req: Request) -> Blob:
        blob = self.emu.blobs.get(req.bucket, req.key)
        if blob is None:
            raise Reject(404, RET_FILE_NOT_EXIST, "file not exist")
        return blob

    def _op_head(self, req: Request) -> None:
        self._op_get(req)

    def _op_get(self, req: Request) -> None:
        for _ in range(5):  # the object may be replaced between the index lookup and the open
            blob = self._blob(req)
            try:
                with open(self.emu.blobs.path_of(req.bucket, req.key), "rb") as f:
                    if os.fstat(f.fileno()).st_size == blob.size:
                        self._send_object(blob, f, req.bucket)
                        return
            except FileNotFoundError:
                continue
        raise Reject(500, RET_INTERNAL, "object changed while being read")

    def _send_object(self, blob: Blob, f, bucket: str) -> None:
        if self.command == "GET" and not self.emu.readable(bucket, blob):
            # Archived and not restored: the bytes are not there to send (status and RetCode: UNVERIFIED).
            raise Reject(403, RET_ARCHIVED, "file is archived: restore it first (PUT ?restore)")
        if_match = self.headers.get("If-Match")
        if if_match and if_match.strip() != "*" and if_match.strip().strip('"') != blob.etag:
            raise Reject(412, RET_PRECONDITION, "precondition failed (If-Match)")
        headers = self._object_headers(blob, bucket)
        start, end, status = 0, blob.size, 200
        spec = self.headers.get("Range")
        if spec:
            parsed = _parse_range(spec, blob.size)
            if parsed is None:
                # No `Content-Range: bytes */size` here (RFC 7233 has one): the ufile SDK parses any
                # Content-Range as `bytes a-b/n` and crashes on '*', so the service cannot be sending it.
                raise Reject(416, RET_BAD_RANGE, "requested range not satisfiable")
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
        self._streaming = True
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if self.command == "HEAD":
            return
        f.seek(start)
        left = end - start
        while left > 0:
            chunk = f.read(min(MiB, left))
            if not chunk:
                self.close_connection = True  # short file: the client sees a truncated body
                return
            self.wfile.write(chunk)
            left -= len(chunk)

    def _op_delete(self, req: Request) -> None:
        if not self.emu.blobs.delete(req.bucket, req.key):
            raise Reject(404, RET_FILE_NOT_EXIST, "file not exist")
        self.send(204)

    def _op_copy(self, req: Request) -> None:
        emu = self.emu
        source = unquote(self.headers.get("X-Ufile-Copy-Source") or "")
        src_bucket, _, src_key = source.lstrip("/").partition("/")
        directive = (self.headers.get("X-Ufile-Metadata-Directive") or "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise Reject(400, RET_INVALID_ARGUMENT, f"bad X-Ufile-Metadata-Directive {directive!r}")
        meta = self._meta_from_headers() if directive == "REPLACE" else None
        self._drain()
        if not emu.blobs.has_bucket(src_bucket):
            raise Reject(404, RET_BUCKET_NOT_EXIST, "bucket not exist")
        if emu.blobs.get(src_bucket, src_key) is None:
            raise Reject(404, RET_FILE_NOT_EXIST, "file not exist")
        try:
            blob = emu.blobs.copy(src_bucket, src_key, req.bucket, req.key, meta=meta)
        except (KeyError, FileNotFoundError):
            raise Reject(404, RET_FILE_NOT_EXIST, "file not exist") from None
        blob.mtime = emu.clock.now()
        self.send(200, b"", {"ETag": f'"{blob.etag}"'})

    def _op_opmeta(self, req: Request) -> None:
        try:
            body = json.loads(self._body(64 * 1024) or b"{}")
            op, metak, metav = body["op"], body["metak"], str(body["metav"])
        except (ValueError, KeyError, TypeError):
            raise Reject(400, RET_INVALID_ARGUMENT, "bad opmeta body") from None
        if op != "set" or metak != "mimetype":
            raise Reject(400, RET_INVALID_ARGUMENT, "only op=set metak=mimetype is supported")
        self._blob(req).content_type = metav
        self.send(200)

    def _op_class_switch(self, req: Request) -> None:
        value = req.query.get("storageClass", "").upper()
        if value not in STORAGE_CLASSES:
            raise Reject(400, RET_INVALID_ARGUMENT, f"bad storageClass {value!r}")
        self._blob(req).storage_class = value
        self.send(200)

    def _op_restore(self, req: Request) -> None:
        """`PUT /<key>?restore` (ufile-api/restore.md): 200, no body. Only ARCHIVE files have anything to
        restore; for others the service's answer is UNVERIFIED (here: 200, nothing changes). A restore of
        a restored or restoring file changes nothing either."""
        blob = self._blob(req)
        self._drain()
        if blob.storage_class == "ARCHIVE":
            self.emu.request_restore(req.bucket, blob)
        self.send(200, b"")

    # ------------------------------------------------------------------ listing

    def _op_list(self, req: Request) -> None:
        q = req.query
        prefix, marker, delimiter = q.get("prefix", ""), q.get("marker", ""), q.get("delimiter", "")
        try:
            max_keys = int(q.get("max-keys") or 100)
        except ValueError:
            raise Reject(400, RET_INVALID_ARGUMENT, "bad max-keys") from None
        if max_keys < 1:
            raise Reject(400, RET_INVALID_ARGUMENT, "max-keys must be positive")
        max_keys = min(max_keys, 1000)  # docs: "不超过1000"; clamped, as S3 does
        if delimiter not in ("", "/"):
            raise Reject(400, RET_INVALID_ARGUMENT, "delimiter must be '/' or ''")
        objects, prefixes, next_marker = self.emu.blobs.list(req.bucket, prefix, delimiter, marker, max_keys)
        self.send_json(200, {
            "Name": req.bucket, "Prefix": prefix, "MaxKeys": str(max_keys), "Delimiter": delimiter,
            "IsTruncated": next_marker is not None, "NextMarker": next_marker or "",
            "Contents": [{"Key": b.key, "MimeType": b.content_type, "LastModified": int(b.mtime),
                          "CreateTime": int(b.mtime), "Etag": b.etag, "Size": str(b.size),
                          "StorageClass": b.storage_class, "UserMeta": dict(b.meta)} for b in objects],
            "CommonPrefixes": [{"Prefix": p} for p in prefixes],
        })

    def _op_prefix_list(self, req: Request) -> None:
        q = req.query
        try:
            limit = int(q.get("limit") or 20)
        except ValueError:
            raise Reject(400, RET_INVALID_ARGUMENT, "bad limit") from None
        limit = max(1, min(limit, 1000))
        objects, _, next_marker = self.emu.blobs.list(req.bucket, q.get("prefix", ""), "", q.get("marker", ""),
                                                      limit)
        self.send_json(200, {
            "BucketName": req.bucket, "BucketId": self.emu.bucket_id(req.bucket), "NextMarker": next_marker or "",
            "DataSet": [{"BucketName": req.bucket, "FileName": b.key, "Hash": b.etag, "MimeType": b.content_type,
                         "Size": b.size, "CreateTime": int(b.mtime), "ModifyTime": int(b.mtime),
                         "StorageClass": b.storage_class} for b in objects],
        })

    # ------------------------------------------------------------------ multipart

    def _op_init_multipart(self, req: Request) -> None:
        emu = self.emu
        self._drain()
        upload = Upload(upload_id=str(uuid.uuid4()), bucket=req.bucket, key=req.key,
                        meta=self._meta_from_headers(), storage_class=self._storage_class(),
                        content_type=self.headers.get("Content-Type") or "application/octet-stream",
                        started=emu.clock.now())
        emu.add_upload(upload)
        self.send_json(200, {"UploadId": upload.upload_id, "BlkSize": emu.blk_size, "Bucket": req.bucket,
                             "Key": req.key})

    def _upload(self, req: Request) -> Upload:
        upload = self.emu.get_upload(req.query.get("uploadId", ""))
        if upload is None or upload.bucket != req.bucket or upload.key != req.key:
            raise Reject(404, RET_NO_SUCH_UPLOAD, "upload id not exist")
        return upload

    def _op_upload_part(self, req: Request) -> None:
        emu = self.emu
        upload = self._upload(req)
        try:
            number = int(req.query.get("partNumber", ""))
        except ValueError:
            raise Reject(400, RET_INVALID_ARGUMENT, "bad partNumber") from None
        if not 0 <= number < 100_000_000:
            raise Reject(400, RET_INVALID_ARGUMENT, "partNumber out of range")
        source = self.headers.get("X-Ufile-Copy-Source")
        if source:
            data = self._part_copy_data(source)
        else:
            data = self._body(emu.blk_size)
        if not data:
            raise Reject(400, RET_INVALID_ARGUMENT, "empty part")
        self._check_md5(hashlib.md5(data) if self.headers.get("Content-MD5") else None)
        view = memoryview(data)
        digests = [hashlib.sha1(view[i:i + auth.ETAG_BLOCK]).digest() for i in range(0, len(data), auth.ETAG_BLOCK)]
        part = Part(number=number, size=len(data), etag=auth.etag_from_block_digests(digests), digests=digests,
                    mtime=emu.clock.now())
        emu.store_part(upload, part, data)
        self.send_json(200, {"PartNumber": number}, {"ETag": f'"{part.etag}"'})

    def _part_copy_data(self, source: str) -> bytes:
        emu = self.emu
        src_bucket, _, src_key = unquote(source).lstrip("/").partition("/")
        blob = emu.blobs.get(src_bucket, src_key)
        if blob is None:
            raise Reject(404, RET_FILE_NOT_EXIST, "copy source not exist")
        spec = self.headers.get("X-Ufile-Copy-Source-Range") or f"bytes=0-{blob.size - 1}"
        parsed = _parse_range(spec, blob.size)
        if parsed is None or parsed[1] - parsed[0] > emu.blk_size:
            raise Reject(400, RET_INVALID_ARGUMENT, "bad X-Ufile-Copy-Source-Range")
        self._drain()
        return emu.blobs.read(src_bucket, src_key, parsed[0], parsed[1])

    def _op_finish_multipart(self, req: Request) -> None:
        emu = self.emu
        upload = self._upload(req)
        try:
            body = self._body(16 * MiB).decode("ascii")
        except UnicodeDecodeError:
            raise Reject(400, RET_INVALID_ARGUMENT, "finish body must be ASCII ETags") from None
        etags = [e.strip().strip('"') for e in body.split(",")] if body.strip() else []
        finish_meta = self._meta_from_headers()
        with upload.lock:
            if emu.get_upload(upload.upload_id) is not upload:
                raise Reject(404, RET_NO_SUCH_UPLOAD, "upload id not exist")
            parts = dict(upload.parts)
            self._validate_parts(parts, etags)
            dest = req.key
            new_key = req.query.get("newKey", "")
            if new_key and emu.blobs.get(req.bucket, req.key) is not None:
                dest = new_key  # docs: newKey is used when the key got taken meanwhile
            ordered = [parts[i] for i in range(len(etags))]
            etag = self._final_etag(upload, ordered)
            use_meta = finish_meta or upload.meta
            if (self.headers.get("X-Ufile-Metadata-Directive") or "").upper() == "REPLACE":
                use_meta = finish_meta
            blob = emu.blobs.put(req.bucket, dest, emu.part_stream(upload, ordered), meta=use_meta,
                                 content_type=upload.content_type, etag=etag, mtime=emu.clock.now(),
                                 storage_class=upload.storage_class)
            emu.drop_upload(upload)
        self.send_json(200, {"Bucket": req.bucket, "Key": dest, "FileSize": blob.size}, {"ETag": f'"{etag}"'})

    def _validate_parts(self, parts: dict[int, Part], etags: list[str]) -> None:
        emu = self.emu
        if not etags:
            raise Reject(400, RET_INVALID_ARGUMENT, "no part ETags in the finish body")
        missing = [i for i in range(len(etags)) if i not in parts]
        if missing:
            raise Reject(400, RET_INVALID_ARGUMENT, f"missing parts {missing[:10]}")
        extra = sorted(n for n in parts if n >= len(etags))
        if extra:
            raise Reject(400, RET_INVALID_ARGUMENT, f"uploaded parts {extra[:10]} are not in the finish body")
        for i, etag in enumerate(etags):
            if parts[i].etag != etag:
                raise Reject(400, RET_INVALID_ARGUMENT, f"ETag of part {i} does not match (wrong part order?)")
        for i in range(len(etags) - 1):
            if parts[i].size != emu.blk_size:
                raise Reject(400, RET_INVALID_ARGUMENT, f"part {i} has {parts[i].size} bytes, BlkSize is {emu.blk_size}")

    def _final_etag(self, upload: Upload, ordered: list[Part]) -> str:
        if self.emu.blk_size % auth.ETAG_BLOCK == 0:
            return auth.etag_from_block_digests([d for part in ordered for d in part.digests])
        hasher = auth.EtagHasher()
        for chunk in self.emu.part_stream(upload, ordered):
            hasher.update(chunk)
        return hasher.etag()

    def _op_abort_multipart(self, req: Request) -> None:
        upload = self._upload(req)
        self._drain()
        self.emu.drop_upload(upload)
        self.send(200)

    def _op_list_uploads(self, req: Request) -> None:
        q = req.query
        try:
            limit = max(1, min(int(q.get("limit") or 20), 1000))
        except ValueError:
            raise Reject(400, RET_INVALID_ARGUMENT, "bad limit") from None
        uploads = self.emu.live_uploads(req.bucket, q.get("prefix", ""))
        marker = q.get("marker", "")
        if marker:
            ids = [u.upload_id for u in uploads]
            uploads = uploads[ids.index(marker) + 1:] if marker in ids else uploads
        page, rest = uploads[:limit], uploads[limit:]
        self.send_json(200, {"RetCode": 0, "ErrMsg": "", "NextMarker": page[-1].upload_id if rest else "",
                             "DataSet": [{"UploadId": u.upload_id, "FileName": u.key, "StartTime": int(u.started)}
                                         for u in page]})

    def _op_list_parts(self, req: Request) -> None:
        q = req.query
        upload = self.emu.get_upload(q.get("uploadId", ""))
        if upload is None or upload.bucket != req.bucket:
            raise Reject(404, RET_NO_SUCH_UPLOAD, "upload id not exist")
        try:
            max_parts = max(1, min(int(q.get("max-parts") or 1000), 1000))
            after = int(q["part-number-marker"]) if q.get("part-number-marker") else -1
        except ValueError:
            raise Reject(400, RET_INVALID_ARGUMENT, "bad max-parts or part-number-marker") from None
        with upload.lock:
            numbers = sorted(n for n in upload.parts if n > after)
            parts = [upload.parts[n] for n in numbers]
        page, rest = parts[:max_parts], parts[max_parts:]
        self.send_json(200, {
            "Bucket": req.bucket, "Key": upload.key, "UploadId": upload.upload_id,
            "StorageClass": upload.storage_class, "Status": "Uploading",
            "NextPartNumberMarker": page[-1].number if page else 0, "MaxParts": max_parts,
            "IsTruncated": bool(rest),
            "Parts": [{"PartNum": p.number, "LastModified": int(p.mtime), "Etag": p.etag, "Size": p.size}
                      for p in page]})

    # ------------------------------------------------------------------ bucket API (api.ufile.test)

    def _bucket_api(self, req: Request) -> None:
        emu = self.emu
        self._drain()
        if self.inject("api"):
            return
        params = dict(req.query)
        given = params.pop("Signature", "")
        public = params.pop("PublicKey", "")
        action = params.get("Action", "")

        def answer(code: int, message: str = "", **extra) -> None:
            self.send_json(200, dict({"RetCode": code, "Action": f"{action}Response", "Message": message}, **extra))

        if public != emu.public_key or not hmac.compare_digest(
                given, auth.api_signature(params, emu.public_key, emu.private_key)):
            answer(API_BAD_SIGNATURE, "Signature VerifyAC Error")
            return
        name = params.get("BucketName", "")
        if action == "DescribeBucket":
            try:
                offset, limit = int(params.get("Offset") or 0), int(params.get("Limit") or 20)
            except ValueError:
                answer(API_BAD_PARAM, "bad Offset/Limit")
                return
            names = [name] if name else emu.blobs.buckets()
            if name and not emu.blobs.has_bucket(name):
                answer(API_NO_BUCKET, "bucket not exist")
                return
            answer(0, DataSet=[{"BucketName": n, "BucketId": emu.bucket_id(n), "Type": "private",
                                "Domain": {"Src": [f"{n}{emu.suffix}"], "Cdn": [], "CustomSrc": [], "CustomCdn": []},
                                "Region": "emulator", "CreateTime": 0, "ModifyTime": 0}
                               for n in names[offset: offset + limit]])
        elif action == "CreateBucket":
            if not name or emu.blobs.has_bucket(name):
                answer(API_BUCKET_EXISTS if name else API_BAD_PARAM, "bucket exists" if name else "no BucketName")
                return
            emu.create_bucket(name)
            answer(0, BucketName=name, BucketId=emu.bucket_id(name))
        elif action == "DeleteBucket":
            if not emu.blobs.has_bucket(name):
                answer(API_NO_BUCKET, "bucket not exist")
            elif emu.blobs.keys(name):
                answer(API_NOT_EMPTY, "bucket not empty")
            else:
                emu.blobs.delete_bucket(name)
                answer(0, BucketName=name, BucketId=emu.bucket_id(name))
        else:
            answer(API_BAD_PARAM, f"unsupported Action {action!r}")


def _parse_range(spec: str, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `bytes=` range, or None if it cannot be satisfied."""
    spec = spec.strip()
    if not spec.startswith("bytes=") or "," in spec:
        return None
    first, _, last = spec[6:].partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(0, size - n), size) if n > 0 and size > 0 else None
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start >= size or end <= start:
        return None
    return start, min(end, size)


class UfileEmulator(Emulator):
    """UFile emulator. Extra knobs: `blk_size` (the BlkSize handed out), `upload_ttl` (seconds before an
    unfinished upload expires), `max_put` (PutFile limit, 512 MB on the service), `download_suffix` (a CDN
    download host suffix serving GET/HEAD), `restore_delay` / `restore_lifetime` (archive restores).
    `hosts` counts (op, Host) of the file API's requests (op: get, head, put, list ...)."""

    protocol = "ufile"
    handler = UfileHandler

    def __init__(self, root=None, port: int = 0, buckets: tuple[str, ...] = (), verbose: bool = False, *,
                 public_key: str = PUBLIC_KEY, private_key: str = PRIVATE_KEY, suffix: str = SUFFIX,
                 blk_size: int = 4 * MiB, upload_ttl: float = 7 * 86400, max_put: int = 512 * MiB) -> None:
        self.public_key, self.private_key, self.suffix = public_key, private_key, suffix
        self.blk_size, self.upload_ttl, self.max_put = blk_size, upload_ttl, max_put
        self._uploads: dict[str, Upload] = {}
        self._lock = threading.Lock()
        # A CDN download host suffix (`.uvideo.ucloud.com.cn`): GET/HEAD of <bucket><download_suffix>.
        self.download_suffix: str | None = None
        self.hosts: collections.Counter[tuple[str, str]] = collections.Counter()
        # Archive restores: how long one takes (US3 example code: "usually within 10 s") and how long the
        # restored copy stays readable (emulator's choice: one day).
        self.restore_delay = 0.0
        self.restore_lifetime = 86400.0
        self.restore_requests = 0
        self._restores: dict[tuple, float] = {}
        super().__init__(root=root, port=port, buckets=buckets, verbose=verbose)
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.parts_root = self.root / "parts"
        self.parts_root.mkdir(parents=True, exist_ok=True)

    def config(self) -> dict:
        return {"type": "ufile", "public_key": self.public_key, "private_key": self.private_key,
                "upload_suffix": self.suffix, "endpoint": self.url, "bucket_host": API_HOST}

    # -- hosts and archive restores ----------------------------------------------------------------

    def note_host(self, op: str, host: str) -> None:
        with self._lock:
            self.hosts[(op, host)] += 1

    def _restore_id(self, bucket: str, blob: Blob) -> tuple:
        return (bucket, blob.key, blob.etag, blob.mtime)  # a new version of the key starts frozen again

    def request_restore(self, bucket: str, blob: Blob) -> None:
        with self._lock:
            self.restore_requests += 1
            self._restores.setdefault(self._restore_id(bucket, blob), self.clock.now())

    def restore_state(self, bucket: str, blob: Blob) -> tuple[bool, float] | None:
        """None: frozen, no restore asked for (or the restored copy expired); else (ongoing, expiry)."""
        with self._lock:
            asked = self._restores.get(self._restore_id(bucket, blob))
        if asked is None:
            return None
        now, done = self.clock.now(), asked + self.restore_delay
        if now < done:
            return True, 0.0
        expiry = done + self.restore_lifetime
        return (None if now >= expiry else (False, expiry))

    def restore_header(self, bucket: str, blob: Blob) -> str:
        """`X-Ufile-Restore` as HEAD sends it: S3's form, `ongoing-request="true"` while the restore runs,
        then `ongoing-request="false", expiry-date="<HTTP date>"` (vendor SDKs test for the
        `ongoing-request="false"` text; the expiry part's exact form is UNVERIFIED)."""
        if blob.storage_class != "ARCHIVE":
            return ""
        state = self.restore_state(bucket, blob)
        if state is None:
            return ""
        ongoing, expiry = state
        if ongoing:
            return 'ongoing-request="true"'
        return f'ongoing-request="false", expiry-date="{email.utils.formatdate(expiry, usegmt=True)}"'

    def readable(self, bucket: str, blob: Blob) -> bool:
        if blob.storage_class != "ARCHIVE":
            return True
        state = self.restore_state(bucket, blob)
        return state is not None and not state[0]

    @staticmethod
    def bucket_id(name: str) -> str:
        return "ufile-" + hashlib.sha1(name.encode()).hexdigest()[:8]

    # uploads
    def add_upload(self, upload: Upload) -> None:
        (self.parts_root / upload.upload_id).mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._uploads[upload.upload_id] = upload

    def get_upload(self, upload_id: str) -> Upload | None:
        """A live upload; an expired one is dropped (its parts with it) and reported as missing."""
        with self._lock:
            upload = self._uploads.get(upload_id)
        if upload is not None and self.clock.now() - upload.started > self.upload_ttl:
            self.drop_upload(upload)
            return None
        return upload

    def live_uploads(self, bucket: str, prefix: str = "") -> list[Upload]:
        with self._lock:
            candidates = [u for u in self._uploads.values() if u.bucket == bucket and u.key.startswith(prefix)]
        live = [u for u in candidates if self.get_upload(u.upload_id) is not None]
        return sorted(live, key=lambda u: (u.key, u.upload_id))

    def drop_upload(self, upload: Upload) -> None:
        with self._lock:
            self._uploads.pop(upload.upload_id, None)
        shutil.rmtree(self.parts_root / upload.upload_id, ignore_errors=True)

    def store_part(self, upload: Upload, part: Part, data: bytes) -> None:
        directory = self.parts_root / upload.upload_id
        tmp = directory / f"{part.number}.tmp{threading.get_ident()}"
        try:
            tmp.write_bytes(data)
            tmp.replace(directory / str(part.number))
        except FileNotFoundError:
            raise Reject(404, RET_NO_SUCH_UPLOAD, "upload id not exist (aborted)") from None
        with upload.lock:
            upload.parts[part.number] = part

    def part_stream(self, upload: Upload, parts: list[Part]) -> Iterator[bytes]:
        for part in parts:
            path: Path = self.parts_root / upload.upload_id / str(part.number)
            with open(path, "rb") as f:
                while chunk := f.read(MiB):
                    yield chunk
