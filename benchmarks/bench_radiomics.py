"""Speed of the radiomics engine: exact GLCM entropy maps and IBSI features of a 50 ml GTV.

Usage::

    python benchmarks/bench_radiomics.py [--threads 2] [--volume-slices 100] [--repeats 5]

Prints, with wall-clock and process CPU seconds (the CPU figure is what the work costs when
other processes compete for the cores):

* the exact GLCM joint-entropy map (5×5 window, 64 grey levels, 4 directions) of one 512×512
  slice (a real CT slice, lung1, when the reference data is present; otherwise a synthetic one);
* the same map of a 512×512×100 volume on the CPU and, when torch sees a GPU, on CUDA;
* all IBSI features (every family, 3D averaged and merged texture) of a 50 ml spherical GTV
  on a synthetic CT with IBSI configuration C, without and with the entropy map.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ai_engines.radiomics.features import compute_features
from ai_engines.radiomics.maps import glcm_feature_maps, quantise
from ai_engines.radiomics.settings import IBSI_C

LUNG1 = Path("/work/shared/reference-data/real-dev/lung1_image.nrrd")


def ct_slices(n: int) -> tuple[np.ndarray, str]:
    """``n`` 512×512 CT slices in HU (lung1's slices repeated, else synthetic)."""
    if LUNG1.is_file():
        import SimpleITK as sitk  # noqa: N813

        image = sitk.GetArrayFromImage(sitk.ReadImage(str(LUNG1))).astype(np.float32)
        reps = math.ceil(n / image.shape[0])
        return np.concatenate([image] * reps)[:n], "lung1 CT slices"
    rng = np.random.default_rng(0)
    from scipy import ndimage

    base = ndimage.gaussian_filter(rng.normal(size=(512, 512)), 3) * 600 - 300
    return np.stack([base + rng.normal(0, 20, base.shape) for _ in range(n)]), "synthetic slices"


def timed(function, repeats: int) -> tuple[float, float]:  # noqa: ANN001
    """Median wall and CPU seconds of ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def gtv_case(volume_ml: float = 50.0) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A textured spherical GTV of ``volume_ml`` in a synthetic CT (0.8 × 0.8 × 2 mm)."""
    rng = np.random.default_rng(1)
    spacing = (2.0, 0.8, 0.8)
    radius = (3 * volume_ml * 1000 / (4 * math.pi)) ** (1 / 3)
    shape = (60, 160, 160)
    z, y, x = np.meshgrid(*[(np.arange(n) - n / 2) * s for n, s in zip(shape, spacing, strict=True)],
                          indexing="ij")
    gtv = z**2 + y**2 + x**2 <= radius**2
    hu = np.where(gtv, 40 + 25 * np.sin(x / 3) * np.cos(y / 4), -800.0)
    hu = np.round(hu + rng.normal(0, 12, shape))
    return hu, gtv, spacing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--volume-slices", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    slices, source = ct_slices(args.volume_slices)
    levels = quantise(slices, 64, -1000.0, 400.0)
    one = levels[len(levels) // 2]
    wall, cpu = timed(lambda: glcm_feature_maps(one, 64, 5, threads=args.threads), args.repeats)
    print(f"GLCM entropy map, one 512x512 slice ({source}), 5x5, 64 levels, {args.threads} threads: "
          f"wall {wall:.3f} s, CPU {cpu:.3f} s (target <= 0.5 s)")
    wall, cpu = timed(lambda: glcm_feature_maps(levels, 64, 5, threads=args.threads), 1)
    print(f"GLCM entropy map, 512x512x{len(levels)} volume, CPU: wall {wall:.2f} s, CPU {cpu:.2f} s")
    if torch.cuda.is_available():
        glcm_feature_maps(levels[:4], 64, 5, device="cuda")  # warm-up (CUDA context, kernels)
        torch.cuda.synchronize()
        wall, cpu = timed(lambda: glcm_feature_maps(levels, 64, 5, device="cuda"), 3)
        print(f"GLCM entropy map, 512x512x{len(levels)} volume, CUDA ({torch.cuda.get_device_name()}): "
              f"wall {wall:.2f} s (target <= 11.8 s)")
    else:
        print("CUDA: not available on this machine (torch.cuda.is_available() is False)")

    hu, gtv, spacing = gtv_case(50.0)
    volume_ml = gtv.sum() * np.prod(spacing) / 1000
    settings = IBSI_C.with_changes(entropy_map=False)
    result = compute_features(hu, gtv, spacing, settings)
    wall, cpu = timed(lambda: compute_features(hu, gtv, spacing, settings), args.repeats)
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in result.timings_s.items())
    print(f"IBSI features of a {volume_ml:.1f} ml GTV (IBSI-C: 2 mm, FBS 25 HU, 3D avg+merged), "
          f"{len(result.values)} values: wall {wall:.2f} s, CPU {cpu:.2f} s (target <= 2 s); {stages}")
    native = settings.with_changes(name="native", spacing_mm=None)
    wall, cpu = timed(lambda: compute_features(hu, gtv, spacing, native), 3)
    print(f"IBSI features of the same GTV on its native 0.8x0.8x2 mm grid ({int(gtv.sum())} voxels): "
          f"wall {wall:.2f} s, CPU {cpu:.2f} s")
    box = np.flatnonzero(gtv.any(axis=(1, 2)))
    slab = quantise(hu[box[0]:box[-1] + 1], 64, -1000.0, 400.0)
    wall, cpu = timed(lambda: glcm_feature_maps(slab, 64, 5, threads=args.threads), 1)
    print(f"  + entropy map over the GTV's slab ({len(slab)} slices of 160x160): wall {wall:.2f} s, "
          f"CPU {cpu:.2f} s")


if __name__ == "__main__":
    main()
