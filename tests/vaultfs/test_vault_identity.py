"""Where vault state lives: per vault service identity (endpoint or region, account; the local vault's
root), never per remote name alone; the older layout is never mistaken for the new one; the change
counter and the hand-over of an inventory to another state directory."""
from __future__ import annotations

from pathlib import Path

from storefs.fs.vault.state import (
    Inventory,
    VaultState,
    legacy_state_dir,
    mark_identity,
    state_dir_for,
)
from storefs.vaults import cas, glacier
from storefs.vaults.base import ArchiveInfo
from storefs.vaults.local import open_vault_provider

CAS = {"appid": "1250000000", "secret_id": "AKIDexample", "secret_key": "secret-never-shown"}
GLACIER = {"access_key": "AKIAexample", "secret_key": "secret-never-shown"}


def test_identity_names_service_endpoint_and_account(tmp_path: Path):
    chengdu = cas.open_provider("r", {**CAS, "region": "ap-chengdu"})
    beijing = cas.open_provider("r", {**CAS, "region": "ap-beijing"})
    other_app = cas.open_provider("r", {**CAS, "appid": "1250000001", "region": "ap-chengdu"})
    same_by_endpoint = cas.open_provider("other-name", {**CAS, "endpoint": "https://cas.ap-chengdu.myqcloud.com"})
    aws = glacier.open_provider("r", {**GLACIER, "region": "eu-west-1"})
    local_a = open_vault_provider("r", {"root": str(tmp_path)})
    (tmp_path / "b").mkdir()
    local_b = open_vault_provider("r", {"root": str(tmp_path / "b")})
    try:
        identities = [p.identity for p in (chengdu, beijing, other_app, aws, local_a, local_b)]
        assert len(set(identities)) == len(identities)
        assert chengdu.identity == same_by_endpoint.identity  # the remote's name is not part of it
        assert chengdu.identity == "cas https://cas.ap-chengdu.myqcloud.com account 1250000000"
        assert aws.identity == "glacier https://glacier.eu-west-1.amazonaws.com account -"
        for identity in identities:
            assert "secret" not in identity and "AKI" not in identity
        dirs = {state_dir_for(tmp_path, i) for i in identities}
        assert len(dirs) == len(identities) and all(d.parent == tmp_path / "vaults" for d in dirs)
    finally:
        for provider in (chengdu, beijing, other_app, same_by_endpoint, aws, local_a, local_b):
            provider.close()


def test_the_older_layout_is_never_taken_for_the_new(tmp_path: Path):
    # Even a remote named exactly like an identity gets another directory under the old scheme.
    identity = "cas https://cas.ap-chengdu.myqcloud.com account 1250000000"
    assert legacy_state_dir(tmp_path, identity) != state_dir_for(tmp_path, identity)
    assert len(state_dir_for(tmp_path, identity).name.rsplit("-", 1)[1]) == 16
    assert len(legacy_state_dir(tmp_path, "r").name.rsplit("-", 1)[1]) == 10


def test_identity_file_and_garbage_in_the_state(tmp_path: Path):
    root = state_dir_for(tmp_path, "local-vault /x")
    mark_identity(root, "local-vault /x")
    assert '"identity":"local-vault /x"' in (root / "identity.json").read_text()
    (root / "identity.json").write_text("garbage")
    mark_identity(root, "local-vault /x")  # rewritten, no crash
    assert "local-vault /x" in (root / "identity.json").read_text()
    state = VaultState(root / "v")
    (state.root / "changes").write_text("not a number")
    assert state.changes() == 0
    assert state.note_change() == 1 and state.note_change() == 2 and state.changes() == 2
    (state.root / "deleted" / "x.json").write_text("{")
    assert state.tombstones() == []


def test_adopt_inventory_keeps_the_newer(tmp_path: Path):
    state = VaultState(tmp_path / "v")
    archive = ArchiveInfo("a" * 20, "f", 1, 10.0, None)
    assert state.adopt_inventory(Inventory(100.0, "job1", [archive]))
    before = state.changes()
    assert not state.adopt_inventory(Inventory(50.0, "job0", []))  # older: ignored
    assert state.load_inventory().job_id == "job1" and state.changes() == before
    assert state.adopt_inventory(Inventory(200.0, "job2", []))
    assert state.load_inventory().job_id == "job2" and state.changes() == before + 1
