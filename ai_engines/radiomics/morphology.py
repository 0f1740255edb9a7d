"""IBSI morphological features (family HCUG) of one ROI.

The surface is the marching-cubes mesh (scikit-image, Lewiner) of the morphological mask at
iso-level 0.5, on a zero-padded copy so the mesh is closed.  Volume and area come from the
mesh; voxel-counting volume, centre of mass, PCA axes and spatial autocorrelation from voxel
centres.  All lengths in mm.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull
from scipy.special import eval_legendre
from skimage.measure import marching_cubes


def mesh(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Closed triangle mesh of ``mask``: vertices (mm, [z, y, x]) and faces."""
    padded = np.pad(mask.astype(np.float32), 1)
    vertices, faces, _, _ = marching_cubes(padded, level=0.5, spacing=spacing, method="lewiner")
    return vertices - np.asarray(spacing), faces


def mesh_volume_area(vertices: np.ndarray, faces: np.ndarray) -> tuple[float, float]:
    """Volume (divergence theorem) and area of a closed triangle mesh."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    volume = abs(float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6.0)
    area = float(np.linalg.norm(np.cross(b - a, c - a), axis=1).sum() / 2.0)
    return volume, area


def ellipsoid_area(a: float, b: float, c: float, terms: int = 20) -> float:
    """Surface of the ellipsoid with semi-axes a ≥ b ≥ c (IBSI's Legendre series, ν ≤ 20)."""
    alpha = np.sqrt(max(1.0 - b**2 / a**2, 0.0))
    beta = np.sqrt(max(1.0 - c**2 / a**2, 0.0))
    if alpha * beta == 0:
        # Degenerate series argument; fall back on Thomsen's approximation.
        p = 1.6075
        return float(4 * np.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p))
    nu = np.arange(terms + 1)
    x = (alpha**2 + beta**2) / (2 * alpha * beta)
    series = (alpha * beta) ** nu / (1 - 4 * nu**2) * eval_legendre(nu, x)
    return float(4 * np.pi * a * b * series.sum())


def spatial_autocorrelation(coords: np.ndarray, values: np.ndarray, max_voxels: int,
                            seed: int = 0) -> tuple[float, float, bool]:
    """Moran's I and Geary's C with inverse-distance weights.

    Above ``max_voxels`` voxels both are computed on a fixed-seed random subsample of that size
    (the IBSI allows approximation by subsampling).

    Returns
    -------
    moran, geary, subsampled
    """
    subsampled = len(values) > max_voxels
    if subsampled:
        pick = np.random.default_rng(seed).choice(len(values), size=max_voxels, replace=False)
        coords, values = coords[pick], values[pick]
    n = len(values)
    deviation = values - values.mean()
    denominator = float((deviation**2).sum())
    if n < 2 or denominator == 0:
        return float("nan"), float("nan"), subsampled
    # Sums over pairs as matrix-vector products of the weight matrix, a block of rows at a time:
    # sum w (d_i d_j) = d . (W d);  sum w (d_i - d_j)^2 = sum_i d_i^2 (W 1)_i + (W d^2)_i - 2 d_i (W d)_i.
    squared_norms = (coords**2).sum(axis=1)
    weight_sum = moran_sum = geary_sum = 0.0
    chunk = max(1, 4_000_000 // n)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        d2 = squared_norms[start:stop, None] + squared_norms[None, :] - 2.0 * coords[start:stop] @ coords.T
        d2[np.arange(stop - start), np.arange(start, stop)] = np.inf  # no self-pairs: weight 0
        np.maximum(d2, 1e-12, out=d2)
        weight = np.sqrt(d2, out=d2)
        np.divide(1.0, weight, out=weight)
        row_dev = deviation[start:stop]
        w_dev = weight @ deviation
        weight_sum += float(weight.sum())
        moran_sum += float(row_dev @ w_dev)
        geary_sum += float((row_dev**2 * weight.sum(axis=1)).sum() + (weight @ deviation**2).sum()
                           - 2.0 * (row_dev * w_dev).sum())
    moran = n / weight_sum * moran_sum / denominator
    geary = (n - 1) / (2 * weight_sum) * geary_sum / denominator
    return float(moran), float(geary), subsampled


def morphology_features(image: np.ndarray, morph_mask: np.ndarray, intensity_mask: np.ndarray,
                        spacing: tuple[float, float, float], moran_max_voxels: int = 4000,
                        ) -> tuple[dict[str, float], list[str]]:
    """The morphological features, keyed by IBSI tag, and notes on approximations."""
    spacing_arr = np.asarray(spacing, dtype=float)
    notes: list[str] = []
    vertices, faces = mesh(morph_mask, spacing)
    volume, area = mesh_volume_area(vertices, faces)
    f: dict[str, float] = {}
    f["morph.vol"] = volume
    f["morph.approx.vol"] = float(morph_mask.sum() * np.prod(spacing_arr))
    f["morph.area"] = area
    f["morph.av"] = area / volume
    f["morph.comp.1"] = volume / (np.sqrt(np.pi) * area**1.5)
    f["morph.comp.2"] = 36 * np.pi * volume**2 / area**3
    f["morph.sph.dispr"] = area / (36 * np.pi * volume**2) ** (1 / 3)
    f["morph.sphericity"] = (36 * np.pi * volume**2) ** (1 / 3) / area
    f["morph.asphericity"] = (area**3 / (36 * np.pi * volume**2)) ** (1 / 3) - 1

    morph_coords = np.argwhere(morph_mask) * spacing_arr
    int_coords = np.argwhere(intensity_mask) * spacing_arr
    int_values = image[intensity_mask]
    geometric_centre = morph_coords.mean(axis=0)
    weights = int_values - 0.0
    if weights.sum() != 0:
        intensity_centre = (int_coords * weights[:, None]).sum(axis=0) / weights.sum()
        f["morph.com"] = float(np.linalg.norm(geometric_centre - intensity_centre))
    else:
        f["morph.com"] = float("nan")

    # Convex hull of the mesh: maximum diameter and convex-hull densities.
    try:
        hull = ConvexHull(vertices)
        hull_points = vertices[hull.vertices]
        hull_volume, hull_area = float(hull.volume), float(hull.area)
    except Exception:  # noqa: BLE001 - flat meshes have no 3-D hull (qhull error)
        hull_points, hull_volume, hull_area = vertices, float("nan"), float("nan")
    diffs = hull_points[:, None, :] - hull_points[None, :, :]
    f["morph.diam"] = float(np.sqrt((diffs**2).sum(axis=-1)).max())

    # PCA of the voxel centres (sample covariance, as the IBSI reference values use).
    if len(morph_coords) > 1:
        eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(morph_coords.T)))[::-1]
    else:
        eigenvalues = np.zeros(3)
    eigenvalues = np.maximum(eigenvalues, 0.0)
    major, minor, least = eigenvalues
    f["morph.pca.major"] = 4 * np.sqrt(major)
    f["morph.pca.minor"] = 4 * np.sqrt(minor)
    f["morph.pca.least"] = 4 * np.sqrt(least)
    f["morph.pca.elongation"] = np.sqrt(minor / major) if major > 0 else float("nan")
    f["morph.pca.flatness"] = np.sqrt(least / major) if major > 0 else float("nan")

    extent = vertices.max(axis=0) - vertices.min(axis=0)
    f["morph.v.dens.aabb"] = volume / float(np.prod(extent))
    f["morph.a.dens.aabb"] = area / float(
        2 * (extent[0] * extent[1] + extent[0] * extent[2] + extent[1] * extent[2])
    )
    a, b, c = 2 * np.sqrt(major), 2 * np.sqrt(minor), 2 * np.sqrt(least)
    f["morph.v.dens.aee"] = 3 * volume / (4 * np.pi * a * b * c) if a * b * c > 0 else float("nan")
    f["morph.a.dens.aee"] = area / ellipsoid_area(a, b, c) if a * b * c > 0 else float("nan")
    f["morph.v.dens.conv.hull"] = volume / hull_volume
    f["morph.a.dens.conv.hull"] = area / hull_area
    f["morph.integ.int"] = volume * float(int_values.mean())
    moran, geary, subsampled = spatial_autocorrelation(int_coords, int_values, moran_max_voxels)
    if subsampled:
        notes.append(
            f"Moran's I and Geary's C estimated on a random subsample of {moran_max_voxels} "
            f"of {len(int_values)} voxels (seed 0)"
        )
    f["morph.moran.i"] = moran
    f["morph.geary.c"] = geary
    return {k: float(v) for k, v in f.items()}, notes
