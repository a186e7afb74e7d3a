"""S3's XML: the documents it answers with, parsed (pure functions, unit-tested), and the few it is
sent. Malformed or unexpected documents are ProtocolError.

Listings ask for `encoding-type=url`, so keys holding characters XML 1.0 cannot carry still
round-trip; keys are decoded only when the answer says `<EncodingType>url</EncodingType>` (servers
that ignore the parameter send raw keys).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Sequence
from urllib.parse import unquote_plus

from ... import isotime
from ...errors import ProtocolError
from ...store.contract import ListPage, MultipartUpload, ObjectInfo, UploadedPart
from ...wire.answer import strip_etag


def parse_xml(body: bytes, what: str) -> ET.Element:
    """The root element with namespaces removed. Malformed XML is a ProtocolError."""
    try:
        root = ET.fromstring(body)
    except (ET.ParseError, ValueError) as exc:
        raise ProtocolError(f"{what}: malformed XML from server ({exc})",
                            detail=body[:200].decode("utf-8", "replace")) from None
    for element in root.iter():
        if isinstance(element.tag, str) and "}" in element.tag:
            element.tag = element.tag.rsplit("}", 1)[1]
    return root


def child_text(element: ET.Element, tag: str, default: str | None = None) -> str | None:
    found = element.find(tag)
    if found is None:
        return default
    return found.text or ""


def required_text(element: ET.Element, tag: str, what: str) -> str:
    value = child_text(element, tag)
    if value is None:
        raise ProtocolError(f"{what}: <{tag}> missing from the server's answer")
    return value


def parse_int(text: str | None, what: str) -> int:
    try:
        return int(text or "")
    except ValueError:
        raise ProtocolError(f"{what}: {text!r} is not a number") from None


def parse_iso8601(text: str) -> float:
    """`2009-10-12T17:50:30.000Z` → epoch seconds. ProtocolError when it is not a timestamp."""
    try:
        return isotime.parse_iso8601(text)
    except ValueError:
        raise ProtocolError(f"bad timestamp {text[:40]!r} in S3 answer") from None


def _root(body: bytes, tag: str, what: str) -> ET.Element:
    root = parse_xml(body, what)
    if root.tag != tag:
        raise ProtocolError(f"{what}: unexpected answer <{root.tag}>")
    return root


def _url_encoded(root: ET.Element) -> bool:
    return (child_text(root, "EncodingType", "") or "").lower() == "url"


def _truncated(root: ET.Element) -> bool:
    return (child_text(root, "IsTruncated", "false") or "").strip().lower() == "true"


def parse_list_v2(body: bytes, what: str = "list") -> ListPage:
    """A ListObjectsV2 page."""
    root = _root(body, "ListBucketResult", what)
    encoded = _url_encoded(root)

    def key_of(text: str) -> str:
        return unquote_plus(text) if encoded else text

    objects: list[ObjectInfo] = []
    for entry in root.findall("Contents"):
        key = key_of(required_text(entry, "Key", what))
        modified = child_text(entry, "LastModified")
        objects.append(ObjectInfo(key=key, size=parse_int(child_text(entry, "Size", "0"), what),
                                  etag=strip_etag(child_text(entry, "ETag", "")),
                                  mtime=parse_iso8601(modified) if modified else 0.0,
                                  storage_class=child_text(entry, "StorageClass") or None,
                                  meta_complete=False))
    prefixes = [key_of(required_text(p, "Prefix", what)) for p in root.findall("CommonPrefixes")]
    truncated = _truncated(root)
    token = child_text(root, "NextContinuationToken") if truncated else None
    if truncated and not token:
        raise ProtocolError(f"{what}: truncated listing without a NextContinuationToken")
    return ListPage(objects=objects, prefixes=prefixes, next_token=token or None)


def parse_list_uploads(body: bytes, part_size: int) -> tuple[list[MultipartUpload], list[tuple[str, str]]]:
    """(uploads on this page, the marker params of the next page or [])."""
    what = "list multipart uploads"
    root = _root(body, "ListMultipartUploadsResult", what)
    encoded = _url_encoded(root)
    uploads = []
    for entry in root.findall("Upload"):
        key = required_text(entry, "Key", what)
        initiated = child_text(entry, "Initiated")
        uploads.append(MultipartUpload(key=unquote_plus(key) if encoded else key,
                                       upload_id=required_text(entry, "UploadId", what), part_size=part_size,
                                       started=parse_iso8601(initiated) if initiated else None))
    if not _truncated(root):
        return uploads, []
    key_marker = child_text(root, "NextKeyMarker") or ""
    id_marker = child_text(root, "NextUploadIdMarker") or ""
    if not key_marker and not id_marker:
        raise ProtocolError(f"{what}: truncated listing without next markers")
    if encoded:
        key_marker = unquote_plus(key_marker)
    return uploads, [("key-marker", key_marker), ("upload-id-marker", id_marker)]


def parse_list_parts(body: bytes, what: str) -> tuple[list[UploadedPart], str | None]:
    """(the parts on one ListParts page, the part-number marker of the next page or None)."""
    root = _root(body, "ListPartsResult", what)
    parts = [UploadedPart(number=parse_int(required_text(entry, "PartNumber", what), what),
                          etag=strip_etag(required_text(entry, "ETag", what)),
                          size=parse_int(required_text(entry, "Size", what), what))
             for entry in root.findall("Part")]
    if not _truncated(root):
        return parts, None
    marker = child_text(root, "NextPartNumberMarker")
    if not marker:
        raise ProtocolError(f"{what}: truncated listing without NextPartNumberMarker")
    return parts, marker


def parse_list_buckets(body: bytes) -> list[str]:
    """The bucket names of a ListBuckets answer, sorted."""
    what = "list buckets"
    buckets = _root(body, "ListAllMyBucketsResult", what).find("Buckets")
    return sorted([] if buckets is None else [required_text(b, "Name", what) for b in buckets])


def parse_upload_id(body: bytes, what: str) -> str:
    """The UploadId of a CreateMultipartUpload answer."""
    upload_id = required_text(parse_xml(body, what), "UploadId", what)
    if not upload_id:
        raise ProtocolError(f"{what}: empty UploadId")
    return upload_id


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def complete_multipart_xml(parts: Sequence[UploadedPart]) -> bytes:
    """The CompleteMultipartUpload document of `parts` (already in part-number order)."""
    xml = "".join(f"<Part><PartNumber>{p.number}</PartNumber><ETag>\"{_escape(p.etag)}\"</ETag></Part>"
                  for p in parts)
    return f"<CompleteMultipartUpload>{xml}</CompleteMultipartUpload>".encode("utf-8")


def restore_xml(days: int, tier: str) -> bytes:
    """The RestoreObject document: a readable copy for `days` days, retrieved at `tier`."""
    return (f"<RestoreRequest><Days>{int(days)}</Days><GlacierJobParameters><Tier>{tier}</Tier>"
            f"</GlacierJobParameters></RestoreRequest>").encode("ascii")
