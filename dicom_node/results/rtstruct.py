"""RT Structure Set of an engine's masks, written on plain pydicom.

Contours are traced on the 0.5 iso-line of each slice (marching squares on a zero-padded
slice, so masks touching the image edge still close), which round-trips exactly under
even-odd pixel-centre rasterisation.  Holes and islands are separate contours of the same
ROI (even-odd nesting, no keyholes).  Empty-ROI policy: an ROI with an empty mask stays in
StructureSetROISequence and RTROIObservationsSequence and gets a ROIContourSequence item
without ContourSequence, so ROI numbers stay 1..n in the order of the engine's segments.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RTStructureSetStorage
from pydicom.valuerep import format_number_as_ds
from skimage.measure import find_contours

from ai_engines.findings import Findings, Segment
from dicom_node.results.options import RTSTRUCT_SERIES_OFFSET, ResultOptions
from dicom_node.results.seg import segments_on
from dicom_node.results.source import (
    SourceGrid,
    ascii_text,
    check_source_series,
    content_label,
    copy_patient_study,
    new_uid,
    series_description,
    set_file_meta,
    source_grid,
)

# Detached Study Management SOP Class: what RT Referenced Study items conventionally name.
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
# Contours enclosing less than this (in pixel^2) are degenerate; a one-voxel speck is 0.5.
MIN_CONTOUR_AREA_PX = 0.05
CONTOUR_DATA = Tag(0x3006, 0x0050)
# Explicit VR gives DS a 16-bit length; a longer ContourData needs Implicit VR Little Endian.
EXPLICIT_VR_MAX_LENGTH = 0xFFFE


def _polygon_area(points: np.ndarray) -> float:
    rows, cols = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(rows, np.roll(cols, 1)) - np.dot(cols, np.roll(rows, 1))))


def drop_collinear_points(contour: np.ndarray) -> np.ndarray:
    """The same closed polygon without points that lie on the line through their neighbours.

    Marching squares puts a point on every pixel edge; along straight and 45-degree runs most
    of them are collinear.  Removing exactly those (vectorised, no tolerance) keeps the polygon
    identical, so rasterisation stays exact, with a fraction of the points.
    """
    before = np.roll(contour, 1, axis=0)
    after = np.roll(contour, -1, axis=0)
    d1, d2 = contour - before, after - contour
    cross = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    return contour[np.abs(cross) > 1e-9]


def trace_slice_contours(mask_slice: np.ndarray) -> list[np.ndarray]:
    """Closed iso-0.5 contours of one boolean slice, as ``(n, 2)`` (row, column) arrays.

    The slice is padded by one background pixel so that regions touching the edge close.
    The repeated closing point is dropped (CLOSED_PLANAR closes implicitly); contours with
    fewer than three points or about zero area are dropped.
    """
    padded = np.pad(mask_slice.astype(np.float32), 1)
    contours = []
    for contour in find_contours(padded, 0.5):
        if len(contour) > 1 and np.allclose(contour[0], contour[-1]):
            contour = contour[:-1]
        contour = drop_collinear_points(contour) - 1.0
        if len(contour) < 3 or _polygon_area(contour) < MIN_CONTOUR_AREA_PX:
            continue
        contours.append(contour)
    return contours


def _ds_text(value: object) -> str:
    """A DS value as it appears in the source, or formatted to <= 16 characters."""
    text = getattr(value, "original_string", None) or str(value)
    if len(text) > 16:
        text = format_number_as_ds(float(value))  # type: ignore[arg-type]
    return text


def contour_data(points_rc: np.ndarray, source: Dataset) -> list[str]:
    """ContourData (x, y, z triplets as DS strings) for (row, column) points on ``source``.

    P = IPP + column * PixelSpacing[1] * row_direction + row * PixelSpacing[0] * col_direction
    (PS3.3 C.7.6.2.1.1).  Any patient axis along which the image plane does not vary
    (z for axial) is copied character for character from ImagePositionPatient, so each
    contour lies exactly on its slice.
    """
    origin = np.asarray([float(v) for v in source.ImagePositionPatient])
    orientation = np.asarray([float(v) for v in source.ImageOrientationPatient])
    row_direction, column_direction = orientation[:3], orientation[3:]
    row_spacing, column_spacing = (float(v) for v in source.PixelSpacing)
    patient = (
        origin
        + points_rc[:, 1:2] * column_spacing * row_direction
        + points_rc[:, 0:1] * row_spacing * column_direction
    )
    columns = []
    for axis in range(3):
        if row_direction[axis] == 0.0 and column_direction[axis] == 0.0:
            columns.append([_ds_text(source.ImagePositionPatient[axis])] * len(patient))
        else:
            columns.append([_ds_number(v) for v in patient[:, axis].tolist()])
    return [text for point in zip(*columns, strict=True) for text in point]


@lru_cache(maxsize=65536)
def _ds_number(value: float) -> str:
    # Contour points lie on a half-pixel grid, so few distinct values recur on every slice.
    return format_number_as_ds(value)


def _set_contour_data(contour: Dataset, values: list[str]) -> int:
    """Set ContourData from DS strings already formatted and validated; returns its length.

    The element is stored encoded: letting pydicom parse a million DS strings back into
    numbers costs seconds on a 600-slice series and changes nothing in the file.
    """
    encoded = "\\".join(values).encode("ascii")
    if len(encoded) % 2:
        encoded += b" "
    contour[CONTOUR_DATA] = RawDataElement(CONTOUR_DATA, "DS", len(encoded), encoded, 0, False, True)
    # Declare the item Explicit VR Little Endian, default character set (the values are
    # ASCII): otherwise pydicom decodes every raw element of a new item again when writing.
    contour.set_original_encoding(False, True, "iso8859")
    return len(encoded)


def _image_reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item


def _referenced_frame_of_reference(source_datasets: Sequence[Dataset]) -> Dataset:
    first = source_datasets[0]
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ContourImageSequence = [_image_reference(ds) for ds in source_datasets]
    study = Dataset()
    study.ReferencedSOPClassUID = DETACHED_STUDY_MANAGEMENT
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = [study]
    return frame


def _roi_contour(number: int, segment: Segment, source_datasets: Sequence[Dataset],
                 ) -> tuple[Dataset, int]:
    """The ROIContourSequence item of one segment, and its longest ContourData in bytes."""
    item = Dataset()
    longest = 0
    item.ROIDisplayColor = [int(c) for c in segment.color_rgb]
    contours: list[Dataset] = []
    for k, source in enumerate(source_datasets):
        if not segment.mask[k].any():
            continue
        for points in trace_slice_contours(segment.mask[k]):
            contour = Dataset()
            contour.ContourImageSequence = [_image_reference(source)]
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourNumber = len(contours) + 1
            longest = max(longest, _set_contour_data(contour, contour_data(points, source)))
            contours.append(contour)
    if contours:
        item.ContourSequence = contours
    item.ReferencedROINumber = number
    return item, longest


def _check_segments(segments: Sequence[Segment]) -> None:
    for segment in segments:
        kind = segment.rt_interpreted_type
        if not kind or len(kind) > 16 or kind != kind.upper() or not kind.replace("_", "").isalnum():
            raise ValueError(
                f"segment {segment.label!r}: rt_interpreted_type must be an uppercase CS "
                "defined term such as GTV, ORGAN, EXTERNAL"
            )
        if len(segment.color_rgb) != 3 or any(not 0 <= c <= 255 for c in segment.color_rgb):
            raise ValueError(f"segment {segment.label!r}: color_rgb must be three values 0-255")
        if segment.label != segment.label.strip() or "\\" in segment.label:
            raise ValueError(f"segment {segment.label!r}: ROI name needs no surrounding spaces")


def build_rtstruct(
    findings: Findings,
    source_datasets: Sequence[Dataset] | SourceGrid,
    options: ResultOptions,
    *,
    series_uid: str | None = None,
) -> Dataset:
    """Encode the engine's segments as an RT Structure Set with CLOSED_PLANAR contours.

    Parameters
    ----------
    findings
        Engine output with at least one segment; not declined.  ``Segment.label`` becomes
        ROIName, ``Segment.rt_interpreted_type`` RTROIInterpretedType.
    source_datasets
        The pseudonymized source slices in the engine's volume order
        (``segment.mask[k]`` lies on ``source_datasets[k]``).
    options
        Equipment identification and series numbering.
    series_uid
        The source series; default ``findings.source_series_uid``.  Only the segments on it
        become ROIs (numbered 1..n in engine order, as in its SEG).

    Returns
    -------
    pydicom.dataset.Dataset
        The RT Structure Set (file meta set: Explicit VR Little Endian, or Implicit VR
        Little Endian when a contour is too long for Explicit VR), approval status UNAPPROVED.

    Raises
    ------
    ValueError
        If the findings are declined or have no segments, a segment cannot be an ROI, the
        masks do not lie on the source grid, or the source is not single-frame slices
        (planar views have no patient-space contours).
    """
    grid = check_source_series(findings, source_datasets if isinstance(
        source_datasets, SourceGrid) else source_grid(source_datasets), series_uid)
    if findings.declined:
        raise ValueError("declined findings have no structure set")
    if not grid.tomographic:
        raise ValueError("an RT structure set needs single-frame tomographic source slices")
    segments = segments_on(findings, grid.series_uid)
    if not segments:
        raise ValueError("findings have no segments: nothing to put in a structure set")
    _check_segments(segments)
    source_datasets = list(grid.instances)

    first = source_datasets[0]
    now = dt.datetime.now()
    ds = Dataset()
    copy_patient_study(first, ds)
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = new_uid()
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    # RT Series
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = new_uid()
    ds.SeriesNumber = options.series_number(RTSTRUCT_SERIES_OFFSET)
    ds.SeriesDescription = series_description("RTSTRUCT", findings)
    ds.SeriesDate = ds.InstanceCreationDate
    ds.SeriesTime = ds.InstanceCreationTime
    ds.OperatorsName = ""
    # Frame of Reference (optional in the IOD, but dciodvfy and TPSs want it)
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "") or ""
    # General Equipment
    ds.Manufacturer = options.manufacturer
    ds.ManufacturerModelName = options.manufacturer_model_name
    ds.DeviceSerialNumber = options.device_serial_number
    ds.SoftwareVersions = options.software_version
    if options.institution_label:
        ds.InstitutionName = options.institution_label
    # Structure Set
    ds.InstanceNumber = 1
    ds.StructureSetLabel = content_label(findings)
    ds.StructureSetName = ascii_text(f"AI {findings.engine.name}", 64)
    ds.StructureSetDescription = ascii_text(
        f"Automatic contours by {findings.engine.name} {findings.engine.version}. "
        + ("Research use only, not for diagnosis or treatment."
           if findings.engine.research_use_only else "Not verified by a person."),
        1024,
    )
    ds.StructureSetDate = ds.InstanceCreationDate
    ds.StructureSetTime = ds.InstanceCreationTime
    ds.ReferencedFrameOfReferenceSequence = [_referenced_frame_of_reference(source_datasets)]

    rois, roi_contours, observations = [], [], []
    longest = 0
    generation = ascii_text(f"{findings.engine.name} {findings.engine.version}", 64)
    for number, segment in enumerate(segments, start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
        roi.ROIName = segment.label
        if segment.description:
            roi.ROIDescription = ascii_text(segment.description, 64)
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi.ROIGenerationDescription = generation
        rois.append(roi)
        roi_contour, longest_here = _roi_contour(number, segment, source_datasets)
        roi_contours.append(roi_contour)
        longest = max(longest, longest_here)
        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.ROIObservationLabel = segment.label
        observation.RTROIInterpretedType = segment.rt_interpreted_type
        observation.ROIInterpreter = ""
        observations.append(observation)
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = roi_contours
    ds.RTROIObservationsSequence = observations
    # Approval: AI contours are never approved by the writer.
    ds.ApprovalStatus = "UNAPPROVED"
    # A contour of thousands of points does not fit Explicit VR's 16-bit length; rather than
    # thin it, the structure set goes out in Implicit VR, which every peer must accept.
    set_file_meta(ds, ExplicitVRLittleEndian if longest <= EXPLICIT_VR_MAX_LENGTH
                  else ImplicitVRLittleEndian)
    return ds
