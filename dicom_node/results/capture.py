"""Key images: Secondary Capture (RGB) pictures of the findings for viewers without SEG/SR.

One SC Image Storage instance per key slice (plain SC, not multi-frame: it validates
cleanly with dciodvfy and every PACS stores it).  The picture is the source slice in its
modality's window (:func:`display_window`), upscaled, with any voxel map as a jet overlay, with each segment's outline in its colour, long/short axis lines,
a text panel with label, volume, axes and mean HU, and a banner saying that this is an AI
result not for diagnosis.  BurnedInAnnotation is YES (it carries text), but only engine
output is drawn: never a patient or study attribute.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from skimage.measure import find_contours

from ai_engines import codes as engine_codes
from ai_engines.findings import Classification, Findings, Segment
from dicom_node.results.options import SC_SERIES_OFFSET, ResultOptions
from dicom_node.results.pm import maps_on
from dicom_node.results.seg import segments_on
from dicom_node.results.source import (
    SourceGrid,
    ascii_text,
    check_source_series,
    copy_patient_study,
    new_uid,
    replace_generated_uids,
    series_description,
    set_file_meta,
    source_grid,
    uids_in,
)

LUNG_WINDOW = (-600.0, 1500.0)  # centre, width in HU
BRAIN_WINDOW = (40.0, 80.0)  # centre, width in HU, for head CT
# MR has no absolute scale: a window over the slice's 1st-99.5th percentile.
MR_PERCENTILES = (1.0, 99.5)
# NM/PET counts: inverted grey (high counts dark, as nuclear medicine reads), from zero to a
# high percentile of the shown frames so one hot bladder does not wash out the skeleton.
COUNT_PERCENTILE = 99.5
_HEAD_PARTS = frozenset({"HEAD", "BRAIN", "SKULL"})
MIN_IMAGE_SIZE = 512  # pixels; small matrices are upscaled so outlines and text are legible
PANEL_WIDTH = 260
BANNER_HEIGHT = 22
CAPTION_HEIGHT = 14  # view name above each planar view
BANNER = "AI RESULT - NOT FOR DIAGNOSIS - RESEARCH USE ONLY"
BANNER_NOT_RUO = "AI RESULT - NOT VERIFIED BY A PERSON"
# Voxel-map overlay: values at or below this fraction of the map's maximum stay clear; above
# it the colour's opacity rises to MAP_ALPHA.
MAP_FLOOR = 0.2
MAP_ALPHA = 0.6


def _banner(findings: Findings) -> str:
    text = BANNER if findings.engine.research_use_only else BANNER_NOT_RUO
    if findings.decline is not None:
        text = f"AI DECLINED ({ascii_text(findings.decline.code, 32)}) - NOT FOR DIAGNOSIS"
    return text


def key_slice(segment: Segment) -> int | None:
    """The segment's key slice, or the slice of largest area; ``None`` if the mask is empty."""
    areas = segment.mask.reshape(segment.mask.shape[0], -1).sum(axis=1)
    if not areas.any():
        return None
    if segment.key_slice is not None and 0 <= segment.key_slice < len(areas):
        return int(segment.key_slice)
    return int(np.argmax(areas))


def display_window(grid: SourceGrid, values: np.ndarray) -> tuple[float, float, bool]:
    """(low, high, inverted) display range for ``values`` of the grid's modality.

    CT: lung window (brain window when BodyPartExamined names the head); MR: the 1st-99.5th
    percentile; NM and PT: counts from zero to the 99.5th percentile, inverted; other
    modalities: the 1st-99th percentile.
    """
    modality = grid.modality
    if modality == "CT":
        part = str(grid.first.get("BodyPartExamined", "") or "").upper()
        centre, width = BRAIN_WINDOW if part in _HEAD_PARTS else LUNG_WINDOW
        return centre - width / 2, centre + width / 2, False
    if modality in ("NM", "PT"):
        high = float(np.percentile(values, COUNT_PERCENTILE))
        return 0.0, max(high, 1e-6), True
    low_p, high_p = MR_PERCENTILES if modality == "MR" else (1.0, 99.0)
    low, high = (float(v) for v in np.percentile(values, [low_p, high_p]))
    return low, max(high, low + 1.0), False


def _grey(values: np.ndarray, window: tuple[float, float, bool]) -> np.ndarray:
    low, high, inverted = window
    scaled = np.clip((values - low) / (high - low), 0, 1)
    if inverted:
        scaled = 1.0 - scaled
    return (scaled * 255).astype(np.uint8)


def jet(values: np.ndarray) -> np.ndarray:
    """The jet colour map: ``values`` in [0, 1] to RGB floats in [0, 1] (shape + (3,))."""
    v = np.clip(values, 0, 1)[..., None]
    centres = np.asarray([0.75, 0.5, 0.25])  # red, green, blue peaks
    return np.clip(1.5 - np.abs(4 * v - 4 * centres), 0, 1)


def _map_overlay(rgb: np.ndarray, values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``rgb`` (uint8) with ``values`` blended on top in jet colours."""
    norm = np.clip((values - low) / max(high - low, 1e-12), 0, 1)
    alpha = MAP_ALPHA * np.clip((norm - MAP_FLOOR) / (1 - MAP_FLOOR), 0, 1)[..., None]
    blended = rgb.astype(np.float64) * (1 - alpha) + jet(norm) * 255 * alpha
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _measurement_lines(segment: Segment, number: int | None = None) -> list[str]:
    head = ascii_text(segment.label, 16)
    lines = [f"[{number}] {head}" if number is not None else head]
    for m in segment.measurements:
        name = m.modifier if m.modifier in (engine_codes.LONG_AXIS, engine_codes.SHORT_AXIS) \
            else m.name
        if m.name == engine_codes.VOLUME and m.unit == engine_codes.UNIT_MM3:
            lines.append(f"  Volume {m.value / 1000:.2f} ml")
        elif m.name == engine_codes.VOLUME:
            lines.append(f"  Volume {m.value:.2f} {ascii_text(m.unit.value, 8)}")
        elif m.unit == engine_codes.UNIT_HU:
            lines.append(f"  Mean {m.value:.0f} HU" if engine_codes.MEAN in (m.name, m.modifier)
                         else f"  {ascii_text(name.meaning, 20)} {m.value:.0f} HU")
        else:
            unit = ascii_text(m.unit.value, 8)
            lines.append(f"  {ascii_text(name.meaning, 20)} {m.value:.1f} {unit}")
    if segment.probability is not None:
        lines.append(f"  Probability {segment.probability:.2f}")
    return lines


def _classification_lines(classification: Classification) -> list[str]:
    verdict = "POSITIVE" if classification.positive else "negative"
    return [ascii_text(classification.finding.meaning, 38),
            f"  p = {classification.probability:.2f} (threshold {classification.threshold:g})"
            f" {verdict}"]


def _picture(findings: Findings, grid: SourceGrid, frames: Sequence[int],
             key: int | None) -> np.ndarray:
    """One picture: the slices ``frames`` side by side (one for tomographic sources, every
    view for planar ones), maps and outlines drawn on them, and a text panel.

    ``key`` is the slice whose segments' measurements the panel lists (tomographic), or
    ``None`` for a picture without a key slice.
    """
    series_uid = grid.series_uid
    segments = segments_on(findings, series_uid) if not findings.declined else []
    voxel_maps = maps_on(findings, series_uid) if not findings.declined else []
    numbered = any(s.probability is not None for s in segments)
    values = [grid.frame_pixels(k) for k in frames]
    window = display_window(grid, np.stack(values))
    rows, cols = values[0].shape
    scale = max(1, math.ceil(MIN_IMAGE_SIZE / max(rows, cols)))
    caption = CAPTION_HEIGHT if grid.planar else 0
    top = BANNER_HEIGHT + caption
    width = cols * scale * len(frames) + PANEL_WIDTH
    picture = Image.new("RGB", (width, rows * scale + top))
    for index, (k, slice_values) in enumerate(zip(frames, values, strict=True)):
        rgb = np.repeat(_grey(slice_values, window)[..., None], 3, axis=2)
        for voxel_map in voxel_maps:
            finite = voxel_map.values[np.isfinite(voxel_map.values)]
            if finite.size:
                low = min(float(finite.min()), 0.0)
                rgb = _map_overlay(rgb, np.nan_to_num(voxel_map.values[k]), low,
                                   float(finite.max()))
        image = Image.fromarray(rgb).resize((cols * scale, rows * scale),
                                            Image.Resampling.NEAREST)
        picture.paste(image, (index * cols * scale, top))
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()

    def to_xy(index: int, row: float, col: float) -> tuple[float, float]:
        # Pixel (row, col) centre of view ``index`` in the upscaled picture, below the banner.
        return ((col + 0.5) * scale + index * cols * scale, (row + 0.5) * scale + top)

    text: list[str] = []
    for index, k in enumerate(frames):
        if grid.planar:
            draw.text((index * cols * scale + 4, BANNER_HEIGHT + 1),
                      grid.view(k) or f"VIEW {index + 1}",
                      fill=(255, 255, 0), font=font)
        for number, segment in enumerate(segments, start=1):
            colour = tuple(int(c) for c in segment.color_rgb)
            if segment.mask[k].any():
                for contour in find_contours(np.pad(segment.mask[k], 1).astype(np.float32), 0.5):
                    points = [to_xy(index, r - 1, c - 1) for r, c in contour]
                    draw.line(points, fill=colour, width=2)
                if numbered:
                    # The segment number (= SEG segment and RTSTRUCT ROI number) by its outline.
                    where = np.argwhere(segment.mask[k])
                    row, col = where[:, 0].min(), where[:, 1].max()
                    x, y = to_xy(index, float(row), float(col))
                    draw.text((x + 4, y - 12), str(number), fill=colour, font=font)
            if key_slice(segment) == k and (key is None or key == k):
                for axis in (segment.long_axis, segment.short_axis):
                    if axis is not None:
                        (_, r0, c0), (_, r1, c1) = axis
                        draw.line([to_xy(index, r0, c0), to_xy(index, r1, c1)], fill=colour,
                                  width=1)
                text.extend(_measurement_lines(segment, number if numbered else None))
    for classification in findings.classifications if not findings.declined else ():
        if classification.source is not None and (
                classification.source_series_uid or findings.source_series_uid) == series_uid:
            text.extend(_classification_lines(classification))
    for voxel_map in voxel_maps:
        finite = voxel_map.values[np.isfinite(voxel_map.values)]
        top_value = float(finite.max()) if finite.size else 0.0
        text.append(ascii_text(f"Map {voxel_map.label} (colour, max {top_value:.3g})", 60))
    if findings.decline is not None:
        text.extend(["Engine declined:", ascii_text(findings.decline.reason, 200)])
    elif not any(s.mask.any() for s in segments) and not voxel_maps and not text:
        text.append("No segment found.")
    if not grid.planar and (key is not None or voxel_maps):
        text.append(f"Slice {frames[0] + 1} of {grid.shape[0]}")
    engine = findings.engine
    text.extend(["", ascii_text(f"{engine.name}", 40), ascii_text(f"v{engine.version}", 40)])
    y = BANNER_HEIGHT + 6
    panel_x = cols * scale * len(frames) + 8
    for line in text:
        for start in range(0, max(len(line), 1), 38):  # wrap long lines in the panel
            draw.text((panel_x, y), line[start:start + 38], fill=(255, 255, 255), font=font)
            y += 14
    draw.rectangle([0, 0, picture.width, BANNER_HEIGHT - 1], fill=(160, 0, 0))
    draw.text((6, 5), _banner(findings), fill=(255, 255, 255), font=font)
    return np.asarray(picture, dtype=np.uint8)


def _patient_orientation(source: Dataset) -> tuple[str, str]:
    """Patient Orientation letters (row direction, column direction) from IOP (top level or
    the shared Plane Orientation of an enhanced image), else the source's own Patient
    Orientation (planar NM), else the anterior view's ("L", "F")."""
    iop = source.get("ImageOrientationPatient")
    shared = (source.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    if iop is None and shared.get("PlaneOrientationSequence"):
        iop = shared.PlaneOrientationSequence[0].get("ImageOrientationPatient")
    if iop is not None:
        letters = (("L", "R"), ("P", "A"), ("H", "F"))
        result = []
        for direction in (iop[:3], iop[3:]):
            vector = [float(v) for v in direction]
            axis = int(np.argmax(np.abs(vector)))
            result.append(letters[axis][0] if vector[axis] > 0 else letters[axis][1])
        return result[0], result[1]
    given = [str(v) for v in (source.get("PatientOrientation") or [])]
    if len(given) == 2 and all(v and set(v) <= set("LRAPHF") for v in given):
        return given[0], given[1]
    return "L", "F"


def _pictures(findings: Findings, grid: SourceGrid) -> list[tuple[list[int], int | None]]:
    """(slices side by side, key slice) of each picture to draw for one source series."""
    if grid.planar:
        return [(list(range(grid.shape[0])), None)]
    middle: list[tuple[list[int], int | None]] = [([grid.shape[0] // 2], None)]
    if findings.declined:
        return middle
    slices = {k for k in (key_slice(s) for s in segments_on(findings, grid.series_uid))
              if k is not None}
    for voxel_map in maps_on(findings, grid.series_uid):
        if not slices:  # no segment to show: the map's hottest slice
            peaks = np.nan_to_num(voxel_map.values, nan=-np.inf).reshape(
                grid.shape[0], -1).max(axis=1)
            slices.add(int(np.argmax(peaks)))
    for classification in findings.classifications:
        if classification.source is not None:
            for k, item in enumerate(grid.slices):
                if (str(item.dataset.SOPInstanceUID) == classification.source.sop_instance_uid
                        and item.frame_number == (classification.source.frame_number
                                                  if item.frame_number is not None else None)):
                    slices.add(k)
    return [([k], k) for k in sorted(slices)] or middle


def build_key_images(
    findings: Findings,
    source_datasets: Sequence[Dataset] | SourceGrid,
    options: ResultOptions,
    *,
    series_uid: str | None = None,
) -> list[Dataset]:
    """Draw the findings over their key slices as RGB Secondary Capture images.

    Parameters
    ----------
    findings
        Engine output; a declined run or one without non-empty segments, maps or image-level
        classifications gives one image of the middle slice with the decline reason or
        "no segment found".  A planar source (NM anterior/posterior views) gives one image
        with every view side by side.
    source_datasets
        The pseudonymized source series (slices in the engine's volume order, one
        multi-frame instance, or a grid).
    options
        Equipment identification and series numbering.
    series_uid
        The source series; default ``findings.source_series_uid``.

    Returns
    -------
    list of pydicom.dataset.Dataset
        SC Image Storage instances of one new series, one per key slice, in slice order.

    Raises
    ------
    ValueError
        If the source series does not match the findings.
    """
    grid = (source_datasets if isinstance(source_datasets, SourceGrid)
            else source_grid(source_datasets))
    grid = check_source_series(findings, grid, series_uid)
    series = new_uid()
    keep = uids_in(grid.instances)
    images: list[Dataset] = []
    for number, (frames, key) in enumerate(_pictures(findings, grid), start=1):
        pixels = _picture(findings, grid, frames, key)
        source = grid.slices[frames[0]].dataset
        image = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=pixels,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=series,
            series_number=options.series_number(SC_SERIES_OFFSET),
            sop_instance_uid=new_uid(),
            instance_number=number,
            manufacturer=options.manufacturer,
            patient_orientation=_patient_orientation(source),
            transfer_syntax_uid=ExplicitVRLittleEndian,
        )
        copy_patient_study(source, image)
        image.ConversionType = "WSD"  # drawn by this workstation, not digitised
        image.BurnedInAnnotation = "YES"
        # Type 2C in General Series; dciodvfy wants it present, and a chest is unpaired.
        image.Laterality = ""
        image.SeriesDescription = series_description("KEY IMAGES", findings)
        image.ImageComments = ascii_text(_banner(findings), 10240)
        image.ManufacturerModelName = options.manufacturer_model_name
        image.SoftwareVersions = options.software_version
        image.DeviceSerialNumber = options.device_serial_number
        if options.institution_label:
            image.InstitutionName = options.institution_label
        image.SourceImageSequence = [grid.reference(k) for k in frames]
        if "FrameOfReferenceUID" in image:
            del image.FrameOfReferenceUID  # a drawn picture is not on the source grid
        replace_generated_uids(image, keep=keep)
        set_file_meta(image)
        images.append(image)
    return images
