"""The config file: one INI section per remote, validated before anything mounts.

Default location: `$STOREFS_CONFIG`, else `~/.config/storefs/storefs.conf`. A remote named `local`
is built in (a directory bucket store under `~/.local/share/storefs/buckets`, buckets created on
demand), so storefs works with no config at all; a `[local]` section replaces it.

Where a key's value comes from, first found wins (as rclone's RCLONE_CONFIG_<REMOTE>_<KEY>):
1. the environment, `STOREFS_<REMOTE>_<KEY>` (remote and key upper-cased, other characters than
   letters and digits written `_`); `STOREFS_<REMOTE>_TYPE` alone defines a remote the file lacks;
2. the remote's section in the config file;
3. for remotes signed with AWS keys (s3, glacier), the AWS CLI's places (wire/auth/aws_credentials.py);
4. the type's default.
"""
from __future__ import annotations

import configparser
import dataclasses
import os
import re
import stat
from pathlib import Path
from typing import Mapping

from .errors import ConfigError
from .logsetup import register_secret
from .store.registry import ProviderSpec, provider_spec
from .wire.auth import aws_credentials

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
    # key -> where its value came from ("file", "env STOREFS_…", "AWS profile …"); defaults absent
    origins: dict[str, str] = dataclasses.field(default_factory=dict, compare=False)

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
    def load(cls, path: Path | None = None, env: Mapping[str, str] | None = None) -> "Config":
        env = os.environ if env is None else env
        explicit = path is not None or "STOREFS_CONFIG" in env
        path = path or default_config_path()
        sections = {"local": {"type": "local", "root": str(default_local_root()), "create_buckets": "yes"}}
        from_file: set[str] = set()
        if path.exists():
            parser = read_config_file(path)
            for name in parser.sections():
                sections[name] = {k: v.strip() for k, v in parser.items(name)}
                from_file.add(name)
        elif explicit:
            raise ConfigError(f"config file {path} does not exist")
        for name in environment_remotes(env):
            sections.setdefault(name, {})
        remotes: dict[str, Remote] = {}
        file_has_secrets = False
        for name, section in sections.items():
            remote = validate_remote(name, section, path, env, "file" if name in from_file else "built in")
            remotes[name] = remote
            file_has_secrets |= any(remote.origins.get(k) == "file" and remote.options.get(k)
                                    for k in provider_spec(remote.type).secrets)
        if file_has_secrets:
            _check_private(path)
        return cls(path, remotes)

    def remote(self, name: str) -> Remote:
        try:
            return self.remotes[name]
        except KeyError:
            known = ", ".join(sorted(self.remotes))
            raise ConfigError(f"no remote {name!r} in {self.path} (known remotes: {known})") from None


def read_config_file(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, default_section="__no_defaults__")
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be parsed: {exc}") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable (check its owner and mode)") from None
    return parser


def env_name(remote: str, key: str) -> str:
    """The environment variable that sets `key` of `remote`: STOREFS_<REMOTE>_<KEY>."""
    return "STOREFS_" + re.sub(r"[^A-Z0-9]", "_", f"{remote}_{key}".upper())


_ENV_REMOTE = re.compile(r"^STOREFS_([A-Z0-9][A-Z0-9_]*)_TYPE$")


def environment_remotes(env: Mapping[str, str]) -> list[str]:
    """Remotes defined by the environment alone (`STOREFS_<REMOTE>_TYPE`), named in lower case."""
    return sorted(match.group(1).lower() for var in env if (match := _ENV_REMOTE.match(var)) and env[var])


def known_keys(spec: ProviderSpec) -> set[str]:
    known = set(COMMON_KEYS) | set(spec.required) | set(spec.optional)
    for group in spec.one_of:
        known |= set(group)
    return known


def validate_remote(name: str, section: dict[str, str], path: Path, env: Mapping[str, str] | None = None,
               origin: str = "file") -> Remote:
    env = {} if env is None else env
    where = f"remote [{name}] in {path}" if origin == "file" else f"remote [{name}]"
    section = dict(section)
    origins = {key: origin for key in section}
    type_var = env_name(name, "type")
    if env.get(type_var):
        section["type"], origins["type"] = env[type_var].strip(), f"env {type_var}"
    type_name = section.get("type")
    if not type_name:
        raise ConfigError(f"{where}: missing key 'type' (e.g. type = s3)")
    try:
        spec = provider_spec(type_name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    known = known_keys(spec)
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} for type {type_name} "
                          f"(valid keys: {', '.join(sorted(known - {'type'}))})")
    for key in sorted(known - {"type"}):
        value = env.get(env_name(name, key))
        if value is not None:
            section[key], origins[key] = value.strip(), f"env {env_name(name, key)}"
    if spec.aws_profile_key:
        _fill_from_aws(section, origins, spec, env, where)
    missing = [k for k in spec.required if not section.get(k)]
    if missing:
        hint = ("; or give them as the AWS CLI takes them: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "~/.aws/credentials, a profile" if spec.aws_profile_key else "")
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)} (type {type_name} needs "
                          f"{', '.join(spec.required)}; or set {env_name(name, missing[0])}{hint})")
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
    return Remote(name, type_name, options, origins)


_AWS_FIELDS = (("access_key", "access_key"), ("secret_key", "secret_key"),
               ("session_token", "session_token"), ("region", "region"))


def _fill_from_aws(section: dict[str, str], origins: dict[str, str], spec: ProviderSpec,
                   env: Mapping[str, str], where: str) -> None:
    """Keys the remote leaves out, from the AWS CLI's chain: only when access_key and secret_key are
    both missing (a half-given pair is the remote's own mistake, reported as such)."""
    if section.get("access_key") or section.get("secret_key"):
        return
    try:
        found = aws_credentials.resolve(env, section.get(spec.aws_profile_key, ""))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not (found.access_key and found.secret_key):
        return
    for key, attr in _AWS_FIELDS:
        value = getattr(found, attr)
        if value and not section.get(key) and key in known_keys(spec):
            section[key], origins[key] = value, found.source


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"config file {path} holds secrets but other users can read it "
                          f"(mode {stat.S_IMODE(mode):04o}); fix it with: chmod 600 {path}")
