"""The one REST implementation of the Glacier-shaped vault API, spoken by Tencent CAS and Amazon Glacier.

Both services share paths, verbs, JSON documents and error bodies (PROTOCOLS.md §1.8); a `Dialect`
(dialect.py) holds what differs: base URL and account segment, header prefix (`x-cas-` /
`x-amz-`), request-id header, the resource-name field (`VaultQCS` / `VaultARN`), extra headers and the
signature. `cas.py` and `glacier.py` only build dialects.

The pieces: wire.py maps calls to requests on the wire layer (signed per try, one error hook),
parse.py parses the JSON answers, output.py reads job output verified against tree hashes,
config.py parses a remote's options. This module is the provider and the vault calls.

Uploads carry the linear SHA-256 (`x-*-content-sha256`) and the tree hash; the server's tree hash in
the answer is compared with ours where the server's hashes can be trusted (`VaultCapabilities`).

Thread-safe: one pooled client; signers are stateless or lock their caches; nothing else mutates.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, BinaryIO

from ...errors import InvalidArgument, NotSupported, ProtocolError
from ...wire.answer import Answer
from ...wire.body import Body
from ...wire.ranges import part_range_headers
from ...wire.retry import RetryPolicy
from ...wire.settings import HttpSettings
from .. import base, treehash
from ..base import (
    ArchiveInfo,
    ArchivePart,
    ArchiveUpload,
    JobInfo,
    JobStatus,
    Page,
    Tier,
    VaultInfo,
    check_description,
    check_vault_name,
    short_id,
    upload_in_parts,
)
from .config import RestRemote, Tuning
from .dialect import Dialect
from .output import JobOutput
from .parse import (
    all_pages,
    format_byte_range,
    parse_job,
    parse_json,
    parse_page,
    parse_part,
    parse_upload,
    parse_vault,
)
from .wire import RestWire

LIST_LIMIT = 1000       # the services' maximum page size


class RestVaultProvider:
    """One account of a CAS or Glacier endpoint: vault listing and the request primitive."""

    def __init__(self, remote: str, dialect: Dialect, *, scheme: str, netloc: str, account: str,
                 settings: HttpSettings | None = None, retry: RetryPolicy | None = None,
                 tuning: Tuning | None = None, capabilities: base.VaultCapabilities | None = None) -> None:
        self.remote = remote
        self.dialect = dialect
        self.scheme = scheme
        self.netloc = netloc
        self.account = account
        self.tuning = tuning or Tuning()
        base = capabilities or dialect.capabilities
        self.capabilities = dataclasses.replace(base, single_upload_max=self.tuning.single_upload_max) \
            if base.supports_multipart else base
        self.wire = RestWire(remote, dialect, scheme=scheme, netloc=netloc, account=account,
                             settings=settings or HttpSettings(), retry=retry or RetryPolicy())
        # The account as configured: "-" (the credentials' own) cannot be told apart from another
        # account's "-" without asking another service; README says to name it when that matters.
        self.identity = f"{dialect.name} {scheme}://{netloc} account {account}"

    @classmethod
    def of(cls, remote: str, dialect: Dialect, parsed: RestRemote, account: str) -> RestVaultProvider:
        return cls(remote, dialect, scheme=parsed.scheme, netloc=parsed.netloc, account=account,
                   settings=parsed.settings, retry=parsed.retry, tuning=parsed.tuning)

    def __repr__(self) -> str:
        return f"RestVaultProvider({self.remote!r}, {self.dialect.name}, {self.scheme}://{self.netloc})"

    def close(self) -> None:
        self.wire.close()

    def path(self, *segments: str) -> str:
        """The wire path /<account>/vaults/... with every segment percent-encoded."""
        return self.wire.path(*segments)

    def request(self, method: str, wire_path: str, *, what: str, op: str,
                params: Sequence[tuple[str, str]] = (), headers: Mapping[str, str] | None = None,
                body: Body | None = None) -> Answer:
        """One call, signed and retried as one; its whole answer. `op` names the operation for the
        dialect's error quirks."""
        request = self.wire.request(method, wire_path, what=what, params=params, headers=headers, body=body)
        return self.wire.call(request, op)

    # -- vaults ----------------------------------------------------------------------------------

    def list_vaults_page(self, marker: str | None = None, limit: int = LIST_LIMIT) -> Page:
        params = [("limit", str(limit))] + ([("marker", marker)] if marker else [])
        answer = self.request("GET", self.path(), what="list vaults", op="list_vaults", params=params)
        field = self.dialect.resource_field
        return parse_page(answer.content, "VaultList", lambda doc: parse_vault(doc, field), "list vaults")

    def list_vaults(self) -> list[VaultInfo]:
        return all_pages(self.list_vaults_page, "list vaults")

    def create_vault(self, name: str) -> None:
        self.request("PUT", self.path(check_vault_name(name)), what=f"create vault {name}", op="create_vault")

    def delete_vault(self, name: str) -> None:
        self.request("DELETE", self.path(check_vault_name(name)), what=f"delete vault {name}",
                     op="delete_vault")

    def vault(self, name: str) -> RestVault:
        return RestVault(self, check_vault_name(name))

    def check(self, vault: str | None) -> None:
        if vault:
            self.vault(vault).describe()
        else:
            self.list_vaults_page(limit=1)


class RestVault:
    """One vault over the REST API. Thread-safe (parts and output pieces may go in parallel)."""

    def __init__(self, provider: RestVaultProvider, name: str) -> None:
        self.provider = provider
        self.name = name
        self.dialect = provider.dialect
        self.capabilities = provider.capabilities
        self.output = JobOutput(provider.wire, name, provider.capabilities, provider.tuning)

    def __repr__(self) -> str:
        return f"RestVault({self.provider.remote!r}, {self.name!r})"

    def _request(self, method: str, segments: Sequence[str], *, what: str, op: str, **kwargs: Any) -> Answer:
        return self.provider.request(method, self.provider.path(self.name, *segments),
                                     what=f"vault {self.name}: {what}", op=op, **kwargs)

    def _list(self, segments: Sequence[str], marker: str | None, limit: int, what: str, op: str
              ) -> bytes:
        params = [("limit", str(limit))] + ([("marker", marker)] if marker else [])
        return self._request("GET", segments, what=what, op=op, params=params).content

    def _header(self, answer: Answer, name: str, what: str) -> str:
        value = answer.headers.get(self.dialect.h(name))
        if not value:
            raise ProtocolError(f"vault {self.name}: {what}: the answer lacks {self.dialect.h(name)}")
        return value.strip()

    def _check_server_hash(self, answer: Answer, ours: str, what: str) -> None:
        theirs = answer.headers.get(self.dialect.h("sha256-tree-hash"))
        if theirs and self.capabilities.tree_hash_trustworthy and theirs.strip().lower() != ours:
            raise base.TreeHashMismatch(f"vault {self.name}: {what}: the server computed tree hash "
                                   f"{theirs.strip()[:64]}, we sent {ours}")

    def describe(self) -> VaultInfo:
        answer = self._request("GET", (), what="describe", op="describe_vault")
        try:
            return parse_vault(parse_json(answer.content, "describe vault"), self.dialect.resource_field)
        except ProtocolError as exc:
            raise ProtocolError(f"vault {self.name}: describe: {exc}") from None

    # -- uploads ---------------------------------------------------------------------------------

    def upload_archive(self, body: BinaryIO | bytes, size: int, description: str = "", *,
                       on_initiated: Callable[[ArchiveUpload], None] | None = None) -> ArchiveInfo:
        check_description(description, self.capabilities.max_description_bytes)
        if size <= 0:
            raise InvalidArgument("an archive must hold at least one byte")
        if size > self.capabilities.single_upload_max and self.capabilities.supports_multipart:
            tuning = self.provider.tuning
            part = treehash.part_size_for(size, tuning.part_size, self.capabilities.max_parts)
            return upload_in_parts(self, body, size, description, part, concurrency=tuning.upload_concurrency,
                                   on_initiated=on_initiated)
        return self.upload_single(body, size, description)

    def upload_single(self, body: BinaryIO | bytes, size: int, description: str = "") -> ArchiveInfo:
        """One POST of the whole archive (hashed first: a seekable file is read twice, not held)."""
        check_description(description, self.capabilities.max_description_bytes)
        if isinstance(body, (bytes, bytearray, memoryview)) or not body.seekable():
            data = bytes(body) if isinstance(body, (bytes, bytearray, memoryview)) else body.read(size)
            if len(data) != size:
                raise InvalidArgument(f"upload body holds {len(data)} bytes, not {size}")
            hasher = treehash.TreeHasher(linear=True)
            hasher.update(data)
            request_body = Body(data=data)
        else:
            start = body.tell()
            try:
                hasher = treehash.tree_hash_file(body, size, linear=True)
            except ValueError as exc:
                raise InvalidArgument(f"upload body: {exc}") from None
            body.seek(start)
            request_body = Body.upload(body, size)
        tree = hasher.hexdigest()
        headers = self._hash_headers(hasher)
        if description:
            headers[self.dialect.h("archive-description")] = description
        answer = self._request("POST", ("archives",), what="upload archive", op="upload_archive",
                               headers=headers, body=request_body)
        archive_id = self._header(answer, "archive-id", "upload archive")
        self._check_server_hash(answer, tree, "upload archive")
        return ArchiveInfo(archive_id, description, size, time.time(), tree)

    def _hash_headers(self, hasher: treehash.TreeHasher) -> dict[str, str]:
        """The linear SHA-256 (which the signer signs as the payload hash) and the tree hash."""
        return {self.dialect.h("content-sha256"): hasher.linear_hexdigest(),
                self.dialect.h("sha256-tree-hash"): hasher.hexdigest()}

    def initiate_multipart(self, part_size: int, description: str = "") -> ArchiveUpload:
        if not self.capabilities.supports_multipart:
            raise NotSupported(f"vault {self.name}: this server has no multipart uploads")
        check_description(description, self.capabilities.max_description_bytes)
        if not treehash.is_valid_part_size(part_size):
            raise InvalidArgument(f"part size {part_size} is not 1 MiB x 2^n between 1 MiB and 4 GiB")
        headers = {self.dialect.h("part-size"): str(part_size)}
        if description:
            headers[self.dialect.h("archive-description")] = description
        answer = self._request("POST", ("multipart-uploads",), what="initiate multipart upload",
                               op="initiate_multipart", headers=headers, body=Body())
        upload_id = self._header(answer, "multipart-upload-id", "initiate multipart upload")
        return ArchiveUpload(upload_id, part_size, description, time.time())

    def upload_part(self, upload: ArchiveUpload, start: int, data: bytes) -> ArchivePart:
        if not data:
            raise InvalidArgument("an empty part")
        hasher = treehash.TreeHasher(linear=True)
        hasher.update(data)
        tree = hasher.hexdigest()
        end = start + len(data)
        headers = {**part_range_headers(start, end), **self._hash_headers(hasher)}
        answer = self._request("PUT", ("multipart-uploads", upload.upload_id),
                               what=f"upload part {start}-{end - 1}", op="upload_part", headers=headers,
                               body=Body(data=data))
        self._check_server_hash(answer, tree, f"upload part {start}-{end - 1}")
        return ArchivePart(start, end, tree)

    def list_parts_page(self, upload: ArchiveUpload, marker: str | None = None,
                        limit: int = LIST_LIMIT) -> Page:
        content = self._list(("multipart-uploads", upload.upload_id), marker, limit, "list parts", "list_parts")
        return parse_page(content, "Parts", parse_part, f"vault {self.name}: list parts")

    def list_parts(self, upload: ArchiveUpload) -> list[ArchivePart]:
        return all_pages(lambda marker: self.list_parts_page(upload, marker), "list parts")

    def complete_multipart(self, upload: ArchiveUpload, size: int, tree_hash: str) -> ArchiveInfo:
        headers = {self.dialect.h("archive-size"): str(size), self.dialect.h("sha256-tree-hash"): tree_hash}
        # Glacier documents completion as idempotent (a retry returns the same archive id).
        answer = self._request("POST", ("multipart-uploads", upload.upload_id),
                               what="complete multipart upload", op="complete_multipart", headers=headers,
                               body=Body())
        archive_id = self._header(answer, "archive-id", "complete multipart upload")
        self._check_server_hash(answer, tree_hash, "complete multipart upload")
        return ArchiveInfo(archive_id, upload.description, size, time.time(), tree_hash)

    def abort_multipart(self, upload: ArchiveUpload) -> None:
        self._request("DELETE", ("multipart-uploads", upload.upload_id), what="abort multipart upload",
                      op="abort_multipart")

    def list_uploads_page(self, marker: str | None = None, limit: int = LIST_LIMIT) -> Page:
        if not self.capabilities.supports_multipart:
            return Page([], None)
        content = self._list(("multipart-uploads",), marker, limit, "list multipart uploads", "list_uploads")
        return parse_page(content, "UploadsList", parse_upload, f"vault {self.name}: list multipart uploads")

    def list_multipart_uploads(self) -> list[ArchiveUpload]:
        return all_pages(self.list_uploads_page, "list multipart uploads")

    def delete_archive(self, archive_id: str) -> None:
        self._request("DELETE", ("archives", archive_id), what=f"delete archive {short_id(archive_id)}",
                      op="delete_archive")

    # -- jobs ------------------------------------------------------------------------------------

    def _initiate(self, params: dict, what: str) -> str:
        body = Body(data=json.dumps(params).encode("utf-8"))
        answer = self._request("POST", ("jobs",), what=what, op="initiate_job", body=body,
                               headers={"Content-Type": "application/json"})
        return self._header(answer, "job-id", what)

    def start_inventory(self, *, tier: Tier | None = None, description: str = "") -> str:
        check_description(description, self.capabilities.max_description_bytes)
        params: dict[str, Any] = {"Type": "inventory-retrieval", "Format": "JSON"}
        if tier is not None and self.dialect.inventory_tier:
            params["Tier"] = tier.value
        if description:
            params["Description"] = description
        return self._initiate(params, "initiate inventory job")

    def start_retrieval(self, archive_id: str, *, tier: Tier = Tier.STANDARD,
                        byte_range: tuple[int, int] | None = None, description: str = "") -> str:
        check_description(description, self.capabilities.max_description_bytes)
        params: dict[str, Any] = {"Type": "archive-retrieval", "ArchiveId": archive_id, "Tier": tier.value}
        if byte_range is not None:
            base.check_range(*byte_range)
            if not self.capabilities.supports_ranges:
                raise NotSupported(f"vault {self.name}: this server cannot retrieve a byte range")
            if byte_range[0] % base.MiB:
                raise InvalidArgument(f"retrieval range must start on a MiB boundary, not {byte_range[0]}")
            params["RetrievalByteRange"] = format_byte_range(*byte_range)
        if description:
            params["Description"] = description
        return self._initiate(params, f"initiate retrieval of {short_id(archive_id)}")

    def describe_job(self, job_id: str) -> JobInfo:
        answer = self._request("GET", ("jobs", job_id), what=f"describe job {short_id(job_id)}",
                               op="describe_job")
        return parse_job(parse_json(answer.content, "describe job"),
                         sizes_reported=self.capabilities.job_sizes_reported)

    def list_jobs_page(self, marker: str | None = None, limit: int = LIST_LIMIT, *,
                       completed: bool | None = None, status: JobStatus | None = None) -> Page:
        params = [("limit", str(limit))]
        if marker:
            params.append(("marker", marker))
        if completed is not None:
            params.append(("completed", "true" if completed else "false"))
        if status is not None:
            params.append(("statuscode", status.value))
        answer = self._request("GET", ("jobs",), what="list jobs", op="list_jobs", params=params)
        sizes = self.capabilities.job_sizes_reported
        page = parse_page(answer.content, "JobList", lambda doc: parse_job(doc, sizes_reported=sizes),
                          f"vault {self.name}: list jobs")
        # Filter here as well: moto ignores both filters.
        jobs = [j for j in page.items if (completed is None or j.completed == completed)
                and (status is None or j.status is status)]
        return Page(jobs, page.marker)

    def list_jobs(self, *, completed: bool | None = None, status: JobStatus | None = None) -> list[JobInfo]:
        return all_pages(lambda marker: self.list_jobs_page(marker, completed=completed, status=status),
                         "list jobs")

    # -- job output (output.py) ------------------------------------------------------------

    def read_job_output(self, job_id: str, start: int, end: int) -> bytes:
        return self.output.read(job_id, start, end)[0]

    def download_job_output(self, job_id: str, dest: BinaryIO, *, job: JobInfo | None = None) -> str:
        return self.output.download(job or self.describe_job(job_id), dest)

    def read_inventory(self, job_id: str) -> list[ArchiveInfo]:
        return self.output.inventory(job_id)
