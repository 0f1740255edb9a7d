"""Fit the per-lesion probability (Platt) and measure sensitivity by tumour size on validation
cases: the figures behind the detector card's ``lesion_probability`` and the engine's
``SMALLEST_VALIDATED_NOTE``.

Usage::

    python -m ai_engines.ct_lung.calibrate --seeds 300000-300029 310000-310039 [--model-dir DIR]
    python -m ai_engines.ct_lung.calibrate --check-seeds 310000-310019 320000-320009:clinical

The second form checks a calibration on a set not used to fit it: the card's own (or, with
``--seeds``, one fitted on those seeds), reporting the Brier score and the expected
calibration error (ECE) there.  A range may end in ``:clinical`` (or ``:real``) for the
generator's clinical anatomy (``synthetic_chest_ct(anatomy_kind=...)``).

Validation seeds only: never the held-out seeds (100000-100019) the accuracy is reported on.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from ai_engines.ct_lung import MODEL_NAME
from ai_engines.ct_lung.confidence import (
    CARD_KEY,
    FEATURES,
    PlattCalibration,
    fit_platt,
    lesion_features,
    lesion_probability,
)
from ai_engines.ct_lung.evaluate import evaluation_slices
from ai_engines.ct_lung.lesions import lesion_masks
from ai_engines.ct_lung.lungs import isolate_lungs
from ai_engines.ct_lung.preprocess import preprocess
from ai_engines.ct_lung.unet import context_step
from ai_engines.models import locate_model

MIN_TUMOUR_ML = 0.05  # smaller truth components are clipping fragments of a tumour
SIZE_BUCKETS_ML = (0.0, 0.5, 1.0, 4.0, float("inf"))
ECE_BINS = 5  # equal-width bins of predicted probability


def reliability(predicted: Sequence[float], observed: Sequence[bool], bins: int = ECE_BINS) -> dict[str, float]:
    """Brier score, expected calibration error (bins of equal width, weighted by their
    counts), mean predicted and observed rate of a calibration on a set of lesions."""
    p = np.asarray(predicted, float)
    y = np.asarray(observed, float)
    which = np.minimum((p * bins).astype(int), bins - 1)
    ece = sum(abs(p[which == b].mean() - y[which == b].mean()) * (which == b).sum() for b in range(bins) if (which == b).any())
    return {"lesions": float(len(p)), "positives": float(y.sum()), "brier": float(((p - y) ** 2).mean()),
            "ece": float(ece / len(p)), "mean_predicted": float(p.mean()), "observed_rate": float(y.mean())}


def seed_ranges(specs: Sequence[str]) -> list[tuple[int, str]]:
    """``FIRST-LAST[:anatomy]`` ranges as (seed, anatomy kind) pairs."""
    seeds = []
    for spec in specs:
        span, _, anatomy = spec.partition(":")
        a, b = (int(v) for v in span.split("-"))
        seeds += [(seed, anatomy or "demo") for seed in range(a, b + 1)]
    return seeds


def validation_lesions(engine, seed: int, anatomy_kind: str = "demo") -> tuple[list[dict], list[dict]]:
    """The lesions the engine's detector stage reports on one synthetic case (before the extent
    model), each with whether it overlaps a tumour; and each tumour with whether it was found."""
    from ai_engines.ct_lung.synthetic import synthetic_chest_ct

    n_slices, thickness = evaluation_slices(seed)
    case = synthetic_chest_ct(seed, n_slices=n_slices, slice_thickness=thickness, anatomy_kind=anatomy_kind)
    volume = case.to_volume()
    hu, geometry = np.asarray(volume.voxels, np.float32), volume.geometry
    lungs = isolate_lungs(hu, geometry.pixel_spacing, geometry.slice_spacing, geometry.row_direction[0] >= 0)
    lung_slices = np.nonzero(lungs.both.any(axis=(1, 2)))[0]
    detector = engine.detector
    reach = detector.context * context_step(geometry.slice_spacing, detector.context_mm)
    first, last = max(int(lung_slices[0]) - reach, 0), min(int(lung_slices[-1]) + reach, hu.shape[0] - 1)
    canvas, mapping = preprocess(hu[first : last + 1], geometry.pixel_spacing)
    box = engine._canvas_box(lungs.both, mapping, detector.depth)
    probability = engine._probabilities(detector, canvas, lung_slices, first, box, mapping, hu.shape, geometry.slice_spacing)
    search = lesion_masks(probability, lungs.both, geometry.spacing_zyx, hu=hu)
    voxel_ml = float(np.prod(geometry.spacing_zyx)) / 1000
    lesions = [{"seed": seed, "anatomy": anatomy_kind, "tumour": bool((lesion.mask & case.tumour).any()), "mean_probability": lesion.mean_probability,
                "volume_ml": float(lesion.mask.sum()) * voxel_ml} for lesion in search.lesions]
    labels, count = ndimage.label(case.tumour, structure=np.ones((3, 3, 3), bool))
    tumours = []
    for i in range(1, count + 1):
        tumour = labels == i
        if tumour.sum() * voxel_ml >= MIN_TUMOUR_ML:
            tumours.append({"seed": seed, "volume_ml": float(tumour.sum()) * voxel_ml,
                            "found": any((lesion.mask & tumour).any() for lesion in search.lesions)})
    return lesions, tumours


def _collect(engine, specs: Sequence[str]) -> tuple[list[dict], list[dict]]:
    lesions: list[dict] = []
    tumours: list[dict] = []
    for seed, anatomy in seed_ranges(specs):
        found, truth = validation_lesions(engine, seed, anatomy)
        lesions += found
        tumours += truth
        print(f"seed {seed} ({anatomy}): {len(found)} lesion(s), {sum(f['tumour'] for f in found)} on a tumour; "
              + ", ".join(f"{f['volume_ml']:.2f} ml p={f['mean_probability']:.3f} {'T' if f['tumour'] else 'F'}" for f in found),
              flush=True)
    return lesions, tumours


def main(argv: Sequence[str] | None = None) -> int:
    from ai_engines.registry import get_engine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", default=None,
                        help="ranges FIRST-LAST[:anatomy] to fit on (default 300000-300029 310000-310039; "
                             "with --check-seeds: default the card's own calibration)")
    parser.add_argument("--check-seeds", nargs="+", default=None,
                        help="ranges FIRST-LAST[:anatomy] to check the calibration on (not fitted there)")
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    engine = get_engine("ct_lung", args.model_dir, "cpu")
    # The detector card's own calibration (what the engine applies), unless one is fitted here.
    calibration = PlattCalibration.from_card(locate_model("ct_lung", MODEL_NAME, args.model_dir).card.measured_accuracy)
    fit_specs = args.seeds if args.seeds or args.check_seeds else ["300000-300029", "310000-310039"]
    if fit_specs:
        lesions, tumours = _collect(engine, fit_specs)
        if not lesions:
            print("no lesions on these seeds: nothing to calibrate")
            return 1
        features = [lesion_features(x["mean_probability"], x["volume_ml"]) for x in lesions]
        calibration = fit_platt(features, [x["tumour"] for x in lesions])
        fit = reliability([lesion_probability(x["mean_probability"], x["volume_ml"], calibration) for x in lesions],
                          [x["tumour"] for x in lesions])
        entry = {"method": "platt", "features": list(FEATURES), "intercept": round(calibration.intercept, 4),
                 "coefficients": [round(c, 4) for c in calibration.coefficients], "l2_penalty_on_slopes": 1.0,
                 "fit_mean_predicted": round(fit["mean_predicted"], 3), "fit_observed_rate": round(fit["observed_rate"], 3),
                 "fit_brier": round(fit["brier"], 4)}
        print(json.dumps({CARD_KEY: entry}, indent=2))
        _sensitivity(tumours)
    if args.check_seeds:
        if calibration is None:
            print("the detector's card has no lesion_probability: nothing to check")
            return 1
        lesions, tumours = _collect(engine, args.check_seeds)
        if not lesions:
            print("no lesions on the check seeds")
            return 1
        print(json.dumps({"check": {"seeds": args.check_seeds, "fitted_on": fit_specs or "the card", **{
            k: round(v, 4) for k, v in reliability(
                [lesion_probability(x["mean_probability"], x["volume_ml"], calibration) for x in lesions],
                [x["tumour"] for x in lesions]).items()}}}, indent=2))
        for anatomy in sorted({x["anatomy"] for x in lesions}):
            part = [x for x in lesions if x["anatomy"] == anatomy]
            figures = reliability([lesion_probability(x["mean_probability"], x["volume_ml"], calibration) for x in part],
                                  [x["tumour"] for x in part])
            print(f"  {anatomy}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))
        _sensitivity(tumours)
    return 0


def _sensitivity(tumours: list[dict]) -> None:
    for lo, hi in zip(SIZE_BUCKETS_ML[:-1], SIZE_BUCKETS_ML[1:], strict=True):
        bucket = [t for t in tumours if lo <= t["volume_ml"] < hi]
        print(f"tumours {lo:g}-{hi:g} ml: {sum(t['found'] for t in bucket)} of {len(bucket)} found")


if __name__ == "__main__":
    raise SystemExit(main())
