"""The CT lung engine's outputs on the end-to-end case, as a comparable signature.

One synthetic chest CT goes through the node in process (receive, de-identify, complete, job,
encode); the signature holds, per SEG segment, the voxel count and a SHA-256 over its frames
keyed by slice position (positions survive de-identification, UIDs do not), and every numeric
value of the SR.  ``tests/dicom_node/data/ct_lung_outputs.json`` holds it for the engine
version it names, written by running this module::

    python -m tests.dicom_node.ct_lung_outputs tests/dicom_node/data/ct_lung_outputs.json

First recorded for engine 1.3.0 on the code before the engine became an entry-point package
(commit 02e85e5); recorded again for 1.4.2 (2026-11-30): the same SEG voxels (counts and
frame hashes) as 1.3.0, the tumour segment now named ``GTV_1`` and its SR group with a
"Probability of cancer" (0.991).  A change of engine version records it again, in the same
commit, so the difference is reviewed.  Only APIs that exist on both sides are used here.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

CASE_SEED = 11  # the case of tests/dicom_node/test_worker.py's delivery test
N_SLICES = 40


def case_datasets(identity=None) -> list[Dataset]:  # noqa: ANN001
    """The axial chest CT of the case, fully identified as a scanner sends it."""
    from ai_engines.ct_lung.synthetic import synthetic_chest_ct
    from dicom_node.sample_data import PatientIdentity, ct_series_datasets

    case = synthetic_chest_ct(CASE_SEED, n_slices=N_SLICES, n_tumours=1, diameter_mm=30.0,
                              focus_tumour=True, slice_thickness=2.5)
    return ct_series_datasets(case.hu, identity=identity or PatientIdentity(),
                              pixel_spacing=(case.pixel_spacing,) * 2, slice_spacing=2.5,
                              origin=case.origin)


def signature(results: Sequence[Dataset]) -> dict:
    """SEG voxels and SR numbers of one job's result objects."""
    out: dict = {"segments": {}, "sr": []}
    for ds in results:
        if ds.Modality == "SEG":
            pixels = np.asarray(ds.pixel_array).reshape(-1, int(ds.Rows), int(ds.Columns)) > 0
            labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in ds.SegmentSequence}
            frames: dict[str, list[tuple[float, bytes]]] = {}
            for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
                number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
                z = round(float(item.PlanePositionSequence[0].ImagePositionPatient[2]), 3)
                frames.setdefault(labels[number], []).append(
                    (z, np.packbits(pixels[index]).tobytes()))
            for label, items in frames.items():
                digest = hashlib.sha256()
                voxels = 0
                for z, packed in sorted(items):
                    digest.update(f"{z:.3f}".encode())
                    digest.update(packed)
                    voxels += int(np.unpackbits(np.frombuffer(packed, np.uint8)).sum())
                out["segments"][label] = {"voxels": voxels, "sha256": digest.hexdigest()}
        elif ds.Modality == "SR":
            out["sr"] = sorted(_numbers(ds))
    return out


def _numbers(ds: Dataset, path: str = "") -> list[list]:
    found = []
    for item in ds.get("ContentSequence", []):
        name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
        if item.ValueType == "NUM":
            value = item.MeasuredValueSequence[0]
            modifiers = [m.ConceptCodeSequence[0].CodeMeaning for m in item.get("ContentSequence", [])
                         if m.ValueType == "CODE"]
            found.append([path, name, "/".join(modifiers), round(float(value.NumericValue), 4),
                          value.MeasurementUnitsCodeSequence[0].CodeValue])
        elif item.ValueType == "TEXT" and name == "Tracking Identifier":
            path = f"{path.split('|')[0]}|{item.TextValue}"
        found.extend(_numbers(item, f"{path}>{name}" if item.ValueType == "CONTAINER" else path))
    return found


def run_case(root: Path, extra_series: Sequence[Sequence[Dataset]] = ()) -> tuple[str, list[Dataset], dict]:
    """Send the case (and ``extra_series`` of the same patient) through an in-process node.

    Returns
    -------
    job state, result datasets, job summary
    """
    from sqlalchemy import select

    from dicom_node.config import parse_config
    from dicom_node.node import Node
    from dicom_node.sample_data import PatientIdentity
    from dicom_node.worker import Worker
    from storage.tables import Job

    config = parse_config({
        "node": {"data_dir": str(root / "var")},
        "database": {"url": f"sqlite:///{root / 'var' / 'node.db'}"},
        "jobs": {"workers": 0}, "completion": {"quiet_seconds": 0.05},
        "peers": [{"name": "pacs", "ae_title": "PACS", "port": 104, "kind": "clinical"}],
    })
    node = Node(config, workers=0, send=False)
    identity = PatientIdentity()
    try:
        for series in [case_datasets(identity), *extra_series]:
            for ds in series:
                ds = copy.deepcopy(ds)
                ds.StudyInstanceUID = identity.study_uid
                assert node.receiver.ingest(ds, "PACS") == 0x0000
        time.sleep(0.1)
        node.completion.run_once()
        worker = Worker(node.config, node.db, node.files, "2.25.99")
        while worker.run_one():
            pass
        with node.db.session() as session:
            jobs = [j for j in session.scalars(select(Job)) if j.engine == "ct_lung"]
            (job,) = jobs
            state, job_id, summary = job.state, job.id, json.loads(job.summary or "{}")
        results = [dcmread(p) for p in sorted((root / "var" / "results" / str(job_id)).glob("*.dcm"))]
        return state, results, summary
    finally:
        node.db.dispose()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        state, results, _ = run_case(Path(tmp))
    assert state == "succeeded", state
    from ai_engines.ct_lung import ENGINE_VERSION

    record = {"engine_version": ENGINE_VERSION, **signature(results)}
    Path(sys.argv[1]).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {sys.argv[1]}")
