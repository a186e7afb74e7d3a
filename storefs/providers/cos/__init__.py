"""Tencent COS v4 (the deprecated JSON API with real folders) as a storefs bucket provider.

Wire facts: /work/shared/PROTOCOLS.md §2 and tencentyun/cos-python-sdk-v4 (`qcloud_cos/cos_op.py`).
The provider is spread over modules of one concept each:
- config.py:  the section's keys (SPEC, the user-facing doc) and CosConfig.
- wire.py:    requests, signatures, the error decoder and the parsing of replies (CosApi).
- names.py:   keys as COS v4 paths, metadata in biz_attr.
- listing.py: folder listings and the recursive walk.
- store.py:   the ObjectStore of one bucket.

Mapping onto the ObjectStore contract (see SPEC.doc for the user-facing version):
- A key ending in "/" is a real COS folder: put("d/") creates it (op=create), stat/list/delete work on it.
  Files may live under folders that were never created ("virtual" folders): listings still show them.
- User metadata is a JSON object in `biz_attr`, sent with the upload itself (single upload and
  upload_slice_init), so data and metadata land in one request. Stat also reads `custom_headers`
  `x-cos-meta-*` (what cosfs/COS v5 write), with `biz_attr` winning on conflicts.
- COS v4 forbids `? * : | \\ < > "` and whitespace-only path segments: such characters are stored as
  look-alikes (rclone's encoder convention) and turned back on the way out.
- Recursive listing (delimiter "") walks folders depth-first, one page per request; the walk state rides
  in the continuation token.
"""
from __future__ import annotations

from collections.abc import Mapping

from ...errors import InvalidArgument, NotSupported
from .config import SPEC, CosConfig
from .store import CosStore, SerialGates
from .wire import CosApi

__all__ = ["SPEC", "CosProvider", "CosStore", "open_provider"]


class CosProvider:
    """One COS v4 account (appid + key pair)."""

    def __init__(self, remote: str, config: CosConfig) -> None:
        self.remote = remote
        self.config = config
        self.api = CosApi(remote, config)
        self.gates = SerialGates()

    def __repr__(self) -> str:
        return f"CosProvider({self.remote!r}, appid={self.config.creds.appid})"

    def check(self, bucket: str | None) -> None:
        if bucket is None:
            raise NotSupported("COS v4 has no account-wide request: name a bucket to check")
        self.bucket(bucket).list("", limit=1)

    def list_buckets(self) -> list[str]:
        raise NotSupported("COS v4 cannot list buckets")

    def bucket(self, name: str) -> CosStore:
        if not name or "/" in name:
            raise InvalidArgument(f"bad bucket name {name!r}")
        return CosStore(self.api, self.gates, name)

    def close(self) -> None:
        self.api.close()


def open_provider(remote: str, options: Mapping[str, str]) -> CosProvider:
    return CosProvider(remote, CosConfig.from_options(options))
