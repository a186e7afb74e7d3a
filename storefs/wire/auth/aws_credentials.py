"""AWS credentials where the AWS CLI finds them, for remotes whose config leaves the keys out.

The order is the AWS CLI's (https://docs.aws.amazon.com/cli/latest/userguide/cli-configure-files.html):
1. a profile named explicitly (the remote's own `profile =` key, as the CLI's `--profile`) is read
   from the shared files and nothing else;
2. else the environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN;
3. else the profile `$AWS_PROFILE` (default: `default`) from the shared credentials file
   (`$AWS_SHARED_CREDENTIALS_FILE`, default ~/.aws/credentials, sections `[name]`), then from the
   shared config file (`$AWS_CONFIG_FILE`, default ~/.aws/config, sections `[profile name]`, and
   `[default]`).
The region comes from AWS_REGION/AWS_DEFAULT_REGION, then the profile's `region`.
Credential processes, SSO and instance roles are not read (they need AWS's own tooling).
"""
from __future__ import annotations

import configparser
import dataclasses
import os
from pathlib import Path
from typing import Mapping

from ...errors import ConfigError


@dataclasses.dataclass(frozen=True)
class AwsCredentials:
    access_key: str = ""
    secret_key: str = dataclasses.field(default="", repr=False)
    session_token: str = dataclasses.field(default="", repr=False)
    region: str = ""
    source: str = ""          # where the keys came from, for messages (never the keys themselves)


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def credentials_file(env: Mapping[str, str]) -> Path:
    return Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or _home() / ".aws" / "credentials")


def config_file(env: Mapping[str, str]) -> Path:
    return Path(env.get("AWS_CONFIG_FILE") or _home() / ".aws" / "config")


def _read_ini(path: Path) -> configparser.ConfigParser | None:
    parser = configparser.ConfigParser(interpolation=None, default_section="__no_defaults__")
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise ConfigError(f"{path} is not readable (check its owner and mode)") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be parsed: {str(exc).splitlines()[0]}") from None
    return parser


def _profile_keys(profile: str, env: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """The keys of `profile` from the credentials file, then the config file, and where they were."""
    merged: dict[str, str] = {}
    sources = []
    for path, section in ((credentials_file(env), profile),
                          (config_file(env), profile if profile == "default" else f"profile {profile}")):
        parser = _read_ini(path)
        if parser is None or not parser.has_section(section):
            continue
        found = {k: v.strip() for k, v in parser.items(section)}
        for key, value in found.items():
            merged.setdefault(key, value)
        sources.append(f"{path} [{section}]")
    return merged, " and ".join(sources)


def resolve(env: Mapping[str, str], profile: str = "") -> AwsCredentials:
    """What the AWS CLI would use; empty fields where nothing is found. A profile named explicitly
    that exists nowhere is an error (the CLI says "The config profile could not be found")."""
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
    if not profile and env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return AwsCredentials(env["AWS_ACCESS_KEY_ID"].strip(), env["AWS_SECRET_ACCESS_KEY"].strip(),
                              env.get("AWS_SESSION_TOKEN", "").strip(), region, "the AWS_* environment")
    explicit = bool(profile)
    profile = profile or env.get("AWS_PROFILE") or "default"
    keys, where = _profile_keys(profile, env)
    if not where:
        if explicit or env.get("AWS_PROFILE"):
            raise ConfigError(f"AWS profile {profile!r} is not in {credentials_file(env)} or "
                              f"{config_file(env)}")
        return AwsCredentials(region=region)
    return AwsCredentials(keys.get("aws_access_key_id", ""), keys.get("aws_secret_access_key", ""),
                          keys.get("aws_session_token", ""), region or keys.get("region", ""),
                          f"AWS profile {profile!r} ({where})")
