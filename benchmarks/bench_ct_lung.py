"""Time and memory per stage of the CT lung engine on synthetic 120- and 600-slice CTs.

Usage::

    python benchmarks/bench_ct_lung.py [--threads 2] [--slices 120 600]

Peak memory per stage is measured with tracemalloc (numpy allocations) and the process's
maximum resident set size (resource.getrusage) is reported after each series.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc

import numpy as np
import torch

from ai_engines.ct_lung import engine as ct_engine
from ai_engines.ct_lung.synthetic import synthetic_chest_ct
from ai_engines.registry import get_engine
from ai_engines.volume import StudyInput


class _StagePeaks:
    """Wrap the engine's stage functions to record tracemalloc peaks per stage."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}

    def wrap(self, module, name: str, stage: str) -> None:
        original = getattr(module, name)

        def measured(*args, **kwargs):
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
            try:
                return original(*args, **kwargs)
            finally:
                peak = tracemalloc.get_traced_memory()[1] - start
                self.peaks[stage] = max(self.peaks.get(stage, 0.0), peak / 2**20)

        setattr(module, name, measured)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slices", type=int, nargs="+", default=[120, 600])
    parser.add_argument("--thickness", type=float, default=None, help="default: 2.5 mm for 120, 0.625 mm for 600")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    engine = get_engine("ct_lung", None, "cpu")
    peaks = _StagePeaks()
    peaks.wrap(ct_engine, "isolate_lungs", "lungs")
    peaks.wrap(ct_engine, "preprocess", "preprocess")
    peaks.wrap(ct_engine, "predict_foreground", "tumour")
    peaks.wrap(ct_engine, "refine_extent", "extent")
    peaks.wrap(ct_engine, "recist_axes", "measure")
    # Warm-up (first-call allocations, oneDNN kernels).
    engine.run(StudyInput("warm", (synthetic_chest_ct(1, n_slices=20, slice_thickness=5.0).to_volume(),)))
    print(f"torch threads {torch.get_num_threads()}, CPU, python {sys.version.split()[0]}")
    for n in args.slices:
        thickness = args.thickness or (2.5 if n <= 150 else 0.625)
        t = time.perf_counter()
        case = synthetic_chest_ct(42, n_slices=n, slice_thickness=thickness, pixel_spacing=0.7, n_tumours=1, diameter_mm=35)
        generated = time.perf_counter() - t
        volume = case.to_volume()
        tracemalloc.start()
        peaks.peaks.clear()
        t = time.perf_counter()
        findings = engine.run(StudyInput("bench", (volume,)))
        total = time.perf_counter() - t
        tracemalloc.stop()
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        gtv = [s for s in findings.segments if s.rt_interpreted_type == "GTV"]
        print(f"\n{n} slices x 512 x 512, {thickness} mm (synthetic data generated in {generated:.1f} s)")
        for stage, seconds in findings.timings_s.items():
            print(f"  {stage:<10} {seconds:7.2f} s   peak {peaks.peaks.get(stage, 0.0):8.1f} MiB (tracemalloc)")
        print(f"  {'total':<10} {total:7.2f} s   process max RSS {rss_mb:.0f} MiB")
        print(f"  lesions {len(gtv)}; truth {case.tumour.sum()} voxels; "
              f"dice {2 * (gtv[0].mask & case.tumour).sum() / (gtv[0].mask.sum() + case.tumour.sum()):.3f}" if gtv else "  no lesion found")
        del case, volume, findings
        _ = np.zeros(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
