"""HEAD requests without `requests`: per-thread keep-alive `http.client` connections.

An `ls -l` of a directory whose listing carries no user metadata (S3) costs one HEAD per entry, made
32 at a time by the namespace's stat-ahead. Through a requests Session each HEAD costs about 0.8 ms of
CPU (request preparation, hooks, adapters, urllib3's pool) under the GIL; over a plain http.client
connection about 0.25 ms, so the same listing goes 3-4x faster (measured against SeaweedFS, 32
threads: 1,200 vs 4,250 HEAD/s). Only bodiless requests use this path: everything with a body, a
stream or redirects stays on `http.send`.

Same rules as http.send: timeouts on every request, certificates always verified (the remote's
`ca_file` or certifi's bundle, as requests does), transport failures are Transient, and messages name
only scheme and host.
"""
from __future__ import annotations

import http.client
import socket
import ssl
import threading
from typing import Mapping

import certifi
from requests.structures import CaseInsensitiveDict

from .errors import Transient
from .http import HttpSettings, tls_error


class HeadClient:
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

    def head(self, scheme: str, host: str, target: str, headers: Mapping[str, str]
             ) -> tuple[int, CaseInsensitiveDict]:
        """(status, headers) of `HEAD scheme://host/target`. One retry on a fresh connection when a
        kept-alive one turns out closed by the server (HEAD is idempotent); other failures Transient."""
        for attempt in (1, 2):
            conn = self._connection(scheme, host)
            reused = conn.sock is not None
            try:
                if conn.sock is None:
                    conn.connect()
                    conn.sock.settimeout(self.settings.read_timeout)
                conn.request("HEAD", target, headers=dict(headers))
                response = conn.getresponse()
                response.read()
                if response.will_close:
                    self._drop(scheme, host)
                return response.status, CaseInsensitiveDict(response.getheaders())
            except ssl.SSLError as exc:
                self._drop(scheme, host)
                raise tls_error(exc, self.settings, "HEAD", f"{scheme}://{host}/") from None
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._drop(scheme, host)
                if reused and attempt == 1:
                    continue  # the server closed an idle connection: not a failure of this request
                raise Transient(f"HEAD {scheme}://{host}: {exc.__class__.__name__}") from None
            except (OSError, socket.timeout, http.client.HTTPException) as exc:
                self._drop(scheme, host)
                raise Transient(f"HEAD {scheme}://{host}: {exc.__class__.__name__}") from None
        raise AssertionError("unreachable")
