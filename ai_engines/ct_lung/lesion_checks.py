"""Anatomical checks a lung-tumour candidate must pass, whatever the network's confidence.

The detector has learnt lung tumours from synthetic chest CTs; on real CTs it also answers
on structures that look like a solid lesion on the lung window but are not in the lung: the
descending aorta, the oesophagus and the mediastinal veins (tubes running through many
slices), and chest-wall or paravertebral soft tissue against the pleura.  The checks here
are anatomy, not tuning: a primary lung tumour grows in the lung, or bulges into it from
the pleura or the mediastinum; it is not a tube of near-constant cross-section running
through many slices outside the lung; it is about as deep as it is wide; and it is soft
tissue, neither air nor bone.  Each check, the case that motivated it and its thresholds are
documented in ``docs/ct-lung-engine.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Lung side.  The envelope is the lung with its indentations filled: a per-slice closing of
# the lung mask with a disk of radius max(ENVELOPE_MIN_RADIUS_MM, ENVELOPE_RADIUS_FACTOR x the
# lesion's in-plane diameter).  A tumour that grows from the pleura or the mediastinum into
# the lung pushes the lung aside and sits in such an indentation; tissue outside the pleura
# (chest wall, paravertebral muscle, mediastinal fat and vessels) sits against a lung surface
# that is convex there, which no closing fills.
ENVELOPE_MIN_RADIUS_MM = 10.0
ENVELOPE_RADIUS_FACTOR = 1.0  # twice the lesion's radius: the disk cannot enter the dent it makes
# Of the lesion's voxels in the lungs' envelope.  0.35 (engine 1.4.1; was 0.5): a 0.83 ml
# juxtapleural validation tumour had 0.43; lung1's chest-wall and mediastinal candidates
# 0.10-0.25 (docs/ct-lung-engine.md, "Lesion checks").
MIN_LUNG_SIDE_FRACTION = 0.35
# Tube: a window of consecutive slices, at least TUBE_MIN_LENGTH_MM long and at least
# TUBE_ELONGATION x the diameter of the window's mean cross-section, over which the cross-section
# area varies by at most TUBE_MAX_AREA_CV and the centroid stays within one radius from slice
# to slice, mostly outside the lungs.  A round tumour is never longer than about its width.
TUBE_MIN_LENGTH_MM = 30.0
TUBE_ELONGATION = 2.0
TUBE_MAX_AREA_CV = 0.25
# Flat: a lesion that would span (n_slices + 1) x thickness < FLAT_RATIO x its in-plane
# diameter is a sheet cut tangentially (diaphragm dome, liver top, pleura), not a tumour.
FLAT_RATIO = 0.35  # a third: juxtapleural tumours can be lentiform, half as deep as wide
# Density: mean HU of the lesion.  Above: bone or calcification (ribs, vertebrae, a calcified
# granuloma); below: mostly aerated lung (the detector's ground-glass halo of a vessel).
SOLID_HU = (-400.0, 200.0)
CHECKS = ("lung_side", "tube", "flat", "density")


@dataclass(frozen=True)
class LesionAnatomy:
    """What the checks measure on one candidate lesion."""

    in_lung: float  # fraction of its voxels in the lung mask
    lung_side: float  # fraction of its voxels in the lungs' envelope (lung + filled dents)
    z_mm: float  # slices it spans x slice spacing
    diameter_mm: float  # largest in-plane diameter (of the equal-area circle)
    tube_mm: float  # length of its longest tube-like run of slices outside the lungs (0: none)
    mean_hu: float

    def failed(self, slice_spacing: float) -> tuple[str, ...]:
        """The checks this lesion fails (``CHECKS`` names), empty when it may be a tumour."""
        failed = []
        if self.lung_side < MIN_LUNG_SIDE_FRACTION:
            failed.append("lung_side")
        if self.tube_mm > 0:
            failed.append("tube")
        if self.z_mm + slice_spacing < FLAT_RATIO * self.diameter_mm:
            failed.append("flat")
        if not SOLID_HU[0] <= self.mean_hu <= SOLID_HU[1]:
            failed.append("density")
        return tuple(failed)


def measure_lesion(
    mask: np.ndarray, lungs: np.ndarray, hu: np.ndarray | None, spacing: tuple[float, float, float],
) -> LesionAnatomy:
    """Measure one candidate; ``mask``, ``lungs`` and ``hu`` are the same box of the series.

    The box should reach at least the envelope radius beyond the lesion in-plane, else the
    envelope misses lung that would close a dent (the lesion then looks less lung-sided).
    """
    sz, sr, sc = spacing
    zs = np.nonzero(mask.any(axis=(1, 2)))[0]
    areas = mask[zs].sum(axis=(1, 2)).astype(float) * sr * sc
    diameter = float(2 * np.sqrt(areas.max() / np.pi))
    in_lung = float(lungs[mask].mean())
    radius_mm = max(ENVELOPE_MIN_RADIUS_MM, ENVELOPE_RADIUS_FACTOR * diameter)
    envelope = lung_envelope(lungs[zs[0] : zs[-1] + 1], radius_mm, (sr, sc))
    lung_side = float(envelope[mask[zs[0] : zs[-1] + 1]].mean())
    mean_hu = float(hu[mask].mean()) if hu is not None else 0.0
    return LesionAnatomy(
        in_lung=in_lung, lung_side=max(lung_side, in_lung), z_mm=len(zs) * sz, diameter_mm=diameter,
        tube_mm=tube_length(mask[zs[0] : zs[-1] + 1], lungs[zs[0] : zs[-1] + 1], spacing),
        mean_hu=mean_hu,
    )


def lung_envelope(lungs: np.ndarray, radius_mm: float, pixel_spacing: tuple[float, float]) -> np.ndarray:
    """The lungs with their in-plane indentations narrower than about 2 x ``radius_mm`` filled.

    A per-slice binary closing with a disk of ``radius_mm``, computed from two Euclidean
    distance transforms (dilation: within the radius of lung; erosion: farther than the radius
    from outside the dilation), so its cost does not grow with the radius; on every second
    row and column (the envelope is coarse by nature), the lungs padded so the closing does
    not stick to the box edge.
    """
    step = 2
    spacing = (pixel_spacing[0] * step, pixel_spacing[1] * step)
    pad = int(np.ceil(radius_mm / min(spacing))) + 2
    small = np.pad(lungs[:, ::step, ::step], ((0, 0), (pad, pad), (pad, pad)))
    closed = np.zeros_like(small)
    for k in np.nonzero(small.any(axis=(1, 2)))[0]:
        dilated = ndimage.distance_transform_edt(~small[k], sampling=spacing) <= radius_mm
        closed[k] = ndimage.distance_transform_edt(dilated, sampling=spacing) > radius_mm
    closed = closed[:, pad:-pad, pad:-pad]
    full = np.repeat(np.repeat(closed, step, axis=1), step, axis=2)[:, : lungs.shape[1], : lungs.shape[2]]
    return full | lungs


def tube_length(mask: np.ndarray, lungs: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Length (mm) of the longest tube-like run of slices of ``mask`` outside the lungs; 0.0 if none.

    A run is a window of consecutive slices, each holding lesion, whose centroid moves less
    than one radius between neighbours, whose cross-section area has a coefficient of
    variation <= ``TUBE_MAX_AREA_CV``, that is at least ``TUBE_MIN_LENGTH_MM`` and
    ``TUBE_ELONGATION`` x the diameter of its mean cross-section long, and with under half its voxels in the lungs.
    """
    sz, sr, sc = spacing
    n = mask.shape[0]
    area = mask.sum(axis=(1, 2)).astype(float)
    if n * sz < TUBE_MIN_LENGTH_MM:
        return 0.0
    in_lung = (mask & lungs).sum(axis=(1, 2)).astype(float)
    rows, cols = np.indices(mask.shape[1:])
    held = np.maximum(area, 1.0)
    centroid = np.stack([(mask * rows).sum(axis=(1, 2)) / held * sr, (mask * cols).sum(axis=(1, 2)) / held * sc], axis=1)
    area_mm2 = area * sr * sc
    radius = np.sqrt(area_mm2 / np.pi)
    step = np.r_[0.0, np.sqrt((np.diff(centroid, axis=0) ** 2).sum(axis=1))]
    # Slice k continues slice k - 1: both hold lesion, centroids within one radius.
    continuous = (area > 0) & (np.r_[0.0, area[:-1]] > 0) & (step <= np.minimum(radius, np.r_[radius[0], radius[:-1]]))
    # Every window [first, last] at once, from prefix sums (a 1 mm series has ~300 slices).
    prefix = _prefix
    first, last = np.triu_indices(n)
    count = last - first + 1
    s_area, s_area2 = prefix(area_mm2), prefix(area_mm2**2)
    mean = (s_area[last + 1] - s_area[first]) / count
    var = np.maximum((s_area2[last + 1] - s_area2[first]) / count - mean**2, 0.0)
    breaks = prefix(~continuous)
    joined = (breaks[last + 1] - breaks[first + 1] == 0) & (area[first] > 0)  # no break after the first slice
    outside = (prefix(in_lung)[last + 1] - prefix(in_lung)[first]) < 0.5 * (prefix(area)[last + 1] - prefix(area)[first])
    length = count * sz
    tube = (
        joined & outside & (length >= TUBE_MIN_LENGTH_MM)
        & (np.sqrt(var) <= TUBE_MAX_AREA_CV * mean)
        & (length >= TUBE_ELONGATION * 2 * np.sqrt(mean / np.pi))
    )
    return float(length[tube].max()) if tube.any() else 0.0


def _prefix(values: np.ndarray) -> np.ndarray:
    return np.r_[0.0, np.cumsum(values, dtype=float)]
