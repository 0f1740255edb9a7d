"""Completion, routing and the job runner, in process: what each kind of study ends as."""

from __future__ import annotations

import copy
import time

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import RTStructureSetStorage, generate_uid
from sqlalchemy import select

from dicom_node.completion import matching_routes
from dicom_node.config import Route, parse_config
from dicom_node.node import Node
from dicom_node.sample_data import PatientIdentity, ct_series_datasets, phantom_chest_hu
from storage.keys import PURPOSES, KeyFolder
from storage.tables import Job


@pytest.fixture
def node(tmp_path):
    config = parse_config({
        "node": {"data_dir": str(tmp_path / "var")},
        "database": {"url": f"sqlite:///{tmp_path / 'var' / 'node.db'}"},
        "jobs": {"workers": 0},
        "completion": {"quiet_seconds": 0.05},
        "peers": [{"name": "pacs", "ae_title": "PACS", "port": 104, "kind": "clinical"}],
    })
    node = Node(config, workers=0, send=False)
    yield node
    node.db.dispose()


def receive(node: Node, datasets: list[Dataset]) -> None:
    for ds in datasets:  # a copy: the receiver de-identifies what it is given in place
        assert node.receiver.ingest(copy.deepcopy(ds), "PACS") == 0x0000


def complete_and_run(node: Node) -> list[Job]:
    quiet(node)
    worker = node_worker(node)
    while worker.run_one():
        pass
    with node.db.session() as s:
        return s.scalars(select(Job).order_by(Job.id)).all()


def quiet(node: Node) -> list:
    time.sleep(0.1)
    return node.completion.run_once()


def node_worker(node: Node):  # noqa: ANN201
    from dicom_node.worker import Worker

    return Worker(node.config, node.db, node.files, "2.25.99")


def rtstruct_for(identity: PatientIdentity) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = identity.charset
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = identity.study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "RTSTRUCT"
    ds.PatientName, ds.PatientID = identity.name, identity.patient_id
    ds.StructureSetLabel = "PLAN"
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    return ds


def test_routes_match_by_modality_and_what_the_study_holds():
    routes = [Route(engine="ct_lung", modality="CT"),
              Route(engine="radiomics", modality="CT", requires=["RTSTRUCT"]),
              Route(engine="mr_glioma", modality="MR"),
              Route(engine="off", modality="CT", enabled=False)]
    assert matching_routes(routes, frozenset({"CT"})) == ["ct_lung"]
    assert matching_routes(routes, frozenset({"CT", "RTSTRUCT"})) == ["ct_lung", "radiomics"]
    assert matching_routes(routes, frozenset({"MR"})) == ["mr_glioma"]
    assert matching_routes(routes, frozenset({"NM"})) == []


def test_mr_study_gets_a_coded_decline_until_its_engine_exists(node):
    receive(node, ct_series_datasets(phantom_chest_hu((4, 32, 32)), modality="MR"))
    (job,) = complete_and_run(node)
    assert (job.engine, job.state, job.reason_code) == ("mr_glioma", "declined",
                                                        "ENGINE_NOT_INSTALLED")


def test_series_mixing_frames_of_reference_is_declined_with_its_reason(node):
    datasets = ct_series_datasets(phantom_chest_hu((6, 32, 32)))
    for ds in datasets[3:]:
        ds.FrameOfReferenceUID = generate_uid()
    receive(node, datasets)
    (job,) = complete_and_run(node)
    assert (job.state, job.reason_code) == ("declined", "VOL_MIXED_FRAME_OF_REFERENCE")


def test_ct_with_rtstruct_queues_radiomics_too(node):
    identity = PatientIdentity()
    receive(node, ct_series_datasets(phantom_chest_hu((4, 32, 32)), identity=identity))
    receive(node, [rtstruct_for(identity)])
    quiet(node)
    with node.db.session() as s:
        engines = sorted(j.engine for j in s.scalars(select(Job)))
    assert engines == ["ct_lung", "radiomics"]


def test_late_instances_rerun_the_full_study_as_a_new_revision(node):
    identity = PatientIdentity()
    datasets = ct_series_datasets(phantom_chest_hu((6, 32, 32)), identity=identity)
    receive(node, datasets[:4])
    quiet(node)
    receive(node, datasets[4:])  # late: the job of revision 1 has not run yet
    quiet(node)
    with node.db.session() as s:
        jobs = [(j.revision, j.state, j.reason_code) for j in
                s.scalars(select(Job).order_by(Job.id))]
    assert jobs == [(1, "cancelled", "SUPERSEDED"), (2, "queued", None)]
    receive(node, datasets[:1])  # a duplicate changes nothing
    assert quiet(node) == []


@pytest.mark.slow
def test_results_go_to_the_sender_and_configured_destinations(tmp_path):
    from ai_engines.ct_lung.synthetic import synthetic_chest_ct
    from storage.tables import OutboxItem

    config = parse_config({
        "node": {"data_dir": str(tmp_path / "var")},
        "database": {"url": f"sqlite:///{tmp_path / 'var' / 'node.db'}"},
        "jobs": {"workers": 0},
        "completion": {"quiet_seconds": 0.05},
        "peers": [{"name": "pacs", "ae_title": "PACS", "port": 104, "kind": "clinical"},
                  {"name": "tps", "ae_title": "PLANNING", "port": 105, "may_send": False,
                   "accepts": ["RTSTRUCT"], "kind": "clinical"},
                  {"name": "oldpacs", "ae_title": "OLD", "port": 106, "may_send": False,
                   "sr_storage": "comprehensive", "kind": "clinical"}],
        "routes": [{"engine": "ct_lung", "modality": "CT",
                    "destinations": ["sender", "tps", "oldpacs"]}],
    })
    node = Node(config, workers=0, send=False)
    case = synthetic_chest_ct(11, n_slices=40, n_tumours=1, diameter_mm=30.0,
                              focus_tumour=True, slice_thickness=2.5)
    receive(node, ct_series_datasets(case.hu, pixel_spacing=(case.pixel_spacing,) * 2,
                                     slice_spacing=2.5, origin=case.origin))
    (job,) = complete_and_run(node)
    assert job.state == "succeeded", (job.reason_code, job.reason)
    with node.db.session() as s:
        owed = {(i.destination, i.modality, i.sop_class_uid) for i in s.scalars(
            select(OutboxItem))}
    node.db.dispose()
    by_peer = {}
    for destination, modality, sop_class in owed:
        by_peer.setdefault(destination, set()).add((modality, sop_class))
    comprehensive_3d, comprehensive = "1.2.840.10008.5.1.4.1.1.88.34", \
        "1.2.840.10008.5.1.4.1.1.88.33"
    assert {m for m, _ in by_peer["pacs"]} == {"SEG", "RTSTRUCT", "SR", "OT"}
    assert ("SR", comprehensive_3d) in by_peer["pacs"]
    assert {m for m, _ in by_peer["tps"]} == {"RTSTRUCT"}
    assert ("SR", comprehensive) in by_peer["oldpacs"]
    assert ("SR", comprehensive_3d) not in by_peer["oldpacs"]


def test_workers_load_their_route_engines_at_start(tmp_path):
    """The first study after a start does not wait for torch and the weights; routes whose
    engine is not installed (MR, NM) are only logged."""
    config = parse_config({
        "node": {"data_dir": str(tmp_path / "var")},
        "database": {"url": f"sqlite:///{tmp_path / 'var' / 'node.db'}"},
        "jobs": {"workers": 1, "poll_seconds": 60},
        "peers": [{"name": "pacs", "ae_title": "PACS", "port": 104, "kind": "clinical"}],
    })
    # A worker never creates keys: they come from the receiving host (here: made beforehand).
    KeyFolder(config.keys_dir).create(PURPOSES)
    node = Node(config, receive=False, complete=False, send=False)
    node.start()
    try:
        runner = node.workers[0].runner
        deadline = time.monotonic() + 60
        while "ct_lung" not in runner._engines and time.monotonic() < deadline:
            time.sleep(0.1)
        assert set(runner._engines) == {"ct_lung"}
    finally:
        node.stop()
        node.db.dispose()
