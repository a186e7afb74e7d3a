"""Tencent CAS (Cloud Archive Service): the `cas` dialect of the vault REST API.

Wire facts: PROTOCOLS.md §1 (from the vendor's `cassdk` and API docs). Paths are `/<appid>/vaults/...`,
headers `x-cas-*`, request id `x-cas-requestid`, resource names `VaultQCS`. The q-sign signature is
storefs/wire/auth/cas.py; like the SDK, the dialect signs Host, Content-Length and every x-cas-*
header.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from ..errors import ConfigError
from ..wire.auth.cas import DEFAULT_EXPIRE, authorization
from .rest import RestVaultProvider
from .rest.config import parse_remote, vault_spec
from .rest.dialect import Dialect

SPEC = vault_spec(
    "cas",
    required=("appid", "secret_id", "secret_key"),
    optional={
        # region: ap-chengdu, ap-beijing, ap-guangzhou, ap-shanghai; endpoint: a URL or host, e.g.
        # http://127.0.0.1:9000 (default cas.<region>.myqcloud.com)
        "sign_expire": str(DEFAULT_EXPIRE),   # seconds a signature lives (the SDK's DefaultAuthTimeout)
    },
    secrets=("secret_key",),
    doc="Tencent CAS (Cloud Archive Service) vaults. Keys: appid, secret_id, secret_key, and region "
        "(e.g. ap-chengdu) or endpoint. Archives are named only by id; storefs keeps names in the "
        "archive description (printable ASCII, at most 1024 bytes). Reading an archive starts a "
        "retrieval job that takes minutes (Expedited) to hours (Standard, Bulk).",
)

# Headers the SDK hands to the signer besides x-cas-*.
_SIGNED = frozenset({"host", "content-length"})


class CasDialect(Dialect):
    name = "cas"
    header_prefix = "x-cas-"
    request_id_header = "x-cas-requestid"
    resource_field = "VaultQCS"

    def __init__(self, secret_id: str, secret_key: str, *, expire: int = DEFAULT_EXPIRE,
                 clock: Callable[[], float] = time.time) -> None:
        self.secret_id = secret_id
        self._secret_key = secret_key
        self.expire = expire
        self._clock = clock

    def __repr__(self) -> str:  # never the secrets
        return f"CasDialect(expire={self.expire})"

    def sign(self, method: str, host: str, wire_path: str, params: Sequence[tuple[str, str]],
             headers: Mapping[str, str], payload_hash: str) -> dict[str, str]:
        signed = {k: v for k, v in headers.items()
                  if k.lower() in _SIGNED or k.lower().startswith(self.header_prefix)}
        auth = authorization(self.secret_id, self._secret_key, method, wire_path, dict(params), signed,
                             now=int(self._clock()), expire=self.expire)
        return {"Authorization": auth}


def open_provider(remote: str, options: Mapping[str, str]) -> RestVaultProvider:
    parsed = parse_remote(remote, SPEC, options, "https://cas.{region}.myqcloud.com")
    opts = parsed.options
    appid = opts["appid"].strip()
    if not appid.isdigit() and appid != "-":
        raise ConfigError(f"[{remote}] appid {appid!r} must be the numeric APPID (or - for your own)")
    try:
        expire = int(opts["sign_expire"])
    except ValueError:
        raise ConfigError(f"[{remote}] sign_expire must be a number of seconds") from None
    if not 60 <= expire <= 7 * 86400:
        raise ConfigError(f"[{remote}] sign_expire must lie between 60 s and 7 days")
    dialect = CasDialect(opts["secret_id"].strip(), opts["secret_key"], expire=expire)
    return RestVaultProvider.of(remote, dialect, parsed, account=appid)


open_vault_provider = open_provider
