"""Lesions from the detector's tumour probability, and their extent from the extent model.

Candidate components of the thresholded probability pass the false-positive filter
(``keep_components``: confidence, size, z extent) and the anatomical checks a lung tumour
must pass (``lesion_checks``); the extent model then widens each kept lesion only into tissue
connected to it (``refine_extent``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ai_engines.ct_lung.lesion_checks import (
    ENVELOPE_MIN_RADIUS_MM,
    ENVELOPE_RADIUS_FACTOR,
    TUBE_ELONGATION,
    TUBE_MAX_AREA_CV,
    TUBE_MIN_LENGTH_MM,
    LesionAnatomy,
    lung_envelope,
    measure_lesion,
)

TUMOUR_THRESHOLD = 0.5
MIN_LESION_MM3 = 65.0  # about a 5 mm sphere; smaller components are noise
MIN_PEAK_PROBABILITY = 0.5  # a lesion's most confident voxel must reach this
LUNG_MARGIN_MM = 8.0  # a lesion must touch the lungs dilated by this margin
# False-positive filter (keep_components), tuned on validation seeds 300000-300029 (disjoint
# from training seeds < 100 000 and the held-out seeds 100000-100019).
MIN_MEAN_PROBABILITY = 0.85  # hilar vessels and diaphragm domes come out lukewarm
MIN_Z_EXTENT_MM = 6.0  # spurious findings are often one or two thin slices thick
MIN_END_SLICES_MM = 15.0  # extra-pulmonary blobs on the first/last lung slice thinner than this are dropped
MIN_RELATIVE_WEIGHT = 0.1  # probability-weighted volume relative to the largest candidate
VESSEL_PIECE_MM = 10.0  # a candidate outside the lungs this near a rejected tube is part of it
TUBE_AXIS_REACH = 3.0  # ...or on its axis, as far beyond its ends as its length or this many diameters
# A chain of candidates mostly outside the lungs, each too short to be a tube alone, is one
# vessel broken into pieces when consecutive pieces are at most CHAIN_MAX_GAP_DIAMETERS
# diameters apart along z, all slice centroids lie within the mean radius of one straight
# line, and the pieces' cross-sections are near constant (TUBE_MAX_AREA_CV of their median
# areas) over a run at least TUBE_MIN_LENGTH_MM and TUBE_ELONGATION diameters long.
CHAIN_MAX_GAP_DIAMETERS = 2.0
# Where the extent model may grow a detected lesion (refine_extent / extent_reach).
EXTENT_MIN_REACH_MM = 10.0
EXTENT_REACH_FACTOR = 0.5  # x the detected lesion's in-plane diameter
EXTENT_BORDER_MM = 10.0  # beyond the lungs' envelope: pleura, mediastinal border


@dataclass(frozen=True)
class Lesion:
    """A kept lesion: its mask on the source grid and what the detector and the checks saw."""

    mask: np.ndarray
    peak_probability: float
    mean_probability: float
    anatomy: LesionAnatomy | None


@dataclass(frozen=True)
class LesionSearch:
    """Kept lesions (largest first) and the candidates the anatomical checks rejected."""

    lesions: list[Lesion]
    # Per rejected candidate: the checks it failed and its volume (ml).
    rejected: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    @property
    def masks(self) -> list[np.ndarray]:
        return [lesion.mask for lesion in self.lesions]


def lesion_masks(
    probability: np.ndarray, lungs: np.ndarray, spacing: tuple[float, float, float],
    hu: np.ndarray | None = None, anatomy_checks: bool = True,
) -> LesionSearch:
    """Components that pass the false-positive filter (``keep_components``) and, with
    ``anatomy_checks``, the anatomical checks of ``lesion_checks``; largest first.

    Works inside the box around the candidate voxels (plus the lung margin), so that a
    600-slice series does not need volume-sized label and distance arrays; each candidate's
    anatomy is measured in its own box, wide enough for the lungs' envelope.
    """
    tumour = probability >= TUMOUR_THRESHOLD
    if not tumour.any():
        return LesionSearch([])
    margin = max(1, int(round(LUNG_MARGIN_MM / min(spacing[1:]))))
    box = _box_around(tumour, in_plane_margin=margin + 2)
    lung_z = np.nonzero(lungs.any(axis=(1, 2)))[0]
    if not len(lung_z):
        return LesionSearch([])  # no lungs: nothing can touch them
    lung_z_range = (int(lung_z[0]) - box[0].start, int(lung_z[-1]) - box[0].start)
    tumour_box, lungs_box = tumour[box], lungs[box]
    labels, count = ndimage.label(tumour_box, structure=np.ones((3, 3, 3), bool))
    # Dilation at half resolution (on the even rows and columns of the whole grid, as the
    # box starts on even indices), then back to full resolution.
    near_lung = ndimage.binary_dilation(
        lungs_box[:, ::2, ::2], structure=_in_plane_disk(max(1, margin // 2))
    )
    near_lung = np.repeat(np.repeat(near_lung, 2, axis=1), 2, axis=2)[:, : lungs_box.shape[1], : lungs_box.shape[2]]
    anatomy: dict[int, LesionAnatomy] = {}
    rejected: list[tuple[tuple[str, ...], float]] = []
    voxel_ml = float(np.prod(spacing)) / 1000

    def failed_checks(i: int, component: tuple[slice, slice, slice] | None) -> tuple[str, ...]:
        if component is None:  # a piece of a vessel whose tube was rejected
            rejected.append((("tube",), float((labels == i).sum()) * voxel_ml))
            anatomy.pop(i, None)
            return ("tube",)
        mask_box = labels[component] == i
        found = measure_lesion(*_anatomy_view(mask_box, component, box, lungs, hu, spacing))
        anatomy[i] = found
        failed = found.failed(spacing[0])
        if failed:
            rejected.append((failed, float(mask_box.sum()) * voxel_ml))
        return failed

    keep = keep_components(labels, count, probability[box], lungs_box, near_lung, spacing,
                           lung_z_range=lung_z_range, failed_checks=failed_checks if anatomy_checks else None)
    probability_box = probability[box]
    lesions = []
    for i in keep:
        in_box = labels == i
        mask = np.zeros(tumour.shape, dtype=bool)
        mask[box] = in_box
        values = probability_box[in_box].astype(np.float32)
        lesions.append(Lesion(mask, float(values.max()), float(values.mean()), anatomy.get(i)))
    return LesionSearch(lesions, rejected)


def _anatomy_view(
    mask_box: np.ndarray, component: tuple[slice, slice, slice], box: tuple[slice, slice, slice],
    lungs: np.ndarray, hu: np.ndarray | None, spacing: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[float, float, float]]:
    """A candidate's mask, lungs and HU in a box around it wide enough for the lungs' envelope."""
    diameter_px = max(s.stop - s.start for s in component[1:])
    reach = max(ENVELOPE_MIN_RADIUS_MM, ENVELOPE_RADIUS_FACTOR * diameter_px * max(spacing[1:])) * 2.5
    pad = int(np.ceil(reach / min(spacing[1:])))
    z = slice(box[0].start + component[0].start, box[0].start + component[0].stop)
    rows = slice(max(0, box[1].start + component[1].start - pad), min(lungs.shape[1], box[1].start + component[1].stop + pad))
    cols = slice(max(0, box[2].start + component[2].start - pad), min(lungs.shape[2], box[2].start + component[2].stop + pad))
    mask = np.zeros((z.stop - z.start, rows.stop - rows.start, cols.stop - cols.start), dtype=bool)
    r0 = box[1].start + component[1].start - rows.start
    c0 = box[2].start + component[2].start - cols.start
    mask[:, r0 : r0 + mask_box.shape[1], c0 : c0 + mask_box.shape[2]] = mask_box
    return mask, lungs[z, rows, cols], None if hu is None else hu[z, rows, cols], spacing


def keep_components(
    labels: np.ndarray, count: int, probability: np.ndarray, lungs: np.ndarray, near_lung: np.ndarray,
    spacing: tuple[float, float, float], lung_z_range: tuple[int, int] | None = None,
    failed_checks: Callable[[int, tuple[slice, slice, slice] | None], tuple[str, ...]] | None = None,
) -> list[int]:
    """False-positive filter on the tumour components; returns the labels kept, largest first.

    A component is kept when it
      * touches the lungs (``near_lung``: the lungs dilated by ``LUNG_MARGIN_MM``),
      * holds at least ``MIN_LESION_MM3`` and reaches ``MIN_PEAK_PROBABILITY``,
      * has a mean probability of at least ``MIN_MEAN_PROBABILITY`` (vessel cross-sections at
        the hila come out as small, lukewarm blobs),
      * spans at least ``MIN_Z_EXTENT_MM`` along z (the network's spurious findings are often
        one slice thick),
      * is not a mostly extra-pulmonary blob on the first or last lung slice (diaphragm domes
        at the lung bases) thinner than ``MIN_END_SLICES_MM`` along z,
      * passes the anatomical checks (``failed_checks(label, box)`` returns no failed check;
        the engine's ``lesion_masks`` measures them with ``lesion_checks``) and, when mostly
        outside the lungs, lies farther than ``VESSEL_PIECE_MM`` from a candidate that failed
        the tube check (``failed_checks(label, None)`` is then called to report it),
      * and has a probability-weighted volume of at least ``MIN_RELATIVE_WEIGHT`` times the
        largest remaining candidate's (after the anatomical checks, so that a false lesion
        cannot hide true ones).
    ``lung_z_range`` gives the first and last lung slice (in ``labels``' z indices) when the
    arrays are a box cut from the series; by default it is found from ``lungs``.
    Thresholds were tuned on validation seeds disjoint from training and held-out seeds.
    """
    if count == 0:
        return []
    voxel_mm3 = float(np.prod(spacing))
    tumour = labels > 0
    lab = labels[tumour]
    sizes = np.bincount(lab, minlength=count + 1)[1:] * voxel_mm3
    weight = np.bincount(lab, weights=probability[tumour].astype(np.float32), minlength=count + 1)[1:] * voxel_mm3
    mean_prob = weight / np.maximum(sizes, 1e-9)
    peaks = ndimage.maximum(probability.astype(np.float32), labels, index=np.arange(1, count + 1))
    in_lung = np.bincount(lab, weights=lungs[tumour], minlength=count + 1)[1:] * voxel_mm3 / np.maximum(sizes, 1e-9)
    touching = np.zeros(count + 1, dtype=bool)
    touching[np.unique(labels[near_lung & tumour])] = True
    if lung_z_range is None:
        lung_z = np.nonzero(lungs.any(axis=(1, 2)))[0]
        lung_z_range = (int(lung_z[0]), int(lung_z[-1])) if len(lung_z) else (0, labels.shape[0] - 1)
    z_first, z_last = lung_z_range
    candidates = []
    for i, box in enumerate(ndimage.find_objects(labels)):
        if box is None:
            continue
        n_slices = box[0].stop - box[0].start
        at_end = box[0].start <= z_first or box[0].stop - 1 >= z_last
        if (
            sizes[i] >= MIN_LESION_MM3
            and touching[i + 1]
            and peaks[i] >= MIN_PEAK_PROBABILITY
            and mean_prob[i] >= MIN_MEAN_PROBABILITY
            and n_slices * spacing[0] >= MIN_Z_EXTENT_MM
            and not (at_end and in_lung[i] < 0.5 and n_slices * spacing[0] < MIN_END_SLICES_MM)
        ):
            candidates.append(i)
    if failed_checks is not None:
        boxes = ndimage.find_objects(labels)
        failed = {i: failed_checks(i + 1, boxes[i]) for i in candidates}
        tubes = [i + 1 for i, checks in failed.items() if "tube" in checks]
        outside = [i for i in candidates if in_lung[i] < 0.5 and "tube" not in failed[i]]
        chained = _tube_chains(labels, outside, boxes, spacing)
        candidates = [i for i in candidates if not failed[i]]
        for i in chained & set(candidates):
            failed_checks(i + 1, None)  # reported as a piece of a tube
        candidates = [i for i in candidates if i not in chained]
        tubes += [i + 1 for i in chained]
        if tubes and candidates:
            # The detector breaks a vessel into pieces where it bends or changes calibre (the
            # aortic arch above the descending aorta): a candidate mostly outside the lungs
            # within VESSEL_PIECE_MM of a tube, or on its axis, is a piece of that vessel.
            # Distances only in the box around the tubes widened by VESSEL_PIECE_MM: nothing
            # farther can be a piece (and a volume-sized distance map would cost gigabytes).
            tube_mask = np.isin(labels, tubes)
            around = tuple(
                slice(max(0, int(ix.min()) - pad), int(ix.max()) + pad + 1)
                for ix, pad in zip(np.nonzero(tube_mask), (int(np.ceil(VESSEL_PIECE_MM / sp)) + 1 for sp in spacing), strict=True)
            )
            distance = ndimage.distance_transform_edt(~tube_mask[around], sampling=spacing)
            ids = np.array([i + 1 for i in candidates])
            near_tube = np.asarray(ndimage.minimum(distance, labels[around], index=ids), float)
            near_tube[~np.isin(ids, labels[around])] = np.inf  # not in the box (scipy says 0)
            pieces = {i for i, d in zip(candidates, near_tube, strict=True) if d <= VESSEL_PIECE_MM and in_lung[i] < 0.5}
            # ...or lies on a tube's axis, extended beyond its ends: where the detector loses a
            # straight vessel for a few centimetres, the next piece is on the same line.
            boxes = ndimage.find_objects(labels)
            for t in tubes:
                axis = _tube_axis(labels, t, boxes[t - 1], spacing)
                pieces |= {i for i in candidates if in_lung[i] < 0.5 and _on_axis(labels, i + 1, boxes[i], axis, spacing)}
            for i in pieces:
                failed_checks(i + 1, None)  # reported as a piece of a tube
            candidates = [i for i in candidates if i not in pieces]
    if candidates:
        largest = max(weight[i] for i in candidates)
        candidates = [i for i in candidates if weight[i] >= MIN_RELATIVE_WEIGHT * largest]
    return [i + 1 for i in sorted(candidates, key=lambda i: -sizes[i])]


def refine_extent(
    lesions: list[np.ndarray], extent_probability: np.ndarray, z0: int, lungs: np.ndarray,
    spacing: tuple[float, float, float],
) -> list[np.ndarray]:
    """Each detected lesion joined with the extent model's tissue connected to it, largest first.

    The detector (with ``keep_components`` and the anatomical checks) decides *whether* there
    is a lesion; the extent model, trained on large and central tumours, decides *how far* it
    reaches: where a tumour fills the lung from the mediastinum to the chest wall, the detector
    sees no lung around it and stops short.  The extent model may only grow a lesion into its
    own surroundings (``extent_reach``): within ``EXTENT_REACH_FACTOR`` x the lesion's in-plane
    diameter (at least ``EXTENT_MIN_REACH_MM``) of the detected lesion, and inside the lungs'
    envelope widened by ``EXTENT_BORDER_MM`` (the pleura and the mediastinal border a tumour
    abuts); so an extent component that runs on along the aorta, the heart or the chest wall
    is cut where it leaves the lesion's surroundings.  Extent components that touch no
    detected lesion are ignored, so the extent model never adds a lesion; lesions joined by
    one extent component (inside those surroundings) become one.

    Parameters
    ----------
    lesions
        Detected lesion masks on the source grid.
    extent_probability
        The extent model's probability on source slices ``z0`` onwards (same rows and columns).
    z0
        Source slice of ``extent_probability[0]``.
    lungs
        Both lungs on the source grid.
    spacing
        (slice, row, column) spacing in mm.
    """
    extent = extent_probability >= TUMOUR_THRESHOLD
    if not lesions or not extent.any():
        return lesions
    slab = slice(z0, z0 + extent.shape[0])
    reach = np.zeros(extent.shape, dtype=bool)
    for lesion in lesions:
        reach |= extent_reach(lesion[slab], lungs[slab], spacing)
    extent &= reach
    if not extent.any():
        return lesions
    box = _box_around(extent, in_plane_margin=0)
    labels, _ = ndimage.label(extent[box], structure=np.ones((3, 3, 3), bool))
    on_source = (slice(z0 + box[0].start, z0 + box[0].stop), box[1], box[2])
    groups: list[tuple[set[int], list[int]]] = []  # (extent components, lesions) joined
    for i, lesion in enumerate(lesions):
        ids = set(np.unique(labels[lesion[on_source]]).tolist()) - {0}
        joined = [g for g in groups if g[0] & ids]
        for g in joined:
            groups.remove(g)
        groups.append((ids.union(*(g[0] for g in joined)), [i, *(j for g in joined for j in g[1])]))
    refined = []
    for ids, members in groups:
        mask = lesions[members[0]].copy()
        for i in members[1:]:
            mask |= lesions[i]
        if ids:
            mask[on_source] |= np.isin(labels, sorted(ids))
        refined.append(mask)
    return sorted(refined, key=lambda m: -int(m.sum()))


def extent_reach(lesion: np.ndarray, lungs: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Where the extent model may grow ``lesion`` (same grid as ``lesion`` and ``lungs``).

    Within ``max(EXTENT_MIN_REACH_MM, EXTENT_REACH_FACTOR x in-plane diameter)`` of the lesion
    (3-D distance), and inside the lungs' envelope (``lesion_checks.lung_envelope``, dents as
    wide as the lesion filled) dilated in-plane by ``EXTENT_BORDER_MM``.
    """
    reach = np.zeros(lesion.shape, dtype=bool)
    if not lesion.any():
        return reach
    sz, sr, sc = spacing
    zs = np.nonzero(lesion.any(axis=(1, 2)))[0]
    area = float(lesion.sum(axis=(1, 2)).max()) * sr * sc
    diameter = 2 * np.sqrt(area / np.pi)
    distance = max(EXTENT_MIN_REACH_MM, EXTENT_REACH_FACTOR * diameter)
    dz, dr, dc = (int(np.ceil(distance / s)) for s in spacing)
    rows = np.nonzero(lesion.any(axis=(0, 2)))[0]
    cols = np.nonzero(lesion.any(axis=(0, 1)))[0]
    box = (slice(max(0, zs[0] - dz), min(lesion.shape[0], zs[-1] + dz + 1)),
           slice(max(0, rows[0] - dr), min(lesion.shape[1], rows[-1] + dr + 1)),
           slice(max(0, cols[0] - dc), min(lesion.shape[2], cols[-1] + dc + 1)))
    near = ndimage.distance_transform_edt(~lesion[box], sampling=spacing) <= distance
    envelope = lung_envelope(lungs[box], max(ENVELOPE_MIN_RADIUS_MM, ENVELOPE_RADIUS_FACTOR * diameter), (sr, sc))
    border = ndimage.binary_dilation(envelope, structure=_in_plane_disk(max(1, int(round(EXTENT_BORDER_MM / min(sr, sc))))))
    reach[box] = near & border
    return reach | lesion


def _tube_axis(
    labels: np.ndarray, label: int, box: tuple[slice, slice, slice], spacing: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray, float, tuple[float, float]]:
    """A tube's axis: (row, col) in mm as a straight line of z (mm), its mean radius (mm) and
    its z range (mm), from the per-slice centroids of ``labels == label``."""
    mask = labels[box] == label
    points = np.argwhere(mask).astype(float) + [s.start for s in box]
    z = points[:, 0] * spacing[0]
    row_fit = np.polyfit(z, points[:, 1] * spacing[1], 1) if np.ptp(z) > 0 else np.array([0.0, points[:, 1].mean() * spacing[1]])
    col_fit = np.polyfit(z, points[:, 2] * spacing[2], 1) if np.ptp(z) > 0 else np.array([0.0, points[:, 2].mean() * spacing[2]])
    n_slices = int(mask.any(axis=(1, 2)).sum())
    radius = float(np.sqrt(mask.sum() / n_slices * spacing[1] * spacing[2] / np.pi))
    return row_fit, col_fit, radius, (float(z.min()), float(z.max()))


def _on_axis(
    labels: np.ndarray, label: int, box: tuple[slice, slice, slice],
    axis: tuple[np.ndarray, np.ndarray, float, tuple[float, float]], spacing: tuple[float, float, float],
) -> bool:
    """Whether component ``label`` lies on a tube's axis: its centroid within the tube's radius
    of the axis line, and beyond the tube's ends by at most the tube's own length (a vessel seen
    straight over L mm is extrapolated as far again) or TUBE_AXIS_REACH diameters."""
    row_fit, col_fit, radius, (z_lo, z_hi) = axis
    points = np.argwhere(labels[box] == label).astype(float) + [s.start for s in box]
    z, row, col = points.mean(axis=0) * spacing
    beyond = max(z_lo - z, z - z_hi, 0.0)
    off = np.hypot(row - np.polyval(row_fit, z), col - np.polyval(col_fit, z))
    return bool(off <= radius and beyond <= max(z_hi - z_lo, TUBE_AXIS_REACH * 2 * radius))


def _tube_chains(
    labels: np.ndarray, pieces: list[int], boxes: list[tuple[slice, slice, slice] | None],
    spacing: tuple[float, float, float],
) -> set[int]:
    """Candidates (0-based indices) that are pieces of one tube broken along its axis.

    A detector may answer on a vessel in pieces, each too short to fail the tube check alone
    (the synthetic paravertebral aorta came in three pieces over 170 mm; on ``lung1`` a
    fine-tuned candidate stopped the aorta after 25 mm of tube, see docs/ct-lung-engine.md).  ``pieces`` are the candidates
    mostly outside the lungs.  Consecutive pieces along z are linked when the gap between them
    is at most ``CHAIN_MAX_GAP_DIAMETERS`` of their diameters and the centroid of the upper's
    first slice lies within the larger radius of the lower's last one; a linked group of two
    or more pieces is a tube when all its slice centroids lie within the mean radius of one
    straight line (a fit of row and column on z), the median cross-sections of its pieces vary
    by at most ``TUBE_MAX_AREA_CV``, and it runs at least ``TUBE_MIN_LENGTH_MM`` and
    ``TUBE_ELONGATION`` x its mean diameter from its first to its last slice.
    """
    if len(pieces) < 2:
        return set()
    sz, sr, sc = spacing
    profiles = {}
    for i in pieces:
        box = boxes[i]
        if box is None:
            continue
        mask = labels[box] == i + 1
        area = mask.sum(axis=(1, 2)).astype(float)
        ks = np.nonzero(area)[0]
        rows, cols = np.indices(mask.shape[1:])
        centroid = np.stack([(mask[ks] * rows).sum(axis=(1, 2)) / area[ks], (mask[ks] * cols).sum(axis=(1, 2)) / area[ks]], axis=1)
        centroid = (centroid + [box[1].start, box[2].start]) * [sr, sc]
        z = (ks + box[0].start) * sz
        median_area = float(np.median(area[ks])) * sr * sc
        profiles[i] = (z, centroid, area[ks] * sr * sc, median_area, float(np.sqrt(median_area / np.pi)))
    order = sorted(profiles, key=lambda i: profiles[i][0][0])
    parent = {i: i for i in order}

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a_pos, a in enumerate(order):
        za, ca, _, _, ra = profiles[a]
        for b in order[a_pos + 1 :]:
            zb, cb, _, _, rb = profiles[b]
            gap = zb[0] - za[-1] - sz
            if zb[0] <= za[-1] or gap > CHAIN_MAX_GAP_DIAMETERS * 2 * max(ra, rb):
                continue
            if float(np.hypot(*(cb[0] - ca[-1]))) <= max(ra, rb):
                parent[root(b)] = root(a)
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(root(i), []).append(i)
    chained: set[int] = set()
    for group in groups.values():
        if len(group) < 2:
            continue
        z = np.concatenate([profiles[i][0] for i in group])
        centroid = np.concatenate([profiles[i][1] for i in group])
        areas = np.concatenate([profiles[i][2] for i in group])
        medians = np.array([profiles[i][3] for i in group])
        radius = float(np.sqrt(areas.mean() / np.pi))
        fit = [np.polyval(np.polyfit(z, centroid[:, d], 1), z) for d in (0, 1)]
        off = np.hypot(centroid[:, 0] - fit[0], centroid[:, 1] - fit[1])
        length = float(z.max() - z.min()) + sz
        if (off.max() <= radius and medians.std() <= TUBE_MAX_AREA_CV * medians.mean()
                and length >= TUBE_MIN_LENGTH_MM and length >= TUBE_ELONGATION * 2 * radius):
            chained.update(group)
    return chained


def _box_around(mask: np.ndarray, in_plane_margin: int) -> tuple[slice, slice, slice]:
    """The bounding box of ``mask`` widened in-plane by ``in_plane_margin``; rows and columns
    start on even indices (half-resolution steps stay aligned with the whole grid)."""
    zs, rows, cols = (np.nonzero(mask.any(axis=axes))[0] for axes in ((1, 2), (0, 2), (0, 1)))
    r0 = max(0, int(rows[0]) - in_plane_margin) // 2 * 2
    c0 = max(0, int(cols[0]) - in_plane_margin) // 2 * 2
    return (slice(int(zs[0]), int(zs[-1]) + 1),
            slice(r0, min(mask.shape[1], int(rows[-1]) + in_plane_margin + 1)),
            slice(c0, min(mask.shape[2], int(cols[-1]) + in_plane_margin + 1)))


def _in_plane_disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    structure = np.zeros((3, 2 * radius + 1, 2 * radius + 1), dtype=bool)
    structure[1] = r[:, None] ** 2 + r[None, :] ** 2 <= radius**2
    return structure


