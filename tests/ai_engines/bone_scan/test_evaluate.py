"""Figures of the evaluation: AUC, bootstrap and Wilson intervals, subgroup summaries."""

from __future__ import annotations

import numpy as np
import pytest

from ai_engines.bone_scan.evaluate import (
    ScanResult,
    bootstrap_auc_ci,
    roc_auc,
    summarise,
    wilson_interval,
)


def test_auc():
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    # One discordant pair of four.
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.5, 0.9])) == pytest.approx(0.75)
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_wilson_interval_known_values():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0


def test_bootstrap_interval_brackets_the_auc():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = labels * 0.8 + rng.normal(0, 0.5, 200)
    auc = roc_auc(labels, scores)
    low, high = bootstrap_auc_ci(labels, scores, samples=500)
    assert low < auc < high and high - low < 0.2


def test_summary_counts_declines_and_calls():
    results = [
        ScanResult("a", 1, 0.9, True, None, 0.1), ScanResult("b", 1, 0.4, False, None, 0.1),
        ScanResult("c", 0, 0.2, False, None, 0.1), ScanResult("d", 0, None, None, "NM_SINGLE_VIEW", 0.0),
    ]
    s = summarise(results)
    assert (s["scans"], s["answered"], s["declined"]) == (4, 3, 1)
    assert s["sensitivity"] == 0.5 and s["specificity"] == 1.0 and s["auc"] == 1.0
