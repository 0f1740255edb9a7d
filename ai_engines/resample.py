"""Bringing series onto one voxel grid (SimpleITK), and comparing grids.

An engine that reads several series voxel by voxel (T1, T1c, T2 and FLAIR; a PET on its CT)
declares ``Acceptance.co_registered`` and resamples the others onto its reference series with
:func:`resample_to`; findings then lie on the reference series' grid.  Masks use
nearest-neighbour interpolation, images linear (or B-spline) interpolation.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np

from ai_engines.volume import SeriesVolume, VolumeGeometry

Interpolation = Literal["linear", "nearest", "bspline"]

# Grids closer than this (mm, or direction cosine) are the same grid.
_POSITION_TOLERANCE_MM = 1e-3
_DIRECTION_TOLERANCE = 1e-4


def to_sitk(volume: SeriesVolume, values: np.ndarray | None = None):  # noqa: ANN201
    """The volume (or ``values`` on its grid) as a ``SimpleITK.Image``.

    Origin, spacing and direction come from the geometry: x along the rows' direction, y
    along the columns', z along the slice normal with the median slice step.
    """
    import SimpleITK as sitk  # noqa: N813

    geometry = volume.geometry
    array = volume.voxels if values is None else values
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetOrigin(tuple(float(v) for v in geometry.slice_origins[0]))
    image.SetSpacing((geometry.pixel_spacing[1], geometry.pixel_spacing[0],
                      geometry.slice_spacing or 1.0))
    axes = np.column_stack([geometry.row_direction, geometry.column_direction, geometry.normal])
    image.SetDirection(tuple(float(v) for v in axes.ravel()))
    return image


def grid_mismatch(volume: SeriesVolume, reference: SeriesVolume) -> str | None:
    """How ``volume``'s voxel grid differs from ``reference``'s, or None when they are one.

    Compares shape, slice origins, row/column directions and pixel spacing (the frame of
    reference UID is compared by the caller).
    """
    if volume.shape != reference.shape:
        return f"shape {volume.shape} vs {reference.shape}"
    a, b = volume.geometry, reference.geometry
    for name, x, y, tolerance in (
        ("row direction", a.row_direction, b.row_direction, _DIRECTION_TOLERANCE),
        ("column direction", a.column_direction, b.column_direction, _DIRECTION_TOLERANCE),
        ("pixel spacing", a.pixel_spacing, b.pixel_spacing, _POSITION_TOLERANCE_MM),
    ):
        if np.abs(np.subtract(x, y)).max() > tolerance:
            return f"{name} {tuple(round(float(v), 4) for v in x)} vs {tuple(round(float(v), 4) for v in y)}"
    shift = float(np.abs(a.slice_origins - b.slice_origins).max())
    if shift > _POSITION_TOLERANCE_MM:
        return f"slice positions differ by up to {shift:.3f} mm"
    return None


def _corners(geometry: VolumeGeometry, shape: tuple[int, int, int]) -> np.ndarray:
    k = np.array([0, shape[0] - 1])
    j = np.array([0, shape[1] - 1])
    i = np.array([0, shape[2] - 1])
    kk, jj, ii = (g.ravel() for g in np.meshgrid(k, j, i, indexing="ij"))
    return geometry.voxel_to_patient(kk, jj, ii)


def overlap_fraction(volume: SeriesVolume, reference: SeriesVolume) -> float:
    """Share of ``reference``'s bounding box (in its own axes) that ``volume`` covers, 0-1.

    A coarse test (axis-aligned boxes in the reference's voxel axes) that tells series which
    merely share a frame of reference UID from series that image the same anatomy.
    """
    ref = reference.geometry
    axes = np.column_stack([ref.row_direction, ref.column_direction, ref.normal])
    ref_box = _corners(ref, reference.shape) @ axes
    box = _corners(volume.geometry, volume.shape) @ axes
    low = np.maximum(ref_box.min(axis=0), box.min(axis=0))
    high = np.minimum(ref_box.max(axis=0), box.max(axis=0))
    extent = np.maximum(ref_box.max(axis=0) - ref_box.min(axis=0), 1e-6)
    covered = np.clip(high - low, 0.0, None)
    # A single slice (or a planar image) has no thickness: treat zero extents as covered
    # when the other box reaches that plane.
    flat = extent <= 1e-6
    fraction = np.where(flat, (high >= low).astype(float), covered / extent)
    return float(np.prod(fraction))


def resample_values(values: np.ndarray, volume: SeriesVolume, reference: SeriesVolume,
                    interpolation: Interpolation = "linear", default: float = 0.0) -> np.ndarray:
    """``values`` (on ``volume``'s grid) resampled onto ``reference``'s grid.

    Returns
    -------
    numpy.ndarray
        Shape of ``reference.voxels``; bool in, bool out (nearest neighbour is forced).
    """
    import SimpleITK as sitk  # noqa: N813

    is_mask = values.dtype == np.bool_
    method = {
        "linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor,
        "bspline": sitk.sitkBSpline,
    }["nearest" if is_mask else interpolation]
    moving = to_sitk(volume, values if is_mask else values.astype(np.float32, copy=False))
    target = to_sitk(reference, np.zeros(reference.shape, dtype=np.uint8))
    out = sitk.Resample(moving, target, sitk.Transform(), method, float(default),
                        moving.GetPixelID())
    array = sitk.GetArrayFromImage(out)
    return array.astype(bool) if is_mask else array.astype(np.float32, copy=False)


def resample_to(volume: SeriesVolume, reference: SeriesVolume,
                interpolation: Interpolation = "linear", default: float | None = None,
                ) -> SeriesVolume:
    """``volume`` on ``reference``'s voxel grid (both in one frame of reference).

    Parameters
    ----------
    volume
        The series to move, e.g. a FLAIR.
    reference
        The series whose grid the engine works on, e.g. the T1c.
    interpolation
        ``"linear"``, ``"nearest"`` or ``"bspline"``.
    default
        Value outside ``volume``'s field of view (default: its minimum).

    Returns
    -------
    SeriesVolume
        ``volume``'s series UID and facts with ``reference``'s geometry and slice references
        (the slices say where each voxel lies, not which instance it was read from).
    """
    if grid_mismatch(volume, reference) is None:
        return volume
    fill = float(volume.voxels.min()) if default is None else default
    voxels = resample_values(volume.voxels, volume, reference, interpolation, fill)
    return replace(volume, voxels=voxels, geometry=reference.geometry, slices=reference.slices)
