"""IBSI first-order families: local intensity (9ST6), intensity-based statistics (UHIW),
intensity histogram (ZVCW) and intensity-volume histogram (P88C), all over the 3-D ROI (DHQ4).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

PEAK_RADIUS_MM = (3.0 / (4.0 * np.pi)) ** (1.0 / 3.0) * 10.0  # 1 cm³ sphere: r ≈ 6.2 mm


def _sphere(spacing: tuple[float, float, float]) -> np.ndarray:
    half = [int(np.floor(PEAK_RADIUS_MM / s)) for s in spacing]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing, strict=True)],
                        indexing="ij")
    return (sum(g**2 for g in grids) <= PEAK_RADIUS_MM**2 + 1e-9).astype(np.float64)


def local_intensity_features(image: np.ndarray, intensity_mask: np.ndarray,
                             spacing: tuple[float, float, float]) -> dict[str, float]:
    """Local and global intensity peak: mean in a 1 cm³ sphere (all image voxels count)."""
    kernel = _sphere(spacing)
    # Normalised convolution: near the edge of the (cropped) image only existing voxels count.
    sums = ndimage.correlate(image, kernel, mode="constant", cval=0.0)
    counts = ndimage.correlate(np.ones_like(image), kernel, mode="constant", cval=0.0)
    means = sums / counts
    values = image[intensity_mask]
    at_max = intensity_mask & (image == values.max())
    return {
        "loc.peak.local": float(means[at_max].max()),
        "loc.peak.global": float(means[intensity_mask].max()),
    }


def _statistics(x: np.ndarray, prefix: str) -> dict[str, float]:
    """The statistics shared by intensity-based and intensity-histogram features."""
    mean = x.mean()
    deviation = x - mean
    variance = float((deviation**2).mean())
    p10, p25, p50, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90])
    robust = x[(x >= p10) & (x <= p90)]
    f = {
        f"{prefix}.mean": float(mean),
        f"{prefix}.var": variance,
        f"{prefix}.skew": float((deviation**3).mean() / variance**1.5) if variance > 0 else 0.0,
        f"{prefix}.kurt": float((deviation**4).mean() / variance**2 - 3) if variance > 0 else 0.0,
        f"{prefix}.median": float(p50),
        f"{prefix}.min": float(x.min()),
        f"{prefix}.P10": float(p10),
        f"{prefix}.P90": float(p90),
        f"{prefix}.max": float(x.max()),
        f"{prefix}.iqr": float(p75 - p25),
        f"{prefix}.range": float(x.max() - x.min()),
        f"{prefix}.mad": float(np.abs(deviation).mean()),
        f"{prefix}.rmad": float(np.abs(robust - robust.mean()).mean()) if robust.size else float("nan"),
        f"{prefix}.medad": float(np.abs(x - p50).mean()),
        f"{prefix}.cov": float(np.sqrt(variance) / mean) if mean != 0 else float("nan"),
        f"{prefix}.qcod": float((p75 - p25) / (p75 + p25)) if p75 + p25 != 0 else float("nan"),
    }
    return f


def statistics_features(values: np.ndarray) -> dict[str, float]:
    """Intensity-based statistics of the intensities in the intensity mask."""
    x = np.asarray(values, dtype=np.float64)
    f = _statistics(x, "stat")
    f["stat.energy"] = float((x**2).sum())
    f["stat.rms"] = float(np.sqrt((x**2).mean()))
    return f


def histogram_features(levels: np.ndarray, n_levels: int) -> dict[str, float]:
    """Intensity-histogram features of discretised grey levels 1..Ng."""
    x = np.asarray(levels, dtype=np.float64)
    f = _statistics(x, "ih")
    histogram = np.bincount(levels, minlength=n_levels + 1)[1:].astype(np.float64)
    p = histogram / histogram.sum()
    nonzero = p[p > 0]
    f["ih.mode"] = float(np.argmax(histogram) + 1)  # first (lowest) mode
    f["ih.entropy"] = float(-(nonzero * np.log2(nonzero)).sum())
    f["ih.uniformity"] = float((p**2).sum())
    gradient = np.gradient(histogram) if len(histogram) > 1 else np.zeros(1)
    f["ih.max.grad"] = float(gradient.max())
    f["ih.max.grad.gl"] = float(np.argmax(gradient) + 1)
    f["ih.min.grad"] = float(gradient.min())
    f["ih.min.grad.gl"] = float(np.argmin(gradient) + 1)
    return f


def ivh_features(values: np.ndarray, total_range: tuple[float, float], step: float,
                 ) -> dict[str, float]:
    """Intensity-volume histogram features.

    Parameters
    ----------
    values
        The discretised intensities X_d,gl (bin centres for FBS, bin numbers for FBN, the
        intensities themselves for discrete calibrated data).
    total_range
        G = [min, max] of the IVH; ``step`` is the discretisation interval w_d.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    g_min, g_max = total_range
    n_steps = int(round((g_max - g_min) / step))
    intensities = g_min + step * np.arange(n_steps + 1)
    # nu_i: fraction of voxels with intensity >= i (searchsorted on the sorted values).
    below = np.searchsorted(x, intensities - step * 1e-6, side="left")
    nu = 1.0 - below / len(x)
    gamma = (intensities - g_min) / (g_max - g_min) if g_max > g_min else np.zeros_like(intensities)

    def volume_at(fraction: float) -> float:
        keep = gamma >= fraction - 1e-12
        return float(nu[keep].max()) if keep.any() else 0.0

    def intensity_at(fraction: float) -> float:
        keep = nu <= fraction + 1e-12
        return float(intensities[keep].min()) if keep.any() else float(g_max + step)

    f = {
        "ivh.V10": volume_at(0.10),
        "ivh.V90": volume_at(0.90),
        "ivh.I10": intensity_at(0.10),
        "ivh.I90": intensity_at(0.90),
    }
    f["ivh.V10minusV90"] = f["ivh.V10"] - f["ivh.V90"]
    f["ivh.I10minusI90"] = f["ivh.I10"] - f["ivh.I90"]
    return f
