"""Model subcommands of the node's CLI: ``train-model``, ``evaluate-model``, ``models``.

``dicom_node.cli`` calls :func:`register` with its subparsers; each subcommand sets
``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ai_engines.ct_lung import EXTENT_MODEL_NAME, MODEL_NAME


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the model subcommands to the node's argparse subparsers."""
    train = subparsers.add_parser(
        "train-model", help="train or fine-tune the CT lung tumour model",
        description="Train from synthetic cases or a folder of CT series with RTSTRUCT/SEG ground truth.",
    )
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--synthetic", type=int, metavar="N", help="train on N synthetic cases")
    source.add_argument("--data-dir", type=Path, help="folder of CT series with RTSTRUCT or SEG")
    train.add_argument("--roi-pattern", default=None, help="regular expression for the tumour ROI name")
    train.add_argument("--out", type=Path, required=True, help="folder for weights + model card")
    train.add_argument("--model", choices=(MODEL_NAME, EXTENT_MODEL_NAME), default=MODEL_NAME,
                       help="the detector, or the extent model that delineates what the detector found "
                            "(a site folder needs both to use its own extent model)")
    train.add_argument("--minutes", type=float, default=8.0)
    train.add_argument("--threads", type=int, default=1)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--init-weights", type=Path, default=None, help="state_dict to fine-tune from")
    train.add_argument("--version", default="1.0.0+site")
    train.add_argument("--label", default="")
    train.set_defaults(func=_train)

    evaluate = subparsers.add_parser("evaluate-model", help="evaluate the CT lung engine (Dice, HD95, detection)")
    evaluate.add_argument("--synthetic", type=int, metavar="N", default=None, help="N held-out synthetic cases")
    evaluate.add_argument("--data-dir", type=Path, default=None, help="folder of CT series with RTSTRUCT or SEG")
    evaluate.add_argument("--roi-pattern", default=None)
    evaluate.add_argument("--model-dir", type=Path, default=None)
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--json", type=Path, default=None, help="write per-case results and summary here")
    evaluate.set_defaults(func=_evaluate)

    listing = subparsers.add_parser("models", help="list installed models with version, checksum and card")
    listing.add_argument("--model-dir", type=Path, default=None)
    listing.add_argument("--verify", action="store_true", help="recompute each SHA-256")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_models)


def _train(args: argparse.Namespace) -> int:
    from ai_engines.ct_lung.train import synthetic_training_cases, train

    if args.synthetic is not None:
        cases = list(synthetic_training_cases(args.synthetic))
        data = "synthetic chest CTs (ai_engines.ct_lung.synthetic)"
    else:
        from dicom_node.training_data import DEFAULT_ROI_PATTERN, training_cases

        cases = list(training_cases(args.data_dir, args.roi_pattern or DEFAULT_ROI_PATTERN))
        data = f"site data: {len(cases)} CT series with RTSTRUCT/SEG ground truth"
        if not cases:
            print(f"no CT series with matching ground truth under {args.data_dir}")
            return 2
    card = train(
        cases, args.out, minutes=args.minutes, threads=args.threads, seed=args.seed,
        init_weights=args.init_weights, version=args.version, label=args.label, training_data=data,
        model_name=args.model,
    )
    print(f"wrote {args.out} model {card.name} {card.version} sha256 {card.sha256}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ai_engines.ct_lung.evaluate import evaluate_case, evaluate_synthetic, summarise
    from ai_engines.registry import get_engine
    from ai_engines.volume import StudyInput

    engine = get_engine("ct_lung", args.model_dir, args.device)
    if args.data_dir is not None:
        from dicom_node.training_data import DEFAULT_ROI_PATTERN, iter_ground_truth_cases

        results = []
        for case in iter_ground_truth_cases(args.data_dir, args.roi_pattern or DEFAULT_ROI_PATTERN):
            from ai_engines.ct_lung.lungs import isolate_lungs

            geometry = case.volume.geometry
            # Lung truth is not in the export: score lungs against the rule-based masks.
            lungs = isolate_lungs(case.volume.voxels, geometry.pixel_spacing, geometry.slice_spacing, geometry.row_direction[0] >= 0)
            study = StudyInput(study_uid="evaluation", series=(case.volume,))
            results.append(evaluate_case(engine, case.volume.series_uid, study, case.mask, lungs.left, lungs.right))
        summary = summarise(results)
    else:
        results, summary = evaluate_synthetic(engine, args.synthetic or 20)
    for r in results:
        print(f"{r.case}: dice {r.dice:.3f} hd95 {r.hd95_mm:.2f} mm surface-dice {r.surface_dice:.3f} lesions {r.lesions}")
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"cases": [asdict(r) for r in results], "summary": summary}, indent=2, default=str))
    return 0


def _models(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ai_engines.models import ModelIntegrityError, list_models, verify

    rows = []
    status = 0
    for files in list_models(args.model_dir):
        row = {"name": files.card.name, "version": files.card.version, "sha256": files.card.sha256,
               "source": files.source, "weights": str(files.weights), "label": files.card.label,
               "research_use_only": files.card.research_use_only}
        if args.verify:
            try:
                verify(files)
                row["verified"] = True
            except ModelIntegrityError as exc:
                row["verified"] = False
                row["error"] = str(exc)
                status = 1
        row["card"] = asdict(files.card)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            flag = "" if "verified" not in row else (" verified" if row["verified"] else " CHECKSUM MISMATCH")
            print(f"{row['name']} {row['version']} [{row['label'] or '-'}] {row['source']} sha256 {row['sha256']}{flag}")
            print(f"    {row['card']['intended_use']}")
            if row["card"]["measured_accuracy"]:
                print(f"    measured: {json.dumps(row['card']['measured_accuracy'])}")
    return status
