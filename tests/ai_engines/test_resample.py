"""The engines' resampler: a series brought onto another's grid lands where the geometry says."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ai_engines.resample import grid_mismatch, overlap_fraction, resample_to, resample_values
from ai_engines.volume import AcquisitionFacts, SeriesVolume, SliceReference, VolumeGeometry


def volume(shape, spacing, origin, voxels=None, slice_step=None) -> SeriesVolume:  # noqa: ANN001
    step = slice_step or spacing[0]
    origins = np.array([[origin[0], origin[1], origin[2] + k * step] for k in range(shape[0])])
    geometry = VolumeGeometry(origins, (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), spacing, step)
    if voxels is None:
        zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
        # A linear ramp in patient x (mm): linear interpolation reproduces it exactly.
        voxels = (origin[0] + xx * spacing[1]).astype(np.float32)
    slices = tuple(SliceReference("1.2.3", f"2.25.{k}") for k in range(shape[0]))
    return SeriesVolume("2.25.9", "2.25.1", voxels, geometry, slices, AcquisitionFacts("MR"))


def test_a_ramp_resampled_onto_a_finer_grid_keeps_its_values():
    coarse = volume((10, 20, 20), (2.0, 2.0), (0.0, 0.0, 0.0))
    fine = volume((18, 36, 36), (1.0, 1.0), (1.0, 1.0, 1.0))
    moved = resample_to(coarse, fine)
    assert moved.shape == fine.shape and moved.geometry is fine.geometry
    x_mm = 1.0 + np.arange(36) * 1.0
    assert np.allclose(moved.voxels[5, 10], x_mm, atol=1e-3)


def test_masks_stay_masks_and_land_on_the_same_millimetres():
    source = volume((10, 20, 20), (2.0, 2.0), (0.0, 0.0, 0.0))
    mask = np.zeros(source.shape, bool)
    mask[4:6, 6:10, 6:10] = True  # x, y in 12-18 mm, z in 8-10 mm
    target = volume((20, 40, 40), (1.0, 1.0), (0.0, 0.0, 0.0))
    moved = resample_values(mask, source, target)
    assert moved.dtype == np.bool_
    ks, js, is_ = np.nonzero(moved)
    # Source voxel centres at 12-18 mm cover 11-19 mm; 11 and 19 mm are ties for nearest
    # neighbour, so either side may take them.
    for axis in (is_, js):
        assert 11 <= axis.min() <= 12 and 18 <= axis.max() <= 19
    assert set(np.unique(ks)) <= {7, 8, 9, 10}


def test_grid_comparison_and_overlap():
    a = volume((10, 20, 20), (2.0, 2.0), (0.0, 0.0, 0.0))
    assert grid_mismatch(a, a) is None
    assert resample_to(a, a) is a
    assert "shape" in grid_mismatch(volume((9, 20, 20), (2.0, 2.0), (0.0, 0.0, 0.0)), a)
    assert "pixel spacing" in grid_mismatch(volume((10, 20, 20), (2.0, 1.9), (0.0, 0.0, 0.0)), a)
    assert overlap_fraction(a, a) == pytest.approx(1.0)
    half = volume((10, 20, 20), (2.0, 2.0), (19.0, 0.0, 0.0))
    assert overlap_fraction(half, a) == pytest.approx(0.5)
    far = dataclasses.replace(a, geometry=volume((10, 20, 20), (2.0, 2.0), (0, 0, 500.0)).geometry)
    assert overlap_fraction(far, a) == 0.0
