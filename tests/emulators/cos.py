"""A loopback emulator of Tencent COS v4 (the JSON API with real folders), for tests and by hand:

    python scripts/emulator.py cos [--port N] [--root DIR] [--bucket NAME]...

What it implements (wire facts: /work/shared/PROTOCOLS.md §2 and tencentyun/cos-python-sdk-v4):
- API at /files/v2/<appid>/<bucket><quoted path>; downloads at any path when the Host header is
  `<bucket>-<appid>.<anything>` (the SDK's download host `<bucket>-<appid>.cos<region>.myqcloud.com`;
  with `strict_download_host`, exactly `<bucket>-<appid>.<download_host>`, and with `api_host` set the
  API answers only to that Host, as the real hosts are separate sites). The download host serves the
  Content-Type set with op=update custom_headers.
- Requests as the SDK sends them: multipart/form-data in which every field is a file part (also plain
  form fields, JSON bodies and query-string parameters, which other v4 clients use); ops upload,
  upload_slice_init / _data / _finish / _list, stat, update, delete, create, list (context/listover
  paging), move and copy (dest_fileid, to_over_write); ranged download with If-Match.
- All three signature kinds checked: HMAC, appid, bucket, fileid, expiry (`e`), single-use (`e=0`) signs
  required for delete/update/move/copy and rejected when replayed or stale.
- Real folders (op=create) plus "virtual" folders: a file under a/b/ makes b/ show in a/'s listing
  without existing by itself (stat and delete of such a folder answer -197). Deleting an explicit
  folder leaves its files in place (third-party client docs: "若显式目录中有文件存在，仍可删除该目录").
- Slice upload error cases: bad slice_size (-284), slice out of range / wrong length / out of order in a
  serial session (-5999), missing slices or wrong filesize at finish (-175), sha / uploadparts mismatch
  (-4016, verified with the SHA-1 internal-state quirk), sha omitted at finish (-29094), unknown or
  expired session (-4017, an emulator choice: the vendor's code for this is not documented).
- insertOnly ("1", the default, = don't overwrite; PROTOCOLS.md §2.2) on upload and upload_slice_init:
  an existing file → -177 "file already exists" (HTTP 409; documented, §2.6). A slice session started
  with insertOnly=1 is checked again at its finish (a file made meanwhile → -177): UNVERIFIED, the
  docs say nothing about when the check happens; storefs treats a refusal at either point alike.
- Errors as the vendor shapes them: JSON `{"code": <negative>, "message", "request_id"}` with the HTTP
  statuses of PROTOCOLS.md §2.6. Faults (tests.emulators.base.Fault) by op name: upload,
  upload_slice_init, upload_slice_data, upload_slice_finish, upload_slice_list, stat, update, delete,
  create, list, move, copy, download.
"""
from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import hashlib
import json
import os
import re
import secrets
import threading
import traceback
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from storefs.wire.auth.cos import fileid, quote_path
from tests.emulators.base import Blob, BlobStore, ClientHungUp, Emulator, EmulatorHandler, Fault, KeyExists
from tests.emulators.cos_auth_check import Sha1State, parse_sign, verify_hmac

# code -> HTTP status (PROTOCOLS.md §2.6; the ones marked * are this emulator's choice)
STATUS = {
    -47: 403, -48: 403, -59: 403, -61: 403, -63: 403, -70: 403, -96: 403, -97: 403,
    -71: 503, -133: 404, -197: 404, -4017: 404,  # *-4017
    -177: 409, -178: 409, -173: 409,  # *-173
    -175: 400, -284: 400, -4016: 409, -4019: 409, -4020: 409, -5965: 400, -5999: 400,
    -180: 400, -170: 400, -29094: 400,  # *-180 *-170 *-29094
    -5997: 500, -195: 500, -196: 503,
}
ONCE_OPS = {"delete", "update", "move", "copy"}
SLICE_MIN, SLICE_MAX = 64 * 1024, 3 * 1024 * 1024  # cos_params_check.py::check_slice_size
ILLEGAL_CHARS = set('?*:|\\<>"')
WS_SEGMENT = re.compile(r"/[ \t\n\r\f\v]*/")  # the SDK's r'/(\s*)/' on py2 byte strings
AUTHORITIES = {"", "eInvalid", "eWRPrivate", "eWPrivateRPublic"}
CUSTOM_HEADERS = {"cache-control", "content-type", "content-disposition", "content-language",
                  "content-encoding"}


class CosError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass
class Session:
    sid: str
    bucket: str
    key: str
    filesize: int
    slice_size: int
    biz_attr: str
    insert_only: bool
    sha: str | None
    uploadparts: list | None
    serial: bool
    created: float
    path: Path
    received: dict = dataclasses.field(default_factory=dict)  # offset -> length
    next_offset: int = 0
    last_offset: int | None = None
    expired: bool = False
    # SHA-1 of the file so far, advanced as slices arrive in order (most do, even from parallel clients)
    md: hashlib._Hash = dataclasses.field(default_factory=hashlib.sha1)
    hashed_upto: int = 0


def _ts(value: float) -> str:
    return str(int(value))  # docs: 10-digit unix time, type String


def parse_multipart(body: bytes, content_type: str) -> dict[str, bytes]:
    """Fields of a multipart/form-data body; tolerates a missing closing boundary.

    Scans with find() so a 3 MiB slice is copied once, not once per split/partition/strip.
    """
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise CosError(-5999, "multipart body without boundary")
    delimiter = b"--" + match.group(1).encode()
    fields: dict[str, bytes] = {}
    pos = body.find(delimiter)
    while pos >= 0:
        pos += len(delimiter)
        if body.startswith(b"--", pos):
            break  # closing boundary
        head_end = body.find(b"\r\n\r\n", pos)
        if head_end < 0:
            break
        nxt = body.find(b"\r\n" + delimiter, head_end + 4)
        value_end = nxt if nxt >= 0 else len(body)
        name = re.search(rb';\s*name="([^"]*)"', body[pos:head_end])  # not filename="..."
        if name:
            value = body[head_end + 4: value_end]
            if nxt < 0 and value.endswith(b"\r\n"):
                value = value[:-2]
            fields[name.group(1).decode("utf-8", "replace")] = value
        pos = nxt + 2 if nxt >= 0 else -1
    return fields


class CosHandler(EmulatorHandler):
    server_version = "tencent-cos-v4-emulator"
    # Headers and body leave in separate writes: without TCP_NODELAY each reply waits for the
    # client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    @property
    def cos(self) -> CosEmulator:
        return self.emulator  # type: ignore[return-value]

    # The body is read once to learn the op; base.inject() may ask for it again.
    def read_body(self) -> bytes:
        if self._body is None:
            self._body = super().read_body()
        return self._body

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def error_response(self, fault: Fault) -> None:
        if fault.body:
            self.send(fault.status, fault.body, content_type="application/json")
            return
        code = int(fault.code) if fault.code else {503: -71, 500: -5997, 403: -97, 404: -197,
                                                   409: -177}.get(fault.status, -5999)
        self.send_json(fault.status, {"code": code, "message": "injected fault", "request_id": _rid()})

    # --- routing ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        self._body: bytes | None = None
        split = urlsplit(self.path)
        try:
            api = split.path.startswith("/files/v2/")
            self.cos.note_host("api" if api else "download", self.headers.get("Host", ""))
            if api:
                self._api(split.path, split.query)
            else:
                self._download(split.path, split.query)
        except CosError as exc:
            self.read_body()  # keep the connection usable
            self._fail(exc.code, exc.message)
        except ClientHungUp:
            raise
        except Exception:  # noqa: BLE001 - an emulator bug: answer like a backend failure, keep serving
            if self.emulator.verbose:
                traceback.print_exc()
            self.read_body()
            self._fail(-5997, "emulator internal error")

    def _fail(self, code: int, message: str) -> None:
        self.send_json(STATUS.get(code, 400), {"code": code, "message": message, "request_id": _rid()})

    def _ok(self, data: dict | None = None) -> None:
        body = {"code": 0, "message": "SUCCESS", "request_id": _rid()}
        if data is not None:
            body["data"] = data
        self.send_json(200, body)

    def _api(self, raw_path: str, query: str) -> None:
        if self.cos.api_host and self.headers.get("Host", "") != self.cos.api_host:
            # As a virtual-hosted server: another Host is another site (emulator's choice of code).
            raise CosError(-5999, f"this is the API host {self.cos.api_host}, not {self.headers.get('Host')!r}")
        appid, _, rest = raw_path[len("/files/v2/"):].partition("/")
        bucket, slash, path = rest.partition("/")
        if not slash or not bucket:
            raise CosError(-5999, "path must be /files/v2/<appid>/<bucket>/...")
        cos_path = "/" + unquote(path)
        params: dict[str, object] = dict(parse_qsl(query, keep_blank_values=True))
        if self.command == "POST":
            params.update(self._body_params())
        op = str(params.get("op", ""))
        if self.inject(op or "unknown"):
            return
        if appid != self.cos.appid:
            raise CosError(-70, "appid mismatch")
        if not self.cos.blobs.has_bucket(bucket):
            raise CosError(-133, "bucket not exist")
        handler = getattr(self, f"_op_{op}", None)
        allowed = {"GET": {"stat", "list"}}.get(self.command)
        if handler is None or (allowed is not None and op not in allowed):
            raise CosError(-5999, f"unknown op {op!r} for {self.command}")
        self._check_sign(self.headers.get("Authorization", ""), bucket, cos_path,
                         once_required=op in ONCE_OPS)
        self._ok(handler(bucket, cos_path, params))

    def _body_params(self) -> dict[str, object]:
        body = self.read_body()
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            fields = parse_multipart(body, ctype)
            return {k: (v if k == "filecontent" else v.decode("utf-8", "replace")) for k, v in fields.items()}
        if ctype.startswith("application/json") or body[:1] == b"{":
            try:
                doc = json.loads(body)
            except ValueError:
                raise CosError(-5999, "body is not JSON") from None
            if not isinstance(doc, dict):
                raise CosError(-5999, "body is not a JSON object")
            return doc
        if body:
            return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        return {}

    # --- signatures ---------------------------------------------------------------------------

    def _check_sign(self, sign: str, bucket: str, cos_path: str, *, once_required: bool = False,
                    download: bool = False) -> None:
        cos = self.cos
        if not sign:
            raise CosError(-47, "signature missing")
        try:
            parsed = parse_sign(sign)
        except ValueError as exc:
            raise CosError(-97, f"illegal signature: {exc}") from None
        if parsed.secret_id != cos.secret_id:
            raise CosError(-47, "secretid not found")
        if parsed.appid != cos.appid:
            raise CosError(-70, "appid mismatch")
        if parsed.bucket != bucket:
            raise CosError(-61, "bucket mismatch")
        if not verify_hmac(parsed, cos.secret_key):
            raise CosError(-97, "signature mismatch")
        now = cos.clock.now()
        exact = quote_path(cos_path) if download else fileid(cos.appid, bucket, cos_path)
        if parsed.expired == 0:
            if download:
                raise CosError(-97, "download needs a signature with an expiry")
            if parsed.file_id != exact:
                raise CosError(-63, "fileid mismatch")
            if abs(now - parsed.now) > cos.once_window:
                raise CosError(-59, "single-use signature too old")
            cos.use_once(sign, now)
            return
        if once_required:
            raise CosError(-97, "this op needs a single-use signature (e=0)")
        if parsed.expired < now:
            raise CosError(-59, "signature expired")
        bucket_wide = ("", f"/{cos.appid}/{bucket}", f"/{cos.appid}/{bucket}/")
        if parsed.file_id != exact and (download or parsed.file_id not in bucket_wide):
            raise CosError(-63, "fileid mismatch")

    # --- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _check_path(cos_path: str, *, folder: bool | None) -> str:
        if any(c in ILLEGAL_CHARS for c in cos_path) or WS_SEGMENT.search(cos_path):
            raise CosError(-180, "illegal character in path")
        if folder is True and not cos_path.endswith("/"):
            raise CosError(-5999, "folder path must end with /")
        if folder is False and cos_path.endswith("/"):
            raise CosError(-5999, "file path must not end with /")
        return cos_path[1:]

    def _urls(self, bucket: str, key: str) -> dict:
        quoted = quote_path("/" + key)
        host = f"{bucket}-{self.cos.appid}.{self.cos.download_host}"
        return {"access_url": f"http://{host}{quoted}", "source_url": f"http://{host}{quoted}",
                "resource_path": f"/{self.cos.appid}/{bucket}/{key}",
                "url": f"{self.cos.url}/files/v2/{self.cos.appid}/{bucket}{quoted}"}

    @staticmethod
    def _int(params: dict, name: str, default: int | None = None) -> int:
        value = params.get(name)
        if value in (None, "") and default is not None:
            return default
        try:
            return int(str(value))
        except ValueError:
            raise CosError(-5999, f"{name} is not an integer") from None

    # --- ops ----------------------------------------------------------------------------------

    def _op_stat(self, bucket: str, cos_path: str, params: dict) -> dict:
        cos = self.cos
        if cos_path.endswith("/"):
            attrs = cos.folder(bucket, cos_path[1:])
            if attrs is None:
                raise CosError(-197, "folder not exist")
            return {"biz_attr": attrs["biz_attr"], "ctime": _ts(attrs["ctime"]), "mtime": _ts(attrs["mtime"])}
        blob = cos.blobs.get(bucket, cos_path[1:])
        if blob is None:
            raise CosError(-197, "file not exist")
        m = blob.meta
        return {"biz_attr": m.get("biz_attr", ""), "filesize": blob.size, "filelen": blob.size,
                "sha": blob.etag, "ctime": _ts(m.get("ctime", blob.mtime)), "mtime": _ts(blob.mtime),
                "authority": m.get("authority", "eInvalid"), "forbid": 0, "slicesize": 0,
                "custom_headers": dict(m.get("custom_headers", {})), **self._urls(bucket, blob.key)}

    def _op_upload(self, bucket: str, cos_path: str, params: dict) -> dict:
        key = self._check_path(cos_path, folder=False)
        content = params.get("filecontent")
        if not isinstance(content, bytes):
            raise CosError(-5999, "filecontent missing")
        sha = hashlib.sha1(content).hexdigest()
        if params.get("sha") and str(params["sha"]).lower() != sha:
            raise CosError(-4016, "sha check failed")
        insert_only = str(params.get("insertOnly", "1")) != "0"
        self.cos.store(bucket, key, iter([content]), sha, str(params.get("biz_attr", "")), insert_only)
        return self._urls(bucket, key)

    def _op_upload_slice_init(self, bucket: str, cos_path: str, params: dict) -> dict:
        key = self._check_path(cos_path, folder=False)
        filesize = self._int(params, "filesize")
        slice_size = self._int(params, "slice_size", 1024 * 1024)
        if filesize < 0:
            raise CosError(-5999, "bad filesize")
        if not SLICE_MIN <= slice_size <= SLICE_MAX:
            raise CosError(-284, "invalid slice_size")
        if self.cos.forced_slice_size:
            slice_size = self.cos.forced_slice_size
        sha = str(params["sha"]).lower() if params.get("sha") else None
        uploadparts = None
        if params.get("uploadparts"):
            uploadparts = _check_uploadparts(str(params["uploadparts"]), filesize, slice_size)
        insert_only = str(params.get("insertOnly", "1")) != "0"
        if insert_only and self.cos.blobs.get(bucket, key) is not None:
            raise CosError(-177, "file already exists")
        if sha:
            twin = self.cos.find_sha(bucket, sha)
            if twin is not None:  # instant upload (秒传): same content already stored
                self.cos.store(bucket, key, self.cos.blob_chunks(bucket, twin), sha,
                               str(params.get("biz_attr", "")), insert_only)
                return self._urls(bucket, key)
        session = self.cos.open_session(bucket, key, filesize, slice_size, str(params.get("biz_attr", "")),
                                        insert_only, sha, uploadparts)
        return {"session": session.sid, "slice_size": session.slice_size,
                "serial_upload": 1 if session.serial else 0}

    def _session(self, bucket: str, key: str, params: dict) -> Session:
        sid = str(params.get("session", ""))
        session = self.cos.get_session(sid)
        if session is None or session.bucket != bucket or session.key != key:
            raise CosError(-4017, "upload session not found or expired")
        return session

    def _op_upload_slice_data(self, bucket: str, cos_path: str, params: dict) -> dict:
        key = self._check_path(cos_path, folder=False)
        session = self._session(bucket, key, params)
        content = params.get("filecontent")
        if not isinstance(content, bytes):
            raise CosError(-5999, "filecontent missing")
        offset = self._int(params, "offset")
        if params.get("sha") and session.sha and str(params["sha"]).lower() != session.sha:
            raise CosError(-4016, "sha differs from upload_slice_init")
        self.cos.write_slice(session, offset, content)
        return {"session": session.sid, "offset": offset}

    def _op_upload_slice_finish(self, bucket: str, cos_path: str, params: dict) -> dict:
        key = self._check_path(cos_path, folder=False)
        session = self._session(bucket, key, params)
        filesize = self._int(params, "filesize")
        sha = str(params["sha"]).lower() if params.get("sha") else None
        self.cos.finish_session(session, filesize, sha)
        return self._urls(bucket, key)

    def _op_upload_slice_list(self, bucket: str, cos_path: str, params: dict) -> dict:
        key = self._check_path(cos_path, folder=False)
        session = self.cos.session_for(bucket, key)
        if session is None:
            raise CosError(-197, "no unfinished upload for this file")
        parts = [{"offset": o, "datalen": n} for o, n in sorted(session.received.items())]
        return {"session": session.sid, "filesize": session.filesize, "slice_size": session.slice_size,
                "listparts": parts}

    def _op_create(self, bucket: str, cos_path: str, params: dict) -> dict:
        key = self._check_path(cos_path, folder=True)
        if key == "":
            raise CosError(-5999, "cannot create the root folder")
        ctime = self.cos.create_folder(bucket, key, str(params.get("biz_attr", "") or ""))
        return {"ctime": _ts(ctime), "resource_path": f"/{self.cos.appid}/{bucket}/{key}"}

    def _op_update(self, bucket: str, cos_path: str, params: dict) -> dict:
        cos = self.cos
        if cos_path.endswith("/"):
            if not cos.update_folder(bucket, cos_path[1:], params.get("biz_attr")):
                raise CosError(-197, "folder not exist")
            return {}
        changes: dict = {}
        if params.get("biz_attr") is not None:
            changes["biz_attr"] = str(params["biz_attr"])
        if params.get("authority") is not None:
            if params["authority"] not in AUTHORITIES:
                raise CosError(-5999, "invalid authority")
            changes["authority"] = params["authority"]
        headers = params.get("custom_headers")
        if isinstance(headers, str) and headers:
            try:
                headers = json.loads(headers)
            except ValueError:
                raise CosError(-5999, "custom_headers is not JSON") from None
        if headers:
            if not isinstance(headers, dict):
                raise CosError(-5999, "custom_headers must be an object")
            for name, value in headers.items():
                lname = str(name).lower()
                if lname not in CUSTOM_HEADERS and not (lname.startswith("x-cos-meta-") and
                                                        len(lname) > len("x-cos-meta-")):
                    raise CosError(-5999, f"custom header {name!r} not allowed")
                if not isinstance(value, str) or not value:
                    raise CosError(-5999, f"custom header {name!r} needs a non-empty string")
            changes["custom_headers"] = dict(headers)
        if not changes:
            raise CosError(-5999, "nothing to update")
        if not cos.update_file(bucket, cos_path[1:], changes):
            raise CosError(-197, "file not exist")
        return {}

    def _op_delete(self, bucket: str, cos_path: str, params: dict) -> dict:
        if cos_path == "/":
            raise CosError(-5999, "cannot delete the root folder")
        if cos_path.endswith("/"):
            if not self.cos.delete_folder(bucket, cos_path[1:]):
                raise CosError(-197, "folder not exist")
        elif not self.cos.delete_file(bucket, cos_path[1:]):
            raise CosError(-197, "file not exist")
        return {}

    def _op_list(self, bucket: str, cos_path: str, params: dict) -> dict:
        num = self._int(params, "num", 199)
        if not 1 <= num <= 1000:
            raise CosError(-170, "num must be 1..1000")
        cut = cos_path.rfind("/") + 1
        folder, prefix = cos_path[1:cut], cos_path[cut:]
        after = ""
        context = str(params.get("context", "") or "")
        if context:
            try:
                after = base64.urlsafe_b64decode(context.encode()).decode("utf-8")
            except (binascii.Error, ValueError):
                raise CosError(-5999, "bad context") from None
        names = [n for n in self.cos.list_names(bucket, folder, prefix) if _order(n[0]) > _order(after)]
        page, more = names[:num], len(names) > num
        infos = [self._info(bucket, folder, name, kind, ref) for name, kind, ref in page]
        next_context = base64.urlsafe_b64encode(page[-1][0].encode()).decode() if more else ""
        return {"context": next_context, "listover": not more, "infos": infos}

    def _info(self, bucket: str, folder: str, name: str, kind: str, ref: object) -> dict:
        if kind == "dir":
            attrs = ref if isinstance(ref, dict) else None
            stamp = _ts(attrs["mtime"] if attrs else self.cos.clock.now())
            return {"name": name, "ctime": _ts(attrs["ctime"]) if attrs else stamp, "mtime": stamp}
        blob = ref
        return {"name": name, "filesize": blob.size, "filelen": blob.size, "sha": blob.etag,
                "ctime": _ts(blob.meta.get("ctime", blob.mtime)), "mtime": _ts(blob.mtime),
                "authority": blob.meta.get("authority", "eInvalid"),
                "access_url": self._urls(bucket, folder + name)["access_url"],
                "source_url": self._urls(bucket, folder + name)["source_url"]}

    def _transfer(self, bucket: str, cos_path: str, params: dict, *, move: bool) -> dict:
        src = self._check_path(cos_path, folder=False)
        dest = str(params.get("dest_fileid", "") or "")
        if not dest:
            raise CosError(-5999, "dest_fileid missing")
        if not dest.startswith("/"):  # relative to the source's folder (third-party client docs)
            dest = cos_path[: cos_path.rfind("/") + 1] + dest
        dst = self._check_path(dest, folder=False)
        overwrite = str(params.get("to_over_write", "0")) == "1"
        self.cos.transfer(bucket, src, dst, overwrite=overwrite, move=move)
        return {}

    def _op_move(self, bucket: str, cos_path: str, params: dict) -> dict:
        return self._transfer(bucket, cos_path, params, move=True)

    def _op_copy(self, bucket: str, cos_path: str, params: dict) -> dict:
        return self._transfer(bucket, cos_path, params, move=False)

    # --- download host --------------------------------------------------------------------

    def _download(self, raw_path: str, query: str) -> None:
        match = re.match(r"^(?P<bucket>.+)-(?P<appid>\d+)\.", self.headers.get("Host", ""))
        if not match:
            raise CosError(-5999, "not an API path and not a download host")
        if self.inject("download"):
            return
        bucket, appid = match.group("bucket"), match.group("appid")
        host_suffix = self.headers.get("Host", "")[match.end():]
        if self.cos.strict_download_host and host_suffix != self.cos.download_host:
            raise CosError(-5999, f"download hosts are <bucket>-<appid>.{self.cos.download_host}")
        if appid != self.cos.appid:
            raise CosError(-70, "appid mismatch")
        if not self.cos.blobs.has_bucket(bucket):
            raise CosError(-133, "bucket not exist")
        cos_path = unquote(raw_path)
        sign = ""
        for item in query.split("&"):  # no '+' -> ' ' here: the SDK appends the base64 sign raw
            name, _, value = item.partition("=")
            if name == "sign":
                sign = unquote(value)
        self._check_sign(sign or self.headers.get("Authorization", ""), bucket, cos_path, download=True)
        blob = self.cos.blobs.get(bucket, cos_path[1:])
        if blob is None or cos_path.endswith("/"):
            raise CosError(-197, "file not exist")
        etag = f'"{self.cos.download_etag(blob)}"'
        if_match = self.headers.get("If-Match")
        if if_match and if_match.strip() not in (etag, etag.strip('"'), "*"):
            self.send(412, b"")
            return
        start, end, status = 0, blob.size, 200
        rng = self.headers.get("Range")
        if rng:
            parsed = _parse_range(rng, blob.size)
            if parsed is None:
                self.send(416, b"", {"Content-Range": f"bytes */{blob.size}"})
                return
            start, end = parsed
            status = 206
        headers = {"ETag": etag, "Accept-Ranges": "bytes", "Last-Modified": formatdate(blob.mtime, usegmt=True),
                   "Content-Type": _custom_header(blob, "content-type") or blob.content_type}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        with open(self.cos.blobs.path_of(bucket, blob.key), "rb") as f:
            f.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = f.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)


def _custom_header(blob: Blob, name: str) -> str:
    """A header set with op=update custom_headers (the download host serves them)."""
    for key, value in (blob.meta.get("custom_headers") or {}).items():
        if key.lower() == name:
            return str(value)
    return ""


def _rid() -> str:
    return secrets.token_hex(12)


def _order(name: str) -> bytes:
    return name.encode("utf-8", "surrogatepass")


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """[start, end) for a single `bytes=` range; None when unsatisfiable."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or (not match.group(1) and not match.group(2)):
        return (0, size) if size else None
    first, last = match.groups()
    if first:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    else:
        start, end = max(0, size - int(last)), size
    if start >= size or start >= end:
        return None
    return start, end


def _check_uploadparts(raw: str, filesize: int, slice_size: int) -> list:
    try:
        parts = json.loads(raw)
    except ValueError:
        raise CosError(-5965, "uploadparts is not JSON") from None
    if not isinstance(parts, list):
        raise CosError(-5965, "uploadparts must be a list")
    offset = 0
    for part in parts:
        if not isinstance(part, dict) or not {"offset", "datalen", "datasha"} <= set(part):
            raise CosError(-5965, "uploadparts entry lacks offset/datalen/datasha")
        if part["offset"] != offset or part["datalen"] != min(slice_size, filesize - offset):
            raise CosError(-5965, "uploadparts do not tile the file by slice_size")
        offset += part["datalen"]
    if offset != filesize:
        raise CosError(-5965, "uploadparts do not cover filesize")
    return parts


class _CosBlobStore(BlobStore):
    """BlobStore that can take over a finished slice session's file instead of copying it."""

    def adopt(self, bucket: str, key: str, path: Path, size: int, *, meta: dict, etag: str,
              mtime: float, if_absent: bool = False) -> Blob:
        blob = Blob(key=key, size=size, etag=etag, mtime=mtime, meta=dict(meta))
        with self._lock:
            if bucket not in self._buckets:
                raise CosError(-133, "bucket not exist")
            if if_absent and key in self._buckets[bucket]:
                raise KeyExists(key)
            os.replace(path, self.path_of(bucket, key))  # sessions live on the same filesystem
            self._buckets[bucket][key] = blob
        return blob


class CosEmulator(Emulator):
    """COS v4 emulator. Attributes tests may change: serial_upload, forced_slice_size, session_ttl,
    api_host (when set, API requests must name it in Host), strict_download_host (downloads must name
    `<bucket>-<appid>.<download_host>`). `hosts` counts the (kind, Host) of every request."""

    protocol = "cos"
    handler = CosHandler

    def __init__(self, root: str | Path | None = None, port: int = 0, buckets: tuple[str, ...] = (),
                 verbose: bool = False, *, appid: str = "1250000000", secret_id: str = "AKIDcosEmulator",
                 secret_key: str = "cosEmulatorSecretKey", session_ttl: float = 86400.0,
                 serial_upload: bool = False, once_window: float = 600.0,
                 download_host: str = "cos.emulator.invalid") -> None:
        self.appid = appid
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.session_ttl = session_ttl
        self.serial_upload = serial_upload
        self.forced_slice_size: int | None = None
        self.once_window = once_window
        self.download_host = download_host
        self.api_host: str | None = None
        self.strict_download_host = False
        self.hosts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._lock = threading.RLock()
        self._folders: dict[str, dict[str, dict]] = {}
        self._sessions: dict[str, Session] = {}
        self._used_signs: dict[str, float] = {}
        super().__init__(root=root, port=port, buckets=(), verbose=verbose)
        self.blobs = _CosBlobStore(self.root / "blobs")
        self._session_dir = self.root / "sessions"
        self._session_dir.mkdir(parents=True, exist_ok=True)
        for bucket in buckets:
            self.create_bucket(bucket)

    def config(self) -> dict:
        return {"type": "cos", "appid": self.appid, "secret_id": self.secret_id,
                "secret_key": self.secret_key, "endpoint": self.url}

    def create_bucket(self, name: str) -> None:
        with self._lock:
            super().create_bucket(name)
            self._folders.setdefault(name, {})

    def download_etag(self, blob: Blob) -> str:
        """The download host's ETag: here the v4 `sha` (tests replace it to model other hosts)."""
        return blob.etag

    def note_host(self, kind: str, host: str) -> None:
        with self._lock:
            self.hosts[(kind, host)] += 1

    @property
    def request_counts(self) -> dict[str, int]:
        return dict(self.faults.counts)

    # --- signatures -------------------------------------------------------------------------

    def use_once(self, sign: str, now: float) -> None:
        with self._lock:
            if sign in self._used_signs:
                raise CosError(-97, "single-use signature already used")
            if len(self._used_signs) > 10_000:  # forget signs too old to be accepted anyway
                horizon = now - 2 * self.once_window
                self._used_signs = {s: t for s, t in self._used_signs.items() if t > horizon}
            self._used_signs[sign] = now

    # --- folders ------------------------------------------------------------------------------

    def folder(self, bucket: str, key: str) -> dict | None:
        if key == "":
            return {"biz_attr": "", "ctime": 0.0, "mtime": 0.0}
        with self._lock:
            attrs = self._folders.get(bucket, {}).get(key)
            return dict(attrs) if attrs else None

    def create_folder(self, bucket: str, key: str, biz_attr: str) -> float:
        with self._lock:
            folders = self._folders.setdefault(bucket, {})
            if key in folders:
                raise CosError(-178, "folder already exists")
            now = self.clock.now()
            folders[key] = {"biz_attr": biz_attr, "ctime": now, "mtime": now}
            return now

    def update_folder(self, bucket: str, key: str, biz_attr: object) -> bool:
        with self._lock:
            attrs = self._folders.get(bucket, {}).get(key)
            if attrs is None:
                return False
            if biz_attr is not None:
                attrs["biz_attr"] = str(biz_attr)
            attrs["mtime"] = self.clock.now()
            return True

    def delete_folder(self, bucket: str, key: str) -> bool:
        with self._lock:
            return self._folders.get(bucket, {}).pop(key, None) is not None

    def list_names(self, bucket: str, folder: str, prefix: str) -> list[tuple[str, str, object]]:
        """(name, "dir"|"file", folder attrs or Blob) under `folder`, names starting with `prefix`."""
        entries: dict[str, tuple[str, object]] = {}
        base = folder + prefix
        for key in self.blobs.keys(bucket, base):
            rest = key[len(folder):]
            cut = rest.find("/")
            if cut >= 0:
                entries.setdefault(rest[: cut + 1], ("dir", None))
            else:
                blob = self.blobs.get(bucket, key)
                if blob is not None:
                    entries[rest] = ("file", blob)
        with self._lock:
            folders = list(self._folders.get(bucket, {}).items())
        for key, attrs in folders:
            if not key.startswith(base) or key == folder:
                continue
            rest = key[len(folder):]
            name = rest[: rest.find("/") + 1]
            if name == rest:
                entries[name] = ("dir", dict(attrs))
            else:
                entries.setdefault(name, ("dir", None))  # a deeper explicit folder: virtual here
        return [(name, kind, ref) for name, (kind, ref) in sorted(entries.items(), key=lambda e: _order(e[0]))]

    # --- files --------------------------------------------------------------------------------

    def store(self, bucket: str, key: str, chunks: Iterator[bytes] | None, sha: str, biz_attr: str,
              insert_only: bool, adopt: tuple[Path, int] | None = None) -> None:
        """Create or replace a file from `chunks`, or by adopting a finished session's file."""
        # The data is written without holding the emulator lock (BlobStore indexes atomically).
        old = self.blobs.get(bucket, key)
        if old is not None and insert_only:
            raise CosError(-177, "file already exists")
        now = self.clock.now()
        meta = {"biz_attr": biz_attr, "authority": "eInvalid", "custom_headers": {},
                "ctime": old.meta.get("ctime", now) if old else now}
        try:   # insertOnly is checked again atomically with the write: two uploads may race
            if adopt is not None:
                self.blobs.adopt(bucket, key, adopt[0], adopt[1], meta=meta, etag=sha, mtime=now,
                                 if_absent=insert_only)
            else:
                self.blobs.put(bucket, key, chunks or iter(()), meta=meta, etag=sha, mtime=now,
                               if_absent=insert_only)
        except KeyExists:
            raise CosError(-177, "file already exists") from None

    def blob_chunks(self, bucket: str, key: str) -> Iterator[bytes]:
        with open(self.blobs.path_of(bucket, key), "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk

    def find_sha(self, bucket: str, sha: str) -> str | None:
        for key in self.blobs.keys(bucket):
            blob = self.blobs.get(bucket, key)
            if blob is not None and blob.etag == sha:
                return key
        return None

    def update_file(self, bucket: str, key: str, changes: dict) -> bool:
        with self._lock:
            blob = self.blobs.get(bucket, key)
            if blob is None:
                return False
            blob.meta.update(changes)
            return True

    def delete_file(self, bucket: str, key: str) -> bool:
        with self._lock:
            # The SDK deletes a path to recover from a failed slice upload: drop its sessions too.
            for sid in [s.sid for s in self._sessions.values() if (s.bucket, s.key) == (bucket, key)]:
                self._drop_session(sid)
            return self.blobs.delete(bucket, key)

    def transfer(self, bucket: str, src: str, dst: str, *, overwrite: bool, move: bool) -> None:
        with self._lock:
            blob = self.blobs.get(bucket, src)
            if blob is None:
                raise CosError(-197, "source file not exist")
            if src == dst:
                return
            if self.blobs.get(bucket, dst) is not None and not overwrite:
                raise CosError(-177, "destination exists")
            meta = json.loads(json.dumps(blob.meta))  # a deep copy: no shared dicts between files
            self.blobs.copy(bucket, src, bucket, dst, meta=meta)
            if move:
                self.blobs.delete(bucket, src)

    # --- slice sessions -------------------------------------------------------------------------

    def open_session(self, bucket: str, key: str, filesize: int, slice_size: int, biz_attr: str,
                     insert_only: bool, sha: str | None, uploadparts: list | None) -> Session:
        with self._lock:
            old = self.session_for(bucket, key)
            if old is not None and sha and old.sha:
                # docs: -4019 same file half uploaded (resume it), -4020 another one is unfinished
                raise CosError(-4019 if old.sha == sha else -4020, "an unfinished upload exists")
            if old is not None:
                self._drop_session(old.sid)  # a new upload of the path replaces the old one
            sid = secrets.token_hex(16)
            path = self._session_dir / sid
            path.touch()
            session = Session(sid=sid, bucket=bucket, key=key, filesize=filesize, slice_size=slice_size,
                              biz_attr=biz_attr, insert_only=insert_only, sha=sha, uploadparts=uploadparts,
                              serial=self.serial_upload, created=self.clock.now(), path=path)
            self._sessions[sid] = session
            return session

    def get_session(self, sid: str) -> Session | None:
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                return None
            if session.expired or self.clock.now() - session.created > self.session_ttl:
                self._drop_session(sid)
                return None
            return session

    def session_for(self, bucket: str, key: str) -> Session | None:
        with self._lock:
            for session in list(self._sessions.values()):
                if (session.bucket, session.key) == (bucket, key):
                    return self.get_session(session.sid)
            return None

    def expire_sessions(self) -> None:
        """Make every open upload session expired (tests)."""
        with self._lock:
            for session in self._sessions.values():
                session.expired = True

    def _drop_session(self, sid: str) -> None:
        session = self._sessions.pop(sid, None)
        if session is not None:
            session.path.unlink(missing_ok=True)

    def write_slice(self, session: Session, offset: int, data: bytes) -> None:
        size, step = session.filesize, session.slice_size
        if offset < 0 or offset % step or (offset >= size and not (size == 0 and offset == 0)):
            raise CosError(-5999, f"offset {offset} is not a slice start")
        if len(data) != min(step, size - offset):
            raise CosError(-5999, f"slice at {offset} must be {min(step, size - offset)} bytes, got {len(data)}")
        with self._lock:
            if session.serial and offset not in (session.next_offset, session.last_offset):
                raise CosError(-5999, f"serial upload: expected offset {session.next_offset}, got {offset}")
        fd = os.open(session.path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)
        with self._lock:
            if offset < session.hashed_upto:  # a hashed slice was sent again: hash afresh
                session.md, session.hashed_upto = hashlib.sha1(), 0
            session.received[offset] = len(data)
            session.last_offset = offset
            session.next_offset = max(session.next_offset, offset + len(data))
            self._advance_sha(session, offset, data)

    def _advance_sha(self, session: Session, offset: int, data: bytes | None) -> None:
        """Hash the slices that now continue the hashed prefix (lock held)."""
        while session.hashed_upto in session.received and session.hashed_upto < session.filesize:
            start = session.hashed_upto
            length = session.received[start]
            if start == offset and data is not None:
                chunk = data
            else:
                with open(session.path, "rb") as f:
                    f.seek(start)
                    chunk = f.read(length)
            session.md.update(chunk)
            session.hashed_upto = start + length

    def finish_session(self, session: Session, filesize: int, sha: str | None) -> None:
        with self._lock:
            if filesize != session.filesize:
                raise CosError(-175, "filesize differs from upload_slice_init")
            if sum(session.received.values()) != session.filesize:
                missing = [o for o in range(0, session.filesize, session.slice_size) if o not in session.received]
                raise CosError(-175, f"slices missing at offsets {missing[:5]}")
            if session.sha and not sha:
                raise CosError(-29094, "sha required: upload_slice_init had one")
            self._advance_sha(session, -1, None)
            actual = session.md.copy().hexdigest()
        if (sha and sha != actual) or (session.sha and session.sha != actual):
            raise CosError(-4016, "sha check failed")
        if session.uploadparts is not None:
            _verify_uploadparts(session.path, session.uploadparts)
        with self._lock:
            if self._sessions.pop(session.sid, None) is not session:  # claim it: one finish wins
                raise CosError(-4017, "upload session not found or expired")
        try:
            self.store(session.bucket, session.key, None, actual, session.biz_attr, session.insert_only,
                       adopt=(session.path, session.filesize))
        finally:
            session.path.unlink(missing_ok=True)


def _verify_uploadparts(path: Path, parts: list) -> None:
    """Check every slice's SHA-1 internal state (pure Python: the vendor SDK's enable_sha1 path only)."""
    state = Sha1State()
    with open(path, "rb") as f:
        for i, part in enumerate(parts):
            state.update(f.read(part["datalen"]))
            last = i == len(parts) - 1
            try:
                expected = state.hexdigest() if last else state.inner_hex()
            except ValueError:
                raise CosError(-5965, "slices must be multiples of 64 bytes for uploadparts") from None
            if str(part["datasha"]).lower() != expected:
                raise CosError(-4016, f"sha check failed for the slice at {part['offset']}")

