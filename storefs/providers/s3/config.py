"""The s3 provider's configuration: its keys (SPEC), S3's size limits, and the options of one remote
parsed and checked once, when the provider is opened."""
from __future__ import annotations

import dataclasses
from typing import Mapping

from ...errors import ConfigError
from ...store.registry import ProviderSpec
from ...wire.retry import RetryPolicy
from ...wire.settings import HttpSettings, check_endpoint
from ...wire.tuning import HTTP_TUNING, parse_http_tuning

MiB = 1024 * 1024
GiB = 1024 * MiB

SPEC = ProviderSpec(
    type="s3",
    required=("endpoint", "access_key", "secret_key"),
    optional={
        "region": "us-east-1",
        "profile": "",               # an AWS CLI profile to take the keys from (~/.aws/credentials)
        "addressing": "",            # path | virtual; empty: virtual for *.amazonaws.com, path elsewhere
        "session_token": "",         # temporary credentials (STS)
        "storage_class": "",         # x-amz-storage-class for new objects; empty: the bucket's default
        "part_size": str(8 * MiB),   # preferred multipart part size
        "single_put_max": str(16 * MiB),
        "copy_cutoff": str(5 * GiB),  # larger objects are copied with UploadPartCopy
        "copy_part_size": str(512 * MiB),
        # auto: staged files' bodies (PUTs, parts) are signed with their SHA-256 over plain http and
        # sent UNSIGNED-PAYLOAD over https (TLS guards them); always: unsigned over plain http too,
        # for trusted networks (a loopback MinIO, a private LAN): saves hashing every byte on both ends.
        "unsigned_payload": "auto",
        **HTTP_TUNING,
    },
    secrets=("secret_key", "session_token"),
    aws_profile_key="profile",
    doc="Any S3-compatible endpoint (AWS, MinIO, SeaweedFS, Tencent COS, Wangsu WCS, UCloud US3). "
        "`endpoint` is a URL such as https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:9000; "
        "`addressing = path|virtual`. Full user metadata (x-amz-meta-*); non-ASCII values are stored "
        "RFC 2047-encoded. TLS certificates are always verified (`ca_file` adds a CA bundle). Without "
        "access_key/secret_key the keys come from the AWS CLI's places (AWS_* environment, "
        "~/.aws/credentials, ~/.aws/config; `profile =` or AWS_PROFILE picks the profile).",
)

# GLACIER_IR and the intelligent-tiering classes read without a restore; COS v5 names its classes
# ARCHIVE and DEEP_ARCHIVE.
S3_ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE", "ARCHIVE"})
S3_MIN_PART = 5 * MiB
S3_MAX_PART = 5 * GiB
S3_MAX_PARTS = 10_000
S3_MAX_PUT = 5 * GiB
# Bodies up to this size are read into memory and signed with their SHA-256; larger file objects
# stream (a staged file's region is sent from the file whatever its size).
INLINE_BODY_MAX = 1 * MiB
MAX_LIST_PAGES = 1000  # bound on paging loops (10^6 multipart uploads)


@dataclasses.dataclass(frozen=True)
class S3Options:
    """One remote's options, checked. The credentials never show in repr()."""

    scheme: str
    netloc: str               # host[:port] as written, lower-cased: what Host carries
    host_port: str            # host:port with the default port filled in, for messages
    addressing: str           # "path" or "virtual"
    region: str
    storage_class: str        # empty: the bucket's default
    part_size: int
    single_put_max: int
    copy_cutoff: int
    copy_part_size: int
    unsigned_payload: str     # "auto" (unsigned over https only) or "always"
    settings: HttpSettings
    retry: RetryPolicy
    access_key: str
    secret_key: str = dataclasses.field(repr=False)
    session_token: str = dataclasses.field(repr=False)

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    @property
    def is_aws(self) -> bool:
        """The endpoint is AWS S3's own (which dates a multipart object by the start of its upload)."""
        host = self.host_port.rpartition(":")[0]
        return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))

    @classmethod
    def parse(cls, remote: str, options: Mapping[str, str]) -> S3Options:
        """The options of section [remote], defaults merged in; ConfigError naming the remote when a
        required key is missing or a value is not one S3 can use."""
        opts = {**SPEC.optional, **{k: v for k, v in options.items() if v is not None}}
        missing = [k for k in SPEC.required if not str(opts.get(k, "")).strip()]
        if missing:
            raise ConfigError(f"[{remote}] type = s3 needs {', '.join(missing)}")
        parts = check_endpoint(remote, opts["endpoint"])
        addressing = opts["addressing"].strip().lower()
        if not addressing:
            addressing = "virtual" if (parts.hostname or "").endswith(".amazonaws.com") else "path"
        if addressing not in ("path", "virtual"):
            raise ConfigError(f"[{remote}] addressing must be 'path' or 'virtual', not {addressing!r}")
        try:
            part_size = int(opts["part_size"])
            single_put_max = min(int(opts["single_put_max"]), S3_MAX_PUT)
            copy_cutoff = min(int(opts["copy_cutoff"]), S3_MAX_PUT)
            copy_part_size = min(max(int(opts["copy_part_size"]), S3_MIN_PART), S3_MAX_PART)
        except ValueError as exc:
            raise ConfigError(f"[{remote}] a numeric s3 option is not a number: {exc}") from None
        unsigned_payload = opts["unsigned_payload"].strip().lower()
        if unsigned_payload not in ("auto", "always"):
            raise ConfigError(f"[{remote}] unsigned_payload must be 'auto' (sign staged files' bodies over "
                              f"plain http) or 'always' (not over plain http either), not {unsigned_payload!r}")
        settings, retry = parse_http_tuning(remote, opts)
        return cls(scheme=parts.scheme, netloc=parts.netloc.lower(),
                   host_port=f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}",
                   addressing=addressing, region=opts["region"].strip(),
                   storage_class=opts["storage_class"].strip(), part_size=part_size,
                   single_put_max=single_put_max, copy_cutoff=copy_cutoff, copy_part_size=copy_part_size,
                   unsigned_payload=unsigned_payload, settings=settings, retry=retry, access_key=opts["access_key"].strip(),
                   secret_key=opts["secret_key"], session_token=opts["session_token"].strip())
