"""After a study has been received, processed and its results delivered, no identifying value
is found anywhere in the data folder, the database files or the node's log; the results that
reached the clinical destination carry the original identity."""

from __future__ import annotations

import contextlib
import os
import subprocess

import pytest
from pydicom import dcmread

from ai_engines.ct_lung.synthetic import synthetic_chest_ct
from dicom_node.sample_data import PatientIdentity, ct_series_datasets, write_series
from tests.net import free_port, need
from tests.nodeproc import NodeProcess

pytestmark = pytest.mark.slow


def encodings(value: str) -> set[bytes]:
    out = {value.encode("utf-8")}
    with contextlib.suppress(UnicodeEncodeError):
        out.add(value.encode("latin-1"))
    return out


def test_no_identity_at_rest_and_results_reidentified(tmp_path):
    identity = PatientIdentity(
        name="Zwygart^Hedwig", patient_id="PID-ZW-93817", birth_date="19470214",
        institution="Spital Oberwil-Nord", address="Rosenweg 77, 4104 Oberwil",
        accession="ACC-ZW-55521", charset="ISO_IR 100")
    case = synthetic_chest_ct(7, n_slices=40, n_tumours=1, diameter_mm=30.0, focus_tumour=True,
                              slice_thickness=2.5)
    files = write_series(ct_series_datasets(
        case.hu, identity=identity, pixel_spacing=(case.pixel_spacing,) * 2,
        slice_spacing=case.slice_thickness, origin=case.origin), tmp_path / "ct")

    received = tmp_path / "pacs"
    received.mkdir()
    pacs_port = free_port()
    env = dict(os.environ, TCP_NODELAY="1")
    pacs = subprocess.Popen([need("storescp"), "-aet", "PACS", "-od", str(received),
                             "+xa", str(pacs_port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    node = NodeProcess(tmp_path / "node", workers=1, quiet_seconds=1, peers=[
        {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port, "kind": "clinical"}])
    try:
        with node:
            out = subprocess.run([need("storescu"), "-aet", "PACS", "-aec", node.ae_title,
                                  "127.0.0.1", str(node.port), *map(str, files)],
                                 capture_output=True, text=True, env=env)
            assert out.returncode == 0, out.stderr
            status = node.wait_for(
                lambda s: s["jobs"] and not ({"queued", "running"} & set(s["jobs"]))
                and not ({"pending", "sending"} & set(s["outbox"])), timeout=180)
        assert status["jobs"].get("succeeded") == 1, status
    finally:
        pacs.terminate()
        pacs.wait()

    # 1. Nothing identifying inside the node: data folder (files, db, wal, logs).
    needles = set()
    for value in identity.identifying_strings + [identity.study_uid]:
        needles |= encodings(value)
    leaks = []
    for path in node.root.rglob("*"):
        if path.is_file() and path != node.config_path:
            blob = path.read_bytes()
            leaks += [f"{path.relative_to(node.root)}" for n in needles if n in blob]
    assert not leaks, f"identifying values found in: {sorted(set(leaks))}"

    # 2. The clinical destination got re-identified results in the original study.
    results = [dcmread(p) for p in received.iterdir()]
    assert {ds.Modality for ds in results} >= {"SEG", "RTSTRUCT", "SR"}
    for ds in results:
        assert str(ds.PatientName) == identity.name
        assert ds.PatientID == identity.patient_id
        assert ds.StudyInstanceUID == identity.study_uid
        assert ds.AccessionNumber == identity.accession
        assert ds.SpecificCharacterSet == identity.charset
