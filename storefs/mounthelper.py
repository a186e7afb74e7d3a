"""mount(8)'s way of calling storefs: `storefs SOURCE MOUNTPOINT [-o OPTIONS]`.

An fstab line `mycos:backups /mnt/backups fuse.storefs config=/etc/storefs.conf,allow_other 0 0`
makes mount(8) run mount.fuse3, which runs `storefs mycos:backups /mnt/backups -o rw,config=…`
(found on PATH). That is turned into `storefs mount …` here, before argparse sees it. Options that
belong to the command rather than to the mount (`config=`, `log_file=`, `verbose`) are taken out of
the `-o` list in every form, so `storefs mount -o config=FILE` works too.
"""
from __future__ import annotations

from typing import Collection

# Options that are arguments of the command, not mount options: name -> the command's flag.
COMMAND_OPTIONS = {"config": "--config", "log_file": "--log-file"}


def from_mount8(argv: list[str], commands: Collection[str]) -> list[str] | None:
    """`argv` rewritten as a `mount` command when it has mount(8)'s form (a first word that is no
    command and no flag, then a mount point); None otherwise."""
    if len(argv) < 2 or argv[0].startswith("-") or argv[0] in commands or argv[1].startswith("-"):
        return None
    source, mountpoint, rest = argv[0], argv[1], argv[2:]
    # mount(8)'s old form `storefs#SOURCE` (type `fuse`) reaches us with the prefix already removed by
    # mount.fuse3; a user typing it by hand gets the same.
    source = source.removeprefix("storefs#")
    return ["mount", source, mountpoint, *rest]


def split_command_options(option_specs: list[str]) -> tuple[list[str], dict[str, str], int]:
    """Split `-o` values into mount options, the command's own (`config=`, `log_file=`) and the
    verbosity added by `verbose`/`debug`. Mount options keep their order."""
    kept: list[str] = []
    command: dict[str, str] = {}
    verbosity = 0
    for spec in option_specs:
        items = []
        for item in (s.strip() for s in spec.split(",")):
            name, has_value, value = item.partition("=")
            if name in COMMAND_OPTIONS and has_value:
                command[name] = value
            elif item == "verbose":
                verbosity = max(verbosity, 1)
            elif item == "debug":
                verbosity = 2
            elif item:
                items.append(item)
        if items:
            kept.append(",".join(items))
    return kept, command, verbosity
