"""A site's labelled scans read from DICOM NM files, and the real whole-body NM sample that
ships with pydicom."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ai_engines.bone_scan.dataset import DatasetError, planar_volume, read_labelled_scans
from ai_engines.bone_scan.engine import BoneScanEngine
from ai_engines.bone_scan.synthetic import synthetic_scan
from ai_engines.bone_scan.views import NM_SINGLE_VIEW
from ai_engines.engine import NM_IMAGE_STORAGE
from ai_engines.quality import QC_LOSSY_COMPRESSION
from ai_engines.volume import StudyInput

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _view_item(meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = meaning[:3].upper(), "99TEST", meaning
    item = Dataset()
    item.ViewCodeSequence = [code]
    item.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    return item


def write_nm(path: Path, frames: np.ndarray, views: list[str], study_uid: str) -> None:
    """A planar NM image (one instance, one frame per view) as a camera would write it."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = NM_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = NM_IMAGE_STORAGE, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.Modality, ds.ImageType = "NM", ["ORIGINAL", "PRIMARY", "WHOLE BODY", "EMISSION"]
    ds.NumberOfFrames = len(frames)
    ds.FrameIncrementPointer = [0x00540010, 0x00540020]
    ds.EnergyWindowVector = [1] * len(frames)
    ds.NumberOfEnergyWindows = 1
    ds.DetectorVector = list(range(1, len(frames) + 1))
    ds.NumberOfDetectors = len(frames)
    ds.DetectorInformationSequence = [_view_item(v) for v in views]
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.PixelSpacing = [2314 / frames.shape[1]] * 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.ascontiguousarray(frames.astype(np.uint16)).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _scan_frames(seed: int) -> tuple[np.ndarray, int]:
    scan = synthetic_scan(seed, matrix=(512, 128), layout="multiframe", energy_windows=1, posterior_mirrored=False)
    return scan.study.series[0].voxels, scan.label


def test_nm_file_round_trip(tmp_path):
    frames, _ = _scan_frames(300_001)
    write_nm(tmp_path / "a.dcm", frames, ["anterior projection", "posterior projection"], generate_uid())
    volume = planar_volume([pydicom.dcmread(tmp_path / "a.dcm")])
    np.testing.assert_array_equal(volume.voxels, frames)
    assert [r.view for r in volume.slices] == ["ANTERIOR", "POSTERIOR"]
    assert [r.frame_number for r in volume.slices] == [1, 2] and [r.detector for r in volume.slices] == [1, 2]
    assert volume.geometry.column_direction == (0.0, 0.0, -1.0)


@pytest.mark.parametrize("key", ["path", "study_uid"])
def test_read_labelled_scans_and_run(tmp_path, key):
    scans = tmp_path / "scans"
    rows = []
    for k, seed in enumerate((300_002, 300_003)):
        frames, label = _scan_frames(seed)
        folder = scans / f"s{k}"
        folder.mkdir(parents=True)
        uid = generate_uid()
        write_nm(folder / "wb.dcm", frames, ["anterior projection", "posterior projection"], uid)
        rows.append((f"s{k}" if key == "path" else uid, label))
    labels = tmp_path / "labels.csv"
    labels.write_text(f"{key},label\n" + "".join(f"{k},{v}\n" for k, v in rows))
    read = list(read_labelled_scans(scans, labels))
    assert [r.label for r in read] == [v for _, v in rows]
    engine = BoneScanEngine(device="cpu", threads=2)
    for scan in read:
        findings = engine.run(scan.study)
        assert not findings.declined, findings.decline
        assert findings.maps[0].values.shape == scan.study.series[0].shape


def test_labels_outside_the_folder_refused(tmp_path):
    (tmp_path / "scans").mkdir()
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n../elsewhere,1\n")
    with pytest.raises(DatasetError, match="outside"):
        list(read_labelled_scans(tmp_path / "scans", labels))
    labels.write_text("path,label\nx,maybe\n")
    with pytest.raises(DatasetError, match="0 or 1"):
        list(read_labelled_scans(tmp_path / "scans", labels))


def _real_sample(name: str) -> Path:
    path = PYDICOM_FILES / name
    if not path.is_file():
        pytest.skip(f"pydicom test file {name} not installed")
    return path


def _decoded(path: Path) -> Dataset:
    ds = pydicom.dcmread(path)
    try:
        ds.pixel_array  # noqa: B018 - decode once; only a missing decoder skips
    except (RuntimeError, NotImplementedError) as exc:
        pytest.skip(f"no decoder for the sample's 12-bit JPEG Extended: {exc}")
    return ds


def test_real_whole_body_sample_is_declined_as_single_view():
    """pydicom's NM whole-body bone image (1024x256, one view, no view code, lossy JPEG)."""
    volume = planar_volume([_decoded(_real_sample("JPGExtended.dcm"))])
    assert volume.shape == (1, 1024, 256) and volume.modality == "NM"
    engine = BoneScanEngine(device="cpu", threads=2)
    findings = engine.run(StudyInput("2.25.1", (volume,)))
    assert findings.declined and findings.decline.code == NM_SINGLE_VIEW


def test_real_sample_as_two_views_runs_or_declines_with_reason():
    """The same real image given as both views: lossy, so declined; as lossless, it runs."""
    volume = planar_volume([_decoded(_real_sample("JPGExtended.dcm"))])
    slices = (dataclasses.replace(volume.slices[0], view="ANTERIOR", frame_number=1),
              dataclasses.replace(volume.slices[0], view="POSTERIOR", frame_number=2))
    both = dataclasses.replace(
        volume, voxels=np.concatenate([volume.voxels, volume.voxels[:, :, ::-1]]), slices=slices,
        geometry=dataclasses.replace(volume.geometry, slice_origins=np.zeros((2, 3))),
    )
    engine = BoneScanEngine(device="cpu", threads=2)
    findings = engine.run(StudyInput("2.25.2", (both,)))
    assert findings.declined and findings.decline.code == QC_LOSSY_COMPRESSION
    lossless = dataclasses.replace(both, facts=dataclasses.replace(both.facts, lossy_compressed=False))
    findings = engine.run(StudyInput("2.25.3", (lossless,)))
    assert not findings.declined
    assert 0.0 <= findings.classifications[0].probability <= 1.0
    assert findings.maps[0].values.shape == (2, 1024, 256)
