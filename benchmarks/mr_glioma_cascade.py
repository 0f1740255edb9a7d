"""The MR glioma T1c-only cascade, measured: how the extent margin was chosen, the held-out
figures, and what the extent network does on the real brain2.

    python benchmarks/mr_glioma_cascade.py margins 200010 200011 200012 200013
    python benchmarks/mr_glioma_cascade.py held-out --roles T1c 100000 100003 100004 100008
    python benchmarks/mr_glioma_cascade.py brain2 [--folder ../shared/reference-data/real-dev]

``margins``: per synthetic hgg study (T1c only, the held-out test's study recipe), the whole-tumour
Dice of the detector alone, of the extent network alone, and of the cascade bounded at 5, 10, 15,
20, 30 mm and unbounded (the engine's own selection, pre-processing and lesion checks; both
networks run once per study).  The margin is chosen on validation seeds (200010-200013), not on
the test's (100000, 100003).

``held-out``: the loop of ``tests/ai_engines/mr_glioma/test_engine.py``'s held-out Dice test
(``MrGliomaEngine.run`` end to end), printing WT / TC / ET per seed.

``brain2``: brain2's label taken as if the detector had found it (it does not), and the extent
network's output bounded by it at each margin: how much false tumour each margin would let in.

One JSON line per study or margin.  The packaged weights; torch on one thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813
from scipy import ndimage

from ai_engines.mr_glioma.engine import (
    MrGliomaEngine,
    bound_extent,
    keep_lesions,
    labels_to_series,
)
from ai_engines.mr_glioma.evaluate import brain2_case, dice, masks_of, synthetic_study
from ai_engines.mr_glioma.preprocess import prepare, resample
from ai_engines.mr_glioma.spec import ROLES
from ai_engines.mr_glioma.synthetic import labels_on, synthetic_brain

MARGINS_MM = (5.0, 10.0, 15.0, 20.0, 30.0, 1000.0)  # 1000: unbounded on any head
SHIFTS = {"T2": (2.0, -3.0, 1.0)}  # as the held-out test: T2 moved, so registration is needed
REAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "reference-data" / "real-dev"


def _wt_dice(labels: np.ndarray, count: int, prepared, reference, truth: np.ndarray) -> float:  # noqa: ANN001
    if not count:
        return 0.0
    return round(float(dice(labels_to_series(labels, prepared.grid, reference) > 0, truth) or 0.0), 3)


def margins(engine: MrGliomaEngine, seeds: list[int]) -> None:
    for seed in seeds:
        started = time.perf_counter()
        brain = synthetic_brain(seed, kind="hgg")
        study = synthetic_study(brain, ("T1c",), seed, shifts=SHIFTS)
        chosen, _ = engine.select_sequences(study)
        role = next(r for r in ROLES if r in chosen)
        reference = chosen[role]
        prepared = prepare(chosen, role)
        inference = engine.infer(prepared)
        if inference.extent_probabilities is None:
            raise SystemExit("no T1c-only network is installed: nothing to measure")
        truth = labels_on(brain, reference) > 0
        detected, found = keep_lesions(inference.probabilities, prepared.brain)
        extent, extent_found = keep_lesions(inference.extent_probabilities, prepared.brain)
        row: dict = {"seed": seed, "slice_mm": float(reference.geometry.slice_thickness),
                     "detector": _wt_dice(detected, found, prepared, reference, truth),
                     "extent_alone": _wt_dice(extent, extent_found, prepared, reference, truth)}
        for margin in MARGINS_MM:
            if not found:
                row[f"{margin:g}mm"] = 0.0  # no detection, no lesion
                continue
            bounded = bound_extent(inference.extent_probabilities, detected > 0, prepared.brain,
                                   margin)
            labels, count = keep_lesions(bounded, prepared.brain)
            row[f"{margin:g}mm"] = _wt_dice(labels, count, prepared, reference, truth)
        row["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps(row), flush=True)


def held_out(engine: MrGliomaEngine, roles: tuple[str, ...], seeds: list[int]) -> None:
    for seed in seeds:
        started = time.perf_counter()
        brain = synthetic_brain(seed, kind="hgg")
        study = synthetic_study(brain, roles, seed, shifts=SHIFTS)
        findings = engine.run(study)
        reference = next(s for s in study.series if s.series_uid == findings.source_series_uid)
        truth = labels_on(brain, reference)
        masks = masks_of(findings, truth.shape)
        print(json.dumps({
            "roles": list(roles), "seed": seed,
            "slice_mm": float(reference.geometry.slice_thickness),
            "WT": dice(masks["WT"], truth > 0), "TC": dice(masks["TC"], (truth == 1) | (truth == 3)),
            "ET": dice(masks["ET"], truth == 3), "seconds": round(time.perf_counter() - started, 1),
            "notes": [n for n in findings.notes if n.startswith(("model", "T1c alone"))],
        }), flush=True)


def brain2(engine: MrGliomaEngine, folder: Path) -> None:
    _, volume, label_image = brain2_case(folder)
    prepared = prepare({"T1c": volume}, "T1c")
    inference = engine.infer(prepared)
    if inference.extent_probabilities is None:
        raise SystemExit("no T1c-only network is installed: nothing to measure")
    label = sitk.GetArrayFromImage(resample(sitk.Cast(label_image, sitk.sitkFloat32), prepared.grid)) > 0.5
    near = ndimage.binary_dilation(label, iterations=5)  # 5 mm on the 1 mm grid
    print(json.dumps({"detector_lesions": keep_lesions(inference.probabilities, prepared.brain)[1],
                      "label_ml": float(label.sum()) / 1000}), flush=True)
    for margin in MARGINS_MM:
        bounded = bound_extent(inference.extent_probabilities, label, prepared.brain, margin)
        labels, count = keep_lesions(bounded, prepared.brain)
        found = labels > 0
        print(json.dumps({"margin_mm": margin, "kept": count, "ml": float(found.sum()) / 1000,
                          "ml_beyond_5mm_of_label": float((found & ~near).sum()) / 1000,
                          "label_covered": round(float((found & label).sum() / label.sum()), 3)}),
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("margins").add_argument("seeds", type=int, nargs="+")
    held = sub.add_parser("held-out")
    held.add_argument("--roles", default="T1c", help="comma-separated, e.g. T1c or T1,T1c,T2,FLAIR")
    held.add_argument("seeds", type=int, nargs="+")
    sub.add_parser("brain2").add_argument("--folder", type=Path, default=REAL_DEV)
    args = parser.parse_args()
    engine = MrGliomaEngine(device="cpu", threads=1)
    if args.what == "margins":
        margins(engine, args.seeds)
    elif args.what == "held-out":
        held_out(engine, tuple(args.roles.split(",")), args.seeds)
    else:
        brain2(engine, args.folder)


if __name__ == "__main__":
    main()
