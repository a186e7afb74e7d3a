"""systemd's notify protocol (sd_notify(3)), spoken by a mount running in the foreground.

When systemd starts a `Type=notify` service it sets NOTIFY_SOCKET to a datagram socket: a path, or
an abstract socket written with a leading `@`. The service sends newline-separated `KEY=VALUE`
lines: READY=1 once it serves (here: once the mount answers), STATUS=… a line for `systemctl
status`, STOPPING=1 when it begins to shut down (here: the unmount, while pending uploads drain).
Without NOTIFY_SOCKET every call does nothing. A failure to send is logged once and never stops the
mount: notifications are a courtesy to the supervisor.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None) -> None:
        self._address = address
        self._lock = threading.Lock()
        self._last_status = ""
        self._warned = False

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> "Notifier":
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        if address and not (address.startswith("/") or address.startswith("@")):
            log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract socket: not notifying", address)
            address = None
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self) -> None:
        self.send("READY=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def status(self, text: str) -> None:
        """STATUS=text, sent only when it changed (the reporter calls this on every status write)."""
        text = " ".join(text.split())
        with self._lock:
            if text == self._last_status:
                return
            self._last_status = text
        self.send(f"STATUS={text}")

    def send(self, message: str) -> bool:
        if self._address is None:
            return False
        # "@name" is the abstract namespace: a NUL byte takes the place of the "@".
        target = "\0" + self._address[1:] if self._address.startswith("@") else self._address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode("utf-8"), target)
            return True
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at NOTIFY_SOCKET (%s): %s", self._address, exc)
            return False
