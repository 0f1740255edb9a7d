"""Image-level classifications, per-lesion probability, measurements of received regions,
findings on several series, and the picture's window per modality."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from PIL import ImageDraw
from pydicom.dataset import Dataset
from pydicom.uid import RTStructureSetStorage, SegmentationStorage, generate_uid

from ai_engines import codes
from ai_engines.findings import Findings, Measurement, RegionMeasurements, VoxelMap
from ai_engines.volume import RoiContours, SliceReference
from dicom_node.results import ResultOptions, build_result_objects
from dicom_node.results.capture import build_key_images, display_window
from dicom_node.results.source import source_grid
from dicom_node.results.sr import build_measurement_report
from tests.dicom_node.results.conftest import JOINT_ENTROPY, SHAPE, save


def _content(ds: Dataset) -> list[Dataset]:
    found = []
    for item in ds.get("ContentSequence", []):
        found.append(item)
        found.extend(_content(item))
    return found


def _slice_classification(findings: Findings, source: Dataset) -> Findings:
    classification = dataclasses.replace(
        findings.classifications[0],
        source=SliceReference(str(source.SOPClassUID), str(source.SOPInstanceUID)),
        source_series_uid=str(source.SeriesInstanceUID),
    )
    return dataclasses.replace(findings, classifications=(classification,))


def test_classification_references_its_image(
    tmp_path: Path, findings: Findings, source_datasets: list[Dataset], segmentation: Dataset,
    options: ResultOptions, dciodvfy_errors: Callable[[Path], list[str]],
) -> None:
    on_slice = _slice_classification(findings, source_datasets[8])
    sr = build_measurement_report(on_slice, source_datasets, segmentation, options)
    assert dciodvfy_errors(save(sr, tmp_path / "sr.dcm")) == []
    (group,) = hd.sr.srread(tmp_path / "sr.dcm").content.get_image_measurement_groups()
    (image,) = [i for i in group[0].ContentSequence if i.ValueType == "IMAGE"]
    assert image.ConceptNameCodeSequence[0].CodeValue == "121112"  # Source of Measurement
    reference = image.ReferencedSOPSequence[0]
    assert reference.ReferencedSOPInstanceUID == source_datasets[8].SOPInstanceUID
    assert "ReferencedFrameNumber" not in reference  # a single-frame slice
    (probability,) = group.get_measurements()
    assert (probability.name.value, probability.value) == ("111047", 0.87)
    # The picture adds the classified slice and states the probability and threshold.
    images = build_key_images(on_slice, source_datasets, options)
    assert source_datasets[8].SOPInstanceUID in {
        i.SourceImageSequence[0].ReferencedSOPInstanceUID for i in images}


def test_classification_of_an_unknown_image_is_refused(
    findings: Findings, source_datasets: list[Dataset], segmentation: Dataset,
    options: ResultOptions,
) -> None:
    stranger = copy.deepcopy(source_datasets[0])
    stranger.SOPInstanceUID = generate_uid()
    with pytest.raises(ValueError, match="not among the sources"):
        build_measurement_report(_slice_classification(findings, stranger), source_datasets,
                                 segmentation, options)


def test_segment_probability_in_report_and_numbered_picture(
    monkeypatch: pytest.MonkeyPatch, findings: Findings, source_datasets: list[Dataset],
    options: ResultOptions,
) -> None:
    gtv = dataclasses.replace(findings.segments[0], probability=0.77)
    scored = dataclasses.replace(findings, segments=(gtv, *findings.segments[1:]))
    objects = build_result_objects(scored, source_datasets,
                                   dataclasses.replace(options, include_secondary_capture=False))
    groups = {g.tracking_identifier: g for g in
              hd.sr.Comprehensive3DSR.from_dataset(objects[2]).content
              .get_volumetric_roi_measurement_groups()}
    values = {m.name.value: m.value for m in groups["tumour-1"].get_measurements()}
    assert values["111047"] == 0.77  # Neoplasm: Probability of cancer
    assert "111047" not in {m.name.value for m in groups["Lung_L"].get_measurements()}
    # ROI name, SEG label and SR tracking identifier agree with the drawn number's key.
    assert objects[1].StructureSetROISequence[0].ROIName == "GTV"
    assert int(objects[1].StructureSetROISequence[0].ROINumber) == 1
    drawn: list[str] = []
    original = ImageDraw.ImageDraw.text

    def record(self: ImageDraw.ImageDraw, xy: object, text: str, *args: object,
               **kwargs: object) -> None:
        drawn.append(text)
        original(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", record)
    build_key_images(scored, source_datasets, options)
    assert "1" in drawn and "[1] GTV" in drawn and "  Probability 0.77" in drawn
    drawn.clear()
    build_key_images(findings, source_datasets, options)
    assert "[1] GTV" not in drawn and "GTV" in drawn  # no probability: pictures unchanged


@pytest.fixture(scope="module")
def region_findings(findings: Findings, rtstruct: Dataset, segmentation: Dataset) -> Findings:
    series_uid = findings.source_series_uid
    planned = RoiContours(
        name="GTV_plan", series_uid=series_uid, mask=findings.segments[0].mask,
        source_sop_class_uid=RTStructureSetStorage,
        source_sop_instance_uid=str(rtstruct.SOPInstanceUID), source_number=1,
        source_series_uid=str(rtstruct.SeriesInstanceUID))
    segmented = RoiContours(
        name="Lung_L", series_uid=series_uid, mask=findings.segments[1].mask,
        source_sop_class_uid=SegmentationStorage,
        source_sop_instance_uid=str(segmentation.SOPInstanceUID), source_number=2,
        source_series_uid=str(segmentation.SeriesInstanceUID))
    entropy = Measurement(JOINT_ENTROPY, 4.21, codes.UNIT_NONE)
    return Findings(
        engine=dataclasses.replace(findings.engine, name="radiomics"),
        source_series_uid=series_uid,
        region_measurements=(
            RegionMeasurements(planned, (Measurement(codes.VOLUME, 2.3, codes.UNIT_ML),
                                         entropy), tracking_id="GTV_plan"),
            RegionMeasurements(segmented, (entropy,)),
        ),
    )


def test_region_measurements_reference_the_received_objects(
    tmp_path: Path, region_findings: Findings, source_datasets: list[Dataset],
    rtstruct: Dataset, segmentation: Dataset, options: ResultOptions,
    dciodvfy_errors: Callable[[Path], list[str]],
) -> None:
    objects = build_result_objects(region_findings, source_datasets, options)
    assert [ds.Modality for ds in objects] == ["SR", "OT"]  # no new copy of the regions
    sr = objects[0]
    path = save(sr, tmp_path / "sr.dcm")
    assert dciodvfy_errors(path) == []
    content = hd.sr.srread(path).content
    (volumetric,) = content.get_volumetric_roi_measurement_groups()
    assert volumetric.tracking_identifier == "Lung_L"
    assert volumetric.referenced_segment.referenced_sop_instance_uid == segmentation.SOPInstanceUID
    assert volumetric.referenced_segment.referenced_segment_numbers == [2]
    (planned,) = content.get_image_measurement_groups()
    assert planned.tracking_identifier == "GTV_plan"
    items = {i.ConceptNameCodeSequence[0].CodeValue: i for i in planned[0].ContentSequence}
    assert items["RTSTRUCT_REF"].ValueType == "COMPOSITE"
    assert (items["RTSTRUCT_REF"].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            == rtstruct.SOPInstanceUID)
    assert items["ROI_NUMBER"].TextValue == "1"
    # The images the planned GTV lies on are the group's Source images.
    sources = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
               for i in planned[0].ContentSequence if i.ValueType == "IMAGE"}
    assert sources == {source_datasets[k].SOPInstanceUID for k in range(3, 8)}
    assert {(m.name.value, m.value) for m in planned.get_measurements()} == {
        ("118565006", 2.3), ("TU0O", 4.21)}
    evidence = {s.SeriesInstanceUID: {i.ReferencedSOPInstanceUID
                                      for i in s.ReferencedSOPSequence}
                for s in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence}
    assert evidence[rtstruct.SeriesInstanceUID] == {rtstruct.SOPInstanceUID}
    assert evidence[segmentation.SeriesInstanceUID] == {segmentation.SOPInstanceUID}


def test_findings_on_two_series(mr_findings: Findings, mr_datasets: list[Dataset],
                                options: ResultOptions) -> None:
    """A segment on a second series (e.g. FLAIR next to T1c) gets its own SEG and RTSTRUCT,
    and the SR references both series."""
    flair_uid = generate_uid()
    flair = []
    for ds in mr_datasets:
        copied = copy.deepcopy(ds)
        copied.SeriesInstanceUID, copied.SOPInstanceUID = flair_uid, generate_uid()
        flair.append(copied)
    oedema = dataclasses.replace(mr_findings.segments[0], label="Oedema", tracking_id="",
                                 probability=None, source_series_uid=flair_uid)
    both = dataclasses.replace(mr_findings, segments=(*mr_findings.segments, oedema), maps=())
    no_pictures = dataclasses.replace(options, include_secondary_capture=False)
    with pytest.raises(ValueError, match="were not given"):
        build_result_objects(both, mr_datasets, no_pictures)
    objects = build_result_objects(both, mr_datasets, no_pictures, sources={flair_uid: flair})
    assert [ds.Modality for ds in objects] == ["SEG", "SEG", "RTSTRUCT", "RTSTRUCT", "SR"]
    assert objects[1].ReferencedSeriesSequence[0].SeriesInstanceUID == flair_uid
    assert [r.ROIName for r in objects[3].StructureSetROISequence] == ["Oedema"]
    evidence = {s.SeriesInstanceUID for s in
                objects[4].CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence}
    assert {mr_datasets[0].SeriesInstanceUID, flair_uid} <= evidence


def test_worker_list_and_slice_order(nm_findings: Findings, nm_dataset: Dataset,
                                     source_datasets: list[Dataset],
                                     options: ResultOptions) -> None:
    # Today's worker lists a multi-frame instance once per frame: same objects as once.
    objects = build_result_objects(nm_findings, [nm_dataset, nm_dataset], options)
    assert [ds.Modality for ds in objects] == ["SEG", "SEG", "SR", "OT"]
    # A volume's slice references decide the order.
    references = [SliceReference(str(ds.SOPClassUID), str(ds.SOPInstanceUID))
                  for ds in reversed(source_datasets)]
    grid = source_grid(source_datasets, references)
    assert grid.slices[0].dataset is source_datasets[-1]


def test_window_per_modality(source_datasets: list[Dataset], mr_datasets: list[Dataset],
                             nm_dataset: Dataset) -> None:
    chest = source_grid(source_datasets)
    assert display_window(chest, np.zeros(3)) == (-1350.0, 150.0, False)  # lung window
    head = copy.deepcopy(source_datasets[0])
    head.BodyPartExamined = "HEAD"
    assert display_window(source_grid([head]), np.zeros(3)) == (0.0, 80.0, False)
    mr = source_grid(mr_datasets)
    values = np.stack([mr.frame_pixels(k) for k in range(3)])
    low, high, inverted = display_window(mr, values)
    assert not inverted and low == pytest.approx(np.percentile(values, 1))
    assert high == pytest.approx(np.percentile(values, 99.5))
    nm = source_grid([nm_dataset])
    counts = np.stack([nm.frame_pixels(0), nm.frame_pixels(1)])
    assert display_window(nm, counts) == (0.0, pytest.approx(np.percentile(counts, 99.5)), True)


def test_map_is_drawn_in_colour_on_its_hottest_slice(
    findings: Findings, source_datasets: list[Dataset], options: ResultOptions,
) -> None:
    values = np.zeros(SHAPE)
    values[9, 20:40, 20:40] = 1.0
    heat = VoxelMap(label="Heat", description="", quantity=JOINT_ENTROPY,
                    unit=codes.UNIT_NONE, values=values)
    mapped = dataclasses.replace(findings, segments=(), classifications=(), maps=(heat,))
    (image,) = build_key_images(mapped, source_datasets, options)
    assert image.SourceImageSequence[0].ReferencedSOPInstanceUID == \
        source_datasets[9].SOPInstanceUID
    pixels = image.pixel_array[22:, :512].astype(int)  # the slice, below the banner
    spread = pixels.max(axis=2) - pixels.min(axis=2)
    coloured = spread > 60
    scale = 512 // SHAPE[1]
    assert coloured[30 * scale, 30 * scale] and not coloured[5 * scale, 5 * scale]


def test_only_referenced_series_are_evidence(findings: Findings, source_datasets: list[Dataset],
                                             segmentation: Dataset, mr_datasets: list[Dataset],
                                             options: ResultOptions) -> None:
    other = {str(mr_datasets[0].SeriesInstanceUID): mr_datasets}
    if mr_datasets[0].StudyInstanceUID != source_datasets[0].StudyInstanceUID:
        with pytest.raises(ValueError, match="not in the engine's study"):
            build_measurement_report(findings, source_datasets, segmentation, options,
                                     sources=other)
    same_study = [copy.deepcopy(ds) for ds in mr_datasets]
    for ds in same_study:
        ds.StudyInstanceUID = source_datasets[0].StudyInstanceUID
    sr = build_measurement_report(findings, source_datasets, segmentation, options,
                                  sources={str(mr_datasets[0].SeriesInstanceUID): same_study})
    evidence = {s.SeriesInstanceUID for s in
                sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence}
    assert evidence == {source_datasets[0].SeriesInstanceUID, segmentation.SeriesInstanceUID}
