"""Synthetic, fully identified DICOM series for tests, benchmarks and demonstrations.

Every series written here carries a known (fictitious) identity so tests can prove that
none of it survives inside the node and all of it comes back on the way out.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

IMPLEMENTATION_UID = UID("1.2.826.0.1.3680043.8.498.1")


@dataclass
class PatientIdentity:
    """A fictitious patient and study, with every attribute the tests look for."""

    name: str = "Testperson^Anna^Maria"
    patient_id: str = "PID-4711-0815"
    birth_date: str = "19580312"
    sex: str = "F"
    address: str = "Hauptstrasse 12, 8001 Zurich"
    institution: str = "Kantonsspital Beispielstadt"
    accession: str = "ACC20261125001"
    referring_physician: str = "Doktor^Bernd"
    study_date: str = "20261120"
    study_time: str = "101500"
    study_id: str = "S4711"
    study_description: str = "CT THORAX"
    charset: str = "ISO_IR 192"
    study_uid: str = field(default_factory=generate_uid)

    @property
    def identifying_strings(self) -> list[str]:
        """Values that must never be found inside the node outside the vault."""
        family = self.name.split("^")[0]
        return [family, self.patient_id, self.birth_date, self.institution,
                self.address.split(",")[0], self.accession]


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters, as scanners write them."""
    return format_number_as_ds(float(value))


def _base_dataset(identity: PatientIdentity, sop_class: str, modality: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = identity.charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = identity.name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = identity.sex
    ds.PatientAddress = identity.address
    ds.PatientAge = "068Y"
    ds.PatientWeight = "71.5"
    ds.InstitutionName = identity.institution
    ds.InstitutionAddress = identity.address
    ds.ReferringPhysicianName = identity.referring_physician
    ds.AccessionNumber = identity.accession
    ds.StudyInstanceUID = identity.study_uid
    ds.StudyDate = identity.study_date
    ds.StudyTime = identity.study_time
    ds.StudyID = identity.study_id
    ds.StudyDescription = identity.study_description
    ds.Modality = modality
    ds.Manufacturer = "SyntheticScanner"
    ds.StationName = "CTSTATION01"
    ds.DeviceSerialNumber = "SN-998877"
    ds.OperatorsName = "Operator^Olga"
    ds.PatientPosition = "HFS"
    return ds


def ct_series_datasets(
    voxels_hu: np.ndarray,
    *,
    identity: PatientIdentity | None = None,
    pixel_spacing: tuple[float, float] = (0.7, 0.7),
    slice_spacing: float = 2.5,
    origin: tuple[float, float, float] = (-179.2, -179.2, -300.0),
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 2,
    series_description: str = "Thorax 2.5 B31f",
    modality: str = "CT",
) -> list[Dataset]:
    """Axial CT (or MR) instances from ``voxels_hu[slice, row, col]``, one per slice.

    Stored values are ``HU + 1024`` as unsigned 16-bit with RescaleIntercept -1024, as most
    scanners write them.
    """
    identity = identity or PatientIdentity()
    series_uid = series_uid or generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    stored = np.clip(np.rint(voxels_hu) + 1024, 0, 65535).astype(np.uint16)
    datasets = []
    acquisition_time = _dt.time(10, 15, 30)
    for k in range(stored.shape[0]):
        ds = _base_dataset(identity, sop_class, modality)
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = series_description
        ds.SeriesDate = identity.study_date
        ds.SeriesTime = identity.study_time
        ds.AcquisitionDate = identity.study_date
        ds.AcquisitionTime = acquisition_time.strftime("%H%M%S")
        ds.ContentDate = identity.study_date
        ds.ContentTime = identity.study_time
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [_ds(origin[0]), _ds(origin[1]),
                                   _ds(origin[2] + k * slice_spacing)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [_ds(v) for v in pixel_spacing]
        ds.SliceThickness = _ds(slice_spacing)
        ds.SliceLocation = _ds(origin[2] + k * slice_spacing)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024 if modality == "CT" else 0
        ds.RescaleSlope = 1
        if modality == "CT":
            ds.RescaleType = "HU"
            ds.KVP = 120
            ds.ConvolutionKernel = "B31f"
            ds.WindowCenter = -600
            ds.WindowWidth = 1500
        else:
            ds.RescaleIntercept = 0
        ds.BurnedInAnnotation = "NO"
        ds.PixelData = stored[k].tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = IMPLEMENTATION_UID
        datasets.append(ds)
    return datasets


def write_series(datasets: list[Dataset], out_dir: Path) -> list[Path]:
    """Write datasets as DICOM Part 10 files named by instance number."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for ds in datasets:
        path = out_dir / f"{int(ds.get('InstanceNumber', len(paths) + 1)):05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def phantom_chest_hu(shape: tuple[int, int, int] = (40, 128, 128), seed: int = 0) -> np.ndarray:
    """A simple chest-like HU volume: soft-tissue body, two air-filled lungs, a nodule.

    Good enough for transport, storage and de-identification tests; the engine's realistic
    synthetic CTs live in :mod:`ai_engines.ct_lung.synthetic`.
    """
    rng = np.random.default_rng(seed)
    z, y, x = shape
    zz, yy, xx = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")
    body = ((yy - y / 2) / (0.42 * y)) ** 2 + ((xx - x / 2) / (0.47 * x)) ** 2 <= 1
    vol = np.full(shape, -1000.0)
    vol[body] = 40.0
    for cx in (0.3 * x, 0.7 * x):
        lung = ((yy - y / 2) / (0.3 * y)) ** 2 + ((xx - cx) / (0.15 * x)) ** 2 <= 1
        vol[lung & (zz > 2) & (zz < z - 2)] = -850.0
    nodule = (zz - z / 2) ** 2 / 9 + (yy - y / 2) ** 2 / 16 + (xx - 0.3 * x) ** 2 / 16 <= 1
    vol[nodule] = 30.0
    vol += rng.normal(0, 15, shape)
    return vol.astype(np.float32)


def nm_whole_body_dataset(frames: np.ndarray, *, identity: PatientIdentity | None = None,
                          pixel_spacing_mm: float = 2.26, series_number: int = 4,
                          series_description: str = "WB ANT/POST") -> Dataset:
    """A planar NM whole-body image as a gamma camera writes it: anterior and posterior views
    as two frames of one instance (posterior as seen from behind), indexed by the Detector
    Vector, with the views coded in the Detector Information Sequence (SCT anterior/posterior
    projection)."""
    from pydicom.sequence import Sequence
    from pydicom.uid import NuclearMedicineImageStorage

    if frames.ndim != 3 or frames.shape[0] != 2:
        raise ValueError(f"two frames (anterior, posterior) expected, got {frames.shape}")
    (ds,) = ct_series_datasets(np.zeros((1, *frames.shape[1:])), identity=identity,
                               modality="MR", series_number=series_number,
                               series_description=series_description)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "SliceLocation",
                    "SliceThickness", "RescaleIntercept", "RescaleSlope", "FrameOfReferenceUID"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPClassUID = NuclearMedicineImageStorage
    ds.file_meta.MediaStorageSOPClassUID = NuclearMedicineImageStorage
    ds.Modality = "NM"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "WHOLE BODY", "EMISSION"]
    ds.PixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    ds.NumberOfFrames = 2
    ds.FrameIncrementPointer = [0x00540020]  # Detector Vector
    ds.DetectorVector = [1, 2]
    ds.EnergyWindowVector = [1, 1]
    ds.NumberOfDetectors = 2
    ds.NumberOfEnergyWindows = 1
    views = []
    for meaning, code in (("anterior projection", "399067008"),
                          ("posterior projection", "399348003")):
        item, view = Dataset(), Dataset()
        view.CodeValue, view.CodingSchemeDesignator, view.CodeMeaning = code, "SCT", meaning
        item.ViewCodeSequence = Sequence([view])
        views.append(item)
    ds.DetectorInformationSequence = Sequence(views)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.ascontiguousarray(frames.astype(np.uint16)).tobytes()
    return ds
