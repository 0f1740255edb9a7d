"""Set the lesion checks' minimum size and mean depth from synthetic validation studies.

Each study (validation seeds, disjoint from training and from the held-out test seeds of
:mod:`ai_engines.mr_glioma.evaluate`) is pre-processed and segmented once; the lesion checks
(:func:`ai_engines.mr_glioma.engine.keep_lesions`) are then applied with every pair of
minimum whole-tumour volume and minimum mean depth below the brain-mask surface, the labels
resampled to the reference series and scored there (whole-tumour Dice, lesions missed, false
lesions: kept components that touch no true tumour).  The real brain2 (T1c) is the check: a
pair that leaves a false lesion on it, or on a tumour-free synthetic brain, is not chosen.
Among the rest the pair with the best mean whole-tumour Dice wins (ties: the stricter pair).

Usage::

    python -m ai_engines.mr_glioma.calibrate --brain2 ../shared/reference-data/real-dev \\
        --out calibration.json
    python -m ai_engines.mr_glioma.calibrate --held-out 2 --out held-out.json  # report only
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813
from scipy import ndimage

from ai_engines.findings import Decline
from ai_engines.mr_glioma.engine import MrGliomaEngine, find_lesions, labels_to_series
from ai_engines.mr_glioma.evaluate import (
    FIRST_HELD_OUT_SEED,
    MODES,
    brain2_case,
    dice,
    synthetic_study,
)
from ai_engines.mr_glioma.preprocess import prepare
from ai_engines.mr_glioma.spec import ROLES
from ai_engines.mr_glioma.synthetic import labels_on, synthetic_brain
from ai_engines.volume import StudyInput

FIRST_VALIDATION_SEED = 200_000
# (kind, sequences): small cortical lesions (as brain2) weigh most; a tumour-free brain for
# false lesions; T1c only, the hardest input and the real case's.
VALIDATION = (("solid", ("T1c",)), ("none", ("T1c",)), ("solid", ("T1", "T1c", "T2", "FLAIR")),
              ("hgg", ("T1c",)), ("solid", ("T1c",)), ("lgg", ("T1", "T1c", "T2", "FLAIR")))
MIN_LESION_ML = (0.1, 0.25, 0.5, 1.0)
MIN_MEAN_DEPTH_MM = (0.0, 2.0, 4.0, 6.0)


def score_study(engine: MrGliomaEngine, study: StudyInput, truth_of) -> dict:  # noqa: ANN001
    """Scores of one study for every pair of checks; ``truth_of(reference) -> labels``."""
    selected = engine.select_sequences(study)
    if isinstance(selected, Decline):
        raise ValueError(f"validation study declined: {selected.code}")
    chosen, _ = selected
    role = next(r for r in ROLES if r in chosen)
    reference = chosen[role]
    prepared = prepare(chosen, role)
    inference = engine.infer(prepared)  # with T1c alone: the detector and the extent network
    labels_truth = truth_of(reference)
    truth = labels_truth > 0
    near = ndimage.binary_dilation(truth, structure=np.ones((3, 5, 5), bool), iterations=3)
    true_lesions, n_true = ndimage.label(truth, structure=np.ones((3, 3, 3), bool))
    scores = {}
    for min_ml, min_depth in itertools.product(MIN_LESION_ML, MIN_MEAN_DEPTH_MM):
        labels, count = find_lesions(inference.probabilities, prepared.brain, inference.extent_probabilities,
                                     min_lesion_ml=min_ml, min_mean_depth_mm=min_depth)
        classes = labels_to_series(labels, prepared.grid, reference) if count else np.zeros(truth.shape, np.uint8)
        found = classes > 0
        _, false_lesions = ndimage.label(found & ~near, structure=np.ones((3, 3, 3), bool))
        hit = set(np.unique(true_lesions[found])) - {0}
        scores[f"{min_ml:g}/{min_depth:g}"] = {
            "WT": dice(found, truth), "TC": dice((classes == 1) | (classes == 3), (labels_truth == 1) | (labels_truth == 3)),
            "ET": dice(classes == 3, labels_truth == 3),
            "false_lesions": int(false_lesions), "missed": int(n_true - len(hit)),
        }
    return scores


def choose(studies: list[dict], brain2: dict | None) -> tuple[str, dict]:
    """The pair with the best mean WT Dice and no false lesion where there is no tumour, on
    brain2 or anywhere on the tumour-free brains; ties go to the stricter pair."""
    if not studies and brain2 is None:
        raise ValueError("nothing to choose from: no synthetic study and no brain2")
    table = {}
    # The checks' pairs are those scored: on the synthetic studies, or on brain2 alone.
    for key in studies[0]["scores"] if studies else brain2 or {}:
        dices = [s["scores"][key]["WT"] for s in studies if s["scores"][key]["WT"] is not None]
        clean = all(s["scores"][key]["false_lesions"] == 0 for s in studies if s["kind"] == "none")
        real_clean = brain2 is None or brain2[key]["false_lesions"] == 0
        table[key] = {"mean_WT": round(float(np.mean(dices)), 4) if dices else 0.0,
                      "missed": sum(s["scores"][key]["missed"] for s in studies),
                      "false_lesions": sum(s["scores"][key]["false_lesions"] for s in studies),
                      "allowed": clean and real_clean}
    allowed = [k for k, v in table.items() if v["allowed"]] or list(table)
    best = max(allowed, key=lambda k: (table[k]["mean_WT"], *map(float, k.split("/"))))
    return best, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--first-seed", type=int, default=FIRST_VALIDATION_SEED)
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--brain2", type=Path, help="folder holding brain2_image.nrrd and brain2_label.nrrd")
    parser.add_argument("--cases", type=int, default=len(VALIDATION), help="validation studies (of VALIDATION)")
    parser.add_argument("--held-out", type=int, default=0,
                        help="instead: score the first N held-out test seeds (x all/T1c/FLAIR), choose nothing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    engine = MrGliomaEngine(model_dir=args.model_dir, device="cpu", threads=args.threads)
    report: dict = {"engine": engine.identity().version, "model": engine.identity().model_sha256[:12], "studies": []}
    brain2 = None
    if args.brain2:
        _, volume, label_image = brain2_case(args.brain2)
        label = sitk.GetArrayFromImage(label_image)
        brain2 = score_study(engine, StudyInput("2.25.2000", (volume,)), lambda _reference: label)
        report["brain2"] = brain2
        print(json.dumps({"brain2": brain2}), flush=True)
    if args.held_out:
        # The evaluation's held-out test studies, scored (not chosen on) with every pair.
        studies = [(seed, ("hgg", "solid", "lgg", "hgg")[seed % 4], roles)
                   for seed in range(FIRST_HELD_OUT_SEED, FIRST_HELD_OUT_SEED + args.held_out)
                   for roles in MODES.values()]
    else:
        studies = [(args.first_seed + n, kind, roles) for n, (kind, roles) in enumerate(VALIDATION[: args.cases])]
    for seed, kind, roles in studies:
        brain = synthetic_brain(seed, kind=kind)
        t = time.perf_counter()
        scores = score_study(engine, synthetic_study(brain, roles, seed),
                             lambda reference, brain=brain: labels_on(brain, reference))
        row = {"seed": seed, "kind": kind, "roles": list(roles), "seconds": round(time.perf_counter() - t, 1),
               "scores": scores}
        report["studies"].append(row)
        print(json.dumps(row), flush=True)
    if args.held_out:
        report["summary"] = {
            key: {" ".join(roles): {region: round(float(np.mean([r["scores"][key][region] for r in report["studies"]
                                                                 if r["roles"] == list(roles)
                                                                 and r["scores"][key][region] is not None] or [0.0])), 3)
                                    for region in ("WT", "TC", "ET")} for roles in MODES.values()}
            for key in report["studies"][0]["scores"]}
        print(json.dumps(report["summary"]), flush=True)
        if args.out:
            args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        return 0
    best, table = choose(report["studies"], brain2)
    report["table"], report["chosen"] = table, best
    print(json.dumps({"chosen": best, "table": table}, indent=1), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
