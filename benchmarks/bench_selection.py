"""Header-first selection: what choosing a CT lung job's input costs when a study also holds a
scout and a coronal reformat, against decoding every series first (the worker before it).

    python benchmarks/bench_selection.py [--slices 300] [--reformat 300]

Ingests one study (axial CT of SLICES 512x512 slices, a 2-image scout, a coronal reformat of
REFORMAT 512x512 images) into a node in a temporary folder, then times, best of two:
reading every series' first header; the whole header-first selection for ct_lung (headers +
decoding the chosen series); and decoding every CT series (what was done before).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--reformat", type=int, default=300)
    args = parser.parse_args()

    from pydicom import dcmread

    from ai_engines.registry import get_spec
    from dicom_node.config import parse_config
    from dicom_node.node import Node
    from dicom_node.sample_data import PatientIdentity, ct_series_datasets, phantom_chest_hu
    from dicom_node.volumes import build_volume
    from dicom_node.worker import JobRunner
    from storage.studies import study_series

    identity = PatientIdentity()
    axial = ct_series_datasets(phantom_chest_hu((args.slices, 512, 512)), identity=identity,
                               slice_spacing=1.0, series_number=2)
    scout = ct_series_datasets(phantom_chest_hu((2, 512, 512)), identity=identity, series_number=1)
    for ds in scout:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    coronal = ct_series_datasets(phantom_chest_hu((args.reformat, 512, 512)), identity=identity,
                                 series_number=3)
    for k, ds in enumerate(coronal):
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        ds.ImagePositionPatient = [-179.2, -179.2 + 0.7 * k, 0.0]
        ds.ImageType = ["DERIVED", "SECONDARY", "MPR"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = parse_config({
            "node": {"data_dir": str(root / "var")},
            "database": {"url": f"sqlite:///{root / 'var' / 'node.db'}"},
            "jobs": {"workers": 0}, "completion": {"quiet_seconds": 0.01},
            "peers": [{"name": "pacs", "ae_title": "PACS", "port": 104}],
        })
        node = Node(config, workers=0, send=False)
        for ds in scout + axial + coronal:
            assert node.receiver.ingest(copy.deepcopy(ds), "PACS") == 0
        del axial, coronal, scout
        time.sleep(0.05)
        (done,) = node.completion.run_once()
        with node.db.session() as session:
            stored = study_series(session, done.study_id)
        runner = JobRunner(node.config, node.db, node.files, "2.25.1")
        spec = get_spec("ct_lung")
        times: dict[str, list[float]] = {"headers": [], "header-first selection": [],
                                         "decode every series": []}
        for _ in range(2):
            t = time.perf_counter()
            runner._headers(stored, [])
            times["headers"].append(time.perf_counter() - t)
            t = time.perf_counter()
            volumes, _, _, notes = runner._select(spec, stored)
            times["header-first selection"].append(time.perf_counter() - t)
            chosen = [v.shape for v in volumes]
            del volumes
            t = time.perf_counter()
            decoded = [build_volume([dcmread(node.files.absolute(p)) for p in s.paths])
                       for s in stored]
            times["decode every series"].append(time.perf_counter() - t)
            del decoded
        node.db.dispose()
    print(f"study: axial {args.slices} + scout 2 + coronal {args.reformat} images of 512x512")
    print(f"chosen: {chosen}; notes: {notes}")
    for name, values in times.items():
        print(f"{name:24s} {min(values):6.2f} s (best of {len(values)})")
    print(f"decoded voxels: {np.prod(chosen[0]) / 1e6:.0f} M of "
          f"{(args.slices + 2 + args.reformat) * 512 * 512 / 1e6:.0f} M received")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
