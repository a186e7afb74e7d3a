"""The JSON documents of the vault REST API (CAS and Glacier share them), parsed into the vault
contract's types. Every malformed answer becomes ProtocolError; nothing here does I/O."""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ...errors import ProtocolError
from ..base import (
    ArchiveInfo,
    ArchivePart,
    ArchiveUpload,
    JobAction,
    JobInfo,
    JobStatus,
    Page,
    Tier,
    VaultInfo,
    parse_iso8601,
    short_id,
)

T = TypeVar("T")
MAX_PAGES = 10_000      # bound on every paging loop
# A byte range in a JSON field (RetrievalByteRange, RangeInBytes): "0-1048575", both ends inclusive.
_BYTE_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def parse_json(body: bytes, what: str) -> dict:
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(f"{what}: the server's answer is not JSON",
                            detail=body[:200].decode("utf-8", "replace")) from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"{what}: the server's answer is not a JSON object")
    return doc


def _given(doc: Mapping, key: str) -> Any:
    """The value of `key`, None where it is missing or empty."""
    value = doc.get(key)
    return None if value is None or value == "" else value


def _opt_str(doc: Mapping, key: str) -> str | None:
    value = _given(doc, key)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f"{key} is {type(value).__name__}, not a string")
    return value


def _opt_int(doc: Mapping, key: str) -> int | None:
    value = _given(doc, key)
    if value is None:
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
    try:
        return None if text is None else parse_iso8601(text)
    except ValueError as exc:
        raise ProtocolError(f"{key}: {exc}") from None


def parse_byte_range(text: str | None) -> tuple[int, int] | None:
    """`"0-1048575"` (inclusive) -> (0, 1048576). None for a missing range."""
    if not text:
        return None
    match = _BYTE_RANGE.match(text)
    if not match or int(match.group(2)) < int(match.group(1)):
        raise ProtocolError(f"byte range {text[:40]!r} is malformed")
    return int(match.group(1)), int(match.group(2)) + 1


def format_byte_range(start: int, end: int) -> str:
    """(0, 1048576) -> `"0-1048575"`, as RetrievalByteRange wants it."""
    return f"{start}-{end - 1}"


def parse_page(body: bytes, field: str, parse: Callable[[Any], T], what: str) -> Page:
    """One page of a listing: the entries of `field` (a JSON list), each parsed, and the Marker."""
    doc = parse_json(body, what)
    entries = doc.get(field)
    if not isinstance(entries, list):
        raise ProtocolError(f"{what}: the answer has no {field}")
    try:
        return Page([parse(entry) for entry in entries], _marker(doc))
    except ProtocolError as exc:
        raise ProtocolError(f"{what}: {exc}") from None


def all_pages(fetch: Callable[[str | None], Page], what: str) -> list:
    """Every item of a paged listing, page by page until the marker runs out (or repeats)."""
    items: list = []
    marker: str | None = None
    for _ in range(MAX_PAGES):
        page = fetch(marker)
        items.extend(page.items)
        if not page.marker or page.marker == marker:
            return items
        marker = page.marker
    raise ProtocolError(f"{what}: more than {MAX_PAGES} pages")


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
            byte_range=parse_byte_range(_opt_str(doc, "RetrievalByteRange")),
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
    doc = parse_json(body, what)
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


def parse_vault(doc: Mapping, resource_field: str) -> VaultInfo:
    if not isinstance(doc, Mapping):
        raise ProtocolError("a vault entry is not a JSON object")
    name = _opt_str(doc, "VaultName")
    if not name:
        raise ProtocolError("vault without VaultName")
    return VaultInfo(name=name, creation_date=_opt_date(doc, "CreationDate"),
                     last_inventory_date=_opt_date(doc, "LastInventoryDate"),
                     archive_count=_opt_int(doc, "NumberOfArchives"), size=_opt_int(doc, "SizeInBytes"),
                     resource_name=_opt_str(doc, resource_field))


def parse_upload(doc: Mapping) -> ArchiveUpload:
    if not isinstance(doc, Mapping):
        raise ProtocolError("an upload entry is not a JSON object")
    upload_id = _opt_str(doc, "MultipartUploadId")
    part_size = _opt_int(doc, "PartSizeInBytes")
    if not upload_id or part_size is None:
        raise ProtocolError("upload entry without MultipartUploadId or PartSizeInBytes")
    return ArchiveUpload(upload_id, part_size, _opt_str(doc, "ArchiveDescription") or "",
                         _opt_date(doc, "CreationDate"))


def parse_part(doc: Mapping) -> ArchivePart:
    if not isinstance(doc, dict):
        raise ProtocolError("a part entry is not a JSON object")
    span = parse_byte_range(_opt_str(doc, "RangeInBytes"))
    tree = _opt_str(doc, "SHA256TreeHash")
    if span is None or not tree:
        raise ProtocolError("part without RangeInBytes or SHA256TreeHash")
    return ArchivePart(span[0], span[1], tree.lower())


def _marker(doc: Mapping) -> str | None:
    marker = _given(doc, "Marker")
    if marker is not None and not isinstance(marker, str):
        raise ProtocolError("Marker is not a string")
    return marker
