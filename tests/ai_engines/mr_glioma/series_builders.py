"""Shared builders for the MR glioma engine tests."""

from __future__ import annotations

import numpy as np
from pydicom import Dataset

from ai_engines.volume import AcquisitionFacts, SeriesVolume, SliceReference, VolumeGeometry
from dicom_node.sample_data import PatientIdentity, ct_series_datasets


def mr_series(
    uid: str, description: str | None = None, *, n_slices: int = 20, spacing: float = 5.0, modality: str = "MR",
    tr: float | None = None, te: float | None = None, ti: float | None = None, agent: str | None = None,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY"), protocol: str | None = None, sequence_name: str | None = None,
) -> SeriesVolume:
    """A small MR series whose headers say what the test needs (voxels are irrelevant here)."""
    origins = np.array([[0.0, 0.0, k * spacing] for k in range(n_slices)])
    geometry = VolumeGeometry(origins, (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 1.0), spacing)
    facts = AcquisitionFacts(
        modality=modality, series_description=description, protocol_name=protocol, sequence_name=sequence_name,
        repetition_time_ms=tr, echo_time_ms=te, inversion_time_ms=ti, contrast_agent=agent, image_type=image_type,
    )
    slices = tuple(SliceReference("1.2.840.10008.5.1.4.1.1.4", f"{uid}.{k}") for k in range(n_slices))
    return SeriesVolume(uid, "1.2.3", np.zeros((n_slices, 4, 4), np.int16), geometry, slices, facts)


def phantom_head(
    uid: str, description: str, *, shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0), rotation_deg: float = 0.0,
    spacing: float = 2.0, slice_spacing: float = 4.0, size_mm: float = 200.0, scale: float = 1.0, seed: int = 0,
    agent: str | None = None,
) -> SeriesVolume:
    """An axial MR series of a simple head: bright scalp, dark skull, brain with two dark
    ventricles and a bright asymmetric blob (so a rigid fit has something to lock onto).

    ``shift_mm``/``rotation_deg`` (about z) move the head; ``scale`` shrinks it.
    """
    rng = np.random.default_rng(seed)
    n = int(size_mm / spacing)
    nz = int(160 / slice_spacing)
    x = (np.arange(n) - (n - 1) / 2) * spacing
    z = (np.arange(nz) - (nz - 1) / 2) * slice_spacing
    zz, yy, xx = np.meshgrid(z, x, x, indexing="ij")
    angle = np.radians(rotation_deg)
    px = np.cos(angle) * (xx - shift_mm[0]) + np.sin(angle) * (yy - shift_mm[1])
    py = -np.sin(angle) * (xx - shift_mm[0]) + np.cos(angle) * (yy - shift_mm[1])
    pz = zz - shift_mm[2]
    r = np.sqrt((px / (75 * scale)) ** 2 + (py / (92 * scale)) ** 2 + (pz / (78 * scale)) ** 2)
    values = np.zeros_like(r)
    values[r < 1.0] = 900  # scalp
    values[r < 0.93] = 60  # skull
    values[r < 0.85] = 600  # brain
    for side in (-1, 1):
        values[((px - side * 9 * scale) / 5) ** 2 + (py / 25) ** 2 + ((pz - 10) / 8) ** 2 < scale**2] = 150
    values[((px - 30 * scale) / 12) ** 2 + ((py + 30 * scale) / 9) ** 2 + ((pz - 20 * scale) / 10) ** 2 < 1] = 1000
    values = values + rng.normal(0, 15, values.shape)
    volume = np.clip(values, 0, 4095).astype(np.int16)
    origins = np.array([[x[0], x[0], zk] for zk in z])
    geometry = VolumeGeometry(origins, (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (spacing, spacing), slice_spacing)
    facts = AcquisitionFacts(modality="MR", series_description=description, contrast_agent=agent,
                             image_type=("ORIGINAL", "PRIMARY"))
    slices = tuple(SliceReference("1.2.840.10008.5.1.4.1.1.4", f"{uid}.{k}") for k in range(nz))
    return SeriesVolume(uid, "1.2.3", volume, geometry, slices, facts)


MR_ATTRIBUTES = {  # role -> (TR, TE, TI, contrast agent)
    "T1": (500.0, 12.0, None, None), "T1c": (2000.0, 2.5, 900.0, "GADOBUTROL"),
    "T2": (4500.0, 95.0, None, None), "FLAIR": (9000.0, 90.0, 2500.0, None), "DWI": (5000.0, 80.0, None, None),
}


def mr_datasets(volume: SeriesVolume, role: str, identity: PatientIdentity, series_number: int,
                description: str) -> list[Dataset]:
    """``volume`` as the MR instances a scanner writes (its own geometry, any orientation)."""
    geometry = volume.geometry
    datasets = ct_series_datasets(volume.voxels.astype(np.float64) - 1024.0, identity=identity, modality="MR",
                                  pixel_spacing=geometry.pixel_spacing, slice_spacing=geometry.slice_thickness,
                                  series_number=series_number, series_description=description,
                                  frame_of_reference_uid="1.2.826.0.1.3680043.8.498.77." + identity.patient_id[-1])
    tr, te, ti, agent = MR_ATTRIBUTES[role]
    for k, ds in enumerate(datasets):
        ds.ImagePositionPatient = [f"{v:.4f}" for v in geometry.slice_origins[k]]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*geometry.row_direction, *geometry.column_direction)]
        ds.SliceLocation = f"{float(np.dot(geometry.slice_origins[k], np.cross(geometry.row_direction, geometry.column_direction))):.4f}"
        ds.StationName = "MRSTATION01"
        ds.ScanningSequence = "IR" if ti else "SE"
        ds.SequenceVariant = "SK"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = tr
        ds.EchoTime = te
        if ti:
            ds.InversionTime = ti
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = 1.5
        if agent:
            ds.ContrastBolusAgent = agent
    return datasets
