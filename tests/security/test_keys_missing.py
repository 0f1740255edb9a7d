"""Defect 4b: a missing key was silently made anew (old vault rows stopped decrypting,
pseudonyms changed). Now the node refuses to start and names the file to restore; keys are
created only on a fresh installation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dicom_node.node import Node
from storage.keys import MissingKeyError
from tests.nodeproc import write_config
from tests.security.installation import burned_in, node_config, receive, source_series


def _installation_with_data(root):
    config = node_config(root)
    node = Node(config, workers=0, send=False)
    receive(node, source_series())
    assert node.receiver.ingest(burned_in(), "PACS") == 0  # a quarantined instance too
    node.db.dispose()
    return config


@pytest.mark.parametrize("name", ["uid-secret.key", "vault-0001.key", "quarantine-0001.key"])
def test_missing_key_with_data_refuses_and_names_the_file(tmp_path, name):
    config = _installation_with_data(tmp_path)
    keys = tmp_path / "keys"
    before = {p.name: p.read_bytes() for p in keys.iterdir()}
    (keys / name).unlink()
    with pytest.raises(MissingKeyError) as info:
        Node(config, workers=0, send=True)
    message = str(info.value)
    assert str(keys / name) in message and "Restore" in message
    # Nothing was made anew: the other keys are untouched and the missing one stays missing.
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == {
        k: v for k, v in before.items() if k != name}


def test_serve_exits_with_the_message_instead_of_regenerating(tmp_path):
    config = _installation_with_data(tmp_path)
    (tmp_path / "keys" / "vault-0001.key").unlink()
    path = tmp_path / "node.toml"
    write_config(path, {"node": {"data_dir": str(config.node.data_dir), "port": 1,
                                 "min_free_disk_mb": 1},
                        "database": {"url": config.database.url},
                        "keys": {"dir": str(tmp_path / "keys")}}, [])
    out = subprocess.run([sys.executable, "-m", "dicom_node.cli", "serve", "--config",
                          str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stderr
    assert "vault-0001.key" in out.stderr and "Restore" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "keys" / "vault-0001.key").exists()


def test_data_files_alone_count_as_data(tmp_path):
    """An empty database but a data folder with studies (e.g. a half-restored backup)."""
    config = _installation_with_data(tmp_path)
    config.node.data_dir.joinpath("node.db").unlink()
    for extra in config.node.data_dir.glob("node.db-*"):
        extra.unlink()
    (tmp_path / "keys" / "uid-secret.key").unlink()
    with pytest.raises(MissingKeyError, match="files under"):
        Node(config, workers=0, send=False)


def test_worker_never_creates_keys(tmp_path):
    config = node_config(tmp_path)
    with pytest.raises(MissingKeyError, match="never creates keys"):
        Node(config, receive=False, complete=False, send=False, workers=1)
    assert not (tmp_path / "keys").exists() or not any((tmp_path / "keys").iterdir())


def test_init_keys_creates_them_on_a_fresh_install_only(tmp_path, capsys):
    from dicom_node.cli import main

    path = tmp_path / "node.toml"
    write_config(path, {"node": {"data_dir": str(tmp_path / "var")},
                        "database": {"url": f"sqlite:///{tmp_path / 'var' / 'node.db'}"},
                        "keys": {"dir": str(tmp_path / "keys")}}, [])
    assert main(["init-keys", "--config", str(path)]) == 0
    assert "created" in capsys.readouterr().out
    first = {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()}
    assert len(first) == 3
    assert main(["init-keys", "--config", str(path)]) == 0  # idempotent: nothing replaced
    assert {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()} == first
