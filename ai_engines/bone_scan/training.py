"""The bone-scan engine's hook for ``dicom-node train-model bone_scan`` and
``dicom-node evaluate-model bone_scan`` (named by ``ai_engines.bone_scan.spec.SPEC.training``).

A site's ground truth for this classifier is a label per study, not a contour: ``--data-dir``
is a folder of NM whole-body scans and ``--labels`` a CSV (``study_uid,label`` or
``path,label``; ``ai_engines.bone_scan.dataset.read_labelled_scans``).  Evaluation reports AUC,
sensitivity and specificity with 95 % confidence intervals, as the publication does.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from ai_engines.bone_scan.dataset import LabelledScan, read_labelled_scans, synthetic_scans
from ai_engines.bone_scan.evaluate import HELD_OUT_FIRST_SEED, evaluate, evaluate_synthetic
from ai_engines.bone_scan.spec import MODEL_NAME
from ai_engines.bone_scan.train import train
from ai_engines.engine import Engine
from ai_engines.models import ModelCard
from ai_engines.training import EngineTraining, Evaluation


def _lines(summary: dict) -> list[str]:
    """One line per group (overall, then per confounder when the scans carry them)."""
    def ci(group: dict, key: str) -> str:
        low, high = group[f"{key}_ci95"]
        return f"{group[key]:.3f} (95 % CI {low:.3f}-{high:.3f})"

    return [f"{name}: {group['answered']} scans answered, {group['declined']} declined: "
            f"AUC {ci(group, 'auc')}, sensitivity {ci(group, 'sensitivity')}, "
            f"specificity {ci(group, 'specificity')}"
            for name, group in summary.items() if isinstance(group, dict)]


class BoneScanTraining(EngineTraining):
    """The whole-body bone-scan classifier."""

    models = (MODEL_NAME,)

    def add_train_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--max-steps", type=int, default=None)
        parser.add_argument("--batch-size", type=int, default=32)
        parser.add_argument("--lr", type=float, default=3e-3)

    def add_site_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--labels", type=Path, default=None,
                            help="with --data-dir: CSV of study_uid,label or path,label "
                                 "(1 = metastatic bone disease)")

    def read_site_data(self, data_dir: Path, args: argparse.Namespace) -> list[LabelledScan]:
        if args.labels is None:
            raise SystemExit("bone_scan: --data-dir needs --labels CSV (a label per study)")
        return list(read_labelled_scans(data_dir, args.labels))

    def synthetic_cases(self, count: int, first_seed: int, args: argparse.Namespace,
                        ) -> Iterable[LabelledScan]:
        return synthetic_scans(count, first_seed)

    def site_cases(self, labelled: Iterable[LabelledScan]) -> Iterable[LabelledScan]:
        return labelled

    def train(self, cases: Iterable[LabelledScan], out_dir: Path, args: argparse.Namespace,
              training_data: str) -> ModelCard:
        return train(cases, out_dir, minutes=args.minutes, max_steps=args.max_steps,
                     batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
                     threads=args.threads, init_weights=args.init_weights,
                     version=args.version, label=args.label, training_data=training_data,
                     progress=False)

    def evaluate_synthetic(self, engine: Engine, count: int, first_seed: int | None,
                           ) -> Evaluation:
        seed = HELD_OUT_FIRST_SEED if first_seed is None else first_seed
        results, summary = evaluate_synthetic(engine, count, seed, progress=False)
        return Evaluation(results, summary, _lines(summary))

    def evaluate_site(self, engine: Engine, labelled: Iterable[LabelledScan]) -> Evaluation:
        results, summary = evaluate(engine, labelled, progress=False)
        return Evaluation(results, summary, _lines(summary))


TRAINING = BoneScanTraining()
