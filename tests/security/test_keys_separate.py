"""Defect 4c/4d: one key served the vault and the quarantine, and every process (workers
included) loaded it. Now each purpose has its own key, every ciphertext names its key id, and
a worker starts with the UID secret alone."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from dicom_node.node import Node
from storage import quarantine
from storage.keys import QUARANTINE, VAULT, KeyFolder, KeyRing, sealed_key_id
from storage.tables import Quarantined
from storage.vault import Vault, VaultError, VaultStudy, VaultUid
from tests.security.installation import PLANTED, burned_in, node_config, receive, source_series


@pytest.fixture
def installation(tmp_path):
    config = node_config(tmp_path)
    node = Node(config, workers=0, send=False)
    receive(node, source_series())
    source = burned_in()
    assert node.receiver.ingest(source.copy(), "PACS") == 0
    yield config, node, KeyFolder(tmp_path / "keys")
    node.db.dispose()


def test_three_different_keys(installation):
    _, _, folder = installation
    secret, vault, qkey = (folder.uid_secret(), folder.ring(VAULT).key(1),
                           folder.ring(QUARANTINE).key(1))
    assert len({secret, vault, qkey}) == 3


def test_vault_and_quarantine_keys_do_not_open_each_other(installation):
    _, node, folder = installation
    with node.db.session() as s:
        (relative,) = s.scalars(select(Quarantined.path)).all()
    assert quarantine.open_sealed(node.files, folder.ring(QUARANTINE), relative).startswith(
        b"\x00" * 128 + b"DICM")
    with pytest.raises(quarantine.QuarantineError):
        quarantine.open_sealed(node.files, KeyRing(QUARANTINE, {1: folder.ring(VAULT).key(1)}),
                               relative)
    wrong = Vault(node.db, KeyRing(VAULT, {1: folder.ring(QUARANTINE).key(1)}))
    study = node.vault.identity_for_study
    with node.db.session() as s:
        pseudo_study = s.scalars(select(VaultStudy.pseudo_study_uid)).one()
    assert study(pseudo_study).pseudo_study_uid == pseudo_study
    with pytest.raises(VaultError, match="wrong vault key"):
        wrong.identity_for_study(pseudo_study)


def test_every_ciphertext_names_its_key(installation):
    _, node, _ = installation
    with node.db.session() as s:
        ids = {sealed_key_id(v) for v in s.scalars(select(VaultUid.original))}
        for payload, offset in s.execute(select(VaultStudy.payload, VaultStudy.date_offset)):
            ids |= {sealed_key_id(payload), sealed_key_id(offset)}
        (relative,) = s.scalars(select(Quarantined.path)).all()
    assert ids == {1}
    assert quarantine.sealed_key_id(node.files, relative) == 1
    blob = node.files.absolute(relative).read_bytes()
    assert blob[:4] == quarantine.MAGIC
    assert PLANTED.patient_id.encode() not in blob


def test_a_key_id_that_is_not_loaded_is_named(installation):
    _, node, folder = installation
    later = Vault(node.db, KeyRing(VAULT, {2: folder.ring(VAULT).key(1)}, folder.path))
    with node.db.session() as s:
        pseudo = s.scalars(select(VaultUid.pseudo_uid)).first()
    with pytest.raises(VaultError, match="vault-0001.key"):
        later.original_uid(pseudo)


def test_worker_starts_with_the_uid_secret_alone(installation, tmp_path):
    config, _, folder = installation
    worker_keys = tmp_path / "worker-keys"
    worker_keys.mkdir(mode=0o700)
    (worker_keys / "uid-secret.key").write_bytes(folder.uid_secret())
    (worker_keys / "uid-secret.key").chmod(0o400)  # as systemd's LoadCredential= hands it over
    worker_config = config.model_copy(update={"keys": config.keys.model_copy(
        update={"dir": worker_keys})})
    worker = Node(worker_config, receive=False, complete=False, send=False, workers=1)
    try:
        assert worker.vault is None and worker.receiver is None and worker.sender is None
        assert [p.name for p in worker_keys.iterdir()] == ["uid-secret.key"]
        assert worker.workers[0].runner.options.device_observer_uid.startswith("2.25.")
    finally:
        worker.db.dispose()

