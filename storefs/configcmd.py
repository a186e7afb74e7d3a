"""`storefs config`: create, show, check and delete remotes without editing the file by hand.

The file is edited as text, section by section, so comments and the layout of the other remotes
survive (configparser would drop every comment). It is written atomically (a temporary file renamed
over it) and is private (0600) from the first byte: it holds secrets. Secrets are never printed:
`show` masks them, and an error names the key, never its value.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from .config import Config, default_config_path, known_keys, validate_remote
from .errors import ConfigError
from .store.registry import PROVIDERS, provider_spec

MASK = "********"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SECTION = re.compile(r"^\s*\[([^\]]*)\]\s*$")


def config_path(explicit: str | None) -> Path:
    return Path(explicit) if explicit else default_config_path()


def create(path: Path, name: str, type_name: str, pairs: list[str]) -> str:
    """Add remote `name` of `type_name` with KEY=VALUE `pairs`, checked as a mount would check it."""
    if not _NAME.match(name):
        raise ConfigError(f"remote name {name!r}: use letters, digits and _ . - (starting with a letter "
                          f"or digit)")
    if type_name not in PROVIDERS:
        raise ConfigError(f"unknown type {type_name!r} (known types: {', '.join(sorted(PROVIDERS))})")
    spec = provider_spec(type_name)
    section: dict[str, str] = {"type": type_name}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{pair.split('=')[0]!r}: give keys as KEY=VALUE")
        if key == "type":
            raise ConfigError("the type is the second argument, not a key")
        if key not in known_keys(spec):
            raise ConfigError(f"unknown key {key!r} for type {type_name} (valid keys: "
                              f"{', '.join(sorted(known_keys(spec) - {'type'}))})")
        if "\n" in value or "\r" in value:
            raise ConfigError(f"the value of {key} must be one line")
        section[key] = value.strip()
    text = _read(path)
    if name in _sections(text):
        raise ConfigError(f"remote [{name}] already exists in {path}: delete it first "
                          f"(storefs config delete {name})")
    # Checked as the mount will check it: required keys (or where else they may come from), values.
    validate_remote(name, section, path, os.environ)
    block = f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in section.items())
    if text and not text.endswith("\n"):
        text += "\n"
    _write(path, text + ("\n" if text.strip() else "") + block)
    return f"created remote [{name}] ({type_name}) in {path}"


def delete(path: Path, name: str) -> str:
    text = _read(path)
    if name not in _sections(text):
        raise ConfigError(f"no remote [{name}] in {path}")
    kept, inside = [], False
    for line in text.splitlines(keepends=True):
        match = _SECTION.match(line)
        if match:
            inside = match.group(1).strip() == name
        if not inside:
            kept.append(line)
    _write(path, "".join(kept).rstrip("\n") + "\n" if "".join(kept).strip() else "")
    return f"deleted remote [{name}] from {path}"


def show(config: Config, name: str | None) -> str:
    """The remotes (or one) as INI text, with secrets masked and where an env variable set a key."""
    names = [name] if name else sorted(config.remotes)
    out = []
    for remote_name in names:
        remote = config.remote(remote_name)
        secrets = set(provider_spec(remote.type).secrets)
        out.append(f"[{remote_name}]")
        keys = ["type", *sorted(k for k in remote.options if k != "type" and k in remote.origins)]
        for key in keys:
            value = remote.options[key]
            shown = MASK if key in secrets and value else value
            origin = remote.origins.get(key, "file")
            note = "" if origin == "file" else f"    # from {origin}"
            out.append(f"{key} = {shown}{note}")
        out.append("")
    return "\n".join(out).rstrip("\n")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable (check its owner and mode)") from None


def _sections(text: str) -> set[str]:
    return {match.group(1).strip() for line in text.splitlines() if (match := _SECTION.match(line))}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".storefs-conf.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
