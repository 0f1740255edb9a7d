"""Input quality checks: each defect produces its own coded decline."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ai_engines import quality
from ai_engines.engine import GeometryNeeds
from ai_engines.volume import AcquisitionFacts, SeriesVolume, SliceReference, VolumeGeometry

NEEDS = GeometryNeeds(
    min_slices=10, slice_thickness_mm=(0.5, 5.0), pixel_spacing_mm=(0.5, 1.0), axial_only=True,
)


def ct_volume(
    positions: np.ndarray | None = None, *, n: int = 20, step: float = 2.5, spacing: float = 0.7,
    thickness: float | None = None, orientation=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    shear_y: float = 0.0, facts: AcquisitionFacts | None = None, values: float | None = None,
) -> SeriesVolume:
    """A small CT-like volume (air and tissue) with the given slice positions and geometry."""
    z = np.arange(n) * step if positions is None else np.asarray(positions, dtype=float)
    row, col = (np.asarray(v) for v in orientation)
    normal = np.cross(row, col)
    origins = np.array([zk * normal + [0.0, zk * shear_y, 0.0] for zk in z])
    voxels = np.full((len(z), 16, 16), -1000.0, dtype=np.float32)
    voxels[:, 4:12, 4:12] = 40.0
    if values is not None:
        voxels[:] = values
    geometry = VolumeGeometry(origins, tuple(row), tuple(col), (spacing, spacing), thickness if thickness is not None else step)
    slices = tuple(SliceReference("1.2.840.10008.5.1.4.1.1.2", f"2.25.{k}") for k in range(len(z)))
    return SeriesVolume("2.25.1", "2.25.2", voxels, geometry, slices, facts or AcquisitionFacts(modality="CT"))


def codes_of(volume: SeriesVolume, needs: GeometryNeeds = NEEDS) -> list[str]:
    return [d.code for d in quality.check_series(volume, needs)]


def test_clean_series_passes():
    assert codes_of(ct_volume()) == []


def test_missing_slices():
    z = np.delete(np.arange(20) * 2.5, [7, 8])
    assert codes_of(ct_volume(z)) == [quality.QC_MISSING_SLICES]


def test_duplicate_positions():
    z = np.sort(np.r_[np.arange(20) * 2.5, 10.0])
    assert codes_of(ct_volume(z)) == [quality.QC_OVERLAPPING_SLICES]


def test_non_uniform_spacing():
    z = np.cumsum(np.r_[0, np.tile([2.5, 3.0], 10)])
    assert codes_of(ct_volume(z)) == [quality.QC_NON_UNIFORM_SPACING]


def test_not_axial_orientation():
    angle = np.radians(5)
    col = (0.0, np.cos(angle), np.sin(angle))
    assert quality.QC_NOT_AXIAL in codes_of(ct_volume(orientation=((1.0, 0.0, 0.0), col)))


def test_sagittal_series_is_not_axial():
    assert quality.QC_NOT_AXIAL in codes_of(ct_volume(orientation=((0.0, 1.0, 0.0), (0.0, 0.0, -1.0))))


def test_gantry_tilt_in_header():
    facts = AcquisitionFacts(modality="CT", gantry_tilt=15.0)
    assert codes_of(ct_volume(facts=facts)) == [quality.QC_NOT_AXIAL]


def test_gantry_tilt_seen_in_geometry():
    # Axial slices whose origins drift in y: a tilted, sheared stack.
    assert codes_of(ct_volume(shear_y=np.tan(np.radians(10)))) == [quality.QC_NOT_AXIAL]


def test_small_tilt_within_tolerance_passes():
    assert codes_of(ct_volume(shear_y=np.tan(np.radians(0.3)))) == []


def test_lossy_compression():
    facts = AcquisitionFacts(modality="CT", lossy_compressed=True)
    assert codes_of(ct_volume(facts=facts)) == [quality.QC_LOSSY_COMPRESSION]
    assert codes_of(ct_volume(facts=facts), dataclasses.replace(NEEDS, lossless_only=False)) == []


@pytest.mark.parametrize("thickness", [0.3, 6.0])
def test_slice_thickness_range(thickness):
    assert codes_of(ct_volume(thickness=thickness)) == [quality.QC_SLICE_THICKNESS_RANGE]


@pytest.mark.parametrize("spacing", [0.3, 1.5])
def test_pixel_spacing_range(spacing):
    assert codes_of(ct_volume(spacing=spacing)) == [quality.QC_PIXEL_SPACING_RANGE]


def test_too_few_slices():
    assert codes_of(ct_volume(n=5)) == [quality.QC_TOO_FEW_SLICES]


def test_values_that_are_not_hounsfield_units():
    assert codes_of(ct_volume(values=1200.0)) == [quality.QC_IMPLAUSIBLE_VALUES]


def test_every_code_is_stable_text():
    assert all(code.startswith("QC_") and code.isupper() for code in quality.QC_CODES)
    assert len(set(quality.QC_CODES)) == len(quality.QC_CODES)
