"""Evaluation as in the publication: Dice, 95th-percentile Hausdorff distance (mm), surface Dice
at a tolerance (mm) and lung-wise detection, per case and summarised.

Usage::

    dicom-node evaluate-model ct_lung --synthetic 20 --first-seed 100000 [--model-dir DIR]

A real CT stored as NRRD with its label (``real-dev/lung1``) is read by :func:`nrrd_case`;
``tests/ai_engines/ct_lung/test_real_ct.py`` scores it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ai_engines.volume import (
    AcquisitionFacts,
    SeriesVolume,
    SliceReference,
    StudyInput,
    VolumeGeometry,
)

HELD_OUT_FIRST_SEED = 100_000  # training uses seeds below this
SURFACE_TOLERANCE_MM = 2.0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient; 1.0 when both masks are empty."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def _surfaces_and_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]):
    """Surface voxels of a and b and each surface's distance (mm) to the other, in a joint box."""
    both = a | b
    idx = np.argwhere(both)
    lo, hi = np.maximum(idx.min(0) - 2, 0), idx.max(0) + 3
    box = tuple(slice(int(lo_), int(hi_)) for lo_, hi_ in zip(lo, hi, strict=True))
    a, b = a[box], b[box]
    sa = a & ~ndimage.binary_erosion(a, border_value=0)
    sb = b & ~ndimage.binary_erosion(b, border_value=0)
    da = ndimage.distance_transform_edt(~sb, sampling=spacing)[sa]  # a's surface to b's
    db = ndimage.distance_transform_edt(~sa, sampling=spacing)[sb]
    return da, db


def hd95(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm (max of both directions); NaN if either is empty."""
    if not a.any() or not b.any():
        return float("nan")
    da, db = _surfaces_and_distances(a, b, spacing)
    return float(max(np.percentile(da, 95), np.percentile(db, 95)))


def surface_dice(a: np.ndarray, b: np.ndarray, spacing: Sequence[float], tolerance_mm: float = SURFACE_TOLERANCE_MM) -> float:
    """Fraction of both surfaces within ``tolerance_mm`` of the other (Nikolov et al.)."""
    if not a.any() and not b.any():
        return 1.0
    if not a.any() or not b.any():
        return 0.0
    da, db = _surfaces_and_distances(a, b, spacing)
    return float(((da <= tolerance_mm).sum() + (db <= tolerance_mm).sum()) / (len(da) + len(db)))


def lungwise_detection(truth: np.ndarray, predicted: np.ndarray, lung_left: np.ndarray, lung_right: np.ndarray) -> dict[str, tuple[bool, bool]]:
    """Per lung: (tumour in truth, tumour predicted), sides split midway between the lungs."""
    mid = (np.nonzero(lung_left.any(axis=(0, 1)))[0].mean() + np.nonzero(lung_right.any(axis=(0, 1)))[0].mean()) / 2
    left_is_high = np.nonzero(lung_left.any(axis=(0, 1)))[0].mean() > mid
    cols = np.arange(truth.shape[2])
    high = np.broadcast_to(cols >= mid, truth.shape)
    sides = {"L": high if left_is_high else ~high, "R": ~high if left_is_high else high}
    return {side: (bool((truth & where).any()), bool((predicted & where).any())) for side, where in sides.items()}


@dataclass(frozen=True)
class CaseResult:
    case: str
    has_tumour: bool
    dice: float
    hd95_mm: float
    surface_dice: float
    lung_dice_left: float
    lung_dice_right: float
    detection: dict[str, tuple[bool, bool]]
    lesions: int
    truth_ml: float
    predicted_ml: float
    seconds: float
    declined: str | None = None
    # Dice of only the predicted lesions that overlap the truth: segmentation quality apart
    # from false-positive lesions elsewhere (those count in the lung-wise specificity).
    dice_matched: float = 0.0
    false_positive_lesions: int = 0


def evaluate_case(engine, name: str, study: StudyInput, truth: np.ndarray, lung_left: np.ndarray, lung_right: np.ndarray) -> CaseResult:
    """Run ``engine`` on one study and score it against ground-truth masks."""
    t = time.perf_counter()
    findings = engine.run(study)
    seconds = time.perf_counter() - t
    volume = study.series[0]
    spacing = volume.geometry.spacing_zyx
    voxel_ml = float(np.prod(spacing)) / 1000
    if findings.declined:
        empty = np.zeros_like(truth)
        return CaseResult(name, bool(truth.any()), 0.0, float("nan"), 0.0, 0.0, 0.0,
                          lungwise_detection(truth, empty, lung_left, lung_right), 0,
                          float(truth.sum()) * voxel_ml, 0.0, seconds, findings.decline.code)
    predicted = np.zeros_like(truth)
    matched = np.zeros_like(truth)
    masks = {s.label: s.mask for s in findings.segments}
    lesions = false_positives = 0
    for segment in findings.segments:
        if segment.rt_interpreted_type == "GTV":
            predicted |= segment.mask
            lesions += 1
            if (segment.mask & truth).any():
                matched |= segment.mask
            else:
                false_positives += 1
    return CaseResult(
        case=name,
        has_tumour=bool(truth.any()),
        dice=dice(predicted, truth),
        hd95_mm=hd95(predicted, truth, spacing),
        surface_dice=surface_dice(predicted, truth, spacing),
        lung_dice_left=dice(masks["Lung_L"], lung_left),
        lung_dice_right=dice(masks["Lung_R"], lung_right),
        detection=lungwise_detection(truth, predicted, lung_left, lung_right),
        lesions=lesions,
        truth_ml=float(truth.sum()) * voxel_ml,
        predicted_ml=float(predicted.sum()) * voxel_ml,
        seconds=seconds,
        dice_matched=dice(matched, truth),
        false_positive_lesions=false_positives,
    )


def summarise(results: Iterable[CaseResult]) -> dict[str, float]:
    """Mean/median Dice, HD95 and surface Dice over cases with tumour; lung-wise sensitivity/specificity."""
    results = list(results)
    with_tumour = [r for r in results if r.has_tumour]
    tp = fn = fp = tn = 0
    for r in results:
        for truth, pred in r.detection.values():
            tp += truth and pred
            fn += truth and not pred
            fp += pred and not truth
            tn += not truth and not pred
    dices = np.array([r.dice for r in with_tumour]) if with_tumour else np.array([np.nan])
    hds = np.array([r.hd95_mm for r in with_tumour]) if with_tumour else np.array([np.nan])
    sds = np.array([r.surface_dice for r in with_tumour]) if with_tumour else np.array([np.nan])
    lung = np.array([[r.lung_dice_left, r.lung_dice_right] for r in results])
    matched = np.array([r.dice_matched for r in with_tumour]) if with_tumour else np.array([np.nan])
    return {
        "cases": len(results),
        "cases_with_tumour": len(with_tumour),
        "dice_mean": float(np.mean(dices)),
        "dice_median": float(np.median(dices)),
        "dice_sd": float(np.std(dices)),
        "dice_matched_mean": float(np.mean(matched)),
        "dice_matched_median": float(np.median(matched)),
        "false_positive_lesions_per_case": float(np.mean([r.false_positive_lesions for r in results])),
        "hd95_mm_median": float(np.nanmedian(hds)) if np.isfinite(hds).any() else float("nan"),
        "surface_dice_mean": float(np.mean(sds)),
        "lung_dice_mean": float(np.mean(lung)),
        "lungwise_sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "lungwise_specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "seconds_mean": float(np.mean([r.seconds for r in results])),
    }


def evaluation_slices(seed: int) -> tuple[int, float]:
    """(n_slices, slice thickness) of a held-out case: about 24 cm of chest."""
    rng = np.random.default_rng(seed + 5_000_000)
    thickness = float(rng.choice([1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0]))
    return int(np.clip(240 / thickness, 48, 160)), thickness


def evaluate_synthetic(engine, count: int, first_seed: int = HELD_OUT_FIRST_SEED, progress: bool = True) -> tuple[list[CaseResult], dict[str, float]]:
    """Evaluate on held-out synthetic cases (seeds never used for training)."""
    from tqdm import tqdm

    from ai_engines.ct_lung.synthetic import synthetic_chest_ct

    results = []
    for seed in tqdm(range(first_seed, first_seed + count), desc="evaluating", disable=not progress):
        n_slices, thickness = evaluation_slices(seed)
        case = synthetic_chest_ct(seed, n_slices=n_slices, slice_thickness=thickness)
        volume = case.to_volume()
        study = StudyInput(study_uid=f"2.25.{seed}", series=(volume,))
        results.append(evaluate_case(engine, f"synthetic-{seed}", study, case.tumour, case.lung_left, case.lung_right))
    return results, summarise(results)


def nrrd_case(image_path: Path, label_path: Path | None = None, series_uid: str = "2.25.1") -> tuple[SeriesVolume, np.ndarray | None]:
    """A CT stored as NRRD (HU, LPS) as the node would hand it to the engine, and its label.

    Geometry from the header: voxel (k, j, i) lies at origin + i*sx*d0 + j*sy*d1 + k*sz*d2
    (ITK's direction columns d0, d1, d2), exactly as a DICOM series with
    ImageOrientationPatient = (d0, d1) and ImagePositionPatient = origin + k*sz*d2 per slice.
    """
    import SimpleITK as sitk  # noqa: N813

    image = sitk.ReadImage(str(image_path))
    if image.GetDimension() != 3:
        raise ValueError(f"{image_path.name}: not a 3-D image")
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    spacing = image.GetSpacing()
    origin = np.asarray(image.GetOrigin(), float)
    voxels = sitk.GetArrayFromImage(image).astype(np.float32)  # (slice, row, column)
    n = voxels.shape[0]
    origins = origin[None, :] + np.arange(n)[:, None] * spacing[2] * direction[:, 2][None, :]
    geometry = VolumeGeometry(
        slice_origins=origins, row_direction=tuple(direction[:, 0]), column_direction=tuple(direction[:, 1]),
        pixel_spacing=(float(spacing[1]), float(spacing[0])), slice_thickness=float(spacing[2]),
    )
    slices = tuple(SliceReference("1.2.840.10008.5.1.4.1.1.2", f"{series_uid}.{k + 1}") for k in range(n))
    volume = SeriesVolume(series_uid, f"{series_uid}.0", voxels, geometry, slices, AcquisitionFacts(modality="CT"))
    label = None
    if label_path is not None:
        label_image = sitk.ReadImage(str(label_path))
        if label_image.GetSize() != image.GetSize():
            raise ValueError(f"{label_path.name}: grid differs from the image's")
        label = sitk.GetArrayFromImage(label_image) > 0
    return volume, label


