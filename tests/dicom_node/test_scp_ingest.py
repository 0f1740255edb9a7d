"""The receiver's per-instance path in process: a study's identity is sealed once, and only
what was committed is remembered."""

from __future__ import annotations

import copy
import errno
import os
import stat
import threading
import time

import pytest
from sqlalchemy import event, func, select

from dicom_node import scp
from dicom_node.config import parse_config
from dicom_node.node import Node
from dicom_node.sample_data import PatientIdentity, ct_series_datasets, phantom_chest_hu
from storage.tables import Instance


@pytest.fixture
def node(tmp_path):
    config = parse_config({
        "node": {"data_dir": str(tmp_path / "var"), "min_free_disk_mb": 1},
        "database": {"url": f"sqlite:///{tmp_path / 'var' / 'node.db'}"},
        "jobs": {"workers": 0},
        "peers": [{"name": "pacs", "ae_title": "PACS", "port": 104, "kind": "clinical"}],
    })
    node = Node(config, workers=0, complete=False, send=False)
    yield node
    node.db.dispose()


def spy_identities(node: Node, monkeypatch) -> list:  # noqa: ANN001
    passed: list = []
    record = node.receiver.vault.record

    def spy(session, mappings, identity=None):  # noqa: ANN001, ANN202
        passed.append(identity)
        return record(session, mappings, identity)

    monkeypatch.setattr(node.receiver.vault, "record", spy)
    return passed


def test_a_study_identity_is_sealed_once_and_each_new_identity_again(node, monkeypatch):
    passed = spy_identities(node, monkeypatch)
    first = ct_series_datasets(phantom_chest_hu((3, 32, 32)), identity=PatientIdentity())
    other = ct_series_datasets(phantom_chest_hu((2, 32, 32)),
                               identity=PatientIdentity(name="Other^Person", patient_id="P-2"))
    for ds in first + other:
        assert node.receiver.ingest(copy.deepcopy(ds), "PACS") == scp.SUCCESS
    assert [p is not None for p in passed] == [True, False, False, True, False]
    for identity in (passed[0], passed[3]):
        assert node.vault.identity_for_study(identity.pseudo_study_uid) == identity


def test_an_identity_whose_transaction_failed_is_recorded_by_the_next_instance(node,
                                                                                monkeypatch):
    passed = spy_identities(node, monkeypatch)
    datasets = ct_series_datasets(phantom_chest_hu((2, 32, 32)), identity=PatientIdentity())
    index_instance = scp.index_instance
    calls = []

    def failing_once(session, item, now):  # noqa: ANN001, ANN202
        calls.append(item)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return index_instance(session, item, now)

    monkeypatch.setattr(scp, "index_instance", failing_once)
    with pytest.raises(RuntimeError):
        node.receiver.ingest(copy.deepcopy(datasets[0]), "PACS")
    assert node.receiver.ingest(copy.deepcopy(datasets[1]), "PACS") == scp.SUCCESS
    assert passed[0] is not None and passed[1] == passed[0]
    assert node.vault.identity_for_study(passed[0].pseudo_study_uid) == passed[0]


def test_vault_rows_are_written_again_once_the_receiver_stops_trusting_its_memory(node,
                                                                                  monkeypatch):
    """Retention may delete a finished study's vault rows; what the receiver remembers as
    written expires (``RECORDED_FOR_S``), so a late instance writes them again."""
    passed = spy_identities(node, monkeypatch)
    datasets = ct_series_datasets(phantom_chest_hu((2, 32, 32)), identity=PatientIdentity())
    monkeypatch.setattr(scp, "RECORDED_FOR_S", 0.0)
    for ds in datasets:
        assert node.receiver.ingest(copy.deepcopy(ds), "PACS") == scp.SUCCESS
    assert passed[0] is not None and passed[1] == passed[0]


def test_the_index_commits_only_after_the_file_and_its_folder_entry_are_fsynced(node,
                                                                                monkeypatch):
    """The fsyncs run in a sync thread while the index statements are made: the commit (and
    so the Success) still comes after both, even when the disk is slow."""
    events: list[str] = []
    lock = threading.Lock()
    real_fsync, real_fsync_dir = os.fsync, node.files._fsync_dir
    index_instance = scp.index_instance
    sync_threads = set()

    def slow_fsync(fd):  # noqa: ANN001, ANN202
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            return real_fsync(fd)
        time.sleep(0.2)  # a slow disk: the index statements are made meanwhile
        real_fsync(fd)
        sync_threads.add(threading.current_thread().name)
        with lock:
            events.append("file")
        return None

    def fsync_dir(path):  # noqa: ANN001, ANN202
        real_fsync_dir(path)
        with lock:
            events.append("folder")

    def indexed(session, item, now):  # noqa: ANN001, ANN202
        outcome = index_instance(session, item, now)
        with lock:
            events.append("indexed")
        return outcome

    def committed(_connection):  # noqa: ANN001, ANN202
        with lock:
            events.append("commit")

    monkeypatch.setattr("storage.files.os.fsync", slow_fsync)
    monkeypatch.setattr(node.files, "_fsync_dir", fsync_dir)
    monkeypatch.setattr(scp, "index_instance", indexed)
    event.listen(node.db.engine, "commit", committed)
    try:
        datasets = ct_series_datasets(phantom_chest_hu((2, 32, 32)), identity=PatientIdentity())
        for ds in datasets:
            events.clear()
            assert node.receiver.ingest(copy.deepcopy(ds), "PACS") == scp.SUCCESS
            # (the first instance's new folders are fsync'd before the file is written)
            assert events[-4:] == ["indexed", "file", "folder", "commit"]
            assert events.count("commit") == 1
    finally:
        event.remove(node.db.engine, "commit", committed)
    assert threading.current_thread().name not in sync_threads


def test_a_file_that_cannot_be_made_durable_is_not_indexed(node, monkeypatch):
    def disk_full(fd):  # noqa: ANN001, ANN202
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("storage.files.os.fsync", disk_full)
    ds = ct_series_datasets(phantom_chest_hu((1, 32, 32)), identity=PatientIdentity())[0]
    with pytest.raises(OSError) as raised:
        node.receiver.ingest(ds, "PACS")
    assert raised.value.errno == errno.ENOSPC  # answered Out of Resources by handle_store
    with node.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 0
    stored = list((node.files.root / "studies").rglob("*"))
    assert not [p for p in stored if p.is_file()]  # neither the file nor its temporary
