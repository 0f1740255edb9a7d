"""Exact voxel-wise GLCM feature maps in a sliding window (torch; CPU or CUDA).

Conventions (documented in docs/radiomics.md):

* 2-D, per slice: the window is ``w × w`` pixels in-plane (default 5 × 5) centred on the pixel.
* Grey levels 1..L (default L = 64; level 0 marks pixels that take part in no pair).
* Four in-plane directions (0°, 45°, 90°, 135°), distance 1.  For each direction the GLCM of a
  window counts the pairs ``(g(p), g(p + d))`` with *both* pixels inside the window and the
  image; it is made symmetric (each pair counted as (i, j) and (j, i)) and normalised.  A
  feature is computed per direction and the four values are averaged (IBSI "averaged").
* Pixels whose window holds no pair get NaN.

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

from functools import lru_cache

import numpy as np
import torch

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


def _window_offsets(radius: int, direction: tuple[int, int]) -> list[tuple[int, int]]:
    """Offsets of the first pixels of the pairs that lie wholly inside the window."""
    dy, dx = direction
    return [(oy, ox) for oy in range(-radius, radius + 1) for ox in range(-radius, radius + 1)
            if -radius <= oy + dy <= radius and -radius <= ox + dx <= radius]


def _direction_maps(padded: torch.Tensor, direction: tuple[int, int], radius: int,
                    n_levels: int, shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Feature maps for one direction; ``padded`` is (Z, H + 2P, W + 2P) with P = radius + 1."""
    pad = radius + 1
    height, width = shape
    dy, dx = direction
    a = padded[:, :, :]
    b = torch.roll(padded, shifts=(-dy, -dx), dims=(1, 2))  # b[p] = g(p + d); padding is 0
    valid = (a > 0) & (b > 0)
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    sentinel = n_levels * n_levels
    code_dtype = torch.int16 if sentinel < 32767 else torch.int32
    codes = torch.where(valid, (lo.to(code_dtype) - 1) * n_levels + (hi.to(code_dtype) - 1),
                        torch.tensor(sentinel, dtype=code_dtype, device=padded.device))
    af, bf = a.float(), b.float()
    vf = valid.float()
    diff = (af - bf).abs()
    linear = {
        "contrast": diff**2 * vf,
        "dissimilarity": diff * vf,
        "inv.diff": vf / (1 + diff),
        "inv.diff.mom": vf / (1 + diff**2),
        "sum": (af + bf) / 2 * vf,
        "sum2": (af**2 + bf**2) / 2 * vf,
    }
    offsets = _window_offsets(radius, direction)

    def view(t: torch.Tensor, oy: int, ox: int) -> torch.Tensor:
        return t[:, pad + oy:pad + oy + height, pad + ox:pad + ox + width]

    sums = {key: sum(view(t, oy, ox) for oy, ox in offsets) for key, t in linear.items()}
    elements = [view(codes, oy, ox) for oy, ox in offsets]
    for i, j in sorting_network(len(elements)):
        x, y = elements[i], elements[j]
        elements[i], elements[j] = torch.minimum(x, y), torch.maximum(x, y)

    max_run = len(elements)
    run = torch.arange(max_run + 1, dtype=torch.float64)
    clogc = torch.where(run > 0, run * torch.log2(run.clamp(min=1)), torch.zeros_like(run))
    increment = torch.cat([torch.zeros(1, dtype=torch.float64), clogc[1:] - clogc[:-1]])
    increment = increment.to(torch.float32).to(padded.device)

    total = torch.zeros((padded.shape[0], height, width), dtype=torch.float32, device=padded.device)
    off_diagonal = torch.zeros_like(total)
    s_clogc = torch.zeros_like(total)
    energy = torch.zeros_like(total)
    joint_max = torch.zeros_like(total)
    run_length = torch.zeros(total.shape, dtype=torch.int64, device=padded.device)
    previous = None
    for element in elements:
        present = element != sentinel
        if previous is None:
            run_length = torch.ones_like(run_length)
        else:
            run_length = torch.where(element == previous, run_length + 1, torch.ones_like(run_length))
        previous = element
        diagonal = (element // n_levels) == (element % n_levels)
        weight = torch.where(diagonal, 1.0, 0.5) * present
        pf = present.float()
        total += pf
        off_diagonal += pf * (~diagonal).float()
        s_clogc += increment[run_length] * pf
        energy += (2 * run_length - 1).float() * weight
        joint_max = torch.maximum(joint_max, run_length.float() * weight)
    with torch.no_grad():
        t = torch.where(total > 0, total, torch.full_like(total, float("nan")))
        mean = sums["sum"] / t
        return {
            "cm.joint.entr": torch.log2(t) + off_diagonal / t - s_clogc / t,
            "cm.energy": energy / t**2,
            "cm.joint.max": joint_max / t,
            "cm.contrast": sums["contrast"] / t,
            "cm.dissimilarity": sums["dissimilarity"] / t,
            "cm.inv.diff": sums["inv.diff"] / t,
            "cm.inv.diff.mom": sums["inv.diff.mom"] / t,
            "cm.joint.avg": mean,
            "cm.joint.var": sums["sum2"] / t - mean**2,
        }


def glcm_feature_maps(levels: np.ndarray, n_levels: int, window: int = 5,
                      features: tuple[str, ...] = ("cm.joint.entr",), device: str = "cpu",
                      slices_per_chunk: int | None = None) -> dict[str, np.ndarray]:
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
        ``"cpu"`` or ``"cuda"``.
    slices_per_chunk
        Slices processed at once (memory); ``None``: 8 on CPU, 64 on CUDA.

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
    chunk = slices_per_chunk or (64 if device.startswith("cuda") else 8)
    out = {name: np.empty(volume.shape, dtype=np.float32) for name in features}
    shape = (volume.shape[1], volume.shape[2])
    with torch.no_grad():
        for start in range(0, volume.shape[0], chunk):
            block = torch.from_numpy(np.ascontiguousarray(volume[start:start + chunk]).astype(np.int16))
            block = torch.nn.functional.pad(block.to(device), (pad, pad, pad, pad))
            accumulated: dict[str, torch.Tensor] = {}
            for direction in DIRECTIONS_2D:
                maps = _direction_maps(block, direction, radius, n_levels, shape)
                for name in features:
                    accumulated[name] = accumulated.get(name, 0) + maps[name]  # type: ignore[operator]
            for name in features:
                out[name][start:start + chunk] = (accumulated[name] / len(DIRECTIONS_2D)).cpu().numpy()
    return {name: (m[0] if squeeze else m) for name, m in out.items()}
