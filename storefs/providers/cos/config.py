"""COS v4 configuration: the keys a `type = cos` section takes (SPEC, with the user-facing doc) and
their parsing into one CosConfig, once, when the provider opens."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from urllib.parse import urlsplit

from ...errors import ConfigError
from ...store.registry import ProviderSpec
from ...wire.auth.cos import Credentials
from ...wire.retry import RetryPolicy
from ...wire.settings import HttpSettings, is_http_url
from ...wire.tuning import HTTP_TUNING, parse_http_tuning

SLICE_SIZES = (512 * 1024, 1024 * 1024, 2 * 1024 * 1024, 3 * 1024 * 1024)  # docs: valid slice sizes
SINGLE_UPLOAD_MAX = 8 * 1024 * 1024  # the SDK switches to slices at 8 MiB (its hard limit is 20 MiB)
LIST_NUM_MAX = 1000

SPEC = ProviderSpec(
    type="cos",
    required=("appid", "secret_id", "secret_key"),
    one_of=(("region", "endpoint"),),
    optional={
        "region": "",            # sh, gz, tj, sgp (or any region short name)
        "endpoint": "",          # base URL for API and downloads, e.g. http://127.0.0.1:9000
        "download_endpoint": "", # base URL for downloads only (default: endpoint, else the region's host)
        "download_host": "",     # host suffix after "<bucket>-<appid>." (default cos<region>.myqcloud.com)
        "scheme": "https",       # for the region's API host
        "download_scheme": "http",  # the SDK downloads over http only
        "sign_expire": "300",    # seconds a multi-use signature lives
        "slice_size": str(3 * 1024 * 1024),
        "upload_concurrency": "4",  # slices in flight for put() of large bodies
        "list_page_size": str(LIST_NUM_MAX),
        **HTTP_TUNING,
    },
    secrets=("secret_key",),
    doc="""Tencent COS v4 (JSON API). Keys: appid, secret_id, secret_key, and region (sh, gz, tj, sgp)
or endpoint (a base URL such as http://127.0.0.1:9000 serving both API and downloads).
Folders are real COS folders: mkdir creates one, rmdir deletes it; files may also sit under folders
that were never created, which listings still show.
Metadata (mtime, mode, uid, gid, symlink ...) is stored as a JSON object in the object's biz_attr, set
in the same request as the upload (folders keep theirs in the folder's biz_attr); x-cos-meta-* headers
written by other tools (cosfs, COS v5) are read too.
COS v4 forbids ? * : | \\ < > " and whitespace-only path segments: storefs stores these characters as
full-width look-alikes (? as U+FF1F ...), spaces of such segments as U+2420, and quotes genuine
look-alikes with U+201B, so every name round-trips. Listings come back in the server's order of the
stored names, which differs from plain key order only for names with such characters.
Large files go up as 3 MiB slices in parallel (unless the server asks for serial upload); there is no
abort call in COS v4, so an abandoned upload session simply expires on the server.
Recursive listings walk the folder tree page by page (COS v4 has no recursive list).""",
)

_REGIONS = {"sh": "sh", "shanghai": "sh", "gz": "gz", "guangzhou": "gz", "tj": "tj", "tianjing": "tj",
            "tianjin": "tj", "sgp": "sgp", "singapore": "sgp"}


@dataclasses.dataclass(frozen=True)
class CosConfig:
    creds: Credentials
    api_base: str                 # up to, not including, /files/v2
    download_base: str | None     # base URL when downloads go to a fixed endpoint, else None
    download_host: str            # "<bucket>-<appid>." + this is the download host
    download_scheme: str
    sign_expire: int
    slice_size: int
    upload_concurrency: int
    list_page_size: int
    http: HttpSettings
    retry: RetryPolicy

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> CosConfig:
        opts = {**SPEC.optional, **{k: v for k, v in options.items() if v is not None}}
        for key in SPEC.required:
            if not opts.get(key):
                raise ConfigError(f"cos: {key} is required")
        appid = opts["appid"].strip()
        if not appid.isdigit():
            raise ConfigError("cos: appid must be the numeric APPID (e.g. 1250000000)")
        region = _REGIONS.get(opts["region"].strip().lower(), opts["region"].strip().lower())
        endpoint = opts["endpoint"].strip().rstrip("/")
        if not region and not endpoint:
            raise ConfigError("cos: give region (sh, gz, tj, sgp) or endpoint")
        for name in ("endpoint", "download_endpoint"):
            value = opts[name].strip()
            if value and not value.lower().startswith(("http://", "https://")):
                raise ConfigError(f"cos: {name} must start with http:// or https://")
            if value and not is_http_url(value):  # no host, a bad port: say so now, not at a request
                raise ConfigError(f"cos: {name} {value!r} is not an http(s) URL (http[s]://HOST[:PORT])")
        api_base = endpoint or f"{opts['scheme']}://{region}.file.myqcloud.com"
        download_base = opts["download_endpoint"].strip().rstrip("/") or endpoint or None
        download_host = opts["download_host"].strip() or (
            f"cos{region}.myqcloud.com" if region else urlsplit(endpoint).netloc)
        settings, retry = parse_http_tuning("cos", opts)
        try:
            slice_size = pick_slice(int(opts["slice_size"]))
            return cls(
                creds=Credentials(appid, opts["secret_id"].strip(), opts["secret_key"].strip()),
                api_base=api_base, download_base=download_base, download_host=download_host,
                download_scheme=opts["download_scheme"], sign_expire=max(30, int(opts["sign_expire"])),
                slice_size=slice_size, upload_concurrency=max(1, int(opts["upload_concurrency"])),
                list_page_size=min(LIST_NUM_MAX, max(1, int(opts["list_page_size"]))),
                http=settings, retry=retry,
            )
        except ValueError as exc:
            raise ConfigError(f"cos: bad numeric option: {exc}") from None


def pick_slice(wanted: int) -> int:
    """The smallest documented slice size >= wanted (capped at the 3 MiB maximum)."""
    for size in SLICE_SIZES:
        if size >= wanted:
            return size
    return SLICE_SIZES[-1]
