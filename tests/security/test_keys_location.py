"""Defect 4a: the keys sat in ``data_dir/keys/``, so every copy of the data folder carried its
own key. They now live in their own folder, which the configuration refuses inside data_dir."""

from __future__ import annotations

import pytest

from dicom_node.config import ConfigError, load_config, parse_config
from dicom_node.node import Node
from storage.keys import KeyFileError
from tests.security.installation import node_config, receive, source_series


def test_fresh_node_writes_no_key_inside_the_data_folder(tmp_path):
    config = node_config(tmp_path)
    node = Node(config, workers=0, send=False)
    receive(node, source_series())
    node.db.dispose()
    data = config.node.data_dir
    assert not (data / "keys").exists()
    assert not [p for p in data.rglob("*.key")]
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [
        "quarantine-0001.key", "uid-secret.key", "vault-0001.key"]


def test_default_key_folder_is_beside_not_inside_data_dir(tmp_path):
    default = load_config(None)
    assert default.keys_dir.resolve() not in default.node.data_dir.resolve().parents
    assert default.node.data_dir.resolve() not in default.keys_dir.resolve().parents
    config = parse_config({"node": {"data_dir": str(tmp_path / "data")}})
    assert config.keys_dir == tmp_path / "keys"


@pytest.mark.parametrize("inside", ["var", "var/keys", "var/./sub/../keys"])
def test_key_folder_inside_data_dir_is_refused(tmp_path, inside):
    with pytest.raises(ConfigError, match="keys.dir.*inside node.data_dir"):
        parse_config({"node": {"data_dir": str(tmp_path / "var")},
                      "keys": {"dir": str(tmp_path / inside)}})


@pytest.mark.parametrize("old_key", ["uid_secret_file", "vault_key_file"])
def test_old_key_file_settings_get_a_clear_message(old_key):
    with pytest.raises(ConfigError) as info:
        parse_config({"deid": {old_key: "keys/x.key"}})
    text = "; ".join(info.value.errors)
    assert old_key in text and "[keys]" in text and "init-keys" in text


def test_keys_left_in_the_data_folder_stop_the_node_until_moved(tmp_path):
    config = node_config(tmp_path)
    legacy = config.node.data_dir / "keys"
    legacy.mkdir(parents=True)
    for name in ("vault.key", "uid-secret.key"):
        (legacy / name).write_bytes(b"k" * 32)
        (legacy / name).chmod(0o600)
    with pytest.raises(KeyFileError, match="init-keys"):
        Node(config, workers=0, send=False)
