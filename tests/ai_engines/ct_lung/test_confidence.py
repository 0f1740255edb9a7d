"""Per-lesion probability: Platt calibration fitted like the model card's, read from the card."""

from __future__ import annotations

import numpy as np
import pytest

from ai_engines.ct_lung.confidence import (
    CARD_KEY,
    FEATURES,
    PlattCalibration,
    fit_platt,
    lesion_features,
    lesion_probability,
)
from ai_engines.models import locate_model


def test_fit_recovers_a_known_logistic_model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2))
    truth = np.array([-0.5, 1.5, -2.0])
    y = rng.random(4000) < 1 / (1 + np.exp(-(truth[0] + x @ truth[1:])))
    fitted = fit_platt(list(x), list(y), l2=0.0)
    assert fitted.intercept == pytest.approx(truth[0], abs=0.15)
    assert fitted.coefficients == pytest.approx(tuple(truth[1:]), abs=0.2)


def test_fit_stays_finite_on_separable_lesions():
    features = [lesion_features(p, v) for p, v in ((0.97, 20.0), (0.95, 3.0), (0.86, 0.1), (0.87, 0.15))]
    fitted = fit_platt(features, [True, True, False, False])
    assert np.isfinite([fitted.intercept, *fitted.coefficients]).all()
    big, small = (lesion_probability(0.96, v, fitted) for v in (10.0, 0.1))
    assert 0.5 < big < 1.0 and 0.0 < small < 0.5


def test_packaged_detector_card_carries_its_calibration():
    card = locate_model("ct_lung", "ct_lung_unet", None).card
    calibration = PlattCalibration.from_card(card.measured_accuracy)
    assert calibration is not None and card.measured_accuracy[CARD_KEY]["features"] == list(FEATURES)
    # More confident and larger lesions are more likely tumours.
    assert lesion_probability(0.98, 5.0, calibration) > lesion_probability(0.86, 5.0, calibration)
    assert lesion_probability(0.95, 20.0, calibration) > lesion_probability(0.95, 0.2, calibration)


def test_no_calibration_without_card_entry_or_with_another_method():
    assert PlattCalibration.from_card({}) is None
    assert PlattCalibration.from_card({CARD_KEY: {"method": "isotonic", "features": list(FEATURES)}}) is None


def test_reliability_figures_on_a_set_not_used_for_fitting():
    from ai_engines.ct_lung.calibrate import reliability, seed_ranges

    perfect = reliability([1.0, 1.0, 0.0], [True, True, False])
    assert perfect["brier"] == 0.0 and perfect["ece"] == 0.0
    # Two bins: 0.9 predicted where 1 of 2 is a tumour (gap 0.4), 0.1 where none is (gap 0.1).
    figures = reliability([0.9, 0.9, 0.1, 0.1], [True, False, False, False])
    assert figures["ece"] == pytest.approx((2 * 0.4 + 2 * 0.1) / 4)
    assert figures["brier"] == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    assert figures["mean_predicted"] == pytest.approx(0.5) and figures["observed_rate"] == pytest.approx(0.25)
    assert seed_ranges(["10-11", "20-20:clinical"]) == [(10, "demo"), (11, "demo"), (20, "clinical")]
