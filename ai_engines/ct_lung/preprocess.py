"""Pre-processing of the published method (Primakov et al., Nat Commun 2022), with its inverse.

HU -> lung window (WW 1500 / WL -600) -> in-plane resampling to 1 x 1 mm -> crop/pad to a
512 x 512 canvas centred on the field of view -> 256 equal-width bins (8 bit).  Slices keep their
native positions (no resampling along z), so a prediction maps back to its source slice exactly.

The constants are part of the model contract: a model card names the
:data:`PREPROCESSING_VERSION` it was trained with and the engine refuses a mismatch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

PREPROCESSING_VERSION = "ct-lung-pre-1.0"
WINDOW_WIDTH_HU = 1500.0
WINDOW_LEVEL_HU = -600.0
TARGET_SPACING_MM = 1.0
CANVAS_SIZE = 512  # network canvas, pixels of TARGET_SPACING_MM
N_BINS = 256  # 8-bit equal-width bins over the window
AIR_HU = -1024.0  # fill value outside the field of view
_CHUNK = 32  # slices per resampling call, to bound memory on 600-slice series


@dataclass(frozen=True)
class CanvasMapping:
    """How a source slice grid lies on the 1 mm canvas (both centred on the field of view).

    Source pixel ``(r, c)`` has its centre at canvas position
    ``((r - (rows - 1) / 2) * row_spacing + (CANVAS_SIZE - 1) / 2, ...)`` (canvas pixels = mm).
    """

    source_shape: tuple[int, int]  # (rows, columns)
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) mm

    def source_to_canvas(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canvas coordinates of (fractional) source pixel indices."""
        centre = (CANVAS_SIZE - 1) / 2
        r = (np.asarray(rows) - (self.source_shape[0] - 1) / 2) * self.pixel_spacing[0] / TARGET_SPACING_MM
        c = (np.asarray(cols) - (self.source_shape[1] - 1) / 2) * self.pixel_spacing[1] / TARGET_SPACING_MM
        return r + centre, c + centre

    def canvas_to_source(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Source pixel indices of (fractional) canvas coordinates."""
        centre = (CANVAS_SIZE - 1) / 2
        r = (np.asarray(rows) - centre) * TARGET_SPACING_MM / self.pixel_spacing[0]
        c = (np.asarray(cols) - centre) * TARGET_SPACING_MM / self.pixel_spacing[1]
        return r + (self.source_shape[0] - 1) / 2, c + (self.source_shape[1] - 1) / 2


def window_to_bins(hu: np.ndarray | torch.Tensor) -> np.ndarray:
    """Lung window and 256 equal-width bins: -1350 HU -> 0, +150 HU -> 255."""
    low = WINDOW_LEVEL_HU - WINDOW_WIDTH_HU / 2
    t = torch.as_tensor(hu, dtype=torch.float32)
    bins = torch.floor((t - low) * (N_BINS / WINDOW_WIDTH_HU)).clamp_(0, N_BINS - 1)
    return bins.to(torch.uint8).numpy()


def _sampling_grid(src: tuple[int, int], dst: tuple[int, int], to_source: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]) -> torch.Tensor:
    """A grid_sample grid (1, H, W, 2) mapping destination pixels to source pixels."""
    rr, cc = np.meshgrid(np.arange(dst[0], dtype=np.float64), np.arange(dst[1], dtype=np.float64), indexing="ij")
    r, c = to_source(rr, cc)
    # align_corners=True: -1 and +1 are the centres of the first and last source pixels.
    gx = 2 * c / max(src[1] - 1, 1) - 1
    gy = 2 * r / max(src[0] - 1, 1) - 1
    return torch.from_numpy(np.stack([gx, gy], axis=-1).astype(np.float32))[None]


def _canvas_blocks(hu: np.ndarray, pixel_spacing: tuple[float, float]):  # noqa: ANN202
    """(mapping, iterator of (start, HU canvas block)): bilinear, ``_CHUNK`` slices at a time."""
    mapping = CanvasMapping((hu.shape[1], hu.shape[2]), (float(pixel_spacing[0]), float(pixel_spacing[1])))
    grid = _sampling_grid(mapping.source_shape, (CANVAS_SIZE, CANVAS_SIZE), mapping.canvas_to_source)

    def blocks():  # noqa: ANN202
        with torch.inference_mode():
            for start in range(0, hu.shape[0], _CHUNK):
                # Shift so that zero padding means air.
                block = torch.as_tensor(np.ascontiguousarray(hu[start : start + _CHUNK], dtype=np.float32)) - AIR_HU
                sampled = F.grid_sample(
                    block[:, None], grid.expand(block.shape[0], -1, -1, -1),
                    mode="bilinear", padding_mode="zeros", align_corners=True,
                )
                yield start, sampled[:, 0].numpy() + AIR_HU

    return mapping, blocks()


def resample_to_canvas(hu: np.ndarray, pixel_spacing: tuple[float, float]) -> tuple[np.ndarray, CanvasMapping]:
    """Bilinear resampling of ``hu[slice, row, col]`` onto the 1 mm, 512 x 512 canvas (HU).

    Outside the field of view the canvas holds air (-1024 HU).
    """
    mapping, blocks = _canvas_blocks(hu, pixel_spacing)
    out = np.empty((hu.shape[0], CANVAS_SIZE, CANVAS_SIZE), dtype=np.float32)
    for start, block in blocks:
        out[start : start + len(block)] = block
    return out, mapping


def preprocess(hu: np.ndarray, pixel_spacing: tuple[float, float]) -> tuple[np.ndarray, CanvasMapping]:
    """The published pipeline: uint8 canvas ``[slice, 512, 512]`` and its mapping.

    Binned block by block, so a 600-slice series never holds a float canvas.
    """
    mapping, blocks = _canvas_blocks(hu, pixel_spacing)
    out = np.empty((hu.shape[0], CANVAS_SIZE, CANVAS_SIZE), dtype=np.uint8)
    for start, block in blocks:
        out[start : start + len(block)] = window_to_bins(block)
    return out, mapping


def canvas_to_source(values: np.ndarray, mapping: CanvasMapping) -> np.ndarray:
    """Bilinear inverse: canvas maps ``[slice, 512, 512]`` back onto the source slice grid.

    Use it on probabilities and threshold afterwards, which keeps edges smooth.
    """
    grid = _sampling_grid((CANVAS_SIZE, CANVAS_SIZE), mapping.source_shape, mapping.source_to_canvas)
    out = np.empty((values.shape[0], *mapping.source_shape), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, values.shape[0], _CHUNK):
            block = torch.as_tensor(np.ascontiguousarray(values[start : start + _CHUNK], dtype=np.float32))
            sampled = F.grid_sample(
                block[:, None], grid.expand(block.shape[0], -1, -1, -1),
                mode="bilinear", padding_mode="zeros", align_corners=True,
            )
            out[start : start + block.shape[0]] = sampled[:, 0].numpy()
    return out
