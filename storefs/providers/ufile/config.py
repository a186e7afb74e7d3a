"""What a `ufile` remote says in its section: the SPEC of its options and their parsing, once per
provider (never re-read per request)."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ...errors import ConfigError
from ...store.registry import ProviderSpec
from ...wire.retry import RetryPolicy
from ...wire.settings import HttpSettings, is_http_url
from ...wire.tuning import HTTP_TUNING, parse_http_tuning

SPEC = ProviderSpec(
    type="ufile",
    required=("public_key", "private_key"),
    optional={
        "upload_suffix": "",                     # <bucket><upload_suffix> is the file API host (default
                                                 # DEFAULT_SUFFIX, applied after the SDK spelling is read)
        "download_suffix": "",                   # <bucket><download_suffix> serves reads (a CDN); default: upload_suffix
        "uploadsuffix": "",                      # the same keys as the SDKs' config.set_default() spells them
        "downloadsuffix": "",
        "endpoint": "",                          # connect every request here (http://host:port); Host unchanged
        "bucket_host": "api.ucloud.cn",          # bucket-management API host (list_buckets)
        "project_id": "",                        # ProjectId for the bucket API (sub-accounts need it)
        "verify_upload_md5": "true",             # send Content-MD5 (hex, as the SDKs do) with bodies
        "expires": "3600",                       # lifetime of signed download URLs (s): room for clock skew
        **HTTP_TUNING,
        "pool_size": "32",
        "upload_concurrency": "8",               # parallel parts in UfileStore.upload()
    },
    secrets=("private_key",),
    doc=("UCloud UFile / US3 native API. public_key/private_key are the API key pair (or a US3 token's "
         "TOKEN_... key pair: UFile's temporary credentials); upload_suffix is the region's host suffix, "
         "e.g. .cn-bj.ufileos.com, download_suffix the host suffix reads go to (a CDN suffix such as "
         ".ufile.ucloud.com.cn or .uvideo.ucloud.com.cn; default: upload_suffix). uploadsuffix / "
         "downloadsuffix are the same keys as the SDKs' config.set_default() names them. endpoint "
         "optionally overrides where every connection goes (proxy, emulator, internal address) while the "
         "Host header still names <bucket><suffix> (or bucket_host for the bucket API). User metadata is "
         "stored in X-Ufile-Meta-* headers (names limited to letters, digits and '-'). No server-side move. "
         "ARCHIVE-class files are restored on open (PUT ?restore), as S3's archive classes are."),
)


DEFAULT_SUFFIX = ".cn-bj.ufileos.com"  # the SDKs' default (Beijing)


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _one_of(options: Mapping[str, str], name: str, alias: str) -> str:
    """A key given under either of its two spellings (storefs's, the SDK's); both must agree."""
    values = {str(options.get(key) or "").strip() for key in (name, alias)} - {""}
    if len(values) > 1:
        raise ConfigError(f"ufile: {name} and {alias} are the same key with different values: keep one")
    return values.pop() if values else ""


def _suffix(value: str) -> str:
    value = value.strip()
    return value if not value or value.startswith(".") else "." + value


@dataclasses.dataclass(frozen=True)
class UfileConfig:
    """Parsed once per provider; never re-read per request."""

    public_key: str
    private_key: str = dataclasses.field(repr=False)
    upload_suffix: str = ".cn-bj.ufileos.com"
    download_suffix: str = ".cn-bj.ufileos.com"
    endpoint: str = ""
    bucket_host: str = "api.ucloud.cn"
    project_id: str = ""
    verify_upload_md5: bool = True
    expires: int = 3600
    upload_concurrency: int = 8
    http_settings: HttpSettings = dataclasses.field(default_factory=HttpSettings)
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> UfileConfig:
        def opt(name: str) -> str:
            value = options.get(name)
            return SPEC.optional[name] if value is None or value == "" else str(value)

        for name in SPEC.required:
            if not str(options.get(name) or "").strip():
                raise ConfigError(f"ufile: {name} is required")
        upload_suffix = _suffix(_one_of(options, "upload_suffix", "uploadsuffix") or DEFAULT_SUFFIX)
        download_suffix = _suffix(_one_of(options, "download_suffix", "downloadsuffix"))
        endpoint = opt("endpoint").rstrip("/")
        if endpoint and not endpoint.lower().startswith(("http://", "https://")):  # (urlsplit may raise)
            raise ConfigError(f"ufile: endpoint must start with http:// or https://, not {endpoint!r}")
        if endpoint and not is_http_url(endpoint):  # no host, a bad port: say so now, not at a request
            raise ConfigError(f"ufile: endpoint {endpoint!r} is not an http(s) URL (http[s]://HOST[:PORT])")
        try:
            settings, retry = parse_http_tuning("ufile", options, pool_size=max(4, int(opt("pool_size"))))
            return cls(
                public_key=str(options["public_key"]).strip(),
                private_key=str(options["private_key"]).strip(),
                upload_suffix=upload_suffix,
                download_suffix=download_suffix or upload_suffix,
                endpoint=endpoint,
                bucket_host=opt("bucket_host").strip(),
                project_id=opt("project_id").strip(),
                verify_upload_md5=_flag(opt("verify_upload_md5")),
                expires=max(30, int(opt("expires"))),
                upload_concurrency=max(1, int(opt("upload_concurrency"))),
                http_settings=settings, retry=retry,
            )
        except ValueError as exc:
            raise ConfigError(f"ufile: bad number in options: {exc}") from None
