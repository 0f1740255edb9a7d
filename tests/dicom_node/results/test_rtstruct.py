"""RTSTRUCT writer: geometry round trip, attribute rules, validators, plastimatch."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from ai_engines import codes
from ai_engines.findings import Findings, Segment
from dicom_node.results import ResultOptions
from dicom_node.results.rtstruct import build_rtstruct
from dicom_node.sample_data import ct_series_datasets
from tests.dicom_node.results.conftest import all_elements, save


def even_odd_inside(polygon: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Crossing-number test of points (rows, cols) against a closed polygon (n, 2)."""
    inside = np.zeros(rows.shape, dtype=bool)
    r0, c0 = polygon[:, 0], polygon[:, 1]
    r1, c1 = np.roll(r0, -1), np.roll(c0, -1)
    for a_r, a_c, b_r, b_c in zip(r0, c0, r1, c1, strict=True):
        straddles = (a_r > rows) != (b_r > rows)
        with np.errstate(divide="ignore", invalid="ignore"):
            crossing_c = a_c + (rows - a_r) * (b_c - a_c) / (b_r - a_r)
        inside ^= straddles & (cols < crossing_c)
    return inside


def rasterize(rtstruct: Dataset, roi_number: int, source_datasets: list[Dataset]) -> np.ndarray:
    """Independent even-odd pixel-centre rasterizer of one ROI onto the source grid.

    Each contour is put on the slice its ContourImageSequence names, its points mapped back
    to (row, column) with that slice's IPP/IOP/PixelSpacing, and XOR-ed into the mask.
    """
    first = source_datasets[0]
    mask = np.zeros((len(source_datasets), first.Rows, first.Columns), dtype=bool)
    index = {ds.SOPInstanceUID: k for k, ds in enumerate(source_datasets)}
    rows, cols = np.mgrid[: first.Rows, : first.Columns]
    (item,) = [i for i in rtstruct.ROIContourSequence if i.ReferencedROINumber == roi_number]
    for contour in item.get("ContourSequence", []):
        k = index[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
        ds = source_datasets[k]
        points = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        offset = points - np.asarray([float(v) for v in ds.ImagePositionPatient])
        normal = np.cross(iop[:3], iop[3:])
        assert np.allclose(offset @ normal, 0, atol=1e-6), "contour is off its slice plane"
        col = offset @ iop[:3] / float(ds.PixelSpacing[1])
        row = offset @ iop[3:] / float(ds.PixelSpacing[0])
        mask[k] ^= even_odd_inside(np.c_[row, col], rows, cols)
    return mask


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_round_trip_dice_per_roi(rtstruct: Dataset, findings: Findings,
                                 source_datasets: list[Dataset]) -> None:
    scores = {}
    for number, segment in enumerate(findings.segments, start=1):
        back = rasterize(rtstruct, number, source_datasets)
        if not segment.mask.any():
            assert not back.any()
            continue
        scores[segment.label] = dice(back, segment.mask)
    print("RTSTRUCT round-trip Dice:", scores)
    assert set(scores) == {"GTV", "Lung_L", "Speck", "Edge"}
    assert min(scores.values()) >= 0.99, scores


def test_holes_and_islands_are_separate_contours(rtstruct: Dataset) -> None:
    per_roi = {i.ReferencedROINumber: i.get("ContourSequence", []) for i in rtstruct.ROIContourSequence}
    assert len(per_roi[1]) == 2 * 5  # GTV: outer + hole on 5 slices
    assert len(per_roi[2]) == 2 * 8 + 1  # Lung_L: two islands on 8 slices, a third on one
    assert len(per_roi[3]) == 1  # the speck
    assert "ContourSequence" not in rtstruct.ROIContourSequence[4]  # empty ROI kept, no contours


def test_contour_z_is_the_slice_ipp_exactly(rtstruct: Dataset,
                                            source_datasets: list[Dataset]) -> None:
    z_of = {ds.SOPInstanceUID: ds.ImagePositionPatient[2] for ds in source_datasets}
    for item in rtstruct.ROIContourSequence:
        for contour in item.get("ContourSequence", []):
            expected = z_of[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
            zs = contour.ContourData[2::3]
            assert all(float(z) == float(expected) for z in zs)
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            assert int(contour.NumberOfContourPoints) == len(zs) >= 3


def test_rtstruct_attribute_rules(tmp_path: Path, rtstruct: Dataset, findings: Findings,
                                  source_datasets: list[Dataset]) -> None:
    path = save(rtstruct, tmp_path / "rt.dcm")
    ds = pydicom.dcmread(path)
    source = source_datasets[0]
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
                    "AccessionNumber", "ReferringPhysicianName"):
        assert ds[keyword].value == source[keyword].value, keyword
    for keyword in ("OperatorsName", "PositionReferenceIndicator", "FrameOfReferenceUID",
                    "AccessionNumber", "ReferringPhysicianName", "Manufacturer"):
        assert keyword in ds
    assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert ds.ApprovalStatus == "UNAPPROVED"
    assert ds.SeriesInstanceUID.startswith("2.25.") and ds.SOPInstanceUID.startswith("2.25.")
    assert "AI" in ds.SeriesDescription and ds.SeriesNumber == 9002
    numbers = [r.ROINumber for r in ds.StructureSetROISequence]
    names = [r.ROIName for r in ds.StructureSetROISequence]
    assert numbers == [1, 2, 3, 4, 5] and names == [s.label for s in findings.segments]
    assert all(r.ROIGenerationAlgorithm == "AUTOMATIC" for r in ds.StructureSetROISequence)
    assert [o.RTROIInterpretedType for o in ds.RTROIObservationsSequence] == [
        s.rt_interpreted_type for s in findings.segments]
    series = (ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
              .RTReferencedSeriesSequence[0])
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence] == [
        d.SOPInstanceUID for d in source_datasets]
    for element in all_elements(ds):
        if element.VR == "DS" and element.value is not None:
            values = element.value if element.VM > 1 else [element.value]
            for value in values:
                text = getattr(value, "original_string", None) or str(value)
                assert len(text) <= 16, (element.keyword, text)


def test_rtstruct_passes_dciodvfy_and_drtdump(
    tmp_path: Path, rtstruct: Dataset, dciodvfy_errors: Callable[[Path], list[str]],
) -> None:
    path = save(rtstruct, tmp_path / "rt.dcm")
    assert dciodvfy_errors(path) == []
    if shutil.which("drtdump") is None:
        pytest.skip("drtdump (dcmtk) is not installed")
    result = subprocess.run(["drtdump", "-q", str(path)], capture_output=True, timeout=60)
    assert result.returncode == 0


def test_plastimatch_reads_every_roi(tmp_path: Path, rtstruct: Dataset, findings: Findings,
                                     source_dir: Path) -> None:
    if shutil.which("plastimatch") is None:
        pytest.skip("plastimatch (Debian) is not installed")
    path = save(rtstruct, tmp_path / "rt.dcm")
    out = tmp_path / "masks"
    result = subprocess.run(
        ["plastimatch", "convert", "--input", str(path), "--referenced-ct", str(source_dir),
         "--output-prefix", str(out), "--prefix-format", "nrrd"],
        capture_output=True, text=True, errors="replace", timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    written = sorted(p.stem for p in out.glob("*.nrrd"))
    # plastimatch writes no file for an ROI without contours (our empty-ROI policy).
    assert written == sorted(s.label for s in findings.segments if s.mask.any())


def _oblique_series(rotation_deg: float) -> list[Dataset]:
    """A small series whose rows run obliquely (rotated about z, then tilted)."""
    datasets = ct_series_datasets(np.full((4, 32, 32), -800.0), pixel_spacing=(0.8, 1.1),
                                  origin=(-12.3456789, 40.1, 7.7777777))
    angle = np.deg2rad(rotation_deg)
    row_dir = np.array([np.cos(angle), np.sin(angle), 0.0])
    col_dir = np.array([-np.sin(angle) * np.cos(0.3), np.cos(angle) * np.cos(0.3), np.sin(0.3)])
    normal = np.cross(row_dir, col_dir)
    origin = np.array([-12.3456789, 40.1, 7.7777777])
    for k, ds in enumerate(datasets):
        ds.ImageOrientationPatient = [float(f"{v:.8f}") for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [float(f"{v:.6f}") for v in origin + 3.0 * k * normal]
    return datasets


def test_oblique_geometry_round_trips(options: ResultOptions, findings: Findings) -> None:
    datasets = _oblique_series(30.0)
    mask = np.zeros((4, 32, 32), dtype=bool)
    rows, cols = np.mgrid[:32, :32]
    mask[1] = (rows - 14) ** 2 + (cols - 18) ** 2 <= 36
    mask[2, 0:6, 25:32] = True
    segment = Segment(label="Blob", description="oblique", category=codes.ANATOMICAL_STRUCTURE,
                      property_type=codes.BRAIN, rt_interpreted_type="ORGAN",
                      color_rgb=(1, 2, 3), mask=mask)
    oblique = dataclasses.replace(findings, segments=(segment,),
                                  source_series_uid=datasets[0].SeriesInstanceUID)
    rt = build_rtstruct(oblique, datasets, options)
    assert dice(rasterize(rt, 1, datasets), mask) >= 0.99


def test_rtstruct_rejects_bad_input(findings: Findings, declined_findings: Findings,
                                    source_datasets: list[Dataset],
                                    options: ResultOptions) -> None:
    with pytest.raises(ValueError, match="declined"):
        build_rtstruct(declined_findings, source_datasets, options)
    bad = dataclasses.replace(findings.segments[0], rt_interpreted_type="gtv")
    with pytest.raises(ValueError, match="rt_interpreted_type"):
        build_rtstruct(dataclasses.replace(findings, segments=(bad,)), source_datasets, options)
    twice = (findings.segments[0], findings.segments[0])
    with pytest.raises(ValueError, match="unique"):
        build_rtstruct(dataclasses.replace(findings, segments=twice), source_datasets, options)


def test_contour_too_long_for_explicit_vr_goes_out_implicit(
    tmp_path: Path, options: ResultOptions, findings: Findings,
    dciodvfy_errors: Callable[[Path], list[str]],
) -> None:
    """A jagged outline of thousands of points exceeds Explicit VR's 64 KiB element length:
    the structure set is written in Implicit VR instead of silently turning DS into UN."""
    datasets = ct_series_datasets(np.full((3, 512, 512), -800.0), pixel_spacing=(0.7421875,) * 2,
                                  origin=(-189.62890625, -189.62890625, -123.4567))
    mask = np.zeros((3, 512, 512), dtype=bool)
    for r in range(10, 500):
        shift = 2 * (r % 2)  # both side edges zigzag by two pixels on every row
        mask[1, r, 6 + shift : 505 - shift] = True
    segment = Segment(label="Jagged", description="long contour", category=codes.ANATOMICAL_STRUCTURE,
                      property_type=codes.LUNG, rt_interpreted_type="ORGAN",
                      color_rgb=(1, 2, 3), mask=mask)
    jagged = dataclasses.replace(findings, segments=(segment,),
                                 source_series_uid=datasets[0].SeriesInstanceUID)
    rt = build_rtstruct(jagged, datasets, options)
    path = save(rt, tmp_path / "rt.dcm")
    back = pydicom.dcmread(path)
    assert back.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    (contour,) = back.ROIContourSequence[0].ContourSequence
    assert contour["ContourData"].VR == "DS"
    assert len(contour.ContourData) == 3 * int(contour.NumberOfContourPoints) > 3 * 2000
    assert dice(rasterize(back, 1, datasets), mask) >= 0.99
    assert dciodvfy_errors(path) == []
