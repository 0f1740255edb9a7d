"""Regions that arrive with a study (RTSTRUCT ROIs, SEG segments) as masks on their image grid.

The one place the node turns received contours and segmentations into
:class:`~ai_engines.volume.RoiContours`: for engines that ask for regions (radiomics on a
planning system's approved GTV) and for training and evaluation on a site's ground truth.
RTSTRUCT: each closed planar contour is filled on the slice it lies on; contours of one ROI on
one slice combine by exclusive-or, so inner contours cut holes.  SEG: highdicom places frames
by their source-instance references, or by frame position when a SEG has none.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
from pydicom.dataset import Dataset

from ai_engines.volume import RoiContours, SeriesVolume

RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


class RegionError(ValueError):
    """A received RTSTRUCT or SEG cannot be turned into masks on its image series."""


def _slice_index(volume: SeriesVolume, point: np.ndarray) -> int | None:
    positions = volume.geometry.slice_positions
    distance = np.abs(positions - float(np.asarray(point) @ volume.geometry.normal))
    k = int(np.argmin(distance))
    tolerance = max(volume.geometry.slice_spacing / 2, 0.01)
    return k if distance[k] <= tolerance else None


def rtstruct_masks(rtstruct: Dataset, volume: SeriesVolume, name_pattern: str = ".*",
                   ) -> dict[int, tuple[str, np.ndarray]]:
    """Each ROI whose name matches ``name_pattern``: ROI Number -> (name, mask on ``volume``).

    Contours that lie on no slice of ``volume`` (another series' planes) are left out; an ROI
    with no contour on the grid gets an empty mask.
    """
    from skimage.draw import polygon

    pattern = re.compile(name_pattern, re.IGNORECASE)
    names = {
        int(item.ROINumber): str(item.get("ROIName", ""))
        for item in rtstruct.get("StructureSetROISequence", [])
        if pattern.search(str(item.get("ROIName", "")))
    }
    geometry = volume.geometry
    row_dir, col_dir = np.asarray(geometry.row_direction), np.asarray(geometry.column_direction)
    masks: dict[int, tuple[str, np.ndarray]] = {}
    for roi in rtstruct.get("ROIContourSequence", []):
        number = int(roi.ReferencedROINumber)
        if number not in names:
            continue
        roi_mask = masks.get(number, (names[number], np.zeros(volume.shape, dtype=bool)))[1]
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
        masks[number] = (names[number], roi_mask)
    for number, name in names.items():  # ROIs without any ROI Contour item
        masks.setdefault(number, (name, np.zeros(volume.shape, dtype=bool)))
    return dict(sorted(masks.items()))


def seg_masks(seg: Dataset, volume: SeriesVolume, name_pattern: str = ".*",
              ) -> dict[int, tuple[str, np.ndarray]]:
    """Each segment whose label matches ``name_pattern``: Segment Number -> (label, mask).

    Raises
    ------
    RegionError
        A frame that lies on no slice of ``volume``, or a grid of another size.
    """
    pattern = re.compile(name_pattern, re.IGNORECASE)
    labels = {
        int(item.SegmentNumber): str(item.get("SegmentLabel", ""))
        for item in seg.get("SegmentSequence", [])
        if pattern.search(str(item.get("SegmentLabel", "")))
    }
    if not labels:
        return {}
    uids = [s.sop_instance_uid for s in volume.slices]
    numbers = sorted(labels)
    try:
        import highdicom as hd

        document = hd.seg.Segmentation.from_dataset(seg, copy=False)
        pixels = np.asarray(document.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, segment_numbers=numbers, combine_segments=False,
            assert_missing_frames_are_empty=False,
        ))
        return {n: (labels[n], pixels[..., i] > 0) for i, n in enumerate(numbers)}
    except Exception:  # SEG without per-frame source references: place frames by position
        pass
    pixels = np.asarray(seg.pixel_array)
    if pixels.ndim == 2:
        pixels = pixels[None]
    masks = {n: (labels[n], np.zeros(volume.shape, dtype=bool)) for n in numbers}
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        if number not in masks:
            continue
        position = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        k = _slice_index(volume, position)
        if k is None or pixels.shape[1:] != volume.shape[1:]:
            raise RegionError("SEG frame does not lie on the series grid")
        masks[number][1][k] |= pixels[index] > 0
    return masks


def referenced_series(ds: Dataset) -> set[str]:
    """Series UIDs an RTSTRUCT or SEG refers to."""
    found = set()
    for frame_ref in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame_ref.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                found.add(str(series.SeriesInstanceUID))
    for series in ds.get("ReferencedSeriesSequence", []):
        found.add(str(series.SeriesInstanceUID))
    return found


def _frames_of_reference(ds: Dataset) -> set[str]:
    found = {str(ds.FrameOfReferenceUID)} if ds.get("FrameOfReferenceUID") else set()
    for frame_ref in ds.get("ReferencedFrameOfReferenceSequence", []):
        if frame_ref.get("FrameOfReferenceUID"):
            found.add(str(frame_ref.FrameOfReferenceUID))
    return found


def region_targets(ds: Dataset, volumes: Sequence[SeriesVolume]) -> list[SeriesVolume]:
    """The volumes an RTSTRUCT or SEG lies on: the series it references, or, when it names
    none of them, the volumes in its frame of reference."""
    referenced = referenced_series(ds)
    targets = [v for v in volumes if v.series_uid in referenced]
    if not targets and not referenced:
        frames = _frames_of_reference(ds)
        targets = [v for v in volumes if v.frame_of_reference_uid in frames]
    return targets


def read_regions(ds: Dataset, volumes: Sequence[SeriesVolume], name_pattern: str = ".*",
                 ) -> list[RoiContours]:
    """The regions of one received RTSTRUCT or SEG on each volume it lies on.

    Returns
    -------
    list of RoiContours
        One per ROI or segment and target volume, with the source object's SOP class, SOP
        instance, series and ROI/Segment Number filled, so results can reference it.

    Raises
    ------
    RegionError
        ``ds`` is neither an RTSTRUCT nor a SEG, or its frames do not fit the grid.
    """
    sop_class = str(ds.get("SOPClassUID", ""))
    reader: Callable[..., dict[int, tuple[str, np.ndarray]]]
    if sop_class == RTSTRUCT_STORAGE:
        reader = rtstruct_masks
    elif sop_class == SEG_STORAGE:
        reader = seg_masks
    else:
        raise RegionError(f"SOP class {sop_class} holds no regions")
    regions = []
    for volume in region_targets(ds, volumes):
        for number, (name, mask) in reader(ds, volume, name_pattern).items():
            regions.append(RoiContours(
                name=name, series_uid=volume.series_uid, mask=mask,
                source_sop_class_uid=sop_class,
                source_sop_instance_uid=str(ds.SOPInstanceUID),
                source_number=number,
                source_series_uid=str(ds.get("SeriesInstanceUID", "")),
            ))
    return regions


ABNORMAL_STRUCTURE = "49755003"  # SCT "Morphologically Abnormal Structure" (a SEG's category)
LESION_ROI_TYPES = frozenset({"GTV", "CTV"})  # RTROIInterpretedType of a lesion


def lesion_numbers(ds: Dataset) -> set[int]:
    """Segment / ROI numbers of the lesions in an RTSTRUCT or SEG: segments whose category is
    Morphologically Abnormal Structure (SCT 49755003), ROIs observed as GTV or CTV.  Organs
    (an engine's lungs or brain mask) are not lesions."""
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class == SEG_STORAGE:
        return {int(item.SegmentNumber) for item in ds.get("SegmentSequence", [])
                if any(str(c.get("CodeValue", "")) == ABNORMAL_STRUCTURE
                       for c in item.get("SegmentedPropertyCategoryCodeSequence", []))}
    if sop_class == RTSTRUCT_STORAGE:
        return {int(item.ReferencedROINumber) for item in ds.get("RTROIObservationsSequence", [])
                if str(item.get("RTROIInterpretedType", "")).upper() in LESION_ROI_TYPES}
    return set()
