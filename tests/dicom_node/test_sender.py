"""Delivery through the persistent outbox to a real peer (dcmtk storescp) that is down for a
while: every result arrives exactly once, re-identified; a crashed sender loses nothing."""

from __future__ import annotations

import io
import os
import subprocess
import time

import numpy as np
import pytest
from pydicom import dcmread

from ai_engines import codes
from ai_engines.findings import EngineIdentity, Findings, Segment
from dicom_node.config import parse_config
from dicom_node.deid import Pseudonymizer
from dicom_node.results import ResultOptions, build_result_objects
from dicom_node.sample_data import PatientIdentity, ct_series_datasets, phantom_chest_hu
from dicom_node.sender import Sender
from storage import migrate, outbox
from storage.database import Database
from storage.files import FileStore
from storage.jobs import enqueue
from storage.studies import ReceivedInstance, index_instance
from storage.tables import OutboxItem, utcnow
from storage.vault import Vault
from tests.net import free_port, need

pytestmark = pytest.mark.slow


@pytest.fixture
def owed(tmp_path):
    """A node database with result objects of one pseudonymized study owed to 'pacs'."""
    port = free_port()
    config = parse_config({
        "node": {"data_dir": str(tmp_path / "var")},
        "peers": [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": port,
                   "kind": "clinical"}],
        "sender": {"backoff_seconds": 0.2, "backoff_max_seconds": 0.5, "max_attempts": 50,
                   "lease_seconds": 1},
    })
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    migrate.upgrade(db)
    files = FileStore(tmp_path / "var")
    vault = Vault(db, os.urandom(32))
    identity = PatientIdentity(name="Ökonom^Jörg")
    source = ct_series_datasets(phantom_chest_hu((6, 32, 32)), identity=identity)
    pseudonymizer = Pseudonymizer(config.deid, os.urandom(32))
    clean = []
    with db.session() as session:
        for ds in source:
            result = pseudonymizer.pseudonymize(ds.copy())
            vault.record(session, result.uid_mappings, result.identity)
            clean.append(result.dataset)
        study = index_instance(session, ReceivedInstance(
            str(clean[0].StudyInstanceUID), str(clean[0].SeriesInstanceUID),
            str(clean[0].SOPInstanceUID), str(clean[0].SOPClassUID), "1.2.840.10008.1.2.1",
            "CT", None, "ANON", "PACS", "x", 1, "0" * 64), utcnow())
        (job_id,) = enqueue(session, study.study_id, 1, ["ct_lung"], 3, utcnow())
    mask = np.zeros((6, 32, 32), bool)
    mask[2:4, 10:20, 10:20] = True
    findings = Findings(
        engine=EngineIdentity("test", "1.0", "test-model", "0" * 64),
        source_series_uid=str(clean[0].SeriesInstanceUID),
        segments=(Segment("GTV", "GTV test", codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                          codes.NEOPLASM, "GTV", (255, 0, 0), mask, tracking_id="t1"),))
    objects = build_result_objects(findings, clean, ResultOptions(
        device_observer_uid="2.25.1234", manufacturer="test", manufacturer_model_name="t",
        software_version="1", device_serial_number="1"))
    owed_objects = []
    for ds in objects:
        relative = f"results/{job_id}/{ds.SOPInstanceUID}.dcm"
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.write(relative, buffer.getvalue())
        owed_objects.append(outbox.OwedObject("pacs", str(ds.SOPClassUID),
                                              str(ds.SOPInstanceUID), str(ds.Modality),
                                              relative))
    with db.session() as session:
        outbox.add(session, job_id, owed_objects, utcnow())
    yield config, db, files, vault, identity, objects, port
    db.dispose()


def start_storescp(port: int, out_dir) -> subprocess.Popen:  # noqa: ANN001
    out_dir.mkdir(exist_ok=True)
    proc = subprocess.Popen([need("storescp"), "-aet", "PACS", "+uf", "-od", str(out_dir),
                             "+xa", str(port)], env=dict(os.environ, TCP_NODELAY="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc


def test_destination_down_then_up_every_result_arrives_once(owed, tmp_path):
    config, db, files, vault, identity, objects, port = owed
    sender = Sender(config, db, files, vault)
    for _ in range(4):  # destination down: attempts fail and back off
        sender.send_once()
        time.sleep(0.3)
    with db.session() as s:
        items = s.query(OutboxItem).all()
        assert all(i.state == "pending" and i.attempts >= 1 for i in items)
        assert "association" in items[0].reason
    pacs = start_storescp(port, tmp_path / "rx")
    try:
        deadline = time.time() + 30
        while time.time() < deadline and set(sender.outbox.counts()) != {"sent"}:
            sender.send_once()
            time.sleep(0.2)
    finally:
        pacs.terminate()
        pacs.wait()
    assert sender.outbox.counts() == {"sent": len(objects)}
    received = [dcmread(p) for p in (tmp_path / "rx").iterdir()]
    assert sorted(str(d.SOPInstanceUID) for d in received) == \
        sorted(str(d.SOPInstanceUID) for d in objects)  # each exactly once
    for ds in received:
        assert str(ds.PatientName) == identity.name
        assert ds.StudyInstanceUID == identity.study_uid


def test_crashed_sender_batch_is_sent_after_its_lease(owed, tmp_path):
    config, db, files, vault, identity, objects, port = owed
    crashed = Sender(config, db, files, vault)
    claimed = crashed.outbox.claim_batch("crashed", config.sender.lease_seconds)
    assert len(claimed) == len(objects)  # claimed, then the process "died"
    pacs = start_storescp(port, tmp_path / "rx")
    try:
        restarted = Sender(config, db, files, vault)
        assert restarted.send_once() == 0  # still leased
        time.sleep(config.sender.lease_seconds + 0.2)
        assert restarted.send_once() == len(objects)
    finally:
        pacs.terminate()
        pacs.wait()
    assert restarted.outbox.counts() == {"sent": len(objects)}
    assert len(list((tmp_path / "rx").iterdir())) == len(objects)


def test_wrong_vault_key_sends_nothing_and_says_why(owed):
    config, db, files, vault, identity, objects, port = owed
    other_vault = Vault(db, os.urandom(32))  # wrong key: nothing can be re-identified
    sender = Sender(config, db, files, other_vault)
    assert sender.send_once() == len(objects)
    with db.session() as s:
        items = s.query(OutboxItem).all()
    assert {i.state for i in items} == {"pending"}  # retried later, not sent pseudonymized
    assert all("cannot prepare for clinical" in i.reason for i in items)


def test_leak_check_refuses_a_pseudonym_for_a_clinical_destination(owed, monkeypatch):
    config, db, files, vault, identity, objects, port = owed
    sender = Sender(config, db, files, vault)
    # A re-identifier that forgets the patient module: the pseudonym would leave.
    monkeypatch.setattr(sender.reidentifier, "reidentify", lambda ds, revision=None: ds)
    sender.send_once()
    with db.session() as s:
        items = s.query(OutboxItem).all()
    assert {i.state for i in items} == {"refused"}
    assert all(i.reason.startswith("leak check") for i in items)


def test_storage_commitment_with_orthanc_is_recorded(owed, tmp_path):
    from dicom_node.scp import Receiver
    from storage.outbox import Outbox
    from tests.peers import orthanc_server

    config, db, files, vault, identity, objects, port = owed
    node_port = free_port()
    config = parse_config({
        **config.model_dump(mode="json", exclude={"peers"}),
        "node": {**config.node.model_dump(mode="json"), "host": "127.0.0.1", "port": node_port,
                 "min_free_disk_mb": 1},
        "peers": [],
    })
    with orthanc_server(tmp_path, {"ainode": ["AINODE", "127.0.0.1", node_port]}) as pacs:
        config = parse_config({**config.model_dump(mode="json"), "peers": [
            {"name": "pacs", "ae_title": pacs.aet, "host": "127.0.0.1",
             "port": pacs.dicom_port, "storage_commitment": True, "kind": "clinical"}]})
        receiver = Receiver(config, db, files, None, vault, os.urandom(32),  # type: ignore[arg-type]
                            on_commitment_report=Outbox(db).record_commitment)
        receiver.start()
        try:
            sender = Sender(config, db, files, vault)
            assert sender.send_once() == len(objects)
            deadline = time.time() + 90  # Orthanc answers on its own association, when it gets to it
            while time.time() < deadline:
                with db.session() as s:
                    states = {i.commitment for i in s.query(OutboxItem)}
                if states == {"committed"}:
                    break
                time.sleep(0.3)
        finally:
            receiver.stop()
    assert states == {"committed"}, states
