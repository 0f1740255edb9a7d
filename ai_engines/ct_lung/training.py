"""The CT lung engine's training and evaluation hook for ``dicom-node train-model ct_lung`` and
``dicom-node evaluate-model ct_lung`` (named by ``ai_engines.ct_lung.spec.SPEC.training``).

Imports torch, tqdm and the synthetic chest CT generator; the runtime engine never imports it.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from ai_engines.ct_lung import EXTENT_MODEL_NAME, MODEL_NAME
from ai_engines.ct_lung.evaluate import (
    HELD_OUT_FIRST_SEED,
    CaseResult,
    evaluate_case,
    evaluate_synthetic,
    summarise,
)
from ai_engines.ct_lung.train import (
    TrainingCase,
    clinical_training_cases,
    curated_training_cases,
    synthetic_training_cases,
    train,
)
from ai_engines.engine import Engine
from ai_engines.models import ModelCard
from ai_engines.training import EngineTraining, Evaluation, LabelledVolume
from ai_engines.volume import StudyInput


def _line(r: CaseResult) -> str:
    return (f"{r.case}: tumour={r.has_tumour!s:5} dice {r.dice:.3f} hd95 {r.hd95_mm:.2f} mm "
            f"surface-dice {r.surface_dice:.3f} lungs {r.lung_dice_left:.3f}/"
            f"{r.lung_dice_right:.3f} lesions {r.lesions} fp {r.false_positive_lesions} "
            f"truth {r.truth_ml:.2f} ml pred {r.predicted_ml:.2f} ml {r.seconds:.1f} s")


class CtLungTraining(EngineTraining):
    """Detector and extent model of the CT lung engine."""

    models = (MODEL_NAME, EXTENT_MODEL_NAME)
    roi_pattern = r"^(gtv|tumou?r|lesion|neoplasm)"

    def add_train_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--max-steps", type=int, default=None)
        parser.add_argument("--batch-size", type=int, default=16)
        parser.add_argument("--lr", type=float, default=2e-3)
        parser.add_argument("--curated", action="store_true",
                            help="case mix of curated_training_cases (small, large, no tumour)")
        for share, default, what in (
                ("small", 0.35, "one 5-14 mm tumour"), ("medium", 0.25, "one 14-35 mm tumour"),
                ("large", 0.15, "one 35-60 mm tumour"),
                ("central", 0.0, "one 14-60 mm tumour against the mediastinum")):
            parser.add_argument(f"--{share}", type=float, default=default,
                                help=f"with --curated: share of slabs with {what}")
        parser.add_argument("--clinical", action="store_true",
                            help="case mix of clinical_training_cases (clinical anatomy: real-CT "
                                 "look-alikes of tumour, 0.5-3 ml nodules, kernels, low dose)")
        parser.add_argument("--loss", choices=("dice_ce", "small"), default="dice_ce")
        parser.add_argument("--slice-first", type=float, default=0.0)
        parser.add_argument("--border-share", type=float, default=0.0)
        parser.add_argument("--warmup-steps", type=int, default=0)

    def synthetic_cases(self, count: int, first_seed: int, args: argparse.Namespace,
                        ) -> Iterable[TrainingCase]:
        if args.clinical:
            return clinical_training_cases(count, first_seed)
        if args.curated:
            return curated_training_cases(count, first_seed, small=args.small,
                                          medium=args.medium, large=args.large,
                                          central=args.central)
        return synthetic_training_cases(count, first_seed)

    def site_cases(self, labelled: Iterable[LabelledVolume]) -> Iterable[TrainingCase]:
        for case in labelled:
            geometry = case.volume.geometry
            yield TrainingCase(hu=case.volume.voxels, tumour=case.mask,
                               pixel_spacing=geometry.pixel_spacing,
                               slice_spacing=geometry.slice_spacing,
                               name=f"{case.source}:{case.volume.series_uid}")

    def train(self, cases: Iterable[TrainingCase], out_dir: Path, args: argparse.Namespace,
              training_data: str) -> ModelCard:
        return train(
            cases, out_dir, minutes=args.minutes, max_steps=args.max_steps,
            batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
            threads=args.threads, init_weights=args.init_weights, version=args.version,
            label=args.label, training_data=training_data, loss=args.loss,
            slice_first=args.slice_first, border_share=args.border_share,
            warmup_steps=args.warmup_steps, model_name=args.model,
        )

    def evaluate_synthetic(self, engine: Engine, count: int, first_seed: int | None,
                           ) -> Evaluation:
        seed = HELD_OUT_FIRST_SEED if first_seed is None else first_seed
        results, summary = evaluate_synthetic(engine, count, seed)
        return Evaluation(results, summary, [_line(r) for r in results])

    def evaluate_site(self, engine: Engine, labelled: Iterable[LabelledVolume]) -> Evaluation:
        from ai_engines.ct_lung.lungs import isolate_lungs

        results = []
        for case in labelled:
            geometry = case.volume.geometry
            # Lung truth is not in a site's export: lungs are scored against the rule-based masks.
            lungs = isolate_lungs(case.volume.voxels, geometry.pixel_spacing,
                                  geometry.slice_spacing, geometry.row_direction[0] >= 0)
            study = StudyInput(study_uid="evaluation", series=(case.volume,))
            results.append(evaluate_case(engine, case.volume.series_uid, study, case.mask,
                                         lungs.left, lungs.right))
        return Evaluation(results, summarise(results), [_line(r) for r in results])


TRAINING = CtLungTraining()
