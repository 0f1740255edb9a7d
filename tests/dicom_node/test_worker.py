"""Completion, routing and the job runner, in process: what each kind of study ends as."""

from __future__ import annotations

import copy
import json
import time

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import RTStructureSetStorage, generate_uid
from sqlalchemy import select

from ai_engines.registry import available_engines
from dicom_node.completion import matching_routes
from dicom_node.config import Route, parse_config
from dicom_node.node import Node
from dicom_node.sample_data import (
    PatientIdentity,
    ct_series_datasets,
    nm_whole_body_dataset,
    phantom_chest_hu,
)
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


def test_mr_study_that_fits_no_role_gets_a_coded_decline(node):
    """Four MR slices with no sequence name: the MR engine's job ends declined with a code
    (no retried failure)."""
    receive(node, ct_series_datasets(phantom_chest_hu((4, 32, 32)), modality="MR"))
    (job,) = complete_and_run(node)
    assert (job.engine, job.state, job.attempts) == ("mr_glioma", "declined", 1)
    assert job.reason_code in ("NO_SUITABLE_SERIES", "MR_NO_USABLE_SEQUENCE")


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
    engine is not installed are only logged."""
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
        expected = {r.engine for r in config.routes} & set(available_engines())
        assert "ct_lung" in expected
        deadline = time.monotonic() + 120
        while set(runner._engines) != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert set(runner._engines) == expected
    finally:
        node.stop()
        node.db.dispose()


# ---------------------------------------------------------------- header-first selection
HOTSPOT_ENTRY = {"hotspot": "tests.platform.hotspot_engine:SPEC"}


@pytest.fixture
def hotspot_node(tmp_path):
    """A node whose only route is the example engine, installed through its entry point."""
    from tests.platform.entry_points import installed

    with installed(tmp_path / "site-packages", "hotspot-example", HOTSPOT_ENTRY):
        config = parse_config({
            "node": {"data_dir": str(tmp_path / "var")},
            "database": {"url": f"sqlite:///{tmp_path / 'var' / 'node.db'}"},
            "jobs": {"workers": 0}, "completion": {"quiet_seconds": 0.05},
            "peers": [{"name": "pacs", "ae_title": "PACS", "port": 104, "kind": "clinical"}],
            "routes": [{"engine": "hotspot"}, {"engine": "bone_scan", "modality": "NM"}],
        })
        node = Node(config, workers=0, send=False)
        yield node
        node.db.dispose()


def axial_ct_with_spots(identity: PatientIdentity, spots: int = 3) -> list[Dataset]:
    hu = phantom_chest_hu((12, 48, 48), seed=5)
    for n in range(spots):
        hu[5:8, 10 + 10 * n: 13 + 10 * n, 20:23] = 1500.0  # dense spots: bone, calcification
    return ct_series_datasets(hu, identity=identity, series_number=2)


def localizer(identity: PatientIdentity, slices: int = 30) -> list[Dataset]:
    """A scout whose header says LOCALIZER; more slices than the axial series and plenty of
    bright voxels, so only the header keeps it out."""
    hu = phantom_chest_hu((slices, 48, 48), seed=6)
    hu[:, 5:40, 5:10] = 2000.0
    datasets = ct_series_datasets(hu, identity=identity, series_number=1,
                                  series_description="Topogram 0.6 T20s")
    for ds in datasets:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    return datasets


def dose_page(identity: PatientIdentity) -> list[Dataset]:
    """A vendor dose page stored as a CT image without patient geometry."""
    (ds,) = ct_series_datasets(np.zeros((1, 48, 48)), identity=identity, series_number=501,
                               series_description="Patient Protocol")
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    del ds.ImagePositionPatient, ds.ImageOrientationPatient
    return [ds]


def test_localizer_and_dose_page_are_set_aside_on_their_headers(hotspot_node):
    identity = PatientIdentity()
    receive(hotspot_node, localizer(identity) + dose_page(identity) + axial_ct_with_spots(identity))
    (job,) = complete_and_run(hotspot_node)
    assert job.state == "succeeded", (job.reason_code, job.reason)
    summary = json.loads(job.summary)
    assert summary["segments"] == ["HotSpot_1", "HotSpot_2", "HotSpot_3"]
    notes = " | ".join(summary["notes"])
    assert "CT series 1 ignored: localizer" in notes
    assert "CT series 501 ignored: no patient geometry" in notes
    assert "3 hot spot(s)" in notes  # the axial series' three spots, not the scout's bar


def test_a_series_that_fails_to_decode_fails_only_as_a_candidate(hotspot_node):
    identity = PatientIdentity()
    broken = ct_series_datasets(phantom_chest_hu((20, 48, 48)), identity=identity,
                                series_number=3)
    for ds in broken[10:]:
        ds.FrameOfReferenceUID = generate_uid()  # cannot form one volume
    receive(hotspot_node, broken + axial_ct_with_spots(identity))
    (job,) = complete_and_run(hotspot_node)
    assert job.state == "succeeded", (job.reason_code, job.reason)
    notes = json.loads(job.summary)["notes"]
    assert any("CT series 3 not used for image: VOL_MIXED_FRAME_OF_REFERENCE" in n
               for n in notes), notes


def test_only_chosen_series_are_decoded(hotspot_node, monkeypatch):
    from dicom_node import worker as worker_module

    decoded: list[str] = []
    real = worker_module.build_volume
    monkeypatch.setattr(worker_module, "build_volume",
                        lambda ds: decoded.append(str(ds[0].SeriesNumber)) or real(ds))
    identity = PatientIdentity()
    receive(hotspot_node, localizer(identity) + axial_ct_with_spots(identity))
    (job,) = complete_and_run(hotspot_node)
    assert job.state == "succeeded"
    assert decoded == ["2"]


def nm_whole_body(identity: PatientIdentity) -> Dataset:
    """A small planar NM image: anterior and posterior views as two frames of one instance."""
    frames = np.zeros((2, 64, 32), np.uint16)
    frames[:, 20:24, 10:14] = 400  # a hot spot in both views
    frames[1, 40:44, 16:20] = 300  # and one seen only from behind
    frames += 10
    return nm_whole_body_dataset(frames, identity=identity)


def test_an_nm_multiframe_instance_is_one_source_dataset_with_its_views(hotspot_node):
    from ai_engines.registry import get_spec
    from dicom_node.worker import JobRunner
    from storage.studies import study_series

    receive(hotspot_node, [nm_whole_body(PatientIdentity())])
    (completed,) = quiet(hotspot_node)
    runner = JobRunner(hotspot_node.config, hotspot_node.db, hotspot_node.files, "2.25.99")
    with hotspot_node.db.session() as session:
        stored = study_series(session, completed.study_id)
    volumes, datasets, _, _ = runner._select(get_spec("hotspot"), stored)
    (volume,) = volumes
    assert volume.shape == (2, 64, 32)
    assert [(s.frame_number, s.view, s.detector, s.energy_window) for s in volume.slices] == [
        (1, "ANTERIOR", 1, 1), (2, "POSTERIOR", 2, 1)]
    # One dataset per instance, not per frame: result writers reject duplicates.
    assert len(datasets[volume.series_uid]) == 1


def test_nm_and_mr_studies_reach_their_routes_without_a_retried_failure(node):
    """Default routes: a tiny NM image and an MR phantom reach bone_scan and mr_glioma (or, where
    an engine is not installed, ENGINE_NOT_INSTALLED); each job ends declined with a coded
    reason on the first attempt, never as a retried failure."""
    identity = PatientIdentity()
    mr = ct_series_datasets(phantom_chest_hu((8, 32, 32)), identity=identity, modality="MR",
                            series_number=5)
    scout = localizer(identity, slices=3)
    for ds in scout:
        ds.Modality, ds.SOPClassUID = "MR", mr[0].SOPClassUID
        ds.file_meta.MediaStorageSOPClassUID = mr[0].SOPClassUID
    receive(node, [nm_whole_body(identity)] + mr + scout)
    jobs = complete_and_run(node)
    assert sorted(j.engine for j in jobs) == ["bone_scan", "mr_glioma"]
    for job in jobs:
        assert (job.state, job.attempts) == ("declined", 1), (job.engine, job.reason_code)
        assert job.reason_code and job.reason_code != "ENGINE_ERROR"
    bone_scan = next(j for j in jobs if j.engine == "bone_scan")
    assert bone_scan.reason_code == "NM_NOT_WHOLE_BODY"  # 64 x 32 pixels: no whole body


def test_an_nm_engine_runs_end_to_end_on_a_planar_whole_body_scan(hotspot_node):
    receive(hotspot_node, [nm_whole_body(PatientIdentity())])
    jobs = {j.engine: j for j in complete_and_run(hotspot_node)}
    job = jobs["hotspot"]
    assert (job.state, job.attempts) == ("succeeded", 1), (job.reason_code, job.reason)
    assert json.loads(job.summary)["segments"] == ["HotSpot_1", "HotSpot_2"]


@pytest.mark.slow
def test_ct_lung_outputs_are_unchanged_and_found_beside_a_localizer_and_a_dose_page(tmp_path):
    """SEG voxels and SR numbers of the CT lung engine, run as an entry-point package through
    header-first selection, equal those recorded for its version on the same case, sent alone
    there and here beside a scout and a dose page (``tests/dicom_node/ct_lung_outputs.py``)."""
    from pathlib import Path

    from ai_engines.ct_lung import ENGINE_VERSION
    from tests.dicom_node import ct_lung_outputs

    recorded = json.loads((Path(__file__).parent / "data" / "ct_lung_outputs.json").read_text())
    # A new engine version records its outputs again (the module says how), so that what
    # changed is seen in review rather than the comparison skipped.
    assert recorded.pop("engine_version") == ENGINE_VERSION, "record the new engine's outputs"
    identity = PatientIdentity()
    state, results, summary = ct_lung_outputs.run_case(
        tmp_path, [localizer(identity, slices=40), dose_page(identity)])
    assert state == "succeeded", summary
    assert ct_lung_outputs.signature(results) == recorded
    assert any("localizer" in n for n in summary["notes"])


def test_a_decline_about_no_series_is_recorded_without_result_objects(hotspot_node, monkeypatch):
    from ai_engines.findings import Decline
    from tests.platform.hotspot_engine import HotSpotEngine

    monkeypatch.setattr(HotSpotEngine, "run", lambda self, study: self.declined(
        None, Decline("INPUT_MISSING_SERIES", "no second view arrived")))
    receive(hotspot_node, axial_ct_with_spots(PatientIdentity()))
    (job,) = complete_and_run(hotspot_node)
    assert (job.state, job.reason_code, job.attempts) == ("declined", "INPUT_MISSING_SERIES", 1)
    assert json.loads(job.summary)["objects"] == []
