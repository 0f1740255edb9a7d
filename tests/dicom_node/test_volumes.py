"""Volumes from DICOM datasets: sorting, rescale, decoding, geometry, coded errors."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
from pydicom.uid import RLELossless

from ai_engines.resample import to_sitk
from dicom_node.sample_data import PatientIdentity, ct_series_datasets, phantom_chest_hu
from dicom_node.volumes import (
    VOL_INCONSISTENT_DIMENSIONS,
    VOL_MIXED_FRAME_OF_REFERENCE,
    VOL_MIXED_ORIENTATION,
    VOL_MIXED_SERIES,
    VOL_NO_PIXEL_DATA,
    VolumeError,
    build_volume,
)


@pytest.fixture(scope="module")
def hu():
    return np.clip(np.rint(phantom_chest_hu((12, 32, 32), seed=3)), -1024, None)


@pytest.fixture()
def datasets(hu):
    return ct_series_datasets(hu, pixel_spacing=(0.8, 0.7), slice_spacing=2.0, origin=(-10.0, -20.0, -50.0))


def test_shuffled_slices_come_out_sorted_in_hu(hu, datasets):
    shuffled = datasets[:]
    random.Random(4).shuffle(shuffled)
    volume = build_volume(shuffled)
    assert np.array_equal(volume.voxels, hu.astype(np.float32))
    assert np.all(np.diff(volume.geometry.slice_positions) > 0)
    assert [s.sop_instance_uid for s in volume.slices] == [ds.SOPInstanceUID for ds in datasets]
    assert volume.geometry.pixel_spacing == (0.8, 0.7)
    assert volume.geometry.slice_spacing == pytest.approx(2.0)
    assert volume.geometry.slice_thickness == pytest.approx(2.0)
    assert volume.facts.modality == "CT" and volume.facts.kernel == "B31f"
    assert not volume.facts.lossy_compressed
    assert volume.frame_of_reference_uid == datasets[0].FrameOfReferenceUID


def test_feet_first_order_still_ascending(hu):
    # Slices written top-down: the builder sorts by position, not by instance number.
    dss = ct_series_datasets(hu[::-1].copy(), slice_spacing=-2.0, origin=(0.0, 0.0, 0.0))
    volume = build_volume(dss)
    assert np.array_equal(volume.voxels, hu.astype(np.float32))


def test_rescale_slope_and_intercept(datasets, hu):
    for ds in datasets:
        ds.RescaleSlope = 2
        ds.RescaleIntercept = -2048
    volume = build_volume(datasets)
    assert np.allclose(volume.voxels, 2 * (hu + 1024) - 2048)


def test_rle_compressed_decodes_identically(datasets):
    plain = build_volume(datasets)
    compressed = []
    for ds in datasets:
        ds = copy.deepcopy(ds)
        ds.compress(RLELossless)
        compressed.append(ds)
    assert compressed[0].file_meta.TransferSyntaxUID == RLELossless
    volume = build_volume(compressed)
    assert np.array_equal(volume.voxels, plain.voxels)
    assert not volume.facts.lossy_compressed


def test_lossy_flag(datasets):
    datasets[3].LossyImageCompression = "01"
    assert build_volume(datasets).facts.lossy_compressed


def test_gantry_tilt_recorded(datasets):
    for ds in datasets:
        ds.GantryDetectorTilt = 12.0
    assert build_volume(datasets).facts.gantry_tilt == 12.0


def test_mixed_frame_of_reference(datasets):
    datasets[2].FrameOfReferenceUID = "2.25.999"
    with pytest.raises(VolumeError) as err:
        build_volume(datasets)
    assert err.value.code == VOL_MIXED_FRAME_OF_REFERENCE


def test_missing_pixel_data(datasets):
    del datasets[5].PixelData
    with pytest.raises(VolumeError) as err:
        build_volume(datasets)
    assert err.value.code == VOL_NO_PIXEL_DATA


def test_inconsistent_rows_columns(datasets):
    datasets[1].Rows = 16
    with pytest.raises(VolumeError) as err:
        build_volume(datasets)
    assert err.value.code == VOL_INCONSISTENT_DIMENSIONS


def test_mixed_orientations(datasets):
    datasets[4].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    with pytest.raises(VolumeError) as err:
        build_volume(datasets)
    assert err.value.code == VOL_MIXED_ORIENTATION


def test_mixed_series(datasets):
    datasets[0].SeriesInstanceUID = "2.25.1"
    with pytest.raises(VolumeError) as err:
        build_volume(datasets)
    assert err.value.code == VOL_MIXED_SERIES


def test_to_sitk_geometry(datasets):
    volume = build_volume(datasets)
    image = to_sitk(volume)
    assert image.GetSize() == (32, 32, 12)
    assert image.GetSpacing() == pytest.approx((0.7, 0.8, 2.0))
    assert image.GetOrigin() == pytest.approx((-10.0, -20.0, -50.0))
    # Voxel (i=3, j=5, k=2) lands where the geometry says.
    expected = volume.geometry.voxel_to_patient(np.array(2), np.array(5), np.array(3))
    assert image.TransformIndexToPhysicalPoint((3, 5, 2)) == pytest.approx(tuple(expected))


def test_planar_nm_frames_name_their_view_detector_and_energy_window():
    from tests.dicom_node.test_worker import nm_whole_body

    ds = nm_whole_body(PatientIdentity())
    ds.EnergyWindowVector = [1, 2]
    volume = build_volume([ds])
    assert volume.shape == (2, 64, 32) and volume.modality == "NM"
    assert [(s.sop_instance_uid, s.frame_number, s.view, s.detector, s.energy_window)
            for s in volume.slices] == [(ds.SOPInstanceUID, 1, "ANTERIOR", 1, 1),
                                        (ds.SOPInstanceUID, 2, "POSTERIOR", 2, 2)]
    assert volume.voxels[1, 41, 17] == 310.0


def test_mr_sequence_facts_come_from_the_header(datasets):
    mr = [copy.deepcopy(ds) for ds in datasets]
    for ds in mr:
        ds.Modality = "MR"
        ds.ProtocolName = "t1_mprage_sag_p2_iso"
        ds.SequenceName = "*tfl3d1_16ns"
        ds.ScanningSequence = ["GR", "IR"]
        ds.EchoTime, ds.RepetitionTime, ds.InversionTime = 2.98, 2300, 900
        ds.ContrastBolusAgent = "Gadovist"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    facts = build_volume(mr).facts
    assert (facts.protocol_name, facts.sequence_name, facts.scanning_sequence) == (
        "t1_mprage_sag_p2_iso", "*tfl3d1_16ns", "GR\\IR")
    assert (facts.echo_time_ms, facts.repetition_time_ms, facts.inversion_time_ms) == (
        2.98, 2300.0, 900.0)
    assert facts.contrast_agent == "Gadovist" and facts.image_type[2:] == ("M", "ND")


def test_series_header_reads_no_pixels(tmp_path, datasets):
    from pydicom import dcmread

    from dicom_node.sample_data import write_series
    from dicom_node.volumes import series_header

    paths = write_series(datasets, tmp_path)
    first = dcmread(paths[0], stop_before_pixels=True)
    assert "PixelData" not in first
    header = series_header([first])
    assert (header.modality, header.frames, header.number) == ("CT", 1, 2)
    assert header.orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert not header.is_localizer and header.obliquity_deg() == 0.0
