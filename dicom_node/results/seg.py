"""DICOM Segmentation (BINARY) of an engine's masks, on the source grid.

Empty-result policy: a SEG needs at least one coded segment, so findings without any
segment get no SEG (``build_result_objects`` leaves it out and the SR says so).  Segments
whose masks are empty are kept as described segments; when every mask is empty the SEG
encodes all frames as zeros (highdicom cannot omit all frames), so "the engine looked and
found nothing" is still a valid, displayable SEG.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from ai_engines.findings import Findings, Segment
from dicom_node.results.coding import coded_concept
from dicom_node.results.options import SEG_SERIES_OFFSET, ResultOptions
from dicom_node.results.source import (
    SourceGrid,
    add_referenced_frame,
    ascii_text,
    check_source_series,
    content_label,
    new_uid,
    planar_frame_proxy,
    replace_generated_uids,
    series_description,
    set_file_meta,
    source_grid,
    uids_in,
)

logger = logging.getLogger(__name__)


def segmentation_algorithm(findings: Findings) -> hd.AlgorithmIdentificationSequence:
    """Algorithm identification: family DCM 123110 "Artificial Intelligence", name, version."""
    return hd.AlgorithmIdentificationSequence(
        name=ascii_text(findings.engine.name, 64),
        family=codes.cid7162.ArtificialIntelligence,
        version=ascii_text(findings.engine.version, 64),
    )


def _segment_description(
    number: int,
    segment: Segment,
    algorithm: hd.AlgorithmIdentificationSequence,
) -> hd.seg.SegmentDescription:
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment.label,
        segmented_property_category=coded_concept(segment.category),
        segmented_property_type=coded_concept(segment.property_type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_uid=new_uid(),
        tracking_id=segment.tracking_id or segment.label,
        anatomic_regions=(
            [coded_concept(segment.anatomic_region)] if segment.anatomic_region else None
        ),
        display_color=hd.color.CIELabColor.from_rgb(*segment.color_rgb),
    )
    if segment.property_modifier is not None:
        # Type modifier (e.g. Right/Left for Lung) sits inside the property type item.
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            coded_concept(segment.property_modifier)
        ]
    if segment.description:
        description.SegmentDescription = ascii_text(segment.description, 1024)
    return description


def segments_on(findings: Findings, series_uid: str) -> list[Segment]:
    """The findings' segments whose masks lie on ``series_uid``, in engine order.

    Their 1-based position in this list is their SEG Segment Number and RTSTRUCT ROI Number.
    """
    return [s for s in findings.segments
            if (s.source_series_uid or findings.source_series_uid) == series_uid]


def build_segmentation(
    findings: Findings,
    source_datasets: Sequence[Dataset] | SourceGrid,
    options: ResultOptions,
) -> Dataset:
    """Encode the engine's segments as one BINARY DICOM Segmentation.

    The SEG is a new series in the source study with the source FrameOfReferenceUID, on the
    source grid (one frame per source slice and non-empty segment), with a top-level
    ReferencedSeriesSequence and per-frame source image references.

    Parameters
    ----------
    findings
        Engine output with at least one segment; not declined.
    source_datasets
        The pseudonymized source slices in the engine's volume order
        (``segment.mask[k]`` lies on ``source_datasets[k]``), or one multi-frame instance.
    options
        Equipment identification and series numbering.

    Returns
    -------
    pydicom.dataset.Dataset
        The Segmentation instance (Explicit VR Little Endian, file meta set).

    Raises
    ------
    ValueError
        If the findings are declined or have no segments, the masks do not lie on the
        source grid, or the source is planar (use :func:`build_segmentations`: one SEG per
        view).
    """
    segmentations = build_segmentations(findings, source_datasets, options)
    if len(segmentations) != 1:
        raise ValueError("a planar source gives one SEG per view: use build_segmentations")
    return segmentations[0]


def build_segmentations(
    findings: Findings,
    source_datasets: Sequence[Dataset] | SourceGrid,
    options: ResultOptions,
    *,
    series_uid: str | None = None,
) -> list[Dataset]:
    """Encode the segments on one source series as BINARY DICOM Segmentation(s).

    Tomographic and enhanced multi-frame sources give one SEG.  A planar multi-frame source
    (NM whole-body anterior/posterior) gives one SEG per view that holds a segment (the first
    view when every mask is empty), all in one series: planar views have no patient-space
    position, and highdicom encodes a source without one a frame at a time.  Each such SEG
    references its NM frame by ReferencedFrameNumber and carries the source's Frame of
    Reference UID when it has one.

    Parameters
    ----------
    findings
        Engine output with at least one segment on the series; not declined.
    source_datasets
        The source series (slices in volume order, one multi-frame instance, or a grid).
    options
        Equipment identification and series numbering.
    series_uid
        The source series; default ``findings.source_series_uid``.

    Returns
    -------
    list of pydicom.dataset.Dataset
        The Segmentation instances, one series.

    Raises
    ------
    ValueError
        If the findings are declined or have no segments on the series, or the masks do not
        lie on the source grid.
    """
    grid = (source_datasets if isinstance(source_datasets, SourceGrid)
            else source_grid(source_datasets))
    grid = check_source_series(findings, grid, series_uid)
    if findings.declined:
        raise ValueError("declined findings have no segmentation")
    segments = segments_on(findings, grid.series_uid)
    if not segments:
        raise ValueError("findings have no segments: a SEG needs at least one coded segment")
    for segment in segments:
        if any(not 0 <= c <= 255 for c in segment.color_rgb) or len(segment.color_rgb) != 3:
            raise ValueError(f"segment {segment.label!r}: color_rgb must be three values 0-255")

    algorithm = segmentation_algorithm(findings)
    descriptions = [
        _segment_description(number, segment, algorithm)
        for number, segment in enumerate(segments, start=1)
    ]
    # (frames, rows, columns, segments): highdicom's layout for several binary segments.
    # Filled in place: stacking booleans and casting would hold the stack twice.
    pixel_array = np.empty((*segments[0].mask.shape, len(segments)), np.uint8)
    for index, segment in enumerate(segments):
        pixel_array[..., index] = segment.mask
    if not pixel_array.any():
        logger.info("all segment masks are empty: writing an all-zero segmentation")

    series = new_uid()
    keep = uids_in(grid.instances)
    if grid.planar:
        views = [k for k in range(grid.shape[0]) if pixel_array[k].any()] or [0]
        objects = []
        for number, k in enumerate(views, start=1):
            item = grid.slices[k]
            seg = _segmentation(findings, [planar_frame_proxy(item.dataset)],
                                pixel_array[k:k + 1], descriptions, series, number, options)
            if item.frame_number is not None:
                add_referenced_frame(seg, str(item.dataset.SOPInstanceUID), item.frame_number)
            if "FrameOfReferenceUID" in item.dataset:
                seg.FrameOfReferenceUID = item.dataset.FrameOfReferenceUID
                seg.PositionReferenceIndicator = item.dataset.get("PositionReferenceIndicator", "")
            # General Image Type 2C (no patient-space orientation): the view's letters.
            seg.PatientOrientation = item.dataset.get("PatientOrientation", "")
            objects.append(seg)
    elif grid.multiframe:
        # highdicom wants the frames in the source's frame order.
        frames = np.empty_like(pixel_array)
        for k, item in enumerate(grid.slices):
            frames[int(item.frame_number or 1) - 1] = pixel_array[k]
        objects = [_segmentation(findings, [grid.first], frames, descriptions, series, 1,
                                 options)]
    else:
        objects = [_segmentation(findings, list(grid.instances), pixel_array, descriptions,
                                 series, 1, options)]
    for seg in objects:
        replace_generated_uids(seg, keep=keep)
        set_file_meta(seg)
    return objects


def _segmentation(
    findings: Findings,
    source_images: list[Dataset],
    pixel_array: np.ndarray,
    descriptions: list[hd.seg.SegmentDescription],
    series_uid: str,
    instance_number: int,
    options: ResultOptions,
) -> Dataset:
    with warnings.catch_warnings():
        # highdicom warns when it must keep all-empty frames; that is our documented policy.
        warnings.filterwarnings("ignore", message=".*omitting all frames.*")
        seg = hd.seg.Segmentation(
            source_images=source_images,
            pixel_array=pixel_array,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=series_uid,
            series_number=options.series_number(SEG_SERIES_OFFSET),
            sop_instance_uid=new_uid(),
            instance_number=instance_number,
            manufacturer=options.manufacturer,
            manufacturer_model_name=options.manufacturer_model_name,
            software_versions=options.software_version,
            device_serial_number=options.device_serial_number,
            content_label=content_label(findings),
            content_description=ascii_text(
                f"AI segmentation {findings.engine.name} {findings.engine.version}", 64
            ),
            series_description=series_description("SEG", findings),
            transfer_syntax_uid=ExplicitVRLittleEndian,
            omit_empty_frames=True,
        )
    if options.institution_label:
        seg.InstitutionName = options.institution_label
    return seg
