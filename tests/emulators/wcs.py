"""Loopback emulator of Wangsu/CDNetworks WCS restV1: upload, management and download paths on one port.

    python scripts/emulator.py wcs [--port N] [--root DIR] [--bucket NAME]...

First line printed: {"type": "wcs", "access_key", "secret_key", "put_url", "mgr_url", "get_url"}. All three
domains are this server; downloads live under `/dl/<bucket>/<key>` (a real download domain is bound to one
bucket and serves `/<key>`; the provider replaces `{bucket}` in get_url).

What it implements, and where each fact comes from (shared/PROTOCOLS.md §3, vendor SDKs and docs):
- Upload token (`AK:b64(hex hmac):policy`) checked on `/file/upload` (form field `token`) and on
  mkblk/bput/mkfile (`Authorization`); deadline in ms against the emulator clock; `fsizeLimit` → 401 (docs);
  `overwrite` absent/0 and the key exists → 614 (the policy key and its "0 = don't overwrite, the
  default" are documented, PROTOCOLS.md §3.5; the code 614 is Qiniu heritage: UNVERIFIED), on the form
  upload and on mkfile (the multipart upload's merge; where the real service checks it: UNVERIFIED).
- Management token over `path?query\\n body` exactly as received; bad or missing → 401.
- mkblk/bput replies `{ctx, checksum, crc32, offset, host}` with `offset` cumulative inside the block
  (the SDK reads its next chunk there). A ctx is valid for the next chunk only.
- mkfile: body = last ctx of each block in block order; `Key`/`MimeType` headers (Go SDK) or
  `/key/<b64>`, `/mimeType/<b64>`, `/x:<name>/<b64>` path segments (py2 SDK, Qiniu).
- list: `mode` 0/1 = one directory level, files first / folders first; no mode = recursive, fuzzy prefix;
  opaque `marker`, "" on the last page.
- Download: Range as in the docs' table (suffix ranges, clamping, 416), ETag, If-Match → 412.
Error answers are `{"code": "<status>", "message": ...}` with that HTTP status, plus `X-Reqid` (the SDK
reads it). Codes other than plain HTTP ones (614 exists, 631 no such bucket, 701 ctx invalid/expired) follow
the Qiniu heritage of the protocol and are UNVERIFIED against WCS docs; not-found is HTTP 404.

Multipart error cases: a bput whose ctx is not the block's latest or whose offset is not the bytes received
so far → 701 / 400; a chunk beyond the declared block size → 400; mkfile with blocks out of order, missing,
incomplete, or sizes that do not add up (or a non-last block not a multiple of 4 MiB) → 400; a ctx older
than `ctx_ttl` (advance `emulator.clock`) → 701.

Faults (`emulator.faults`), op names: upload, mkblk, bput, mkfile, stat, list, delete, move, copy,
setdeadline, bucket_list, get. `Fault(op="mkblk", action="status", status=200, code="badcrc")` answers a
success whose crc32 is wrong, to test the client's checksum check.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, unquote

from tests.emulators.base import Emulator, EmulatorHandler, Fault, KeyExists

BLOCK_UNIT = 4 * 1024 * 1024


class WcsError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ----------------------------------------------------------------------------------------------
# Encoding helpers (written independently of storefs.wire.auth.wcs on purpose: the SDK tests then
# check both against the vendor's code).


def _overwrites(policy: dict) -> bool:
    """The put policy's `overwrite`: 1 replaces an existing key; absent or 0 (the default) does not."""
    return str(policy.get("overwrite", 0)) == "1"


def _b64(data: bytes | str) -> str:
    return base64.urlsafe_b64encode(data.encode() if isinstance(data, str) else data).decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, UnicodeEncodeError):
        raise WcsError(400, "bad base64") from None


def _sign(secret: str, message: bytes) -> str:
    return _b64(hmac.new(secret.encode(), message, hashlib.sha1).hexdigest())


def wcs_etag(chunks: Iterator[bytes]) -> str:
    """SHA-1 per 4 MiB block; 0x16||sha1 for one block, 0x96||sha1(sha1s) for more."""
    digests, current, filled = [], hashlib.sha1(), 0
    for chunk in chunks:
        view = memoryview(chunk)
        while len(view):
            take = min(BLOCK_UNIT - filled, len(view))
            current.update(view[:take])
            filled += take
            view = view[take:]
            if filled == BLOCK_UNIT:
                digests.append(current.digest())
                current, filled = hashlib.sha1(), 0
    if filled or not digests:
        digests.append(current.digest())
    if len(digests) == 1:
        return _b64(b"\x16" + digests[0])
    return _b64(b"\x96" + hashlib.sha1(b"".join(digests)).digest())


def _parse_form(content_type: str, body: bytes) -> dict[str, tuple[bytes, str | None]]:
    """multipart/form-data → {name: (value, filename)}. Tolerates a missing closing boundary."""
    boundary = None
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not content_type.lower().startswith("multipart/form-data") or not boundary:
        raise WcsError(400, "expected multipart/form-data")
    fields: dict[str, tuple[bytes, str | None]] = {}
    delimiter = b"--" + boundary.encode()
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        if content.endswith(b"\r\n"):
            content = content[:-2]
        name = filename = None
        for line in head.decode("utf-8", "replace").split("\r\n"):
            if line.lower().startswith("content-disposition:"):
                for item in line.split(";")[1:]:
                    k, _, v = item.strip().partition("=")
                    if k == "name":
                        name = v.strip('"')
                    elif k == "filename":
                        filename = v.strip('"')
        if name:
            fields[name] = (content, filename)
    return fields


# ----------------------------------------------------------------------------------------------
# Blocks of multipart uploads (data on disk)


@dataclasses.dataclass
class Block:
    block_id: str
    path: Path
    declared: int
    index: int
    bucket: str
    created: float
    received: int = 0
    seq: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def ctx(self) -> str:
        return _b64(f"{self.block_id}:{self.seq}").rstrip("=")


class WcsHandler(EmulatorHandler):
    server_version = "WS-web-server"

    @property
    def wcs(self) -> WcsEmulator:
        return self.server.emulator  # type: ignore[return-value]

    # -- plumbing
    def reply(self, status: int, obj: object, headers: dict | None = None) -> None:
        self.send_json(status, obj, headers={"X-Reqid": secrets.token_hex(8), **(headers or {})})

    def error_response(self, fault: Fault) -> None:
        if fault.code == "badcrc":
            # A success with a wrong crc32: the client must notice and send the block again.
            self.reply(200, {"ctx": "bogus", "checksum": "", "crc32": 1, "offset": 0})
            return
        if fault.body:
            self.send(fault.status, fault.body, {"X-Reqid": "fault"}, content_type="application/json")
            return
        self.reply(fault.status, {"code": str(fault.status), "message": fault.code or "injected fault"})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        parts = path.split("/")
        head = parts[1] if len(parts) > 1 else ""
        if head == "bucket" and len(parts) > 2:
            head = "bucket/" + parts[2]
        route = ROUTES.get((method if method != "HEAD" else "GET", head))
        if route is None:
            self.read_body()
            self.reply(404, {"code": "404", "message": f"no such API {method} {path}"})
            return
        op, handler = route
        if self.inject(op):
            return
        body = self.read_body() if method == "POST" else b""
        try:
            handler(self, parts, query, body)
        except WcsError as exc:
            self.reply(exc.status, {"code": str(exc.status), "message": exc.message})

    # -- authentication
    def _mgr_auth(self, body: bytes) -> None:
        token = self.headers.get("Authorization") or ""
        ak, _, sign = token.partition(":")
        if not ak or ak != self.wcs.access_key:
            raise WcsError(401, "bad token: unknown access key")
        expected = _sign(self.wcs.secret_key, self.path.encode("latin-1") + b"\n" + body)
        if not hmac.compare_digest(sign, expected):
            raise WcsError(401, "bad token: signature mismatch")

    def _upload_policy(self, token: str) -> dict:
        ak, sign, encoded = (token.split(":", 2) + ["", ""])[:3]
        if not ak or ak != self.wcs.access_key:
            raise WcsError(401, "bad token: unknown access key")
        if not hmac.compare_digest(sign, _sign(self.wcs.secret_key, encoded.encode())):
            raise WcsError(401, "bad token: signature mismatch")
        try:
            policy = json.loads(_unb64(encoded))
            deadline = int(policy["deadline"])
            scope = str(policy["scope"])
        except (ValueError, KeyError, TypeError):
            raise WcsError(401, "bad token: unreadable put policy") from None
        if deadline < self.wcs.clock.now() * 1000:
            raise WcsError(401, "token expired")
        bucket = scope.split(":", 1)[0]
        if not self.wcs.blobs.has_bucket(bucket):
            raise WcsError(631, "no such bucket")
        return policy

    @staticmethod
    def _scope_key(policy: dict, given: str | None) -> tuple[str, str]:
        bucket, sep, key = str(policy["scope"]).partition(":")
        if sep and given is not None and given != key:
            raise WcsError(400, "key does not match the token scope")
        if not sep and not given:
            raise WcsError(400, "no key: the scope names only a bucket and none was given")
        return bucket, key if sep else str(given)

    def _may_write(self, policy: dict, bucket: str, key: str, size: int) -> None:
        limit = int(policy.get("fsizeLimit") or 0)
        if limit and size > limit:
            raise WcsError(401, "file size exceeds fsizeLimit")
        if not _overwrites(policy) and self.wcs.lookup(bucket, key) is not None:
            raise WcsError(614, "file exists")

    # -- upload domain
    def h_upload(self, parts: list[str], query: str, body: bytes) -> None:
        fields = _parse_form(self.headers.get("Content-Type") or "", body)
        if "token" not in fields or "file" not in fields:
            raise WcsError(400, "form needs token and file")
        policy = self._upload_policy(fields["token"][0].decode("utf-8", "replace"))
        given = fields["key"][0].decode("utf-8") if "key" in fields else None
        bucket, key = self._scope_key(policy, given)
        data = fields["file"][0]
        self._may_write(policy, bucket, key, len(data))
        mime = fields["mimeType"][0].decode("utf-8") if "mimeType" in fields else "application/octet-stream"
        etag = wcs_etag(iter([data]))
        self.wcs.store(bucket, key, iter([data]), etag, mime, overwrite=_overwrites(policy))
        self._set_deadline_days(bucket, key, fields.get("deadline", (b"", None))[0].decode() or None)
        self.reply(200, {"hash": etag, "key": key})

    def h_mkblk(self, parts: list[str], query: str, body: bytes) -> None:
        policy = self._upload_policy(self.headers.get("Authorization") or "")
        try:
            declared, index = int(parts[2]), int(parts[3])
        except (IndexError, ValueError):
            raise WcsError(400, "mkblk/<blockSize>/<blockIndex>") from None
        if declared <= 0 or len(body) > declared or not body:
            raise WcsError(400, "bad block size")
        block = self.wcs.new_block(declared, index, str(policy["scope"]).split(":", 1)[0])
        self._append(block, body)

    def h_bput(self, parts: list[str], query: str, body: bytes) -> None:
        self._upload_policy(self.headers.get("Authorization") or "")
        try:
            ctx, offset = parts[2], int(parts[3])
        except (IndexError, ValueError):
            raise WcsError(400, "bput/<ctx>/<offset>") from None
        block = self.wcs.block_for(ctx)
        with block.lock:
            if offset != block.received:
                raise WcsError(400, f"bput offset {offset} but {block.received} bytes received")
            if block.received + len(body) > block.declared or not body:
                raise WcsError(400, "chunk exceeds the declared block size")
        self._append(block, body)

    def _append(self, block: Block, chunk: bytes) -> None:
        with block.lock:
            with open(block.path, "ab") as f:
                f.write(chunk)
            block.received += len(chunk)
            block.seq += 1
            reply = {"ctx": block.ctx(), "checksum": _b64(hashlib.sha1(chunk).digest()),
                     "crc32": zlib.crc32(chunk) & 0xFFFFFFFF, "offset": block.received,
                     "host": self.wcs.url}
        self.reply(200, reply)

    def h_mkfile(self, parts: list[str], query: str, body: bytes) -> None:
        policy = self._upload_policy(self.headers.get("Authorization") or "")
        try:
            size = int(parts[2])
        except (IndexError, ValueError):
            raise WcsError(400, "mkfile/<fileSize>") from None
        extras = {parts[i]: unquote(parts[i + 1]) for i in range(3, len(parts) - 1, 2)}
        given = self.headers.get("Key") or extras.get("key")
        bucket, key = self._scope_key(policy, _unb64(given).decode("utf-8") if given else None)
        mime = self.headers.get("MimeType") or (_unb64(extras["mimeType"]).decode() if "mimeType" in extras
                                                else "application/octet-stream")
        ctxs = [c.strip() for c in body.decode("ascii", "replace").split(",") if c.strip()]
        blocks = [self.wcs.block_for(c) for c in ctxs]
        if any(block.bucket != bucket for block in blocks):
            raise WcsError(400, "blocks were uploaded for another bucket")
        self._check_blocks(blocks, size)
        self._may_write(policy, bucket, key, size)
        etag = wcs_etag(_block_chunks(blocks))
        self.wcs.store(bucket, key, _block_chunks(blocks), etag, mime, overwrite=_overwrites(policy))
        self._set_deadline_days(bucket, key, self.headers.get("Deadline"))
        self.wcs.drop_blocks(blocks)
        self.reply(200, {"hash": etag, "key": key})

    @staticmethod
    def _check_blocks(blocks: list[Block], size: int) -> None:
        if not blocks:
            raise WcsError(400, "no blocks")
        for position, block in enumerate(blocks):
            if block.index != position:
                raise WcsError(400, f"block {block.index} found at position {position}: "
                                    "blocks missing or out of order")
            if block.received != block.declared:
                raise WcsError(400, f"block {block.index} incomplete ({block.received}/{block.declared})")
            if position < len(blocks) - 1 and block.declared % BLOCK_UNIT:
                raise WcsError(400, f"block {block.index} size {block.declared} not a multiple of 4 MiB")
        if sum(b.declared for b in blocks) != size:
            raise WcsError(400, f"blocks hold {sum(b.declared for b in blocks)} bytes, mkfile says {size}")

    def _set_deadline_days(self, bucket: str, key: str, days: str | None) -> None:
        if days not in (None, "", "-1"):
            try:
                self.wcs.expire_at(bucket, key, self.wcs.clock.now() + int(days) * 86400)
            except ValueError:
                raise WcsError(400, "bad deadline") from None

    # -- management domain
    def _entry(self, text: str) -> tuple[str, str]:
        bucket, sep, key = _unb64(unquote(text)).decode("utf-8", "surrogateescape").partition(":")
        if not sep:
            raise WcsError(400, "EncodedEntryURI needs bucket:key")
        if not self.wcs.blobs.has_bucket(bucket):
            raise WcsError(631, "no such bucket")
        return bucket, key

    def h_stat(self, parts: list[str], query: str, body: bytes) -> None:
        self._mgr_auth(body)
        bucket, key = self._entry(parts[2] if len(parts) > 2 else "")
        blob = self.wcs.lookup(bucket, key)
        if blob is None:
            raise WcsError(404, "file not exist")
        expiry = self.wcs.expiry(bucket, key)
        self.reply(200, {
            "result": "true", "code": "200", "name": key, "message": "OK", "fsize": str(blob.size),
            "hash": blob.etag, "mimeType": blob.content_type, "putTime": str(int(blob.mtime * 1e7)),
            "expirationDate": time.strftime("%Y%m%d%H%M%S", time.localtime(expiry)) if expiry else "",
            "storageClass": blob.storage_class,
        })

    def h_list(self, parts: list[str], query: str, body: bytes) -> None:
        self._mgr_auth(body)
        params = dict(parse_qsl(query, keep_blank_values=True))
        bucket = params.get("bucket", "")
        if not self.wcs.blobs.has_bucket(bucket):
            raise WcsError(631, "no such bucket")
        try:
            limit = int(params.get("limit") or 1000)
            mode = int(params["mode"]) if params.get("mode", "") != "" else None
        except ValueError:
            raise WcsError(400, "bad limit or mode") from None
        if not 1 <= limit <= 1000 or mode not in (None, 0, 1):
            raise WcsError(400, "limit must be 1-1000, mode 0 or 1")
        prefix = _unb64(params["prefix"]).decode("utf-8") if params.get("prefix") else ""
        marker = params.get("marker") or ""
        items, commons, next_marker = self.wcs.listing(bucket, prefix, mode, marker, limit)
        self.reply(200, {"marker": next_marker, "commonPrefixes": commons, "items": [
            {"key": b.key, "putTime": int(b.mtime * 1e7), "hash": b.etag, "fsize": b.size,
             "mimeType": b.content_type, "expirationDate": "", "storageClass": b.storage_class}
            for b in items]})

    def h_delete(self, parts: list[str], query: str, body: bytes) -> None:
        self._mgr_auth(body)
        bucket, key = self._entry(parts[2] if len(parts) > 2 else "")
        if self.wcs.lookup(bucket, key) is None:
            raise WcsError(404, "file not exist")
        self.wcs.blobs.delete(bucket, key)
        self.reply(200, {"code": 200, "message": "OK"})

    def _move_or_copy(self, parts: list[str], body: bytes, move: bool) -> None:
        self._mgr_auth(body)
        if len(parts) < 4:
            raise WcsError(400, "need source and destination")
        src_bucket, src = self._entry(parts[2])
        dst_bucket, dst = self._entry(parts[3])
        blob = self.wcs.lookup(src_bucket, src)
        if blob is None:
            raise WcsError(404, "file not exist")
        # Docs: a destination of the same name is overwritten.
        if (src_bucket, src) != (dst_bucket, dst):
            self.wcs.blobs.copy(src_bucket, src, dst_bucket, dst)
            copied = self.wcs.blobs.get(dst_bucket, dst)
            if copied is not None:  # keep the source's upload time and type, as a rename would
                copied.mtime, copied.content_type = blob.mtime, blob.content_type
            if move:
                self.wcs.blobs.delete(src_bucket, src)
        self.reply(200, {"code": 200, "message": "OK"})

    def h_move(self, parts: list[str], query: str, body: bytes) -> None:
        self._move_or_copy(parts, body, move=True)

    def h_copy(self, parts: list[str], query: str, body: bytes) -> None:
        self._move_or_copy(parts, body, move=False)

    def h_setdeadline(self, parts: list[str], query: str, body: bytes) -> None:
        self._mgr_auth(body)
        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            bucket = _unb64(params["bucket"]).decode()
            key = _unb64(params["key"]).decode()
            days = int(params["deadline"])
        except (KeyError, ValueError):
            raise WcsError(400, "need bucket, key, deadline") from None
        if self.wcs.lookup(bucket, key) is None:
            raise WcsError(404, "file not exist")
        self.wcs.expire_at(bucket, key, None if days < 0 else self.wcs.clock.now() + days * 86400)
        self.reply(200, {"code": 200, "message": "OK"})

    def h_bucket_list(self, parts: list[str], query: str, body: bytes) -> None:
        self._mgr_auth(body)
        self.reply(200, {"code": "200", "message": "OK", "buckets": [{"name": b} for b in self.wcs.blobs.buckets()]})

    # -- download domain
    def h_get(self, parts: list[str], query: str, body: bytes) -> None:
        if len(parts) < 4:
            raise WcsError(404, "no such file")
        bucket, key = unquote(parts[2]), unquote("/".join(parts[3:]))
        blob = self.wcs.lookup(bucket, key) if self.wcs.blobs.has_bucket(bucket) else None
        if blob is None:
            raise WcsError(404, "file not exist")
        if_match = (self.headers.get("If-Match") or "").strip()
        if if_match and if_match != "*" and if_match.strip('"') != blob.etag:
            raise WcsError(412, "precondition failed")
        start, end = 0, blob.size  # [start, end)
        status = 200
        rng = self.headers.get("Range")
        if rng:
            start, end = _parse_range(rng, blob.size)
            status = 206
        headers = {"ETag": f'"{blob.etag}"', "Accept-Ranges": "bytes", "X-Reqid": secrets.token_hex(8),
                   "Last-Modified": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(blob.mtime))}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
        self.send_response(status)
        self.send_header("Content-Type", blob.content_type)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(self.wcs.blobs.path_of(bucket, key), "rb") as f:
            f.seek(start)
            left = end - start
            while left > 0:
                chunk = f.read(min(left, 1024 * 1024))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)


def _parse_range(header: str, size: int) -> tuple[int, int]:
    """`bytes=a-b`, `a-`, `-n` as the docs' table: ends clamp, a start past the end or a < b → 416."""
    unit, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    try:
        if unit.strip() != "bytes" or not dash or "," in spec:
            raise ValueError
        if not first:
            n = int(last)
            return max(0, size - n), size
        a = int(first)
        b = int(last) if last else size - 1
    except ValueError:
        raise WcsError(416, "bad range") from None
    if a >= size or b < a:
        raise WcsError(416, "range not satisfiable")
    return a, min(b, size - 1) + 1


def _block_chunks(blocks: list[Block]) -> Iterator[bytes]:
    for block in blocks:
        with open(block.path, "rb") as f:
            while True:
                chunk = f.read(1024 * 1024)
                if not chunk:
                    break
                yield chunk


ROUTES = {
    ("POST", "file"): ("upload", WcsHandler.h_upload),
    ("POST", "mkblk"): ("mkblk", WcsHandler.h_mkblk),
    ("POST", "bput"): ("bput", WcsHandler.h_bput),
    ("POST", "mkfile"): ("mkfile", WcsHandler.h_mkfile),
    ("GET", "stat"): ("stat", WcsHandler.h_stat),
    ("GET", "list"): ("list", WcsHandler.h_list),
    ("POST", "delete"): ("delete", WcsHandler.h_delete),
    ("POST", "move"): ("move", WcsHandler.h_move),
    ("POST", "copy"): ("copy", WcsHandler.h_copy),
    ("POST", "setdeadline"): ("setdeadline", WcsHandler.h_setdeadline),
    ("GET", "bucket/list"): ("bucket_list", WcsHandler.h_bucket_list),
    ("GET", "dl"): ("get", WcsHandler.h_get),
}


class WcsEmulator(Emulator):
    protocol = "wcs"
    handler = WcsHandler

    def __init__(self, root: str | Path | None = None, port: int = 0, buckets: tuple[str, ...] = (),
                 verbose: bool = False, access_key: str | None = None, secret_key: str | None = None,
                 ctx_ttl: float = 30 * 86400) -> None:
        self.access_key = access_key or "AK" + secrets.token_hex(10)
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.ctx_ttl = ctx_ttl
        self._lock = threading.Lock()
        self._blocks: dict[str, Block] = {}
        self._expiry: dict[tuple[str, str], float] = {}
        super().__init__(root=root, port=port, buckets=buckets, verbose=verbose)
        self.block_dir = self.root / "blocks"
        self.block_dir.mkdir(parents=True, exist_ok=True)

    def config(self) -> dict:
        return {"type": "wcs", "access_key": self.access_key, "secret_key": self.secret_key,
                "put_url": self.url, "mgr_url": self.url, "get_url": self.url + "/dl/{bucket}"}

    # objects, with retention deadlines applied lazily
    def lookup(self, bucket: str, key: str):
        with self._lock:
            expiry = self._expiry.get((bucket, key))
            if expiry is not None and expiry <= self.clock.now():
                self._expiry.pop((bucket, key), None)
                self.blobs.delete(bucket, key)
                return None
        return self.blobs.get(bucket, key)

    def store(self, bucket: str, key: str, chunks: Iterator[bytes], etag: str, mime: str, *,
              overwrite: bool = True) -> None:
        """overwrite=False (the policy's): 614 if the key is taken when the object would be stored."""
        try:
            self.blobs.put(bucket, key, chunks, etag=etag, content_type=mime, mtime=self.clock.now(),
                           if_absent=not overwrite)
        except KeyExists:
            raise WcsError(614, "file exists") from None
        with self._lock:
            self._expiry.pop((bucket, key), None)

    def expire_at(self, bucket: str, key: str, when: float | None) -> None:
        with self._lock:
            if when is None:
                self._expiry.pop((bucket, key), None)
            else:
                self._expiry[(bucket, key)] = when

    def expiry(self, bucket: str, key: str) -> float | None:
        with self._lock:
            return self._expiry.get((bucket, key))

    # blocks
    def new_block(self, declared: int, index: int, bucket: str) -> Block:
        block_id = secrets.token_hex(12)
        block = Block(block_id=block_id, path=self.block_dir / block_id, declared=declared, index=index,
                      bucket=bucket, created=self.clock.now())
        block.path.touch()
        with self._lock:
            self._blocks[block_id] = block
        return block

    def block_for(self, ctx: str) -> Block:
        try:
            block_id, _, seq = _unb64(ctx).decode("ascii").partition(":")
            seq_number = int(seq)
        except (UnicodeDecodeError, ValueError, WcsError):
            raise WcsError(701, "invalid ctx") from None
        with self._lock:
            block = self._blocks.get(block_id)
        if block is None:
            raise WcsError(701, "ctx invalid or expired")
        if block.created + self.ctx_ttl < self.clock.now():
            self.drop_blocks([block])
            raise WcsError(701, "ctx expired")
        if seq_number != block.seq:
            raise WcsError(701, "ctx is not the latest of its block")
        return block

    def drop_blocks(self, blocks: list[Block]) -> None:
        with self._lock:
            for block in blocks:
                self._blocks.pop(block.block_id, None)
                try:
                    os.unlink(block.path)
                except FileNotFoundError:
                    pass

    def pending_blocks(self) -> int:
        with self._lock:
            return len(self._blocks)

    # listing
    def listing(self, bucket: str, prefix: str, mode: int | None, marker: str, limit: int):
        """(blobs, commonPrefixes, next marker or ""). The marker is opaque to clients."""
        if marker:
            try:
                phase, after = json.loads(_unb64(marker))
            except (ValueError, TypeError):
                raise WcsError(400, "bad marker") from None
        else:
            phase, after = 0, ""
        entries: list[tuple[int, str, bool]]  # (phase, name, is a common prefix)
        if mode is None:
            entries = [(0, k, False) for k in self.blobs.keys(bucket, prefix)]
        else:
            if prefix and not prefix.endswith("/"):
                prefix += "/"  # with mode the prefix names a directory: no fuzzy match (docs)
            files, dirs = [], []
            for k in self.blobs.keys(bucket, prefix):
                cut = k.find("/", len(prefix))
                if cut < 0:
                    files.append(k)
                elif not dirs or dirs[-1] != k[: cut + 1]:
                    dirs.append(k[: cut + 1])
            if mode == 0:
                entries = [(0, k, False) for k in files] + [(1, d, True) for d in dirs]
            else:
                entries = [(0, d, True) for d in dirs] + [(1, k, False) for k in files]
        items, commons = [], []
        last: tuple[int, str] | None = None
        for entry_phase, name, is_dir in entries:
            if marker and (entry_phase, name) <= (phase, after):
                continue
            if len(items) + len(commons) >= limit:
                return items, commons, _b64(json.dumps(list(last or (phase, after)))).rstrip("=")
            if is_dir:
                commons.append(name)
            else:
                blob = self.lookup(bucket, name)
                if blob is None:
                    continue
                items.append(blob)
            last = (entry_phase, name)
        return items, commons, ""
