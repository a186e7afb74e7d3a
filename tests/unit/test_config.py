"""Config validation: every mistake fails with a message naming the remote and the key to fix."""
from __future__ import annotations

import pytest

from storefs.config import Config, RemoteSpec
from storefs.errors import ConfigError
from storefs.logsetup import redact


def load(tmp_path, text: str, mode: int = 0o600) -> Config:
    path = tmp_path / "storefs.conf"
    path.write_text(text)
    path.chmod(mode)
    return Config.load(path)


def test_builtin_local_remote(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "nothing-here"))
    monkeypatch.delenv("STOREFS_CONFIG", raising=False)
    config = Config.load()
    assert config.remote("local").type == "local"


@pytest.mark.parametrize("text, words", [
    ("[r]\nendpoint = x\n", ["[r]", "type"]),
    ("[r]\ntype = nosuch\n", ["[r]", "unknown type 'nosuch'", "s3"]),
    ("[r]\ntype = s3\nendpoint = http://h\naccess_key = AKIAEXAMPLE\n", ["[r]", "secret_key"]),
    ("[r]\ntype = s3\nendpoint = http://h\naccess_key = a1b2\nsecret_key = s3cr3tvalue\nregoin = x\n",
     ["[r]", "regoin", "valid keys", "region"]),
    ("[r]\ntype = cos\nappid = 1\nsecret_id = abcd\nsecret_key = abcdefgh\n", ["[r]", "region", "endpoint"]),
    ("not an ini file", ["cannot be parsed"]),
])
def test_config_mistakes_name_the_fix(tmp_path, text, words):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    for word in words:
        assert word in str(info.value)


def test_readable_config_with_secrets_is_refused(tmp_path):
    text = "[r]\ntype = s3\nendpoint = http://h\naccess_key = a1b2\nsecret_key = TOPSECRETVALUE\n"
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, mode=0o644)
    assert "chmod 600" in str(info.value) and "TOPSECRETVALUE" not in str(info.value)
    config = load(tmp_path, text, mode=0o600)
    assert "TOPSECRETVALUE" not in repr(config.remote("r"))
    assert redact("signed with TOPSECRETVALUE") == "signed with ***"


def test_remote_spec():
    assert RemoteSpec.parse("s3:bucket/a/b/") == RemoteSpec("s3", "bucket", "a/b")
    assert RemoteSpec.parse("s3:") == RemoteSpec("s3", None, "")
    with pytest.raises(ConfigError):
        RemoteSpec.parse("no-colon")


def test_readme_config_examples_are_valid(tmp_path):
    """Every ini example in the README loads and validates as written (no inline-comment traps)."""
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```ini\n(.*?)```", readme, flags=re.S)
    assert blocks
    remotes = set()
    for block in blocks:
        config = load(tmp_path, block)
        for name, remote in config.remotes.items():
            remotes.add(remote.type)
            assert not any("#" in value for value in remote.options.values()), (name, remote.options)
    assert {"s3", "cos", "wcs", "ufile", "local", "cas", "glacier"} <= remotes
