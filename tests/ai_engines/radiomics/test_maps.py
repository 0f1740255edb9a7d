"""Sliding-window GLCM maps against a brute-force GLCM built pixel by pixel."""

from __future__ import annotations

import numpy as np
import pytest

from ai_engines.radiomics.maps import MAP_FEATURES, glcm_feature_maps, quantise, sorting_network


def brute_force(levels: np.ndarray, y: int, x: int, n_levels: int, window: int) -> dict[str, float]:
    """The features at (y, x): one symmetric GLCM per direction from explicit loops over the
    window, features per direction from the normalised matrix, averaged over directions."""
    r = window // 2
    height, width = levels.shape
    per_direction = []
    for dy, dx in ((0, 1), (1, 1), (1, 0), (1, -1)):
        glcm = np.zeros((n_levels, n_levels))
        for yy in range(y - r, y + r + 1):
            for xx in range(x - r, x + r + 1):
                y2, x2 = yy + dy, xx + dx
                if not (y - r <= y2 <= y + r and x - r <= x2 <= x + r):
                    continue
                if not (0 <= yy < height and 0 <= xx < width and 0 <= y2 < height and 0 <= x2 < width):
                    continue
                a, b = int(levels[yy, xx]), int(levels[y2, x2])
                if a == 0 or b == 0:
                    continue
                glcm[a - 1, b - 1] += 1
                glcm[b - 1, a - 1] += 1
        if glcm.sum() == 0:
            continue  # no pair in this direction: left out of the average
        p = glcm / glcm.sum()
        i, j = np.indices(p.shape) + 1
        nz = p[p > 0]
        mean = (i * p).sum()
        per_direction.append({
            "cm.joint.entr": -(nz * np.log2(nz)).sum(),
            "cm.energy": (p**2).sum(),
            "cm.joint.max": p.max(),
            "cm.contrast": ((i - j) ** 2 * p).sum(),
            "cm.dissimilarity": (np.abs(i - j) * p).sum(),
            "cm.inv.diff": (p / (1 + np.abs(i - j))).sum(),
            "cm.inv.diff.mom": (p / (1 + (i - j) ** 2)).sum(),
            "cm.joint.avg": mean,
            "cm.joint.var": ((i - mean) ** 2 * p).sum(),
        })
    if not per_direction:
        return {name: float("nan") for name in MAP_FEATURES}
    return {k: float(np.mean([d[k] for d in per_direction])) for k in per_direction[0]}


def ct_like_slice(rng: np.random.Generator, size: int = 96, n_levels: int = 64) -> np.ndarray:
    """Smooth structures plus noise, quantised: many repeated pairs, as in real CT."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 4) * 300
    field += rng.normal(0, 15, field.shape)
    return quantise(field, n_levels, float(field.min()), float(field.max()))


@pytest.mark.parametrize("n", [2, 3, 9, 12, 16, 20, 24, 25])
def test_sorting_network_sorts(n: int) -> None:
    rng = np.random.default_rng(n)
    values = list(rng.integers(0, 4, (n, 500)))
    for i, j in sorting_network(n):
        values[i], values[j] = np.minimum(values[i], values[j]), np.maximum(values[i], values[j])
    assert (np.diff(np.array(values), axis=0) >= 0).all()


@pytest.mark.parametrize("kind", ["uniform_random", "ct_like", "with_excluded_pixels"])
def test_random_pixels_match_brute_force(kind: str) -> None:
    rng = np.random.default_rng(7)
    n_levels = 64
    if kind == "uniform_random":
        levels = rng.integers(1, n_levels + 1, (80, 96)).astype(np.int16)
    else:
        levels = ct_like_slice(rng)
    if kind == "with_excluded_pixels":
        levels[rng.random(levels.shape) < 0.2] = 0
    maps = glcm_feature_maps(levels, n_levels, 5, MAP_FEATURES)
    pixels = [(0, 0), (levels.shape[0] - 1, levels.shape[1] - 1), (0, levels.shape[1] - 1), (1, 2)]
    pixels += [tuple(p) for p in rng.integers(0, min(levels.shape), (40, 2))]
    for y, x in pixels:
        expected = brute_force(levels, y, x, n_levels, 5)
        for name in MAP_FEATURES:
            assert maps[name][y, x] == pytest.approx(expected[name], rel=2e-5, abs=2e-5,
                                                     nan_ok=True), (name, y, x)


def test_other_window_and_levels() -> None:
    rng = np.random.default_rng(3)
    levels = rng.integers(1, 9, (40, 40)).astype(np.int16)  # 8 levels: many repeats
    maps = glcm_feature_maps(levels, 8, 7, ("cm.joint.entr", "cm.energy", "cm.joint.max"))
    for y, x in rng.integers(0, 40, (25, 2)):
        expected = brute_force(levels, int(y), int(x), 8, 7)
        for name in ("cm.joint.entr", "cm.energy", "cm.joint.max"):
            assert maps[name][y, x] == pytest.approx(expected[name], rel=2e-5, abs=2e-5)


def test_volume_is_slice_by_slice_and_bands_join() -> None:
    rng = np.random.default_rng(5)
    volume = np.stack([ct_like_slice(rng, size=150) for _ in range(3)])  # > one 64-row band
    whole = glcm_feature_maps(volume, 64, 5, ("cm.joint.entr", "cm.contrast"))
    for k in range(3):
        single = glcm_feature_maps(volume[k], 64, 5, ("cm.joint.entr", "cm.contrast"), threads=1)
        for name in single:
            np.testing.assert_allclose(whole[name][k], single[name], rtol=1e-6, atol=1e-6)


def test_torch_path_equals_numpy_path() -> None:
    """The CUDA path is the torch code; run it on the CPU here (no GPU on the test machine)."""
    rng = np.random.default_rng(11)
    volume = np.stack([ct_like_slice(rng, size=70) for _ in range(2)])
    numpy_maps = glcm_feature_maps(volume, 64, 5, MAP_FEATURES)
    torch_maps = glcm_feature_maps(volume, 64, 5, MAP_FEATURES, device="torch-cpu")
    for name in MAP_FEATURES:
        np.testing.assert_allclose(torch_maps[name], numpy_maps[name], rtol=1e-5, atol=1e-5)


def test_bad_arguments_are_refused() -> None:
    levels = np.ones((10, 10), dtype=np.int16)
    with pytest.raises(ValueError, match="odd"):
        glcm_feature_maps(levels, 8, 4)
    with pytest.raises(ValueError, match="no map"):
        glcm_feature_maps(levels, 8, 5, ("cm.corr",))
    with pytest.raises(ValueError, match="levels must lie"):
        glcm_feature_maps(levels * 9, 8, 5)


def test_quantise_fixed_bin_number() -> None:
    image = np.array([-2000.0, -1000.0, -999.0, 0.0, 399.9, 400.0, 3000.0])
    levels = quantise(image, 64, -1000.0, 400.0)
    assert levels.tolist() == [1, 1, 1, 46, 64, 64, 64]


def test_real_ct_slice_matches_brute_force(lung1) -> None:
    """A 512×512 lung1 slice at 64 levels over [-1000, 400] HU, checked at random pixels."""
    series, mask = lung1
    k = int(np.flatnonzero(mask.any(axis=(1, 2)))[1])
    levels = quantise(series.voxels[k], 64, -1000.0, 400.0)
    maps = glcm_feature_maps(levels, 64, 5, MAP_FEATURES)
    rng = np.random.default_rng(2)
    nodule = np.argwhere(mask[k])
    pixels = [tuple(p) for p in rng.integers(0, 512, (25, 2))] + [tuple(nodule[len(nodule) // 2])]
    for y, x in pixels:
        expected = brute_force(levels, int(y), int(x), 64, 5)
        for name in MAP_FEATURES:
            assert maps[name][y, x] == pytest.approx(expected[name], rel=2e-5, abs=2e-5), (name, y, x)
