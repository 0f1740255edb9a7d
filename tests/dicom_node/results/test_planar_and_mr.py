"""Planar NM (anterior/posterior multi-frame) and MR sources through every writer."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import NuclearMedicineImageStorage, SegmentationStorage

from ai_engines.findings import Findings
from ai_engines.volume import SliceReference
from dicom_node.results import ResultOptions, build_result_objects
from dicom_node.results.source import source_grid
from tests.dicom_node.results.conftest import NM_SHAPE, save


@pytest.fixture(scope="module")
def nm_objects(nm_findings: Findings, nm_dataset: Dataset,
               options: ResultOptions) -> list[Dataset]:
    return build_result_objects(nm_findings, [nm_dataset], options)


@pytest.fixture(scope="module")
def mr_objects(mr_findings: Findings, mr_datasets: list[Dataset],
               options: ResultOptions) -> list[Dataset]:
    return build_result_objects(mr_findings, mr_datasets, options)


def _write(objects: list[Dataset], directory: Path) -> list[Path]:
    return [save(ds, directory / f"{number:02d}_{ds.Modality}.dcm")
            for number, ds in enumerate(objects, start=1)]


def test_nm_source_grid_reads_views(nm_dataset: Dataset) -> None:
    grid = source_grid([nm_dataset])
    assert grid.planar and not grid.tomographic and grid.shape == NM_SHAPE
    assert [grid.view(k) for k in range(2)] == ["ANTERIOR", "POSTERIOR"]
    # The worker's per-frame list (the instance once per frame) gives the same grid.
    again = source_grid([nm_dataset, nm_dataset])
    assert [s.frame_number for s in again.slices] == [1, 2]
    np.testing.assert_array_equal(grid.frame_pixels(1), nm_dataset.pixel_array[1])


def test_nm_objects_and_no_rtstruct(nm_objects: list[Dataset]) -> None:
    # One SEG per view with a hot spot, no RTSTRUCT (planar views have no patient-space
    # contours), the SR, one picture with both views; no Parametric Map (its IOD needs a
    # patient-space plane position per frame): the heat map is in the picture.
    assert [ds.Modality for ds in nm_objects] == ["SEG", "SEG", "SR", "OT"]
    assert nm_objects[3].SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert len({ds.SeriesInstanceUID for ds in nm_objects[:2]}) == 1


def test_nm_segs_reference_their_frames(nm_objects: list[Dataset], nm_findings: Findings,
                                        nm_dataset: Dataset) -> None:
    for frame_number, seg in enumerate(nm_objects[:2], start=1):
        assert seg.SOPClassUID == SegmentationStorage
        assert seg.FrameOfReferenceUID == nm_dataset.FrameOfReferenceUID
        references = [item.SourceImageSequence[0]
                      for frame in seg.PerFrameFunctionalGroupsSequence
                      for item in frame.DerivationImageSequence]
        assert references and all(r.ReferencedSOPInstanceUID == nm_dataset.SOPInstanceUID
                                  and r.ReferencedSOPClassUID == NuclearMedicineImageStorage
                                  and int(r.ReferencedFrameNumber) == frame_number
                                  for r in references)
        assert [i.SegmentLabel for i in seg.SegmentSequence] == ["HOT_1", "HOT_2"]
        assert [i.TrackingID for i in seg.SegmentSequence] == ["HOT_1", "HOT_2"]
        # The one frame holds each segment's mask of this view.
        pixels = seg.pixel_array.reshape(-1, *NM_SHAPE[1:])
        numbers = [int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
                   for f in seg.PerFrameFunctionalGroupsSequence]
        for frame_pixels, number in zip(pixels, numbers, strict=True):
            expected = nm_findings.segments[number - 1].mask[frame_number - 1]
            np.testing.assert_array_equal(frame_pixels.astype(bool), expected)


def test_nm_report_references_frames(tmp_path: Path, nm_objects: list[Dataset],
                                     nm_dataset: Dataset) -> None:
    sr = hd.sr.srread(save(nm_objects[2], tmp_path / "sr.dcm"))
    planar = {g.tracking_identifier: g for g in sr.content.get_planar_roi_measurement_groups()}
    assert set(planar) == {"HOT_1", "HOT_2"}
    for label, view_seg, frame in (("HOT_1", nm_objects[0], 1), ("HOT_2", nm_objects[1], 2)):
        reference = planar[label].referenced_segmentation_frame
        assert reference.referenced_sop_instance_uid == view_seg.SOPInstanceUID
        source = reference.source_image_for_segmentation
        assert source.referenced_sop_instance_uid == nm_dataset.SOPInstanceUID
        assert source.referenced_frame_numbers == [frame]
    probabilities = {label: {m.name.value: m.value for m in group.get_measurements()}
                     for label, group in planar.items()}
    assert probabilities["HOT_1"] == {"111047": 0.91, "42798000": 250.0}
    assert probabilities["HOT_2"] == {"111047": 0.55}
    (scan,) = sr.content.get_image_measurement_groups()
    (probability,) = scan.get_measurements()
    assert (probability.name.value, probability.value, probability.unit.value) == (
        "111047", 0.93, "1")
    source_items = [i for i in scan[0].ContentSequence if i.ValueType == "IMAGE"]
    (image,) = source_items
    assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == nm_dataset.SOPInstanceUID
    assert int(image.ReferencedSOPSequence[0].ReferencedFrameNumber) == 1
    parameters = [i.TextValue for i in scan[0].ContentSequence
                  if i.ConceptNameCodeSequence[0].CodeValue == "111002"]
    assert parameters == ["threshold=0.42"]


def test_nm_picture_shows_both_views(nm_objects: list[Dataset], nm_dataset: Dataset) -> None:
    picture = nm_objects[3]
    assert [int(r.ReferencedFrameNumber) for r in picture.SourceImageSequence] == [1, 2]
    pixels = picture.pixel_array
    scale = int(np.ceil(512 / max(NM_SHAPE[1:])))
    assert pixels.shape[1] == 2 * NM_SHAPE[2] * scale + 260
    # Inverted count scale: the background (low counts) is light, not black.
    background = pixels[22 + 14 + 5 * scale, 2 * scale]
    assert background.min() > 128
    # Each hot spot's outline in its colour, on its own view.
    for colour, view in (((255, 64, 0), 0), ((0, 200, 255), 1)):
        half = pixels[:, view * NM_SHAPE[2] * scale:(view + 1) * NM_SHAPE[2] * scale]
        assert np.any(np.all(half.reshape(-1, 3) == colour, axis=1)), colour


def test_every_nm_and_mr_object_passes_dciodvfy(
    tmp_path: Path, nm_objects: list[Dataset], mr_objects: list[Dataset],
    dciodvfy_errors: Callable[[Path], list[str]],
) -> None:
    for path in _write(nm_objects, tmp_path / "nm") + _write(mr_objects, tmp_path / "mr"):
        assert dciodvfy_errors(path) == [], path.name


def test_mr_objects(mr_objects: list[Dataset], mr_datasets: list[Dataset]) -> None:
    assert [ds.Modality for ds in mr_objects][:4] == ["SEG", "RTSTRUCT", "SR", "OT"]
    assert len(mr_objects) == 5
    assert mr_objects[1].StructureSetROISequence[0].ROIName == "GTV_1"


def test_validate_outputs_script_on_nm(
    tmp_path: Path, nm_objects: list[Dataset], nm_dataset: Dataset,
    validate_outputs: Callable[[Path, Path], subprocess.CompletedProcess[str]],
) -> None:
    save(nm_dataset, tmp_path / "src" / "nm.dcm")
    _write(nm_objects, tmp_path / "out")
    result = validate_outputs(tmp_path / "src", tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr


def test_enhanced_multiframe_mr(tmp_path: Path, mr_findings: Findings,
                                mr_datasets: list[Dataset], options: ResultOptions,
                                dciodvfy_errors: Callable[[Path], list[str]]) -> None:
    """An enhanced (multi-frame) MR: SEG and map frames on the right source frames, no
    RTSTRUCT (its contours need single-frame slices), every object dciodvfy-clean."""
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
        mr_datasets, series_instance_uid=hd.UID(), series_number=5, sop_instance_uid=hd.UID(),
        instance_number=1)
    findings = dataclasses.replace(mr_findings, source_series_uid=enhanced.SeriesInstanceUID)
    grid = source_grid([enhanced])
    objects = build_result_objects(findings, [enhanced], options)
    assert [ds.Modality for ds in objects][:2] == ["SEG", "SR"] and len(objects) == 4
    assert objects[3].SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"
    seg = objects[0]
    mask = findings.segments[0].mask
    frame_of_slice = {item.frame_number: k for k, item in enumerate(grid.slices)}
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        assert source.ReferencedSOPInstanceUID == enhanced.SOPInstanceUID
        k = frame_of_slice[int(source.ReferencedFrameNumber)]
        np.testing.assert_array_equal(seg.pixel_array[index].astype(bool), mask[k])
    for path in _write(objects, tmp_path):
        assert dciodvfy_errors(path) == [], path.name


def _one_view(nm: Dataset, frame: int) -> Dataset:
    """Frame ``frame`` of the whole-body instance as an NM instance of its own."""
    from pydicom.uid import generate_uid

    view = copy.deepcopy(nm)  # the session fixture stays as it is
    view.SOPInstanceUID = generate_uid()
    view.file_meta.MediaStorageSOPInstanceUID = view.SOPInstanceUID
    view.InstanceNumber = frame
    view.NumberOfFrames = 1
    view.EnergyWindowVector = [1]
    view.DetectorVector = [1]
    view.NumberOfDetectors = 1
    view.DetectorInformationSequence = [nm.DetectorInformationSequence[frame - 1]]
    view.PixelData = nm.pixel_array[frame - 1].tobytes()
    return view


def test_two_single_view_instances(tmp_path: Path, nm_dataset: Dataset, nm_findings: Findings,
                                   options: ResultOptions,
                                   dciodvfy_errors: Callable[[Path], list[str]],
                                   validate_outputs: Callable[
                                       [Path, Path], subprocess.CompletedProcess[str]]) -> None:
    """Anterior and posterior as two NM instances of one frame each: planar too."""
    views = [_one_view(nm_dataset, 1), _one_view(nm_dataset, 2)]
    grid = source_grid(views)
    assert grid.planar and not grid.multiframe and not grid.tomographic
    assert [grid.view(k) for k in range(2)] == ["ANTERIOR", "POSTERIOR"]
    with pytest.raises(ValueError, match="not among the sources"):
        build_result_objects(nm_findings, views, options)  # it names the multi-frame image
    classification = dataclasses.replace(
        nm_findings.classifications[0], source=SliceReference(
            str(views[0].SOPClassUID), str(views[0].SOPInstanceUID), view="ANTERIOR"))
    findings = dataclasses.replace(nm_findings, classifications=(classification,))
    objects = build_result_objects(findings, views, options)
    assert [ds.Modality for ds in objects] == ["SEG", "SEG", "SR", "OT"]
    for view, seg in zip(views, objects[:2], strict=True):
        assert {frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                for frame in seg.PerFrameFunctionalGroupsSequence} == {view.SOPInstanceUID}
    sr = hd.sr.Comprehensive3DSR.from_dataset(objects[2])
    planar = {g.tracking_identifier: g for g in sr.content.get_planar_roi_measurement_groups()}
    source = planar["HOT_2"].referenced_segmentation_frame.source_image_for_segmentation
    assert source.referenced_sop_instance_uid == views[1].SOPInstanceUID
    for view in views:
        save(view, tmp_path / "src" / f"{view.InstanceNumber}.dcm")
    for path in _write(objects, tmp_path / "out"):
        assert dciodvfy_errors(path) == [], path.name
    result = validate_outputs(tmp_path / "src", tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr


def test_planar_source_without_pixel_spacing_is_refused(nm_dataset: Dataset,
                                                        nm_findings: Findings,
                                                        options: ResultOptions) -> None:
    bare = copy.deepcopy(nm_dataset)
    del bare.PixelSpacing
    with pytest.raises(ValueError, match="lacks PixelSpacing"):
        build_result_objects(nm_findings, [bare], options)
