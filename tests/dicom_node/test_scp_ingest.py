"""The receiver's per-instance path in process: a study's identity is sealed once, and only
what was committed is remembered."""

from __future__ import annotations

import copy

import pytest

from dicom_node import scp
from dicom_node.config import parse_config
from dicom_node.node import Node
from dicom_node.sample_data import PatientIdentity, ct_series_datasets, phantom_chest_hu


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
