"""The pieces of mounting at boot, one by one: mount(8)'s argument form, the options it carries, the
systemd unit, the notify protocol, journal logging, and where config keys come from."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
from pathlib import Path

import pytest

from storefs import mounthelper, unitfile
from storefs.config import Config, env_name, environment_remotes
from storefs.errors import ConfigError
from storefs.logsetup import JournalFormatter
from storefs.options import MountOptions
from storefs.sdnotify import Notifier
from storefs.status import status_line
from storefs.wire.auth import aws_credentials

COMMANDS = {"mount", "unmount", "status", "ls", "config"}


# -- mount(8)'s form --------------------------------------------------------------------------------

def test_mount8_form_becomes_a_mount_command():
    argv = ["mycos:backups", "/mnt/backups", "-o", "rw,config=/etc/storefs.conf,allow_other,dev,suid"]
    assert mounthelper.from_mount8(argv, COMMANDS) == ["mount", *argv]
    assert mounthelper.from_mount8(["storefs#mycos:b", "/mnt"], COMMANDS) == ["mount", "mycos:b", "/mnt"]


@pytest.mark.parametrize("argv", [["mount", "a:b", "/mnt"], ["--version"], ["ls", "a:b"], ["a:b"],
                                  ["a:b", "-o", "x"]])
def test_commands_and_flags_are_not_taken_for_mount8(argv):
    assert mounthelper.from_mount8(argv, COMMANDS) is None


def test_command_options_leave_the_mount_options():
    kept, command, verbosity = mounthelper.split_command_options(
        ["rw,config=/etc/s.conf,allow_other", "log_file=/var/log/s.log,verbose", "write_back=5"])
    assert kept == ["rw,allow_other", "write_back=5"]
    assert command == {"config": "/etc/s.conf", "log_file": "/var/log/s.log"}
    assert verbosity == 1


def test_generic_mount8_options_are_ignored_and_ro_rw_honoured():
    generic = ("defaults,auto,noauto,user,users,nouser,suid,nosuid,dev,nodev,exec,noexec,nofail,_netdev,"
               "x-systemd.automount,x-systemd.requires=network-online.target,comment=backups,noatime")
    opts = MountOptions.parse([generic + ",ro,write_back=5"])
    assert opts.read_only and opts.write_back == 5
    assert not MountOptions.parse(["ro", "rw"]).read_only
    with pytest.raises(ConfigError, match="unknown mount option 'nosuchthing'"):
        MountOptions.parse(["defaults,nosuchthing"])


# -- systemd ---------------------------------------------------------------------------------------

def test_systemd_escape_matches_systemd():
    for path in ("/mnt/backups", "/mnt/my backups", "/srv/a-b/c.d", "/", "/.hidden/x", "/mnt/ü"):
        try:
            expected = subprocess.run(["systemd-escape", "--path", path], capture_output=True, text=True,
                                      check=True).stdout.strip()
        except FileNotFoundError:
            expected = {"/mnt/backups": "mnt-backups", "/mnt/my backups": "mnt-my\\x20backups",
                        "/srv/a-b/c.d": "srv-a\\x2db-c.d", "/": "-", "/.hidden/x": "\\x2ehidden-x",
                        "/mnt/ü": "mnt-\\xc3\\xbc"}[path]
        assert unitfile.escape_path(path) == expected, path


def test_unit_is_notify_after_network_and_outlasts_the_drain():
    text = unitfile.render("/usr/local/bin/storefs", "mycos:backups", "/mnt/my backups",
                           ["allow_other,write_back=5"], "/etc/storefs.conf", drain_timeout=600)
    lines = text.splitlines()
    assert "Type=notify" in lines
    assert "After=network-online.target" in lines and "Wants=network-online.target" in lines
    assert "TimeoutStopSec=660" in lines
    start = next(line for line in lines if line.startswith("ExecStart="))
    assert start == ("ExecStart=/usr/local/bin/storefs mount --foreground mycos:backups '/mnt/my backups' "
                     "-o allow_other,write_back=5 --config /etc/storefs.conf")
    assert "ExecStop=/usr/local/bin/storefs unmount --timeout 600 '/mnt/my backups'" in lines


def test_notifier_sends_datagrams_and_dedups_status(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(2)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": path})
        notifier.ready()
        notifier.status("2 upload(s)  pending")
        notifier.status("2 upload(s) pending")       # the same line again: not sent
        notifier.status("all uploaded")
        notifier.stopping()
        got = [sock.recv(4096).decode() for _ in range(4)]
    assert got == ["READY=1", "STATUS=2 upload(s) pending", "STATUS=all uploaded", "STOPPING=1"]


def test_notifier_abstract_socket_and_absent_socket():
    name = f"storefs-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert Notifier.from_environment({"NOTIFY_SOCKET": "@" + name}).send("READY=1")
        assert sock.recv(100) == b"READY=1"
    silent = Notifier.from_environment({})
    assert not silent.enabled and not silent.send("READY=1")
    # A socket nobody listens on: logged, never raised.
    assert not Notifier.from_environment({"NOTIFY_SOCKET": "/nonexistent/sock"}).send("READY=1")


def test_status_line():
    assert status_line({"pending_count": 0}) == "all uploaded"
    line = status_line({"pending_count": 3, "pending_bytes": 3 << 20, "pending_sent": 1 << 20,
                        "pending_failing": 1, "conflicts": [{}]})
    assert line == "3 upload(s) pending, 1.0 MiB of 3.0 MiB sent, 1 failing; 1 conflict(s)"


def test_journal_formatter_prefixes_every_line_with_the_priority():
    formatter = JournalFormatter("%(name)s: %(message)s")
    record = logging.LogRecord("storefs", logging.ERROR, __file__, 1, "first\nsecond", None, None)
    assert formatter.format(record) == "<3>storefs: first\n<3>second"
    record = logging.LogRecord("storefs", logging.WARNING, __file__, 1, "w", None, None)
    assert formatter.format(record) == "<4>storefs: w"


# -- where keys come from --------------------------------------------------------------------------

def _conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "storefs.conf"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_env_name():
    assert env_name("my-s3", "secret_key") == "STOREFS_MY_S3_SECRET_KEY"


def test_environment_wins_over_the_file(tmp_path):
    path = _conf(tmp_path, "[r]\ntype = s3\nendpoint = http://127.0.0.1:1\naccess_key = FILEKEY\n"
                           "secret_key = file-secret\n")
    env = {"STOREFS_R_ACCESS_KEY": "ENVKEY", "STOREFS_R_REGION": "eu-west-1"}
    remote = Config.load(path, env).remote("r")
    assert remote.options["access_key"] == "ENVKEY" and remote.options["secret_key"] == "file-secret"
    assert remote.options["region"] == "eu-west-1"
    assert remote.origins["access_key"] == "env STOREFS_R_ACCESS_KEY" and remote.origins["secret_key"] == "file"


def test_a_remote_from_the_environment_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))   # no config file at the default place
    env = {"STOREFS_ENVR_TYPE": "local", "STOREFS_ENVR_ROOT": str(tmp_path), "STOREFS_TEST_WORKERS": "3"}
    assert environment_remotes(env) == ["envr"]
    remote = Config.load(None, env).remote("envr")
    assert remote.type == "local" and remote.options["root"] == str(tmp_path)
    assert remote.origins["type"] == "env STOREFS_ENVR_TYPE"


def test_secrets_only_in_the_environment_do_not_need_a_private_file(tmp_path):
    path = _conf(tmp_path, "[r]\ntype = s3\nendpoint = http://127.0.0.1:1\naccess_key = AKID\n")
    path.chmod(0o644)
    remote = Config.load(path, {"STOREFS_R_SECRET_KEY": "env-secret"}).remote("r")
    assert remote.options["secret_key"] == "env-secret"
    path.write_text(path.read_text() + "secret_key = in-the-file\n")
    with pytest.raises(ConfigError, match="chmod 600"):
        Config.load(path, {})


def _aws_files(tmp_path: Path) -> dict[str, str]:
    creds = tmp_path / "aws-credentials"
    creds.write_text("[default]\naws_access_key_id = DEFAULTKEY\naws_secret_access_key = default-secret\n\n"
                     "[work]\naws_access_key_id = WORKKEY\naws_secret_access_key = work-secret\n"
                     "aws_session_token = work-token\n")
    conf = tmp_path / "aws-config"
    conf.write_text("[default]\nregion = eu-central-1\n\n[profile cfgonly]\n"
                    "aws_access_key_id = CFGKEY\naws_secret_access_key = cfg-secret\nregion = ap-south-1\n")
    return {"AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_CONFIG_FILE": str(conf)}


def test_aws_chain_order(tmp_path):
    files = _aws_files(tmp_path)
    env_keys = {"AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SECRET_ACCESS_KEY": "env-secret"}
    assert aws_credentials.resolve({**files, **env_keys}).access_key == "ENVKEY"
    # a profile named explicitly beats the environment, as the CLI's --profile does
    assert aws_credentials.resolve({**files, **env_keys}, "work").access_key == "WORKKEY"
    default = aws_credentials.resolve(files)
    assert (default.access_key, default.region) == ("DEFAULTKEY", "eu-central-1")
    work = aws_credentials.resolve({**files, "AWS_PROFILE": "work"})
    assert (work.access_key, work.session_token) == ("WORKKEY", "work-token")
    cfg = aws_credentials.resolve(files, "cfgonly")
    assert (cfg.access_key, cfg.region) == ("CFGKEY", "ap-south-1")
    assert aws_credentials.resolve({**files, "AWS_REGION": "us-west-2"}, "cfgonly").region == "us-west-2"
    with pytest.raises(ConfigError, match="AWS profile 'nosuch'"):
        aws_credentials.resolve(files, "nosuch")
    assert aws_credentials.resolve({"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                                    "AWS_CONFIG_FILE": str(tmp_path / "none")}).access_key == ""


def test_s3_remote_without_keys_takes_the_aws_chain_and_the_file_wins(tmp_path):
    files = _aws_files(tmp_path)
    path = _conf(tmp_path, "[nokeys]\ntype = s3\nendpoint = http://127.0.0.1:1\n\n"
                           "[withprofile]\ntype = s3\nendpoint = http://127.0.0.1:1\nprofile = work\n\n"
                           "[keys]\ntype = s3\nendpoint = http://127.0.0.1:1\naccess_key = FILEKEY\n"
                           "secret_key = file-secret\n\n"
                           "[glacier]\ntype = glacier\naws_profile = cfgonly\n")
    config = Config.load(path, files)
    nokeys = config.remote("nokeys")
    assert nokeys.options["access_key"] == "DEFAULTKEY" and nokeys.options["region"] == "eu-central-1"
    assert nokeys.origins["secret_key"].startswith("AWS profile 'default'")
    assert config.remote("withprofile").options["session_token"] == "work-token"
    assert config.remote("keys").options["access_key"] == "FILEKEY"
    glacier = config.remote("glacier")
    assert (glacier.options["access_key"], glacier.options["region"]) == ("CFGKEY", "ap-south-1")
    # STOREFS_* beats both the file and the AWS chain
    assert Config.load(path, {**files, "STOREFS_NOKEYS_ACCESS_KEY": "STOREFSKEY",
                              "STOREFS_NOKEYS_SECRET_KEY": "storefs-secret"}).remote("nokeys").options[
        "access_key"] == "STOREFSKEY"


def test_missing_keys_say_where_they_may_come_from(tmp_path):
    path = _conf(tmp_path, "[r]\ntype = s3\nendpoint = http://127.0.0.1:1\n")
    empty = {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no"), "AWS_CONFIG_FILE": str(tmp_path / "no")}
    with pytest.raises(ConfigError) as info:
        Config.load(path, empty)
    message = str(info.value)
    assert "missing key(s) access_key, secret_key" in message
    assert "STOREFS_R_ACCESS_KEY" in message and "AWS_ACCESS_KEY_ID" in message
