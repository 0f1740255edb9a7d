"""The canvas the network reads: both canonical views, resampled and count-normalised
(torch-free).

Each view is padded to the canvas aspect ratio (4:1, body along the rows), resampled by area
averaging to :data:`CANVAS_SHAPE` (1024x256 and 512x128 both land on the same canvas), and
divided by its :data:`NORMALISATION_PERCENTILE` th percentile (a robust bone level: the bladder
or an injection site fill well under 1 % of the field), then clipped at :data:`CLIP`.  The
two views become the two channels of one image, so a lesion lies at the same place in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

PREPROCESSING_VERSION = "bone-scan-pre-1.0"
CANVAS_SHAPE = (128, 32)  # rows (head to feet), columns, per view
NORMALISATION_PERCENTILE = 99.0
CLIP = 6.0


@dataclass(frozen=True)
class CanvasMapping:
    """How a canonical view was padded and resampled onto the canvas (to map back)."""

    source_shape: tuple[int, int]
    padded_shape: tuple[int, int]
    pad_top: int
    pad_left: int
    scale: float  # normalisation divisor (counts at the percentile)


def _pad_to_aspect(image: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Zero-pad columns (or rows, at the bottom) so rows:cols equals the canvas ratio."""
    rows, cols = image.shape
    ratio = CANVAS_SHAPE[0] / CANVAS_SHAPE[1]
    want_cols = int(round(rows / ratio))
    if want_cols >= cols:
        left = (want_cols - cols) // 2
        return np.pad(image, ((0, 0), (left, want_cols - cols - left))), 0, left
    want_rows = int(round(cols * ratio))
    return np.pad(image, ((0, want_rows - rows), (0, 0))), 0, 0


def area_resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Area-average ``image`` onto ``shape`` (block means for whole factors, else smoothed zoom)."""
    rows, cols = image.shape
    if rows % shape[0] == 0 and cols % shape[1] == 0:
        fr, fc = rows // shape[0], cols // shape[1]
        return image.reshape(shape[0], fr, shape[1], fc).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
    fr, fc = rows / shape[0], cols / shape[1]
    smoothed = ndimage.gaussian_filter(image, (max(fr / 2.5, 0), max(fc / 2.5, 0))) if max(fr, fc) > 1 else image
    out = ndimage.zoom(smoothed, (shape[0] / rows, shape[1] / cols), order=1, grid_mode=True, mode="nearest")
    return out[: shape[0], : shape[1]].astype(np.float32)


def view_to_canvas(image: np.ndarray) -> tuple[np.ndarray, CanvasMapping]:
    """One canonical view as a normalised canvas channel, and how to map back."""
    padded, top, left = _pad_to_aspect(np.asarray(image, dtype=np.float32))
    small = area_resample(padded, CANVAS_SHAPE)
    scale = float(np.percentile(small, NORMALISATION_PERCENTILE))
    if scale <= 0:
        scale = float(small.max()) or 1.0
    channel = np.clip(small / scale, 0, CLIP).astype(np.float32)
    return channel, CanvasMapping(
        (image.shape[0], image.shape[1]), (padded.shape[0], padded.shape[1]), top, left, scale
    )


def canvas_pair(anterior: np.ndarray, posterior: np.ndarray) -> tuple[np.ndarray, tuple[CanvasMapping, CanvasMapping]]:
    """The two-channel canvas ``[2, rows, cols]`` of canonical anterior and posterior views."""
    a, map_a = view_to_canvas(anterior)
    p, map_p = view_to_canvas(posterior)
    return np.stack([a, p]), (map_a, map_p)


def canvas_to_view(values: np.ndarray, mapping: CanvasMapping) -> np.ndarray:
    """A canvas-sized (or coarser) map back on the canonical view grid, linearly interpolated."""
    padded = mapping.padded_shape
    zoomed = ndimage.zoom(
        np.asarray(values, dtype=np.float32), (padded[0] / values.shape[0], padded[1] / values.shape[1]),
        order=1, grid_mode=True, mode="nearest",
    )
    zoomed = zoomed[: padded[0], : padded[1]]
    if zoomed.shape != padded:
        zoomed = np.pad(zoomed, ((0, padded[0] - zoomed.shape[0]), (0, padded[1] - zoomed.shape[1])), mode="edge")
    rows, cols = mapping.source_shape
    return np.ascontiguousarray(zoomed[mapping.pad_top : mapping.pad_top + rows, mapping.pad_left : mapping.pad_left + cols])


def study_canvas(pair) -> tuple[np.ndarray, tuple[CanvasMapping, CanvasMapping]]:
    """The canvas of a :class:`~ai_engines.bone_scan.views.ViewPair` (canonical views)."""
    return canvas_pair(pair.anterior.canonical(), pair.posterior.canonical())
