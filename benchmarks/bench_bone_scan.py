"""Time per scan of the bone-scan engine, Grad-CAM and hot spots included (target: at most 2 s
per scan on 2 CPU threads, the published figure).

Usage::

    python benchmarks/bench_bone_scan.py [--threads 2] [--scans 10]

Scans are synthetic metastatic whole-body scans (so the hot-spot segment is made too), half at
1024x256 as one multi-frame series with two energy windows, half at 512x128 as two series.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ai_engines.bone_scan.engine import BoneScanEngine
from ai_engines.bone_scan.synthetic import synthetic_scan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scans", type=int, default=10)
    args = parser.parse_args()
    engine = BoneScanEngine(device="cpu", threads=args.threads)
    scans = [
        synthetic_scan(700_000 + k, metastatic=True, matrix=(1024, 256) if k % 2 == 0 else (512, 128),
                       layout="multiframe" if k % 2 == 0 else "two_series", energy_windows=2)
        for k in range(args.scans)
    ]
    engine.run(scans[0].study)  # warm-up (first-call allocations)
    for label, subset in (("1024x256 multi-frame, 2 windows", scans[0::2]), ("512x128 two series", scans[1::2])):
        totals, stages = [], {}
        for scan in subset:
            start = time.perf_counter()
            findings = engine.run(scan.study)
            totals.append(time.perf_counter() - start)
            for stage, seconds in findings.timings_s.items():
                stages.setdefault(stage, []).append(seconds)
        per_stage = ", ".join(f"{k} {np.median(v):.3f}" for k, v in stages.items())
        print(f"{label}: {len(subset)} scans, median {np.median(totals):.3f} s/scan, max {np.max(totals):.3f} s "
              f"(stages, median s: {per_stage}) on {torch.get_num_threads()} CPU thread(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
