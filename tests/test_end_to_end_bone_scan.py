"""End to end with a real PACS for the bone-scan engine: Orthanc holds a whole-body bone scan
(anterior + posterior as one NM multi-frame instance), sends it to the node, and receives the
SR with the probability of metastatic disease, the heat-map picture and (when positive) the
hot-spot SEG back into the same study of the same patient, dciodvfy-clean."""

from __future__ import annotations

import numpy as np
import pytest

from ai_engines.bone_scan.synthetic import synthetic_scan
from dicom_node.sample_data import PatientIdentity, nm_whole_body_dataset
from tests.net import need
from tests.pacs_round_trip import (
    dciodvfy_errors,
    pacs_with_node,
    results_in_pacs,
    send_through_node,
    wait_for_modalities,
)

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

    with pacs_with_node(tmp_path) as (pacs, node):
        study_id = send_through_node(pacs, [source])
        wait_for_modalities(pacs, node, study_id, {"SR", "OT", "SEG"})
        out_dir = tmp_path / "results"
        results = results_in_pacs(pacs, study_id, {str(ds.SOPInstanceUID)}, out_dir)
    for result in results:
        assert result.PatientName == identity.name and result.PatientID == identity.patient_id
        assert result.StudyInstanceUID == identity.study_uid
    (sr,) = [r for r in results if r.Modality == "SR"]
    probabilities = _probabilities(sr)
    assert probabilities and max(probabilities) > 0.5, probabilities  # eight metastases: positive
    errors = dciodvfy_errors(out_dir)
    assert not errors, errors
