"""The worked example of docs/writing-an-engine.md: an engine package installed through its
entry point, run by the real node on a study a real PACS (Orthanc) sends, with SEG, RTSTRUCT,
SR and the picture back in the PACS."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread

from dicom_node.sample_data import (
    PatientIdentity,
    ct_series_datasets,
    phantom_chest_hu,
    write_series,
)
from tests.net import free_port, need
from tests.nodeproc import NodeProcess
from tests.peers import orthanc_server
from tests.platform.entry_points import write_distribution

ROOT = Path(__file__).resolve().parents[2]


def study_with_spots(identity: PatientIdentity) -> list:
    hu = phantom_chest_hu((16, 64, 64), seed=8)
    for n in range(3):  # three dense spots the engine must count
        hu[6:9, 12 + 14 * n: 16 + 14 * n, 30:34] = 1500.0
    return ct_series_datasets(hu, identity=identity, series_number=2)


def _post(peer, path: str, body: bytes, content_type: str = "application/dicom"):  # noqa: ANN001
    import urllib.request

    request = urllib.request.Request(f"{peer.base_url}{path}", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read() or b"null")


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

    node_port = free_port()
    with orthanc_server(tmp_path, {"ainode": ["AINODE", "127.0.0.1", node_port]}) as pacs:
        node = NodeProcess(tmp_path / "node", workers=1, quiet_seconds=1, port=node_port, peers=[
            {"name": "pacs", "ae_title": pacs.aet, "host": "127.0.0.1",
             "port": pacs.dicom_port, "kind": "clinical"}])
        with node.config_path.open("a") as config:  # the only route: the example engine
            config.write('[[routes]]\nengine = "hotspot"\n')
        # The node's own process sees the engine (and its acceptance) through the entry point.
        listing = subprocess.run([sys.executable, "-m", "dicom_node.cli", "engines", "--json"],
                                 capture_output=True, text=True, timeout=120)
        assert listing.returncode == 0, listing.stdout + listing.stderr
        assert "hotspot" in [e["name"] for e in json.loads(listing.stdout)["engines"]]
        with node:
            for path in files:
                _post(pacs, "/instances", path.read_bytes())
            (study_id,) = pacs.rest_get("/studies")
            _post(pacs, "/modalities/ainode/store", study_id.encode(), "text/plain")
            wanted = {"SEG", "RTSTRUCT", "SR", "OT"}
            deadline, modalities = time.time() + 180, set()
            while time.time() < deadline and not wanted <= modalities:
                time.sleep(1)
                modalities = {s["MainDicomTags"].get("Modality")
                              for s in pacs.rest_get(f"/studies/{study_id}/series")}
            status = node.status()
        assert wanted <= modalities, (modalities, json.dumps(status)[:2000],
                                      node.log_path.read_text()[-3000:])
        results = [dcmread(io.BytesIO(pacs.rest_get_bytes(f"/instances/{i['ID']}/file")))
                   for i in pacs.rest_get(f"/studies/{study_id}/instances")]
    results = [ds for ds in results if ds.Modality != "CT"]
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    for ds in results:
        assert ds.PatientName == identity.name and ds.PatientID == identity.patient_id
        ds.save_as(out_dir / f"{ds.Modality}-{ds.SOPInstanceUID}.dcm")
    errors = [line for p in sorted(out_dir.glob("*.dcm")) for line in subprocess.run(
        ["dciodvfy", "-new", str(p)], capture_output=True, text=True).stderr.splitlines()
        if line.startswith("Error")]
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
