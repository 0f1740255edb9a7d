"""Site adaptation of the CT lung engine, shown on a shifted synthetic domain (issue #12 item 4).

The path a site follows, run end to end through the node's own CLI:

1. export approved plans: CT series with the GTV as an RTSTRUCT (here written with the node's
   own writers from :mod:`ai_engines.ct_lung.site_domain`: 5 mm slices, sharp kernel, low-dose
   noise), one folder for training, a disjoint one for evaluation;
2. ``dicom-node evaluate-model ct_lung --data-dir EVAL`` with the packaged weights (before);
3. ``dicom-node train-model ct_lung --data-dir TRAIN --init-weights <packaged detector>`` and the
   same with ``--model ct_lung_unet_extent`` for the extent model, into one site folder;
4. ``dicom-node evaluate-model ct_lung --data-dir EVAL --model-dir SITE`` (after).

Prints the Dice per held-out case before and after, and their means::

    python benchmarks/ct_lung_site_adaptation.py --work /tmp/site --train 6 --evaluate 10 \
        --minutes 10 --extent-minutes 6 --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ai_engines import codes
from ai_engines.ct_lung.site_domain import (
    SITE_EVALUATION_FIRST_SEED,
    SITE_SLICE_THICKNESS_MM,
    SITE_TRAINING_FIRST_SEED,
    site_case,
)
from ai_engines.findings import EngineIdentity, Findings, Segment
from dicom_node.results import ResultOptions
from dicom_node.results.rtstruct import build_rtstruct
from dicom_node.sample_data import PatientIdentity, ct_series_datasets, write_series

PACKAGED = Path(__file__).resolve().parents[1] / "ai_engines" / "ct_lung" / "weights"


def write_site_case(seed: int, folder: Path, n_slices: int | None = None) -> str:
    """Write one shifted-domain CT series and its approved GTV RTSTRUCT under ``folder/<seed>``.

    Returns
    -------
    str
        The series' SeriesInstanceUID (``2.25.<seed>``), which evaluate-model names cases by.
    """
    case = site_case(seed, n_slices=n_slices)
    series_uid = f"2.25.{seed}"
    identity = PatientIdentity(name=f"Site^Case{seed}", patient_id=f"SITE-{seed}",
                               accession=f"SA{seed}")
    datasets = ct_series_datasets(
        case.hu, identity=identity, pixel_spacing=(case.pixel_spacing, case.pixel_spacing),
        slice_spacing=SITE_SLICE_THICKNESS_MM, origin=case.origin, series_uid=series_uid,
        series_description="Thorax 5.0 B70f low dose")
    for ds in datasets:
        ds.ConvolutionKernel = "B70f"
    out = folder / str(seed)
    write_series(datasets, out)
    gtv = Segment(label="GTV", description="GTV", category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                  property_type=codes.NEOPLASM, rt_interpreted_type="GTV", color_rgb=(255, 0, 0),
                  mask=case.tumour)
    plan = Findings(EngineIdentity("planning", "1", "none", "0" * 64), series_uid, segments=(gtv,))
    rtstruct = build_rtstruct(plan, datasets, ResultOptions(device_observer_uid="2.25.7",
                                                            series_number_base=100))
    # A site exports what its physicians approved.
    rtstruct.ApprovalStatus = "APPROVED"
    rtstruct.ReviewDate, rtstruct.ReviewTime = identity.study_date, "120000"
    rtstruct.ReviewerName = "Reviewer^Site"
    rtstruct.save_as(out / "rtstruct.dcm", enforce_file_format=True)
    return series_uid


def write_site_folder(seeds: range, folder: Path, n_slices: int | None = None) -> list[str]:
    """Write every seed's series and RTSTRUCT under ``folder``; the series UIDs."""
    folder.mkdir(parents=True, exist_ok=True)
    return [write_site_case(seed, folder, n_slices) for seed in seeds]


def _dice_by_seed(report: Path) -> dict[int, dict[str, float]]:
    cases = json.loads(report.read_text())["cases"]
    return {int(str(c["case"]).rsplit(".", 1)[1]): c for c in cases}


def run(work: Path, n_train: int, n_evaluate: int, minutes: float, extent_minutes: float,
        threads: int, lr: float, seed: int, n_slices: int | None = None,
        max_steps: int | None = None) -> dict[str, object]:
    """Write the folders, evaluate, fine-tune both models, evaluate again; the figures."""
    import torch

    from dicom_node.cli import main as cli

    torch.set_num_threads(threads)
    train_dir, eval_dir, site_dir = work / "train", work / "evaluate", work / "site-model"
    t = time.perf_counter()
    write_site_folder(range(SITE_TRAINING_FIRST_SEED, SITE_TRAINING_FIRST_SEED + n_train), train_dir, n_slices)
    write_site_folder(range(SITE_EVALUATION_FIRST_SEED, SITE_EVALUATION_FIRST_SEED + n_evaluate), eval_dir, n_slices)
    timings = {"write": time.perf_counter() - t}

    t = time.perf_counter()
    before = work / "before.json"
    if cli(["evaluate-model", "ct_lung", "--data-dir", str(eval_dir), "--json", str(before)]) != 0:
        raise SystemExit("evaluate-model (packaged weights) failed")
    timings["evaluate_before"] = time.perf_counter() - t

    steps = ["--max-steps", str(max_steps)] if max_steps else []
    for model, budget in (("ct_lung_unet", minutes), ("ct_lung_unet_extent", extent_minutes)):
        t = time.perf_counter()
        if cli(["train-model", "ct_lung", "--data-dir", str(train_dir), "--model", model,
                "--init-weights", str(PACKAGED / f"{model}.pt"), "--minutes", f"{budget:g}",
                "--threads", str(threads), "--lr", f"{lr:g}", "--seed", str(seed),
                "--version", "1.0.0+site-b70f-lowdose", "--label", "SITE-DEMO",
                "--out", str(site_dir), *steps]) != 0:
            raise SystemExit(f"train-model {model} failed")
        timings[f"train_{model}"] = time.perf_counter() - t

    t = time.perf_counter()
    after = work / "after.json"
    if cli(["evaluate-model", "ct_lung", "--data-dir", str(eval_dir), "--model-dir", str(site_dir),
            "--json", str(after)]) != 0:
        raise SystemExit("evaluate-model (site weights) failed")
    timings["evaluate_after"] = time.perf_counter() - t

    b, a = _dice_by_seed(before), _dice_by_seed(after)
    rows = [(s, b[s]["dice"], a[s]["dice"], b[s]["false_positive_lesions"], a[s]["false_positive_lesions"],
             b[s]["truth_ml"]) for s in sorted(b)]
    return {"rows": rows, "before": json.loads(before.read_text())["summary"],
            "after": json.loads(after.read_text())["summary"], "timings": timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the DICOM folders and models")
    parser.add_argument("--train", type=int, default=6, help="training cases (site's approved plans)")
    parser.add_argument("--evaluate", type=int, default=10, help="held-out cases of the same domain")
    parser.add_argument("--minutes", type=float, default=10.0, help="detector fine-tune budget")
    parser.add_argument("--extent-minutes", type=float, default=6.0, help="extent model fine-tune budget")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slices", type=int, default=None, help="slices per series (default 48)")
    args = parser.parse_args(argv)
    result = run(args.work, args.train, args.evaluate, args.minutes, args.extent_minutes, args.threads,
                 args.lr, args.seed, args.slices, args.max_steps)
    rows = result["rows"]
    assert isinstance(rows, list)
    print("\nheld-out case | truth ml | Dice before | Dice after | FP before | FP after")
    for seed, d0, d1, f0, f1, ml in rows:
        print(f"{seed} | {ml:.2f} | {d0:.3f} | {d1:.3f} | {f0} | {f1}")
    before = np.array([r[1] for r in rows])
    after = np.array([r[2] for r in rows])
    print(f"mean Dice {before.mean():.3f} -> {after.mean():.3f} (median {np.median(before):.3f} -> "
          f"{np.median(after):.3f}); improved {int((after > before + 0.005).sum())}, worse "
          f"{int((after < before - 0.005).sum())} of {len(rows)}")
    print("timings (s):", json.dumps({k: round(v, 1) for k, v in result["timings"].items()}))  # type: ignore[union-attr]
    return 0


if __name__ == "__main__":
    sys.exit(main())
