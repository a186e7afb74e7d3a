"""`storefs vault ls|create|delete` through the real command, on the local vault and on moto's Glacier
(issue #13, vault management)."""
from __future__ import annotations

import uuid
from pathlib import Path

from storefs.vaults.local import open_vault_provider
from tests.fuse.harness import Env


def names_listed(env: Env, remote: str) -> dict[str, list[str]]:
    """NAME -> the other columns of `storefs vault ls REMOTE:`."""
    result = env.run("vault", "ls", remote, check=True)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ARCHIVES", "BYTES", "LAST", "INVENTORY", "NAME"]
    return {line.split()[-1]: line.split()[:-1] for line in lines[1:]}


def test_create_list_delete_on_the_local_vault(tmp_path: Path):
    root = tmp_path / "vaults"
    root.mkdir()
    env = Env(tmp_path, {"lv": {"type": "local-vault", "root": str(root)}})
    try:
        name = f"v{uuid.uuid4().hex[:8]}"
        created = env.run("vault", "create", f"lv:{name}", check=True)
        assert created.stdout.strip() == f"created vault {name}"
        assert name in names_listed(env, "lv:")

        # A vault that holds an archive: the service's refusal, exit 1, the vault still there.
        provider = open_vault_provider("t", {"root": str(root)})
        try:
            provider.vault(name).upload_archive(b"data", 4, "a")
        finally:
            provider.close()
        refused = env.run("vault", "delete", f"lv:{name}")
        assert refused.returncode == 1 and "storefs: error:" in refused.stderr, refused
        assert name in names_listed(env, "lv:")

        empty = f"e{uuid.uuid4().hex[:8]}"
        env.run("vault", "create", f"lv:{empty}", check=True)
        deleted = env.run("vault", "delete", f"lv:{empty}", check=True)
        assert deleted.stdout.strip() == f"deleted vault {empty}"
        assert empty not in names_listed(env, "lv:")
    finally:
        env.close()


def test_wrong_forms_are_usage_errors(tmp_path: Path):
    root = tmp_path / "vaults"
    root.mkdir()
    env = Env(tmp_path, {"lv": {"type": "local-vault", "root": str(root)},
                         "b": {"type": "local", "root": str(tmp_path / "buckets")}})
    try:
        for args, says in ((("vault", "ls", "lv:v1"), "give the remote alone"),
                           (("vault", "create", "lv:"), "name the vault"),
                           (("vault", "create", "b:x"), "not an archive vault remote"),
                           (("vault", "ls", "nosuch:"), "nosuch")):
            result = env.run(*args)
            assert result.returncode == 2 and says in result.stderr, (args, result.stderr)
    finally:
        env.close()


def test_create_list_delete_on_glacier(tmp_path: Path, moto_glacier):
    section = {"type": "glacier", "endpoint": moto_glacier.endpoint, "access_key": moto_glacier.access_key,
               "secret_key": moto_glacier.secret_key, "region": moto_glacier.region, "profile": "moto",
               "retries": "2"}
    env = Env(tmp_path, {"g": section})
    try:
        name = f"v{uuid.uuid4().hex[:10]}"
        env.run("vault", "create", f"g:{name}", check=True)
        assert name in names_listed(env, "g:")
        env.run("vault", "delete", f"g:{name}", check=True)
        assert name not in names_listed(env, "g:")
    finally:
        env.close()
