"""IBSI texture matrices and their features: GLCM (LFYI), GLRLM (TP0I), GLSZM (9SAK),
GLDZM (VMDZ), NGTDM (IPET) and NGLDM (REK0).

Input is a grey-level array ``levels`` indexed ``[z, y, x]`` with values 1..Ng inside the ROI
intensity mask and 0 outside.  "2D" means per slice (the x–y plane), with the 4 in-plane
directions / 8-connectedness; "3D" means the 13 directions / 26-connectedness.

Aggregation (IBSI 1, "Aggregating features"):

========================  ======  =========================================================
name                      code    GLCM / GLRLM
========================  ======  =========================================================
``2D_avg``                BTW3    a matrix per slice and direction; features averaged
``2D_slice_merged``       SUJT    directions merged per slice; features averaged over slices
``2.5D_direction_merged`` JJUI    slices merged per direction; averaged over directions
``2.5D_merged``           ZW7Z    one matrix: all slices and in-plane directions merged
``3D_avg``                ITBB    a 3-D matrix per direction; features averaged
``3D_merged``             IAZD    one 3-D matrix: all 13 directions merged
========================  ======  =========================================================

GLSZM, GLDZM, NGTDM and NGLDM have one matrix per slice (``2D``, 8QNN: features averaged over
slices; ``2.5D``, 62GR: slice matrices merged) or per volume (``3D_volume``, KOBO).  Slices
without a matrix entry (no pairs, runs or zones in the ROI) are left out of averages.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from ai_engines.radiomics.ibsi import zone_aggregation

DIRECTIONS_2D: tuple[tuple[int, int, int], ...] = ((0, 0, 1), (0, 1, 1), (0, 1, 0), (0, 1, -1))
DIRECTIONS_3D: tuple[tuple[int, int, int], ...] = DIRECTIONS_2D + (
    (1, 0, 0), (1, 0, 1), (1, 0, -1), (1, 1, 0), (1, -1, 0),
    (1, 1, 1), (1, 1, -1), (1, -1, 1), (1, -1, -1),
)
_EPS = 1e-300


def _entropy(p: np.ndarray) -> float:
    nonzero = p[p > 0]
    return float(-(nonzero * np.log2(nonzero)).sum())


def _shifted(padded: np.ndarray, offset: tuple[int, int, int], pad: int) -> np.ndarray:
    """The view of ``padded`` (padded by ``pad``) shifted by ``offset`` over the inner region."""
    z, y, x = (s - 2 * pad for s in padded.shape)
    dz, dy, dx = offset
    return padded[pad + dz:pad + dz + z, pad + dy:pad + dy + y, pad + dx:pad + dx + x]


# ---------------------------------------------------------------------------------------------
# GLCM
# ---------------------------------------------------------------------------------------------

def glcm_matrices(levels: np.ndarray, n_levels: int, directions: tuple[tuple[int, int, int], ...],
                  distance: int = 1) -> np.ndarray:
    """Symmetric co-occurrence counts per direction and slice: shape (ndir, Z, Ng, Ng).

    Pairs are counted in the slice of their first voxel (in-plane directions keep both voxels
    in that slice).
    """
    pad = distance
    padded = np.pad(levels, pad)
    n_z = levels.shape[0]
    z_index = np.broadcast_to(np.arange(n_z)[:, None, None], levels.shape)
    out = np.zeros((len(directions), n_z, n_levels, n_levels), dtype=np.float64)
    for d, direction in enumerate(directions):
        neighbour = _shifted(padded, tuple(distance * c for c in direction), pad)  # type: ignore[arg-type]
        valid = (levels > 0) & (neighbour > 0)
        a, b, z = levels[valid] - 1, neighbour[valid] - 1, z_index[valid]
        counts = np.bincount((z * n_levels + a) * n_levels + b, minlength=n_z * n_levels * n_levels)
        m = counts.reshape(n_z, n_levels, n_levels).astype(np.float64)
        out[d] = m + m.transpose(0, 2, 1)
    return out


def glcm_features(matrix: np.ndarray) -> dict[str, float]:
    """IBSI GLCM features of one (symmetric) co-occurrence matrix of counts."""
    n_levels = matrix.shape[0]
    p = matrix / matrix.sum()
    i = np.arange(1, n_levels + 1, dtype=np.float64)[:, None]
    j = i.T
    p_i, p_j = p.sum(axis=1), p.sum(axis=0)
    levels = i[:, 0]
    mu_i, mu_j = float((levels * p_i).sum()), float((levels * p_j).sum())
    k_diff = np.abs(i - j).astype(int)
    p_diff = np.bincount(k_diff.ravel(), weights=p.ravel(), minlength=n_levels)
    k_sum = (i + j).astype(int)
    p_sum = np.bincount(k_sum.ravel(), weights=p.ravel(), minlength=2 * n_levels + 1)
    k = np.arange(n_levels, dtype=np.float64)
    ks = np.arange(2 * n_levels + 1, dtype=np.float64)
    joint_avg = float((i * p).sum())
    diff_avg = float((k * p_diff).sum())
    sum_avg = float((ks * p_sum).sum())
    var_i = float(((levels - mu_i) ** 2 * p_i).sum())
    var_j = float(((levels - mu_j) ** 2 * p_j).sum())
    hxy = _entropy(p)
    hx = _entropy(p_i)
    hy = _entropy(p_j)
    outer = p_i[:, None] * p_j[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_outer = np.where(outer > 0, np.log2(np.maximum(outer, _EPS)), 0.0)
    hxy1 = float(-(p * log_outer).sum())
    hxy2 = float(-(outer * log_outer).sum())
    cluster = i + j - mu_i - mu_j
    f = {
        "cm.joint.max": float(p.max()),
        "cm.joint.avg": joint_avg,
        "cm.joint.var": float(((i - joint_avg) ** 2 * p).sum()),
        "cm.joint.entr": hxy,
        "cm.diff.avg": diff_avg,
        "cm.diff.var": float(((k - diff_avg) ** 2 * p_diff).sum()),
        "cm.diff.entr": _entropy(p_diff),
        "cm.sum.avg": sum_avg,
        "cm.sum.var": float(((ks - sum_avg) ** 2 * p_sum).sum()),
        "cm.sum.entr": _entropy(p_sum),
        "cm.energy": float((p**2).sum()),
        "cm.contrast": float(((i - j) ** 2 * p).sum()),
        "cm.dissimilarity": float((np.abs(i - j) * p).sum()),
        "cm.inv.diff": float((p / (1 + np.abs(i - j))).sum()),
        "cm.inv.diff.norm": float((p / (1 + np.abs(i - j) / n_levels)).sum()),
        "cm.inv.diff.mom": float((p / (1 + (i - j) ** 2)).sum()),
        "cm.inv.diff.mom.norm": float((p / (1 + (i - j) ** 2 / n_levels**2)).sum()),
        "cm.inv.var": float((p_diff[1:] / k[1:] ** 2).sum()),
        "cm.corr": (
            float((((i - mu_i) * (j - mu_j)) * p).sum() / np.sqrt(var_i * var_j))
            if var_i * var_j > 0 else float("nan")
        ),
        "cm.auto.corr": float((i * j * p).sum()),
        "cm.clust.tend": float((cluster**2 * p).sum()),
        "cm.clust.shade": float((cluster**3 * p).sum()),
        "cm.clust.prom": float((cluster**4 * p).sum()),
        "cm.info.corr.1": (hxy - hxy1) / max(hx, hy) if max(hx, hy) > 0 else 0.0,
        "cm.info.corr.2": float(np.sqrt(max(1.0 - np.exp(-2.0 * (hxy2 - hxy)), 0.0))),
    }
    return f


# ---------------------------------------------------------------------------------------------
# GLRLM, GLSZM, GLDZM, NGLDM: matrices of grey level i against a count j (run length, zone
# size, zone distance, dependence count) share one set of feature formulas.
# ---------------------------------------------------------------------------------------------

_COUNT_NAMES = {
    "rlm": ("sre", "lre", "lgre", "hgre", "srlge", "srhge", "lrlge", "lrhge", "glnu", "glnu.norm",
            "rlnu", "rlnu.norm", "r.perc", "gl.var", "rl.var", "rl.entr", None),
    "szm": ("sze", "lze", "lgze", "hgze", "szlge", "szhge", "lzlge", "lzhge", "glnu", "glnu.norm",
            "zsnu", "zsnu.norm", "z.perc", "gl.var", "zs.var", "zs.entr", None),
    "dzm": ("sde", "lde", "lgze", "hgze", "sdlge", "sdhge", "ldlge", "ldhge", "glnu", "glnu.norm",
            "zdnu", "zdnu.norm", "z.perc", "gl.var", "zd.var", "zd.entr", None),
    "ngl": ("lde", "hde", "lgce", "hgce", "ldlge", "ldhge", "hdlge", "hdhge", "glnu", "glnu.norm",
            "dcnu", "dcnu.norm", "dc.perc", "gl.var", "dc.var", "dc.entr", "dc.energy"),
}


def count_matrix_features(matrix: np.ndarray, n_voxels: float, family: str) -> dict[str, float]:
    """Features of an Ng × Nj matrix (rows: grey level 1..Ng, columns: count 1..Nj)."""
    n_s = float(matrix.sum())
    i = np.arange(1, matrix.shape[0] + 1, dtype=np.float64)[:, None]
    j = np.arange(1, matrix.shape[1] + 1, dtype=np.float64)[None, :]
    r_i, r_j = matrix.sum(axis=1), matrix.sum(axis=0)
    p = matrix / n_s
    mu_i = float((i * p).sum())
    mu_j = float((j * p).sum())
    values = (
        float((r_j / j[0] ** 2).sum() / n_s),
        float((r_j * j[0] ** 2).sum() / n_s),
        float((r_i / i[:, 0] ** 2).sum() / n_s),
        float((r_i * i[:, 0] ** 2).sum() / n_s),
        float((matrix / (i**2 * j**2)).sum() / n_s),
        float((matrix * i**2 / j**2).sum() / n_s),
        float((matrix * j**2 / i**2).sum() / n_s),
        float((matrix * i**2 * j**2).sum() / n_s),
        float((r_i**2).sum() / n_s),
        float((r_i**2).sum() / n_s**2),
        float((r_j**2).sum() / n_s),
        float((r_j**2).sum() / n_s**2),
        n_s / n_voxels,
        float(((i - mu_i) ** 2 * p).sum()),
        float(((j - mu_j) ** 2 * p).sum()),
        _entropy(p),
        float((p**2).sum()),
    )
    return {
        f"{family}.{name}": value
        for name, value in zip(_COUNT_NAMES[family], values, strict=True)
        if name is not None
    }


def glrlm_matrices(levels: np.ndarray, n_levels: int,
                   directions: tuple[tuple[int, int, int], ...]) -> tuple[np.ndarray, int]:
    """Run-length counts per direction and slice: shape (ndir, Z, Ng, Nr).

    Runs are counted in the slice where they start.
    """
    padded = np.pad(levels, 1)
    flat = padded.ravel()
    strides = np.array([padded.shape[1] * padded.shape[2], padded.shape[2], 1])
    n_z = levels.shape[0]
    per_direction = []
    max_run = 1
    inside = np.flatnonzero(flat > 0)
    for direction in directions:
        offset = int(np.dot(direction, strides))
        starts = inside[flat[inside - offset] != flat[inside]]
        grey = flat[starts]
        length = np.ones(len(starts), dtype=np.int64)
        active = np.arange(len(starts))
        position = starts.copy()
        while len(active):
            position = position + offset
            go_on = flat[position] == grey[active]
            active, position = active[go_on], position[go_on]
            length[active] += 1
        max_run = max(max_run, int(length.max()) if len(length) else 1)
        per_direction.append((starts // strides[0] - 1, grey - 1, length - 1))
    out = np.zeros((len(directions), n_z, n_levels, max_run), dtype=np.float64)
    for d, (z, g, r) in enumerate(per_direction):
        np.add.at(out[d], (z, g, r), 1.0)
    return out, max_run


def _zones(levels: np.ndarray, n_levels: int, two_d: bool) -> tuple[list[np.ndarray], ...]:
    """Zones of equal grey level: per level the label array and the zone sizes."""
    structure = np.ones((3, 3, 3), dtype=bool)
    if two_d:
        structure[0] = structure[2] = False
    labels_per_level, sizes_per_level = [], []
    for g in range(1, n_levels + 1):
        labels, n = ndimage.label(levels == g, structure=structure)
        labels_per_level.append(labels if n else None)
        sizes_per_level.append(np.bincount(labels.ravel())[1:] if n else np.zeros(0, dtype=np.int64))
    return labels_per_level, sizes_per_level  # type: ignore[return-value]


def zone_matrices(levels: np.ndarray, n_levels: int, morph_mask: np.ndarray, two_d: bool,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GLSZM and GLDZM per slice (2D) or for the volume (3D, one "slice").

    Returns
    -------
    szm, dzm, n_voxels
        Shapes (S, Ng, Nsize), (S, Ng, Ndist) and (S,), S = number of slices (2D) or 1.
    """
    n_s = levels.shape[0] if two_d else 1
    # Distance to the ROI edge: taxicab (4-/6-connected) on the morphological mask, edge = 1.
    if two_d:
        structure = np.zeros((3, 3, 3), dtype=bool)
        structure[1] = ndimage.generate_binary_structure(2, 1)
    else:
        structure = ndimage.generate_binary_structure(3, 1)
    distance = ndimage.distance_transform_cdt(np.pad(morph_mask, 1), metric=structure)[1:-1, 1:-1, 1:-1]
    labels_per_level, sizes_per_level = _zones(levels, n_levels, two_d)
    records: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    max_size, max_dist = 1, 1
    for g, (labels, sizes) in enumerate(zip(labels_per_level, sizes_per_level, strict=True)):
        if labels is None:
            continue
        index = np.arange(1, len(sizes) + 1)
        zone_dist = ndimage.minimum(distance, labels, index).astype(np.int64)
        if two_d:
            ids, first = np.unique(labels.ravel(), return_index=True)
            zone_slice = first[ids > 0] // (levels.shape[1] * levels.shape[2])
        else:
            zone_slice = np.zeros(len(sizes), dtype=np.int64)
        records.append((zone_slice, np.full(len(sizes), g), sizes, zone_dist))
        max_size = max(max_size, int(sizes.max()))
        max_dist = max(max_dist, int(zone_dist.max()))
    szm = np.zeros((n_s, n_levels, max_size))
    dzm = np.zeros((n_s, n_levels, max(max_dist, 1)))
    for in_slice, level, zone_sizes, distances in records:
        np.add.at(szm, (in_slice, level, zone_sizes - 1), 1.0)
        np.add.at(dzm, (in_slice, level, np.maximum(distances, 1) - 1), 1.0)
    inside = levels > 0
    n_voxels = inside.sum(axis=(1, 2)).astype(np.float64) if two_d else np.array([inside.sum()], float)
    return szm, dzm, n_voxels


def _neighbour_offsets(distance: int, two_d: bool) -> list[tuple[int, int, int]]:
    r = range(-distance, distance + 1)
    return [(dz, dy, dx) for dz in (r if not two_d else (0,)) for dy in r for dx in r
            if (dz, dy, dx) != (0, 0, 0)]


def ngtdm_matrices(levels: np.ndarray, n_levels: int, two_d: bool, distance: int = 1,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """NGTDM per slice (2D) or volume: s_i (sum of |i - mean neighbour|) and n_i, shape (S, Ng).

    Only neighbours inside the ROI count; voxels without any neighbour in the ROI are left out.
    """
    padded = np.pad(levels, distance).astype(np.float64)
    inside_padded = padded > 0
    sums = np.zeros(levels.shape)
    counts = np.zeros(levels.shape)
    for offset in _neighbour_offsets(distance, two_d):
        sums += _shifted(padded, offset, distance)
        counts += _shifted(inside_padded, offset, distance)
    valid = (levels > 0) & (counts > 0)
    g = levels[valid] - 1
    deviation = np.abs(levels[valid] - sums[valid] / counts[valid])
    n_s = levels.shape[0] if two_d else 1
    z = np.nonzero(valid)[0] if two_d else np.zeros(len(g), dtype=np.int64)
    s = np.bincount(z * n_levels + g, weights=deviation, minlength=n_s * n_levels).reshape(n_s, n_levels)
    n = np.bincount(z * n_levels + g, minlength=n_s * n_levels).reshape(n_s, n_levels).astype(float)
    return s, n


def ngtdm_features(s: np.ndarray, n: np.ndarray) -> dict[str, float]:
    """IBSI NGTDM features from s_i and n_i (grey levels 1..Ng)."""
    n_vc = float(n.sum())
    p = n / n_vc
    i = np.arange(1, len(s) + 1, dtype=np.float64)
    present = p > 0
    n_gp = int(present.sum())
    ip, pp, sp = i[present], p[present], s[present]
    diff2 = (ip[:, None] - ip[None, :]) ** 2
    ps = float((p * s).sum())
    coarseness = 1.0 / ps if ps > 0 else 1e6
    contrast = (
        float((pp[:, None] * pp[None, :] * diff2).sum()) / (n_gp * (n_gp - 1)) * float(s.sum()) / n_vc
        if n_gp > 1 else 0.0
    )
    busy_den = float(np.abs(ip[:, None] * pp[:, None] - ip[None, :] * pp[None, :]).sum())
    busyness = ps / busy_den if busy_den > 0 else 0.0
    complexity = float(
        (np.abs(ip[:, None] - ip[None, :]) * (pp[:, None] * sp[:, None] + pp[None, :] * sp[None, :])
         / (pp[:, None] + pp[None, :])).sum()
    ) / n_vc
    s_total = float(s.sum())
    strength = float(((pp[:, None] + pp[None, :]) * diff2).sum()) / s_total if s_total > 0 else 0.0
    return {
        "ngt.coarseness": coarseness,
        "ngt.contrast": contrast,
        "ngt.busyness": busyness,
        "ngt.complexity": complexity,
        "ngt.strength": strength,
    }


def ngldm_matrices(levels: np.ndarray, n_levels: int, two_d: bool, distance: int = 1,
                   alpha: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """NGLDM per slice (2D) or volume: shape (S, Ng, Nk) with dependence k = 1 + matching
    neighbours (|g_j - g_i| ≤ alpha, neighbours inside the ROI), and voxel counts (S,)."""
    offsets = _neighbour_offsets(distance, two_d)
    padded = np.pad(levels, distance)
    dependence = np.ones(levels.shape, dtype=np.int64)
    for offset in offsets:
        neighbour = _shifted(padded, offset, distance)
        dependence += (neighbour > 0) & (np.abs(neighbour - levels) <= alpha)
    inside = levels > 0
    n_k = len(offsets) + 1
    n_s = levels.shape[0] if two_d else 1
    z = np.nonzero(inside)[0] if two_d else np.zeros(int(inside.sum()), dtype=np.int64)
    index = (z * n_levels + levels[inside] - 1) * n_k + dependence[inside] - 1
    m = np.bincount(index, minlength=n_s * n_levels * n_k).reshape(n_s, n_levels, n_k).astype(float)
    n_voxels = m.sum(axis=(1, 2))
    return m, n_voxels


# ---------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------

def _mean_of(features: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([f[key] for f in features])) for key in features[0]}


def _aggregate_directional(
    per_dir_slice_2d: np.ndarray | None, per_dir_3d: np.ndarray | None, aggregation: str,
    features: Callable[[np.ndarray], dict[str, float]],
) -> dict[str, float] | None:
    """GLCM/GLRLM aggregation over (direction, slice) matrices."""
    def nonempty(ms: np.ndarray) -> list[np.ndarray]:
        return [m for m in ms if m.sum() > 0]

    if aggregation in ("2D_avg", "2D_slice_merged", "2.5D_direction_merged", "2.5D_merged"):
        if per_dir_slice_2d is None:
            raise ValueError(f"{aggregation} needs the per-slice matrices")
        by_slice = per_dir_slice_2d  # (direction, slice, ...)
        if aggregation == "2D_avg":
            mats = nonempty(by_slice.reshape(-1, *by_slice.shape[2:]))
        elif aggregation == "2D_slice_merged":
            mats = nonempty(by_slice.sum(axis=0))
        elif aggregation == "2.5D_direction_merged":
            mats = nonempty(by_slice.sum(axis=1))
        else:
            mats = nonempty(by_slice.sum(axis=(0, 1))[None])
    elif aggregation in ("3D_avg", "3D_merged"):
        if per_dir_3d is None:
            raise ValueError(f"{aggregation} needs the 3D matrices")
        mats = nonempty(per_dir_3d if aggregation == "3D_avg" else per_dir_3d.sum(axis=0)[None])
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}")
    if not mats:
        return None
    return _mean_of([features(m) for m in mats])


def texture_features(levels: np.ndarray, n_levels: int, morph_mask: np.ndarray,
                     aggregations: tuple[str, ...], glcm_distance: int = 1,
                     ngtdm_distance: int = 1, ngldm_distance: int = 1, ngldm_alpha: int = 0,
                     ) -> dict[tuple[str, str], float]:
    """All texture features, keyed by (IBSI tag, aggregation name).

    Parameters
    ----------
    levels
        Grey levels 1..Ng in the intensity mask, 0 outside, ``[z, y, x]``.
    morph_mask
        The morphological mask (GLDZM distance map).
    aggregations
        Names from :data:`ai_engines.radiomics.ibsi.TEXTURE_AGGREGATIONS`.
    """
    out: dict[tuple[str, str], float] = {}
    need_2d = any(a.startswith("2") for a in aggregations)
    need_3d = any(a.startswith("3D") for a in aggregations)
    glcm_2d = glcm_matrices(levels, n_levels, DIRECTIONS_2D, glcm_distance) if need_2d else None
    glcm_3d = (
        glcm_matrices(levels, n_levels, DIRECTIONS_3D, glcm_distance).sum(axis=1) if need_3d else None
    )
    rlm_2d = rlm_3d = None
    if need_2d:
        rlm_2d, _ = glrlm_matrices(levels, n_levels, DIRECTIONS_2D)
    if need_3d:
        rlm_3d = glrlm_matrices(levels, n_levels, DIRECTIONS_3D)[0].sum(axis=1)

    def rlm_features(m: np.ndarray) -> dict[str, float]:
        runs = np.arange(1, m.shape[1] + 1)
        return count_matrix_features(m, float((m * runs).sum()), "rlm")

    for aggregation in aggregations:
        for feats in (
            _aggregate_directional(glcm_2d, glcm_3d, aggregation, glcm_features),
            _aggregate_directional(rlm_2d, rlm_3d, aggregation, rlm_features),
        ):
            for tag, value in (feats or {}).items():
                out[(tag, aggregation)] = value

    for zone_agg in dict.fromkeys(zone_aggregation(a) for a in aggregations):
        two_d = zone_agg != "3D_volume"
        szm, dzm, n_vox = zone_matrices(levels, n_levels, morph_mask, two_d)
        ngt_s, ngt_n = ngtdm_matrices(levels, n_levels, two_d, ngtdm_distance)
        ngl, ngl_vox = ngldm_matrices(levels, n_levels, two_d, ngldm_distance, ngldm_alpha)
        if zone_agg == "2.5D":
            szm, dzm, n_vox = szm.sum(axis=0)[None], dzm.sum(axis=0)[None], n_vox.sum(keepdims=True)
            ngt_s, ngt_n = ngt_s.sum(axis=0)[None], ngt_n.sum(axis=0)[None]
            ngl, ngl_vox = ngl.sum(axis=0)[None], ngl_vox.sum(keepdims=True)
        per_slice: list[dict[str, float]] = []
        for k in range(szm.shape[0]):
            if szm[k].sum() == 0:
                continue
            f = count_matrix_features(szm[k], n_vox[k], "szm")
            f.update(count_matrix_features(dzm[k], n_vox[k], "dzm"))
            f.update(count_matrix_features(ngl[k], ngl_vox[k], "ngl"))
            if ngt_n[k].sum() > 0:
                f.update(ngtdm_features(ngt_s[k], ngt_n[k]))
            per_slice.append(f)
        if not per_slice:
            continue
        keys = dict.fromkeys(key for f in per_slice for key in f)
        for key in keys:
            values = [f[key] for f in per_slice if key in f]
            out[(key, zone_agg)] = float(np.mean(values))
    return out
