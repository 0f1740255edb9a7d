"""RECIST 1.1 axes of a lesion mask: the longest axial diameter and its longest perpendicular.

Both are measured inside one in-plane connected piece of the lesion: where a lesion is cut
into pieces on a slice (a lobulated tumour, or two lesions the extent model joined), a line
between two pieces would cross tissue that is not lesion, which no reader accepts as a
measurement.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

Axis = tuple[tuple[float, float, float], tuple[float, float, float]]
_EIGHT = np.ones((3, 3), dtype=bool)  # in-plane pieces: 8-connected, like a drawn contour


def _longest_chord(pts: np.ndarray, spacing: tuple[float, float]) -> tuple[float, np.ndarray, np.ndarray]:
    """Squared length (mm^2) and endpoints of the longest distance between ``pts`` (row, col)."""
    from scipy.spatial import ConvexHull, QhullError

    scale = np.asarray(spacing, float)
    hull = pts
    if len(pts) >= 4:
        try:
            hull = pts[ConvexHull(pts * scale).vertices]
        except QhullError:  # collinear pixels: all of them are the hull
            hull = pts
    mm = hull * scale
    d2 = ((mm[:, None, :] - mm[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
    return float(d2[i, j]), hull[i], hull[j]


def recist_axes(mask: np.ndarray, pixel_spacing: tuple[float, float]) -> tuple[Axis, Axis, int, float, float]:
    """RECIST 1.1 longest axial diameter and its longest perpendicular, in mm.

    The long axis is the largest in-plane distance between two pixels of one connected piece
    of the lesion, over all slices and pieces (found on each piece's convex hull); the short
    axis is the longest chord perpendicular to it in the same piece.

    Returns
    -------
    long_axis, short_axis
        Endpoints ``((slice, row, col), (slice, row, col))`` as voxel indices.
    key_slice
        The slice holding the long axis.
    long_mm, short_mm
        Their lengths.
    """
    sr, sc = pixel_spacing
    best: tuple[float, int, np.ndarray | None, np.ndarray | None, np.ndarray | None] = (-1.0, 0, None, None, None)
    for k in np.nonzero(mask.any(axis=(1, 2)))[0]:
        pieces, count = ndimage.label(mask[k], structure=_EIGHT)
        for piece in range(1, count + 1):
            pts = np.argwhere(pieces == piece).astype(float)
            d2, p, q = _longest_chord(pts, (sr, sc))
            if d2 > best[0]:
                best = (d2, int(k), p, q, pts)
    d2, key, p_best, q_best, pts_best = best
    if p_best is None or q_best is None or pts_best is None:
        raise ValueError("the mask is empty")
    p, q, pts = p_best, q_best, pts_best
    long_mm = float(np.sqrt(d2))
    mm = pts * [sr, sc]
    u = (q - p) * [sr, sc] / long_mm if long_mm > 0 else np.array([1.0, 0.0])
    v = np.array([-u[1], u[0]])
    along, across = mm @ u, mm @ v
    bins = np.rint(along / min(sr, sc)).astype(int)
    short_mm, s0, s1 = 0.0, pts[0], pts[0]
    order = np.argsort(bins, kind="stable")
    bins_sorted = bins[order]
    edges = np.r_[0, np.nonzero(np.diff(bins_sorted))[0] + 1, len(order)]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        members = order[a:b]
        lo, hi = members[np.argmin(across[members])], members[np.argmax(across[members])]
        length = float(across[hi] - across[lo])
        if length > short_mm:
            short_mm, s0, s1 = length, pts[lo], pts[hi]
    # A single pixel row still has the width of one pixel.
    long_mm = max(long_mm, min(sr, sc))
    short_mm = max(short_mm, min(sr, sc))
    long_axis = ((float(key), float(p[0]), float(p[1])), (float(key), float(q[0]), float(q[1])))
    short_axis = ((float(key), float(s0[0]), float(s0[1])), (float(key), float(s1[0]), float(s1[1])))
    return long_axis, short_axis, key, long_mm, short_mm
