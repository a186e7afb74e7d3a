"""The one REST implementation of the Glacier-shaped vault API, spoken by Tencent CAS and Amazon Glacier.

Both services share paths, verbs, JSON documents and error bodies (PROTOCOLS.md §1.8); a `Dialect`
holds what differs: base URL and account segment, header prefix (`x-cas-` / `x-amz-`), request-id
header, the resource-name field (`VaultQCS` / `VaultARN`), extra headers and the signature. `cas.py`
and `glacier.py` only build dialects.

Wire choices, and why:
- Every request is signed *inside* the function `call_with_retries` retries, so each try carries a
  fresh signature; file bodies are rewound per try; only `Transient` is retried.
- Uploads carry the linear SHA-256 (`x-*-content-sha256`) and the tree hash; the server's tree hash
  in the answer is compared with ours where the server's hashes can be trusted (`VaultCapabilities`).
- Job output is downloaded in tree-aligned pieces (1 MiB x 2^n) so that every piece is verified
  against the `x-*-sha256-tree-hash` the server returns for it, and the pieces combine into the
  job's own tree hash. A server that ignores Range (moto) is read as one stream instead.
- Error answers are translated once, here, from the JSON `{code|__type, message, type}` body;
  per-server quirks that only a status can reveal (moto answers 500 for a missing job) are data in
  `Dialect.error_overrides`.

Thread-safe: one pooled session; signers are stateless or lock their caches; nothing else mutates.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import io
import itertools
import json
import logging
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import (
    Any,
    BinaryIO,
    TypeVar,
)
from urllib.parse import quote

import requests
import urllib3.exceptions

from .. import __version__
from ..wire import transport_requests as storefs_http
from ..errors import (
    AccessDenied,
    ArchiveNotReady,
    ConfigError,
    InvalidArgument,
    NotEmpty,
    NotFound,
    NotPermitted,
    NotSupported,
    ProtocolError,
    StoreError,
    Throttled,
    Transient,
)
from ..wire.retry import NO_RETRY, RetryPolicy, call_with_retries
from ..wire.tuning import HTTP_TUNING, parse_http_tuning
from . import treehash
from .base import (
    ArchiveInfo,
    ArchivePart,
    ArchiveUpload,
    JobAction,
    JobInfo,
    JobStatus,
    MiB,
    Page,
    Tier,
    TreeHashMismatch,
    VaultCapabilities,
    VaultInfo,
    check_description,
    check_job_tree_hash,
    check_range,
    check_vault_name,
    parse_iso8601,
    short_id,
    upload_in_parts,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

ERROR_BODY_MAX = 64 * 1024
STREAM_CHUNK = 1 * MiB
MAX_PAGES = 10_000      # bound on every paging loop
LIST_LIMIT = 1000       # the services' maximum page size
_RANGE_RE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")

# Options every REST vault type takes, with defaults (merged into each SPEC.optional).
COMMON_OPTIONS: dict[str, str] = {
    "part_size": str(16 * MiB),            # multipart part size (rounded up to 1 MiB x 2^n); SDK default
    "single_upload_max": str(100 * MiB),   # larger archives go up in parts; the CAS SDK's threshold
    "upload_concurrency": "4",             # parts in flight for upload_archive()
    "download_piece": str(16 * MiB),       # job output is fetched in verified pieces of this size
    "download_concurrency": "4",
    **HTTP_TUNING,
}


# ------------------------------------------------------------------------------------------------
# Dialects


class Dialect:
    """What CAS and Glacier do differently. Subclasses set the attributes and implement sign()."""

    name = "rest"
    header_prefix = "x-amz-"
    request_id_header = "x-amzn-requestid"
    resource_field = "VaultARN"
    extra_headers: Mapping[str, str] = {}
    capabilities = VaultCapabilities()
    # (operation, HTTP status) -> error class, for answers without a JSON error code.
    error_overrides: Mapping[tuple[str, int], type[StoreError]] = {}
    # Whether an inventory job may carry a Tier (the APIs document Tier for retrievals only; moto
    # honours it for inventories, which is how its tests stay at 2 s).
    inventory_tier = False

    def sign(self, method: str, host: str, wire_path: str, params: Sequence[tuple[str, str]],
             headers: Mapping[str, str], payload_hash: str) -> dict[str, str]:
        """Headers to add (Authorization, dates …) to a request that sends exactly `headers`."""
        raise NotImplementedError

    def h(self, name: str) -> str:
        """A protocol header name: h("archive-id") -> x-cas-archive-id / x-amz-archive-id."""
        return self.header_prefix + name


# ------------------------------------------------------------------------------------------------
# Errors


_CODE_ERRORS: dict[str, type[StoreError]] = {
    "ResourceNotFoundException": NotFound, "VaultNotFound": NotFound, "NoSuchVault": NotFound,
    "AccessDeniedException": AccessDenied, "AccessDenied": AccessDenied,
    "ExpiredTokenException": AccessDenied, "ExpiredToken": AccessDenied,
    "InvalidSignatureException": AccessDenied, "SignatureDoesNotMatch": AccessDenied,
    "MissingAuthenticationTokenException": AccessDenied, "UnrecognizedClientException": AccessDenied,
    "InvalidClientTokenId": AccessDenied, "IncompleteSignature": AccessDenied,
    "PolicyEnforcedException": AccessDenied,
    "ThrottlingException": Throttled, "Throttling": Throttled, "ServiceUnavailableException": Throttled,
    "ServiceUnavailable": Throttled, "InsufficientCapacityException": Throttled,
    "RequestTimeoutException": Transient, "RequestTimeout": Transient, "InternalFailure": Transient,
    "InternalError": Transient, "InternalServerError": Transient,
    "InvalidDigest": Transient,  # the CAS SDK retries it for parts
    "InvalidParameterValueException": InvalidArgument, "MissingParameterValueException": InvalidArgument,
    "BadRequest": InvalidArgument, "SerializationException": InvalidArgument,
    "LimitExceededException": NotPermitted,  # a vault or account quota: retrying does not help
}

_STATUS_ERRORS: dict[int, type[StoreError]] = {
    400: InvalidArgument, 401: AccessDenied, 403: AccessDenied, 404: NotFound, 405: NotSupported,
    408: Transient, 429: Throttled, 500: Transient, 501: NotSupported, 502: Transient, 503: Throttled,
    504: Transient,
}


def error_from_answer(dialect: Dialect, status: int, headers: Mapping[str, str], body: bytes, *,
                      what: str, op: str) -> StoreError:
    """The one translation of an error answer into a StoreError: code first, then quirks, then status."""
    code = message = ""
    try:
        doc = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError):
        doc = None  # a proxy's HTML page, moto's Werkzeug 500: the status says enough
    if isinstance(doc, dict):
        code = str(doc.get("code") or doc.get("__type") or doc.get("Code") or "")
        message = str(doc.get("message") or doc.get("Message") or "")
    code = code or headers.get("x-amzn-errortype", "")
    code = code.rsplit("#", 1)[-1].split(":", 1)[0].strip()  # "com.amazon…#Name" and "Name:http…" forms
    cls = _CODE_ERRORS.get(code) if code else None
    lowered = message.lower()
    if code == "InvalidParameterValueException":
        if "not currently available" in lowered or "not yet" in lowered or "inprogress" in lowered:
            cls = ArchiveNotReady
        elif "checksum" in lowered or "tree hash" in lowered:
            cls = TreeHashMismatch
        elif "not empty" in lowered:
            cls = NotEmpty
    if cls is None and not code:
        cls = dialect.error_overrides.get((op, status))
    if cls is None:
        cls = _STATUS_ERRORS.get(status) or (Transient if status >= 500 else StoreError)
    label = code or f"HTTP {status}"
    text = f"{what}: {label}" + (f": {message[:300]}" if message else "")
    request_id = headers.get(dialect.request_id_header, "")
    error = cls(text, detail=f"status={status} code={code} message={message[:500]} request_id={request_id}")
    error.vault_code = code  # type: ignore[attr-defined]
    return error


# ------------------------------------------------------------------------------------------------
# Parsing answers (every malformed answer becomes ProtocolError)


def _json(body: bytes, what: str) -> dict:
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(f"{what}: the server's answer is not JSON",
                            detail=body[:200].decode("utf-8", "replace")) from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"{what}: the server's answer is not a JSON object")
    return doc


def _opt_str(doc: Mapping, key: str) -> str | None:
    value = doc.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{key} is {type(value).__name__}, not a string")
    return value


def _opt_int(doc: Mapping, key: str) -> int | None:
    value = doc.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ProtocolError(f"{key} is a boolean, not a number")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ProtocolError(f"{key} = {str(value)[:40]!r} is not a number") from None
    if number < 0:
        raise ProtocolError(f"{key} = {number} is negative")
    return number


def _opt_date(doc: Mapping, key: str) -> float | None:
    text = _opt_str(doc, key)
    if text is None:
        return None
    try:
        return parse_iso8601(text)
    except ValueError as exc:
        raise ProtocolError(f"{key}: {exc}") from None


def parse_range(text: str | None) -> tuple[int, int] | None:
    """`"0-1048575"` (inclusive) -> (0, 1048576). None for a missing range."""
    if not text:
        return None
    match = _RANGE_RE.match(text)
    if not match or int(match.group(2)) < int(match.group(1)):
        raise ProtocolError(f"byte range {text[:40]!r} is malformed")
    return int(match.group(1)), int(match.group(2)) + 1


def format_range(start: int, end: int) -> str:
    return f"{start}-{end - 1}"


def parse_job(doc: Mapping, *, sizes_reported: bool = True) -> JobInfo:
    """A describe-job / list-jobs entry."""
    if not isinstance(doc, Mapping):
        raise ProtocolError("a job entry is not a JSON object")
    try:
        job_id = _opt_str(doc, "JobId")
        if not job_id:
            raise ProtocolError("job without JobId")
        action_text = _opt_str(doc, "Action") or ""
        action = next((a for a in JobAction if a.value == action_text), JobAction.OTHER)
        status_text = _opt_str(doc, "StatusCode") or ""
        status = next((s for s in JobStatus if s.value == status_text), None)
        if status is None:
            raise ProtocolError(f"job {short_id(job_id)} has status {status_text[:40]!r}")
        archive_size = _opt_int(doc, "ArchiveSizeInBytes")
        inventory_size = _opt_int(doc, "InventorySizeInBytes")
        if not sizes_reported:  # moto: always 0 / a made-up 10000
            archive_size = inventory_size = None
        if action is JobAction.INVENTORY_RETRIEVAL and status is not JobStatus.SUCCEEDED:
            inventory_size = None
        return JobInfo(
            job_id=job_id, action=action, status=status,
            status_message=_opt_str(doc, "StatusMessage"),
            archive_id=_opt_str(doc, "ArchiveId"),
            tier=Tier.parse(_opt_str(doc, "Tier")),
            byte_range=parse_range(_opt_str(doc, "RetrievalByteRange")),
            creation_date=_opt_date(doc, "CreationDate"),
            completion_date=_opt_date(doc, "CompletionDate"),
            sha256_tree_hash=_opt_str(doc, "SHA256TreeHash"),
            archive_size=archive_size,
            inventory_size=inventory_size,
            description=_opt_str(doc, "JobDescription"),
            archive_tree_hash=_opt_str(doc, "ArchiveSHA256TreeHash"))
    except ProtocolError as exc:
        raise ProtocolError(f"malformed job: {exc}") from None


def parse_inventory(body: bytes, what: str) -> list[ArchiveInfo]:
    """The ArchiveList of a JSON inventory (same shape for CAS, Glacier and the local vault)."""
    doc = _json(body, what)
    entries = doc.get("ArchiveList")
    if not isinstance(entries, list):
        raise ProtocolError(f"{what}: the inventory has no ArchiveList")
    archives: list[ArchiveInfo] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ProtocolError(f"{what}: an ArchiveList entry is not an object")
        try:
            archive_id = _opt_str(entry, "ArchiveId")
            size = _opt_int(entry, "Size")
            if not archive_id or size is None:
                raise ProtocolError("entry without ArchiveId or Size")
            archives.append(ArchiveInfo(
                archive_id=archive_id, description=_opt_str(entry, "ArchiveDescription") or "",
                size=size, creation_date=_opt_date(entry, "CreationDate") or 0.0,
                tree_hash=(_opt_str(entry, "SHA256TreeHash") or "").lower() or None))
        except ProtocolError as exc:
            raise ProtocolError(f"{what}: {exc}") from None
    return archives


def _parse_vault(doc: Mapping, resource_field: str) -> VaultInfo:
    if not isinstance(doc, Mapping):
        raise ProtocolError("a vault entry is not a JSON object")
    name = _opt_str(doc, "VaultName")
    if not name:
        raise ProtocolError("vault without VaultName")
    return VaultInfo(name=name, creation_date=_opt_date(doc, "CreationDate"),
                     last_inventory_date=_opt_date(doc, "LastInventoryDate"),
                     archive_count=_opt_int(doc, "NumberOfArchives"), size=_opt_int(doc, "SizeInBytes"),
                     resource_name=_opt_str(doc, resource_field))


def _parse_upload(doc: Mapping) -> ArchiveUpload:
    if not isinstance(doc, Mapping):
        raise ProtocolError("an upload entry is not a JSON object")
    upload_id = _opt_str(doc, "MultipartUploadId")
    part_size = _opt_int(doc, "PartSizeInBytes")
    if not upload_id or part_size is None:
        raise ProtocolError("upload entry without MultipartUploadId or PartSizeInBytes")
    return ArchiveUpload(upload_id, part_size, _opt_str(doc, "ArchiveDescription") or "",
                         _opt_date(doc, "CreationDate"))


def _marker(doc: Mapping) -> str | None:
    marker = doc.get("Marker")
    if marker is None or marker == "":
        return None
    if not isinstance(marker, str):
        raise ProtocolError("Marker is not a string")
    return marker


# ------------------------------------------------------------------------------------------------
# Request bodies


class _Body:
    """Nothing, bytes, or `size` bytes of a file object from its current position (rewound per try)."""

    def __init__(self, data: bytes | None = None, *, fileobj: BinaryIO | None = None, size: int = 0,
                 sha256: str | None = None) -> None:
        self.data = data
        self.fileobj = fileobj
        self.size = size if fileobj is not None else len(data or b"")
        # The linear SHA-256 of the payload (SigV4 signs it; CAS sends it as x-cas-content-sha256).
        if sha256 is None and fileobj is None:
            sha256 = hashlib.sha256(data or b"").hexdigest()
        self.sha256 = sha256
        self.start = fileobj.tell() if fileobj is not None else None

    def for_attempt(self) -> Any:
        if self.fileobj is None:
            return self.data or b""
        self.fileobj.seek(self.start or 0)
        return storefs_http.FileChunks(self.fileobj, self.size)


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


# ------------------------------------------------------------------------------------------------
# Options


@dataclasses.dataclass(frozen=True)
class Tuning:
    part_size: int = 16 * MiB
    single_upload_max: int = 100 * MiB
    upload_concurrency: int = 4
    download_piece: int = 16 * MiB
    download_concurrency: int = 4


def parse_common(remote: str, type_name: str, opts: Mapping[str, str]
                 ) -> tuple[storefs_http.HttpSettings, RetryPolicy, Tuning]:
    """HTTP settings, retry policy and tuning from a vault remote's options (defaults merged in)."""
    try:
        part_size = treehash.part_size_for(1, int(opts["part_size"]))
        piece = treehash.part_size_for(1, int(opts["download_piece"]))
        tuning = Tuning(part_size=part_size, single_upload_max=int(opts["single_upload_max"]),
                        upload_concurrency=max(1, int(opts["upload_concurrency"])),
                        download_piece=piece, download_concurrency=max(1, int(opts["download_concurrency"])))
    except ValueError as exc:
        raise ConfigError(f"[{remote}] a numeric {type_name} option is not valid: {exc}") from None
    settings, retry = parse_http_tuning(remote, opts)
    return settings, retry, tuning


def parse_endpoint(remote: str, endpoint: str) -> tuple[str, str]:
    """(scheme, netloc) of an endpoint URL or bare host name (https is assumed)."""
    parts = storefs_http.check_endpoint(remote, endpoint)
    return parts.scheme, parts.netloc.lower()


# ------------------------------------------------------------------------------------------------
# The connection


class RestVaultProvider:
    """One account of a CAS or Glacier endpoint: vault listing and the request primitive."""

    def __init__(self, remote: str, dialect: Dialect, *, scheme: str, netloc: str, account: str,
                 settings: storefs_http.HttpSettings | None = None, retry: RetryPolicy | None = None,
                 tuning: Tuning | None = None, capabilities: VaultCapabilities | None = None) -> None:
        self.remote = remote
        self.dialect = dialect
        self.scheme = scheme
        self.netloc = netloc
        self.account = account
        self.settings = settings or storefs_http.HttpSettings()
        self.retry = retry or RetryPolicy()
        self.tuning = tuning or Tuning()
        base = capabilities or dialect.capabilities
        self.capabilities = dataclasses.replace(base, single_upload_max=self.tuning.single_upload_max) \
            if base.supports_multipart else base
        self.session = storefs_http.new_session(self.settings)
        self.user_agent = f"storefs/{__version__}"

    def __repr__(self) -> str:
        return f"RestVaultProvider({self.remote!r}, {self.dialect.name}, {self.scheme}://{self.netloc})"

    def close(self) -> None:
        self.session.close()

    # -- the request primitive -------------------------------------------------------------------

    def path(self, *segments: str) -> str:
        """The wire path /<account>/vaults/... with every segment percent-encoded."""
        return "/" + "/".join(quote(s, safe="") for s in (self.account, "vaults", *segments))

    def request(self, method: str, wire_path: str, *, what: str, op: str,
                params: Sequence[tuple[str, str]] = (), headers: Mapping[str, str] | None = None,
                body: _Body | None = None, read: Callable[[requests.Response], T] | None = None,
                policy: RetryPolicy | None = None) -> T:
        """One call, signed and retried; `read` turns the (2xx, streamed) response into the result
        inside the retried function, so a body cut short is retried too. Default: the whole Answer."""
        reader = read or _read_answer
        send = self._sender(method, wire_path, what=what, op=op, params=params, headers=headers, body=body)

        def attempt() -> T:
            response = send()
            try:
                return reader(response)
            finally:
                response.close()

        return call_with_retries(attempt, policy or self.retry, what=f"{self.remote}: {what}")

    def _sender(self, method: str, wire_path: str, *, what: str, op: str,
                params: Sequence[tuple[str, str]], headers: Mapping[str, str] | None,
                body: _Body | None) -> Callable[[], requests.Response]:
        from ..wire.auth.sigv4 import build_query
        query = build_query(params)
        url = f"{self.scheme}://{self.netloc}{wire_path}" + (f"?{query}" if query else "")
        request_body = body or _Body()
        base_headers = {"Host": self.netloc, **self.dialect.extra_headers, **(headers or {})}
        if body is not None:
            base_headers["Content-Length"] = str(request_body.size)

        def send() -> requests.Response:
            signed = dict(base_headers)
            signed.update(self.dialect.sign(method, self.netloc, wire_path, params, signed,
                                            request_body.sha256 or treehash.EMPTY_TREE_HASH))
            signed["User-Agent"] = self.user_agent
            signed.setdefault("Accept-Encoding", "identity")
            # http.send turns transport failures into Transient and malformed answers into ProtocolError.
            response = storefs_http.send(self.session, self.settings, method, url, headers=signed,
                                         data=request_body.for_attempt(), stream=True, allow_redirects=False)
            if response.status_code >= 300:
                raise self._error(response, what, op)
            return response

        return send

    def _error(self, response: requests.Response, what: str, op: str) -> StoreError:
        content = b""
        try:
            content = response.raw.read(ERROR_BODY_MAX, decode_content=True) or b""
        except (urllib3.exceptions.HTTPError, OSError, requests.exceptions.RequestException):
            content = b""  # the status alone still says what happened
        finally:
            response.close()
        return error_from_answer(self.dialect, response.status_code, response.headers, content,
                                 what=what, op=op)

    # -- vaults ----------------------------------------------------------------------------------

    def list_vaults_page(self, marker: str | None = None, limit: int = LIST_LIMIT) -> Page:
        params = [("limit", str(limit))] + ([("marker", marker)] if marker else [])
        answer = self.request("GET", self.path(), what="list vaults", op="list_vaults", params=params)
        doc = _json(answer.body, "list vaults")
        entries = doc.get("VaultList")
        if not isinstance(entries, list):
            raise ProtocolError("list vaults: the answer has no VaultList")
        try:
            vaults = [_parse_vault(v, self.dialect.resource_field) for v in entries]
            return Page(vaults, _marker(doc))
        except ProtocolError as exc:
            raise ProtocolError(f"list vaults: {exc}") from None

    def list_vaults(self) -> list[VaultInfo]:
        vaults: list[VaultInfo] = []
        marker: str | None = None
        for _ in range(MAX_PAGES):
            page = self.list_vaults_page(marker)
            vaults.extend(page.items)
            if not page.marker or page.marker == marker:
                return vaults
            marker = page.marker
        raise ProtocolError("list vaults: too many pages")

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


def _read_answer(response: requests.Response) -> Answer:
    return Answer(response.status_code, response.headers, storefs_http.read_body(response))


# ------------------------------------------------------------------------------------------------
# One vault


class RestVault:
    """One vault over the REST API. Thread-safe (parts and output pieces may go in parallel)."""

    def __init__(self, provider: RestVaultProvider, name: str) -> None:
        self.provider = provider
        self.name = name
        self.dialect = provider.dialect
        self.capabilities = provider.capabilities

    def __repr__(self) -> str:
        return f"RestVault({self.provider.remote!r}, {self.name!r})"

    def _path(self, *segments: str) -> str:
        return self.provider.path(self.name, *segments)

    def _request(self, method: str, segments: Sequence[str], *, what: str, op: str, **kwargs: Any) -> Any:
        return self.provider.request(method, self._path(*segments), what=f"vault {self.name}: {what}",
                                     op=op, **kwargs)

    def _header(self, answer: Answer, name: str, what: str) -> str:
        value = answer.headers.get(self.dialect.h(name))
        if not value:
            raise ProtocolError(f"vault {self.name}: {what}: the answer lacks {self.dialect.h(name)}")
        return value.strip()

    def _check_server_hash(self, answer: Answer, ours: str, what: str) -> None:
        theirs = answer.headers.get(self.dialect.h("sha256-tree-hash"))
        if theirs and self.capabilities.tree_hash_trustworthy and theirs.strip().lower() != ours:
            raise TreeHashMismatch(f"vault {self.name}: {what}: the server computed tree hash "
                                   f"{theirs.strip()[:64]}, we sent {ours}")

    def describe(self) -> VaultInfo:
        answer = self._request("GET", (), what="describe", op="describe_vault")
        try:
            return _parse_vault(_json(answer.body, "describe vault"), self.dialect.resource_field)
        except ProtocolError as exc:
            raise ProtocolError(f"vault {self.name}: describe: {exc}") from None

    # -- uploads ---------------------------------------------------------------------------------

    def upload_archive(self, body: BinaryIO | bytes, size: int, description: str = "") -> ArchiveInfo:
        check_description(description, self.capabilities.max_description_bytes)
        if size <= 0:
            raise InvalidArgument("an archive must hold at least one byte")
        if size > self.capabilities.single_upload_max and self.capabilities.supports_multipart:
            tuning = self.provider.tuning
            part = treehash.part_size_for(size, tuning.part_size, self.capabilities.max_parts)
            return upload_in_parts(self, body, size, description, part, concurrency=tuning.upload_concurrency)
        return self.upload_single(body, size, description)

    def upload_single(self, body: BinaryIO | bytes, size: int, description: str = "") -> ArchiveInfo:
        """One POST of the whole archive (hashed first: a seekable file is read twice, not held)."""
        check_description(description, self.capabilities.max_description_bytes)
        if isinstance(body, (bytes, bytearray, memoryview)) or not _seekable(body):
            data = bytes(body) if isinstance(body, (bytes, bytearray, memoryview)) else body.read(size)
            if len(data) != size:
                raise InvalidArgument(f"upload body holds {len(data)} bytes, not {size}")
            hasher = treehash.TreeHasher(linear=True)
            hasher.update(data)
            request_body = _Body(data, sha256=hasher.linear_hexdigest())
        else:
            start = body.tell()
            try:
                hasher = treehash.tree_hash_file(body, size, linear=True)
            except ValueError as exc:
                raise InvalidArgument(f"upload body: {exc}") from None
            body.seek(start)
            request_body = _Body(fileobj=body, size=size, sha256=hasher.linear_hexdigest())
        tree = hasher.hexdigest()
        headers = {self.dialect.h("content-sha256"): hasher.linear_hexdigest(),
                   self.dialect.h("sha256-tree-hash"): tree}
        if description:
            headers[self.dialect.h("archive-description")] = description
        answer = self._request("POST", ("archives",), what="upload archive", op="upload_archive",
                               headers=headers, body=request_body)
        archive_id = self._header(answer, "archive-id", "upload archive")
        self._check_server_hash(answer, tree, "upload archive")
        return ArchiveInfo(archive_id, description, size, time.time(), tree)

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
                               op="initiate_multipart", headers=headers, body=_Body(b""))
        upload_id = self._header(answer, "multipart-upload-id", "initiate multipart upload")
        return ArchiveUpload(upload_id, part_size, description, time.time())

    def upload_part(self, upload: ArchiveUpload, start: int, data: bytes) -> ArchivePart:
        if not data:
            raise InvalidArgument("an empty part")
        hasher = treehash.TreeHasher(linear=True)
        hasher.update(data)
        tree = hasher.hexdigest()
        end = start + len(data)
        headers = {"Content-Range": f"bytes {start}-{end - 1}/*",
                   self.dialect.h("content-sha256"): hasher.linear_hexdigest(),
                   self.dialect.h("sha256-tree-hash"): tree}
        answer = self._request("PUT", ("multipart-uploads", upload.upload_id),
                               what=f"upload part {start}-{end - 1}", op="upload_part", headers=headers,
                               body=_Body(data, sha256=hasher.linear_hexdigest()))
        self._check_server_hash(answer, tree, f"upload part {start}-{end - 1}")
        return ArchivePart(start, end, tree)

    def list_parts_page(self, upload: ArchiveUpload, marker: str | None = None,
                        limit: int = LIST_LIMIT) -> Page:
        params = [("limit", str(limit))] + ([("marker", marker)] if marker else [])
        answer = self._request("GET", ("multipart-uploads", upload.upload_id), what="list parts",
                               op="list_parts", params=params)
        doc = _json(answer.body, "list parts")
        entries = doc.get("Parts")
        if not isinstance(entries, list):
            raise ProtocolError(f"vault {self.name}: list parts: the answer has no Parts")
        parts = []
        try:
            for entry in entries:
                if not isinstance(entry, dict):
                    raise ProtocolError("a part entry is not a JSON object")
                span = parse_range(_opt_str(entry, "RangeInBytes"))
                tree = _opt_str(entry, "SHA256TreeHash")
                if span is None or not tree:
                    raise ProtocolError("part without RangeInBytes or SHA256TreeHash")
                parts.append(ArchivePart(span[0], span[1], tree.lower()))
            return Page(parts, _marker(doc))
        except ProtocolError as exc:
            raise ProtocolError(f"vault {self.name}: list parts: {exc}") from None

    def list_parts(self, upload: ArchiveUpload) -> list[ArchivePart]:
        return _all_pages(lambda marker: self.list_parts_page(upload, marker), "list parts")

    def complete_multipart(self, upload: ArchiveUpload, size: int, tree_hash: str) -> ArchiveInfo:
        headers = {self.dialect.h("archive-size"): str(size), self.dialect.h("sha256-tree-hash"): tree_hash}
        # Glacier documents completion as idempotent (a retry returns the same archive id).
        answer = self._request("POST", ("multipart-uploads", upload.upload_id),
                               what="complete multipart upload", op="complete_multipart", headers=headers,
                               body=_Body(b""))
        archive_id = self._header(answer, "archive-id", "complete multipart upload")
        self._check_server_hash(answer, tree_hash, "complete multipart upload")
        return ArchiveInfo(archive_id, upload.description, size, time.time(), tree_hash)

    def abort_multipart(self, upload: ArchiveUpload) -> None:
        self._request("DELETE", ("multipart-uploads", upload.upload_id), what="abort multipart upload",
                      op="abort_multipart")

    def list_uploads_page(self, marker: str | None = None, limit: int = LIST_LIMIT) -> Page:
        if not self.capabilities.supports_multipart:
            return Page([], None)
        params = [("limit", str(limit))] + ([("marker", marker)] if marker else [])
        answer = self._request("GET", ("multipart-uploads",), what="list multipart uploads",
                               op="list_uploads", params=params)
        doc = _json(answer.body, "list multipart uploads")
        entries = doc.get("UploadsList")
        if not isinstance(entries, list):
            raise ProtocolError(f"vault {self.name}: list multipart uploads: the answer has no UploadsList")
        try:
            return Page([_parse_upload(e) for e in entries], _marker(doc))
        except ProtocolError as exc:
            raise ProtocolError(f"vault {self.name}: list multipart uploads: {exc}") from None

    def list_multipart_uploads(self) -> list[ArchiveUpload]:
        return _all_pages(self.list_uploads_page, "list multipart uploads")

    def delete_archive(self, archive_id: str) -> None:
        self._request("DELETE", ("archives", archive_id), what=f"delete archive {short_id(archive_id)}",
                      op="delete_archive")

    # -- jobs ------------------------------------------------------------------------------------

    def _initiate(self, params: dict, what: str) -> str:
        body = json.dumps(params).encode("utf-8")
        answer = self._request("POST", ("jobs",), what=what, op="initiate_job", body=_Body(body),
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
            check_range(*byte_range)
            if not self.capabilities.supports_ranges:
                raise NotSupported(f"vault {self.name}: this server cannot retrieve a byte range")
            if byte_range[0] % MiB:
                raise InvalidArgument(f"retrieval range must start on a MiB boundary, not {byte_range[0]}")
            params["RetrievalByteRange"] = format_range(*byte_range)
        if description:
            params["Description"] = description
        return self._initiate(params, f"initiate retrieval of {short_id(archive_id)}")

    def describe_job(self, job_id: str) -> JobInfo:
        answer = self._request("GET", ("jobs", job_id), what=f"describe job {short_id(job_id)}",
                               op="describe_job")
        return parse_job(_json(answer.body, "describe job"),
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
        doc = _json(answer.body, "list jobs")
        entries = doc.get("JobList")
        if not isinstance(entries, list):
            raise ProtocolError(f"vault {self.name}: list jobs: the answer has no JobList")
        jobs = [parse_job(e, sizes_reported=self.capabilities.job_sizes_reported) for e in entries]
        # Filter here as well: moto ignores both filters.
        jobs = [j for j in jobs if (completed is None or j.completed == completed)
                and (status is None or j.status is status)]
        return Page(jobs, _marker(doc))

    def list_jobs(self, *, completed: bool | None = None, status: JobStatus | None = None) -> list[JobInfo]:
        return _all_pages(lambda marker: self.list_jobs_page(marker, completed=completed, status=status),
                          "list jobs")

    # -- job output ------------------------------------------------------------------------------

    def read_job_output(self, job_id: str, start: int, end: int) -> bytes:
        return self._read_output(job_id, start, end)[0]

    def _read_output(self, job_id: str, start: int, end: int) -> tuple[bytes, bytes | None]:
        """(data, its raw tree hash if it was computed to verify the data)."""
        check_range(start, end)
        try:
            return self._read_output_once(job_id, start, end)
        except TreeHashMismatch as exc:
            # A transfer corrupted on the way is worth one more try; a corrupt output is not.
            log.warning("vault %s: %s; fetching once more", self.name, exc)
            return self._read_output_once(job_id, start, end)

    def _read_output_once(self, job_id: str, start: int, end: int) -> tuple[bytes, bytes | None]:
        what = f"output of job {short_id(job_id)} bytes {start}-{end - 1}"
        ranged = self.capabilities.supports_ranges
        headers = {"Range": f"bytes={start}-{end - 1}"} if ranged else {}

        def read(response: requests.Response) -> tuple[bytes, bytes | None]:
            if response.status_code == 206:
                got_start, got_end, total = _content_range(response.headers.get("Content-Range", ""), what)
                if got_start != start or got_end > end:
                    raise ProtocolError(f"vault {self.name}: {what}: the server sent bytes "
                                        f"{got_start}-{got_end - 1}")
                data = storefs_http.read_body(response)
                if len(data) != got_end - got_start:
                    raise Transient(f"vault {self.name}: {what}: body cut short")
                return data, self._verify_piece(response, data, start, start + len(data), total, what)
            # 200: the whole output (a server that ignores Range, or a range that covers it all).
            data = _slice_stream(response, start, end)
            if start == 0 and _content_length(response) == len(data):
                return data, self._verify_piece(response, data, 0, len(data), len(data), what)
            return data, None

        return self._request("GET", ("jobs", job_id, "output"), what=what, op="job_output",
                             headers=headers, read=read)

    def _verify_piece(self, response: requests.Response, data: bytes, start: int, end: int,
                      total: int | None, what: str) -> bytes | None:
        """Check data against the server's x-*-sha256-tree-hash, if it sent one we can check.
        Returns the raw tree hash it computed (None if it had nothing to check against)."""
        theirs = response.headers.get(self.dialect.h("sha256-tree-hash"))
        if not theirs or not self.capabilities.tree_hash_trustworthy:
            return None
        if total is not None and not treehash.is_tree_aligned(start, end, total):
            return None  # a hash for a range that is not a tree node cannot be checked piecewise
        ours = treehash.tree_hash_raw(data)
        if ours.hex() != theirs.strip().lower():
            raise TreeHashMismatch(f"vault {self.name}: {what}: tree hash {ours.hex()} differs from the "
                                   f"server's {theirs.strip()[:64]}")
        return ours

    def download_job_output(self, job_id: str, dest: BinaryIO, *, job: JobInfo | None = None) -> str:
        job = job or self.describe_job(job_id)
        size = job.output_size
        if self.capabilities.supports_ranges and size is not None:
            return self._download_in_pieces(job, dest, size)
        return self._download_stream(job, dest)

    def _download_in_pieces(self, job: JobInfo, dest: BinaryIO, size: int) -> str:
        """Aligned pieces (each one a tree node, verified), up to `download_concurrency` in flight,
        written in order; memory: about concurrency x piece."""
        tuning = self.provider.tuning
        piece = tuning.download_piece
        starts = iter(range(0, size, piece))
        nodes: list[bytes] = []

        def fetch(start: int) -> tuple[bytes, bytes]:
            data, node = self._read_output(job.job_id, start, min(size, start + piece))
            return data, node if node is not None else treehash.tree_hash_raw(data)

        with concurrent.futures.ThreadPoolExecutor(max_workers=tuning.download_concurrency,
                                                   thread_name_prefix="vault-output") as pool:
            pending: collections.deque = collections.deque(
                pool.submit(fetch, s) for s in itertools.islice(starts, tuning.download_concurrency))
            try:
                while pending:
                    data, node = pending.popleft().result()
                    nxt = next(starts, None)
                    if nxt is not None:
                        pending.append(pool.submit(fetch, nxt))
                    dest.write(data)
                    nodes.append(node)
            finally:
                for future in pending:
                    future.cancel()
        got = treehash.combine_hex(nodes) if nodes else treehash.EMPTY_TREE_HASH
        check_job_tree_hash(job, got, self.capabilities)
        return got

    def _download_stream(self, job: JobInfo, dest: BinaryIO) -> str:
        """One GET of the whole output, hashed as it streams (servers without ranges, unknown sizes)."""
        what = f"output of job {short_id(job.job_id)}"
        restart = dest.tell() if _seekable(dest) else None

        def read(response: requests.Response) -> str:
            if restart is not None:
                dest.seek(restart)
                dest.truncate()
            hasher = treehash.TreeHasher()
            try:
                for chunk in response.iter_content(STREAM_CHUNK):
                    hasher.update(chunk)
                    dest.write(chunk)
            except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.Timeout) as exc:
                raise Transient(f"vault {self.name}: {what} cut short: {exc.__class__.__name__}") from None
            got = hasher.hexdigest()
            expected = response.headers.get(self.dialect.h("sha256-tree-hash"))
            if expected and self.capabilities.tree_hash_trustworthy and expected.strip().lower() != got:
                raise TreeHashMismatch(f"vault {self.name}: {what}: tree hash {got} differs from the "
                                       f"server's {expected.strip()[:64]}")
            return got

        got = self._request("GET", ("jobs", job.job_id, "output"), what=what, op="job_output", read=read,
                            policy=None if restart is not None else NO_RETRY)
        check_job_tree_hash(job, got, self.capabilities)
        return got

    def read_inventory(self, job_id: str) -> list[ArchiveInfo]:
        buf = io.BytesIO()
        self._download_stream(JobInfo(job_id, JobAction.INVENTORY_RETRIEVAL, JobStatus.SUCCEEDED), buf)
        return parse_inventory(buf.getvalue(), f"vault {self.name}: inventory {short_id(job_id)}")


# ------------------------------------------------------------------------------------------------
# Small helpers


def _seekable(fileobj: Any) -> bool:
    try:
        return bool(fileobj.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _all_pages(fetch: Callable[[str | None], Page], what: str) -> list:
    items: list = []
    marker: str | None = None
    for _ in range(MAX_PAGES):
        page = fetch(marker)
        items.extend(page.items)
        if not page.marker or page.marker == marker:
            return items
        marker = page.marker
    raise ProtocolError(f"{what}: more than {MAX_PAGES} pages")


def _content_range(text: str, what: str) -> tuple[int, int, int | None]:
    """`bytes 0-9/10` -> (0, 10, 10): start, exclusive end, total (None for `*`)."""
    match = _CONTENT_RANGE_RE.match(text.strip())
    if not match or int(match.group(2)) < int(match.group(1)):
        raise ProtocolError(f"{what}: bad Content-Range {text[:60]!r}")
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)) + 1, total


def _content_length(response: requests.Response) -> int | None:
    try:
        return int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None


def _slice_stream(response: requests.Response, start: int, end: int) -> bytes:
    """Bytes [start, end) of a whole-body answer, without holding more than that."""
    out = bytearray()
    pos = 0
    try:
        for chunk in response.iter_content(STREAM_CHUNK):
            chunk_end = pos + len(chunk)
            if chunk_end > start and pos < end:
                out += chunk[max(0, start - pos): end - pos]
            pos = chunk_end
            if pos >= end:
                break
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
            requests.exceptions.Timeout) as exc:
        raise Transient(f"job output cut short: {exc.__class__.__name__}") from None
    return bytes(out)


def merged_options(spec_optional: Mapping[str, str], options: Mapping[str, str]) -> dict[str, str]:
    """SPEC defaults under the remote's options (config drops keys whose default is empty)."""
    return {**spec_optional, **{k: str(v) for k, v in options.items() if v is not None}}


def required(remote: str, type_name: str, opts: Mapping[str, str], keys: Collection[str]) -> None:
    missing = [k for k in keys if not str(opts.get(k, "")).strip()]
    if missing:
        raise ConfigError(f"[{remote}] type = {type_name} needs {', '.join(missing)}")
