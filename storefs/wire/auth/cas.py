"""Tencent CAS's q-sign request signature, as pure functions (no I/O, no clock): the CAS vault dialect
(storefs/vaults/cas.py) signs with it and the test emulator verifies with it.

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
from collections.abc import Mapping
from urllib.parse import quote, quote_plus

DEFAULT_EXPIRE = 1200   # seconds a signature lives (the SDK's DefaultAuthTimeout)


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
