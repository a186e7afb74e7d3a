"""A counting TCP relay in front of the S3 endpoint: exact bytes from the server to the mounts.

The random-read rows report the read traffic a mount caused as a ratio of the object size. /proc/net/dev
on lo would also count SeaweedFS's own internal traffic (its S3 gateway, filer and volume server talk
over loopback), so the mounts of those rows talk to the server through this relay instead, and the
bytes it forwards from the server (HTTP headers and bodies, nothing else) are the traffic.

One thread per direction per connection; sockets only on 127.0.0.1. Used as a context manager: at exit
the listener and every open connection are closed and the threads joined (bounded).
"""
from __future__ import annotations

import contextlib
import socket
import threading

BUFFER = 256 * 1024


class Relay:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self._down = 0            # bytes from the server to the clients
        self._up = 0              # bytes from the clients to the server
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)   # accept() wakes up to see close(): closing alone may not wake it
        self.port = self._listener.getsockname()[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def counts(self) -> tuple[int, int]:
        """(bytes from the server, bytes to the server) so far."""
        with self._lock:
            return self._down, self._up

    def _count(self, down: int, up: int) -> None:
        with self._lock:
            self._down += down
            self._up += up

    def __enter__(self) -> Relay:
        self._start(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._closed.is_set():
                    client.close()
                    server.close()
                    return
                self._sockets.update((client, server))
            pending = [2]   # pumps still running on this connection: the last one closes both sockets
            self._start(self._pump, server, client, True, pending)
            self._start(self._pump, client, server, False, pending)

    def _pump(self, source: socket.socket, target: socket.socket, downstream: bool, pending: list[int]) -> None:
        buf = bytearray(BUFFER)
        view = memoryview(buf)
        try:
            while n := source.recv_into(buf):
                target.sendall(view[:n])
                self._count(n if downstream else 0, 0 if downstream else n)
        except OSError:
            pass
        # Half-close so that the other side sees the end, as it would without the relay.
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)
        with self._lock:
            pending[0] -= 1
            last = pending[0] == 0
            if last:
                self._sockets.difference_update((source, target))
        if last:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        for thread in list(self._threads):
            thread.join(timeout=5)
