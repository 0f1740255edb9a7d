"""The worked example of docs/writing-an-engine.md: an engine package installed through its
entry point, run by the real node on a study a real PACS (Orthanc) sends, with SEG, RTSTRUCT,
SR and the picture back in the PACS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from dicom_node.sample_data import (
    PatientIdentity,
    ct_series_datasets,
    phantom_chest_hu,
    write_series,
)
from tests.net import need
from tests.pacs_round_trip import (
    dciodvfy_errors,
    pacs_with_node,
    results_in_pacs,
    send_through_node,
    sop_instance_uids,
    wait_for_modalities,
)
from tests.platform.entry_points import write_distribution

ROOT = Path(__file__).resolve().parents[2]


def study_with_spots(identity: PatientIdentity) -> list:
    hu = phantom_chest_hu((16, 64, 64), seed=8)
    for n in range(3):  # three dense spots the engine must count
        hu[6:9, 12 + 14 * n: 16 + 14 * n, 30:34] = 1500.0
    return ct_series_datasets(hu, identity=identity, series_number=2)


@pytest.mark.slow
def test_example_engine_end_to_end_through_orthanc(tmp_path, monkeypatch):
    need("Orthanc")
    need("dciodvfy")
    # Install the example engine the way a site installs an engine wheel.
    site = write_distribution(tmp_path / "site-packages", "hotspot-example",
                              {"hotspot": "tests.platform.hotspot_engine:SPEC"})
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(ROOT)]))
    identity = PatientIdentity(name="Beispiel^Eva", patient_id="HOT-0001")
    files = write_series(study_with_spots(identity), tmp_path / "source")

    # The node's own process sees the engine (and its acceptance) through the entry point.
    listing = subprocess.run([sys.executable, "-m", "dicom_node.cli", "engines", "--json"],
                             capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "hotspot" in [e["name"] for e in json.loads(listing.stdout)["engines"]]
    # The only route: the example engine.
    with pacs_with_node(tmp_path, routes=["hotspot"], quiet_seconds=1) as (pacs, node):
        study_id = send_through_node(pacs, files)
        wait_for_modalities(pacs, node, study_id, {"SEG", "RTSTRUCT", "SR", "OT"}, timeout_s=180)
        out_dir = tmp_path / "results"
        results = results_in_pacs(pacs, study_id, sop_instance_uids(files), out_dir)
    for ds in results:
        assert ds.PatientName == identity.name and ds.PatientID == identity.patient_id
    errors = dciodvfy_errors(out_dir)
    assert not errors, errors

    seg = hd.seg.Segmentation.from_dataset(next(d for d in results if d.Modality == "SEG"))
    assert sorted(s.SegmentLabel for s in seg.SegmentSequence) == [
        "HotSpot_1", "HotSpot_2", "HotSpot_3"]
    sr = next(d for d in results if d.Modality == "SR")
    numbers = _numbers(sr)
    assert numbers["Hot spot count"] == [3.0]
    # Each spot is 3 slices x 4 x 4 pixels of 0.7 x 0.7 x 2.5 mm = 0.0588 ml.
    assert numbers["Volume"] == pytest.approx([0.0588] * 3, abs=1e-4)
    assert np.isclose(sum(numbers["Volume"]), 3 * 48 * 0.7 * 0.7 * 2.5 / 1000)


def _numbers(ds) -> dict[str, list[float]]:  # noqa: ANN001
    found: dict[str, list[float]] = {}
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "NUM":
            name = item.ConceptNameCodeSequence[0].CodeMeaning
            found.setdefault(name, []).append(float(item.MeasuredValueSequence[0].NumericValue))
        for name, values in _numbers(item).items():
            found.setdefault(name, []).extend(values)
    return found
