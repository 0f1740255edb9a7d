"""The synthetic bone scans: labels, count levels, confounders, storage layouts."""

from __future__ import annotations

import numpy as np

from ai_engines.bone_scan.synthetic import CONFOUNDERS, synthetic_scan


def test_deterministic_per_seed():
    a, b = synthetic_scan(5), synthetic_scan(5)
    np.testing.assert_array_equal(a.anterior, b.anterior)
    assert a.metastases == b.metastases and a.confounders == b.confounders


def test_label_is_any_metastasis():
    positive = synthetic_scan(6, metastatic=True, n_metastases=7)
    negative = synthetic_scan(6, metastatic=False)
    assert positive.label == 1 and len(positive.metastases) == 7
    assert negative.label == 0 and not negative.metastases
    # Metastases are hot: the positive scan holds more counts around its lesions.
    lesion = positive.metastases[0]
    r, c = int(lesion.row), int(lesion.col)
    window = np.s_[max(r - 4, 0) : r + 5, max(c - 4, 0) : c + 5]
    scale = negative.anterior.sum() / positive.anterior.sum()
    assert positive.anterior[window].sum() * scale > negative.anterior[window].sum()


def test_counts_and_matrix():
    for seed in range(3):
        scan = synthetic_scan(seed, matrix=(1024, 256))
        assert scan.anterior.shape == (1024, 256)
        assert 0.7e6 < scan.anterior.sum() < 3.2e6
        assert scan.study.series[0].voxels.max() <= 65535


def test_mostly_axial_metastases():
    sites = [m.site for seed in range(40) for m in synthetic_scan(seed, metastatic=True, matrix=(512, 128)).metastases]
    axial = sum(s in ("spine", "ribs", "pelvis", "skull", "sternum") for s in sites)
    assert axial / len(sites) > 0.75


def test_confounders_can_be_forced():
    on = synthetic_scan(7, metastatic=False, confounders={name: True for name in CONFOUNDERS}, matrix=(512, 128))
    off = synthetic_scan(7, metastatic=False, confounders={name: False for name in CONFOUNDERS}, matrix=(512, 128))
    assert all(on.confounders.values()) and not any(off.confounders.values())
    assert on.extras["bladder_level"] > off.extras["bladder_level"]
