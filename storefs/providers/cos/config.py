"""COS v4 configuration: the keys a `type = cos` section takes (SPEC, with the user-facing doc) and
their parsing into one CosConfig, once, when the provider opens."""
from __future__ import annotations

import dataclasses
import re
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
    one_of=(("region", "hostname", "endpoint"),),
    optional={
        "region": "",            # sh, gz, tj, sgp (or any region short name, as the SDK's CosConfig(region))
        "hostname": "",          # the API host, as the SDK's CosConfig(hostname), e.g. gz.file.myqcloud.com
        "download_hostname": "",  # the download host suffix, as CosConfig(download_hostname): cosgz.myqcloud.com
        "endpoint": "",          # base URL the API requests connect to (an emulator, a proxy, or the API host)
        "download_endpoint": "",  # base URL downloads connect to (Host still names the bucket's download host)
        "download_host": "",     # older spelling of download_hostname
        "scheme": "https",       # for the API host
        "download_scheme": "https",  # for the download host (the SDK hard-codes http: storefs keeps https)
        "sign_expire": "300",    # seconds a multi-use signature lives
        "slice_size": str(3 * 1024 * 1024),
        "upload_concurrency": "4",  # slices in flight for put() of large bodies
        "list_page_size": str(LIST_NUM_MAX),
        **HTTP_TUNING,
    },
    secrets=("secret_key",),
    doc="""Tencent COS v4 (JSON API). Keys: appid, secret_id, secret_key, and where the service is: region
(sh, gz, tj, sgp), or hostname (the API host, e.g. gz.file.myqcloud.com), or endpoint (a base URL such as
https://gz.file.myqcloud.com, or http://127.0.0.1:9000 for an emulator serving both API and downloads).
As the SDK's CosConfig: the API host is <region>.file.myqcloud.com and downloads go to
<bucket>-<appid>.cos<region>.myqcloud.com; a hostname or endpoint of the form <region>.file.myqcloud.com
names the region too. download_hostname overrides the download host suffix; download_endpoint makes
downloads connect elsewhere (a proxy) with the Host header still naming the bucket's download host. An
endpoint that is no Tencent API host (an emulator, a proxy) serves downloads too unless download_hostname
or download_endpoint say otherwise. Both hosts are reached over https by default (scheme,
download_scheme).
Folders are real COS folders: mkdir creates one, rmdir deletes it; files may also sit under folders
that were never created, which listings still show.
Metadata (mtime, mode, uid, gid, symlink ...) is stored as a JSON object in the object's biz_attr, set
in the same request as the upload (folders keep theirs in the folder's biz_attr); x-cos-meta-* headers
written by other tools (cosfs, COS v5) are read too. A file storefs writes gets the Content-Type its
name suggests (Python's mimetypes), set with an update request after the upload when there is one.
COS v4 forbids ? * : | \\ < > " and whitespace-only path segments: storefs stores these characters as
full-width look-alikes (? as U+FF1F ...), spaces of such segments as U+2420, and quotes genuine
look-alikes with U+201B, so every name round-trips. Listings come back in the server's order of the
stored names, which differs from plain key order only for names with such characters.
Large files go up as 3 MiB slices in parallel (unless the server asks for serial upload); there is no
abort call in COS v4, so an abandoned upload session simply expires on the server.
Recursive listings walk the folder tree page by page (COS v4 has no recursive list).
No temporary credentials: the v4 signature has no session-token field (see SEMANTICS.md).""",
)

_REGIONS = {"sh": "sh", "shanghai": "sh", "gz": "gz", "guangzhou": "gz", "tj": "tj", "tianjing": "tj",
            "tianjin": "tj", "sgp": "sgp", "singapore": "sgp"}
# A Tencent COS v4 API host names its region: <region>.file.myqcloud.com (the SDK's region table).
_API_HOST = re.compile(r"^([a-z0-9-]+)\.file\.myqcloud\.com$")
_HOST_NAME = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


def api_host(region: str) -> str:
    """The SDK's API host of a region (`cos_config.py::CosRegionInfo`)."""
    return f"{region}.file.myqcloud.com"


def download_hostname(region: str) -> str:
    """The SDK's download host suffix of a region: cossh, cosgz, costj, cossgp, cos<region>."""
    return f"cos{region}.myqcloud.com"


def region_of_host(host: str) -> str:
    """The region a Tencent API host names (gz.file.myqcloud.com -> gz); "" for any other host."""
    match = _API_HOST.match(host.lower().split(":")[0])
    return _REGIONS.get(match.group(1), match.group(1)) if match else ""


@dataclasses.dataclass(frozen=True)
class CosConfig:
    creds: Credentials
    api_base: str                 # scheme://host[:port] API requests connect to (up to /files/v2)
    api_host: str                 # the Host header of API requests ("" = the host of api_base)
    download_base: str | None     # base URL downloads connect to when not the bucket host itself
    download_host: str            # "<bucket>-<appid>." + this is the download host
    download_scheme: str
    sign_expire: int
    slice_size: int
    upload_concurrency: int
    list_page_size: int
    http: HttpSettings
    retry: RetryPolicy

    def download_url(self, bucket: str) -> tuple[str, str]:
        """(the base URL a download of `bucket` connects to, the Host header it sends)."""
        host = f"{bucket}-{self.creds.appid}.{self.download_host}"
        return (self.download_base or f"{self.download_scheme}://{host}"), host

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
        hostname = _bare_host("hostname", opts["hostname"])
        dl_hostname = _bare_host("download_hostname", opts["download_hostname"] or opts["download_host"])
        if not region and not endpoint and not hostname:
            raise ConfigError("cos: give region (sh, gz, tj, sgp), hostname (gz.file.myqcloud.com) or endpoint")
        for name in ("endpoint", "download_endpoint"):
            value = opts[name].strip()
            if value and not value.lower().startswith(("http://", "https://")):
                raise ConfigError(f"cos: {name} must start with http:// or https://")
            if value and not is_http_url(value):  # no host, a bad port: say so now, not at a request
                raise ConfigError(f"cos: {name} {value!r} is not an http(s) URL (http[s]://HOST[:PORT])")
        for name in ("scheme", "download_scheme"):
            if opts[name].strip().lower() not in ("http", "https"):
                raise ConfigError(f"cos: {name} must be http or https, not {opts[name]!r}")
        endpoint_host = urlsplit(endpoint).netloc if endpoint else ""
        # The region the hosts name, as the SDK's table maps regions to hosts; they must agree.
        named = {name: region_of_host(host) for name, host in (("hostname", hostname), ("endpoint", endpoint_host))
                 if host and region_of_host(host)}
        for name, host_region in named.items():
            if region and host_region != region:
                raise ConfigError(f"cos: region {region!r} and {name} (region {host_region!r}) disagree: "
                                  f"drop one of them")
            region = region or host_region
        api_base = endpoint or f"{opts['scheme'].strip().lower()}://{hostname or api_host(region)}"
        # Hostname with an endpoint: connect to the endpoint, name the API host in the Host header.
        api_host_header = hostname if endpoint and hostname else ""
        download_endpoint = opts["download_endpoint"].strip().rstrip("/")
        if dl_hostname or region:
            download_host = dl_hostname or download_hostname(region)
            download_base = download_endpoint or None
        else:
            # An endpoint that names no region (an emulator, a proxy) serves downloads as well.
            download_host = endpoint_host
            download_base = download_endpoint or endpoint
        settings, retry = parse_http_tuning("cos", opts)
        try:
            slice_size = pick_slice(int(opts["slice_size"]))
            return cls(
                creds=Credentials(appid, opts["secret_id"].strip(), opts["secret_key"].strip()),
                api_base=api_base, api_host=api_host_header, download_base=download_base,
                download_host=download_host, download_scheme=opts["download_scheme"].strip().lower(),
                sign_expire=max(30, int(opts["sign_expire"])),
                slice_size=slice_size, upload_concurrency=max(1, int(opts["upload_concurrency"])),
                list_page_size=min(LIST_NUM_MAX, max(1, int(opts["list_page_size"]))),
                http=settings, retry=retry,
            )
        except ValueError as exc:
            raise ConfigError(f"cos: bad numeric option: {exc}") from None


def _bare_host(name: str, value: str) -> str:
    """A host name key (the SDK's hostname/download_hostname): host[:port], no scheme or path."""
    value = value.strip().rstrip("/")
    if value and not _HOST_NAME.match(value):
        raise ConfigError(f"cos: {name} is a host name such as gz.file.myqcloud.com (no scheme, no path), "
                          f"not {value!r}; a URL goes in endpoint / download_endpoint")
    return value.lower()


def pick_slice(wanted: int) -> int:
    """The smallest documented slice size >= wanted (capped at the 3 MiB maximum)."""
    for size in SLICE_SIZES:
        if size >= wanted:
            return size
    return SLICE_SIZES[-1]
