"""What S3 headers say about an object: user metadata, dates, and the ObjectInfo of a HEAD.

User metadata travels in `x-amz-meta-<name>` headers. Header values must be ASCII, so a value that is
not printable ASCII (or that HTTP would alter: leading/trailing blanks, or one that itself looks like an
encoded word) is sent as an RFC 2047 encoded word, `=?UTF-8?B?<base64 of the UTF-8 bytes>?=`, the form
AWS itself uses for non-ASCII metadata. Reading decodes RFC 2047 B and Q words, and recovers raw UTF-8
that another client put in a header. Names must be HTTP tokens and are lower-cased (S3 does the same).

Archive storage classes: stat() keeps the `x-amz-restore` header in `meta["x-amz-restore"]`.
"""
from __future__ import annotations

import base64
import binascii
import calendar
import email.utils
import quopri
import re
from typing import Mapping

from ...errors import InvalidArgument
from ...store.contract import ObjectInfo
from ...wire.answer import AnswerHeaders, strip_etag
from .xml import parse_int

_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_ENCODED_WORD_RE = re.compile(r"^=\?([A-Za-z0-9_.:-]+)\?([BbQq])\?([^?]*)\?=$")
META_PREFIX = "x-amz-meta-"
RESTORE = "x-amz-restore"


def encode_meta_value(value: str) -> str:
    """A header-safe form of a metadata value (see the module docstring)."""
    if (value.isascii() and value.isprintable() and value == value.strip(" \t")
            and not value.startswith("=?")):
        return value
    return "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8", "surrogatepass")).decode("ascii") + "?="


def decode_meta_value(raw: str) -> str:
    """Inverse of encode_meta_value(); also RFC 2047 Q words and raw UTF-8 read as Latin-1."""
    match = _ENCODED_WORD_RE.match(raw)
    if match:
        charset, kind, text = match.groups()
        try:
            if kind in "Bb":
                data = base64.b64decode(text, validate=True)
            else:
                data = quopri.decodestring(text.replace("_", " ").encode("ascii"), header=True)
            return data.decode(charset, "surrogatepass")
        except (binascii.Error, LookupError, UnicodeError, ValueError):
            return raw
    if not raw.isascii():
        # http.client decodes header bytes as Latin-1; another client may have sent raw UTF-8.
        try:
            return raw.encode("latin-1").decode("utf-8")
        except UnicodeError:
            return raw
    return raw


def meta_headers(meta: Mapping[str, str]) -> dict[str, str]:
    """The x-amz-meta-* headers of user metadata; InvalidArgument for a name HTTP cannot carry."""
    headers: dict[str, str] = {}
    for name, value in meta.items():
        lname = name.lower()
        if not _TOKEN_RE.match(lname):
            raise InvalidArgument(f"metadata name {name!r} cannot be sent as an HTTP header")
        headers[f"{META_PREFIX}{lname}"] = encode_meta_value(str(value))
    return headers


def meta_from_headers(headers: AnswerHeaders) -> dict[str, str]:
    """User metadata from an answer's headers (whose names AnswerHeaders keeps lower-cased)."""
    return {name[len(META_PREFIX):]: decode_meta_value(value)
            for name, value in headers.items() if name.startswith(META_PREFIX)}


def user_meta(meta: Mapping[str, str]) -> dict[str, str]:
    """stat() metadata without the server-state entries it carries (x-amz-restore)."""
    return {k: v for k, v in meta.items() if k != RESTORE}


_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}


def parse_http_date(text: str | None) -> float | None:
    """An HTTP date (Date, Last-Modified) as epoch seconds; None when absent or not a date."""
    if not text:
        return None
    parts = text.split()
    if len(parts) == 6 and parts[5] == "GMT" and parts[2] in _MONTHS:
        # IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), what servers send: parsed directly, as the
        # email package takes several times longer (a Last-Modified per `ls -l` entry).
        try:
            day, year = int(parts[1]), int(parts[3])
            hour, minute, second = (int(n) for n in parts[4].split(":"))
            if 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61:
                return float(calendar.timegm((year, _MONTHS[parts[2]], day, hour, minute, second)))
        except ValueError:
            pass
    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def info_from_head(key: str, headers: AnswerHeaders, what: str) -> ObjectInfo:
    """The ObjectInfo a HEAD of `key` answered with."""
    meta = meta_from_headers(headers)
    if RESTORE in headers:
        meta[RESTORE] = headers[RESTORE]
    return ObjectInfo(key=key, size=parse_int(headers.get("Content-Length", "0"), what),
                      etag=strip_etag(headers.get("ETag")),
                      mtime=parse_http_date(headers.get("Last-Modified")) or 0.0,
                      meta=meta, storage_class=headers.get("x-amz-storage-class") or "STANDARD")
