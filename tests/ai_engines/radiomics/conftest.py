"""Volumes for the radiomics tests: a synthetic CT with a spherical lesion, and lung1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813

from ai_engines.engine import CT_IMAGE_STORAGE
from ai_engines.volume import (
    AcquisitionFacts,
    RoiContours,
    SeriesVolume,
    SliceReference,
    StudyInput,
    VolumeGeometry,
)

REAL_DEV = Path("/work/shared/reference-data/real-dev")
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


def series_volume(voxels: np.ndarray, spacing_zyx: tuple[float, float, float],
                  origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
                  direction: np.ndarray | None = None, modality: str = "CT",
                  uid: str = "2.25.1001") -> SeriesVolume:
    """A SeriesVolume on a regular grid (``direction``: ITK 3×3, columns = x, y, z axes)."""
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(3, 3)
    n = voxels.shape[0]
    origins = np.asarray(origin) + np.arange(n)[:, None] * spacing_zyx[0] * d[:, 2]
    geometry = VolumeGeometry(
        slice_origins=origins,
        row_direction=tuple(d[:, 0]),
        column_direction=tuple(d[:, 1]),
        pixel_spacing=(spacing_zyx[1], spacing_zyx[2]),
        slice_thickness=spacing_zyx[0],
    )
    slices = tuple(SliceReference(CT_IMAGE_STORAGE, f"{uid}.{k + 1}") for k in range(n))
    return SeriesVolume(uid, f"{uid}.0", voxels, geometry, slices, AcquisitionFacts(modality=modality))


def region_of(mask: np.ndarray, series: SeriesVolume, name: str = "GTV", number: int = 1) -> RoiContours:
    return RoiContours(name=name, series_uid=series.series_uid, mask=mask,
                       source_sop_class_uid=RTSTRUCT_STORAGE, source_sop_instance_uid="2.25.2002",
                       source_number=number, source_series_uid="2.25.2001")


def synthetic_ct(seed: int = 0, radius_mm: float = 15.0) -> tuple[SeriesVolume, np.ndarray]:
    """A 64×128×128 CT (1×0.8×0.8 mm): air, a soft-tissue body, a textured sphere lesion."""
    rng = np.random.default_rng(seed)
    shape, spacing = (64, 128, 128), (1.0, 0.8, 0.8)
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    hu = np.full(shape, -1000.0)
    body = (y - 51.2) ** 2 / 45**2 + (x - 51.2) ** 2 / 48**2 <= 1
    hu[body] = 40.0
    lesion = (z - 32) ** 2 + (y - 51.2) ** 2 + (x - 51.2) ** 2 <= radius_mm**2
    hu[lesion] = 60.0 + 30.0 * np.sin(x[lesion] / 2.0) + 10.0 * (z[lesion] > 32)
    hu += rng.normal(0, 8.0, shape)
    return series_volume(np.round(hu), spacing), lesion


def read_lung1() -> tuple[SeriesVolume, np.ndarray]:
    image = sitk.ReadImage(str(REAL_DEV / "lung1_image.nrrd"))
    label = sitk.ReadImage(str(REAL_DEV / "lung1_label.nrrd"))
    voxels = sitk.GetArrayFromImage(image).astype(np.float64)
    mask = sitk.GetArrayFromImage(label) > 0
    sx, sy, sz = image.GetSpacing()
    series = series_volume(voxels, (sz, sy, sx), image.GetOrigin(), np.array(image.GetDirection()))
    return series, mask


@pytest.fixture(scope="session")
def lung1() -> tuple[SeriesVolume, np.ndarray]:
    if not (REAL_DEV / "lung1_image.nrrd").is_file():
        pytest.skip("real-dev reference data not present")
    return read_lung1()


def study_with(series: SeriesVolume, *regions: RoiContours) -> StudyInput:
    return StudyInput(study_uid="2.25.3003", series=(series,), regions=regions)
