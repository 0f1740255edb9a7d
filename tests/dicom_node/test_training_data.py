"""Ground truth for training: RTSTRUCT contours rasterised onto their CT series."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_node.sample_data import ct_series_datasets, phantom_chest_hu, write_series
from dicom_node.training_data import (
    RTSTRUCT_STORAGE,
    GroundTruthError,
    iter_ground_truth_cases,
    rasterise_rtstruct,
)
from dicom_node.volumes import build_volume


def square(z, x0, y0, size):
    return [x0, y0, z, x0 + size, y0, z, x0 + size, y0 + size, z, x0, y0 + size, z]


def rtstruct_for(datasets, contours, name="GTV"):
    ds = Dataset()
    ds.SOPClassUID = RTSTRUCT_STORAGE
    ds.SOPInstanceUID = "2.25.77"
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = "2.25.78"
    roi = Dataset()
    roi.ROINumber = 1
    roi.ROIName = name
    ds.StructureSetROISequence = Sequence([roi])
    items = []
    for data in contours:
        c = Dataset()
        c.ContourGeometricType = "CLOSED_PLANAR"
        c.NumberOfContourPoints = len(data) // 3
        c.ContourData = data
        items.append(c)
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 1
    roi_contour.ContourSequence = Sequence(items)
    ds.ROIContourSequence = Sequence([roi_contour])
    series = Dataset()
    series.SeriesInstanceUID = datasets[0].SeriesInstanceUID
    study = Dataset()
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    return ds


@pytest.fixture()
def datasets():
    return ct_series_datasets(phantom_chest_hu((6, 40, 40)), pixel_spacing=(1.0, 1.0), slice_spacing=2.0, origin=(0.0, 0.0, 0.0))


def test_square_with_hole(datasets):
    volume = build_volume(datasets)
    rt = rtstruct_for(datasets, [square(4.0, 10, 10, 20), square(4.0, 15, 15, 10)])
    mask, names = rasterise_rtstruct(rt, volume)
    assert names == ("GTV",)
    assert mask[2].sum() > 0 and mask[[0, 1, 3, 4, 5]].sum() == 0
    assert not mask[2, 20, 20]  # inside the hole
    assert mask[2, 12, 12]
    # Outer 21x21 minus inner hole ~ 11x11 pixels (vertex-inclusive fill).
    assert 300 <= mask[2].sum() <= 345


def test_no_matching_roi(datasets):
    volume = build_volume(datasets)
    with pytest.raises(GroundTruthError):
        rasterise_rtstruct(rtstruct_for(datasets, [square(4.0, 1, 1, 5)], name="Heart"), volume)


def test_folder_scan(tmp_path, datasets):
    write_series(datasets, tmp_path / "ct")
    rt = rtstruct_for(datasets, [square(6.0, 10, 10, 8)])
    rt.file_meta = datasets[0].file_meta.__class__()
    rt.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    rt.file_meta.MediaStorageSOPClassUID = RTSTRUCT_STORAGE
    rt.file_meta.MediaStorageSOPInstanceUID = rt.SOPInstanceUID
    rt.save_as(tmp_path / "rt.dcm", enforce_file_format=True)
    cases = list(iter_ground_truth_cases(tmp_path))
    assert len(cases) == 1 and cases[0].source == "RTSTRUCT"
    assert np.nonzero(cases[0].mask.any((1, 2)))[0].tolist() == [3]
