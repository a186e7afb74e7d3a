"""Logging for storefs: levels from -v/-vv, an optional log file, and redaction of secrets.

Every secret read from a config is registered here; a filter replaces it with `***` in every record
(message, arguments and traceback text alike), so no code path can leak one into a log.
"""
from __future__ import annotations

import logging
import os
import threading

_secrets: set[str] = set()
_lock = threading.Lock()
REDACTED = "***"


def register_secret(value: str) -> None:
    # Very short values would redact ordinary words; such secrets are rejected by config validation.
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


# syslog priorities of the logging levels (sd-daemon(3)'s SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG)
_PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITIES.get(record.levelno, 6)
        # Every line of a multi-line record (a traceback) carries the prefix, or journald files the
        # continuation lines at the default priority.
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def stderr_is_journal() -> bool:
    """Is stderr connected to systemd's journal? (JOURNAL_STREAM names its device and inode.)"""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    try:
        st = os.fstat(2)
        return bool(stream) and st.st_dev == int(device) and st.st_ino == int(inode)
    except (OSError, ValueError):
        return False


def setup_logging(verbosity: int, log_file: str | None) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if log_file:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        handler: logging.Handler = logging.StreamHandler(os.fdopen(fd, "a", buffering=1))
    else:
        handler = logging.StreamHandler()
    if not log_file and stderr_is_journal():
        # journald stamps the time itself and reads a `<N>` prefix as the line's priority
        # (sd-daemon(3)), so `journalctl -p warning -u …` filters storefs's lines as it should.
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
