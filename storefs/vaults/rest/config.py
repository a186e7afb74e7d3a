"""What a REST vault remote (cas, glacier) says in its section: the options both types take, their
parsing into HTTP settings, a retry policy and upload/download tuning, and the endpoint (named, or
derived from the region)."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ...errors import ConfigError
from ...store.registry import ProviderSpec
from ...wire.retry import RetryPolicy
from ...wire.settings import HttpSettings, check_endpoint
from ...wire.tuning import HTTP_TUNING, parse_http_tuning
from .. import treehash
from ..base import MiB

# Options every REST vault type takes, with defaults (merged into each SPEC.optional).
COMMON_OPTIONS: dict[str, str] = {
    "part_size": str(16 * MiB),            # multipart part size (rounded up to 1 MiB x 2^n); SDK default
    "single_upload_max": str(100 * MiB),   # larger archives go up in parts; the CAS SDK's threshold
    "upload_concurrency": "4",             # parts in flight for upload_archive()
    "download_piece": str(16 * MiB),       # job output is fetched in verified pieces of this size
    "download_concurrency": "4",
    **HTTP_TUNING,
}


def vault_spec(type_name: str, *, required: tuple[str, ...], optional: Mapping[str, str],
               secrets: tuple[str, ...], doc: str, aws_profile_key: str = "") -> ProviderSpec:
    """The SPEC of a REST vault type: reached by region or endpoint, COMMON_OPTIONS merged in.
    `aws_profile_key`: see ProviderSpec (Glacier takes AWS keys where the AWS CLI finds them)."""
    return ProviderSpec(type=type_name, kind="vault", required=required, one_of=(("region", "endpoint"),),
                        optional={"region": "", "endpoint": "", **optional, **COMMON_OPTIONS},
                        secrets=secrets, doc=doc, aws_profile_key=aws_profile_key)


@dataclasses.dataclass(frozen=True)
class Tuning:
    part_size: int = 16 * MiB
    single_upload_max: int = 100 * MiB
    upload_concurrency: int = 4
    download_piece: int = 16 * MiB
    download_concurrency: int = 4


@dataclasses.dataclass(frozen=True)
class RestRemote:
    """A REST vault remote's options, parsed: where to connect and how."""

    options: Mapping[str, str]      # the SPEC's defaults under the remote's own options
    scheme: str
    netloc: str
    settings: HttpSettings
    retry: RetryPolicy
    tuning: Tuning


def parse_remote(remote: str, spec: ProviderSpec, options: Mapping[str, str], default_url: str) -> RestRemote:
    """The remote's options checked and parsed. `default_url` is the endpoint for a region, with
    `{region}` in it."""
    opts = {**spec.optional, **{k: str(v) for k, v in options.items() if v is not None}}
    missing = [k for k in spec.required if not str(opts.get(k, "")).strip()]
    if missing:
        raise ConfigError(f"[{remote}] type = {spec.type} needs {', '.join(missing)}")
    endpoint = opts["endpoint"].strip()
    region = opts["region"].strip()
    if not endpoint and not region:
        raise ConfigError(f"[{remote}] type = {spec.type} needs region or endpoint")
    parts = check_endpoint(remote, endpoint or default_url.format(region=region))
    settings, retry, tuning = _parse_tuning(remote, spec.type, opts)
    return RestRemote(opts, parts.scheme, parts.netloc.lower(), settings, retry, tuning)


def _parse_tuning(remote: str, type_name: str, opts: Mapping[str, str]
                  ) -> tuple[HttpSettings, RetryPolicy, Tuning]:
    try:
        part_size = treehash.part_size_for(1, int(opts["part_size"]))
        piece = treehash.part_size_for(1, int(opts["download_piece"]))
        tuning = Tuning(part_size=part_size, single_upload_max=int(opts["single_upload_max"]),
                        upload_concurrency=max(1, int(opts["upload_concurrency"])),
                        download_piece=piece, download_concurrency=max(1, int(opts["download_concurrency"])))
    except ValueError as exc:
        raise ConfigError(f"[{remote}] a numeric {type_name} option is not valid: {exc}") from None
    settings, retry = parse_http_tuning(remote, opts)
    return settings, retry, tuning

