"""A recording, fault-injecting HTTP(S) front for the test servers, and a throwaway CA to go with it.

    certs = make_certs(tmp_path)                      # a private CA and a 127.0.0.1 server cert
    with Front(upstream="http://127.0.0.1:PORT", certs=certs) as front:
        endpoint = front.url                          # https://127.0.0.1:FRONT_PORT
        front.faults.add(Fault(op="GET", status=500))   # the emulators' fault hooks, S3 error shape
        front.seen                                    # credential material every request carried

`Front` forwards every request unchanged (Host header included, so signatures still match) to one
upstream on 127.0.0.1 and relays the answer. It terminates TLS when given certs, which puts an HTTPS
endpoint with a self-signed chain in front of any emulator or moto. It also records what each request
carried that must never be written down by a client (Authorization headers, signature and token query
parameters), so a test can look for those in logs. `deny` makes it answer 403 (S3 SignatureDoesNotMatch)
to requests whose Authorization header contains a given string: a wrong-credentials server for moto,
which checks no signatures itself.

Listens on 127.0.0.1 only, port 0; one thread per connection (the emulator base); bounded timeouts.
"""
from __future__ import annotations

import dataclasses
import datetime
import http.client
import ipaddress
import ssl
import threading
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from tests.emulators.base import Emulator, EmulatorHandler, Fault

# Query parameters that carry a signature or a bearer token in the protocols storefs speaks.
SECRET_PARAMS = {"signature", "x-amz-signature", "x-amz-security-token", "sign", "token", "q-signature"}


@dataclasses.dataclass(frozen=True)
class Certs:
    ca_pem: Path        # the CA certificate: what `ca_file` names
    cert_pem: Path      # the server certificate for 127.0.0.1, signed by the CA
    key_pem: Path       # its private key


def make_certs(directory: Path, name: str = "storefs test", ip: str = "127.0.0.1") -> Certs:
    """A fresh CA and a server certificate for `ip` signed by it (EC P-256: quick to make). A
    certificate for another address (127.0.0.2) served on 127.0.0.1 tests host name checking.

    Uses `cryptography`, which moto (a test dependency) already requires."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=True, crl_sign=True, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    certs = Certs(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    certs.ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    certs.cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certs.key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    certs.key_pem.chmod(0o600)
    return certs


@dataclasses.dataclass(frozen=True)
class Seen:
    """What one request carried that only the server may know."""

    authorization: str
    secret_params: tuple[str, ...]   # values of SECRET_PARAMS in the query string


class FrontHandler(EmulatorHandler):
    server_version = "storefs-test-front"
    timeout = 30  # seconds of client silence before the connection is dropped (bounded waits)

    def handle(self) -> None:
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError, TimeoutError):
            # A client that refuses our certificate hangs up in the handshake: expected, not an error.
            self.close_connection = True

    def _forward(self) -> None:
        front: Front = self.emulator  # type: ignore[assignment]
        authorization = self.headers.get("Authorization", "")
        params = parse_qsl(urlsplit(self.path).query, keep_blank_values=True)
        front.record(Seen(authorization, tuple(v for k, v in params if k.lower() in SECRET_PARAMS)))
        # inject() drains a Content-Length body itself when it answers, so it comes before the read.
        if self.inject(self.command):
            self.close_connection = True
            return
        body = self._request_body()
        if front.deny and front.deny in authorization:
            self._s3_error(403, "SignatureDoesNotMatch",
                           "The request signature we calculated does not match the signature you provided.")
            return
        status, reason, headers, data = self._exchange(body)
        self.send_response(status, reason)
        for name, value in headers:
            if name.lower() in ("transfer-encoding", "connection", "keep-alive", "server", "date"):
                continue
            if name.lower() == "content-length" and self.command != "HEAD":
                continue  # the body is relayed whole: its own length is sent below
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    def _request_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.read_body()

    def _exchange(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        front: Front = self.emulator  # type: ignore[assignment]
        for attempt in range(2):  # a kept-alive upstream socket may have been closed: one fresh try
            conn = getattr(self, "_upstream", None)
            if conn is None:
                conn = self._upstream = http.client.HTTPConnection(front.upstream_host, front.upstream_port,
                                                                   timeout=60)
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() in ("transfer-encoding", "content-length", "connection"):
                        continue
                    conn.putheader(name, value)
                if body or self.command in ("PUT", "POST"):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body or None)
                response = conn.getresponse()
                data = response.read()
                if response.will_close:
                    conn.close()
                    self._upstream = None
                return response.status, response.reason, response.getheaders(), data
            except (ConnectionError, http.client.HTTPException):
                conn.close()
                self._upstream = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def error_response(self, fault: Fault) -> None:
        if fault.body:
            self.send(fault.status, fault.body, content_type="application/xml")
            return
        self._s3_error(fault.status, fault.code or ("InternalError" if fault.status >= 500 else "InvalidRequest"),
                       "injected fault")

    def _s3_error(self, status: int, code: str, message: str) -> None:
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
                f'</Message><RequestId>front-{id(self):x}</RequestId></Error>').encode()
        self.send(status, body, content_type="application/xml")


class Front(Emulator):
    """An HTTP(S) front for `upstream` (http://127.0.0.1:PORT). Use as a context manager."""

    protocol = "front"
    handler = FrontHandler

    def __init__(self, upstream: str, certs: Certs | None = None, deny: str = "") -> None:
        super().__init__()
        parts = urlsplit(upstream)
        if parts.hostname != "127.0.0.1" or parts.scheme != "http":
            raise ValueError("the front only forwards to http://127.0.0.1:PORT")
        self.upstream_host, self.upstream_port = parts.hostname, int(parts.port or 80)
        self.deny = deny
        self.tls = certs is not None
        self._seen: list[Seen] = []
        self._seen_lock = threading.Lock()
        if certs is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(certs.cert_pem), str(certs.key_pem))
            # The handshake runs in the connection's own thread (first read), never in the accept loop,
            # so a client stuck in it cannot stall other connections.
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True,
                                                      do_handshake_on_connect=False)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def record(self, seen: Seen) -> None:
        with self._seen_lock:
            self._seen.append(seen)

    @property
    def seen(self) -> list[Seen]:
        with self._seen_lock:
            return list(self._seen)

    def config(self) -> dict:
        return {"endpoint": self.url}
