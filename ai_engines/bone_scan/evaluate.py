"""Evaluation as in the publication: AUC, sensitivity and specificity at the operating
threshold, each with a 95 % confidence interval (bootstrap for the AUC, Wilson for the
proportions), overall and per confounder subgroup.  Training/evaluation only.

Usage::

    python -m ai_engines.bone_scan.evaluate --synthetic 200 [--first-seed 100000] [--model-dir DIR]
    python -m ai_engines.bone_scan.evaluate --data-dir SCANS --labels labels.csv [--json out.json]

Hook for ``dicom-node evaluate-model bone_scan``: :func:`evaluate` takes an engine and any
iterable of :class:`~ai_engines.bone_scan.dataset.LabelledScan`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ai_engines.bone_scan.dataset import LabelledScan, synthetic_scans
from ai_engines.bone_scan.synthetic import CONFOUNDERS

HELD_OUT_FIRST_SEED = 100_000  # training uses seeds below 100 000, validation 200 000 on
BOOTSTRAP_SAMPLES = 2000
Z_95 = 1.959964


@dataclass(frozen=True)
class ScanResult:
    """One scan's outcome: probability and call, or the decline code."""

    name: str
    label: int
    probability: float | None
    positive: bool | None
    decline_code: str | None
    seconds: float
    confounders: dict[str, bool] = field(default_factory=dict)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties)."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_auc_ci(labels: np.ndarray, scores: np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                     seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the AUC (resampling scans, both labels kept)."""
    rng = np.random.default_rng(seed)
    labels, scores = np.asarray(labels), np.asarray(scores)
    values = []
    for _ in range(samples):
        index = rng.integers(0, len(labels), len(labels))
        if labels[index].min() == labels[index].max():
            continue
        values.append(roc_auc(labels[index], scores[index]))
    if not values:
        return (float("nan"), float("nan"))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score 95 % interval of a proportion."""
    if total == 0:
        return (float("nan"), float("nan"))
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def summarise(results: Iterable[ScanResult]) -> dict[str, object]:
    """AUC, sensitivity and specificity with 95 % CIs over the scans the engine answered."""
    results = list(results)
    answered = [r for r in results if r.probability is not None]
    labels = np.array([r.label for r in answered], dtype=int)
    scores = np.array([r.probability for r in answered], dtype=float)
    calls = np.array([bool(r.positive) for r in answered], dtype=bool)
    tp = int((calls & (labels == 1)).sum())
    tn = int((~calls & (labels == 0)).sum())
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    summary: dict[str, object] = {
        "scans": len(results), "answered": len(answered), "declined": len(results) - len(answered),
        "metastatic": n_pos, "non_metastatic": n_neg,
        "auc": roc_auc(labels, scores) if len(answered) else float("nan"),
        "auc_ci95": bootstrap_auc_ci(labels, scores) if len(answered) else (float("nan"),) * 2,
        "sensitivity": tp / n_pos if n_pos else float("nan"),
        "sensitivity_ci95": wilson_interval(tp, n_pos),
        "specificity": tn / n_neg if n_neg else float("nan"),
        "specificity_ci95": wilson_interval(tn, n_neg),
    }
    if answered:
        summary["seconds_per_scan_median"] = float(np.median([r.seconds for r in answered]))
    return summary


def evaluate(engine, scans: Iterable[LabelledScan], progress: bool = True) -> tuple[list[ScanResult], dict[str, object]]:
    """Run ``engine`` on every scan and summarise, overall and per confounder.

    Parameters
    ----------
    engine
        A constructed :class:`~ai_engines.bone_scan.engine.BoneScanEngine` (or any engine that
        returns one ``Classification``).
    scans
        Labelled scans (synthetic, or a site's via ``read_labelled_scans``).

    Returns
    -------
    (per-scan results, summary) -- the summary holds ``overall`` and, when scans carry
    confounder flags, ``with_<name>``, ``with_any_confounder`` and ``without_confounders``.
    """
    results = []
    for scan in tqdm(scans, desc="evaluating", disable=not progress):
        start = time.perf_counter()
        findings = engine.run(scan.study)
        seconds = time.perf_counter() - start
        if findings.declined:
            results.append(ScanResult(scan.name, scan.label, None, None, findings.decline.code, seconds, scan.confounders))
            continue
        c = findings.classifications[0]
        results.append(ScanResult(scan.name, scan.label, c.probability, c.positive, None, seconds, scan.confounders))
    summary: dict[str, object] = {"threshold": getattr(engine, "threshold", None), "overall": summarise(results)}
    if any(r.confounders for r in results):
        for name in CONFOUNDERS:
            summary[f"with_{name}"] = summarise(r for r in results if r.confounders.get(name))
        summary["with_any_confounder"] = summarise(r for r in results if any(r.confounders.values()))
        summary["without_confounders"] = summarise(r for r in results if not any(r.confounders.values()))
    return results, summary


def evaluate_synthetic(engine, count: int, first_seed: int = HELD_OUT_FIRST_SEED,
                       progress: bool = True) -> tuple[list[ScanResult], dict[str, object]]:
    """Held-out synthetic scans (seeds disjoint from training and validation), any layout."""
    return evaluate(engine, synthetic_scans(count, first_seed), progress)


def _line(name: str, s: dict) -> str:
    def ci(key: str) -> str:
        low, high = s[f"{key}_ci95"]
        return f"{s[key]:.3f} ({low:.3f}-{high:.3f})"
    return (f"{name:24s} n={s['answered']:4d} (+{s['declined']} declined) met={s['metastatic']:3d} "
            f"AUC {ci('auc')}  sens {ci('sensitivity')}  spec {ci('specificity')}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=None, help="N held-out synthetic scans")
    parser.add_argument("--first-seed", type=int, default=HELD_OUT_FIRST_SEED)
    parser.add_argument("--data-dir", type=Path, default=None, help="folder of DICOM NM bone scans")
    parser.add_argument("--labels", type=Path, default=None, help="CSV study_uid,label or path,label")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write per-scan results and summary here")
    args = parser.parse_args(argv)
    from ai_engines.bone_scan.engine import BoneScanEngine

    engine = BoneScanEngine(model_dir=args.model_dir, device=args.device, threads=args.threads)
    if args.data_dir is not None:
        from ai_engines.bone_scan.dataset import read_labelled_scans

        if args.labels is None:
            parser.error("--data-dir needs --labels")
        results, summary = evaluate(engine, read_labelled_scans(args.data_dir, args.labels))
    else:
        results, summary = evaluate_synthetic(engine, args.synthetic or 200, args.first_seed)
    print(f"operating threshold {summary['threshold']}")
    for key, value in summary.items():
        if isinstance(value, dict) and value.get("answered"):
            print(_line(key, value))
    if args.json:
        args.json.write_text(json.dumps({"scans": [asdict(r) for r in results], "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
