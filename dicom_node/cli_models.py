"""Engine and model subcommands of the node's CLI: ``engines``, ``models``, ``train-model``,
``evaluate-model``.

``dicom_node.cli`` calls :func:`register` with its subparsers; each subcommand sets
``func(args) -> int``.  ``train-model ENGINE`` and ``evaluate-model ENGINE`` are one CLI for
every engine: the common options are here, the engine supplies its dataset conversion,
synthetic cases, trainer, metrics and extra options through the training hook its spec names
(:class:`ai_engines.training.EngineTraining`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the engine and model subcommands to the node's argparse subparsers."""
    engines = subparsers.add_parser(
        "engines", help="list installed engines: version, acceptance, models and their cards")
    engines.add_argument("--model-dir", type=Path, default=None)
    engines.add_argument("--json", action="store_true")
    engines.set_defaults(func=_engines)

    for command, what in (("train-model", "train or fine-tune a model of ENGINE"),
                          ("evaluate-model", "evaluate ENGINE on held-out synthetic or site data")):
        p = subparsers.add_parser(
            command, help=what, add_help=False,
            description=f"{what}; `dicom-node {command} ENGINE --help` lists its options")
        p.add_argument("engine", metavar="ENGINE", help="engine name (dicom-node engines)")
        p.add_argument("options", nargs=argparse.REMAINDER, help="options of ENGINE")
        p.set_defaults(func=_train if command == "train-model" else _evaluate)

    listing = subparsers.add_parser("models", help="list installed models with version, checksum and card")
    listing.add_argument("--model-dir", type=Path, default=None)
    listing.add_argument("--verify", action="store_true", help="recompute each SHA-256")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_models)


def _training_hook(name: str):  # noqa: ANN202
    """The spec and training hook of engine ``name``; (None, message) when there is none."""
    from ai_engines.registry import EngineNotInstalled, get_spec, load_object

    try:
        spec = get_spec(name)
    except EngineNotInstalled as exc:
        return None, str(exc)
    if spec.training is None:
        return None, f"engine {name} declares no training hook (EngineSpec.training)"
    return (spec, load_object(spec.training)), ""


def _labelled(folder: Path, roi_pattern: str, modalities: tuple[str, ...]):  # noqa: ANN202
    from dicom_node.training_data import iter_ground_truth_cases

    return iter_ground_truth_cases(folder, roi_pattern, modalities)


def _train(args: argparse.Namespace) -> int:
    found, problem = _training_hook(args.engine)
    if found is None:
        print(problem, file=sys.stderr)
        return 2
    spec, hook = found
    parser = argparse.ArgumentParser(prog=f"dicom-node train-model {spec.name}",
                                     description=f"Train a model of {spec.title}.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--synthetic", type=int, metavar="N", help="train on N synthetic cases")
    source.add_argument("--data-dir", type=Path,
                        help="folder of image series with RTSTRUCT or SEG ground truth")
    parser.add_argument("--first-seed", type=int, default=0, help="first synthetic seed")
    parser.add_argument("--roi-pattern", default=None,
                        help=f"regular expression for the ground-truth ROI (default {hook.roi_pattern!r})")
    parser.add_argument("--out", type=Path, required=True, help="folder for weights + model card")
    parser.add_argument("--model", choices=hook.models, default=hook.models[0])
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-weights", type=Path, default=None, help="state_dict to fine-tune from")
    parser.add_argument("--version", default="1.0.0+site")
    parser.add_argument("--label", default="")
    hook.add_train_arguments(parser)
    hook.add_site_arguments(parser)
    options = parser.parse_args(args.options)
    own = hook.read_site_data(options.data_dir, options) if options.data_dir else None
    if options.synthetic is not None:
        cases = hook.synthetic_cases(options.synthetic, options.first_seed, options)
        data = f"{options.synthetic} synthetic cases of {spec.name} from seed {options.first_seed}"
    elif own is not None:
        cases = hook.site_cases(own)
        data = f"site data under {options.data_dir.name}"
    else:
        labelled = list(_labelled(options.data_dir, options.roi_pattern or hook.roi_pattern,
                                  spec.acceptance.modalities))
        if not labelled:
            print(f"no series with matching ground truth under {options.data_dir}", file=sys.stderr)
            return 2
        cases = hook.site_cases(labelled)
        data = f"site data: {len(labelled)} series with RTSTRUCT/SEG ground truth"
    card = hook.train(cases, options.out, options, data)
    print(f"wrote {options.out} model {card.name} {card.version} sha256 {card.sha256}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dataclasses import asdict, is_dataclass

    from ai_engines.registry import get_engine

    found, problem = _training_hook(args.engine)
    if found is None:
        print(problem, file=sys.stderr)
        return 2
    spec, hook = found
    parser = argparse.ArgumentParser(prog=f"dicom-node evaluate-model {spec.name}",
                                     description=f"Evaluate {spec.title}.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--synthetic", type=int, metavar="N", default=None,
                        help="N held-out synthetic cases (default 20)")
    source.add_argument("--data-dir", type=Path, default=None,
                        help="folder of image series with RTSTRUCT or SEG ground truth")
    parser.add_argument("--first-seed", type=int, default=None,
                        help="first held-out seed (default: the engine's)")
    parser.add_argument("--roi-pattern", default=None)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None,
                        help="write per-case results and summary here")
    hook.add_site_arguments(parser)
    options = parser.parse_args(args.options)
    engine = get_engine(spec.name, options.model_dir, options.device)
    own = hook.read_site_data(options.data_dir, options) if options.data_dir else None
    if own is not None:
        evaluation = hook.evaluate_site(engine, own)
    elif options.data_dir is not None:
        labelled = _labelled(options.data_dir, options.roi_pattern or hook.roi_pattern,
                             spec.acceptance.modalities)
        evaluation = hook.evaluate_site(engine, labelled)
    else:
        evaluation = hook.evaluate_synthetic(engine, options.synthetic or 20, options.first_seed)
    for line in evaluation.lines:
        print(line)
    print(json.dumps(evaluation.summary, indent=2))
    if options.json:
        cases = [asdict(c) if is_dataclass(c) and not isinstance(c, type) else c
                 for c in evaluation.cases]
        options.json.write_text(json.dumps({"engine": spec.name, "cases": cases,
                                            "summary": evaluation.summary}, indent=2, default=str))
    return 0


def _acceptance_lines(spec) -> list[str]:  # noqa: ANN001
    lines = []
    for req in spec.acceptance.series:
        needs = req.geometry
        what = [f"{'/'.join(req.modalities)}"]
        if req.description_pattern:
            what.append(f"description ~ {req.description_pattern!r}")
        what.append(f">= {needs.min_slices} slices")
        if needs.planar:
            what.append("planar")
        if needs.axial_only:
            what.append(f"axial (<= {needs.max_obliquity_deg:g} deg)")
        if needs.slice_thickness_mm:
            what.append(f"thickness {needs.slice_thickness_mm[0]:g}-{needs.slice_thickness_mm[1]:g} mm")
        if needs.pixel_spacing_mm:
            what.append(f"pixels {needs.pixel_spacing_mm[0]:g}-{needs.pixel_spacing_mm[1]:g} mm")
        if needs.lossless_only:
            what.append("lossless")
        lines.append(f"role {req.role}{' (optional)' if req.optional else ''}: {', '.join(what)}")
    if spec.acceptance.regions is not None:
        regions = spec.acceptance.regions
        lines.append(f"regions: >= {regions.min_count} RTSTRUCT/SEG region(s) named ~ {regions.name_pattern!r}")
    if spec.acceptance.co_registered or spec.acceptance.same_grid:
        lines.append("series co-registered" + (" on one grid" if spec.acceptance.same_grid else ""))
    return lines


def _engines(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ai_engines.models import ModelError, locate_model
    from ai_engines.registry import discover

    found = discover()
    rows: list[dict[str, Any]] = []
    for spec in found.specs.values():
        models: list[dict[str, Any]] = []
        for name in spec.models:
            try:
                files = locate_model(spec.name, name, args.model_dir)
                models.append({"name": name, "version": files.card.version,
                               "sha256": files.card.sha256, "source": files.source,
                               "card": asdict(files.card)})
            except ModelError as exc:
                models.append({"name": name, "error": str(exc)})
        rows.append({"name": spec.name, "version": spec.version, "title": spec.title,
                     "factory": spec.factory, "training": spec.training,
                     "acceptance": _acceptance_lines(spec), "models": models})
    if args.json:
        print(json.dumps({"engines": rows, "problems": found.problems}, indent=2))
    else:
        for row in rows:
            print(f"{row['name']} {row['version']}  {row['title']}")
            for line in row["acceptance"]:
                print(f"    {line}")
            for model in row["models"]:
                if "error" in model:
                    print(f"    model {model['name']}: {model['error']}")
                    continue
                card = model["card"]
                print(f"    model {model['name']} {model['version']} [{card['label'] or '-'}] "
                      f"{model['source']} sha256 {model['sha256']}")
                print(f"        {card['intended_use']}")
            print(f"    training: {'dicom-node train-model ' + row['name'] if row['training'] else 'none'}")
        if not rows:
            print("no engines installed")
        for name, reason in found.problems.items():
            print(f"{name}: NOT USABLE: {reason}")
    return 1 if found.problems else 0


def _models(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ai_engines.models import ModelIntegrityError, list_models, verify

    rows = []
    status = 0
    for files in list_models(args.model_dir):
        row: dict[str, Any] = {
            "name": files.card.name, "version": files.card.version, "sha256": files.card.sha256,
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
