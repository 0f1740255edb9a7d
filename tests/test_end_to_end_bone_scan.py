"""End to end with a real PACS for the bone-scan engine: Orthanc holds a whole-body bone scan
(anterior + posterior as one NM multi-frame instance), sends it to the node, and receives the
SR with the probability of metastatic disease, the heat-map picture and (when positive) the
hot-spot SEG back into the same study of the same patient, dciodvfy-clean."""

from __future__ import annotations

import io
import subprocess
import time

import numpy as np
import pytest
from pydicom import dcmread

from ai_engines.bone_scan.synthetic import synthetic_scan
from dicom_node.sample_data import PatientIdentity, nm_whole_body_dataset
from tests.net import free_port, need
from tests.nodeproc import NodeProcess
from tests.peers import orthanc_server
from tests.test_end_to_end import rest_post

pytestmark = pytest.mark.slow

HELD_OUT_SEED = 100003  # among the held-out evaluation seeds, never trained on


def _probabilities(content) -> list[float]:  # noqa: ANN001
    """NUM items 'Probability of cancer' (DCM 111047 / 122157) anywhere in the SR tree."""
    values = []
    for item in content.get("ContentSequence", []):
        if item.get("ValueType") == "NUM" and \
                item.ConceptNameCodeSequence[0].CodeValue in ("111047", "122157"):
            values.append(float(item.MeasuredValueSequence[0].NumericValue))
        values += _probabilities(item)
    return values


def test_bone_scan_orthanc_to_node_and_back(tmp_path):
    need("Orthanc")
    need("dciodvfy")
    scan = synthetic_scan(HELD_OUT_SEED, metastatic=True, matrix=(1024, 256), n_metastases=8)
    # As the camera stores them: the posterior view as seen from behind.
    frames = np.stack([scan.anterior, np.fliplr(scan.posterior)]).clip(0, 65535)
    identity = PatientIdentity(name="Knochen^Berta", patient_id="E2E-BONE-1")
    ds = nm_whole_body_dataset(frames.astype(np.uint16), identity=identity,
                               pixel_spacing_mm=2314 / 1024)
    source = tmp_path / "nm.dcm"
    ds.save_as(source, enforce_file_format=True)

    node_port = free_port()
    with orthanc_server(tmp_path, {"ainode": ["AINODE", "127.0.0.1", node_port]}) as pacs:
        node = NodeProcess(tmp_path / "node", workers=1, quiet_seconds=2, port=node_port, peers=[
            {"name": "pacs", "ae_title": pacs.aet, "host": "127.0.0.1",
             "port": pacs.dicom_port, "kind": "clinical"}])
        with node:
            rest_post(pacs, "/instances", source.read_bytes())
            (study_id,) = pacs.rest_get("/studies")
            rest_post(pacs, "/modalities/ainode/store", study_id.encode(), "text/plain")
            wanted = {"SR", "OT", "SEG"}
            deadline = time.time() + 240
            modalities: set[str] = set()
            while time.time() < deadline:
                series = pacs.rest_get(f"/studies/{study_id}/series")
                modalities = {s["MainDicomTags"].get("Modality") for s in series}
                if wanted <= modalities:
                    break
                time.sleep(1)
            status = node.status()
        assert wanted <= modalities, (modalities, status, node.log_path.read_text()[-3000:])
        results = []
        out_dir = tmp_path / "results"
        out_dir.mkdir()
        for instance in pacs.rest_get(f"/studies/{study_id}/instances"):
            result = dcmread(io.BytesIO(pacs.rest_get_bytes(f"/instances/{instance['ID']}/file")))
            if result.Modality != "NM":
                result.save_as(out_dir / f"{result.Modality}-{result.SOPInstanceUID}.dcm")
                results.append(result)
    for result in results:
        assert result.PatientName == identity.name and result.PatientID == identity.patient_id
        assert result.StudyInstanceUID == identity.study_uid
    (sr,) = [r for r in results if r.Modality == "SR"]
    probabilities = _probabilities(sr)
    assert probabilities and max(probabilities) > 0.5, probabilities  # eight metastases: positive
    iod = [subprocess.run(["dciodvfy", "-new", str(p)], capture_output=True, text=True)
           for p in sorted(out_dir.glob("*.dcm"))]
    errors = [line for r in iod for line in r.stderr.splitlines() if line.startswith("Error")]
    assert not errors, errors
