"""SigV4 against AWS's published examples, and against botocore's signer on random requests.

Vectors: "Examples: Signature Calculations in AWS Signature Version 4" of the S3 API reference
(GET object with a Range, PUT object, GET bucket lifecycle, GET bucket / list objects, presigned GET)
and the IAM ListUsers example of the general "Signature Version 4 signing process" docs.
"""
from __future__ import annotations

import datetime as dt
import dataclasses
import hashlib
import io
import os
import random
import string

import pytest

from storefs.wire.auth.sigv4 import (
    EMPTY_SHA256,
    UNSIGNED_PAYLOAD,
    SigV4Signer,
    build_query,
    encode_path,
    uri_encode,
)
from storefs.wire.body import Body, FileRegion
from storefs.wire.client import Request

AK = "AKIAIOSFODNN7EXAMPLE"
S3_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
IAM_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
S3_HOST = "examplebucket.s3.amazonaws.com"
T2013 = "20130524T000000Z"


def s3_signer() -> SigV4Signer:
    return SigV4Signer(AK, S3_SECRET, "us-east-1", "s3")


def auth_signature(headers: dict[str, str]) -> str:
    return headers["Authorization"].rsplit("Signature=", 1)[1]


def test_s3_get_object_with_range():
    signer = s3_signer()
    headers = {"Host": S3_HOST, "Range": "bytes=0-9", "x-amz-date": T2013}
    creq, signed = signer.canonical_request("GET", "/test.txt", "", {**headers, "x-amz-content-sha256": EMPTY_SHA256},
                                            EMPTY_SHA256)
    assert signed == "host;range;x-amz-content-sha256;x-amz-date"
    assert creq == ("GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
                    f"x-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:20130524T000000Z\n\n"
                    f"host;range;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA256}")
    assert hashlib.sha256(creq.encode()).hexdigest() == \
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    added = signer.sign("GET", "/test.txt", "", headers)
    assert added["x-amz-content-sha256"] == EMPTY_SHA256
    assert added["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")


def test_s3_put_object():
    body = b"Welcome to Amazon S3."
    payload = hashlib.sha256(body).hexdigest()
    assert payload == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    path = encode_path("/test$file.text")
    assert path == "/test%24file.text"
    headers = {"Host": S3_HOST, "Date": "Fri, 24 May 2013 00:00:00 GMT", "x-amz-date": T2013,
               "x-amz-storage-class": "REDUCED_REDUNDANCY"}
    added = s3_signer().sign("PUT", path, "", headers, payload_hash=payload)
    assert "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class," in added["Authorization"]
    assert auth_signature(added) == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"


def test_sign_request_signs_the_body_hash_or_an_unsigned_stream(tmp_path):
    """The wire layer's Signer: the AWS PUT vector again, from a Request whose body is in memory (over
    HTTPS and plain HTTP) and one whose body is a file region over plain HTTP; a stream goes
    UNSIGNED-PAYLOAD, and so does a file region over HTTPS (TLS protects it; see sign_request)."""
    body = b"Welcome to Amazon S3."
    (tmp_path / "f").write_bytes(b"xx" + body)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        for scheme, payload in (("https", Body(data=body)), ("http", Body(data=body)),
                                ("http", Body(region=FileRegion(fd, 2, len(body))))):
            headers = {"Host": S3_HOST, "Date": "Fri, 24 May 2013 00:00:00 GMT", "x-amz-date": T2013,
                       "x-amz-storage-class": "REDUCED_REDUNDANCY"}
            request = Request("PUT", f"{scheme}://{S3_HOST}", encode_path("/test$file.text"), headers=headers,
                              body=payload)
            s3_signer().sign_request(request)
            assert request.headers["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
            assert auth_signature(request.headers) == \
                "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        over_tls = Request("PUT", f"https://{S3_HOST}", "/k", headers={"Host": S3_HOST},
                           body=Body(region=FileRegion(fd, 2, len(body))))
        s3_signer().sign_request(over_tls)
        assert over_tls.headers["x-amz-content-sha256"] == UNSIGNED_PAYLOAD
    finally:
        os.close(fd)
    streamed = Request("PUT", f"https://{S3_HOST}", "/k", headers={"Host": S3_HOST},
                       body=Body(stream=io.BytesIO(body), size=len(body)))
    s3_signer().sign_request(streamed)
    assert streamed.headers["x-amz-content-sha256"] == UNSIGNED_PAYLOAD


def test_a_file_region_over_https_is_never_read_to_sign_it():
    # The point of UNSIGNED-PAYLOAD there: the staged bytes are read once, by the send, not twice.
    # fd -1: any read for a hash would fail.
    request = Request("PUT", f"https://{S3_HOST}", "/k", headers={"Host": S3_HOST},
                      body=Body(region=FileRegion(-1, 0, 3)))
    s3_signer().sign_request(request)
    assert request.headers["x-amz-content-sha256"] == UNSIGNED_PAYLOAD
    with pytest.raises(OSError):
        s3_signer().sign_request(dataclasses.replace(request, base=f"http://{S3_HOST}", headers={"Host": S3_HOST}))


def test_unsigned_payload_always_sends_file_regions_unsigned_over_plain_http_too():
    """The s3 option `unsigned_payload = always` (trusted networks): a file region over plain HTTP goes
    UNSIGNED-PAYLOAD without being read; a body in memory is still signed (its hash costs nothing)."""
    trusting = SigV4Signer(AK, S3_SECRET, "us-east-1", "s3", unsigned_regions_over_http=True)
    region = Request("PUT", f"http://{S3_HOST}", "/k", headers={"Host": S3_HOST},
                     body=Body(region=FileRegion(-1, 0, 3)))   # fd -1: a read for a hash would fail
    trusting.sign_request(region)
    assert region.headers["x-amz-content-sha256"] == UNSIGNED_PAYLOAD
    body = b"Welcome to Amazon S3."
    in_memory = Request("PUT", f"http://{S3_HOST}", "/k", headers={"Host": S3_HOST}, body=Body(data=body))
    trusting.sign_request(in_memory)
    assert in_memory.headers["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()


def test_s3_get_bucket_lifecycle():
    query = build_query([("lifecycle", "")])
    assert query == "lifecycle="
    added = s3_signer().sign("GET", "/", query, {"Host": S3_HOST, "x-amz-date": T2013})
    assert auth_signature(added) == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"


def test_s3_list_objects():
    query = build_query([("prefix", "J"), ("max-keys", "2")])
    assert query == "max-keys=2&prefix=J"
    added = s3_signer().sign("GET", "/", query, {"Host": S3_HOST, "x-amz-date": T2013})
    assert auth_signature(added) == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"


def test_s3_presigned_get():
    signer = s3_signer()
    now = dt.datetime(2013, 5, 24, tzinfo=dt.timezone.utc)
    query = signer.presign("GET", S3_HOST, "/test.txt", expires=86400, now=now)
    assert query.endswith("X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    assert "X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request" in query


def test_iam_list_users():
    signer = SigV4Signer(AK, IAM_SECRET, "us-east-1", "iam")
    query = build_query([("Action", "ListUsers"), ("Version", "2010-05-08")])
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
               "Host": "iam.amazonaws.com", "X-Amz-Date": "20150830T123600Z"}
    creq, _ = signer.canonical_request("GET", "/", query, headers, EMPTY_SHA256)
    assert hashlib.sha256(creq.encode()).hexdigest() == \
        "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
    assert signer.signing_key("20150830").hex() == \
        "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
    added = signer.sign("GET", "/", query, headers)
    assert "x-amz-content-sha256" not in added  # only S3 and Glacier send it
    assert added["Authorization"] == (
        f"AWS4-HMAC-SHA256 Credential={AK}/20150830/us-east-1/iam/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, "
        "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7")


def test_uri_encoding_rules():
    assert uri_encode("a b+c/d~e_f.g-h*") == "a%20b%2Bc%2Fd~e_f.g-h%2A"
    assert encode_path("/b/ünï cødé/名字.txt") == "/b/%C3%BCn%C3%AF%20c%C3%B8d%C3%A9/%E5%90%8D%E5%AD%97.txt"
    assert build_query([("b", "2"), ("a", "x y"), ("a", "="), ("uploads", "")]) == "a=%3D&a=x%20y&b=2&uploads="


def test_non_s3_paths_are_normalised_and_encoded_twice():
    glacier = SigV4Signer(AK, S3_SECRET, "us-east-1", "glacier")
    assert glacier.canonical_uri("/-/vaults/my%20vault/./x/../archives") == "/-/vaults/my%2520vault/archives"
    assert s3_signer().canonical_uri("/b/a//./b%20c") == "/b/a//./b%20c"


def test_secret_not_in_repr():
    assert S3_SECRET not in repr(s3_signer())


def test_session_token_is_signed():
    signer = SigV4Signer(AK, S3_SECRET, "us-east-1", "s3", session_token="TOKEN")
    added = signer.sign("GET", "/", "", {"Host": S3_HOST, "x-amz-date": T2013})
    assert added["x-amz-security-token"] == "TOKEN"
    assert "x-amz-security-token" in added["Authorization"].split("SignedHeaders=")[1].split(",")[0]


# ------------------------------------------------------------------------------------------------
# Cross-check with botocore (a test dependency only).

_KEY_ALPHABET = string.ascii_letters + string.digits + " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~" + "äß名字😀"


def _random_text(rng: random.Random, n: int, alphabet: str = _KEY_ALPHABET) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


@pytest.mark.parametrize("service", ["s3", "glacier", "iam"])
def test_matches_botocore_on_random_requests(service):
    botocore_auth = pytest.importorskip("botocore.auth")
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    rng = random.Random(f"sigv4-{service}")
    creds = Credentials("AKIDRANDOM", "secret/with+odd=chars")
    cls = botocore_auth.S3SigV4Auth if service == "s3" else botocore_auth.SigV4Auth
    for _ in range(150):
        region = rng.choice(["us-east-1", "eu-west-3", "ap-guangzhou"])
        ours = SigV4Signer("AKIDRANDOM", "secret/with+odd=chars", region, service)
        host = rng.choice(["127.0.0.1:9000", "examplebucket.s3.amazonaws.com", "h.example:8443"])
        path = encode_path("/" + "/".join(_random_text(rng, rng.randint(1, 8))
                                          for _ in range(rng.randint(1, 3))))
        params = {_random_text(rng, rng.randint(1, 6)): _random_text(rng, rng.randint(0, 6))
                  for _ in range(rng.randint(0, 4))}
        query = build_query(params.items())
        body = rng.randbytes(rng.randint(0, 64))
        payload = hashlib.sha256(body).hexdigest()
        headers = {"Host": host, "X-Amz-Date": f"2024{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}T010203Z"}
        for _ in range(rng.randint(0, 3)):
            headers[f"x-amz-meta-{rng.choice(['a', 'Mtime', 'mode'])}"] = "  v  " + _random_text(
                rng, 5, string.ascii_letters + "  ")
        if rng.random() < 0.5:
            headers["Range"] = f"bytes={rng.randint(0, 99)}-{rng.randint(100, 999)}"
        method = rng.choice(["GET", "PUT", "POST", "DELETE", "HEAD"])
        added = ours.sign(method, path, query, headers, payload_hash=payload)
        signed_headers = {**headers, **{k: v for k, v in added.items() if k != "Authorization"}}

        request = AWSRequest(method=method, url=f"https://{host}{path}", data=body, headers=signed_headers,
                             params=params)
        request.context["timestamp"] = headers["X-Amz-Date"]
        auth = cls(creds, service, region)
        creq = auth.canonical_request(request)
        ours_creq, _ = ours.canonical_request(method, path, query, signed_headers, payload)
        assert ours_creq == creq
        expected = auth.signature(auth.string_to_sign(request, creq), request)
        assert added["Authorization"].endswith(f"Signature={expected}")
