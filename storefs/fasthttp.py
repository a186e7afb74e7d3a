"""Small S3 requests without `requests`: per-thread keep-alive `http.client` connections.

Through a requests Session every request costs about 0.8 ms of CPU (request preparation, hooks,
adapters, urllib3's pool) under the GIL; over a plain http.client connection about 0.25 ms. That is most
of the cost of the requests a mount makes by the thousand: the HEAD per entry of an `ls -l` (32 at a
time: 1,200 against 4,250 HEAD/s on SeaweedFS) and the PUT per small file of a `cp -r` or an untar.
So every S3 request whose body is in memory and whose answer is read whole goes this way; streamed
answers (object reads) and bodies streamed from a file stay on `http.send`.

Same rules as http.send: timeouts on every request, certificates always verified (the remote's
`ca_file` or certifi's bundle, as requests does), transport failures are Transient, and messages name
only scheme and host.
"""
from __future__ import annotations

import dataclasses
import http.client
import socket
import ssl
import threading
from typing import Mapping

import certifi
from requests.structures import CaseInsensitiveDict

from .errors import ProtocolError, Transient
from .http import HttpSettings, tls_error

ANSWER_MAX = 64 << 20   # the largest answer read whole (a LIST page is about 1 MiB at most)


@dataclasses.dataclass(frozen=True)
class LeanAnswer:
    status: int
    headers: CaseInsensitiveDict
    content: bytes


class LeanClient:
    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self._local = threading.local()
        self._tls: ssl.SSLContext | None = None
        self._tls_lock = threading.Lock()

    def _context(self) -> ssl.SSLContext:
        with self._tls_lock:
            if self._tls is None:
                cafile = self.settings.verify if isinstance(self.settings.verify, str) else certifi.where()
                self._tls = ssl.create_default_context(cafile=cafile)  # verifies chain and host name
            return self._tls

    def _connection(self, scheme: str, host: str) -> http.client.HTTPConnection:
        pool: dict[tuple[str, str], http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        conn = pool.get((scheme, host))
        if conn is None:
            timeout = self.settings.connect_timeout
            if scheme == "https":
                conn = http.client.HTTPSConnection(host, timeout=timeout, context=self._context())
            else:
                conn = http.client.HTTPConnection(host, timeout=timeout)
            pool[(scheme, host)] = conn
        return conn

    def _drop(self, scheme: str, host: str) -> None:
        conn = self._local.__dict__.get("pool", {}).pop((scheme, host), None)
        if conn is not None:
            conn.close()

    @staticmethod
    def _content(method: str, scheme: str, host: str, response: http.client.HTTPResponse) -> bytes:
        if response.length is not None:
            if response.length > ANSWER_MAX:
                raise ProtocolError(f"{method} {scheme}://{host}: a {response.length}-byte answer")
            return response.read()   # IncompleteRead (Transient) if cut short of Content-Length
        content = response.read(ANSWER_MAX + 1)   # chunked: IncompleteRead if a chunk is cut short
        if len(content) > ANSWER_MAX:
            raise ProtocolError(f"{method} {scheme}://{host}: an answer of over {ANSWER_MAX} bytes")
        return content

    def exchange(self, method: str, scheme: str, host: str, target: str, headers: Mapping[str, str],
                 body: bytes = b"") -> LeanAnswer:
        """One request and its whole answer. `method` must be idempotent (S3's are, for one key and
        body): a kept-alive connection that turns out closed by the server is retried once on a fresh
        one, as that is not a failure of the request. Other transport failures are Transient."""
        for attempt in (1, 2):
            conn = self._connection(scheme, host)
            reused = conn.sock is not None
            try:
                if conn.sock is None:
                    conn.connect()
                    conn.sock.settimeout(self.settings.read_timeout)
                conn.request(method, target, body=body or None, headers=dict(headers))
                response = conn.getresponse()
                content = self._content(method, scheme, host, response)
                if response.will_close:
                    self._drop(scheme, host)
                return LeanAnswer(response.status, CaseInsensitiveDict(response.getheaders()), content)
            except ssl.SSLError as exc:
                self._drop(scheme, host)
                raise tls_error(exc, self.settings, method, f"{scheme}://{host}/") from None
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._drop(scheme, host)
                if reused and attempt == 1:
                    continue  # the server closed an idle connection
                raise Transient(f"{method} {scheme}://{host}: {exc.__class__.__name__}") from None
            except ProtocolError:
                self._drop(scheme, host)
                raise
            except (OSError, socket.timeout, http.client.HTTPException) as exc:
                self._drop(scheme, host)
                raise Transient(f"{method} {scheme}://{host}: {exc.__class__.__name__}") from None
        raise AssertionError("unreachable")
