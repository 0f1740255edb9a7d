"""End to end with a real PACS for the radiomics engine, the radiotherapy case: Orthanc holds
a CT and the planning system's RTSTRUCT with a GTV; it sends the study to the node, and
receives the IBSI features as a TID 1500 SR (whose group references the received RTSTRUCT by
its original UID) and the GLCM entropy Parametric Map back into the same study of the same
patient, dciodvfy-clean; the research CSV lands in the export folder with pseudonymous UIDs."""

from __future__ import annotations

import csv
import io
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest

from ai_engines import codes
from ai_engines.findings import EngineIdentity, Findings, Segment
from dicom_node.results import ResultOptions
from dicom_node.results.rtstruct import build_rtstruct
from dicom_node.sample_data import PatientIdentity, ct_series_datasets, write_series
from tests.net import need
from tests.pacs_round_trip import (
    dciodvfy_errors,
    pacs_with_node,
    results_in_pacs,
    send_through_node,
    series_modalities,
    sop_instance_uids,
    validate_outputs,
    wait_for_series,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"
RADIUS_MM = 12.0


def ct_with_gtv(identity: PatientIdentity) -> tuple[list, np.ndarray]:
    """A lung-like CT (0.8 x 0.8 x 2 mm) with a 12 mm radius soft-tissue lesion."""
    shape = (24, 96, 96)
    rng = np.random.default_rng(16)
    hu = rng.normal(-780, 40, shape)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    lesion = ((z - 12) * 2.0) ** 2 + ((y - 48) * 0.8) ** 2 + ((x - 44) * 0.8) ** 2 <= RADIUS_MM ** 2
    hu[lesion] = rng.normal(35, 25, int(lesion.sum()))
    datasets = ct_series_datasets(hu.round(), identity=identity, pixel_spacing=(0.8, 0.8),
                                  slice_spacing=2.0, series_number=3)
    return datasets, lesion


def planning_rtstruct(datasets: list, lesion: np.ndarray):  # noqa: ANN201
    """The GTV as a planning system sends it (the node's own RTSTRUCT writer)."""
    gtv = Segment(label="GTV", description="GTV", category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                  property_type=codes.NEOPLASM, rt_interpreted_type="GTV",
                  color_rgb=(255, 0, 0), mask=lesion)
    findings = Findings(EngineIdentity("planning", "1", "none", "0" * 64),
                        str(datasets[0].SeriesInstanceUID), segments=(gtv,))
    return build_rtstruct(findings, datasets, ResultOptions(device_observer_uid="2.25.7",
                                                            series_number_base=100))


def _groups(ds) -> list:  # noqa: ANN001
    found = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "CONTAINER" and item.ConceptNameCodeSequence[0].CodeValue == "125007":
            found.append(item)
        found.extend(_groups(item))
    return found


def _num(group, code: str) -> list[float]:  # noqa: ANN001
    return [float(i.MeasuredValueSequence[0].NumericValue) for i in group.ContentSequence
            if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == code]


def test_radiomics_of_a_planned_gtv_orthanc_to_node_and_back(tmp_path):
    need("Orthanc")
    need("dciodvfy")
    identity = PatientIdentity(name="Radiomik^Rita", patient_id="E2E-RAD-1")
    datasets, lesion = ct_with_gtv(identity)
    rtstruct = planning_rtstruct(datasets, lesion)
    source_dir = tmp_path / "source"
    files = write_series(datasets, source_dir)
    rtstruct_path = source_dir / "rtstruct.dcm"
    rtstruct.save_as(rtstruct_path, enforce_file_format=True)
    export = tmp_path / "export"

    # The only route: radiomics. Two series sent (CT, RTSTRUCT), three back (SR, Parametric
    # Map, the picture), each delivered on its own: wait for all three.
    with pacs_with_node(tmp_path, routes=["radiomics"],
                        extra={"radiomics": {"export_dir": str(export)}}) as (pacs, node):
        study_id = send_through_node(pacs, [*files, rtstruct_path])
        started = time.time()
        wait_for_series(pacs, node, study_id,
                        lambda series: len(series) >= 5 and "SR" in series_modalities(series))
        elapsed = time.time() - started
        assert len(pacs.rest_get("/studies")) == 1  # same study, same patient
        out_dir = tmp_path / "results"
        results = results_in_pacs(pacs, study_id, sop_instance_uids([*files, rtstruct_path]),
                                  out_dir)
    print(f"study sent -> radiomics results in the PACS: {elapsed:.1f} s")

    for ds in results:
        assert ds.PatientName == identity.name and ds.PatientID == identity.patient_id
        assert ds.StudyInstanceUID == identity.study_uid
    errors = dciodvfy_errors(out_dir)
    assert not errors, errors
    check = validate_outputs(source_dir, out_dir)
    if check is not None:
        assert check.returncode == 0, check.stdout + check.stderr

    # The SR: one group for the GTV, referencing the RTSTRUCT the planning system sent (its
    # original UID: re-identified) and ROI number 1, with IBSI-coded features.
    (sr,) = [d for d in results if d.Modality == "SR"]
    (group,) = _groups(sr)
    composite = [i for i in group.ContentSequence if i.ValueType == "COMPOSITE"]
    assert [str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for i in composite] == [
        str(rtstruct.SOPInstanceUID)]
    schemes = {i.ConceptNameCodeSequence[0].CodingSchemeDesignator
               for i in group.ContentSequence if i.ValueType == "NUM"}
    assert schemes == {"IBSI"}
    sphere = 4 / 3 * math.pi * RADIUS_MM ** 3
    (volume,) = _num(group, "RNU0")  # IBSI "Volume (mesh)", on the 2 mm IBSI-C grid
    assert volume == pytest.approx(sphere, rel=0.1)
    (mean,) = _num(group, "Q4LE")  # IBSI "Mean" (intensity-based statistics)
    # 35 HU inside; the 2 mm trilinear resampling mixes lung into the rim voxels.
    assert 0 < mean < 35
    texts = _texts(sr)
    assert "radiomics settings: name=IBSI-C; spacing_mm=(2.0, 2.0, 2.0)" in texts

    (pm,) = [d for d in results if d.SOPClassUID == PARAMETRIC_MAP_STORAGE]
    assert 1 <= int(pm.NumberOfFrames) <= len(datasets)

    # The research CSV: one row per feature of the GTV, pseudonymous study UID only.
    (csv_file,) = export.iterdir()
    text = csv_file.read_text(encoding="utf-8")
    assert identity.study_uid not in text and identity.patient_id not in text
    assert str(rtstruct.SOPInstanceUID) not in text  # the node's pseudonymous UID instead
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["region"] for r in rows} == {"GTV"} and {r["region_source"] for r in rows} == {
        "RTSTRUCT"}
    assert float(next(r["value"] for r in rows if r["ibsi_code"] == "RNU0")) == pytest.approx(
        volume, rel=1e-6)


def _texts(ds) -> str:  # noqa: ANN001
    found = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "TEXT":
            found.append(str(item.TextValue))
        found.append(_texts(item))
    return " ".join(found)


def test_radiomics_of_another_engines_findings_orthanc_to_node_and_back(tmp_path, monkeypatch):
    """The example hot-spot engine (installed as a site wheel would be) finds two spots; the
    radiomics job that runs after it measures them, and its SR in the PACS references the
    hot-spot SEG that reached the PACS too: the references resolve among the results."""
    need("Orthanc")
    need("dciodvfy")
    from tests.dicom_node.test_radiomics_jobs import ct_with_spots
    from tests.platform.entry_points import write_distribution

    site = write_distribution(tmp_path / "site-packages", "hotspot-example",
                              {"hotspot": "tests.platform.hotspot_engine:SPEC"})
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(ROOT)]))
    identity = PatientIdentity(name="Radiomik^Rolf", patient_id="E2E-RAD-2")
    source_dir = tmp_path / "source"
    files = write_series(ct_with_spots(identity, 2), source_dir)

    with pacs_with_node(tmp_path, routes=["hotspot", "radiomics"], extra={"radiomics": {
            "measure_engine_regions": True, "spacing_mm": [], "resegmentation_range": [],
            "feature_maps": False}}) as (pacs, node):
        study_id = send_through_node(pacs, files)
        # Two reports: the hot-spot engine's SR and the radiomics SR; and the hot-spot SEG,
        # delivered on its own (it may come after both).
        wait_for_series(pacs, node, study_id, lambda series: len(
            [s for s in series if s["MainDicomTags"].get("Modality") == "SR"]) == 2
            and "SEG" in series_modalities(series))
        out_dir = tmp_path / "results"
        results = results_in_pacs(pacs, study_id, sop_instance_uids(files), out_dir)
    check = validate_outputs(source_dir, out_dir)
    if check is not None:
        assert check.returncode == 0, check.stdout + check.stderr
    else:
        errors = dciodvfy_errors(out_dir)
        assert not errors, errors
    (seg,) = [d for d in results if d.Modality == "SEG"]
    (radiomics_sr,) = [d for d in results if d.Modality == "SR" and "radiomics" in _texts(d)]
    referenced = sorted(
        (str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID),
         int(i.ReferencedSOPSequence[0].ReferencedSegmentNumber))
        for group in _groups(radiomics_sr) for i in group.ContentSequence
        if "ReferencedSOPSequence" in i and "ReferencedSegmentNumber" in i.ReferencedSOPSequence[0])
    assert referenced == [(str(seg.SOPInstanceUID), 1), (str(seg.SOPInstanceUID), 2)]
    assert radiomics_sr.PatientID == identity.patient_id
