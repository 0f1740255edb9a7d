"""What every result object takes from the source series, and the checks made first.

Identity is never put into exception messages: the datasets arriving here are pseudonymized,
but messages name only counts, shapes and attribute keywords anyway.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from ai_engines.findings import Findings
from ai_engines.volume import SliceReference
from dicom_node.elements import elements_with_vr

# PyPI-free implementation identification of the node's result writers.
IMPLEMENTATION_CLASS_UID = UID("1.2.826.0.1.3680043.8.498.1")
IMPLEMENTATION_VERSION_NAME = "DICOMAINODE01"

# Patient, General Study and Patient Study attributes copied verbatim into every result,
# so dcentvfy finds the result objects consistent with the source entity.
PATIENT_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)

# Type 1 attributes the writers need on every source slice.
_REQUIRED_SLICE_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "Rows",
    "Columns",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
)
# What a multi-frame source (planar NM, enhanced CT/MR) needs: its geometry is per frame
# or absent (planar views), and its frame of reference optional.
_REQUIRED_FRAME_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "Rows",
    "Columns",
    "NumberOfFrames",
)
# Planar views: no geometry but the pixel spacing (the volume reader requires it too).
_REQUIRED_VIEW_KEYWORDS = (*_REQUIRED_FRAME_KEYWORDS[:-1], "PixelSpacing")

# Pydicom and highdicom generate UIDs under their own roots; results use 2.25 only.
_FOREIGN_UID_ROOTS = ("1.2.826.0.1.3680043.10.511.", "1.2.826.0.1.3680043.8.498.")


def new_uid() -> str:
    """A new UID of the form ``2.25.<uuid4 as integer>`` (never derived from source UIDs)."""
    return str(generate_uid(prefix=None))


@dataclass(frozen=True)
class SourceSlice:
    """Where slice ``k`` of an engine volume came from: an instance and, for a multi-frame
    instance, its 1-based frame number."""

    dataset: Dataset
    frame_number: int | None = None


@dataclass(frozen=True)
class SourceGrid:
    """The source series of a result, one entry per slice of the engine's volume.

    ``slices[k]`` is the instance (and frame) that voxel slice ``k`` lies on.  ``instances``
    holds each SOP instance once, in first-use order.
    """

    slices: tuple[SourceSlice, ...]
    instances: tuple[Dataset, ...]

    @property
    def first(self) -> Dataset:
        return self.instances[0]

    @property
    def series_uid(self) -> str:
        return str(self.first.SeriesInstanceUID)

    @property
    def modality(self) -> str:
        return str(self.first.Modality)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.slices), int(self.first.Rows), int(self.first.Columns))

    @property
    def multiframe(self) -> bool:
        """One multi-frame instance carries the slices (NM, enhanced CT/MR)."""
        return self.slices[0].frame_number is not None

    @property
    def planar(self) -> bool:
        """Planar views (e.g. NM whole body, as one multi-frame instance or one instance per
        view): images without a position in patient space, so no structure set, no
        Parametric Map, views drawn side by side."""
        return not all(_has_position(ds) for ds in self.instances)

    @property
    def tomographic(self) -> bool:
        """Single-frame slices with ImagePositionPatient: what an RTSTRUCT can contour."""
        return not self.multiframe and not self.planar

    def frame_number(self, k: int) -> int:
        """The 1-based frame of slice ``k`` in its instance (1 for a single-frame one)."""
        return self.slices[k].frame_number or 1

    def frame_pixels(self, k: int) -> np.ndarray:
        """Slice ``k``'s stored values with the modality rescale applied (float64)."""
        item = self.slices[k]
        pixels = item.dataset.pixel_array
        if item.frame_number is not None and pixels.ndim == 3:
            pixels = pixels[item.frame_number - 1]
        slope = float(item.dataset.get("RescaleSlope", 1) or 1)
        intercept = float(item.dataset.get("RescaleIntercept", 0) or 0)
        return pixels.astype(np.float64) * slope + intercept

    def view(self, k: int) -> str | None:
        """The planar view of slice ``k`` ("ANTERIOR", "POSTERIOR", ...), or None."""
        return planar_view(self.slices[k].dataset, self.frame_number(k))

    def reference(self, k: int) -> Dataset:
        """A ReferencedSOP item (class, instance, frame number when multi-frame)."""
        item = self.slices[k]
        reference = Dataset()
        reference.ReferencedSOPClassUID = item.dataset.SOPClassUID
        reference.ReferencedSOPInstanceUID = item.dataset.SOPInstanceUID
        if item.frame_number is not None:
            reference.ReferencedFrameNumber = item.frame_number
        return reference


def _has_position(ds: Dataset) -> bool:
    return "ImagePositionPatient" in ds or _has_plane_positions(ds)


def _has_plane_positions(ds: Dataset) -> bool:
    for keyword in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = ds.get(keyword)
        if groups and "PlanePositionSequence" in groups[0]:
            return True
    return False


def planar_view(ds: Dataset, frame_number: int) -> str | None:
    """The view of one frame of an NM multi-frame image, from DetectorVector and the
    Detector Information Sequence's View Code Sequence (upper-case words, e.g. ANTERIOR)."""
    vector = ds.get("DetectorVector")
    detectors = ds.get("DetectorInformationSequence")
    if vector is None or not detectors:
        return None
    # pydicom gives a list for VM > 1 and a bare int for a one-frame vector.
    values = [int(v) for v in vector] if isinstance(vector, Sequence) else [int(vector)]
    if not 1 <= frame_number <= len(values) or not 1 <= values[frame_number - 1] <= len(detectors):
        return None
    views = detectors[values[frame_number - 1] - 1].get("ViewCodeSequence")
    if not views:
        return None
    meaning = str(views[0].get("CodeMeaning", "")).upper()
    for word in ("ANTERIOR", "POSTERIOR", "LEFT LATERAL", "RIGHT LATERAL"):
        if word in meaning:
            return word.replace(" ", "_")
    return ascii_text(meaning, 16).replace(" ", "_") or None


def _frame_order(ds: Dataset) -> list[int]:
    """0-based frame indices in volume order: ascending position along the plane normal
    (stable, as :mod:`dicom_node.volumes` stacks them); frame order for planar views."""
    n = int(ds.NumberOfFrames)
    if not _has_plane_positions(ds):
        return list(range(n))
    shared = ds.get("SharedFunctionalGroupsSequence") or [Dataset()]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []

    def item(index: int, keyword: str) -> Dataset | None:
        for groups in ((per_frame[index],) if index < len(per_frame) else ()) + (shared[0],):
            if keyword in groups and len(groups[keyword].value):
                return groups[keyword][0]
        return None

    plane = item(0, "PlaneOrientationSequence")
    iop = (np.asarray([float(v) for v in plane.ImageOrientationPatient]) if plane is not None
           else np.asarray([1.0, 0, 0, 0, 1.0, 0]))
    normal = np.cross(iop[:3], iop[3:])
    positions = []
    for index in range(n):
        position = item(index, "PlanePositionSequence")
        origin = ([float(v) for v in position.ImagePositionPatient] if position is not None
                  else [0.0, 0.0, 0.0])
        positions.append(float(np.dot(origin, normal)))
    return [int(i) for i in np.argsort(np.asarray(positions), kind="stable")]


def source_grid(source_datasets: Sequence[Dataset],
                slices: Sequence[SliceReference] | None = None) -> SourceGrid:
    """The per-slice source of an engine volume.

    Parameters
    ----------
    source_datasets
        The series' instances: single-frame slices in volume order, or one multi-frame
        instance (given once, or once per frame as a per-slice list).
    slices
        The volume's :class:`~ai_engines.volume.SliceReference` list; when given, it decides
        the order (and frame numbers); otherwise single-frame slices keep the given order and
        the frames of a multi-frame instance are ordered as :mod:`dicom_node.volumes` does.

    Raises
    ------
    ValueError
        If an instance named by ``slices`` is missing, or single-frame and multi-frame
        instances are mixed.
    """
    if not source_datasets:
        raise ValueError("source_datasets is empty: results need the source series")
    unique: dict[str, Dataset] = {}
    for ds in source_datasets:
        if "SOPInstanceUID" not in ds:
            raise ValueError("a source instance lacks SOPInstanceUID")
        unique.setdefault(str(ds.SOPInstanceUID), ds)
    frames = {uid: int(ds.get("NumberOfFrames", 1) or 1) for uid, ds in unique.items()}
    multiframe = any(count > 1 for count in frames.values())
    if slices is not None:
        items = []
        for reference in slices:
            named = unique.get(reference.sop_instance_uid)
            if named is None:
                raise ValueError("a volume slice names an instance not in source_datasets")
            frame = reference.frame_number if frames[reference.sop_instance_uid] > 1 else None
            items.append(SourceSlice(named, frame))
        return SourceGrid(tuple(items), _ordered_unique(items))
    if multiframe:
        if len(unique) != 1:
            raise ValueError("several multi-frame instances (or mixed with single-frame): "
                             "pass the volume's slice references")
        (ds,) = unique.values()
        return SourceGrid(tuple(SourceSlice(ds, i + 1) for i in _frame_order(ds)), (ds,))
    if len(unique) != len(source_datasets):
        raise ValueError("source_datasets contains the same SOP instance twice")
    return SourceGrid(tuple(SourceSlice(ds) for ds in source_datasets), tuple(source_datasets))


def _ordered_unique(items: Sequence[SourceSlice]) -> tuple[Dataset, ...]:
    seen: dict[str, Dataset] = {}
    for item in items:
        seen.setdefault(str(item.dataset.SOPInstanceUID), item.dataset)
    return tuple(seen.values())


def check_source_series(findings: Findings, source_datasets: Sequence[Dataset] | SourceGrid,
                        series_uid: str | None = None) -> SourceGrid:
    """Check that ``source_datasets`` is the series the findings were computed on.

    Parameters
    ----------
    findings
        Engine output; every segment mask and map on this series must be
        ``[slice, row, col]`` on the source grid.
    source_datasets
        Source slices in the engine's volume order (slice ``k`` = ``source_datasets[k]``),
        one multi-frame instance, or a :class:`SourceGrid` already built.
    series_uid
        The series to check; default ``findings.source_series_uid``.

    Returns
    -------
    SourceGrid
        The per-slice source.

    Raises
    ------
    ValueError
        If the series is empty, mixes series, studies or frames of reference, lacks a
        required attribute, or a mask shape does not match the grid.
    """
    if not isinstance(findings, Findings):
        raise ValueError("findings must be an ai_engines.findings.Findings")
    grid = (source_datasets if isinstance(source_datasets, SourceGrid)
            else source_grid(source_datasets))
    series_uid = series_uid or findings.source_series_uid
    required = (_REQUIRED_SLICE_KEYWORDS if grid.tomographic
                else _REQUIRED_VIEW_KEYWORDS if grid.planar else _REQUIRED_FRAME_KEYWORDS)
    for index, ds in enumerate(grid.instances):
        missing = [kw for kw in required if kw not in ds]
        if missing:
            raise ValueError(f"source instance {index} lacks {', '.join(missing)}")
    first = grid.first
    for keyword in ("SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID",
                    "Rows", "Columns"):
        if len({str(ds.get(keyword, "")) for ds in grid.instances}) != 1:
            raise ValueError(f"source slices differ in {keyword}: one series is expected")
    if first.SeriesInstanceUID != series_uid:
        raise ValueError("source_datasets are not the series named by findings.source_series_uid")
    if grid.tomographic:
        orientation = np.asarray(first.ImageOrientationPatient, dtype=float)
        for ds in grid.instances[1:]:
            if not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=float),
                               orientation, atol=1e-4):
                raise ValueError("source slices differ in ImageOrientationPatient")
    for number, segment in enumerate(findings.segments, start=1):
        if (segment.source_series_uid or findings.source_series_uid) != series_uid:
            continue
        if segment.mask.shape != grid.shape:
            raise ValueError(
                f"segment {number} ({segment.label!r}): mask shape {segment.mask.shape} "
                f"is not the source grid {grid.shape}"
            )
    for voxel_map in findings.maps:
        if (voxel_map.source_series_uid or findings.source_series_uid) != series_uid:
            continue
        if voxel_map.values.shape != grid.shape:
            raise ValueError(
                f"map {voxel_map.label!r}: shape {voxel_map.values.shape} is not the source "
                f"grid {grid.shape}"
            )
    labels = [segment.label for segment in findings.segments]
    if len(set(labels)) != len(labels):
        raise ValueError("segment labels must be unique (they become ROI names)")
    return grid


def copy_patient_study(source: Dataset, target: Dataset) -> None:
    """Copy Specific Character Set, Patient and Study attributes from ``source`` verbatim.

    Type 2 attributes absent in the source are written empty so they are always present.
    """
    if "SpecificCharacterSet" in source:
        target.SpecificCharacterSet = source.SpecificCharacterSet
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in source:
            target[keyword] = source[keyword]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                    "ReferringPhysicianName"):
        if keyword not in target:
            setattr(target, keyword, "")


def ascii_text(text: str, limit: int) -> str:
    """``text`` reduced to printable ASCII without backslashes, at most ``limit`` chars."""
    cleaned = "".join(ch if " " <= ch <= "~" and ch != "\\" else "?" for ch in text)
    return cleaned[:limit].strip()


def series_description(kind: str, findings: Findings) -> str:
    """SeriesDescription (LO, ASCII) saying that this is an AI result and how it may be used."""
    use = "RESEARCH USE ONLY" if findings.engine.research_use_only else "NOT VERIFIED"
    engine = ascii_text(findings.engine.name, 64)
    text = f"AI {kind} {engine} - {use}"
    if len(text) > 64:
        text = f"AI {kind} {engine[: 64 - len(kind) - len(use) - 6]} - {use}"
    return text


def content_label(findings: Findings, suffix: str = "") -> str:
    """An uppercase CS value (<= 16 chars, ``A-Z 0-9 _``) naming the engine."""
    label = re.sub(r"[^A-Z0-9_]", "_", findings.engine.name.upper())
    label = re.sub(r"_+", "_", label).strip("_") or "AI_RESULT"
    room = 16 - len(suffix)
    return (label[:room].rstrip("_") + suffix)[:16]


def set_file_meta(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> None:
    """Part 10 meta information, Explicit VR Little Endian unless told otherwise."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta


def _uid_elements(ds: Dataset) -> Iterator[DataElement]:
    """Every non-empty UI element of ``ds``, at any sequence depth."""
    for element in elements_with_vr(ds, _UI_OR_SQ):
        if element.VR == "SQ":
            for child in element.value:
                yield from _uid_elements(child)
        elif element.VR == "UI" and element.value:
            yield element


_UI_OR_SQ = frozenset({"UI", "SQ"})


def replace_generated_uids(ds: Dataset, keep: set[str]) -> None:
    """Replace UIDs a library generated under its own root by fresh ``2.25.`` UIDs.

    The same foreign UID gets the same replacement everywhere in ``ds``.  UIDs in ``keep``
    (source and referenced instances) are never touched.
    """
    replacements: dict[str, str] = {}
    for element in _uid_elements(ds):
        values = element.value if element.VM > 1 else [element.value]
        changed = []
        for value in values:
            value = str(value)
            if value not in keep and value.startswith(_FOREIGN_UID_ROOTS):
                value = replacements.setdefault(value, new_uid())
            changed.append(value)
        element.value = changed if element.VM > 1 else changed[0]


def uids_in(datasets: Sequence[Dataset]) -> set[str]:
    """Every UID value found at any depth of ``datasets`` (to keep them untouched)."""
    found: set[str] = set()
    for ds in datasets:
        for element in _uid_elements(ds):
            values = element.value if element.VM > 1 else [element.value]
            found.update(str(value) for value in values)
    return found


def planar_frame_proxy(ds: Dataset) -> Dataset:
    """A header-only stand-in for one frame of a planar multi-frame image (NM whole body).

    highdicom builds SEG and Parametric Map instances on a source with a patient coordinate
    system, or on a single frame without one.  Planar views have no patient-space position,
    so each view is encoded on this one-frame stand-in (no Frame of Reference, Pixel
    Measures in shared functional groups); the writer then adds the real frame number to the
    source references (:func:`add_referenced_frame`).
    """
    proxy = Dataset()
    for element in ds:
        if element.keyword in ("PixelData", "FrameIncrementPointer", "FrameOfReferenceUID",
                               "PositionReferenceIndicator", "NumberOfFrames",
                               "SharedFunctionalGroupsSequence"):
            continue
        proxy.add(copy.copy(element))  # the source's elements are never changed
    proxy.NumberOfFrames = 1
    measures = Dataset()
    measures.PixelSpacing = ds.PixelSpacing
    measures.SliceThickness = ds.get("SliceThickness") or "1"
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    proxy.SharedFunctionalGroupsSequence = [shared]
    return proxy


def add_referenced_frame(ds: Dataset, source_uid: str, frame_number: int) -> None:
    """Add ReferencedFrameNumber to every reference of ``ds`` to instance ``source_uid``."""
    for item in _items(ds):
        if (item.get("ReferencedSOPInstanceUID") == source_uid
                and "ReferencedFrameNumber" not in item):
            item.ReferencedFrameNumber = frame_number


def _items(ds: Dataset) -> Iterator[Dataset]:
    for element in ds:
        if element.VR == "SQ" and element.keyword != "PixelData":
            for item in element.value:
                yield item
                yield from _items(item)
