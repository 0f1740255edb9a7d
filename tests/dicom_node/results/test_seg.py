"""DICOM-SEG writer: content, validators and a voxel-exact read-back with highdicom."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from ai_engines.findings import Findings
from dicom_node.results import ResultOptions
from dicom_node.results.seg import build_segmentation
from tests.dicom_node.results.conftest import save


def test_seg_is_a_new_series_in_the_source_study(segmentation: Dataset,
                                                  source_datasets: list[Dataset]) -> None:
    source = source_datasets[0]
    assert segmentation.Modality == "SEG"
    assert segmentation.SegmentationType == "BINARY"
    assert segmentation.StudyInstanceUID == source.StudyInstanceUID
    assert segmentation.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert segmentation.SeriesInstanceUID != source.SeriesInstanceUID
    assert segmentation.SeriesNumber == 9001
    assert segmentation.SpecificCharacterSet == "ISO_IR 192"
    assert segmentation.PatientName == source.PatientName
    assert segmentation.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert "AI" in segmentation.SeriesDescription
    assert "RESEARCH USE" in segmentation.SeriesDescription
    assert segmentation.SeriesDescription.isascii()
    assert segmentation.ContentLabel == "CT_LUNG_NSCLC"
    for uid in (segmentation.SOPInstanceUID, segmentation.SeriesInstanceUID,
                segmentation.DimensionOrganizationSequence[0].DimensionOrganizationUID):
        assert uid.startswith("2.25.")


def test_seg_references_the_source_series(segmentation: Dataset,
                                          source_datasets: list[Dataset]) -> None:
    referenced = segmentation.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source_datasets[0].SeriesInstanceUID
    source_uids = {ds.SOPInstanceUID for ds in source_datasets}
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == source_uids
    for frame in segmentation.PerFrameFunctionalGroupsSequence:
        source_image = frame.DerivationImageSequence[0].SourceImageSequence[0]
        assert source_image.ReferencedSOPInstanceUID in source_uids


def test_segment_descriptions_are_coded(segmentation: Dataset, findings: Findings) -> None:
    items = segmentation.SegmentSequence
    assert [i.SegmentLabel for i in items] == [s.label for s in findings.segments]
    for item, segment in zip(items, findings.segments, strict=True):
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == segment.category.value
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == segment.property_type.value
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"
        assert algorithm.AlgorithmName == "ct-lung-nsclc"
        assert algorithm.AlgorithmVersion == "1.0.0+demo-weights-2026.11"
        assert len(item.RecommendedDisplayCIELabValue) == 3
        assert item.TrackingUID.startswith("2.25.")
        assert item.TrackingID == (segment.tracking_id or segment.label)
        if segment.anatomic_region:
            assert item.AnatomicRegionSequence[0].CodeValue == segment.anatomic_region.value
        if segment.property_modifier:
            modifier = item.SegmentedPropertyTypeCodeSequence[0]
            assert (modifier.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue
                    == segment.property_modifier.value)


def test_seg_reads_back_voxel_for_voxel(tmp_path: Path, segmentation: Dataset,
                                        findings: Findings,
                                        source_datasets: list[Dataset]) -> None:
    path = save(segmentation, tmp_path / "seg.dcm")
    seg = hd.seg.segread(path)
    numbers = list(range(1, len(findings.segments) + 1))
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID for ds in source_datasets],
        segment_numbers=numbers,
        combine_segments=False,
        skip_overlap_checks=True,
    )
    assert pixels.shape == (*findings.segments[0].mask.shape, len(numbers))
    for index, segment in enumerate(findings.segments):
        np.testing.assert_array_equal(pixels[..., index].astype(bool), segment.mask,
                                      err_msg=segment.label)


def test_seg_passes_dciodvfy(tmp_path: Path, segmentation: Dataset,
                             dciodvfy_errors: Callable[[Path], list[str]]) -> None:
    assert dciodvfy_errors(save(segmentation, tmp_path / "seg.dcm")) == []


def test_all_empty_masks_give_an_all_zero_seg(
    tmp_path: Path, findings: Findings, source_datasets: list[Dataset],
    options: ResultOptions, dciodvfy_errors: Callable[[Path], list[str]],
) -> None:
    empty = dataclasses.replace(findings, segments=(findings.segments[-1],))
    seg = build_segmentation(empty, source_datasets, options)
    assert int(seg.NumberOfFrames) == len(source_datasets)
    assert not seg.pixel_array.any()
    assert dciodvfy_errors(save(seg, tmp_path / "empty.dcm")) == []


def test_seg_rejects_what_it_cannot_encode(findings: Findings, declined_findings: Findings,
                                           source_datasets: list[Dataset],
                                           options: ResultOptions) -> None:
    with pytest.raises(ValueError, match="no segments"):
        build_segmentation(dataclasses.replace(findings, segments=()), source_datasets, options)
    with pytest.raises(ValueError, match="declined"):
        build_segmentation(declined_findings, source_datasets, options)
    with pytest.raises(ValueError, match="source grid"):
        build_segmentation(findings, source_datasets[:-1], options)
    with pytest.raises(ValueError, match="source_series_uid"):
        build_segmentation(dataclasses.replace(findings, source_series_uid="1.2.3"),
                           source_datasets, options)
