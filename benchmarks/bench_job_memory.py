"""Peak memory and stage times of one CT lung job, measured in a process that does nothing
else: the CT is generated and written by a separate process first, then a fresh process
ingests it (de-identify, store, index), completes the study and runs the job (volume, engine,
result objects).

    python benchmarks/bench_job_memory.py [--slices 600]

Prints the job's stage times with the highest resident memory sampled in each, and the
process's peak resident memory (target <= 4 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generate(out: Path, slices: int) -> None:
    from ai_engines.ct_lung.synthetic import synthetic_chest_ct
    from dicom_node.sample_data import ct_series_datasets, write_series

    case = synthetic_chest_ct(4243, n_slices=slices, n_tumours=1, diameter_mm=30.0,
                              slice_thickness=0.6 if slices > 400 else 1.0, focus_tumour=True)
    write_series(ct_series_datasets(case.hu, pixel_spacing=(case.pixel_spacing,) * 2,
                                    slice_spacing=case.slice_thickness, origin=case.origin),
                 out)


def run_job(ct_dir: Path, work: Path) -> dict:
    from pydicom import dcmread

    from dicom_node.config import parse_config
    from dicom_node.node import Node
    from dicom_node.worker import Worker
    from storage.jobs import JobQueue

    config = parse_config({
        "node": {"data_dir": str(work / "var"), "min_free_disk_mb": 1},
        "database": {"url": f"sqlite:///{work / 'var' / 'node.db'}"},
        "completion": {"quiet_seconds": 0.01}, "jobs": {"workers": 0},
        "peers": [{"name": "pacs", "ae_title": "PACS", "port": 104, "kind": "clinical"}],
    })
    node = Node(config, workers=0, send=False)
    t0 = time.perf_counter()
    for path in sorted(ct_dir.glob("*.dcm")):
        assert node.receiver.ingest(dcmread(path), "PACS") == 0
    ingest = time.perf_counter() - t0
    time.sleep(0.05)
    node.completion.run_once()
    rss_before_job = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sampler = RssSampler()
    sampler.start()
    t1 = time.perf_counter()
    Worker(config, node.db, node.files, "2.25.1").run_one()
    job_s = time.perf_counter() - t1
    sampler.stop()
    job = JobQueue(node.db).list()[0]
    timings = (job.summary or {}).get("timings_s") or {}
    return {"ingest_s": round(ingest, 1), "job_s": round(job_s, 1),
            "state": job.state, "reason": job.reason_code,
            "timings_s": timings, "stage_peak_rss_mib": sampler.peaks(t1, timings),
            "peak_rss_before_job_mib": round(rss_before_job),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


class RssSampler(threading.Thread):
    """Samples the process's resident memory every 20 ms (from /proc/self/statm)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()
        self._page_mib = os.sysconf("SC_PAGE_SIZE") / 2**20

    def run(self) -> None:
        while not self._stop_event.wait(0.02):
            with open("/proc/self/statm") as statm:
                resident_pages = int(statm.read().split()[1])
            self.samples.append((time.perf_counter(), resident_pages * self._page_mib))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def peaks(self, start: float, timings: dict[str, float]) -> dict[str, int]:
        """Highest sample within each stage, the stages laid end to end from ``start``."""
        out, t = {}, start
        for stage, seconds in timings.items():
            inside = [rss for when, rss in self.samples if t <= when <= t + seconds]
            out[stage] = round(max(inside)) if inside else None
            t += seconds
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=600)
    parser.add_argument("--stage", choices=["generate", "job"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage == "generate":
        generate(args.dir, args.slices)
        return
    if args.stage == "job":
        print(json.dumps(run_job(args.dir / "ct", args.dir / "node")))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-job-"))
    try:
        me = [sys.executable, __file__, "--slices", str(args.slices), "--dir"]
        subprocess.run(me[:-1] + ["--stage", "generate", "--dir", str(work / "ct")], check=True)
        out = subprocess.run(me[:-1] + ["--stage", "job", "--dir", str(work)], check=True,
                             capture_output=True, text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{args.slices} slices: ingest {result['ingest_s']} s, job {result['job_s']} s "
              f"({result['state']} {result['reason'] or ''})")
        peaks = result["stage_peak_rss_mib"]
        for stage, seconds in (result["timings_s"] or {}).items():
            peak = f"peak RSS {peaks[stage]} MiB" if peaks.get(stage) else ""
            print(f"  {stage:20s} {seconds:7.2f} s  {peak}")
        print(f"peak RSS before the job {result['peak_rss_before_job_mib']} MiB; "
              f"peak RSS of the process {result['peak_rss_mib']} MiB (target <= 4096 MiB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
