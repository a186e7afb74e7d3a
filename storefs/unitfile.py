"""`storefs systemd-unit`: a systemd service that keeps one mount up, and stops it without losing data.

The service runs the mount in the foreground as a `Type=notify` service: systemd learns that the
mount answers from READY=1 (sdnotify.py), shows pending uploads from STATUS=, and stops it through
`storefs unmount`, which waits until what is pending is uploaded; TimeoutStopSec covers that wait
(`drain_timeout`) with a margin, so systemd never kills a daemon that is still uploading on time.
"""
from __future__ import annotations

import shlex
import string

STOP_MARGIN = 60     # seconds beyond drain_timeout before systemd may kill the daemon
START_TIMEOUT = 120  # seconds to mount: the remote's check plus recovery of staged uploads

_PLAIN = set(string.ascii_letters + string.digits + ":_.")


def escape_path(path: str) -> str:
    """systemd-escape --path: `/mnt/my backups` -> `mnt-my\\x20backups` (systemd.unit(5))."""
    trimmed = "/".join(part for part in path.split("/") if part)
    if not trimmed:
        return "-"
    out = []
    for index, char in enumerate(trimmed):
        if char == "/":
            out.append("-")
        elif char in _PLAIN and not (index == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8"))
    return "".join(out)


def unit_name(mountpoint: str) -> str:
    return f"storefs-{escape_path(mountpoint)}.service"


def _quote(arg: str) -> str:
    """An argument for ExecStart=: systemd's own quoting is close enough to the shell's for paths
    and options; `%` is a specifier there and must be doubled."""
    return shlex.quote(arg).replace("%", "%%")


def render(executable: str, source: str, mountpoint: str, options: list[str], config: str | None,
           drain_timeout: float) -> str:
    mount_cmd = [executable, "mount", "--foreground", source, mountpoint]
    for opt in options:
        mount_cmd += ["-o", opt]
    if config:
        mount_cmd += ["--config", config]
    stop_cmd = [executable, "unmount", "--timeout", f"{drain_timeout:.0f}", mountpoint]
    name = unit_name(mountpoint)
    return "\n".join([
        f"# {name}: storefs mount of {source} on {mountpoint}, written by `storefs systemd-unit`.",
        f"# Install:  storefs systemd-unit … > /etc/systemd/system/{name}",
        f"#           systemctl daemon-reload && systemctl enable --now {name}",
        "[Unit]",
        f"Description=storefs mount of {source} on {mountpoint}",
        "Wants=network-online.target",
        "After=network-online.target",
        "Before=remote-fs.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStartPre=/bin/mkdir -p {_quote(mountpoint)}",
        # A mount left dead by a crash ("Transport endpoint is not connected") would refuse the start.
        f"ExecStartPre=-/bin/umount -l {_quote(mountpoint)}",
        "ExecStart=" + " ".join(_quote(arg) for arg in mount_cmd),
        # `storefs unmount` waits for the daemon to upload what is pending; what it could not upload
        # stays staged for the next start.
        "ExecStop=" + " ".join(_quote(arg) for arg in stop_cmd),
        f"TimeoutStartSec={START_TIMEOUT}",
        f"TimeoutStopSec={int(drain_timeout) + STOP_MARGIN}",
        "Restart=on-failure",
        "RestartSec=10",
        "",
        "[Install]",
        "WantedBy=remote-fs.target",
        "WantedBy=multi-user.target",
        "",
    ])
