"""WCS object metadata and times: user metadata as a parameter of the object's mimeType (the one
free-form attribute restV1 stores, returns from stat and list, and keeps on copy/move; see config.py),
and putTime in whatever unit it comes."""
from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping

from ...errors import InvalidArgument
from ...wire.auth.wcs import urlsafe_b64decode

log = logging.getLogger(__name__)

DEFAULT_MIME = "application/octet-stream"
META_PARAM = "x-storefs-meta"
MAX_MIME_LEN = 8192             # our own cap; the service's limit is unknown


def encode_meta_mime(meta: Mapping[str, str], base: str = DEFAULT_MIME) -> str:
    """`base; x-storefs-meta=<b64 json>` (just `base` when meta is empty)."""
    base = (base or DEFAULT_MIME).split(";", 1)[0].strip() or DEFAULT_MIME
    if not meta:
        return base
    payload = json.dumps({str(k): str(v) for k, v in meta.items()}, separators=(",", ":"), sort_keys=True)
    value = base64.urlsafe_b64encode(payload.encode("utf-8")).decode("ascii").rstrip("=")
    mime = f"{base}; {META_PARAM}={value}"
    if len(mime) > MAX_MIME_LEN:
        raise InvalidArgument(f"metadata too large for WCS ({len(mime)} > {MAX_MIME_LEN} bytes encoded)")
    return mime


def decode_meta_mime(mime: str | None) -> tuple[str, dict[str, str]]:
    """(base type, meta). An object written by another tool simply has no meta."""
    if not mime:
        return DEFAULT_MIME, {}
    base, _, params = mime.partition(";")
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() != META_PARAM:
            continue
        try:
            decoded = json.loads(urlsafe_b64decode(value.strip().strip('"')))
        except (ValueError, UnicodeDecodeError):
            log.debug("ignoring undecodable %s parameter", META_PARAM)
            break
        if isinstance(decoded, dict):
            return base.strip() or DEFAULT_MIME, {str(k): str(v) for k, v in decoded.items()}
        break
    return base.strip() or DEFAULT_MIME, {}


def parse_put_time(value: object) -> float:
    """putTime → epoch seconds. The docs call it milliseconds, but their example (13603956734587420 =
    2013-02-09 15:41:13 +08:00) is in 100 ns units (Qiniu heritage): accept every plausible unit."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    if number >= 1e16:
        return number / 1e7
    if number >= 1e14:
        return number / 1e6
    if number >= 1e11:
        return number / 1e3
    return number
