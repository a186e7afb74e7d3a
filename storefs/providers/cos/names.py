"""COS v4 names and metadata: storefs keys as legal COS v4 paths and back, and user metadata as the
JSON object in `biz_attr` (plus the x-cos-meta-* headers other tools write), and the Content-Type a
name suggests."""
from __future__ import annotations

import json
import mimetypes
from collections.abc import Mapping

from ...errors import InvalidArgument

# Name encoding: COS v4 path rules (qcloud_cos/cos_params_check.py::check_cos_path_valid)

_FORBIDDEN = '?*:|\\<>"'
_TO_LOOKALIKE = {c: chr(ord(c) + 0xFEE0) for c in _FORBIDDEN}  # full-width forms, U+FF01..U+FF5E
_WHITESPACE = " \t\n\r\f\v"  # `\s` of the SDK's py2 byte-string regex
_WS_PICTURE = {" ": "\u2420", **{c: chr(0x2400 + ord(c)) for c in "\t\n\r\f\v"}}
_QUOTE = "\u201b"
_FROM_LOOKALIKE = {v: k for k, v in {**_TO_LOOKALIKE, **_WS_PICTURE}.items()}
_RESERVED = set(_FROM_LOOKALIKE) | {_QUOTE}


def encode_key(key: str) -> str:
    """A storefs key as a COS v4 path (without the leading '/'). Reversible with `decode_name`."""
    segments = key.split("/")
    out: list[str] = []
    for i, segment in enumerate(segments):
        followed_by_slash = i < len(segments) - 1
        if followed_by_slash and segment == "":
            raise InvalidArgument(f"empty path segment in {key!r}: COS v4 cannot store it")
        ws_only = followed_by_slash and all(c in _WHITESPACE for c in segment)
        chars = []
        for c in segment:
            if c in _RESERVED:
                chars.append(_QUOTE + c)
            elif c in _TO_LOOKALIKE:
                chars.append(_TO_LOOKALIKE[c])
            elif ws_only:
                chars.append(_WS_PICTURE[c])
            else:
                chars.append(c)
        out.append("".join(chars))
    return "/".join(out)


def decode_name(name: str) -> str:
    """The inverse of `encode_key`, for names coming back from the server."""
    if not any(c in _RESERVED for c in name):
        return name
    out: list[str] = []
    it = iter(name)
    for c in it:
        if c == _QUOTE:
            out.append(next(it, ""))
        else:
            out.append(_FROM_LOOKALIKE.get(c, c))
    return "".join(out)


# ----------------------------------------------------------------------------------------------
# Metadata in biz_attr


def meta_to_biz_attr(meta: Mapping[str, str]) -> str:
    if not meta:
        return ""
    return json.dumps({str(k).lower(): str(v) for k, v in meta.items()}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)


def meta_from_wire(biz_attr: object, custom_headers: object) -> dict[str, str]:
    """User metadata from a stat reply: x-cos-meta-* headers, overlaid by our JSON in biz_attr."""
    meta: dict[str, str] = {}
    if isinstance(custom_headers, dict):
        for name, value in custom_headers.items():
            lname = str(name).lower()
            if lname.startswith("x-cos-meta-") and len(lname) > len("x-cos-meta-"):
                meta[lname[len("x-cos-meta-"):]] = str(value)
    if isinstance(biz_attr, str) and biz_attr:
        try:
            parsed = json.loads(biz_attr)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and all(isinstance(v, str) for v in parsed.values()):
            meta.update({str(k).lower(): v for k, v in parsed.items()})
        else:
            meta["biz_attr"] = biz_attr  # someone else's free text: keep it visible, untouched
    return meta



def cos_path(key: str) -> str:
    """The COS v4 path of a storefs key: '/' and the encoded key."""
    if key.startswith("/"):
        raise InvalidArgument(f"key {key!r} starts with '/'")
    return "/" + encode_key(key)


def content_type_of(key: str) -> str | None:
    """The Content-Type a file's name suggests (Python's mimetypes, by extension; no content sniffing),
    None when the name says nothing. `.gz` and the like give their own type, not the wrapped one's."""
    kind, encoding = mimetypes.guess_type(key.rsplit("/", 1)[-1], strict=False)
    if encoding == "gzip":
        return "application/gzip"
    if encoding is not None:
        return None  # compressed with something mimetypes names only as an encoding
    return kind
