"""Per-lesion confidence: a calibrated probability that a detected lesion is a tumour.

Platt scaling (a logistic regression on two features of each detected lesion: the logit of
its mean detector probability and the log of its volume), fitted on the validation cases
(never the held-out ones) with ``fit_platt``; the coefficients live in the detector's model
card under ``measured_accuracy["lesion_probability"]``, because they belong to those weights.
A detector without them (a site's own, not yet calibrated) gives lesions no probability.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CARD_KEY = "lesion_probability"
FEATURES = ("logit_mean_probability", "log_volume_ml")


@dataclass(frozen=True)
class PlattCalibration:
    """p = 1 / (1 + exp(-(intercept + coefficients . features)))."""

    intercept: float
    coefficients: tuple[float, float]

    @classmethod
    def from_card(cls, measured_accuracy: Mapping[str, Any]) -> PlattCalibration | None:
        entry = measured_accuracy.get(CARD_KEY)
        if not entry or entry.get("method") != "platt" or tuple(entry.get("features", ())) != FEATURES:
            return None
        return cls(float(entry["intercept"]), tuple(float(c) for c in entry["coefficients"]))  # type: ignore[arg-type]


def lesion_features(mean_probability: float, volume_ml: float) -> np.ndarray:
    """The calibration's features of one detected lesion."""
    p = min(max(mean_probability, 1e-4), 1 - 1e-4)
    return np.array([np.log(p / (1 - p)), np.log(max(volume_ml, 1e-3))])


def lesion_probability(mean_probability: float, volume_ml: float, calibration: PlattCalibration) -> float:
    """Calibrated probability that a detected lesion is a tumour."""
    z = calibration.intercept + float(np.dot(calibration.coefficients, lesion_features(mean_probability, volume_ml)))
    return float(1.0 / (1.0 + np.exp(-z)))


def fit_platt(features: Sequence[np.ndarray], is_tumour: Sequence[bool], l2: float = 1.0) -> PlattCalibration:
    """Logistic regression (Newton's method) with a small L2 penalty on the slopes, which keeps
    the fit finite when the validation lesions are (nearly) separable."""
    x = np.column_stack([np.ones(len(features)), np.asarray(features, float)])
    y = np.asarray(is_tumour, float)
    w = np.zeros(x.shape[1])
    penalty = np.diag([0.0] + [l2] * (x.shape[1] - 1))
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        gradient = x.T @ (p - y) + penalty @ w
        hessian = x.T @ (x * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(x.shape[1])
        update = np.linalg.solve(hessian, gradient)
        w -= update
        if np.abs(update).max() < 1e-8:
            break
    return PlattCalibration(float(w[0]), (float(w[1]), float(w[2])))
