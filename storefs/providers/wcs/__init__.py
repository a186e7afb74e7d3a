"""Wangsu/CDNetworks Cloud Storage (WCS) native provider ("restV1"), speaking the wire protocol of the
vendor SDKs (shared/PROTOCOLS.md §3). What it does and how it maps onto the contract is the type's doc,
at the top of config.py (shown to users as SPEC.doc). The modules:
- config.py: the doc, the section's keys (SPEC), the capabilities and WcsConfig.
- wire.py:   requests of the three domains, their tokens, the error decoder (WcsApi).
- meta.py:   metadata in the mimeType, putTime units.
- upload.py: form uploads and block uploads.
- bucket.py: the ObjectStore of one bucket.

Thread-safety: one WireClient (pooled connections) shared by all threads; no other mutable state
after __init__.
"""
from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from ...errors import ConfigError, ProtocolError
from .bucket import WcsBucket
from .config import SPEC, WcsConfig
from .wire import WcsApi

__all__ = ["SPEC", "WcsBucket", "WcsProvider", "open_provider"]


class WcsProvider:
    """One WCS account: AK/SK plus its upload, management and download domains."""

    def __init__(self, remote: str, options: Mapping[str, str]) -> None:
        self.remote = remote
        self.api = WcsApi(remote, WcsConfig.from_options(remote, options))

    def __repr__(self) -> str:
        return f"WcsProvider(remote={self.remote!r}, mgr_url={self.api.config.mgr_url!r})"

    def check(self, bucket: str | None) -> None:
        if not self.api.config.get_url and not self.api.config.reads_declined:
            # Refused now, at mount time: otherwise every read fails later with EOPNOTSUPP.
            self.close()
            raise ConfigError(
                f"[{self.remote}] get_url is not set: WCS serves file contents only from the bucket's download "
                f"domain (console: bucket -> domain management), so nothing could be read. Set get_url = "
                f"https://<download domain> ({{bucket}} in it is replaced by the bucket name), or "
                f"get_url = none to mount without reads (every read then fails with EOPNOTSUPP)")
        if bucket:
            self.api.mgr("GET", f"/list?bucket={quote(bucket, safe='')}&limit=1", what=f"bucket {bucket}")
        else:
            self.list_buckets()

    def list_buckets(self) -> list[str]:
        reply = self.api.mgr("GET", "/bucket/list", what="list buckets")
        buckets = reply.get("buckets")
        if not isinstance(buckets, list):
            raise ProtocolError("list buckets: no 'buckets' array", detail=str(reply)[:200])
        return [str(b["name"]) for b in buckets if isinstance(b, dict) and "name" in b]

    def bucket(self, name: str) -> WcsBucket:
        return WcsBucket(self.api, name)

    def close(self) -> None:
        self.api.close()


def open_provider(remote: str, options: Mapping[str, str]) -> WcsProvider:
    return WcsProvider(remote, options)
