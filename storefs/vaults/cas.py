"""Tencent CAS (Cloud Archive Service): the `cas` dialect of the vault REST API, and its q-sign signature.

Wire facts: PROTOCOLS.md §1 (from the vendor's `cassdk` and API docs). Paths are `/<appid>/vaults/...`,
headers `x-cas-*`, request id `x-cas-requestid`, resource names `VaultQCS`.

Signature (`cas/utils/http_utils.py::create_auth`, reproduced exactly; tests/unit/test_cas_sign.py
holds the vendor-derived vectors):

    KeyTime = SignTime = "<now>;<now + expire>"
    SignKey      = hex(HMAC-SHA1(SecretKey, KeyTime))
    FormatString = lower(method) \\n path \\n FormatParameters \\n FormatHeaders \\n
    StringToSign = "sha1" \\n SignTime \\n hex(SHA1(FormatString)) \\n
    Signature    = hex(HMAC-SHA1(SignKey as ASCII hex, StringToSign))
    Authorization: q-sign-algorithm=sha1&q-ak=<SecretId>&q-sign-time=..&q-key-time=..
                   &q-header-list=<names;>&q-url-param-list=<names;>&q-signature=<hex>

FormatParameters lower-cases keys *and values* (the SDK does `str(v).lower()`), sorts by key, and
encodes `quote(key, safe="/")` = `quote_plus(value, safe="~")` with `+` -> `%20`, leaving out `=value`
when the value is empty. FormatHeaders does the same with names lower-cased and values as they are.
Like the SDK, storefs signs Host, Content-Length and every x-cas-* header, and leaves Content-Range,
Range, Content-Type and User-Agent unsigned. The Host signed is the one sent (with its port when the
endpoint has one; the emulator checks the Host header as received).
"""
from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import quote, quote_plus

from ..errors import ConfigError
from ..store.registry import ProviderSpec
from .rest import (
    COMMON_OPTIONS,
    Dialect,
    RestVaultProvider,
    merged_options,
    parse_common,
    parse_endpoint,
    required,
)

SPEC = ProviderSpec(
    type="cas",
    kind="vault",
    required=("appid", "secret_id", "secret_key"),
    one_of=(("region", "endpoint"),),
    optional={
        "region": "",            # ap-chengdu, ap-beijing, ap-guangzhou, ap-shanghai
        "endpoint": "",          # URL or host, e.g. http://127.0.0.1:9000 (default cas.<region>.myqcloud.com)
        "sign_expire": "1200",   # seconds a signature lives (the SDK's DefaultAuthTimeout)
        **COMMON_OPTIONS,
    },
    secrets=("secret_key",),
    doc="Tencent CAS (Cloud Archive Service) vaults. Keys: appid, secret_id, secret_key, and region "
        "(e.g. ap-chengdu) or endpoint. Archives are named only by id; storefs keeps names in the "
        "archive description (printable ASCII, at most 1024 bytes). Reading an archive starts a "
        "retrieval job that takes minutes (Expedited) to hours (Standard, Bulk).",
)

DEFAULT_EXPIRE = 1200
# Headers the SDK hands to the signer besides x-cas-*.
_SIGNED = frozenset({"host", "content-length"})


# ------------------------------------------------------------------------------------------------
# The q-sign signature, as pure functions


def _encode(value: str) -> str:
    return quote_plus(value, safe="~").replace("+", "%20")


def format_parameters(params: Mapping[str, object]) -> str:
    items = sorted((str(k).lower().strip(), str(v).lower()) for k, v in params.items())
    return "&".join(quote(k, safe="/") + (f"={_encode(v)}" if v else "") for k, v in items)


def format_headers(headers: Mapping[str, object]) -> str:
    items = sorted((str(k).lower().strip(), str(v)) for k, v in headers.items())
    return "&".join(k + (f"={_encode(v)}" if v else "") for k, v in items)


def format_string(method: str, path: str, params: Mapping[str, object], headers: Mapping[str, object]) -> str:
    return f"{method.lower()}\n{path}\n{format_parameters(params)}\n{format_headers(headers)}\n"


def string_to_sign(sign_time: str, fmt: str) -> str:
    return f"sha1\n{sign_time}\n{hashlib.sha1(fmt.encode('utf-8')).hexdigest()}\n"


def sign_key(secret_key: str, key_time: str) -> str:
    return hmac.new(secret_key.encode("utf-8"), key_time.encode("utf-8"), hashlib.sha1).hexdigest()


def signature(secret_key: str, sign_time: str, method: str, path: str, params: Mapping[str, object],
              headers: Mapping[str, object]) -> str:
    key = sign_key(secret_key, sign_time)
    text = string_to_sign(sign_time, format_string(method, path, params, headers))
    return hmac.new(key.encode("ascii"), text.encode("utf-8"), hashlib.sha1).hexdigest()


def authorization(secret_id: str, secret_key: str, method: str, path: str, params: Mapping[str, object],
                  headers: Mapping[str, object], *, now: int, expire: int = DEFAULT_EXPIRE) -> str:
    """The Authorization header value for a request signed over exactly `params` and `headers`."""
    sign_time = f"{now};{now + expire}"
    header_list = ";".join(sorted(str(k).lower().strip() for k in headers))
    param_list = ";".join(sorted(str(k).lower().strip() for k in params))
    sig = signature(secret_key, sign_time, method, path, params, headers)
    return (f"q-sign-algorithm=sha1&q-ak={secret_id}&q-sign-time={sign_time}&q-key-time={sign_time}"
            f"&q-header-list={header_list}&q-url-param-list={param_list}&q-signature={sig}")


def parse_authorization(value: str) -> dict[str, str]:
    """The fields of a q-sign Authorization value (for verifiers). ValueError if it is not one."""
    fields: dict[str, str] = {}
    for item in value.strip().split("&"):
        name, sep, field = item.partition("=")
        if not sep or name in fields:
            raise ValueError("malformed q-sign authorization")
        fields[name] = field
    for name in ("q-sign-algorithm", "q-ak", "q-sign-time", "q-key-time", "q-header-list",
                 "q-url-param-list", "q-signature"):
        if name not in fields:
            raise ValueError(f"authorization lacks {name}")
    return fields


# ------------------------------------------------------------------------------------------------
# The dialect


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
    opts = merged_options(SPEC.optional, options)
    required(remote, "cas", opts, SPEC.required)
    appid = opts["appid"].strip()
    if not appid.isdigit() and appid != "-":
        raise ConfigError(f"[{remote}] appid {appid!r} must be the numeric APPID (or - for your own)")
    endpoint = opts["endpoint"].strip()
    region = opts["region"].strip()
    if not endpoint and not region:
        raise ConfigError(f"[{remote}] type = cas needs region or endpoint")
    scheme, netloc = parse_endpoint(remote, endpoint or f"https://cas.{region}.myqcloud.com")
    try:
        expire = int(opts["sign_expire"])
    except ValueError:
        raise ConfigError(f"[{remote}] sign_expire must be a number of seconds") from None
    if not 60 <= expire <= 7 * 86400:
        raise ConfigError(f"[{remote}] sign_expire must lie between 60 s and 7 days")
    settings, retry, tuning = parse_common(remote, "cas", opts)
    dialect = CasDialect(opts["secret_id"].strip(), opts["secret_key"], expire=expire)
    return RestVaultProvider(remote, dialect, scheme=scheme, netloc=netloc, account=appid,
                             settings=settings, retry=retry, tuning=tuning)


open_vault_provider = open_provider
