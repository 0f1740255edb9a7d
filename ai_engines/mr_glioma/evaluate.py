"""Evaluate the MR glioma engine: held-out synthetic studies and the real brain2 case.

Synthetic studies (seeds disjoint from training: 100000 onwards) are run through the whole
engine three ways: all four sequences, T1c only, FLAIR only; Dice of whole tumour (1|2|3),
tumour core (1|3) and enhancing tumour (3) on the reference series' grid.  The real case
``brain2`` (T1c, 6.5 mm slices, enhancing-tumour label) is read from NRRD with its LPS
geometry; enhancing and whole-tumour Dice against its label and the volume found outside the
labelled lesion (a false lesion elsewhere) are reported.

Usage::

    python -m ai_engines.mr_glioma.evaluate --cases 6 --brain2 /path/to/real-dev
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813
from scipy import ndimage

from ai_engines.engine import Engine
from ai_engines.findings import Findings
from ai_engines.mr_glioma.preprocess import geometry_of
from ai_engines.mr_glioma.synthetic import SyntheticBrain, acquire, labels_on, synthetic_brain
from ai_engines.volume import AcquisitionFacts, SeriesVolume, SliceReference, StudyInput

FIRST_HELD_OUT_SEED = 100_000
MODES = {"all": ("T1", "T1c", "T2", "FLAIR"), "T1c": ("T1c",), "FLAIR": ("FLAIR",)}


def synthetic_study(brain: SyntheticBrain, roles: tuple[str, ...], seed: int, *, thickness: float | None = None,
                    shifts: dict[str, tuple[float, float, float]] | None = None) -> StudyInput:
    """The sequences ``roles`` of ``brain`` as series of one study (vendor-like headers)."""
    rng = np.random.default_rng(seed + 9_000_000)
    series = []
    for n, role in enumerate(roles):
        t = thickness or float(rng.choice([1.0, 3.0, 5.0, 6.5]))
        spacing = float(rng.uniform(0.5, 1.0))
        series.append(acquire(
            brain, role, slice_thickness=t, pixel_spacing=spacing, seed=seed * 10 + n,
            series_uid=f"2.25.{seed}.{n + 1}", shift_mm=(shifts or {}).get(role, (0.0, 0.0, 0.0)),
        ))
    return StudyInput(study_uid=f"2.25.{seed}", series=tuple(series))


def series_from_image(image: sitk.Image, series_uid: str, description: str, contrast_agent: str | None = None) -> SeriesVolume:
    """A SimpleITK image (e.g. a NRRD in LPS) as an MR :class:`SeriesVolume`."""
    voxels = sitk.GetArrayFromImage(image)
    facts = AcquisitionFacts(modality="MR", series_description=description, contrast_agent=contrast_agent,
                             image_type=("ORIGINAL", "PRIMARY"))
    slices = tuple(SliceReference("1.2.840.10008.5.1.4.1.1.4", f"{series_uid}.{k + 1}") for k in range(voxels.shape[0]))
    return SeriesVolume(series_uid, "2.25.1", voxels, geometry_of(image), slices, facts)


def masks_of(findings: Findings, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Whole tumour, core and enhancing masks from the findings' segments."""
    by_label = {s.label: s.mask for s in findings.segments}
    empty = np.zeros(shape, bool)
    enhancing = by_label.get("Enhancing", empty)
    core = by_label.get("GTV", empty)
    whole = core | by_label.get("Edema", empty)
    return {"WT": whole, "TC": core, "ET": enhancing}


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    """Dice of two masks; None when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else 2.0 * int((a & b).sum()) / total


def evaluate_synthetic(engine: Engine, cases: int, first_seed: int = FIRST_HELD_OUT_SEED) -> dict:
    """Dice per region and mode over ``cases`` held-out synthetic studies."""
    results: dict[str, dict[str, list]] = {mode: {"WT": [], "TC": [], "ET": [], "seconds": []} for mode in MODES}
    per_case = []
    for seed in range(first_seed, first_seed + cases):
        brain = synthetic_brain(seed, kind=("hgg", "solid", "lgg", "hgg")[seed % 4])
        for mode, roles in MODES.items():
            study = synthetic_study(brain, roles, seed)
            t = time.perf_counter()
            findings = engine.run(study)
            seconds = time.perf_counter() - t
            reference = next(s for s in study.series if s.series_uid == findings.source_series_uid)
            truth = labels_on(brain, reference)
            found = masks_of(findings, truth.shape)
            truths = {"WT": truth > 0, "TC": (truth == 1) | (truth == 3), "ET": truth == 3}
            row = {"seed": seed, "kind": brain.kind, "mode": mode, "seconds": round(seconds, 1),
                   "declined": findings.decline.code if findings.decline else None}
            if findings.decline:
                row["reason"] = findings.decline.reason[:300]
            for region in ("WT", "TC", "ET"):
                d = dice(found[region], truths[region])
                row[region] = None if d is None else round(d, 3)
                if d is not None:
                    results[mode][region].append(d)
            results[mode]["seconds"].append(seconds)
            per_case.append(row)
            print(json.dumps(row), flush=True)
    summary = {
        mode: {region: (round(float(np.mean(v)), 3) if v else None) for region, v in values.items()}
        | {"n": len(values["seconds"])}
        for mode, values in results.items()
    }
    return {"summary": summary, "cases": per_case}


def brain2_case(folder: Path) -> tuple[sitk.Image, SeriesVolume, sitk.Image]:
    """The real T1c case (``brain2_image.nrrd``, ``brain2_label.nrrd`` in ``folder``): its image,
    the series as a scanner sends it (named and flagged as post-contrast), and its label image."""
    image = sitk.ReadImage(str(folder / "brain2_image.nrrd"))
    volume = series_from_image(image, "2.25.2002", "AX T1 POST GD", contrast_agent="GADOLINIUM")
    return image, volume, sitk.ReadImage(str(folder / "brain2_label.nrrd"))


def evaluate_brain2(engine: Engine, folder: Path) -> dict:
    """The real T1c case: Dice of the enhancing tumour and anything found away from the lesion."""
    image, volume, label_image = brain2_case(folder)
    label = sitk.GetArrayFromImage(label_image) > 0
    t = time.perf_counter()
    findings = engine.run(StudyInput("2.25.2000", (volume,)))
    seconds = time.perf_counter() - t
    if findings.decline is not None:
        return {"declined": findings.decline.code, "reason": findings.decline.reason}
    found = masks_of(findings, label.shape)
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    near = ndimage.binary_dilation(label, structure=np.ones((3, 5, 5), bool), iterations=3)  # ~12 mm in-plane
    far = found["WT"] & ~near
    components, n_far = ndimage.label(far)
    return {
        "enhancing_dice": dice(found["ET"], label),
        "gtv_dice": dice(found["TC"], label),
        "whole_tumour_dice": dice(found["WT"], label),
        "label_ml": round(float(label.sum()) * voxel_ml, 2),
        "found_whole_tumour_ml": round(float(found["WT"].sum()) * voxel_ml, 2),
        "found_enhancing_ml": round(float(found["ET"].sum()) * voxel_ml, 2),
        "false_lesion_ml_away_from_label": round(float(far.sum()) * voxel_ml, 2),
        "false_lesion_components": int(n_far),
        "seconds": round(seconds, 1),
        "notes": list(findings.notes),
    }


def probe_brain2(engine, folder: Path) -> dict:  # noqa: ANN001  (an MrGliomaEngine; no runtime import here)
    """Where brain2's lesion is lost: network, threshold or lesion checks.

    On the engine's own 1 mm working grid: the share of the label inside the brain mask, its
    mean depth below the mask surface (the depth check's measure), the network's tumour
    probability over it, and the whole-tumour components before the checks (size, core,
    mean probability, mean depth, touching the label or not).
    """
    from ai_engines.mr_glioma.engine import keep_lesions
    from ai_engines.mr_glioma.preprocess import prepare, resample

    _, volume, label_image = brain2_case(folder)
    prepared = prepare({"T1c": volume}, "T1c")
    network = engine.network_for({"T1c"})
    probabilities = engine._probabilities(prepared, network).astype(np.float32)
    label = sitk.GetArrayFromImage(resample(sitk.Cast(label_image, sitk.sitkFloat32), prepared.grid)) > 0.5
    tumour = 1.0 - probabilities[0]
    depth = ndimage.distance_transform_edt(prepared.brain)
    labels = np.argmax(probabilities, axis=0)
    labels[~prepared.brain] = 0
    components, n = ndimage.label(labels > 0, structure=np.ones((3, 3, 3), bool))
    near = ndimage.binary_dilation(label, iterations=10)
    rows = []
    for i in range(1, n + 1):
        part = components == i
        if part.sum() >= 50:  # 0.05 ml
            rows.append({"ml": round(float(part.sum()) / 1000, 2), "touches_label": bool((part & near).any()),
                         "core_ml": round(float((part & ((labels == 1) | (labels == 3))).sum()) / 1000, 2),
                         "mean_probability": round(float(tumour[part].mean()), 2),
                         "mean_depth_mm": round(float(depth[part].mean()), 1)})
    kept, count = keep_lesions(probabilities, prepared.brain)
    return {
        "network": f"{network.files.card.name} {network.files.card.version}",
        "label_ml": round(float(label.sum()) / 1000, 2),
        "label_inside_brain_mask": round(float((label & prepared.brain).sum()) / max(1, int(label.sum())), 3),
        "label_mean_depth_mm": round(float(depth[label].mean()), 1),
        "label_mean_tumour_probability": round(float(tumour[label].mean()), 3),
        "label_share_above_0.5": round(float((tumour[label] > 0.5).mean()), 3),
        "components_before_checks": sorted(rows, key=lambda r: -r["ml"])[:10],
        "kept_lesions": count,
        "kept_ml_touching_label": round(float(((kept > 0) & near).sum()) / 1000, 2),
        "kept_ml_elsewhere": round(float(((kept > 0) & ~near).sum()) / 1000, 2),
    }


def main(argv: list[str] | None = None) -> int:
    from ai_engines.mr_glioma.engine import MrGliomaEngine

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--first-seed", type=int, default=FIRST_HELD_OUT_SEED)
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--brain2", type=Path, help="folder holding brain2_image.nrrd and brain2_label.nrrd")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--probe", action="store_true",
                        help="with --brain2: where its lesion is lost (probabilities, depth, components before the "
                             "checks) instead of the end-to-end figures")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    engine = MrGliomaEngine(model_dir=args.model_dir, device="cpu", threads=args.threads)
    report: dict = {"engine": engine.identity().version}
    if args.brain2 and args.probe:
        report["brain2_probe"] = probe_brain2(engine, args.brain2)
        print(json.dumps(report["brain2_probe"]), flush=True)
    elif args.brain2:
        report["brain2"] = evaluate_brain2(engine, args.brain2)
        print(json.dumps(report["brain2"]), flush=True)
    if args.cases:
        report["synthetic"] = evaluate_synthetic(engine, args.cases, args.first_seed)
        print(json.dumps(report["synthetic"]["summary"]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
