"""Amazon S3 Glacier (the 2012-06-01 vault API): the `glacier` dialect of the vault REST API.

Same paths and documents as CAS (PROTOCOLS.md §1.8) with `x-amz-*` headers, `VaultARN`, the
mandatory `x-amz-glacier-version: 2012-06-01` header, and AWS Signature Version 4 for service
"glacier" (storefs/wire/auth/sigv4.py; Glacier signs the normalised path and wants the payload's
SHA-256 in x-amz-content-sha256, which the signer adds).

`profile = moto` describes moto's Glacier server (PROTOCOLS.md §1.9) as data: no multipart, no
ranges, "tree hashes" that are plain SHA-256, no paging, sizes not reported, and its error quirks
(500 for a missing job or archive, a bare 404 for output that is not ready yet). Nothing else in
storefs knows about moto.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from ..errors import ArchiveNotReady, ConfigError, NotFound, StoreError
from ..wire.auth.sigv4 import SigV4Signer, build_query
from .base import VaultCapabilities
from .rest import RestVaultProvider
from .rest.config import parse_remote, vault_spec
from .rest.dialect import Dialect

SPEC = vault_spec(
    "glacier",
    required=("access_key", "secret_key"),
    optional={
        # region: e.g. eu-west-1 (with only an endpoint, us-east-1 is signed); endpoint: a URL or host
        # (default https://glacier.<region>.amazonaws.com)
        "account_id": "-",       # "-": the account of the credentials
        "session_token": "",     # temporary credentials (STS)
        "profile": "aws",        # aws | moto (moto's Glacier server, for tests)
        "aws_profile": "",       # an AWS CLI profile to take the keys from (~/.aws/credentials)
    },
    secrets=("secret_key", "session_token"),
    aws_profile_key="aws_profile",
    doc="Amazon S3 Glacier vaults (the vault API, not S3 storage classes). Keys: access_key, "
        "secret_key, and region or endpoint; account_id defaults to '-'. Archives are named only by "
        "id; storefs keeps names in the archive description (printable ASCII, at most 1024 bytes). "
        "Without access_key/secret_key the keys come from the AWS CLI's places (AWS_* environment, "
        "~/.aws files; `aws_profile =` or AWS_PROFILE picks the profile). "
        "`profile = moto` adapts to moto's Glacier server (tests).",
)

GLACIER_VERSION = "2012-06-01"

MOTO_CAPABILITIES = VaultCapabilities(
    supports_multipart=False, supports_ranges=False, tree_hash_trustworthy=False, pages_listings=False,
    job_sizes_reported=False, single_upload_max=4 * 1024 ** 3)

# Answers that carry no error code and mean something specific on moto.
MOTO_ERRORS: Mapping[tuple[str, int], type[StoreError]] = {
    ("describe_job", 500): NotFound,       # describe_job(None).to_dict()
    ("job_output", 500): NotFound,
    ("delete_archive", 500): NotFound,     # archives.pop(missing)
    ("job_output", 404): ArchiveNotReady,  # "404 Not Found" while the job runs
}


class GlacierDialect(Dialect):
    name = "glacier"
    header_prefix = "x-amz-"
    request_id_header = "x-amzn-requestid"
    resource_field = "VaultARN"
    extra_headers: Mapping[str, str] = MappingProxyType({"x-amz-glacier-version": GLACIER_VERSION})

    def __init__(self, signer: SigV4Signer, *, profile: str = "aws") -> None:
        self.signer = signer
        self.profile = profile
        if profile == "moto":
            self.capabilities = MOTO_CAPABILITIES
            self.error_overrides = MOTO_ERRORS
            self.inventory_tier = True

    def __repr__(self) -> str:
        return f"GlacierDialect({self.signer!r}, profile={self.profile!r})"

    def sign(self, method: str, host: str, wire_path: str, params: Sequence[tuple[str, str]],
             headers: Mapping[str, str], payload_hash: str) -> dict[str, str]:
        return self.signer.sign(method, wire_path, build_query(params), headers, payload_hash=payload_hash)


def open_provider(remote: str, options: Mapping[str, str]) -> RestVaultProvider:
    parsed = parse_remote(remote, SPEC, options, "https://glacier.{region}.amazonaws.com")
    opts = parsed.options
    profile = opts["profile"].strip().lower() or "aws"
    if profile not in ("aws", "moto"):
        raise ConfigError(f"[{remote}] profile must be 'aws' or 'moto', not {profile!r}")
    account = opts["account_id"].strip() or "-"
    if account != "-" and not account.isdigit():
        raise ConfigError(f"[{remote}] account_id must be '-' or a 12-digit account number")
    signer = SigV4Signer(opts["access_key"].strip(), opts["secret_key"], opts["region"].strip() or "us-east-1",
                         "glacier", session_token=opts["session_token"].strip() or None)
    return RestVaultProvider.of(remote, GlacierDialect(signer, profile=profile), parsed, account=account)


open_vault_provider = open_provider
