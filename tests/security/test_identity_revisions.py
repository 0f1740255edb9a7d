"""Identity per revision (issue #10, egress): a PACS re-sends a study after a demographic
correction; results go back with the identity of the instances they were computed on.

The network test uses real peers: dcmtk ``storescu`` sends the study and its correction to the
node's receiver, the CT lung engine runs, and the node's sender delivers to dcmtk ``storescp``.
"""

from __future__ import annotations

import copy
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select, update

from dicom_node.config import parse_config
from dicom_node.deid.reidentify import decode_payload
from dicom_node.node import Node
from dicom_node.sample_data import PatientIdentity, ct_series_datasets, phantom_chest_hu
from dicom_node.sender import Sender
from dicom_node.worker import Worker
from storage.jobs import JobQueue, record_identity_revision
from storage.keys import VAULT
from storage.studies import study_identity_revision
from storage.tables import Instance, Job, OutboxItem, Study
from storage.vault import VaultError, VaultStudy
from tests.net import free_port, need

BEFORE = PatientIdentity(name="Vorname^Korrektur", patient_id="PID-OLD-2718",
                         accession="ACC-OLD-314159")


def corrected(before: PatientIdentity, **changes: str) -> PatientIdentity:
    """The same study (same Study Instance UID) with corrected demographics."""
    return replace(before, **changes)


def resent(datasets: list[Dataset], identity: PatientIdentity) -> list[Dataset]:
    """The same instances (same UIDs, same pixels) as the PACS re-sends them with corrected
    demographics."""
    out = []
    for ds in datasets:
        ds = copy.deepcopy(ds)
        ds.PatientName, ds.PatientID = identity.name, identity.patient_id
        ds.AccessionNumber = identity.accession
        out.append(ds)
    return out


def node_config(tmp_path: Path, pacs_port: int = 104, node_port: int | None = None) -> dict:
    return {
        "node": {"host": "127.0.0.1", "port": node_port or free_port(),
                 "data_dir": str(tmp_path / "var"), "min_free_disk_mb": 1},
        "database": {"url": f"sqlite:///{tmp_path / 'var' / 'node.db'}"},
        "jobs": {"workers": 0},
        "completion": {"quiet_seconds": 0.05},
        "sender": {"backoff_seconds": 0.2, "backoff_max_seconds": 0.5, "max_attempts": 20},
        "peers": [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port,
                   "kind": "clinical"}],
    }


def receive(node: Node, datasets: list[Dataset]) -> None:
    for ds in datasets:  # a copy: the receiver de-identifies what it is given in place
        assert node.receiver.ingest(copy.deepcopy(ds), "PACS") == 0x0000


def quiet(node: Node) -> list:
    time.sleep(0.1)
    return node.completion.run_once()


def database_bytes(tmp_path: Path) -> bytes:
    """The SQLite database as it lies on disk, write-ahead log included."""
    return b"".join(p.read_bytes() for p in sorted((tmp_path / "var").glob("node.db*")))


def identifying(identity: PatientIdentity) -> list[bytes]:
    return [s.encode() for s in (identity.name.split("^")[0], identity.patient_id,
                                 identity.accession, identity.study_uid)]


@pytest.fixture
def node(tmp_path):
    node = Node(parse_config(node_config(tmp_path)), workers=0, send=False)
    yield node
    node.db.dispose()


def test_a_name_correction_is_a_new_revision_and_later_jobs_use_it(node, tmp_path):
    """A name and accession correction changes no de-identified byte, yet the vault keeps both
    identities (encrypted), every re-sent instance records the new revision, and a job that
    reads the study after the correction records that revision."""
    after = corrected(BEFORE, name="Nachname^Korrigiert", accession="ACC-NEW-271828")
    study = ct_series_datasets(phantom_chest_hu((4, 32, 32)), identity=BEFORE)
    receive(node, study)
    (done,) = quiet(node)
    receive(node, resent(study, after))
    assert quiet(node) == []  # same pixels, same pseudonyms: nothing to re-run

    with node.db.session() as s:
        pseudo_study = s.scalar(select(Study.study_uid))
        assert set(s.scalars(select(Instance.identity_revision))) == {2}
        assert study_identity_revision(s, done.study_id) == 2
    revisions = node.vault.identities_for_study(pseudo_study)
    assert [r.revision for r in revisions] == [1, 2]
    assert [str(decode_payload(r.payload).AccessionNumber) for r in revisions] == \
        [BEFORE.accession, after.accession]
    assert node.vault.identity_for_study(pseudo_study).revision == 2  # latest by default
    assert node.vault.identity_for_study(pseudo_study, revision=1).payload == revisions[0].payload
    assert node.vault.identity_for_study(pseudo_study, revision=3) is None  # never another

    # Re-sending the first identity again is the first revision, not a third one.
    receive(node, resent(study, BEFORE)[:1])
    assert len(node.vault.identities_for_study(pseudo_study)) == 2

    # A worker that reads the study now records the corrected revision on the job.
    job = JobQueue(node.db).claim("w", 60)
    with node.db.session() as s:
        record_identity_revision(s, job.id, study_identity_revision(s, job.study_id))
        assert s.get(Job, job.id).identity_revision == 2

    # Nothing identifying of either revision lies in the database in clear.
    on_disk = database_bytes(tmp_path)
    for value in identifying(BEFORE) + identifying(after):
        assert value not in on_disk
    # Each revision is sealed under its own row key: a ciphertext moved to another revision
    # does not decrypt (it is never silently used as the other identity).
    with node.db.session() as s:
        rows = {r.revision: r.payload for r in s.scalars(select(VaultStudy))}
        s.execute(update(VaultStudy).where(VaultStudy.revision == 1)
                  .values(payload=rows[2]))
    with pytest.raises(VaultError):
        node.vault.identity_for_study(pseudo_study, revision=1)


def test_existing_identities_become_revision_one_on_upgrade(tmp_path):
    """A database of the previous schema (0003) keeps its vault identity readable as revision
    1; its instances and jobs are revision 1."""
    from alembic import command

    from storage import migrate
    from storage.database import Database
    from storage.keys import KeyRing
    from storage.vault import OriginalIdentity, Vault

    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    with db.engine.begin() as connection:
        command.upgrade(migrate.alembic_config(connection), "0003")
    ring = KeyRing.single(VAULT, os.urandom(32))
    vault = Vault(db, ring)
    # A row as 0003 wrote it: key = the pseudo study UID alone.
    seal = vault._seal
    with db.engine.begin() as c:
        c.exec_driver_sql(
            "INSERT INTO vault_studies (pseudo_study_uid, pseudo_patient_id, payload, "
            "date_offset, created_at) VALUES (?, ?, ?, ?, '2026-11-01 00:00:00')",
            ("2.25.31", "ANON-ABCDEFGHIJ", seal(b"old-identity", b"vault_studies|2.25.31|payload"),
             seal(b"\xff\xff\xff\xf6", b"vault_studies|2.25.31|date_offset")))
    migrate.upgrade(db)
    assert migrate.pending_differences(db) == []
    assert vault.identity_for_study("2.25.31") == OriginalIdentity(
        "ANON-ABCDEFGHIJ", "2.25.31", b"old-identity", -10, 1)
    # A corrected identity then becomes revision 2; the old one is unchanged.
    with db.session() as s:
        assert vault.record(s, {}, OriginalIdentity("ANON-ABCDEFGHIJ", "2.25.31",
                                                    b"new-identity", -10)) == 2
    assert vault.identity_for_study("2.25.31", revision=1).payload == b"old-identity"
    assert [i.payload for i in vault.identities_for_study("2.25.31")] == \
        [b"old-identity", b"new-identity"]
    # Going back to one identity per study would lose the correction: refused.
    with pytest.raises(RuntimeError, match="revision > 1"), db.engine.begin() as connection:
        command.downgrade(migrate.alembic_config(connection), "0003")
    assert vault.identity_for_study("2.25.31").payload == b"new-identity"
    db.dispose()


# -- over the network, with real peers -------------------------------------------------------

def storescu(port: int, files: list[Path]) -> None:
    done = subprocess.run([need("storescu"), "-aet", "PACS", "-aec", "AINODE",
                           "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def write_study(folder: Path, datasets: list[Dataset]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, ds in enumerate(datasets):
        path = folder / f"{index:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def run_jobs(node: Node) -> None:
    worker = Worker(node.config, node.db, node.files, "2.25.99")
    while worker.run_one():
        pass


@pytest.mark.slow
def test_results_computed_before_a_patient_merge_go_back_with_the_old_identity(tmp_path):
    """storescu sends a CT study; the CT lung engine runs; the PACS then re-sends the study
    after a patient merge (new patient ID, name and accession number). The results computed
    before the merge, delivered after it, carry the old identity; the job the re-sent study
    starts carries the new one. Delivered to a real storescp."""
    from ai_engines.ct_lung.synthetic import synthetic_chest_ct

    pacs_port = free_port()
    config = parse_config(node_config(tmp_path, pacs_port))
    node = Node(config, workers=0, send=False)
    after = corrected(BEFORE, name="Zusammen^Gefuehrt", patient_id="PID-NEW-1618",
                      accession="ACC-NEW-141421")
    case = synthetic_chest_ct(11, n_slices=40, n_tumours=1, diameter_mm=30.0,
                              focus_tumour=True, slice_thickness=2.5)

    study = ct_series_datasets(case.hu, identity=BEFORE, slice_spacing=2.5,
                               pixel_spacing=(case.pixel_spacing,) * 2, origin=case.origin)

    rx = tmp_path / "rx"
    rx.mkdir()
    pacs = subprocess.Popen([need("storescp"), "-aet", "PACS", "+uf", "-od", str(rx), "+xa",
                             str(pacs_port)], env=dict(os.environ, TCP_NODELAY="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    node.receiver.start()
    try:
        storescu(config.node.port, write_study(tmp_path / "before", study))
        assert len(quiet(node)) == 1
        run_jobs(node)  # revision-1 results wait in the outbox
        storescu(config.node.port, write_study(tmp_path / "after", resent(study, after)))
        deadline = time.time() + 30
        while not (done := quiet(node)) and time.time() < deadline:
            pass
        assert done and done[0].revision == 2  # the merge changed the pseudonyms: re-run
        run_jobs(node)

        with node.db.session() as s:
            jobs = {j.id: (j.state, j.revision, j.identity_revision)
                    for j in s.scalars(select(Job).order_by(Job.id))}
            by_sop = {i.sop_instance_uid: i.job_id for i in s.scalars(select(OutboxItem))}
        assert [v for v in jobs.values()] == [("succeeded", 1, 1), ("succeeded", 2, 2)]

        sender = Sender(config, node.db, node.files, node.vault)
        deadline = time.time() + 60
        while time.time() < deadline and set(sender.outbox.counts()) != {"sent"}:
            sender.send_once()
            time.sleep(0.2)
        assert set(sender.outbox.counts()) == {"sent"}
    finally:
        node.receiver.stop()
        pacs.terminate()
        pacs.wait()
        node.db.dispose()

    received = [dcmread(p) for p in rx.iterdir()]
    assert len(received) == len(by_sop)
    job_ids = sorted(jobs)
    for ds in received:
        job_id = by_sop[ds.SOPInstanceUID]
        expected = BEFORE if job_id == job_ids[0] else after
        assert (str(ds.PatientName), ds.PatientID, ds.AccessionNumber) == \
            (expected.name, expected.patient_id, expected.accession), ds.Modality
        assert ds.StudyInstanceUID == BEFORE.study_uid  # the same study, re-identified
    assert {by_sop[ds.SOPInstanceUID] for ds in received} == set(job_ids)
    # The database holds neither identity in clear.
    on_disk = database_bytes(tmp_path)
    for value in identifying(BEFORE) + identifying(after):
        assert value not in on_disk


def test_two_receivers_storing_the_same_correction_at_once_share_one_revision(tmp_path):
    """Two associations re-send the same corrected study at the same moment: the second waits
    for the first's transaction and finds its revision, instead of numbering the same identity
    twice or failing on the primary key."""
    import threading

    from storage import migrate
    from storage.database import Database
    from storage.vault import OriginalIdentity, Vault

    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    migrate.upgrade(db)
    vault = Vault(db, os.urandom(32))
    first = OriginalIdentity("ANON-ABCDEFGHIJ", "2.25.41", b"before", -3)
    fixed = replace(first, payload=b"corrected")
    with db.session() as s:
        assert vault.record(s, {"2.25.42": "1.2.3.42"}, first) == 1
    recorded, results = threading.Event(), {}

    def receiver_a() -> None:
        with db.session() as s:
            results["a"] = vault.record(s, {}, fixed)
            recorded.set()
            time.sleep(1.0)  # still inside the transaction when B starts

    def receiver_b() -> None:
        recorded.wait(10)
        try:
            with db.session() as s:
                results["b"] = vault.record(s, {}, fixed)
        except Exception as exc:  # noqa: BLE001 - the failure is the finding
            results["b"] = type(exc).__name__

    threads = [threading.Thread(target=receiver_a), threading.Thread(target=receiver_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {"a": 2, "b": 2}
    assert [i.payload for i in vault.identities_for_study("2.25.41")] == [b"before", b"corrected"]
    db.dispose()
