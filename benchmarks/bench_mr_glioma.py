"""MR glioma engine: time per stage and peak memory for a 4-sequence 256 x 256 x 150 study.

The study (synthetic, seed 100001, all four sequences, 0.86 mm pixels, 1.1 mm slices) is made
first and pickled; the engine then runs in a fresh process so its peak resident memory is
its own.  Prints wall and CPU seconds per stage and the peak RSS.  ``--sequences T1c``: the
same study with T1c alone (the cascade: detector and T1c-only extent network).

Usage::

    .venv/bin/python benchmarks/bench_mr_glioma.py --threads 2
    .venv/bin/python benchmarks/bench_mr_glioma.py --threads 2 --sequences T1c
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_study(path: Path, roles: tuple[str, ...] = ("T1", "T1c", "T2", "FLAIR")) -> None:
    from ai_engines.mr_glioma.synthetic import acquire, synthetic_brain
    from ai_engines.volume import StudyInput

    brain = synthetic_brain(100_001, kind="hgg")
    series = tuple(
        acquire(brain, role, slice_thickness=1.1, pixel_spacing=220 / 256, seed=n, series_uid=f"2.25.1.{n}")
        for n, role in enumerate(("T1", "T1c", "T2", "FLAIR")) if role in roles
    )
    study = StudyInput("2.25.1", series)
    path.write_bytes(pickle.dumps(study))
    print("study:", [s.shape for s in series], flush=True)


def run_engine(path: Path, threads: int, repeats: int) -> None:
    import SimpleITK as sitk  # noqa: N813

    from ai_engines.mr_glioma.engine import MrGliomaEngine

    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(threads)
    study = pickle.loads(path.read_bytes())
    engine = MrGliomaEngine(device="cpu", threads=threads)
    for _ in range(repeats):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        findings = engine.run(study)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        print(json.dumps({
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "stages_wall_s": {k: round(v, 1) for k, v in findings.timings_s.items()},
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
            "declined": findings.decline.code if findings.decline else None,
            "segments": [s.label for s in findings.segments],
            "models": [n for n in findings.notes if n.startswith("model ")],
        }), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--sequences", nargs="+", default=["T1", "T1c", "T2", "FLAIR"],
                        choices=["T1", "T1c", "T2", "FLAIR"])
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_engine(args.run, args.threads, args.repeats)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "study.pkl"
        make_study(path, tuple(args.sequences))
        return subprocess.call([sys.executable, __file__, "--run", str(path), "--threads", str(args.threads),
                                "--repeats", str(args.repeats)])


if __name__ == "__main__":
    raise SystemExit(main())
