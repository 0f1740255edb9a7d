"""Exact voxel-wise GLCM feature maps in a sliding window (numpy on CPU, torch on CUDA).

Conventions (documented in docs/radiomics.md):

* 2-D, per slice: the window is ``w × w`` pixels in-plane (default 5 × 5) centred on the pixel.
* Grey levels 1..L (default L = 64; level 0 marks pixels that take part in no pair).
* Four in-plane directions (0°, 45°, 90°, 135°), distance 1.  For each direction the GLCM of a
  window counts the pairs ``(g(p), g(p + d))`` with *both* pixels inside the window and the
  image; it is made symmetric (each pair counted as (i, j) and (j, i)) and normalised.  A
  feature is computed per direction and the four values are averaged (IBSI "averaged").
* A direction without any pair in a window is left out of that pixel's average; pixels whose
  window holds no pair at all get NaN.

The exact computation per direction: each window holds at most ``w(w-1)`` pairs.  The pair
codes ``min(i, j)·L + max(i, j)`` of a window are gathered as shifted views of one code image,
sorted per pixel by a Batcher odd–even merge network (element-wise min/max over whole slices,
so it runs as vector operations on CPU and GPU alike), and the counts ``c`` of equal codes
come from run lengths.  For a symmetric GLCM built from ``T`` unordered pairs, ``T_off`` of
them off the diagonal,

    joint entropy  = log2 T + T_off / T − (1/T) Σ c log2 c
    joint energy   = (1/T²) (Σ_diag c² + ½ Σ_off c²)
    joint maximum  = max(max_diag c, ½ max_off c) / T

and the features linear in p (contrast, dissimilarity, inverse difference (moment), joint
average and variance) are window sums of per-pair values.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

import numpy as np

DIRECTIONS_2D = ((0, 1), (1, 1), (1, 0), (1, -1))
MAP_FEATURES = (
    "cm.joint.entr", "cm.energy", "cm.joint.max", "cm.contrast", "cm.dissimilarity",
    "cm.inv.diff", "cm.inv.diff.mom", "cm.joint.avg", "cm.joint.var",
)


def quantise(image: np.ndarray, n_levels: int, low: float, high: float) -> np.ndarray:
    """Fixed bin number over ``[low, high]`` (values outside are clipped): levels 1..n_levels."""
    if not high > low:
        return np.ones(image.shape, dtype=np.int16)
    scaled = np.floor(n_levels * (np.clip(image, low, high) - low) / (high - low)).astype(np.int64) + 1
    return np.minimum(scaled, n_levels).astype(np.int16)


@lru_cache(maxsize=16)
def sorting_network(n: int) -> tuple[tuple[int, int], ...]:
    """Comparators (i, j), i < j, of Batcher's odd–even merge sort restricted to n inputs.

    The network for the next power of two is pruned: a comparator touching an index ≥ n
    would compare with +∞ padding and never swap.
    """
    size = 1
    while size < n:
        size *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple((a, b) for a, b in pairs if b < n)


def _window_ranges(radius: int, direction: tuple[int, int]) -> tuple[range, range]:
    """Row and column offsets (from the window centre) of the first pixels of the pairs that
    lie wholly inside the window: a rectangle, so window sums are separable."""
    dy, dx = direction
    rows = range(max(-radius, -radius - dy), min(radius, radius - dy) + 1)
    cols = range(max(-radius, -radius - dx), min(radius, radius - dx) + 1)
    return rows, cols


class _Backend:
    """The few array operations the map needs, on numpy (CPU) or torch (CUDA)."""

    def __init__(self, device: str) -> None:
        self.torch = device != "numpy"
        self.device = device
        if self.torch:
            import torch  # only the CUDA path needs it

            self.lib = torch

    def asarray(self, array: np.ndarray):  # noqa: ANN201 - numpy array or torch tensor
        return self.lib.from_numpy(array).to(self.device) if self.torch else array

    def f32(self, x):  # noqa: ANN001, ANN201
        return x.float() if self.torch else x.astype(np.float32)

    def f64(self, x):  # noqa: ANN001, ANN201
        return x.double() if self.torch else x.astype(np.float64)

    def i16(self, x):  # noqa: ANN001, ANN201
        return x.to(self.lib.int16) if self.torch else x.astype(np.int16)

    def take(self, table, index):  # noqa: ANN001, ANN201
        return table[index.long()] if self.torch else np.take(table, index, mode="clip")

    def table(self, values: np.ndarray):  # noqa: ANN201
        return self.asarray(values.astype(np.float32))

    def minimum(self, x, y):  # noqa: ANN001, ANN201
        return self.lib.minimum(x, y) if self.torch else np.minimum(x, y)

    def maximum(self, x, y):  # noqa: ANN001, ANN201
        return self.lib.maximum(x, y) if self.torch else np.maximum(x, y)

    def where(self, condition, x, y):  # noqa: ANN001, ANN201
        return self.lib.where(condition, x, y) if self.torch else np.where(condition, x, y)

    def log2(self, x):  # noqa: ANN001, ANN201
        return self.lib.log2(x) if self.torch else np.log2(x)

    def numpy(self, x) -> np.ndarray:  # noqa: ANN001
        return x.cpu().numpy() if self.torch else x


def _window_sum(values, rows: range, cols: range, pad: int, shape: tuple[int, int]):  # noqa: ANN001, ANN202
    """Sum of ``values`` (padded by ``pad``) over the rectangle of offsets rows × cols."""
    height, width = shape
    across = sum(values[..., :, pad + ox:pad + ox + width] for ox in cols)
    return sum(across[..., pad + oy:pad + oy + height, :] for oy in rows)


_CLOGC = np.array([0.0] + [c * np.log2(c) for c in range(1, 1025)])
_CLOGC_INCREMENT = np.diff(_CLOGC, prepend=0.0)  # [c] = c log2 c - (c-1) log2 (c-1)


def _direction_maps(xp: _Backend, padded, direction: tuple[int, int], radius: int,  # noqa: ANN001
                    n_levels: int, shape: tuple[int, int], features: tuple[str, ...],
                    ) -> dict[str, object]:
    """Feature maps for one direction; ``padded`` is (Z, H + 2P, W + 2P), P = radius + 1,
    grey levels 1..L and 0 for padding and excluded pixels."""
    pad = radius + 1
    height, width = shape
    dy, dx = direction
    z, hp, wp = padded.shape
    a = padded
    # b[p] = g(p + d) on the padded grid; the padding (0) makes pairs leaving the image invalid.
    b = padded * 0
    ys, yd = (slice(0, hp - dy), slice(dy, hp)) if dy >= 0 else (slice(-dy, hp), slice(0, hp + dy))
    xs, xd = (slice(0, wp - dx), slice(dx, wp)) if dx >= 0 else (slice(-dx, wp), slice(0, wp + dx))
    b[:, ys, xs] = padded[:, yd, xd]
    valid = (a > 0) & (b > 0)
    lo, hi = xp.minimum(a, b), xp.maximum(a, b)
    rows, cols = _window_ranges(radius, direction)
    out: dict[str, object] = {}
    total = _window_sum(xp.f32(valid), rows, cols, pad, shape)
    total = xp.where(total > 0, total, total * float("nan"))
    needs_counts = {"cm.joint.entr", "cm.energy", "cm.joint.max"} & set(features)
    if needs_counts:
        # Code (hi - lo)·L + (lo - 1): diagonal pairs are exactly the codes below L.
        sentinel = n_levels * n_levels
        codes = xp.i16(xp.where(valid, (hi - lo) * n_levels + (lo - 1), a * 0 + sentinel))
        elements = [codes[:, pad + oy:pad + oy + height, pad + ox:pad + ox + width]
                    for oy in rows for ox in cols]
        increment = xp.table(_CLOGC_INCREMENT)
        s_clogc = energy = joint_max = None
        if xp.torch:
            for i, j in sorting_network(len(elements)):
                x, y = elements[i], elements[j]
                elements[i], elements[j] = xp.minimum(x, y), xp.maximum(x, y)
        else:
            # In place, rotating one spare buffer: no allocation inside the network.
            elements = [np.ascontiguousarray(e) for e in elements]
            spare = np.empty_like(elements[0])
            for i, j in sorting_network(len(elements)):
                x, y = elements[i], elements[j]
                np.minimum(x, y, out=spare)
                np.maximum(x, y, out=y)
                elements[i], spare = spare, x
        run = xp.i16(elements[0] * 0)
        for k, element in enumerate(elements):
            # Run length of equal codes so far (bool · int16 stays int16).
            run = (element == elements[k - 1]) * run + 1 if k else run + 1
            if "cm.joint.entr" in features:
                step = xp.take(increment, run)
                s_clogc = step if s_clogc is None else s_clogc + step
            if "cm.energy" in features or "cm.joint.max" in features:
                present = xp.f32(element != sentinel)
                weight = (xp.f32(element < n_levels) + 1) * 0.5 * present
                if "cm.energy" in features:
                    term = xp.f32(2 * run - 1) * weight
                    energy = term if energy is None else energy + term
                if "cm.joint.max" in features:
                    term = xp.f32(run) * weight
                    joint_max = term if joint_max is None else xp.maximum(joint_max, term)
        if "cm.joint.entr" in features:
            diagonal = _window_sum(xp.f32(valid & (a == b)), rows, cols, pad, shape)
            # The invalid pairs (sentinels) form one run of n - T codes; remove its share.
            n_invalid = len(elements) - total
            invalid_clogc = xp.take(xp.table(_CLOGC), xp.i16(xp.where(total > 0, n_invalid, 0.0)))
            s = s_clogc - invalid_clogc
            out["cm.joint.entr"] = xp.log2(total) + (total - diagonal) / total - s / total
        if "cm.energy" in features:
            out["cm.energy"] = energy / total**2
        if "cm.joint.max" in features:
            out["cm.joint.max"] = joint_max / total
    af, bf = xp.f32(a), xp.f32(b)
    vf = xp.f32(valid)
    diff = (af - bf) * vf
    diff = xp.maximum(diff, -diff)
    linear = {
        "cm.contrast": lambda: diff**2,
        "cm.dissimilarity": lambda: diff,
        "cm.inv.diff": lambda: vf / (1 + diff),
        "cm.inv.diff.mom": lambda: vf / (1 + diff**2),
    }
    for name, value in linear.items():
        if name in features:
            out[name] = _window_sum(value(), rows, cols, pad, shape) / total
    if "cm.joint.avg" in features or "cm.joint.var" in features:
        # float64: the variance E[i²] − E[i]² cancels digits that float32 does not have.
        a64, b64, v64 = xp.f64(a), xp.f64(b), xp.f64(valid)
        mean = _window_sum((a64 + b64) * 0.5 * v64, rows, cols, pad, shape) / total
        out["cm.joint.avg"] = mean
        if "cm.joint.var" in features:
            second = _window_sum((a64 * a64 + b64 * b64) * 0.5 * v64, rows, cols, pad, shape) / total
            out["cm.joint.var"] = second - mean**2
    return out


def glcm_feature_maps(levels: np.ndarray, n_levels: int, window: int = 5,
                      features: tuple[str, ...] = ("cm.joint.entr",), device: str = "cpu",
                      slices_per_chunk: int | None = None, threads: int = 2,
                      ) -> dict[str, np.ndarray]:
    """Exact sliding-window GLCM feature maps of every slice of ``levels``.

    Parameters
    ----------
    levels
        Grey levels 1..``n_levels`` (0: pixel excluded from all pairs), shape (Z, H, W) or
        (H, W).
    window
        Odd window size in pixels (in-plane).
    features
        IBSI tags from :data:`MAP_FEATURES`.
    device
        ``"cpu"`` (numpy) or a torch device such as ``"cuda"``; same algorithm on both.
        ``"torch-cpu"`` runs the torch path on the CPU (to check it without a GPU).
    slices_per_chunk
        Slices processed at once (memory); ``None``: one on CPU (numpy, cache-sized arrays),
        64 on CUDA (torch).
    threads
        CPU threads (numpy path): the four directions are shared among them.

    Returns
    -------
    dict
        Tag -> float32 map with the shape of ``levels``.
    """
    unknown = set(features) - set(MAP_FEATURES)
    if unknown:
        raise ValueError(f"no map for {sorted(unknown)}; maps exist for {MAP_FEATURES}")
    if window < 3 or window % 2 == 0:
        raise ValueError("window must be odd and at least 3")
    if int(levels.max(initial=0)) > n_levels or int(levels.min(initial=0)) < 0:
        raise ValueError(f"levels must lie in 0..{n_levels}")
    squeeze = levels.ndim == 2
    volume = levels[None] if squeeze else levels
    radius = window // 2
    pad = radius + 1
    xp = _Backend("numpy" if device == "cpu" else device.removeprefix("torch-"))
    chunk = slices_per_chunk or (64 if xp.torch else 1)
    out = {name: np.empty(volume.shape, dtype=np.float32) for name in features}
    shape = (volume.shape[1], volume.shape[2])
    # Work items: blocks of slices (torch) or bands of rows of one slice (numpy: a band's
    # arrays stay in the CPU cache).  Each item is (slices, first row, last row + 1).
    height = volume.shape[1]
    band = height if xp.torch else 64
    items = [(slice(z, z + chunk), r, min(r + band, height))
             for z in range(0, volume.shape[0], chunk) for r in range(0, height, band)]

    def one_item(item: tuple[slice, int, int]) -> None:
        slices, r0, r1 = item
        rows = slice(max(r0 - pad, 0), min(r1 + pad, height))
        block = volume[slices, rows].astype(np.int16)
        # Pad to a halo of ``pad`` rows (zeros only where the image ends) and columns.
        block = np.pad(block, ((0, 0), (pad - (r0 - rows.start), pad - (rows.stop - r1)), (pad, pad)))
        block = xp.asarray(block)
        accumulated: dict[str, Any] = {}  # arrays of the backend (numpy or torch)
        n_directions: dict[str, Any] = {}
        for direction in DIRECTIONS_2D:
            maps = _direction_maps(xp, block, direction, radius, n_levels, (r1 - r0, shape[1]), features)
            for name in features:
                # A direction without pairs in the window (NaN) is left out of the average.
                value = maps[name]
                has_pairs = value == value
                value = xp.where(has_pairs, value, 0.0)
                if name in accumulated:
                    accumulated[name] = accumulated[name] + value
                    n_directions[name] = n_directions[name] + xp.f32(has_pairs)
                else:
                    accumulated[name], n_directions[name] = value, xp.f32(has_pairs)
        for name in features:
            count = n_directions[name]
            mean = accumulated[name] / xp.where(count > 0, count, float("nan"))
            out[name][slices, r0:r1] = xp.numpy(mean)

    if xp.torch or threads <= 1:
        for item in items:
            one_item(item)
    else:
        # numpy releases the GIL in its loops: the bands run on ``threads`` cores.
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(one_item, items))
    return {name: (m[0] if squeeze else m) for name, m in out.items()}
