"""Wangsu/CDNetworks Cloud Storage (WCS) native provider ("restV1": upload, management and download
domains), speaking the wire protocol of the vendor SDKs (shared/PROTOCOLS.md §3).

Wire map (verified against wcs-python3-sdk 5.0.36 and the vendor's Go/Java SDKs and docs):
- upload domain (`put_url`): `POST /file/upload` (multipart form: token, mimeType, file) for small objects;
  `POST /mkblk/<blockSize>/<blockIndex>`, `POST /bput/<ctx>/<offsetInBlock>`, `POST /mkfile/<size>`
  (body: last ctx of each block, comma-joined, in block order) for large ones. Upload token in the form
  or in `Authorization`; `UploadBatch` names the multipart session; `MimeType` header on mkfile (Go SDK).
- management domain (`mgr_url`): `GET /stat/<EncodedEntryURI>`, `GET /list?bucket=&marker=&limit=&prefix=&mode=`,
  `POST /delete|/move|/copy/...`, `GET /bucket/list`; signed with the management token.
- download domain (`get_url`, bound to one bucket in the console): `GET /<key>` with `Range`, unsigned
  (Java SDK `OperationManager.download`; docs "Download Files"). `{bucket}` in get_url is replaced by the
  bucket name, so one setting can serve several buckets when their domains follow a pattern. A mount
  without get_url is refused with what to set (WcsProvider.check): put_url and mgr_url serve no object
  bytes, so every read would fail. `get_url = none` mounts anyway (listings, writes, deletes) and reads
  raise NotSupported (EOPNOTSUPP). Private-bucket download signing: no restV1 scheme was found in vendor
  material (SDKs in Python, PHP, Go, Java build public URLs only; CDN anti-leech is a console setting of
  the download domain), so none is sent: SEMANTICS.md says what a private bucket needs. If the download
  domain sends no ETag, `if_match` is checked with a stat.
- multipart: a part is one block (a multiple of 4 MiB), sent as mkblk + bput chunks of `bput_size` with
  cumulative offsets; blocks are independent, so parts upload in parallel. WCS has no initiate/abort/list
  of uploads: the uploadBatch id is made up here, abort is a no-op (the service purges unmerged blocks).

Directories are `dir/` marker objects (the project convention, and what the vendor's S3-based wcsfs
makes). Note: the restV1 "Term Description" page says a key must not start or end with "/"; whether the
live restV1 upload refuses such keys is UNVERIFIED (the emulator accepts them).

User metadata: restV1 has none (the `x:` variables of an upload only feed returnBody/callbacks and are not
stored). The one free-form attribute the service stores, returns from stat *and* from list, and keeps on
copy/move is the object's mimeType, settable on both upload paths (`mimeType` form field, `MimeType` mkfile
header). storefs therefore stores `meta` as a MIME parameter:
    application/octet-stream; x-storefs-meta=<urlsafe-base64(compact JSON)>
Verified from vendor material: mimeType is settable and is returned by stat and list. NOT verified against
the live service: that it keeps a parameterised mimeType verbatim, and its length limit (we cap the value at
MAX_MIME_LEN). Replacing metadata (set_meta, copy with new meta) has no server-side operation, so it
re-uploads the object through this client (read from the download domain, upload again): cheap for small
files, a full transfer for large ones.

Errors map once onto storefs.errors (`map_error`): 401/403 → AccessDenied, 404/612/631 → NotFound,
614 → AlreadyExists, 429/503/509 → Throttled, 408/5xx → Transient (retried with backoff, then EIO),
701 (upload context invalid/expired) → the block is uploaded again, 400 → InvalidArgument. The numeric codes
other than the HTTP ones are Qiniu heritage: **UNVERIFIED** in WCS docs; HTTP statuses are mapped first.
Uploads set `overwrite: 1` in the put policy: the service default is "do not overwrite" (docs).
putTime is read in whatever unit it comes (docs say ms; their example is in 100 ns units).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ...errors import ConfigError
from ...store.features import Capabilities
from ...store.registry import ProviderSpec
from ...wire.retry import RetryPolicy
from ...wire.settings import HttpSettings, is_http_url
from ...wire.tuning import HTTP_TUNING, parse_http_tuning

MiB = 1024 * 1024
NO_GET_URL = "none"             # get_url = none: mount without reads, knowingly
BLOCK_UNIT = 4 * MiB            # block sizes must be multiples of 4 MiB or the ETag breaks (docs, SDK)

SPEC = ProviderSpec(
    type="wcs",
    required=("access_key", "secret_key", "put_url", "mgr_url"),
    optional={
        "get_url": "",               # download domain of the bucket ("{bucket}" is replaced by its name);
                                     # required to mount; "none" mounts without reads (EOPNOTSUPP)
        "ishttps": "false",          # scheme for hosts given without one (as the SDK's Config.ishttps)
        "bput_size": str(4 * MiB),   # chunk size inside a block (SDK Config.bput_size)
        "token_deadline": "3600",    # upload token lifetime in seconds (SDK Config.deadline)
        "upload_concurrency": "4",   # blocks in flight in upload_file()/metadata rewrites
        **HTTP_TUNING,
    },
    secrets=("secret_key",),
    doc=__doc__ or "",
)

CAPABILITIES = Capabilities(
    min_part_size=BLOCK_UNIT,
    max_part_size=256 * MiB,
    max_parts=10_000,
    single_put_max=16 * MiB,
    server_chosen_part_size=False,
    parts_in_order=False,           # blocks are independent; only the chunks inside one block chain
    # No server listing: a finished block's ctx stays valid for mkfile (the SDK's upload_id resume,
    # PROTOCOLS.md §3.3; unmerged blocks are purged after about a month), so the journal keeps them.
    resume="journal",
    server_side_copy=True,
    server_side_move=True,
    list_has_metadata=True,         # list items carry mimeType, where our metadata lives
    real_folders=False,
    list_page_size=1000,
)


@dataclasses.dataclass(frozen=True)
class WcsConfig:
    access_key: str
    secret_key: str = dataclasses.field(repr=False)
    put_url: str                    # upload domain, with scheme, no trailing slash
    mgr_url: str                    # management domain (a path prefix is kept and signed)
    get_url: str                    # download domain ("{bucket}" replaced per bucket), "" when not set
    reads_declined: bool            # get_url = none: mounted knowingly without reads
    bput_size: int
    token_deadline: int             # seconds
    upload_concurrency: int
    http: HttpSettings
    retry: RetryPolicy

    @classmethod
    def from_options(cls, remote: str, options: Mapping[str, str]) -> WcsConfig:
        missing = [k for k in SPEC.required if not str(options.get(k) or "").strip()]
        if missing:
            raise ConfigError(f"[{remote}] missing {', '.join(missing)} for type = wcs")
        opts = {**SPEC.optional, **{k: str(v) for k, v in options.items()}}
        https = opts["ishttps"].strip().lower() in ("1", "true", "yes", "on")
        no_reads = opts["get_url"].strip().lower() == NO_GET_URL
        urls = {name: _host_url(opts[name], https) if opts[name].strip() and not (name == "get_url" and no_reads)
                else "" for name in ("put_url", "mgr_url", "get_url")}
        for name, url in urls.items():
            if url and not is_http_url(url.replace("{bucket}", "bucket")):  # no host, a bad port: say so now
                raise ConfigError(f"[{remote}] {name} {opts[name].strip()!r} is not an http(s) URL")
        try:
            bput_size = int(opts["bput_size"])
            token_deadline = int(opts["token_deadline"])
            upload_concurrency = max(1, int(opts["upload_concurrency"]))
        except ValueError as exc:
            raise ConfigError(f"[{remote}] bad number in wcs options: {exc}") from None
        if bput_size < 64 * 1024:
            raise ConfigError(f"[{remote}] bput_size must be at least 64 KiB")
        settings, retry = parse_http_tuning(remote, opts)
        return cls(access_key=opts["access_key"].strip(), secret_key=opts["secret_key"].strip(), **urls,
                   reads_declined=no_reads,
                   bput_size=bput_size, token_deadline=token_deadline, upload_concurrency=upload_concurrency,
                   http=settings, retry=retry)


def _host_url(url: str, https: bool) -> str:
    """As the SDK's https_check: add a scheme when missing; drop a trailing slash."""
    url = url.strip()
    if not url.lower().startswith(("http://", "https://")):
        url = ("https://" if https else "http://") + url
    return url.rstrip("/")
