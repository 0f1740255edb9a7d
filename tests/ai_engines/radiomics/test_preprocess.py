"""IBSI image processing: discretisation, interpolation grid, resampling, re-segmentation."""

from __future__ import annotations

import numpy as np
import pytest

from ai_engines.radiomics.preprocess import (
    discretise,
    process_roi,
    resample,
    resampled_grid,
    resegment,
)
from ai_engines.radiomics.settings import (
    IBSI_B,
    IBSI_C,
    IBSI_D,
    IBSI_E,
    PRESETS,
    RadiomicsSettings,
    preset,
)


def test_fixed_bin_number() -> None:
    values = np.array([0.0, 10.0, 19.9, 20.0, 50.0, 99.0, 100.0])
    levels, n = discretise(values, "FBN", bin_number=5)
    # floor(5 (x - 0) / 100) + 1, the maximum going to bin 5.
    assert n == 5
    assert levels.tolist() == [1, 1, 1, 2, 3, 5, 5]


def test_fixed_bin_number_constant_roi() -> None:
    levels, n = discretise(np.full(7, 42.0), "FBN", bin_number=32)
    assert n == 32 and levels.tolist() == [1] * 7


def test_fixed_bin_size_from_the_resegmentation_bound() -> None:
    values = np.array([-1000.0, -976.0, -975.0, -951.0, -950.0, 400.0])
    levels, n = discretise(values, "FBS", bin_width=25.0, low=-1000.0)
    assert levels.tolist() == [1, 1, 2, 2, 3, 57]
    assert n == 57


def test_fixed_bin_size_from_the_roi_minimum() -> None:
    values = np.array([-90.0, -80.0, -65.0, 10.0])
    levels, n = discretise(values, "FBS", bin_width=25.0)
    assert levels.tolist() == [1, 1, 2, 5]
    assert n == 5


def test_interpolation_grid_is_aligned_by_centre() -> None:
    # ceil(n s / s_new) points; centres coincide.
    shape, origin = resampled_grid((5, 10, 4), (1.0, 0.8, 1.0), (2.0, 2.0, 3.0))
    assert shape == (3, 4, 2)
    np.testing.assert_allclose(origin, [0.0, 0.6, 0.0])
    for n_old, s_old, n_new, s_new, o in zip((5, 10, 4), (1.0, 0.8, 1.0), shape, (2.0, 2.0, 3.0), origin,
                                             strict=True):
        assert (n_old - 1) * s_old / 2 == pytest.approx(o + (n_new - 1) * s_new / 2)


def test_linear_resampling_reproduces_a_linear_ramp() -> None:
    shape, spacing = (12, 20, 20), (3.0, 0.7, 0.7)
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    image = 2.0 * z - 1.5 * y + 0.5 * x
    mask = np.zeros(shape, dtype=bool)
    mask[4:8, 6:14, 6:14] = True
    settings = RadiomicsSettings(spacing_mm=(2.0, 2.0, 2.0), interpolation="linear")
    new_image, new_mask, new_spacing = resample(image, mask, spacing, settings)
    assert new_spacing == (2.0, 2.0, 2.0)
    full_shape, origin = resampled_grid(shape, spacing, new_spacing)
    # The returned block is a window of the full IBSI grid; find its offset from the mask.
    assert new_mask.any()
    # Inside the original extent the interpolated ramp is exact: check through the gradient.
    inner = new_image[1:-1, 1:-1, 1:-1]
    assert np.allclose(np.diff(inner, axis=0), 4.0)
    assert np.allclose(np.diff(inner, axis=1), -3.0)
    assert np.allclose(np.diff(inner, axis=2), 1.0)
    # Volume of the box mask survives resampling within one voxel layer.
    assert new_mask.sum() * 8.0 == pytest.approx(mask.sum() * np.prod(spacing), rel=0.35)
    assert full_shape == (18, 7, 7)


def test_two_dimensional_resampling_keeps_the_slices() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(6, 30, 30))
    mask = np.zeros(image.shape, dtype=bool)
    mask[1:5, 10:20, 10:20] = True
    new_image, new_mask, spacing = resample(image, mask, (5.0, 0.5, 0.5), IBSI_B)
    assert spacing == (5.0, 2.0, 2.0)
    assert new_image.shape[0] == 6  # every slice kept (crop margin covers all six)
    # Mask pixels 10..19 (5.0..9.5 mm); the new grid starts at 0.25 mm (centred: 15 mm field,
    # 8 points of 2 mm), so x = 6.25 and 8.25 mm fall inside: 2 × 2 pixels per slice.
    assert new_mask.sum(axis=(1, 2)).tolist()[1:5] == [4, 4, 4, 4]


def test_intensities_are_rounded_when_asked() -> None:
    image = np.linspace(-100, 100, 8 * 16 * 16).reshape(8, 16, 16)
    mask = np.zeros(image.shape, dtype=bool)
    mask[2:6, 4:12, 4:12] = True
    new_image, _, _ = resample(image, mask, (1.0, 1.0, 1.0), IBSI_C)
    assert np.array_equal(new_image, np.round(new_image))


def test_resegmentation_range_and_outliers() -> None:
    image = np.array([[[-1200.0, -900.0, 0.0, 300.0, 500.0]]])
    mask = np.ones(image.shape, dtype=bool)
    kept, (low, high) = resegment(image, mask, IBSI_C)  # [-1000, 400]
    assert kept[0, 0].tolist() == [False, True, True, True, False]
    assert (low, high) == (-1000.0, 400.0)
    values = np.concatenate([np.zeros(99), [1000.0]])[None, None, :]
    kept, (low, high) = resegment(values, np.ones(values.shape, dtype=bool), IBSI_D)  # 3 sigma
    assert kept.sum() == 99 and not kept[0, 0, -1]
    assert (low, high) == (0.0, 0.0)


def test_process_roi_fails_clearly_when_nothing_is_left() -> None:
    image = np.full((5, 10, 10), 2000.0)
    mask = np.zeros(image.shape, dtype=bool)
    with pytest.raises(ValueError, match="empty"):
        process_roi(image, mask, (1.0, 1.0, 1.0), IBSI_C)
    mask[2, 4:6, 4:6] = True
    with pytest.raises(ValueError, match="re-segmentation"):
        process_roi(image, mask, (1.0, 1.0, 1.0), IBSI_C)


def test_presets_follow_the_ibsi_tables() -> None:
    assert set(PRESETS) >= {"IBSI-A", "IBSI-B", "IBSI-C", "IBSI-D", "IBSI-E"}
    a = preset("IBSI-A")
    assert a.spacing_mm is None and a.dimensionality == "2D" and a.bin_width == 25.0
    assert a.resegmentation_range == (-500.0, 400.0)
    assert IBSI_B.discretisation == "FBN" and IBSI_B.bin_number == 32 and IBSI_B.spacing_mm[1:] == (2.0, 2.0)
    assert IBSI_C.ivh_discretisation == "FBS" and IBSI_C.ivh_bin_width == 2.5
    assert IBSI_D.outlier_sigma == 3.0 and IBSI_D.resegmentation_range is None
    assert IBSI_E.interpolation == "cubic" and IBSI_E.ivh_bin_number == 1000
    with pytest.raises(KeyError, match="IBSI-A"):
        preset("IBSI-F")


def test_settings_are_validated_and_described() -> None:
    with pytest.raises(ValueError):
        RadiomicsSettings(map_window=4)
    with pytest.raises(ValueError):
        RadiomicsSettings(discretisation="FBS", bin_width=0)
    line = IBSI_C.describe()
    assert line.startswith("radiomics settings: name=IBSI-C")
    assert "resegmentation_range=(-1000.0, 400.0)" in line and "bin_width=25.0" in line


def test_families_select_what_is_computed() -> None:
    from ai_engines.radiomics.features import compute_features
    from ai_engines.radiomics.settings import IBSI_C, site_settings

    rng = np.random.default_rng(1)
    image = rng.normal(40, 20, (12, 24, 24)).round()
    mask = np.zeros(image.shape, dtype=bool)
    mask[3:9, 6:18, 6:18] = True
    settings = site_settings("IBSI-C", {"families": ["morph", "cm"], "entropy_map": False})
    assert settings.name == "IBSI-C+site(entropy_map,families)"
    assert settings.spacing_mm == IBSI_C.spacing_mm  # the rest is the preset's
    tags = {v.tag.split(".")[0] for v in compute_features(image, mask, (2.0, 1.0, 1.0),
                                                           settings).values}
    assert tags == {"morph", "cm"}


def test_site_settings_take_toml_values() -> None:
    from ai_engines.radiomics.settings import site_settings

    s = site_settings("IBSI-C", {"spacing_mm": [], "resegmentation_range": [],
                                 "outlier_sigma": 0.0, "discretisation": "FBN", "bin_number": 16})
    assert (s.spacing_mm, s.resegmentation_range, s.outlier_sigma) == (None, None, None)
    assert (s.discretisation, s.bin_number) == ("FBN", 16)
    assert site_settings("IBSI-D", {}).name == "IBSI-D"
    with pytest.raises(ValueError, match="unknown radiomics setting"):
        site_settings("IBSI-C", {"bins": 3})
    with pytest.raises(KeyError, match="IBSI-A, IBSI-B"):
        site_settings("IBSI-F", {})
