"""``dicom-node rotate-keys``: a new vault and quarantine key, every vault row and quarantined
file re-encrypted, old keys no longer needed, the UID secret (and so every pseudonym) kept.
Installations from before the key split are upgraded: the migration gives their vault rows key
id 0, ``init-keys`` moves the old key out of the data folder, rotation separates the keys."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from alembic import command
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import insert, select

from dicom_node.cli import main
from dicom_node.node import Node
from storage import migrate, quarantine
from storage.database import Database
from storage.files import FileStore
from storage.keys import QUARANTINE, VAULT, KeyFileError, KeyFolder, sealed_key_id
from storage.tables import Quarantined
from storage.vault import Vault, VaultStudy, VaultUid
from tests.nodeproc import write_config
from tests.pg import PrivatePostgres
from tests.security.installation import burned_in, node_config, receive, source_series


def _config_file(root, config) -> str:
    path = root / "node.toml"
    write_config(path, {"node": {"data_dir": str(config.node.data_dir)},
                        "database": {"url": config.database.url},
                        "keys": {"dir": str(config.keys_dir)}}, [])
    return str(path)


def _vault_key_ids(db: Database) -> set[int]:
    with db.session() as s:
        ids = {sealed_key_id(v) for v in s.scalars(select(VaultUid.original))}
        for payload, offset in s.execute(select(VaultStudy.payload, VaultStudy.date_offset)):
            ids |= {sealed_key_id(payload), sealed_key_id(offset)}
    return ids


def test_rotation_reencrypts_everything_and_keeps_pseudonyms(tmp_path, capsys):
    config = node_config(tmp_path)
    series = source_series()
    node = Node(config, workers=0, send=False)
    stored = receive(node, series)
    source = burned_in()
    assert node.receiver.ingest(source.copy(), "PACS") == 0
    with node.db.session() as s:
        (relative,) = s.scalars(select(Quarantined.path)).all()
        pseudo_study = s.scalars(select(VaultStudy.pseudo_study_uid)).one()
    folder = KeyFolder(config.keys_dir)
    original_bytes = quarantine.open_sealed(node.files, folder.ring(QUARANTINE), relative)
    identity = node.vault.identity_for_study(pseudo_study)
    secret = folder.uid_secret()
    node.db.dispose()

    assert main(["rotate-keys", "--config", _config_file(tmp_path, config)]) == 0
    out = capsys.readouterr().out
    assert "vault-0002.key" in out and "quarantine-0002.key" in out

    db = Database(config.database.url)
    assert _vault_key_ids(db) == {2}
    with db.session() as s:
        (relative2,) = s.scalars(select(Quarantined.path)).all()
    files = FileStore(config.node.data_dir)
    assert relative2 != relative and not files.absolute(relative).exists()
    assert quarantine.sealed_key_id(files, relative2) == 2
    # The old keys are no longer needed for anything.
    for name in ("vault-0001.key", "quarantine-0001.key"):
        (config.keys_dir / name).unlink()
    assert quarantine.open_sealed(files, folder.ring(QUARANTINE), relative2) == original_bytes
    assert Vault(db, folder.ring(VAULT)).identity_for_study(pseudo_study) == identity
    db.dispose()
    assert folder.uid_secret() == secret

    # Pseudonyms are unchanged: the same instance received again maps to the same file.
    node = Node(config, workers=0, send=False)
    again = receive(node, series[:1])
    node.db.dispose()
    assert set(again) == set(stored)


def _legacy_installation(root, database_url: str):
    """An installation as the code before the key split left it: one key under data_dir."""
    config = node_config(root, database_url=database_url)
    data = config.node.data_dir
    (data / "keys").mkdir(parents=True)
    legacy_key, secret = os.urandom(32), os.urandom(32)
    for name, value in (("vault.key", legacy_key), ("uid-secret.key", secret)):
        fd = os.open(data / "keys" / name, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, value)
        os.close(fd)
    db = Database(database_url)
    with db.engine.begin() as connection:
        command.upgrade(migrate.alembic_config(connection), "0002")

    def seal(plain: bytes, aad: str) -> bytes:  # the pre-split format: nonce | ciphertext
        nonce = os.urandom(12)
        return nonce + AESGCM(legacy_key).encrypt(nonce, plain, aad.encode())

    now = dt.datetime.now(dt.UTC)
    with db.engine.begin() as c:
        c.execute(insert(VaultUid.__table__).values(
            pseudo_uid="2.25.77", pseudo_study_uid="2.25.70", created_at=now,
            original=seal(b"1.2.826.0.1.77", "vault_uids|2.25.77|original")))
        c.execute(insert(VaultStudy.__table__).values(
            pseudo_study_uid="2.25.70", pseudo_patient_id="ANON-AAAAAAAAAA", created_at=now,
            payload=seal(b"identity-payload", "vault_studies|2.25.70|payload"),
            date_offset=seal((-42).to_bytes(4, "big", signed=True),
                             "vault_studies|2.25.70|date_offset")))
        relative = "quarantine/0123456789abcdef.dcm.enc"
        (data / "quarantine").mkdir()
        (data / relative).write_bytes(seal(b"quarantined-original", relative))
        c.execute(insert(Quarantined.__table__).values(
            received_at=now.replace(tzinfo=None), calling_ae="PACS",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.7", reason_code="sop-class", reason="sc",
            path=relative))
    db.dispose()
    return config, legacy_key, relative


def _upgrade_and_rotate(root, config, legacy_key, relative, capsys) -> None:
    with pytest.raises(KeyFileError, match="init-keys"):
        Node(config, workers=0, send=False)  # migrates, then refuses: key inside data_dir
    path = _config_file(root, config)
    assert main(["init-keys", "--config", path]) == 0
    assert "rotate-keys" in capsys.readouterr().out
    assert not (config.node.data_dir / "keys").exists()
    folder = KeyFolder(config.keys_dir)
    assert folder.ring(VAULT).key(0) == legacy_key == folder.ring(QUARANTINE).key(0)

    db = Database(config.database.url)
    files = FileStore(config.node.data_dir)
    assert _vault_key_ids(db) == {0}
    vault = Vault(db, folder.ring(VAULT))
    assert vault.original_uid("2.25.77") == "1.2.826.0.1.77"
    assert vault.identity_for_study("2.25.70").date_offset_days == -42
    assert quarantine.open_sealed(files, folder.ring(QUARANTINE), relative) == \
        b"quarantined-original"

    assert main(["rotate-keys", "--config", path]) == 0
    for name in ("vault-0000.key", "quarantine-0000.key"):
        (config.keys_dir / name).unlink()
    assert folder.ring(VAULT).key(1) != folder.ring(QUARANTINE).key(1)  # separate at last
    assert _vault_key_ids(db) == {1}
    vault = Vault(db, folder.ring(VAULT))
    assert vault.original_uid("2.25.77") == "1.2.826.0.1.77"
    assert vault.identity_for_study("2.25.70").payload == b"identity-payload"
    with db.session() as s:
        (now_at,) = s.scalars(select(Quarantined.path)).all()
    assert quarantine.open_sealed(files, folder.ring(QUARANTINE), now_at) == \
        b"quarantined-original"
    db.dispose()


def test_pre_split_installation_upgrades_then_rotates_sqlite(tmp_path, capsys):
    config, key, relative = _legacy_installation(
        tmp_path, f"sqlite:///{tmp_path / 'var' / 'node.db'}")
    _upgrade_and_rotate(tmp_path, config, key, relative, capsys)


@pytest.mark.slow
def test_pre_split_installation_upgrades_then_rotates_postgres(tmp_path, capsys):
    pg = PrivatePostgres(tmp_path / "pg").start()
    try:
        config, key, relative = _legacy_installation(tmp_path / "node", pg.url)
        _upgrade_and_rotate(tmp_path / "node", config, key, relative, capsys)
    finally:
        pg.stop()


def test_finish_reseals_rows_written_with_an_old_key_without_a_new_key(tmp_path, capsys):
    """A receiver left running during a rotation keeps sealing with the key it loaded."""
    config = node_config(tmp_path)
    node = Node(config, workers=0, send=False)
    receive(node, source_series())
    node.db.dispose()
    path = _config_file(tmp_path, config)
    folder = KeyFolder(config.keys_dir)
    old_ring = folder.ring(VAULT)
    assert main(["rotate-keys", "--config", path]) == 0
    db = Database(config.database.url)
    with db.session() as s:  # what the still-running receiver would write
        Vault(db, old_ring).record(s, {"2.25.999": "1.2.826.0.1.999"})
    assert _vault_key_ids(db) == {1, 2}
    capsys.readouterr()
    assert main(["rotate-keys", "--finish", "--config", path]) == 0
    assert "re-encrypted 1 vault rows with vault key 2" in capsys.readouterr().out
    assert folder.ring_ids(VAULT) == [1, 2]  # no third key
    assert _vault_key_ids(db) == {2}
    db.dispose()
