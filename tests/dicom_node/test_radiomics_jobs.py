"""The radiomics engine on regions other engines found, in process: routing, order, the
regions read back from the producer's stored SEG, the SR's references and the CSV export."""

from __future__ import annotations

import csv
import io
import json
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from sqlalchemy import select, update

from dicom_node.config import parse_config
from dicom_node.node import Node
from dicom_node.sample_data import PatientIdentity, ct_series_datasets, phantom_chest_hu
from storage.tables import Job
from tests.dicom_node.test_worker import complete_and_run, node_worker, quiet, receive

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
HOTSPOT_ENTRY = {"hotspot": "tests.platform.hotspot_engine:SPEC"}


@pytest.fixture
def node(tmp_path):
    """Routes: the example hot-spot engine and radiomics (measured on the native grid with no
    re-segmentation range, so the bright spots are measured as they are)."""
    from tests.platform.entry_points import installed

    with installed(tmp_path / "site-packages", "hotspot-example", HOTSPOT_ENTRY):
        config = parse_config({
            "node": {"data_dir": str(tmp_path / "var")},
            "database": {"url": f"sqlite:///{tmp_path / 'var' / 'node.db'}"},
            "jobs": {"workers": 0, "poll_seconds": 0.1},
            "completion": {"quiet_seconds": 0.05},
            "peers": [{"name": "pacs", "ae_title": "PACS", "port": 104, "kind": "clinical"}],
            "routes": [{"engine": "hotspot"}, {"engine": "radiomics"}],
            "radiomics": {"spacing_mm": [], "resegmentation_range": [], "feature_maps": False,
                          "measure_engine_regions": True, "export_dir": str(tmp_path / "export")},
        })
        node = Node(config, workers=0, send=False)
        yield node
        node.db.dispose()


def ct_with_spots(identity: PatientIdentity, spots: int) -> list:
    hu = phantom_chest_hu((12, 48, 48), seed=5)
    rng = np.random.default_rng(3)
    for n in range(spots):  # 4 x 6 x 6 voxels of 1400-1600 HU: bright, with some texture
        hu[4:8, 8 + 14 * n: 14 + 14 * n, 20:26] = rng.uniform(1400, 1600, (4, 6, 6)).round()
    return ct_series_datasets(hu, identity=identity, series_number=2)


def result_files(node: Node, job_id: int) -> list:
    return [dcmread(node.files.absolute(p)) for p in node.files.results_of(job_id)]


def test_radiomics_measures_every_region_another_engine_found(node, tmp_path):
    identity = PatientIdentity()
    receive(node, ct_with_spots(identity, 2))
    hotspot, radiomics = complete_and_run(node)
    assert (hotspot.engine, radiomics.engine) == ("hotspot", "radiomics")  # no RTSTRUCT sent
    assert hotspot.state == "succeeded" and radiomics.state == "succeeded", radiomics.reason
    assert radiomics.started_at >= hotspot.finished_at  # results first, then their radiomics
    summary = json.loads(radiomics.summary)
    assert summary["region_measurements"] == ["HotSpot_1", "HotSpot_2"]
    assert any(f"2 region(s) found by hotspot (job {hotspot.id}) measured" in n
               for n in summary["notes"])

    (seg,) = [d for d in result_files(node, hotspot.id) if d.SOPClassUID == SEG_STORAGE]
    (sr,) = [d for d in result_files(node, radiomics.id) if d.Modality == "SR"]
    # The SR's groups reference the hot-spot engine's SEG and its segments, which go to the
    # PACS with the same UID; the SEG is listed in the evidence.
    referenced = [(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID),
                   int(item.ReferencedSOPSequence[0].ReferencedSegmentNumber))
                  for item in _items(sr) if "ReferencedSOPSequence" in item
                  and "ReferencedSegmentNumber" in item.ReferencedSOPSequence[0]]
    assert referenced == [(str(seg.SOPInstanceUID), 1), (str(seg.SOPInstanceUID), 2)]
    evidence = {str(i.ReferencedSOPInstanceUID)
                for s in sr.CurrentRequestedProcedureEvidenceSequence
                for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence}
    assert str(seg.SOPInstanceUID) in evidence
    comments = " ".join(str(i.TextValue) for i in _items(sr) if i.ValueType == "TEXT")
    assert "radiomics settings: name=IBSI-C+site(entropy_map,resegmentation_range," \
           "spacing_mm)" in comments  # the settings used are stated in the report

    # The CSV export: one file for the job, 0640, pseudonymous UIDs, volumes equal the SEG's.
    (export,) = sorted((tmp_path / "export").iterdir())
    assert export.name == f"radiomics_{sr.StudyInstanceUID}_r1_job{radiomics.id}.csv"
    assert stat.S_IMODE(export.stat().st_mode) == 0o640
    text = export.read_text(encoding="utf-8")
    assert identity.study_uid not in text and identity.patient_id not in text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["study_uid"] for r in rows} == {str(sr.StudyInstanceUID)}
    assert {r["region_source_uid"] for r in rows} == {str(seg.SOPInstanceUID)}
    assert {r["region_source"] for r in rows} == {"SEG"}
    pixels = seg.pixel_array.reshape(-1, *seg.pixel_array.shape[-2:])
    numbers = [int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
               for f in seg.PerFrameFunctionalGroupsSequence]
    voxel_mm3 = 0.7 * 0.7 * 2.5
    for number in (1, 2):
        voxels = int(sum(pixels[i].sum() for i, n in enumerate(numbers) if n == number))
        (row,) = [r for r in rows if r["roi_number"] == str(number) and r["tag"] ==
                  "morph.approx.vol"]
        assert voxels == 144 and float(row["value"]) == pytest.approx(voxels * voxel_mm3)
        (mean,) = [r for r in rows if r["roi_number"] == str(number) and r["tag"] == "stat.mean"]
        assert 1400 < float(mean["value"]) < 1600 and mean["unit"] == "[hnsf'U]"


def test_a_study_where_no_engine_finds_a_region_gets_a_coded_decline(node, tmp_path):
    receive(node, ct_with_spots(PatientIdentity(), 0))
    hotspot, radiomics = complete_and_run(node)
    assert hotspot.state == "succeeded" and json.loads(hotspot.summary)["segments"] == []
    assert radiomics.state == "declined" and radiomics.reason_code == "INPUT_MISSING_REGION"
    assert radiomics.attempts == 1
    assert not (tmp_path / "export").exists()  # nothing measured, nothing exported


def test_radiomics_waits_for_the_other_jobs_of_its_study_without_spending_attempts(node):
    receive(node, ct_with_spots(PatientIdentity(), 1))
    quiet(node)
    worker = node_worker(node)
    with node.db.session() as s:
        hot_id = s.scalars(select(Job.id).where(Job.engine == "hotspot")).one()
    _delay(node, hot_id)  # the hot-spot job is not due yet: radiomics is claimed first
    assert worker.run_one()  # radiomics, deferred
    with node.db.session() as s:
        job = s.scalars(select(Job).where(Job.engine == "radiomics")).one()
        assert (job.state, job.attempts, job.worker_id) == ("queued", 0, None)
        assert (job.reason_code, job.reason) == ("WAITING", f"waiting for hotspot (job {hot_id})")
    _delay(node, hot_id, seconds=0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        worker.run_one()
        with node.db.session() as s:
            states = dict(s.execute(select(Job.engine, Job.state)).all())
        if set(states.values()) <= {"succeeded", "declined", "failed"}:
            break
        time.sleep(0.2)
    assert states == {"hotspot": "succeeded", "radiomics": "succeeded"}


def _delay(node: Node, job_id: int, seconds: float = 3600) -> None:
    import datetime as dt

    from storage.clock import utcnow

    with node.db.session() as s:
        s.execute(update(Job).where(Job.id == job_id)
                  .values(next_attempt_at=utcnow() + dt.timedelta(seconds=seconds)))


def _items(ds) -> list:  # noqa: ANN001
    found = []
    for item in ds.get("ContentSequence", []):
        found.append(item)
        found.extend(_items(item))
    return found


def test_export_folder_and_settings_are_configuration(tmp_path):
    config = parse_config({"radiomics": {"preset_ct": "IBSI-E", "bin_number": 16,
                                         "export_dir": "exports/radiomics"}})
    settings = config.radiomics.settings_by_modality()
    assert settings["CT"].name == "IBSI-E+site(bin_number)" and settings["CT"].bin_number == 16
    assert settings["MR"].name == "IBSI-D+site(bin_number)"
    assert config.resolve(config.radiomics.export_dir) == Path("var/exports/radiomics")


def test_engine_regions_are_measured_only_when_configured():
    from ai_engines.registry import engine_specs
    from dicom_node.completion import matching_routes
    from dicom_node.config import Route

    specs = engine_specs()
    routes = [Route(engine="ct_lung"), Route(engine="radiomics")]
    ct = frozenset({"CT"})
    assert matching_routes(routes, ct, specs) == ["ct_lung"]  # default: received regions only
    assert matching_routes(routes, ct, specs, {"radiomics"}) == ["ct_lung", "radiomics"]
    assert matching_routes(routes[1:], ct, specs, {"radiomics"}) == []  # no engine to measure
    assert matching_routes(routes, frozenset({"NM"}), specs, {"radiomics"}) == []
    assert parse_config({}).result_consumers() == frozenset()
    on = parse_config({"radiomics": {"measure_engine_regions": True}})
    assert on.result_consumers() == {"radiomics"}


@pytest.mark.parametrize(("toml", "message"), [
    ('preset_ct = "IBSI-Z"', "unknown radiomics preset 'IBSI-Z'"),
    ('families = ["morph", "glcm"]', "unknown: glcm"),
    ('texture_aggregations = ["4D"]', "unknown: 4D"),
    ("resegmentation_range = [400, -1000]", "low must be below high"),
    ("bin_width = 0", "radiomics.bin_width"),
    ('discretisation = "FBX"', "radiomics.discretisation"),
    ("spacing_mm = [1.0, 1.0]", "spacing_mm needs 3 numbers"),
])
def test_check_config_names_a_bad_radiomics_setting(tmp_path, capsys, toml, message):
    from dicom_node.cli import main

    path = tmp_path / "node.toml"
    path.write_text(f"[radiomics]\n{toml}\n")
    assert main(["check-config", str(path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_every_gtv_the_ct_lung_engine_finds_gets_its_features(tmp_path):
    """The CT lung engine's synthetic end-to-end case: its GTVs (not its lungs) are measured
    by the radiomics job that runs after it, from the SEG it stored."""
    from tests.dicom_node.ct_lung_outputs import case_datasets

    config = parse_config({
        "node": {"data_dir": str(tmp_path / "var")},
        "database": {"url": f"sqlite:///{tmp_path / 'var' / 'node.db'}"},
        "jobs": {"workers": 0}, "completion": {"quiet_seconds": 0.05},
        "peers": [{"name": "pacs", "ae_title": "PACS", "port": 104, "kind": "clinical"}],
        "routes": [{"engine": "ct_lung"}, {"engine": "radiomics"}],
        "radiomics": {"measure_engine_regions": True, "feature_maps": False},
    })
    node = Node(config, workers=0, send=False)
    try:
        receive(node, case_datasets())
        ct_lung, radiomics = complete_and_run(node)
    finally:
        node.db.dispose()
    assert ct_lung.state == "succeeded", (ct_lung.reason_code, ct_lung.reason)
    found = json.loads(ct_lung.summary)["segments"]
    gtvs = [label for label in found if label.startswith("GTV_")]
    assert gtvs and len(gtvs) < len(found)  # the engine also segments the lungs
    assert radiomics.state == "succeeded", (radiomics.reason_code, radiomics.reason)
    assert json.loads(radiomics.summary)["region_measurements"] == gtvs
    (seg,) = [d for d in result_files(node, ct_lung.id) if d.SOPClassUID == SEG_STORAGE]
    (sr,) = [d for d in result_files(node, radiomics.id) if d.Modality == "SR"]
    referenced = {str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
                  for item in _items(sr) if "ReferencedSOPSequence" in item
                  and "ReferencedSegmentNumber" in item.ReferencedSOPSequence[0]}
    assert referenced == {str(seg.SOPInstanceUID)}


def test_a_planned_gtv_on_the_second_ct_is_measured_on_that_ct(tmp_path):
    """Two CTs in the study, the planning RTSTRUCT on the smaller one (the one header-first
    selection would not pick): radiomics measures on the series the GTV lies on."""
    from ai_engines import codes
    from ai_engines.findings import EngineIdentity, Findings, Segment
    from dicom_node.results import ResultOptions
    from dicom_node.results.rtstruct import build_rtstruct

    identity = PatientIdentity()
    bigger = ct_series_datasets(phantom_chest_hu((16, 40, 40), seed=2), identity=identity,
                                series_number=2)
    planned = ct_series_datasets(phantom_chest_hu((10, 40, 40), seed=3), identity=identity,
                                 series_number=5, pixel_spacing=(1.0, 1.0), slice_spacing=3.0)
    gtv = np.zeros((10, 40, 40), dtype=bool)
    gtv[3:7, 12:24, 14:26] = True
    findings = Findings(EngineIdentity("planning", "1", "none", "0" * 64),
                        str(planned[0].SeriesInstanceUID), segments=(Segment(
                            label="GTV", description="GTV",
                            category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                            property_type=codes.NEOPLASM, rt_interpreted_type="GTV",
                            color_rgb=(255, 0, 0), mask=gtv),))
    rtstruct = build_rtstruct(findings, planned, ResultOptions(device_observer_uid="2.25.7"))
    config = parse_config({
        "node": {"data_dir": str(tmp_path / "var")},
        "database": {"url": f"sqlite:///{tmp_path / 'var' / 'node.db'}"},
        "jobs": {"workers": 0}, "completion": {"quiet_seconds": 0.05},
        "peers": [{"name": "pacs", "ae_title": "PACS", "port": 104, "kind": "clinical"}],
        "routes": [{"engine": "radiomics"}],
        "radiomics": {"spacing_mm": [], "feature_maps": False},
    })
    node = Node(config, workers=0, send=False)
    try:
        receive(node, bigger + planned + [rtstruct])
        (job,) = complete_and_run(node)
        assert job.state == "succeeded", (job.reason_code, job.reason)
        assert json.loads(job.summary)["region_measurements"] == ["GTV"]
        (sr,) = [d for d in result_files(node, job.id) if d.Modality == "SR"]
    finally:
        node.db.dispose()
    volume = [float(i.MeasuredValueSequence[0].NumericValue) for i in _items(sr)
              if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == "YEKZ"]
    assert volume == [pytest.approx(4 * 12 * 12 * 3.0)]  # voxel volume on the planned CT
