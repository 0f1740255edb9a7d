"""End-to-end latency with a real PACS (Orthanc): a synthetic chest CT of N slices is sent
to the node with storescu; the clock runs from the last instance acknowledged (minus the
quiet period) to the last result object stored in Orthanc.  Prints per-stage times from the
job summary (load, engine stages, encode) and the delivery time, so the slowest is visible.

    python benchmarks/bench_end_to_end.py [--slices 300] [--quiet 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select  # noqa: E402

from ai_engines.ct_lung.synthetic import synthetic_chest_ct  # noqa: E402
from dicom_node.sample_data import ct_series_datasets, write_series  # noqa: E402
from storage.database import Database  # noqa: E402
from storage.tables import Job, OutboxItem  # noqa: E402
from tests.net import free_port, need  # noqa: E402
from tests.nodeproc import NodeProcess  # noqa: E402
from tests.peers import orthanc_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--quiet", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=4242)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    try:
        case = synthetic_chest_ct(args.seed, n_slices=args.slices, n_tumours=1,
                                  diameter_mm=30.0, slice_thickness=1.0, focus_tumour=True)
        files = write_series(ct_series_datasets(
            case.hu, pixel_spacing=(case.pixel_spacing,) * 2,
            slice_spacing=case.slice_thickness, origin=case.origin), work / "ct")
        node_port = free_port()
        with orthanc_server(work, {"ainode": ["AINODE", "127.0.0.1", node_port]}) as pacs:
            node = NodeProcess(work / "node", workers=1, quiet_seconds=args.quiet,
                               port=node_port, peers=[{"name": "pacs", "ae_title": pacs.aet,
                                                       "host": "127.0.0.1",
                                                       "port": pacs.dicom_port, "kind": "clinical"}])
            with node:
                t0 = time.time()
                subprocess.run([need("storescu"), "-aet", pacs.aet, "-aec", "AINODE", "127.0.0.1",
                                str(node_port), *map(str, files)], check=True,
                               env=dict(os.environ, TCP_NODELAY="1"), capture_output=True)
                t_last = time.time()
                expected = None
                while time.time() - t_last < 600:
                    status = node.status()
                    jobs = status["jobs"]
                    if jobs and not ({"queued", "running"} & set(jobs)):
                        expected = sum(status["outbox"].values())
                        if set(status["outbox"]) <= {"sent", "failed", "refused"}:
                            break
                    time.sleep(0.25)
                db = Database(f"sqlite:///{node.data_dir / 'node.db'}")
                with db.session() as session:
                    last_sent = session.scalar(select(func.max(OutboxItem.sent_at)))
                    job_row = session.scalars(select(Job)).first()
                    created, started, finished = (job_row.created_at, job_row.started_at,
                                                  job_row.finished_at)
                db.dispose()
                t_done = last_sent.replace(tzinfo=dt.UTC).timestamp()
                instances = sum(len(pacs.rest_get(f"/series/{s}")["Instances"])
                                for s in pacs.rest_get("/series"))
                jobs = json.loads(node.cli("jobs", "--json").stdout)
        summary = jobs[0]["summary"] or {}
        print(f"slices: {args.slices}, receive time: {t_last - t0:.1f} s, "
              f"quiet period: {args.quiet:.1f} s")
        print(f"job: {jobs[0]['state']} {jobs[0]['reason_code'] or ''}; results delivered: "
              f"{expected}; instances in Orthanc: {instances}")
        for stage, seconds in (summary.get("timings_s") or {}).items():
            print(f"  {stage:24s} {seconds:7.2f} s")
        def epoch(moment: dt.datetime) -> float:
            return moment.replace(tzinfo=dt.UTC).timestamp()

        print(f"  {'completion -> job queued':24s} {epoch(created) - t_last - args.quiet:7.2f} s"
              "  (after the quiet period)")
        print(f"  {'queued -> job started':24s} {epoch(started) - epoch(created):7.2f} s")
        print(f"  {'job (all stages above)':24s} {epoch(finished) - epoch(started):7.2f} s")
        print(f"  {'send (job end -> last ack)':24s} {t_done - epoch(finished):7.2f} s")
        latency = t_done - t_last - args.quiet
        print(f"last instance (after quiet period) -> last result acknowledged: "
              f"{latency:.1f} s  (target <= 30 s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
