"""CAS q-sign (PROTOCOLS.md §1.5): the three vendor-derived vectors reproduced exactly, plus the rules
behind them (lower-cased parameter values, header value encoding, what the provider signs)."""
from __future__ import annotations

from storefs.vaults.cas import CasDialect
from storefs.wire.auth.cas import (
    authorization,
    format_headers,
    format_parameters,
    format_string,
    parse_authorization,
    sign_key,
    string_to_sign,
)

SECRET_ID = "AKIDexampleCAS"
SECRET_KEY = "SKexampleSecretKey"
NOW = 1500000000
HOST = "cas.ap-chengdu.myqcloud.com"
TIME = "1500000000;1500001200"
E3 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_vector_1_create_vault():
    method, path, headers = "PUT", "/1250000000/vaults/examplevault", {"Host": HOST}
    fmt = format_string(method, path, {}, headers)
    assert fmt == "put\n/1250000000/vaults/examplevault\n\nhost=cas.ap-chengdu.myqcloud.com\n"
    assert string_to_sign(TIME, fmt) == "sha1\n1500000000;1500001200\n24a65eda68cd1d6b9276ec2ccb34fd78cbd7de75\n"
    assert sign_key(SECRET_KEY, TIME) == "23da134eec2023b1acc0a9a8d727233b5cd4a11e"
    assert authorization(SECRET_ID, SECRET_KEY, method, path, {}, headers, now=NOW, expire=1200) == (
        "q-sign-algorithm=sha1&q-ak=AKIDexampleCAS&q-sign-time=1500000000;1500001200"
        "&q-key-time=1500000000;1500001200&q-header-list=host&q-url-param-list="
        "&q-signature=5a915762a787758ea48981d0d8e4177487f185fd")


def test_vector_2_list_vaults_with_params():
    params = {"marker": "QCS:Vault/AbC", "limit": 10}
    fmt = format_string("GET", "/1250000000/vaults", params, {"Host": HOST})
    assert fmt == "get\n/1250000000/vaults\nlimit=10&marker=qcs%3Avault%2Fabc\nhost=cas.ap-chengdu.myqcloud.com\n"
    auth = parse_authorization(authorization(SECRET_ID, SECRET_KEY, "GET", "/1250000000/vaults", params,
                                             {"Host": HOST}, now=NOW))
    assert auth["q-url-param-list"] == "limit;marker"
    assert auth["q-header-list"] == "host"
    assert auth["q-signature"] == "5b5979c0c3e8d914eb0c9356386621541e9d70bc"


def test_vector_3_upload_archive_headers():
    headers = {"Host": HOST, "x-cas-content-sha256": E3, "x-cas-sha256-tree-hash": E3,
               "x-cas-archive-description": "my file/v1 2024.tar", "Content-Length": 1024}
    assert format_headers(headers) == (
        f"content-length=1024&host=cas.ap-chengdu.myqcloud.com&x-cas-archive-description=my%20file%2Fv1%202024.tar"
        f"&x-cas-content-sha256={E3}&x-cas-sha256-tree-hash={E3}")
    auth = parse_authorization(authorization(SECRET_ID, SECRET_KEY, "POST",
                                             "/1250000000/vaults/examplevault/archives", {}, headers, now=NOW))
    assert auth["q-header-list"] == ("content-length;host;x-cas-archive-description;x-cas-content-sha256;"
                                     "x-cas-sha256-tree-hash")
    assert auth["q-signature"] == "82bd053d737e17fec00ff8f50826215765ed5653"


def test_parameter_values_are_signed_lower_cased_and_empty_values_bare():
    assert format_parameters({"completed": True, "StatusCode": "InProgress", "marker": ""}) == (
        "completed=true&marker&statuscode=inprogress")
    assert format_parameters({"a b": "x y~z+"}) == "a%20b=x%20y~z%2B"


def test_dialect_signs_host_length_and_cas_headers_only():
    dialect = CasDialect(SECRET_ID, SECRET_KEY, clock=lambda: NOW)
    headers = {"Host": HOST, "Content-Length": "1024", "x-cas-content-sha256": E3,
               "x-cas-sha256-tree-hash": E3, "x-cas-archive-description": "my file/v1 2024.tar",
               "Content-Range": "bytes 0-1023/*", "Content-Type": "application/octet-stream"}
    added = dialect.sign("POST", HOST, "/1250000000/vaults/examplevault/archives", [], headers, E3)
    auth = parse_authorization(added["Authorization"])
    assert auth["q-signature"] == "82bd053d737e17fec00ff8f50826215765ed5653"  # == vector 3
    assert "content-range" not in auth["q-header-list"]


def test_no_secret_in_repr():
    dialect = CasDialect(SECRET_ID, SECRET_KEY)
    assert SECRET_KEY not in repr(dialect)
