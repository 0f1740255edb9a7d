"""IBSI image processing: interpolation, re-segmentation and discretisation of one ROI.

Conventions (IBSI 1 reference manual, chapter 2 and chapter 5 "Notes on interpolation"):

* Arrays are indexed ``[z, y, x]`` (slice, row, column); spacings are ``(z, y, x)`` in mm.
* Interpolation grid: the new grid size is ``ceil(n * s / s_new)`` along each axis and the new
  grid is centred on the original one ("grid alignment by centre"); intensities beyond the
  image edge are extrapolated with the nearest boundary value.  The ROI mask is interpolated
  linearly and thresholded at the partial-volume threshold (0.5).
* Re-segmentation: the *morphological* mask is the (interpolated) ROI; the *intensity* mask is
  that ROI restricted to the re-segmentation range and, optionally, to mean ± k·SD.
* Discretisation: fixed bin number ``floor(Ng (X - Xmin) / (Xmax - Xmin)) + 1`` (Xmax maps to
  Ng) or fixed bin size ``floor((X - Xmin) / w) + 1`` with Xmin the lower re-segmentation
  bound (else the ROI minimum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk  # noqa: N813

from ai_engines.radiomics.settings import Discretisation, RadiomicsSettings

_INTERPOLATORS = {
    "nearest": sitk.sitkNearestNeighbor,
    "linear": sitk.sitkLinear,
    "cubic": sitk.sitkBSpline,
}


@dataclass(frozen=True)
class ProcessedRoi:
    """An ROI ready for feature computation (cropped around the ROI).

    ``image`` keeps the intensities around the ROI (local intensity features use them);
    ``morph_mask`` is the ROI after interpolation, ``intensity_mask`` after re-segmentation.
    """

    image: np.ndarray
    morph_mask: np.ndarray
    intensity_mask: np.ndarray
    spacing: tuple[float, float, float]
    resegmentation_range: tuple[float, float]  # finite bounds used (ROI min/max when open)


def bounding_box(mask: np.ndarray, margin: int | tuple[int, int, int] = 0) -> tuple[slice, ...]:
    """Slices of the box around ``mask`` grown by ``margin`` voxels, clipped to the array."""
    if not mask.any():
        raise ValueError("the ROI is empty")
    margins = (margin,) * mask.ndim if isinstance(margin, int) else margin
    box = []
    for axis, m in enumerate(margins):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(int(present[0]) - m, 0), min(int(present[-1]) + 1 + m, mask.shape[axis])))
    return tuple(box)


def resampled_grid(shape: tuple[int, ...], spacing: tuple[float, ...],
                   new_spacing: tuple[float, ...]) -> tuple[tuple[int, ...], np.ndarray]:
    """Size and origin (in mm, relative to the first voxel centre) of the IBSI grid.

    Returns
    -------
    shape, origin
        ``ceil(n s / s_new)`` per axis; the new grid's centre equals the old grid's centre.
    """
    n_old = np.asarray(shape, dtype=float)
    s_old = np.asarray(spacing, dtype=float)
    s_new = np.asarray(new_spacing, dtype=float)
    # Round before the ceiling so that 3 * 0.5 / 0.5 is 3, not 3.0000000000000004 -> 4.
    n_new = np.ceil(np.round(n_old * s_old / s_new, 6)).astype(int)
    origin = (s_old * (n_old - 1) - s_new * (n_new - 1)) / 2.0
    return tuple(int(n) for n in n_new), origin


def resample(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float],
             settings: RadiomicsSettings) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Interpolate image and mask to ``settings.spacing_mm`` (IBSI grid, SimpleITK).

    Only the box around the ROI (plus a margin for the interpolation kernel and the local
    intensity sphere) is resampled; the grid is that of the whole image, so the result equals
    resampling everything and cropping.

    Returns
    -------
    image, mask, spacing
        Float64 image, boolean mask (linear interpolation ≥ ``mask_threshold``), new spacing.
    """
    if settings.spacing_mm is None:
        return image, mask.astype(bool), spacing  # the caller crops before converting
    new_spacing = list(settings.spacing_mm)
    if settings.dimensionality == "2D" or new_spacing[0] == 0:
        new_spacing[0] = spacing[0]  # in-plane only: keep the slices
    new_shape, new_origin = resampled_grid(image.shape, spacing, tuple(new_spacing))
    # Region of the new grid that covers the ROI with a margin of about 1 cm.
    margin_mm = 12.0
    box = bounding_box(mask)
    lo_mm = np.array([b.start for b in box]) * spacing - margin_mm
    hi_mm = np.array([b.stop - 1 for b in box]) * spacing + margin_mm
    new_lo = np.maximum(np.floor((lo_mm - new_origin) / new_spacing).astype(int), 0)
    new_hi = np.minimum(np.ceil((hi_mm - new_origin) / new_spacing).astype(int) + 1, new_shape)
    # Source crop: the new region plus the kernel support (cubic B-spline: 2 voxels).
    src_lo = np.maximum(np.floor((new_origin + new_lo * new_spacing) / spacing).astype(int) - 3, 0)
    src_hi = np.minimum(
        np.ceil((new_origin + (new_hi - 1) * new_spacing) / spacing).astype(int) + 4, image.shape
    )
    src = tuple(slice(int(a), int(b)) for a, b in zip(src_lo, src_hi, strict=True))

    def to_sitk(array: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(np.ascontiguousarray(array))
        img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
        img.SetOrigin(tuple(float(v) for v in (src_lo * np.asarray(spacing))[::-1]))
        return img

    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputSpacing(tuple(float(s) for s in new_spacing[::-1]))
    resampler.SetOutputOrigin(tuple(float(v) for v in (new_origin + new_lo * new_spacing)[::-1]))
    resampler.SetSize(tuple(int(n) for n in (new_hi - new_lo)[::-1]))
    resampler.SetOutputDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    resampler.SetUseNearestNeighborExtrapolator(True)  # IBSI: pad with the boundary value
    resampler.SetInterpolator(_INTERPOLATORS[settings.interpolation])
    out_image = sitk.GetArrayFromImage(resampler.Execute(to_sitk(image[src].astype(np.float64))))
    resampler.SetInterpolator(sitk.sitkLinear)
    out_mask = sitk.GetArrayFromImage(resampler.Execute(to_sitk(mask[src].astype(np.float64))))
    if settings.round_intensities:
        out_image = np.round(out_image)
    z, y, x = (float(s) for s in new_spacing)
    return out_image.astype(np.float64), out_mask >= settings.mask_threshold, (z, y, x)


def resegment(image: np.ndarray, mask: np.ndarray,
              settings: RadiomicsSettings) -> tuple[np.ndarray, tuple[float, float]]:
    """The intensity mask: ``mask`` within the re-segmentation range and outlier bounds.

    Both criteria are evaluated on the ROI as it was before re-segmentation; the result is
    their intersection.

    Returns
    -------
    intensity_mask, (low, high)
        The mask and the finite range used (open bounds replaced by the ROI's min/max).
    """
    values = image[mask]
    keep = mask.copy()
    range_low, range_high = settings.resegmentation_range or (None, None)
    if range_low is not None:
        keep &= image >= range_low
    if range_high is not None:
        keep &= image <= range_high
    if settings.outlier_sigma is not None:
        mean, sd = float(values.mean()), float(values.std())
        keep &= np.abs(image - mean) <= settings.outlier_sigma * sd
    kept = image[keep]
    if kept.size == 0:
        return keep, (float("nan"), float("nan"))
    low = float(range_low) if range_low is not None else float(kept.min())
    high = float(range_high) if range_high is not None else float(kept.max())
    return keep, (low, high)


def discretise(values: np.ndarray, method: Discretisation, bin_number: int = 32,
               bin_width: float = 25.0, low: float | None = None) -> tuple[np.ndarray, int]:
    """Grey levels 1..Ng of ``values`` (the intensities in the ROI).

    Parameters
    ----------
    values
        Intensities (any shape); only finite values inside the ROI should be passed.
    method
        ``"FBN"``, ``"FBS"`` or ``"none"`` (integer intensities shifted so the minimum is 1).
    low
        FBS: the lower edge of the first bin (the lower re-segmentation bound); ``None``: the
        minimum of ``values``.

    Returns
    -------
    levels, n_levels
        Integer grey levels (same shape) and Ng.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values.astype(np.int64), 0
    vmin, vmax = float(values.min()), float(values.max())
    if method == "FBN":
        if vmax == vmin:
            return np.ones(values.shape, dtype=np.int64), bin_number
        levels = np.floor(bin_number * (values - vmin) / (vmax - vmin)).astype(np.int64) + 1
        levels = np.minimum(levels, bin_number)
        return levels, bin_number
    if method == "FBS":
        start = vmin if low is None else low
        levels = np.floor((values - start) / bin_width + 1e-9).astype(np.int64) + 1
        levels = np.maximum(levels, 1)
        return levels, int(levels.max())
    if method == "none":
        levels = np.rint(values - vmin).astype(np.int64) + 1
        return levels, int(levels.max())
    raise ValueError(f"unknown discretisation {method!r}")


def process_roi(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float],
                settings: RadiomicsSettings) -> ProcessedRoi:
    """Crop, interpolate and re-segment one ROI.

    Raises
    ------
    ValueError
        The ROI is empty, or empty after interpolation or re-segmentation.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("the ROI is empty")
    spacing = tuple(float(s) for s in spacing)  # type: ignore[assignment]
    image, mask, spacing = resample(np.asarray(image), mask, spacing, settings)
    if not mask.any():
        raise ValueError("the ROI is empty after interpolation")
    # Keep a margin for the local intensity sphere (radius 6.2 mm) around the ROI.
    mz, my, mx = (int(math.ceil(6.3 / s)) + 1 for s in spacing)
    margin = (mz, my, mx)
    box = bounding_box(mask, margin)
    image, mask = image[box].astype(np.float64), mask[box]
    intensity_mask, value_range = resegment(image, mask, settings)
    if not intensity_mask.any():
        raise ValueError("no voxel of the ROI lies in the re-segmentation range")
    return ProcessedRoi(image, mask, intensity_mask, spacing, value_range)
