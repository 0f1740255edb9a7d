"""Input quality checks, run before inference.

Each failed check is a :class:`~ai_engines.findings.Decline` with a stable code the job layer
records and reports; the reason sentence gives the measured value and the accepted range.
The checks read only the volume's geometry and header facts, never a file.
"""

from __future__ import annotations

import numpy as np

from ai_engines.acceptance import GeometryNeeds
from ai_engines.findings import Decline
from ai_engines.volume import SeriesVolume

QC_WRONG_MODALITY = "QC_WRONG_MODALITY"
QC_TOO_FEW_SLICES = "QC_TOO_FEW_SLICES"
QC_NOT_AXIAL = "QC_NOT_AXIAL"
QC_MISSING_SLICES = "QC_MISSING_SLICES"
QC_OVERLAPPING_SLICES = "QC_OVERLAPPING_SLICES"
QC_NON_UNIFORM_SPACING = "QC_NON_UNIFORM_SPACING"
QC_LOSSY_COMPRESSION = "QC_LOSSY_COMPRESSION"
QC_SLICE_THICKNESS_RANGE = "QC_SLICE_THICKNESS_RANGE"
QC_PIXEL_SPACING_RANGE = "QC_PIXEL_SPACING_RANGE"
QC_IMPLAUSIBLE_VALUES = "QC_IMPLAUSIBLE_VALUES"

QC_CODES = (
    QC_WRONG_MODALITY,
    QC_TOO_FEW_SLICES,
    QC_NOT_AXIAL,
    QC_MISSING_SLICES,
    QC_OVERLAPPING_SLICES,
    QC_NON_UNIFORM_SPACING,
    QC_LOSSY_COMPRESSION,
    QC_SLICE_THICKNESS_RANGE,
    QC_PIXEL_SPACING_RANGE,
    QC_IMPLAUSIBLE_VALUES,
)

_AXIAL_NORMAL = np.array([0.0, 0.0, 1.0])


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two lines (direction sign ignored), in degrees."""
    cos = float(abs(float(a @ b)) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(np.degrees(np.arccos(min(1.0, cos))))


def check_orientation(volume: SeriesVolume, needs: GeometryNeeds) -> Decline | None:
    """Axial acquisitions only: slice normal, stacking direction and gantry tilt within tolerance.

    A tilted gantry shows in the header (GantryDetectorTilt) and in the geometry: the slices
    stay axial in orientation but their origins shift along y, so the stack is sheared.
    """
    if not needs.axial_only:
        return None
    geometry = volume.geometry
    normal_angle = _angle_deg(geometry.normal, _AXIAL_NORMAL)
    if normal_angle > needs.max_obliquity_deg:
        return Decline(
            QC_NOT_AXIAL,
            f"slice orientation is {normal_angle:.1f} degrees from axial "
            f"(accepted up to {needs.max_obliquity_deg:g})",
        )
    tilt = abs(volume.facts.gantry_tilt)
    if tilt > needs.max_obliquity_deg:
        return Decline(QC_NOT_AXIAL, f"gantry tilt {tilt:.1f} degrees (accepted up to {needs.max_obliquity_deg:g})")
    origins = geometry.slice_origins
    if len(origins) >= 2:
        stack = origins[-1] - origins[0]
        if np.linalg.norm(stack) > 0:
            shear = _angle_deg(stack, geometry.normal)
            if shear > needs.max_obliquity_deg:
                return Decline(
                    QC_NOT_AXIAL,
                    f"slices are stacked {shear:.1f} degrees off their normal (tilted or sheared "
                    f"acquisition; accepted up to {needs.max_obliquity_deg:g})",
                )
    return None


def check_spacing(volume: SeriesVolume, needs: GeometryNeeds) -> Decline | None:
    """No missing slices, no duplicate or overlapping positions, equal steps."""
    if not needs.uniform_spacing or volume.shape[0] < 2:
        return None
    positions = np.sort(volume.geometry.slice_positions)
    steps = np.diff(positions)
    median = float(np.median(steps))
    if median <= 1e-3:
        return Decline(QC_OVERLAPPING_SLICES, "most slices share one position (duplicates)")
    tolerance = max(0.1, needs.spacing_tolerance * median)
    small = steps < median - tolerance
    if np.any(steps < 0.5 * median):
        k = int(np.argmin(steps))
        return Decline(
            QC_OVERLAPPING_SLICES,
            f"slices {k} and {k + 1} are {steps[k]:.2f} mm apart (median step {median:.2f} mm): "
            f"duplicate or overlapping positions",
        )
    if np.any(steps > 1.5 * median):
        k = int(np.argmax(steps))
        return Decline(
            QC_MISSING_SLICES,
            f"gap of {steps[k]:.2f} mm after slice {k} (median step {median:.2f} mm): missing slices",
        )
    if np.any(small) or np.any(steps > median + tolerance):
        return Decline(
            QC_NON_UNIFORM_SPACING,
            f"slice steps range {steps.min():.2f}-{steps.max():.2f} mm (median {median:.2f} mm, "
            f"tolerance {tolerance:.2f} mm)",
        )
    return None


def check_compression(volume: SeriesVolume, needs: GeometryNeeds) -> Decline | None:
    """Refuse images that went through lossy compression when the engine asks for lossless."""
    if needs.lossless_only and volume.facts.lossy_compressed:
        return Decline(QC_LOSSY_COMPRESSION, "images were lossy compressed; the model is validated on lossless images")
    return None


def _outside(value: float, bounds: tuple[float, float]) -> bool:
    return not (bounds[0] - 1e-6 <= value <= bounds[1] + 1e-6)


def check_ranges(volume: SeriesVolume, needs: GeometryNeeds) -> Decline | None:
    """Slice count, slice thickness and pixel spacing within the validated ranges."""
    n = volume.shape[0]
    if n < needs.min_slices:
        return Decline(QC_TOO_FEW_SLICES, f"{n} slice(s); at least {needs.min_slices} needed")
    geometry = volume.geometry
    if needs.slice_thickness_mm is not None and not needs.planar:
        thickness = geometry.slice_thickness or geometry.slice_spacing
        if _outside(thickness, needs.slice_thickness_mm):
            low, high = needs.slice_thickness_mm
            return Decline(
                QC_SLICE_THICKNESS_RANGE,
                f"slice thickness {thickness:.2f} mm outside the validated {low:g}-{high:g} mm",
            )
    if needs.pixel_spacing_mm is not None:
        for spacing in geometry.pixel_spacing:
            if _outside(spacing, needs.pixel_spacing_mm):
                low, high = needs.pixel_spacing_mm
                return Decline(
                    QC_PIXEL_SPACING_RANGE,
                    f"pixel spacing {spacing:.3f} mm outside the validated {low:g}-{high:g} mm",
                )
    return None


def check_values(volume: SeriesVolume) -> Decline | None:
    """CT voxels must look like Hounsfield units (air near -1000, tissue near 0).

    Catches a missing rescale or a scout/derived image that would otherwise be segmented
    silently and wrongly.
    """
    if volume.modality != "CT":
        return None
    sample = volume.voxels[:: max(1, volume.shape[0] // 8), ::4, ::4]
    low, high = np.percentile(sample, [1, 99])
    if low > -500 or high < -200 or high > 4000:
        return Decline(
            QC_IMPLAUSIBLE_VALUES,
            f"voxel values {low:.0f} to {high:.0f} (1st-99th percentile) do not look like "
            f"Hounsfield units",
        )
    return None


def check_series(volume: SeriesVolume, needs: GeometryNeeds) -> list[Decline]:
    """Run every check of ``needs``; an empty list means the series is fit for the engine.

    Returns
    -------
    list of Decline
        In order of how fundamental the problem is (geometry before ranges).
    """
    checks = [check_ranges(volume, needs), check_compression(volume, needs)]
    if not needs.planar:
        checks += [check_orientation(volume, needs), check_spacing(volume, needs)]
    checks.append(check_values(volume))
    return [c for c in checks if c is not None]
