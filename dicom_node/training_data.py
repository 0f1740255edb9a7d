"""A site's CT series with RTSTRUCT or SEG ground truth, read into training arrays.

The engines train on arrays (:class:`ai_engines.ct_lung.train.TrainingCase`); this module does
the DICOM side: group a folder's files by series, build each CT volume with
:func:`dicom_node.volumes.build_volume`, and rasterise the tumour ROI of an RTSTRUCT
(closed planar contours, holes by even-odd filling) or the matching segments of a SEG
(highdicom, or frame positions when the SEG does not reference its source instances).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from ai_engines.volume import SeriesVolume
from dicom_node.volumes import VolumeError, build_volume

RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
DEFAULT_ROI_PATTERN = r"^(gtv|tumou?r|lesion|neoplasm)"


class GroundTruthError(ValueError):
    """A ground-truth object cannot be turned into a mask on its series."""


@dataclass(frozen=True)
class GroundTruthCase:
    """A CT volume and the tumour mask on its grid."""

    volume: SeriesVolume
    mask: np.ndarray
    source: str  # "RTSTRUCT" or "SEG"
    roi_names: tuple[str, ...]


def _slice_index(volume: SeriesVolume, point: np.ndarray) -> int | None:
    positions = volume.geometry.slice_positions
    distance = np.abs(positions - float(point @ volume.geometry.normal))
    k = int(np.argmin(distance))
    tolerance = max(volume.geometry.slice_spacing / 2, 0.01)
    return k if distance[k] <= tolerance else None


def rasterise_rtstruct(rtstruct: Dataset, volume: SeriesVolume, roi_pattern: str = DEFAULT_ROI_PATTERN) -> tuple[np.ndarray, tuple[str, ...]]:
    """Union of the ROIs whose names match ``roi_pattern``, as a mask on ``volume``'s grid.

    Each closed planar contour is filled on the slice it lies on; contours of one ROI on one
    slice combine by exclusive-or, so inner contours cut holes.
    """
    from skimage.draw import polygon

    pattern = re.compile(roi_pattern, re.IGNORECASE)
    numbers = {
        int(item.ROINumber): str(item.ROIName)
        for item in rtstruct.get("StructureSetROISequence", [])
        if pattern.search(str(item.get("ROIName", "")))
    }
    if not numbers:
        raise GroundTruthError(f"no ROI matching {roi_pattern!r} in the RTSTRUCT")
    geometry = volume.geometry
    row_dir, col_dir = np.asarray(geometry.row_direction), np.asarray(geometry.column_direction)
    mask = np.zeros(volume.shape, dtype=bool)
    for roi in rtstruct.get("ROIContourSequence", []):
        if int(roi.ReferencedROINumber) not in numbers:
            continue
        roi_mask = np.zeros(volume.shape, dtype=bool)
        for contour in roi.get("ContourSequence", []):
            if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
                continue
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            if len(points) < 3:
                continue  # degenerate contour
            k = _slice_index(volume, points[0])
            if k is None:
                continue
            offset = points - geometry.slice_origins[k]
            cols = offset @ row_dir / geometry.pixel_spacing[1]
            rows = offset @ col_dir / geometry.pixel_spacing[0]
            rr, cc = polygon(rows, cols, shape=volume.shape[1:])
            filled = np.zeros(volume.shape[1:], dtype=bool)
            filled[rr, cc] = True
            roi_mask[k] ^= filled
        mask |= roi_mask
    return mask, tuple(numbers.values())


def seg_to_mask(seg: Dataset, volume: SeriesVolume, roi_pattern: str = DEFAULT_ROI_PATTERN) -> tuple[np.ndarray, tuple[str, ...]]:
    """Union of the SEG segments whose labels match ``roi_pattern``, on ``volume``'s grid."""
    segments = {
        int(item.SegmentNumber): str(item.get("SegmentLabel", ""))
        for item in seg.get("SegmentSequence", [])
        if re.search(roi_pattern, str(item.get("SegmentLabel", "")), re.IGNORECASE)
    }
    if not segments:
        raise GroundTruthError(f"no segment matching {roi_pattern!r} in the SEG")
    uids = [s.sop_instance_uid for s in volume.slices]
    try:
        import highdicom as hd

        document = hd.seg.Segmentation.from_dataset(seg, copy=False)
        pixels = document.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, segment_numbers=sorted(segments), combine_segments=True,
            relabel=True, assert_missing_frames_are_empty=False,
        )
        return np.asarray(pixels) > 0, tuple(segments.values())
    except Exception:  # SEG without per-frame source references: place frames by position
        pass
    pixels = np.asarray(seg.pixel_array)
    if pixels.ndim == 2:
        pixels = pixels[None]
    mask = np.zeros(volume.shape, dtype=bool)
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        if number not in segments:
            continue
        position = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        k = _slice_index(volume, position)
        if k is None or pixels.shape[1:] != volume.shape[1:]:
            raise GroundTruthError("SEG frame does not lie on the series grid")
        mask[k] |= pixels[index] > 0
    return mask, tuple(segments.values())


def _references(ds: Dataset) -> set[str]:
    """Series UIDs an RTSTRUCT or SEG refers to."""
    found = set()
    for frame_ref in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame_ref.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                found.add(str(series.SeriesInstanceUID))
    for series in ds.get("ReferencedSeriesSequence", []):
        found.add(str(series.SeriesInstanceUID))
    return found


def iter_ground_truth_cases(folder: Path, roi_pattern: str = DEFAULT_ROI_PATTERN) -> Iterator[GroundTruthCase]:
    """Every CT series under ``folder`` that has an RTSTRUCT or SEG with a matching ROI.

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
        elif str(ds.get("Modality", "")) == "CT":
            images[str(ds.SeriesInstanceUID)].append(ds)
    for truth in truths:
        for series_uid in _references(truth) & set(images):
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


def training_cases(folder: Path, roi_pattern: str = DEFAULT_ROI_PATTERN):
    """The folder's cases as :class:`ai_engines.ct_lung.train.TrainingCase` arrays."""
    from ai_engines.ct_lung.train import TrainingCase

    for case in iter_ground_truth_cases(folder, roi_pattern):
        yield TrainingCase(
            hu=case.volume.voxels, tumour=case.mask, pixel_spacing=case.volume.geometry.pixel_spacing,
            slice_spacing=case.volume.geometry.slice_spacing,
            name=f"{case.source}:{case.volume.series_uid}",
        )
