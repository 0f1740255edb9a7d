"""A real PACS (a private Orthanc) stores the source CT and every result object in one study."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from ai_engines.findings import Findings
from dicom_node.results import ResultOptions, build_result_objects
from tests.peers import orthanc_available, orthanc_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not orthanc_available(), reason="Orthanc (Debian 'orthanc') not installed"),
]


def _send(datasets: list[Dataset], port: int, called_aet: str) -> list[int]:
    ae = AE(ae_title="AINODE")
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    association = ae.associate("127.0.0.1", port, ae_title=called_aet)
    assert association.is_established, "Orthanc refused the association"
    try:
        statuses = []
        for ds in datasets:
            status = association.send_c_store(ds)
            statuses.append(int(status.Status) if status else -1)
        return statuses
    finally:
        association.release()


def test_orthanc_stores_source_and_results_in_one_study(
    tmp_path: Path,
    source_datasets: list[Dataset],
    findings: Findings,
    options: ResultOptions,
) -> None:
    results = build_result_objects(findings, source_datasets, options)
    with orthanc_server(tmp_path) as pacs:
        statuses = _send(list(source_datasets) + results, pacs.dicom_port, pacs.aet)
        assert statuses == [0] * len(statuses)

        studies = pacs.rest_get("/studies")
        assert len(studies) == 1
        study = pacs.rest_get(f"/studies/{studies[0]}")
        assert study["MainDicomTags"]["StudyInstanceUID"] == source_datasets[0].StudyInstanceUID
        series = pacs.rest_get(f"/studies/{studies[0]}/series")
        modalities = sorted(s["MainDicomTags"]["Modality"] for s in series)
        assert modalities == ["CT", "OT", "RTSTRUCT", "SEG", "SR"]
        stored_uids = {
            uid
            for s in series
            for uid in (
                pacs.rest_get(f"/instances/{i}")["MainDicomTags"]["SOPInstanceUID"]
                for i in s["Instances"]
            )
        }
        expected = {ds.SOPInstanceUID for ds in list(source_datasets) + results}
        assert stored_uids == expected


def test_orthanc_stores_nm_and_mr_results(
    tmp_path: Path,
    nm_dataset: Dataset,
    nm_findings: Findings,
    mr_datasets: list[Dataset],
    mr_findings: Findings,
    options: ResultOptions,
) -> None:
    """Per-view SEGs on an NM whole-body instance, a Parametric Map on MR, and the rest."""
    sent = [nm_dataset, *build_result_objects(nm_findings, [nm_dataset], options),
            *mr_datasets, *build_result_objects(mr_findings, mr_datasets, options)]
    assert "1.2.840.10008.5.1.4.1.1.30" in {str(ds.SOPClassUID) for ds in sent}
    with orthanc_server(tmp_path) as pacs:
        statuses = _send(sent, pacs.dicom_port, pacs.aet)
        assert statuses == [0] * len(statuses)
        stored = {
            pacs.rest_get(f"/instances/{i}")["MainDicomTags"]["SOPInstanceUID"]
            for i in pacs.rest_get("/instances")
        }
        assert stored == {str(ds.SOPInstanceUID) for ds in sent}
