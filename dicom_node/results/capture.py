"""Key images: Secondary Capture (RGB) pictures of the findings for viewers without SEG/SR.

One SC Image Storage instance per key slice (plain SC, not multi-frame: it validates
cleanly with dciodvfy and every PACS stores it).  The picture is the source slice in a
lung window, upscaled, with each segment's outline in its colour, long/short axis lines,
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
from ai_engines.findings import Findings, Segment
from dicom_node.results.options import SC_SERIES_OFFSET, ResultOptions
from dicom_node.results.source import (
    ascii_text,
    check_source_series,
    copy_patient_study,
    new_uid,
    replace_generated_uids,
    series_description,
    set_file_meta,
    uids_in,
)

LUNG_WINDOW = (-600.0, 1500.0)  # centre, width in HU
MIN_IMAGE_SIZE = 512  # pixels; small matrices are upscaled so outlines and text are legible
PANEL_WIDTH = 260
BANNER_HEIGHT = 22
BANNER = "AI RESULT - NOT FOR DIAGNOSIS - RESEARCH USE ONLY"
BANNER_NOT_RUO = "AI RESULT - NOT VERIFIED BY A PERSON"


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


def _windowed_grey(source: Dataset) -> np.ndarray:
    stored = source.pixel_array.astype(np.float64)
    values = stored * float(source.get("RescaleSlope", 1) or 1) + float(
        source.get("RescaleIntercept", 0) or 0)
    if source.get("Modality") == "CT":
        centre, width = LUNG_WINDOW
    else:  # no HU scale: use the slice's own range
        low, high = np.percentile(values, [1, 99])
        centre, width = (low + high) / 2, max(high - low, 1.0)
    grey = np.clip((values - (centre - width / 2)) / width, 0, 1) * 255
    return grey.astype(np.uint8)


def _measurement_lines(segment: Segment) -> list[str]:
    lines = [ascii_text(segment.label, 16)]
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
    return lines


def _picture(findings: Findings, source: Dataset, k: int | None) -> np.ndarray:
    grey = _windowed_grey(source)
    rows, cols = grey.shape
    scale = max(1, math.ceil(MIN_IMAGE_SIZE / max(rows, cols)))
    picture = Image.new("RGB", (cols * scale + PANEL_WIDTH, rows * scale + BANNER_HEIGHT))
    slice_image = Image.fromarray(grey).resize((cols * scale, rows * scale),
                                              Image.Resampling.NEAREST)
    picture.paste(slice_image.convert("RGB"), (0, BANNER_HEIGHT))
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()

    def to_xy(row: float, col: float) -> tuple[float, float]:
        # Pixel (row, col) centre in the upscaled picture, below the banner.
        return ((col + 0.5) * scale, (row + 0.5) * scale + BANNER_HEIGHT)

    text: list[str] = []
    if k is not None:
        for segment in findings.segments:
            colour = tuple(int(c) for c in segment.color_rgb)
            if segment.mask[k].any():
                for contour in find_contours(np.pad(segment.mask[k], 1).astype(np.float32), 0.5):
                    points = [to_xy(r - 1, c - 1) for r, c in contour]
                    draw.line(points, fill=colour, width=2)
            if key_slice(segment) == k:
                for axis in (segment.long_axis, segment.short_axis):
                    if axis is not None:
                        (_, r0, c0), (_, r1, c1) = axis
                        draw.line([to_xy(r0, c0), to_xy(r1, c1)], fill=colour, width=1)
                text.extend(_measurement_lines(segment))
        text.append(f"Slice {k + 1} of {len(findings.segments[0].mask)}")
    elif findings.decline is not None:
        text.extend(["Engine declined:", ascii_text(findings.decline.reason, 200)])
    else:
        text.append("No segment found.")
    engine = findings.engine
    text.extend(["", ascii_text(f"{engine.name}", 40), ascii_text(f"v{engine.version}", 40)])
    y = BANNER_HEIGHT + 6
    panel_x = cols * scale + 8
    for line in text:
        for start in range(0, max(len(line), 1), 38):  # wrap long lines in the panel
            draw.text((panel_x, y), line[start:start + 38], fill=(255, 255, 255), font=font)
            y += 14
    draw.rectangle([0, 0, picture.width, BANNER_HEIGHT - 1], fill=(160, 0, 0))
    draw.text((6, 5), _banner(findings), fill=(255, 255, 255), font=font)
    return np.asarray(picture, dtype=np.uint8)


def _patient_orientation(source: Dataset) -> tuple[str, str]:
    """Patient Orientation letters (row direction, column direction) from IOP."""
    letters = (("L", "R"), ("P", "A"), ("H", "F"))
    result = []
    for direction in (source.ImageOrientationPatient[:3], source.ImageOrientationPatient[3:]):
        vector = [float(v) for v in direction]
        axis = int(np.argmax(np.abs(vector)))
        result.append(letters[axis][0] if vector[axis] > 0 else letters[axis][1])
    return result[0], result[1]


def build_key_images(
    findings: Findings,
    source_datasets: Sequence[Dataset],
    options: ResultOptions,
) -> list[Dataset]:
    """Draw the findings over their key slices as RGB Secondary Capture images.

    Parameters
    ----------
    findings
        Engine output; a declined run or one without non-empty segments gives one image of
        the middle slice with the decline reason or "no segment found".
    source_datasets
        The pseudonymized source slices in the engine's volume order.
    options
        Equipment identification and series numbering.

    Returns
    -------
    list of pydicom.dataset.Dataset
        SC Image Storage instances of one new series, one per key slice, in slice order.

    Raises
    ------
    ValueError
        If the source series does not match the findings.
    """
    check_source_series(findings, source_datasets)
    slices = sorted({
        k for k in (key_slice(s) for s in findings.segments) if k is not None
    }) if not findings.declined else []
    pictures: list[tuple[int | None, Dataset]] = (
        [(k, source_datasets[k]) for k in slices]
        or [(None, source_datasets[len(source_datasets) // 2])]
    )
    series_uid = new_uid()
    keep = uids_in(source_datasets)
    images = []
    for number, (k, source) in enumerate(pictures, start=1):
        pixels = _picture(findings, source, k)
        image = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=pixels,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=series_uid,
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
        reference = Dataset()
        reference.ReferencedSOPClassUID = source.SOPClassUID
        reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
        image.SourceImageSequence = [reference]
        if "FrameOfReferenceUID" in image:
            del image.FrameOfReferenceUID  # a drawn picture is not on the source grid
        replace_generated_uids(image, keep=keep)
        set_file_meta(image)
        images.append(image)
    return images
