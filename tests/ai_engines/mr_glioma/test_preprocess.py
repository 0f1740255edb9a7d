"""Pre-processing: geometry round trip, registration (recovered shift, failure flagged),
brain mask, z-score."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk  # noqa: N813

from ai_engines.mr_glioma.preprocess import (
    REGISTRATION_GRID_MM,
    brain_mask,
    geometry_of,
    register,
    resample,
    series_to_image,
    working_grid,
    zscore,
)
from tests.ai_engines.mr_glioma.series_builders import phantom_head


def test_series_to_image_keeps_lps_geometry() -> None:
    volume = phantom_head("1", "T1 +C", spacing=2.0, slice_spacing=4.0)
    image = series_to_image(volume)
    assert image.GetSpacing() == (2.0, 2.0, 4.0)
    assert np.allclose(image.GetOrigin(), volume.geometry.slice_origins[0])
    # Voxel (i=3, j=5, k=7) lies where the DICOM geometry says it does.
    expected = volume.geometry.voxel_to_patient(np.array(7), np.array(5), np.array(3))
    assert np.allclose(image.TransformIndexToPhysicalPoint((3, 5, 7)), expected)
    back = geometry_of(image)
    assert np.allclose(back.slice_origins, volume.geometry.slice_origins)


def test_working_grid_is_isotropic_and_covers_the_field_of_view() -> None:
    image = series_to_image(phantom_head("1", "T1 +C", spacing=2.0, slice_spacing=4.0))
    grid = working_grid(image, 1.0)
    assert grid.GetSpacing() == (1.0, 1.0, 1.0)
    assert grid.GetSize() == (200, 200, 160)
    # The first voxel centre lies half a voxel inside the field of view.
    field_start = np.asarray(image.GetOrigin()) - np.asarray(image.GetSpacing()) / 2
    assert np.allclose(np.asarray(grid.GetOrigin()) - 0.5, field_start)


def test_registration_recovers_a_shifted_rotated_sequence() -> None:
    fixed_volume = phantom_head("1", "T1 +C", seed=1)
    moving_volume = phantom_head("2", "FLAIR", shift_mm=(6.0, -4.0, 3.0), rotation_deg=4.0, seed=2)
    fixed_image = series_to_image(fixed_volume)
    fixed = resample(fixed_image, working_grid(fixed_image, REGISTRATION_GRID_MM))
    moving_image = series_to_image(moving_volume)
    moving = resample(moving_image, working_grid(moving_image, REGISTRATION_GRID_MM))
    transform, result = register(fixed, moving, "FLAIR")
    assert result.ok, result.note()
    assert 5.0 < result.shift_mm < 10.0  # the applied shift is 7.8 mm (plus the rotation about the centre)
    assert 2.5 < result.rotation_deg < 5.5
    # The brain's asymmetric blob lands on the fixed one after registration.
    moved = sitk.GetArrayFromImage(resample(moving_image, fixed, transform))
    fixed_blob = sitk.GetArrayFromImage(fixed) > 950
    moved_blob = moved > 950
    overlap = 2 * (fixed_blob & moved_blob).sum() / (fixed_blob.sum() + moved_blob.sum())
    assert overlap > 0.6
    assert "head Dice" in result.note()


def test_registration_failure_is_flagged() -> None:
    fixed_volume = phantom_head("1", "T1 +C", seed=1)
    elsewhere = phantom_head("2", "FLAIR", scale=0.45, shift_mm=(60.0, 60.0, 40.0), seed=3)  # a small thing far off
    fixed_image = series_to_image(fixed_volume)
    fixed = resample(fixed_image, working_grid(fixed_image, REGISTRATION_GRID_MM))
    moving_image = series_to_image(elsewhere)
    moving = resample(moving_image, working_grid(moving_image, REGISTRATION_GRID_MM))
    _, result = register(fixed, moving, "FLAIR")
    assert not result.ok


def test_brain_mask_excludes_scalp_and_keeps_the_brain() -> None:
    volume = phantom_head("1", "T1 +C", spacing=2.0, slice_spacing=2.0)
    image = series_to_image(volume)
    values = sitk.GetArrayFromImage(resample(image, working_grid(image, 2.0)))
    mask = brain_mask(values, 2.0)
    brain_ml = mask.sum() * 8 / 1000
    # The phantom brain (r < 0.85 of a 75 x 92 x 78 mm ellipsoid) holds about 1390 ml.
    assert 1000 < brain_ml < 1600
    scalp = values > 850
    assert (mask & scalp).sum() < 0.02 * scalp.sum() + (mask & (values > 950)).sum()


def test_zscore_inside_the_brain_and_zero_outside() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(500, 50, (10, 20, 20)).astype(np.float32)
    brain = np.zeros(values.shape, bool)
    brain[2:8, 5:15, 5:15] = True
    z = zscore(values, brain)
    assert abs(float(z[brain].mean())) < 0.1
    assert 0.9 < float(z[brain].std()) < 1.2
    assert not z[~brain].any()
