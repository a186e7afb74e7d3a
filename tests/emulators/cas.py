"""A loopback emulator of Tencent CAS (Cloud Archive Service), for tests and by hand:

    python scripts/emulator.py cas [--port N] [--root DIR] [--bucket VAULT]... [--job-delay SECONDS]

What it implements (wire facts: /work/shared/PROTOCOLS.md §1 and §6):
- The REST API under /<appid>/vaults (`-` also names the own account): vaults (create, describe,
  delete-if-empty, list with marker/limit paging), archives (upload with x-cas-content-sha256 and
  x-cas-sha256-tree-hash checked, delete), multipart uploads (1 MiB x 2^n part sizes, Content-Range
  aligned to the part size, per-part checksums, list parts/uploads with paging, complete with missing
  parts, sizes and the combined tree hash checked, abort), jobs (archive-retrieval with Tier and a
  MiB-aligned RetrievalByteRange, inventory-retrieval in JSON or CSV; describe, list with
  completed/statuscode filters and paging) and job output (Range -> 206 with Content-Range; the
  x-cas-sha256-tree-hash header only when the range is tree-hash aligned).
- q-sign verification as the service does it: HMAC-SHA1 over the Host header *as received*, the
  query parameters (values lower-cased) and every header in q-header-list; every x-cas-* header must
  be signed; Content-Range, Date and User-Agent may be unsigned. Signature times are checked against
  the real clock (never the job clock, which tests move by hours).
- Every answer carries x-cas-requestid; JSON goes out as exactly `application/json`; errors are
  `{"code", "message", "type"}` with the statuses of PROTOCOLS.md §1.6.
- Jobs run on `emulator.clock`: with the default `job_delay=None` they take the vendor's documented
  upper bounds (Expedited 5 min, Standard 5 h, Bulk 12 h, inventory 5 h), so they finish only when a
  test calls `emulator.clock.advance(hours * 3600)`; `job_delay=S` makes every job take S seconds.
  Outputs are kept 24 h after completion, then the job is gone (ResourceNotFoundException).

The vault semantics are those of storefs.vaults.local (the same engine, here behind the wire).

Faults (tests.emulators.base.Fault) by op name: list_vaults, create_vault, describe_vault,
delete_vault, upload_archive, delete_archive, initiate_multipart, upload_part, list_parts,
complete_multipart, abort_multipart, list_uploads, initiate_job, describe_job, list_jobs,
get_job_output. Two actions beyond the base ones: `corrupt` (get_job_output: the body's first byte
is flipped while the tree-hash header stays right) and `fail` (initiate_job: the job ends Failed;
the fault's body is the StatusMessage). `fail_job()`, `expire_job()` and `corrupt_output()` act on
a job by id. `output_bytes(vault)` counts the job output bytes sent from a vault (what a client
paid to transfer: the measure of a ranged retrieval).
"""
from __future__ import annotations

import json
import re
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from storefs.errors import (
    AccessDenied,
    ArchiveNotReady,
    InvalidArgument,
    NotEmpty,
    NotFound,
    StoreError,
)
from storefs.vaults.base import (
    JobAction,
    JobFailed,
    JobInfo,
    JobStatus,
    Tier,
    TreeHashMismatch,
    iso8601,
)
from storefs.wire.auth.cas import parse_authorization, signature
from storefs.vaults.local import Delays, LocalVault, LocalVaultProvider
from tests.emulators.base import Emulator, EmulatorHandler, Fault, FaultInjector

MiB = 1024 * 1024
STATUS = {
    "AccessDeniedException": 403, "ExpiredTokenException": 403,
    "BadRequest": 400, "InvalidParameterValueException": 400, "InvalidSignatureException": 400,
    "LimitExceededException": 400, "MissingAuthenticationTokenException": 400,
    "MissingParameterValueException": 400, "PolicyEnforcedException": 400, "SerializationException": 400,
    "UnrecognizedClientException": 400, "ThrottlingException": 400,
    "ResourceNotFoundException": 404, "RequestTimeoutException": 408, "ServiceUnavailableException": 500,
}
FAULT_CODES = {400: "BadRequest", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
               408: "RequestTimeoutException", 500: "ServiceUnavailableException",
               503: "ServiceUnavailableException"}
# The documented upper bounds (PROTOCOLS.md §1.2): jobs finish only when a test moves the clock.
DOCUMENTED_DELAYS = Delays(expedited=300.0, standard=5 * 3600.0, bulk=12 * 3600.0, inventory=5 * 3600.0)
SKEW = 900          # seconds a signature may start in the future
JOB_BODY_MAX = 64 * 1024
CHUNK = 1 * MiB
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\*|\d+)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class CasError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = STATUS.get(code, 400)


def _from_store_error(exc: StoreError) -> CasError:
    """The engine speaks storefs errors; the wire speaks CAS codes."""
    if isinstance(exc, NotFound):
        return CasError("ResourceNotFoundException", str(exc))
    if isinstance(exc, ArchiveNotReady):
        return CasError("InvalidParameterValueException", str(exc))
    if isinstance(exc, TreeHashMismatch):
        return CasError("InvalidParameterValueException", str(exc))
    if isinstance(exc, (InvalidArgument, NotEmpty, JobFailed)):
        return CasError("InvalidParameterValueException", str(exc))
    if isinstance(exc, AccessDenied):
        return CasError("AccessDeniedException", str(exc))
    return CasError("ServiceUnavailableException", str(exc))


class CasFaults(FaultInjector):
    """The base faults plus `corrupt` and `fail`, which alter a request instead of answering it:
    pick() hands those to the request's thread and lets the request proceed."""

    SPECIAL = ("corrupt", "fail")

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def pick(self, op: str) -> Fault | None:
        fault = super().pick(op)
        if fault is not None and fault.action in self.SPECIAL:
            self._local.special = fault
            return None
        return fault

    def take_special(self) -> Fault | None:
        fault = getattr(self._local, "special", None)
        self._local.special = None
        return fault


class CasHandler(EmulatorHandler):
    server_version = "tencent-cas-emulator"

    @property
    def cas(self) -> CasEmulator:
        return self.emulator  # type: ignore[return-value]

    # -- plumbing --------------------------------------------------------------------------------

    def send_response(self, code: int, message: str | None = None) -> None:
        super().send_response(code, message)
        # The SDK does headers['x-cas-requestid'] on every answer (KeyError without it).
        self.send_header("x-cas-requestid", getattr(self, "_rid", "") or uuid.uuid4().hex)

    def read_body(self) -> bytes:
        """What is left of the request body (base.inject drains with it)."""
        data = b"".join(self._body_chunks())
        return data

    def _body_chunks(self) -> Iterator[bytes]:
        while self._remaining > 0:
            chunk = self.rfile.read(min(CHUNK, self._remaining))
            if not chunk:
                self._remaining = 0
                self.close_connection = True
                return
            self._remaining -= len(chunk)
            yield chunk

    def _drain(self) -> None:
        for _ in self._body_chunks():
            pass

    def error_response(self, fault: Fault) -> None:
        if fault.body:
            self.send(fault.status, fault.body, content_type="application/json")
            return
        code = fault.code or FAULT_CODES.get(fault.status, "ServiceUnavailableException")
        self._fail(fault.status, code, "injected fault")

    def _fail(self, status: int, code: str, message: str) -> None:
        kind = "client" if status < 500 else "server"
        self.send_json(status, {"code": code, "message": message, "type": kind})

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # -- routing ---------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        self._rid = uuid.uuid4().hex
        self._remaining = int(self.headers.get("Content-Length") or 0)
        self.cas.faults.take_special()  # a keep-alive thread must not carry one over
        self._streaming = False
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True  # we never parse chunked bodies: do not reuse the socket
        split = urlsplit(self.path)
        try:
            params = parse_qsl(split.query, keep_blank_values=True)
            op, args = self._route(split.path)
            self._authenticate(split.path, params)
            if self.inject(op):
                return
            self._special = self.cas.faults.take_special()
            getattr(self, f"_op_{op}")(*args, params=dict(params))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a CAS error answer
            if self._streaming:
                self.close_connection = True  # headers are out: the client sees a short body
                return
            if isinstance(exc, CasError):
                error = exc
            elif isinstance(exc, StoreError):
                error = _from_store_error(exc)
            else:  # an emulator bug: answer like a backend failure, keep serving
                if self.emulator.verbose:
                    traceback.print_exc()
                error = CasError("ServiceUnavailableException", "emulator internal error")
            self._drain()
            self._fail(error.status, error.code, error.message)

    def _route(self, raw_path: str) -> tuple[str, tuple]:
        seg = [unquote(s) for s in raw_path.split("/")[1:]]
        if len(seg) < 2 or seg[1] != "vaults":
            raise CasError("BadRequest", f"no such resource: {raw_path[:100]}")
        if seg[0] not in (self.cas.appid, "-"):
            raise CasError("AccessDeniedException", f"account {seg[0][:40]!r} is not yours")
        method, rest = self.command, seg[2:]
        table = {
            (0, "GET"): "list_vaults",
            (1, "PUT"): "create_vault", (1, "GET"): "describe_vault", (1, "DELETE"): "delete_vault",
        }
        if len(rest) <= 1 and (len(rest), method) in table:
            return table[(len(rest), method)], tuple(rest)
        if len(rest) >= 2:
            vault, kind, tail = rest[0], rest[1], rest[2:]
            routes = {
                ("archives", 0, "POST"): "upload_archive", ("archives", 1, "DELETE"): "delete_archive",
                ("multipart-uploads", 0, "POST"): "initiate_multipart",
                ("multipart-uploads", 0, "GET"): "list_uploads",
                ("multipart-uploads", 1, "PUT"): "upload_part", ("multipart-uploads", 1, "GET"): "list_parts",
                ("multipart-uploads", 1, "POST"): "complete_multipart",
                ("multipart-uploads", 1, "DELETE"): "abort_multipart",
                ("jobs", 0, "POST"): "initiate_job", ("jobs", 0, "GET"): "list_jobs",
                ("jobs", 1, "GET"): "describe_job",
            }
            if kind == "jobs" and len(tail) == 2 and tail[1].lower() == "output" and method == "GET":
                return "get_job_output", (vault, tail[0])
            op = routes.get((kind, len(tail), method))
            if op:
                return op, (vault, *tail)
        raise CasError("BadRequest", f"unsupported request {method} {raw_path[:100]}")

    # -- authentication --------------------------------------------------------------------------

    def _authenticate(self, raw_path: str, params: list[tuple[str, str]]) -> None:
        header = self.headers.get("Authorization")
        if not header:
            raise CasError("MissingAuthenticationTokenException", "the request has no Authorization header")
        try:
            fields = parse_authorization(header)
        except ValueError as exc:
            raise CasError("InvalidSignatureException", str(exc)) from None
        if fields["q-sign-algorithm"] != "sha1":
            raise CasError("InvalidSignatureException", "q-sign-algorithm must be sha1")
        if fields["q-ak"] != self.cas.secret_id:
            raise CasError("UnrecognizedClientException", "the SecretId is not known")
        try:
            start, end = (int(t) for t in fields["q-sign-time"].split(";"))
        except ValueError:
            raise CasError("InvalidSignatureException", "malformed q-sign-time") from None
        now = time.time()  # the real clock: the job clock runs hours ahead in tests
        if now > end:
            raise CasError("ExpiredTokenException", "the signature has expired")
        if start > now + SKEW or end < start:
            raise CasError("InvalidSignatureException", "q-sign-time is not valid now")
        names = [n for n in fields["q-header-list"].split(";") if n]
        if "host" not in names:
            raise CasError("InvalidSignatureException", "the Host header must be signed")
        received = {k.lower() for k in self.headers}
        unsigned = sorted(n for n in received if n.startswith("x-cas-") and n not in names)
        if unsigned:
            raise CasError("InvalidSignatureException", f"header {unsigned[0]} is not signed")
        headers = {}
        for name in names:
            value = self.headers.get(name)
            if value is None:
                raise CasError("InvalidSignatureException", f"signed header {name} is missing")
            headers[name] = value
        param_names = sorted({k.lower().strip() for k, _ in params})
        if sorted(n for n in fields["q-url-param-list"].split(";") if n) != param_names:
            raise CasError("InvalidSignatureException", "q-url-param-list does not name the query parameters")
        expected = signature(self.cas.secret_key, fields["q-key-time"], self.command, raw_path,
                             dict(params), headers)
        if fields["q-key-time"] != fields["q-sign-time"] or expected != fields["q-signature"]:
            raise CasError("InvalidSignatureException",
                           "The request signature we calculated does not match the signature you provided")

    # -- helpers ---------------------------------------------------------------------------------

    def _vault(self, name: str) -> LocalVault:
        try:
            vault = self.cas.engine.vault(name)
        except InvalidArgument:
            raise CasError("ResourceNotFoundException", f"vault {name[:60]!r} does not exist") from None
        if not self.cas.engine.has_vault(name):
            raise CasError("ResourceNotFoundException", f"vault {name!r} does not exist")
        return vault

    def _header(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None or value == "":
            raise CasError("MissingParameterValueException", f"header {name} is required")
        return value

    def _int_header(self, name: str) -> int:
        try:
            return int(self._header(name))
        except ValueError:
            raise CasError("InvalidParameterValueException", f"header {name} is not a number") from None

    def _content_length(self) -> int:
        if self.headers.get("Content-Length") is None:
            raise CasError("MissingParameterValueException", "Content-Length is required")
        return self._remaining

    @staticmethod
    def _limit(params: dict) -> int:
        text = params.get("limit", "1000")
        if not text.isdigit() or not 1 <= int(text) <= 1000:
            raise CasError("InvalidParameterValueException", f"limit {text[:20]!r} must be 1-1000")
        return int(text)

    def _location(self, *segments: str) -> str:
        return "/" + "/".join((self.cas.appid, "vaults", *segments))

    def _created(self, location: str, extra: dict) -> None:
        self.send(201, b"", {"Location": location, **extra})

    # -- vaults ----------------------------------------------------------------------------------

    def _vault_json(self, name: str) -> dict:
        info = self.cas.engine.describe_vault(name)
        return {"CreationDate": iso8601(info.creation_date or 0), "VaultName": info.name,
                "LastInventoryDate": iso8601(info.last_inventory_date) if info.last_inventory_date else None,
                "NumberOfArchives": info.archive_count, "SizeInBytes": info.size, "VaultQCS": info.resource_name}

    def _op_list_vaults(self, *, params: dict) -> None:
        marker = params.get("marker")
        name = marker.rsplit("vault/", 1)[-1] if marker else None
        if marker and not self.cas.engine.has_vault(name or ""):
            raise CasError("InvalidParameterValueException", "marker is not valid")
        page = self.cas.engine.list_vaults_page(name, self._limit(params))
        self.send_json(200, {"Marker": self.cas.qcs(page.marker) if page.marker else None,
                             "VaultList": [self._vault_json(v.name) for v in page.items]})

    def _op_create_vault(self, name: str, *, params: dict) -> None:
        try:
            self.cas.engine.create_vault(name)
        except InvalidArgument as exc:
            raise CasError("InvalidParameterValueException", str(exc)) from None
        self._created(self._location(name), {})

    def _op_describe_vault(self, name: str, *, params: dict) -> None:
        self._vault(name)
        self.send_json(200, self._vault_json(name))

    def _op_delete_vault(self, name: str, *, params: dict) -> None:
        self._vault(name)
        self.cas.engine.delete_vault(name)
        self.send(204)

    # -- archives --------------------------------------------------------------------------------

    def _op_upload_archive(self, name: str, *, params: dict) -> None:
        vault = self._vault(name)
        size = self._content_length()
        sha = self._header("x-cas-content-sha256")
        tree = self._header("x-cas-sha256-tree-hash")
        description = self.headers.get("x-cas-archive-description", "")
        info = vault.put_archive(self._body_chunks(), size, description, expect_sha256=sha,
                                 expect_tree_hash=tree)
        self._created(self._location(name, "archives", info.archive_id),
                      {"x-cas-archive-id": info.archive_id, "x-cas-sha256-tree-hash": info.tree_hash,
                       "x-cas-content-sha256": sha.lower()})

    def _op_delete_archive(self, name: str, archive_id: str, *, params: dict) -> None:
        self._vault(name).delete_archive(archive_id)
        self.send(204)

    # -- multipart -------------------------------------------------------------------------------

    def _op_initiate_multipart(self, name: str, *, params: dict) -> None:
        vault = self._vault(name)
        part_size = self._int_header("x-cas-part-size")
        upload = vault.initiate_multipart(part_size, self.headers.get("x-cas-archive-description", ""))
        self._created(self._location(name, "multipart-uploads", upload.upload_id),
                      {"x-cas-multipart-upload-id": upload.upload_id})

    def _op_upload_part(self, name: str, upload_id: str, *, params: dict) -> None:
        vault = self._vault(name)
        match = _CONTENT_RANGE.match(self._header("Content-Range").strip())
        if not match or int(match.group(2)) < int(match.group(1)):
            raise CasError("InvalidParameterValueException", "Content-Range must be bytes <start>-<end>/*")
        start, end = int(match.group(1)), int(match.group(2)) + 1
        if self._content_length() != end - start:
            raise CasError("InvalidParameterValueException", "Content-Length does not match Content-Range")
        part = vault.put_part(upload_id, start, end, self._body_chunks(),
                              expect_sha256=self._header("x-cas-content-sha256"),
                              expect_tree_hash=self._header("x-cas-sha256-tree-hash"))
        self.send(204, b"", {"x-cas-sha256-tree-hash": part.tree_hash})

    def _op_list_parts(self, name: str, upload_id: str, *, params: dict) -> None:
        upload, page = self._vault(name).list_parts_page(upload_id, params.get("marker"), self._limit(params))
        self.send_json(200, {
            "ArchiveDescription": upload.description, "CreationDate": iso8601(upload.creation_date or 0),
            "Marker": page.marker, "MultipartUploadId": upload.upload_id,
            "PartSizeInBytes": upload.part_size, "VaultQCS": self.cas.qcs(name),
            "Parts": [{"RangeInBytes": f"{p.start}-{p.end - 1}", "SHA256TreeHash": p.tree_hash}
                      for p in page.items]})

    def _op_complete_multipart(self, name: str, upload_id: str, *, params: dict) -> None:
        vault = self._vault(name)
        info = vault.complete_upload(upload_id, self._int_header("x-cas-archive-size"),
                                     self._header("x-cas-sha256-tree-hash"))
        self._created(self._location(name, "archives", info.archive_id),
                      {"x-cas-archive-id": info.archive_id, "x-cas-sha256-tree-hash": info.tree_hash})

    def _op_abort_multipart(self, name: str, upload_id: str, *, params: dict) -> None:
        self._vault(name).abort_upload(upload_id)
        self.send(204)

    def _op_list_uploads(self, name: str, *, params: dict) -> None:
        page = self._vault(name).list_uploads_page(params.get("marker"), self._limit(params))
        self.send_json(200, {"Marker": page.marker, "UploadsList": [
            {"ArchiveDescription": u.description, "CreationDate": iso8601(u.creation_date or 0),
             "MultipartUploadId": u.upload_id, "PartSizeInBytes": u.part_size, "VaultQCS": self.cas.qcs(name)}
            for u in page.items]})

    # -- jobs ------------------------------------------------------------------------------------

    def _op_initiate_job(self, name: str, *, params: dict) -> None:
        vault = self._vault(name)
        if self._content_length() > JOB_BODY_MAX:
            raise CasError("InvalidParameterValueException", "job parameters are too large")
        try:
            doc = json.loads(self.read_body().decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise CasError("SerializationException", "the job parameters are not JSON") from None
        if not isinstance(doc, dict):
            raise CasError("SerializationException", "the job parameters are not a JSON object")
        kind = doc.get("Type")
        description = doc.get("Description") or ""
        if not isinstance(description, str):
            raise CasError("InvalidParameterValueException", "Description must be a string")
        tier_text = doc.get("Tier")
        tier = Tier.parse(tier_text) if tier_text is not None else None
        if tier_text is not None and tier is None:
            raise CasError("InvalidParameterValueException", f"Tier {str(tier_text)[:20]!r} is not valid")
        fail = (self._special.body.decode("utf-8", "replace") or "Job failed (injected fault)") \
            if self._special is not None and self._special.action == "fail" else None
        if kind == "archive-retrieval":
            archive_id = doc.get("ArchiveId")
            if not isinstance(archive_id, str) or not archive_id:
                raise CasError("MissingParameterValueException", "ArchiveId is required")
            byte_range = None
            text = doc.get("RetrievalByteRange")
            if text:
                match = re.match(r"^(\d+)-(\d+)$", str(text))
                if not match or int(match.group(2)) < int(match.group(1)):
                    raise CasError("InvalidParameterValueException", "RetrievalByteRange must be <start>-<end>")
                byte_range = (int(match.group(1)), int(match.group(2)) + 1)
            job_id = vault.initiate_job(JobAction.ARCHIVE_RETRIEVAL, archive_id=archive_id,
                                        tier=tier or Tier.STANDARD, byte_range=byte_range,
                                        description=description, fail_message=fail)
        elif kind == "inventory-retrieval":
            fmt = doc.get("Format") or "JSON"
            job_id = vault.initiate_job(JobAction.INVENTORY_RETRIEVAL, tier=tier, description=description,
                                        output_format=str(fmt), fail_message=fail)
        else:
            raise CasError("InvalidParameterValueException", f"job Type {str(kind)[:40]!r} is not supported")
        self.send(202, b"", {"Location": self._location(name, "jobs", job_id), "x-cas-job-id": job_id})

    def _job_json(self, vault: str, job: JobInfo, record: dict) -> dict:
        doc = {
            "Action": job.action.value, "JobId": job.job_id, "JobDescription": job.description,
            "CreationDate": iso8601(job.creation_date or 0),
            "CompletionDate": iso8601(job.completion_date) if job.completion_date else None,
            "Completed": job.completed, "StatusCode": job.status.value, "StatusMessage": job.status_message,
            "VaultQCS": self.cas.qcs(vault), "Tier": job.tier.value if job.tier else None,
            "SHA256TreeHash": job.sha256_tree_hash,
        }
        if job.action is JobAction.ARCHIVE_RETRIEVAL:
            start, end = job.byte_range or (0, job.archive_size or 0)
            doc.update({"ArchiveId": job.archive_id, "ArchiveSizeInBytes": job.archive_size,
                        "ArchiveSHA256TreeHash": job.archive_tree_hash,
                        "RetrievalByteRange": f"{start}-{end - 1}"})
        else:
            doc.update({"InventorySizeInBytes": job.inventory_size,
                        "InventoryRetrievalParameters": {"Format": record.get("format", "JSON"),
                                                         "StartDate": None, "EndDate": None,
                                                         "Limit": None, "Marker": None}})
        return doc

    def _op_describe_job(self, name: str, job_id: str, *, params: dict) -> None:
        vault = self._vault(name)
        record = vault.job_record(job_id)
        self.send_json(200, self._job_json(name, vault.describe_job(job_id), record))

    def _op_list_jobs(self, name: str, *, params: dict) -> None:
        vault = self._vault(name)
        completed = params.get("completed")
        if completed not in (None, "true", "false"):
            raise CasError("InvalidParameterValueException", "completed must be true or false")
        status_text = params.get("statuscode")
        status = next((s for s in JobStatus if s.value == status_text), None)
        if status_text is not None and status is None:
            raise CasError("InvalidParameterValueException", "statuscode must be InProgress, Succeeded or Failed")
        page = vault.list_jobs_page(params.get("marker"), self._limit(params),
                                    completed=None if completed is None else completed == "true", status=status)
        jobs = []
        for job in page.items:
            try:
                jobs.append({**self._job_json(name, job, vault.job_record(job.job_id)), "CallBackUrl": None})
            except NotFound:
                continue
        self.send_json(200, {"JobList": jobs, "Marker": page.marker})

    def _op_get_job_output(self, name: str, job_id: str, *, params: dict) -> None:
        vault = self._vault(name)
        try:
            handle = vault.open_output(job_id)
        except ArchiveNotReady:
            raise CasError("InvalidParameterValueException",
                           f"The job is not currently available for download: {job_id}") from None
        except JobFailed as exc:
            raise CasError("InvalidParameterValueException", str(exc)) from None
        start, end, partial = 0, handle.size, False
        text = self.headers.get("Range")
        if text:
            match = _RANGE.match(text.strip().replace(" ", ""))
            if not match or (not match.group(1) and not match.group(2)):
                raise CasError("InvalidParameterValueException", f"Range {text[:60]!r} is not valid")
            if match.group(1):
                start = int(match.group(1))
                end = min(handle.size, int(match.group(2)) + 1) if match.group(2) else handle.size
            else:  # bytes=-N: the last N bytes
                start = max(0, handle.size - int(match.group(2)))
            if start >= handle.size or end <= start:
                raise CasError("InvalidParameterValueException", f"Range {text[:60]!r} is not satisfiable")
            partial = (start, end) != (0, handle.size)
        headers = {"Content-Type": handle.content_type, "Accept-Ranges": "bytes",
                   "Content-Length": str(end - start)}
        if partial:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{handle.size}"
        tree = handle.range_tree_hash(start, end)
        if tree:
            headers["x-cas-sha256-tree-hash"] = tree
        if handle.archive_description is not None and handle.content_type == "application/octet-stream":
            headers["x-cas-archive-description"] = handle.archive_description
        corrupt = self._special is not None and self._special.action == "corrupt"
        self._streaming = True
        self.send_response(206 if partial else 200)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        for chunk in handle.iter_range(start, end):
            if corrupt:
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                corrupt = False
            self.wfile.write(chunk)
            self.cas.count_output(vault.name, len(chunk))


class CasEmulator(Emulator):
    protocol = "cas"
    handler = CasHandler

    def __init__(self, root: str | Path | None = None, port: int = 0, buckets: tuple[str, ...] = (),
                 verbose: bool = False, *, job_delay: float | None = None, appid: str = "1250000000",
                 secret_id: str = "AKIDcasEmulatorTest", secret_key: str = "cas-emulator-secret-key",
                 region: str = "ap-chengdu") -> None:
        self.appid = appid
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.region = region
        super().__init__(root=root, port=port, buckets=(), verbose=verbose)
        self.faults: CasFaults = CasFaults()
        if job_delay is None:
            delays = DOCUMENTED_DELAYS
        else:
            delays = Delays(expedited=job_delay, standard=job_delay, bulk=job_delay, inventory=job_delay)
        self.job_delay = job_delay
        self.engine = LocalVaultProvider(self.root / "vaults", remote="cas-emulator", delays=delays,
                                         clock=self.clock, resource_field="VaultQCS", resource_name=self.qcs)
        self._output_lock = threading.Lock()
        self._output_bytes: dict[str, int] = {}
        for vault in buckets:
            self.create_bucket(vault)

    def count_output(self, vault: str, sent: int) -> None:
        with self._output_lock:
            self._output_bytes[vault] = self._output_bytes.get(vault, 0) + sent

    def output_bytes(self, vault: str) -> int:
        """Bytes of job output (archive retrievals and inventories) this emulator has sent from `vault`:
        what a client paid to transfer."""
        with self._output_lock:
            return self._output_bytes.get(vault, 0)

    def __repr__(self) -> str:
        return f"CasEmulator({self.url})"

    def qcs(self, vault: str) -> str:
        return f"qcs::cas:{self.region}:uid/{self.appid}:vault/{vault}"

    def create_bucket(self, name: str) -> None:
        """`--bucket NAME` creates a vault."""
        self.engine.create_vault(name)

    create_vault = create_bucket

    def config(self) -> dict:
        return {"type": "cas", "appid": self.appid, "secret_id": self.secret_id,
                "secret_key": self.secret_key, "endpoint": self.url}

    # -- test hooks ------------------------------------------------------------------------------

    def _job_vault(self, job_id: str) -> LocalVault:
        for vault in self.engine.list_vaults():
            candidate = self.engine.vault(vault.name)
            if (candidate.base / "jobs" / f"{job_id}.json").is_file():
                return candidate
        raise KeyError(job_id)

    def fail_job(self, job_id: str, message: str = "Job failed (injected fault)") -> None:
        self._job_vault(job_id).fail_job(job_id, message)

    def expire_job(self, job_id: str) -> None:
        self._job_vault(job_id).expire_job(job_id)

    def corrupt_output(self, job_id: str, corrupt: bool = True) -> None:
        """Every read of this job's output has its first byte flipped (the tree hash stays right)."""
        self._job_vault(job_id).corrupt_output(job_id, corrupt)

    def corrupt_next_outputs(self, count: int = 1) -> Fault:
        return self.faults.add(Fault(op="get_job_output", action="corrupt", count=count))

    def fail_next_job(self, message: str = "Job failed (injected fault)") -> Fault:
        return self.faults.add(Fault(op="initiate_job", action="fail", body=message.encode("utf-8")))
