"""The config file: one INI section per remote, validated before anything mounts.

Default location: `$STOREFS_CONFIG`, else `~/.config/storefs/storefs.conf`. A remote named `local`
is built in (a directory bucket store under `~/.local/share/storefs/buckets`, buckets created on
demand), so storefs works with no config at all; a `[local]` section replaces it.
"""
from __future__ import annotations

import configparser
import dataclasses
import os
import stat
from pathlib import Path

from .errors import ConfigError
from .logsetup import register_secret
from .store.registry import provider_spec

COMMON_KEYS = ("type",)


def default_config_path() -> Path:
    env = os.environ.get("STOREFS_CONFIG")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "storefs" / "storefs.conf"


def default_local_root() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "storefs" / "buckets"


@dataclasses.dataclass(frozen=True)
class Remote:
    name: str
    type: str
    options: dict[str, str]   # every key of the section, defaults filled in

    def __repr__(self) -> str:  # never show option values: some are secrets
        return f"Remote({self.name!r}, type={self.type!r})"


@dataclasses.dataclass(frozen=True)
class RemoteSpec:
    """`REMOTE:BUCKET/PREFIX` as given on the command line. bucket None: every bucket."""

    remote: str
    bucket: str | None
    prefix: str

    @classmethod
    def parse(cls, text: str) -> "RemoteSpec":
        name, sep, rest = text.partition(":")
        if not sep or not name:
            raise ConfigError(f"{text!r} is not REMOTE:BUCKET[/PATH] (e.g. local:demo or mys3:bucket/photos)")
        rest = rest.strip("/")
        bucket, _, prefix = rest.partition("/")
        return cls(name, bucket or None, prefix)

    def __str__(self) -> str:
        return f"{self.remote}:{self.bucket or ''}{'/' + self.prefix if self.prefix else ''}"


class Config:
    def __init__(self, path: Path, remotes: dict[str, Remote]) -> None:
        self.path = path
        self.remotes = remotes

    @classmethod
    def load(cls, path: Path | None = None) -> "Config":
        explicit = path is not None or "STOREFS_CONFIG" in os.environ
        path = path or default_config_path()
        remotes = {"local": _validated("local", {"type": "local", "root": str(default_local_root()),
                                                 "create_buckets": "yes"}, path)}
        if not path.exists():
            if explicit:
                raise ConfigError(f"config file {path} does not exist")
            return cls(path, remotes)
        parser = configparser.ConfigParser(interpolation=None, default_section="__no_defaults__")
        try:
            with open(path, encoding="utf-8") as f:
                parser.read_file(f)
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be parsed: {exc}") from None
        except PermissionError:
            raise ConfigError(f"config file {path} is not readable (check its owner and mode)") from None
        has_secrets = False
        for name in parser.sections():
            section = {k: v.strip() for k, v in parser.items(name)}
            remote = _validated(name, section, path)
            remotes[name] = remote
            has_secrets |= any(remote.options.get(k) for k in provider_spec(remote.type).secrets)
        if has_secrets:
            _check_private(path)
        return cls(path, remotes)

    def remote(self, name: str) -> Remote:
        try:
            return self.remotes[name]
        except KeyError:
            known = ", ".join(sorted(self.remotes))
            raise ConfigError(f"no remote {name!r} in {self.path} (known remotes: {known})") from None


def _validated(name: str, section: dict[str, str], path: Path) -> Remote:
    where = f"remote [{name}] in {path}"
    type_name = section.get("type")
    if not type_name:
        raise ConfigError(f"{where}: missing key 'type' (e.g. type = s3)")
    try:
        spec = provider_spec(type_name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    known = set(COMMON_KEYS) | set(spec.required) | set(spec.optional)
    for group in spec.one_of:
        known |= set(group)
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} for type {type_name} "
                          f"(valid keys: {', '.join(sorted(known - {'type'}))})")
    missing = [k for k in spec.required if not section.get(k)]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)} (type {type_name} needs "
                          f"{', '.join(spec.required)})")
    for group in spec.one_of:
        if not any(section.get(k) for k in group):
            raise ConfigError(f"{where}: set one of {', '.join(group)}")
    options = {k: v for k, v in spec.optional.items() if v != ""}
    options.update(section)
    for key in spec.secrets:
        value = options.get(key, "")
        if value and len(value) < 4:
            raise ConfigError(f"{where}: {key} is too short to be a real credential")
        register_secret(value)
    return Remote(name, type_name, options)


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"config file {path} holds secrets but other users can read it "
                          f"(mode {stat.S_IMODE(mode):04o}); fix it with: chmod 600 {path}")
