"""The MR glioma engine's hook for ``dicom-node train-model mr_glioma`` and
``dicom-node evaluate-model mr_glioma`` (named by ``ai_engines.mr_glioma.spec.SPEC.training``).

Imports torch and the synthetic brain generator; the runtime engine never imports it.

A site's ground truth is one labelled MR series per case (the node reads a series and its
RTSTRUCT/SEG into a :class:`ai_engines.training.LabelledVolume`).  The series' role (T1, T1c,
T2, FLAIR) is identified from its headers as the engine does; the ROI names decide the class
of the mask: enhancing (``enhanc``, ``ET``) -> enhancing tumour, oedema (``oedema``/``edema``)
-> oedema, necrosis/core (``necro``, ``core``, ``NCR``) -> necrotic/non-enhancing core; any
other tumour name (``GTV``, ``tumour``) -> the enhancing class on T1c and the
core class on other sequences.  Evaluation scores the engine's whole tumour (and enhancing
tumour, where the ROI says so) against the mask.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ai_engines.engine import Engine
from ai_engines.models import ModelCard, sha256_of
from ai_engines.mr_glioma import GRADE_MODEL_NAME, MODEL_NAME, T1C_MODEL_NAME
from ai_engines.mr_glioma.evaluate import FIRST_HELD_OUT_SEED, dice, evaluate_synthetic, masks_of
from ai_engines.mr_glioma.sequences import identify
from ai_engines.mr_glioma.train import (
    TrainingCase,
    case_from_series,
    real_negative_cases,
    synthetic_case,
    synthetic_recipe,
    train,
)
from ai_engines.training import EngineTraining, Evaluation, LabelledVolume
from ai_engines.volume import StudyInput

_ENHANCING = re.compile(r"enhanc|\bet\b", re.IGNORECASE)
_OEDEMA = re.compile(r"o?edema|\bed\b|flair", re.IGNORECASE)
_CORE = re.compile(r"necro|core|\bncr\b|\bnet\b", re.IGNORECASE)


def label_class(roi_names: tuple[str, ...], role: str) -> int:
    """The engine's class (1 core, 2 oedema, 3 enhancing) of a site mask named ``roi_names``."""
    names = " ".join(roi_names)
    if _ENHANCING.search(names):
        return 3
    if _OEDEMA.search(names):
        return 2
    if _CORE.search(names):
        return 1
    return 3 if role == "T1c" else 1


def _role(case: LabelledVolume) -> str | None:
    identification = identify(case.volume)
    return identification.role


class MrGliomaTraining(EngineTraining):
    """The glioma U-Net (and the grade head on its encoder); the T1c-only U-Net."""

    models = (MODEL_NAME, GRADE_MODEL_NAME, T1C_MODEL_NAME)
    roi_pattern = r"(gtv|tumou?r|glioma|enhanc|necro|o?edema|core|lesion)"

    def add_train_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--grade-minutes", type=float, default=3.0,
                            help="minutes for the grade head on the trained encoder")
        parser.add_argument("--max-steps", type=int, default=None)
        parser.add_argument("--batch-size", type=int, default=16)
        parser.add_argument("--lr", type=float, default=2e-3)
        parser.add_argument("--negative-volume", type=Path, action="append", default=[],
                            help=f"--model {T1C_MODEL_NAME}: a real tumour-free T1 head image (NIfTI/NRRD) whose "
                                 "slabs are added as hard negatives (repeatable)")
        parser.add_argument("--negative-slabs", type=int, default=6, help="slabs per --negative-volume")
        parser.add_argument("--encoder-weights", type=Path, default=None,
                            help=f"--model {GRADE_MODEL_NAME}: the U-Net state_dict whose encoder the head "
                                 "sits on (default: the installed one)")

    def synthetic_cases(self, count: int, first_seed: int, args: argparse.Namespace) -> Iterator[TrainingCase]:
        negatives = list(getattr(args, "negative_volume", []) or [])
        if negatives and args.model != T1C_MODEL_NAME:
            raise SystemExit(f"--negative-volume is for --model {T1C_MODEL_NAME} (its slabs hold T1 only)")
        missing = [str(path) for path in negatives if not path.is_file()]
        if missing:
            raise SystemExit(f"--negative-volume: no such file: {', '.join(missing)}")
        return self._cases(count, first_seed, negatives, args)

    @staticmethod
    def _cases(count: int, first_seed: int, negatives: list[Path], args: argparse.Namespace) -> Iterator[TrainingCase]:
        yield from (synthetic_case(seed) for seed in range(first_seed, first_seed + count))
        for path in negatives:
            yield from real_negative_cases(path, args.negative_slabs, args.seed)

    def site_cases(self, labelled: Iterable[LabelledVolume]) -> Iterator[TrainingCase]:
        for case in labelled:
            role = _role(case)
            if role is None:
                print(f"skipped series {case.volume.series_uid}: sequence not identified", file=sys.stderr)
                continue
            labels = np.where(case.mask, label_class(case.roi_names, role), 0).astype(np.uint8)
            yield case_from_series({role: case.volume}, labels, role, name=f"{case.source}:{case.volume.series_uid}")

    def train(self, cases: Iterable[TrainingCase], out_dir: Path, args: argparse.Namespace,
              training_data: str) -> ModelCard:
        if args.synthetic is not None:
            training_data = synthetic_recipe(args.synthetic, args.first_seed, args.threads, args.seed, args.model)
            for path in getattr(args, "negative_volume", []) or []:
                training_data += (f"; hard negatives: {args.negative_slabs} tumour-free slabs of the real T1 head "
                                  f"{path.name} (sha256 {sha256_of(path)}), acquired like the synthetic slabs, "
                                  "used as T1c, every label 0")
        command = "dicom-node " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["train-model"] else \
            f"dicom-node train-model mr_glioma ({training_data})"
        return train(cases, out_dir, model_name=args.model, minutes=args.minutes, grade_minutes=args.grade_minutes,
                     max_steps=args.max_steps, lr=args.lr, batch=args.batch_size, seed=args.seed,
                     threads=args.threads, init_weights=args.init_weights, encoder_weights=args.encoder_weights,
                     version=args.version, label=args.label or "SITE", training_data=training_data,
                     command=command)

    def evaluate_synthetic(self, engine: Engine, count: int, first_seed: int | None) -> Evaluation:
        report = evaluate_synthetic(engine, count, FIRST_HELD_OUT_SEED if first_seed is None else first_seed)
        lines = [f"seed {c['seed']} {c['kind']:5} {c['mode']:5}: WT {c['WT']} TC {c['TC']} ET {c['ET']}"
                 f"{' declined ' + c['declined'] if c['declined'] else ''} ({c['seconds']} s)"
                 for c in report["cases"]]
        lines += [f"{mode}: whole tumour Dice {s['WT']}, tumour core {s['TC']}, enhancing {s['ET']} (n={s['n']})"
                  for mode, s in report["summary"].items()]
        return Evaluation(report["cases"], report["summary"], lines)

    def evaluate_site(self, engine: Engine, labelled: Iterable[LabelledVolume]) -> Evaluation:
        rows = []
        for case in labelled:
            role = _role(case)
            findings = engine.run(StudyInput(study_uid="evaluation", series=(case.volume,)))
            row: dict = {"series": case.volume.series_uid, "role": role, "roi": list(case.roi_names),
                         "declined": findings.decline.code if findings.decline else None}
            if not findings.declined:
                found = masks_of(findings, case.mask.shape)
                truth = case.mask.astype(bool)
                row["WT"] = dice(found["WT"], truth)
                if label_class(case.roi_names, role or "") == 3:
                    row["ET"] = dice(found["ET"], truth)
            rows.append(row)
        summary: dict[str, float] = {"cases": float(len(rows)),
                                     "declined": float(sum(r["declined"] is not None for r in rows))}
        for region in ("WT", "ET"):
            values = [r[region] for r in rows if r.get(region) is not None]
            if values:
                summary[region] = round(float(np.mean(values)), 3)
        lines = [f"{r['series']} ({r['role']}, {'/'.join(r['roi'])}): "
                 + (f"declined {r['declined']}" if r["declined"] else
                    f"WT Dice {r.get('WT')}" + (f", ET Dice {r['ET']}" if "ET" in r else ""))
                 for r in rows]
        return Evaluation(rows, summary, lines)


TRAINING = MrGliomaTraining()
