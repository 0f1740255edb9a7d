"""TID 1500 SR writer: parsers, validators and content read back with highdicom."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage, ComprehensiveSRStorage

from ai_engines.findings import Findings
from dicom_node.results import ResultOptions
from dicom_node.results.sr import build_measurement_report
from tests.dicom_node.results.conftest import save


@pytest.fixture(scope="module")
def report(findings: Findings, source_datasets: list[Dataset], segmentation: Dataset,
           options: ResultOptions) -> Dataset:
    return build_measurement_report(findings, source_datasets, segmentation, options)


def _texts(ds: Dataset) -> list[str]:
    found = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "TEXT":
            found.append(str(item.TextValue))
        found.extend(_texts(item))
    return found


def _dsrdump_ok(path: Path) -> None:
    if shutil.which("dsrdump") is None:
        pytest.skip("dsrdump (dcmtk) is not installed")
    result = subprocess.run(["dsrdump", "-q", str(path)], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def test_report_header(report: Dataset, source_datasets: list[Dataset]) -> None:
    source = source_datasets[0]
    assert report.SOPClassUID == Comprehensive3DSRStorage
    assert report.StudyInstanceUID == source.StudyInstanceUID
    assert report.SeriesInstanceUID.startswith("2.25.") and report.SeriesNumber == 9003
    assert report.SpecificCharacterSet == "ISO_IR 192"
    assert report.PatientName == source.PatientName
    assert (report.PreliminaryFlag, report.VerificationFlag, report.CompletionFlag) == (
        "PRELIMINARY", "UNVERIFIED", "COMPLETE")
    assert "AI" in report.SeriesDescription


def test_report_parses_and_validates(tmp_path: Path, report: Dataset,
                                     dciodvfy_errors: Callable[[Path], list[str]]) -> None:
    path = save(report, tmp_path / "sr.dcm")
    assert dciodvfy_errors(path) == []
    _dsrdump_ok(path)


def test_report_content_reads_back(tmp_path: Path, report: Dataset, segmentation: Dataset,
                                   source_datasets: list[Dataset]) -> None:
    sr = hd.sr.srread(save(report, tmp_path / "sr.dcm"))
    content = sr.content
    device = content.get_observer_contexts()[0]
    assert any(getattr(i, "UID", None) == "2.25.123456789012345678901234567890123"
               for i in device.observer_identifying_attributes)

    groups = {g.tracking_identifier: g for g in content.get_volumetric_roi_measurement_groups()}
    assert set(groups) == {"tumour-1", "Lung_L"}  # segments with measurements only
    seg_items = {i.SegmentLabel: i for i in segmentation.SegmentSequence}
    tumour = groups["tumour-1"]
    assert tumour.tracking_uid == seg_items["GTV"].TrackingUID
    reference = tumour.referenced_segment
    assert reference.referenced_sop_instance_uid == segmentation.SOPInstanceUID
    assert reference.referenced_segment_numbers == [1]
    source_uids = {ds.SOPInstanceUID for ds in source_datasets}
    source_refs = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                   for i in tumour[0].ContentSequence
                   if i.ConceptNameCodeSequence[0].CodeValue == "121233"}
    assert source_refs and source_refs <= source_uids
    values = {(m.name.meaning, m.unit.value): m.value for m in tumour.get_measurements()}
    assert values == {("Volume", "ml"): 2.345, ("Long Axis", "mm"): 24.4,
                      ("Short Axis", "mm"): 20.1, ("Mean", "[hnsf'U]"): -12.5}
    assert tumour.finding_type.value == "108369006"
    assert tumour.finding_sites[0].value.value == "39607008"
    algorithm = {i.ConceptNameCodeSequence[0].CodeValue: i.get("TextValue")
                 for i in tumour[0].ContentSequence}
    assert algorithm["111001"] == "ct-lung-nsclc"
    assert algorithm["111003"] == "1.0.0+demo-weights-2026.11"
    lung = groups["Lung_L"]
    assert lung.finding_sites[0].value.value == "39607008"

    (classification,) = content.get_image_measurement_groups()
    assert classification.tracking_identifier == "cls-1"
    (probability,) = classification.get_measurements()
    assert (probability.name.value, probability.value, probability.unit.value) == (
        "111047", 0.87, "1")
    # The positive class is the group's Finding (121071) CODE item.
    assert classification.finding_type.value == "108369006"
    assert any("research use only" in t for t in _texts(report))


def test_comprehensive_sr_on_request(tmp_path: Path, findings: Findings,
                                     source_datasets: list[Dataset], segmentation: Dataset,
                                     options: ResultOptions,
                                     dciodvfy_errors: Callable[[Path], list[str]]) -> None:
    plain = dataclasses.replace(options, sr_storage="comprehensive")
    sr = build_measurement_report(findings, source_datasets, segmentation, plain)
    assert sr.SOPClassUID == ComprehensiveSRStorage
    assert dciodvfy_errors(save(sr, tmp_path / "sr.dcm")) == []


def test_declined_run_says_why(tmp_path: Path, declined_findings: Findings,
                               source_datasets: list[Dataset], options: ResultOptions,
                               dciodvfy_errors: Callable[[Path], list[str]]) -> None:
    sr = build_measurement_report(declined_findings, source_datasets, None, options)
    path = save(sr, tmp_path / "declined.dcm")
    assert dciodvfy_errors(path) == []
    _dsrdump_ok(path)
    texts = _texts(sr)
    assert any("QC_TOO_FEW_SLICES" in t and "too few slices" in t for t in texts)
    assert any("research use only" in t for t in texts)
    (group,) = hd.sr.srread(path).content.get_image_measurement_groups()
    (evaluation,) = group.get_qualitative_evaluations()
    assert evaluation.value.value == "QC_TOO_FEW_SLICES"


def test_no_research_comment_when_not_research_use(findings: Findings,
                                                   source_datasets: list[Dataset],
                                                   segmentation: Dataset,
                                                   options: ResultOptions) -> None:
    cleared = dataclasses.replace(
        findings, engine=dataclasses.replace(findings.engine, research_use_only=False))
    sr = build_measurement_report(cleared, source_datasets, segmentation, options)
    assert not any("research use" in t for t in _texts(sr))


def test_report_rejects_bad_input(findings: Findings, source_datasets: list[Dataset],
                                  segmentation: Dataset, options: ResultOptions) -> None:
    with pytest.raises(ValueError, match="device_observer_uid"):
        build_measurement_report(findings, source_datasets, segmentation,
                                 dataclasses.replace(options, device_observer_uid=""))
    with pytest.raises(ValueError, match="need the segmentation"):
        build_measurement_report(findings, source_datasets, None, options)
    with pytest.raises(ValueError, match="not a DICOM Segmentation"):
        build_measurement_report(findings, source_datasets, source_datasets[0], options)
