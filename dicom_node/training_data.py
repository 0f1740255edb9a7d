"""A site's CT series with RTSTRUCT or SEG ground truth, read into training arrays.

Engines train on their own arrays (their training hook turns
:class:`ai_engines.training.LabelledVolume` objects into them); this module does the DICOM
side: group a folder's files by series, build each volume with
:func:`dicom_node.volumes.build_volume`, and rasterise the matching ROIs of an RTSTRUCT or
segments of a SEG with :mod:`dicom_node.regions`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from ai_engines.training import LabelledVolume
from ai_engines.volume import SeriesVolume
from dicom_node.regions import (
    RTSTRUCT_STORAGE,
    SEG_STORAGE,
    RegionError,
    referenced_series,
    rtstruct_masks,
    seg_masks,
)
from dicom_node.volumes import VolumeError, build_volume

__all__ = ["DEFAULT_ROI_PATTERN", "RTSTRUCT_STORAGE", "SEG_STORAGE", "GroundTruthCase",
           "GroundTruthError", "iter_ground_truth_cases", "rasterise_rtstruct", "seg_to_mask"]

DEFAULT_ROI_PATTERN = r"^(gtv|tumou?r|lesion|neoplasm)"


class GroundTruthError(ValueError):
    """A ground-truth object cannot be turned into a mask on its series."""


# A series and its ground-truth mask; engines' training hooks read these.
GroundTruthCase = LabelledVolume


def rasterise_rtstruct(rtstruct: Dataset, volume: SeriesVolume, roi_pattern: str = DEFAULT_ROI_PATTERN) -> tuple[np.ndarray, tuple[str, ...]]:
    """Union of the ROIs whose names match ``roi_pattern``, as a mask on ``volume``'s grid
    (:func:`dicom_node.regions.rtstruct_masks`)."""
    masks = rtstruct_masks(rtstruct, volume, roi_pattern)
    if not masks:
        raise GroundTruthError(f"no ROI matching {roi_pattern!r} in the RTSTRUCT")
    return _union(masks, volume)


def seg_to_mask(seg: Dataset, volume: SeriesVolume, roi_pattern: str = DEFAULT_ROI_PATTERN) -> tuple[np.ndarray, tuple[str, ...]]:
    """Union of the SEG segments whose labels match ``roi_pattern``, on ``volume``'s grid."""
    try:
        masks = seg_masks(seg, volume, roi_pattern)
    except RegionError as exc:
        raise GroundTruthError(str(exc)) from exc
    if not masks:
        raise GroundTruthError(f"no segment matching {roi_pattern!r} in the SEG")
    return _union(masks, volume)


def _union(masks: dict[int, tuple[str, np.ndarray]], volume: SeriesVolume) -> tuple[np.ndarray, tuple[str, ...]]:
    mask = np.zeros(volume.shape, dtype=bool)
    for _, roi_mask in masks.values():
        mask |= roi_mask
    return mask, tuple(name for name, _ in masks.values())


def iter_ground_truth_cases(folder: Path, roi_pattern: str = DEFAULT_ROI_PATTERN,
                            modalities: tuple[str, ...] = ("CT",)) -> Iterator[GroundTruthCase]:
    """Every image series of ``modalities`` under ``folder`` that has an RTSTRUCT or SEG with
    a matching ROI.

    Series or objects that cannot be read are skipped (with their reason on stderr), so one
    broken export does not stop a training run.
    """
    import sys

    images: dict[str, list[Dataset]] = defaultdict(list)
    truths: list[Dataset] = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # not DICOM
            continue
        sop_class = str(ds.get("SOPClassUID", ""))
        if sop_class in (RTSTRUCT_STORAGE, SEG_STORAGE):
            truths.append(ds)
        elif str(ds.get("Modality", "")) in modalities:
            images[str(ds.SeriesInstanceUID)].append(ds)
    for truth in truths:
        for series_uid in referenced_series(truth) & set(images):
            try:
                volume = build_volume(images[series_uid])
                if str(truth.SOPClassUID) == RTSTRUCT_STORAGE:
                    mask, names = rasterise_rtstruct(truth, volume, roi_pattern)
                    source = "RTSTRUCT"
                else:
                    mask, names = seg_to_mask(truth, volume, roi_pattern)
                    source = "SEG"
            except (VolumeError, GroundTruthError) as exc:
                print(f"skipping series {series_uid}: {exc}", file=sys.stderr)
                continue
            yield GroundTruthCase(volume, mask, source, names)
