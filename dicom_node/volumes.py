"""Build the engines' :class:`~ai_engines.volume.SeriesVolume` from de-identified DICOM datasets.

One place decodes pixel data (any transfer syntax pydicom + pylibjpeg can read), applies the
modality rescale, sorts slices along the slice normal and records the geometry and the header
facts engines check (lossy compression, gantry tilt, kernel...).  Anything that cannot become a
single, consistent volume raises :class:`VolumeError` with a code the job layer records.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array

from ai_engines.selection import SeriesHeader
from ai_engines.volume import AcquisitionFacts, SeriesVolume, SliceReference, VolumeGeometry

VOL_EMPTY = "VOL_EMPTY"
VOL_MIXED_SERIES = "VOL_MIXED_SERIES"
VOL_NO_PIXEL_DATA = "VOL_NO_PIXEL_DATA"
VOL_INCONSISTENT_DIMENSIONS = "VOL_INCONSISTENT_DIMENSIONS"
VOL_MIXED_FRAME_OF_REFERENCE = "VOL_MIXED_FRAME_OF_REFERENCE"
VOL_MIXED_ORIENTATION = "VOL_MIXED_ORIENTATION"
VOL_MISSING_GEOMETRY = "VOL_MISSING_GEOMETRY"
VOL_UNDECODABLE = "VOL_UNDECODABLE"
VOL_NOT_MONOCHROME = "VOL_NOT_MONOCHROME"
NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.20"

# NM projections (CID 26 code meanings, lower case) as SliceReference.view names.
_NM_VIEWS = {
    "anterior": "ANTERIOR", "anterior projection": "ANTERIOR",
    "posterior": "POSTERIOR", "posterior projection": "POSTERIOR",
    "left lateral": "LEFT_LATERAL", "left lateral projection": "LEFT_LATERAL",
    "right lateral": "RIGHT_LATERAL", "right lateral projection": "RIGHT_LATERAL",
}

# Transfer syntaxes whose compression is (or may be) lossy.
LOSSY_TRANSFER_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000 (lossy allowed)
    "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2 multi-component
    "1.2.840.10008.1.2.4.203",  # HTJ2K (lossy allowed)
    "1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101", "1.2.840.10008.1.2.4.102",
    "1.2.840.10008.1.2.4.103", "1.2.840.10008.1.2.4.104", "1.2.840.10008.1.2.4.105",
    "1.2.840.10008.1.2.4.106", "1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108",  # MPEG/HEVC
})

_ORIENTATION_TOLERANCE = 1e-4


class VolumeError(ValueError):
    """The datasets cannot form one consistent volume; ``code`` is stable, ``reason`` for people."""

    def __init__(self, code: str, reason: str) -> None:
        self.code, self.reason = code, reason
        super().__init__(f"{code}: {reason}")


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(getattr(meta, "TransferSyntaxUID", "")) if meta is not None else ""


def _is_lossy(ds: Dataset) -> bool:
    return str(ds.get("LossyImageCompression", "")).strip() == "01" or _transfer_syntax(ds) in LOSSY_TRANSFER_SYNTAXES


def _pixels(ds: Dataset) -> np.ndarray:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise VolumeError(VOL_NO_PIXEL_DATA, f"instance {ds.get('SOPInstanceUID', '?')} has no pixel data")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise VolumeError(VOL_NOT_MONOCHROME, f"instance {ds.get('SOPInstanceUID', '?')} is not single-channel")
    try:
        # Not ds.pixel_array: that keeps a decoded copy on every dataset, which doubles the
        # memory of a 600-slice series while the datasets are still needed for the results.
        return pixel_array(ds)
    except Exception as exc:  # pydicom raises several types for missing decoders / bad data
        raise VolumeError(
            VOL_UNDECODABLE,
            f"instance {ds.get('SOPInstanceUID', '?')} (transfer syntax {_transfer_syntax(ds) or '?'}) "
            f"cannot be decoded: {exc}",
        ) from exc


def _rescale(pixels: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    out = pixels.astype(np.float32, copy=False)
    if slope != 1.0:
        out = out * np.float32(slope)
    if intercept != 0.0:
        out = out + np.float32(intercept)
    return out


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    if not isinstance(value, str) and hasattr(value, "__iter__"):
        return "\\".join(str(v) for v in value)
    return str(value)


def _number(ds: Dataset, keyword: str, *sequences: str) -> float | None:
    """A numeric attribute, top level first, then inside the named (functional group) items."""
    value = ds.get(keyword)
    if value in (None, ""):
        for groups_kw in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            groups = ds.get(groups_kw)
            if not groups:
                continue
            for sequence in sequences:
                item = groups[0].get(sequence)
                if item and keyword in item[0] and item[0].get(keyword) not in (None, ""):
                    value = item[0].get(keyword)
                    break
            if value not in (None, ""):
                break
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _facts(ds: Dataset, lossy: bool) -> AcquisitionFacts:
    kernel = ds.get("ConvolutionKernel")
    if kernel is not None and not isinstance(kernel, str):
        kernel = "\\".join(str(k) for k in kernel)
    kvp = ds.get("KVP")
    extra = {"transfer_syntax": _transfer_syntax(ds)}
    image_type = tuple(str(v) for v in ds.ImageType) if "ImageType" in ds else ()
    if image_type:
        extra["image_type"] = "\\".join(image_type)
    return AcquisitionFacts(
        modality=str(ds.get("Modality", "")),
        manufacturer=str(ds.get("Manufacturer")) if ds.get("Manufacturer") else None,
        body_part=str(ds.get("BodyPartExamined")) if ds.get("BodyPartExamined") else None,
        kernel=str(kernel) if kernel else None,
        kvp=float(kvp) if kvp not in (None, "") else None,
        lossy_compressed=lossy,
        gantry_tilt=float(ds.get("GantryDetectorTilt", 0.0) or 0.0),
        series_description=str(ds.get("SeriesDescription")) if ds.get("SeriesDescription") else None,
        protocol_name=_text(ds, "ProtocolName"),
        sequence_name=_text(ds, "SequenceName") or _text(ds, "PulseSequenceName"),
        scanning_sequence=_text(ds, "ScanningSequence"),
        image_type=image_type,
        echo_time_ms=_number(ds, "EchoTime", "MREchoSequence") or _number(
            ds, "EffectiveEchoTime", "MREchoSequence"),
        repetition_time_ms=_number(ds, "RepetitionTime", "MRTimingAndRelatedParametersSequence"),
        inversion_time_ms=_number(ds, "InversionTime", "MRModifierSequence")
        or _number(ds, "InversionTimes", "MRModifierSequence"),
        contrast_agent=_text(ds, "ContrastBolusAgent"),
        extra=extra,
    )


def series_header(headers: Sequence[Dataset]) -> SeriesHeader:
    """A series' :class:`~ai_engines.selection.SeriesHeader` from its instances' headers.

    ``headers`` may be read with ``stop_before_pixels``: no pixel data is touched.
    """
    if not headers:
        raise VolumeError(VOL_EMPTY, "no instances")
    first = headers[0]
    frames = sum(int(ds.get("NumberOfFrames", 1) or 1) for ds in headers)
    orientation = first.get("ImageOrientationPatient")
    if orientation is None:
        plane = _functional(first, 0, "PlaneOrientationSequence")
        orientation = plane.get("ImageOrientationPatient") if plane is not None else None
    try:
        iop = tuple(float(v) for v in orientation) if orientation else None
    except (TypeError, ValueError):
        iop = None
    image_type = tuple(str(v) for v in first.get("ImageType", []) or [])
    return SeriesHeader(
        series_uid=str(first.get("SeriesInstanceUID", "")),
        modality=str(first.get("Modality", "")),
        sop_class_uid=str(first.get("SOPClassUID", "")),
        instances=len(headers),
        frames=frames,
        description=_text(first, "SeriesDescription"),
        image_type=image_type,
        orientation=iop,
        frame_of_reference_uid=_text(first, "FrameOfReferenceUID"),
        number=_series_number(first),
    )


def _series_number(ds: Dataset) -> int | None:
    try:
        return int(ds.get("SeriesNumber")) if ds.get("SeriesNumber") not in (None, "") else None
    except (TypeError, ValueError):
        return None


def build_volume(datasets: Sequence[Dataset]) -> SeriesVolume:
    """One series' datasets (any order) as a volume sorted along the slice normal.

    Parameters
    ----------
    datasets
        De-identified instances of one series: single-frame images, or one multi-frame image
        (enhanced CT/MR with per-frame functional groups, or a planar NM image).

    Returns
    -------
    SeriesVolume
        Voxels in physical units (rescale applied; HU for CT), ascending position along the
        normal.

    Raises
    ------
    VolumeError
        With codes VOL_EMPTY, VOL_MIXED_SERIES, VOL_NO_PIXEL_DATA, VOL_INCONSISTENT_DIMENSIONS,
        VOL_MIXED_FRAME_OF_REFERENCE, VOL_MIXED_ORIENTATION, VOL_MISSING_GEOMETRY,
        VOL_UNDECODABLE, VOL_NOT_MONOCHROME.
    """
    if not datasets:
        raise VolumeError(VOL_EMPTY, "no instances")
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series) > 1:
        raise VolumeError(VOL_MIXED_SERIES, f"instances of {len(series)} series")
    if len(datasets) == 1 and int(datasets[0].get("NumberOfFrames", 1) or 1) > 1:
        return _build_multiframe(datasets[0])
    first = datasets[0]
    frames = {str(ds.get("FrameOfReferenceUID", "")) for ds in datasets}
    if len(frames) > 1:
        raise VolumeError(VOL_MIXED_FRAME_OF_REFERENCE, f"{len(frames)} frames of reference in one series")
    dims = {(int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) for ds in datasets}
    if len(dims) > 1:
        raise VolumeError(VOL_INCONSISTENT_DIMENSIONS, f"Rows/Columns differ between instances: {sorted(dims)}")
    for ds in datasets:
        if "PixelData" not in ds and "FloatPixelData" not in ds:
            raise VolumeError(VOL_NO_PIXEL_DATA, f"instance {ds.get('SOPInstanceUID', '?')} has no pixel data")
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if keyword not in ds or ds.get(keyword) in (None, ""):
                raise VolumeError(VOL_MISSING_GEOMETRY, f"instance {ds.get('SOPInstanceUID', '?')} lacks {keyword}")
    orientation = np.array([float(v) for v in first.ImageOrientationPatient])
    for ds in datasets[1:]:
        if np.abs(np.array([float(v) for v in ds.ImageOrientationPatient]) - orientation).max() > _ORIENTATION_TOLERANCE:
            raise VolumeError(VOL_MIXED_ORIENTATION, "ImageOrientationPatient differs between instances")
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    origins = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    order = np.argsort(origins @ normal, kind="stable")
    ordered = [datasets[i] for i in order]
    voxels = np.empty((len(ordered), *dims.pop()), dtype=np.float32)
    for k, ds in enumerate(ordered):
        voxels[k] = _rescale(_pixels(ds), float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0))
    spacing = tuple(float(v) for v in first.PixelSpacing)
    thickness = first.get("SliceThickness")
    geometry = VolumeGeometry(
        slice_origins=origins[order],
        row_direction=tuple(float(v) for v in row_dir),  # type: ignore[arg-type]
        column_direction=tuple(float(v) for v in col_dir),  # type: ignore[arg-type]
        pixel_spacing=(spacing[0], spacing[1]),
        slice_thickness=float(thickness) if thickness not in (None, "") else None,
    )
    slices = tuple(SliceReference(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in ordered)
    lossy = any(_is_lossy(ds) for ds in datasets)
    return SeriesVolume(
        series_uid=str(first.get("SeriesInstanceUID", "")),
        frame_of_reference_uid=str(first.FrameOfReferenceUID) if first.get("FrameOfReferenceUID") else None,
        voxels=voxels, geometry=geometry, slices=slices, facts=_facts(first, lossy),
    )


def _functional(ds: Dataset, index: int, sequence: str):
    """A functional group item for frame ``index``: per-frame first, then shared."""
    for groups_kw in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = ds.get(groups_kw)
        if not groups:
            continue
        item = groups[index] if groups_kw.startswith("PerFrame") and len(groups) > index else groups[0]
        if sequence in item and len(item[sequence].value):
            return item[sequence][0]
    return None


def _nm_view(item: Dataset) -> str | None:
    """The projection of one Detector Information item (View Code Sequence), as a name."""
    codes = item.get("ViewCodeSequence")
    if not codes:
        return None
    meaning = str(codes[0].get("CodeMeaning", "")).strip().lower()
    if meaning in _NM_VIEWS:
        return _NM_VIEWS[meaning]
    return meaning.upper().replace(" PROJECTION", "").replace(" ", "_") or None


def _nm_frames(ds: Dataset, n: int) -> list[dict]:
    """Per-frame view, detector and energy window of an NM multi-frame image.

    The NM Multi-frame Module indexes frames by the vectors its Frame Increment Pointer names
    (Energy Window Vector, Detector Vector, ...); a frame's view is its detector's View Code
    Sequence in the Detector Information Sequence.  Empty dicts for other images.
    """
    if str(ds.get("SOPClassUID", "")) != NM_IMAGE_STORAGE and str(ds.get("Modality", "")) != "NM":
        return [{} for _ in range(n)]

    def vector(keyword: str) -> list[int] | None:
        values = ds.get(keyword)
        if values is None or values == "":
            return None
        values = [int(v) for v in (values if hasattr(values, "__iter__") else [values])]
        return values if len(values) == n else None

    detectors = vector("DetectorVector")
    windows = vector("EnergyWindowVector")
    information = list(ds.get("DetectorInformationSequence", []) or [])
    frames = []
    for i in range(n):
        detector = detectors[i] if detectors else (1 if len(information) == 1 else None)
        view = None
        if detector is not None and 1 <= detector <= len(information):
            view = _nm_view(information[detector - 1])
        frames.append({"view": view, "detector": detector,
                       "energy_window": windows[i] if windows else None})
    return frames


def _build_multiframe(ds: Dataset) -> SeriesVolume:
    """Enhanced multi-frame (functional groups) or planar multi-frame (views, e.g. NM)."""
    n = int(ds.NumberOfFrames)
    pixels = _pixels(ds)
    if pixels.ndim == 2:
        pixels = pixels[None]
    origins = np.zeros((n, 3))
    orientation = None
    spacing = None
    slopes, intercepts = np.ones(n), np.zeros(n)
    thickness = ds.get("SliceThickness")
    for i in range(n):
        position = _functional(ds, i, "PlanePositionSequence")
        if position is not None:
            origins[i] = [float(v) for v in position.ImagePositionPatient]
        plane = _functional(ds, i, "PlaneOrientationSequence")
        if plane is not None:
            iop = np.array([float(v) for v in plane.ImageOrientationPatient])
            if orientation is not None and np.abs(iop - orientation).max() > _ORIENTATION_TOLERANCE:
                raise VolumeError(VOL_MIXED_ORIENTATION, "frames have different orientations")
            orientation = iop
        measures = _functional(ds, i, "PixelMeasuresSequence")
        if measures is not None and "PixelSpacing" in measures:
            spacing = tuple(float(v) for v in measures.PixelSpacing)
            thickness = measures.get("SliceThickness", thickness)
        transform = _functional(ds, i, "PixelValueTransformationSequence")
        if transform is not None:
            slopes[i] = float(transform.get("RescaleSlope", 1) or 1)
            intercepts[i] = float(transform.get("RescaleIntercept", 0) or 0)
        else:
            slopes[i] = float(ds.get("RescaleSlope", 1) or 1)
            intercepts[i] = float(ds.get("RescaleIntercept", 0) or 0)
    if orientation is None:
        # Planar views (NM whole body, anterior/posterior): no patient-space stack.
        iop = ds.get("ImageOrientationPatient")
        orientation = np.array([float(v) for v in iop]) if iop else np.array([1.0, 0, 0, 0, 1.0, 0])
    if spacing is None:
        ps = ds.get("PixelSpacing")
        if ps is None:
            raise VolumeError(VOL_MISSING_GEOMETRY, "multi-frame image without PixelSpacing")
        spacing = (float(ps[0]), float(ps[1]))
    normal = np.cross(orientation[:3], orientation[3:])
    order = np.argsort(origins @ normal, kind="stable")
    voxels = np.stack([_rescale(pixels[i], slopes[i], intercepts[i]) for i in order])
    planar = _nm_frames(ds, n)
    slices = tuple(
        SliceReference(str(ds.SOPClassUID), str(ds.SOPInstanceUID), int(i) + 1, **planar[i])
        for i in order)
    geometry = VolumeGeometry(
        slice_origins=origins[order],
        row_direction=tuple(float(v) for v in orientation[:3]),  # type: ignore[arg-type]
        column_direction=tuple(float(v) for v in orientation[3:]),  # type: ignore[arg-type]
        pixel_spacing=(spacing[0], spacing[1]),
        slice_thickness=float(thickness) if thickness not in (None, "") else None,
    )
    return SeriesVolume(
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        frame_of_reference_uid=str(ds.FrameOfReferenceUID) if ds.get("FrameOfReferenceUID") else None,
        voxels=voxels, geometry=geometry, slices=slices, facts=_facts(ds, _is_lossy(ds)),
    )
