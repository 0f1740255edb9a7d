"""Retention: old, delivered studies go as a whole; nothing undelivered or running is
deleted; quarantine and orphaned vault rows age out; a dry run deletes nothing."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest
from sqlalchemy import func, select

from dicom_node import cli
from dicom_node.config import DeidSettings
from dicom_node.deid import Pseudonymizer
from dicom_node.sample_data import ct_series_datasets, phantom_chest_hu
from storage import migrate, outbox, quarantine
from storage.database import Database
from storage.files import FileStore
from storage.jobs import enqueue
from storage.retention import RetentionPolicy, StudyNotPurgeable, purge, purge_study
from storage.studies import ReceivedInstance, complete_quiet_studies, index_instance
from storage.tables import Instance, Job, OutboxItem, Quarantined, Study, utcnow
from storage.vault import Vault, VaultStudy, VaultUid

POLICY = RetentionPolicy(study_days=7, quarantine_days=30, vault_days=30)
DAY = dt.timedelta(days=1)


class Store:
    """A node database and data folder with studies in chosen delivery states."""

    def __init__(self, root):
        self.db = Database(f"sqlite:///{root / 'node.db'}")
        migrate.upgrade(db=self.db)
        self.files = FileStore(root / "var")
        self.vault = Vault(self.db, os.urandom(32))
        self.pseudonymizer = Pseudonymizer(DeidSettings(), os.urandom(32))

    def study(self, *, age_days: float, delivery: str | None = "sent",
              job_state: str = "succeeded") -> str:
        """Receive a 3-slice CT, complete it, run a job and owe one result (``delivery``)."""
        when = utcnow() - dt.timedelta(days=age_days)
        clean = [self.pseudonymizer.pseudonymize(ds) for ds in
                 ct_series_datasets(phantom_chest_hu((3, 16, 16)))]
        with self.db.session() as session:
            for result in clean:
                ds = result.dataset
                self.vault.record(session, result.uid_mappings, result.identity)
                path = f"studies/{ds.SOPInstanceUID}.dcm"
                self.files.write(path, b"x" * 100)
                indexed = index_instance(session, ReceivedInstance(
                    str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                    str(ds.SOPInstanceUID), str(ds.SOPClassUID), "1.2.840.10008.1.2.1", "CT",
                    None, "ANON", "PACS", path, 100, "0" * 64), when)
            complete_quiet_studies(session, when, set(), when, when)
            (job_id,) = enqueue(session, indexed.study_id, 1, ["ct_lung"], 3, when)
            job = session.get(Job, job_id)
            job.state, job.finished_at = job_state, when
            if delivery is not None:
                result_path = f"results/{job_id}/2.25.{job_id}9.dcm"
                self.files.write(result_path, b"r" * 50)
                outbox.add(session, job_id, [outbox.OwedObject(
                    "pacs", "1.2.840.10008.5.1.4.1.1.66.4", f"2.25.{job_id}9", "SEG",
                    result_path)], when)
                session.execute(OutboxItem.__table__.update().values(
                    state=delivery, sent_at=when if delivery == "sent" else None,
                    created_at=when).where(OutboxItem.job_id == job_id))
        return str(clean[0].dataset.StudyInstanceUID)

    def count(self, model) -> int:  # noqa: ANN001
        with self.db.session() as session:
            return session.scalar(select(func.count()).select_from(model))

    def stored_files(self) -> list[str]:
        return sorted(str(p.relative_to(self.files.root)) for p in self.files.root.rglob("*")
                      if p.is_file())


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path)
    yield s
    s.db.dispose()


def test_old_delivered_study_is_purged_whole(store):
    old = store.study(age_days=10)
    recent = store.study(age_days=1)
    report = purge(store.db, store.files, POLICY, utcnow())
    assert report.studies == [old]
    assert report.instances == 3 and report.result_files == 1
    assert report.bytes_freed == 3 * 100 + 50
    with store.db.session() as session:
        assert session.scalars(select(Study.study_uid)).all() == [recent]
    assert store.count(Instance) == 3 and store.count(Job) == 1 and store.count(OutboxItem) == 1
    assert len(store.stored_files()) == 3 + 1  # the recent study's instances and result
    assert not (store.files.root / "results" / "1").exists()


@pytest.mark.parametrize("delivery", ["pending", "failed", "refused"])
def test_undelivered_study_is_kept_however_old(store, delivery):
    uid = store.study(age_days=400, delivery=delivery)
    report = purge(store.db, store.files, POLICY, utcnow())
    assert report.studies == []
    assert report.held == {uid: f"undelivered results: 1 {delivery}"}
    assert store.count(Study) == 1 and len(store.stored_files()) == 4


def test_study_with_running_job_is_kept(store):
    uid = store.study(age_days=30, delivery=None, job_state="running")
    report = purge(store.db, store.files, POLICY, utcnow())
    assert report.held == {uid: "a job is queued or running"}
    with pytest.raises(StudyNotPurgeable, match="running"):
        purge_study(store.db, store.files, uid)


def test_study_without_results_owed_is_purged_when_old(store):
    store.study(age_days=8, delivery=None, job_state="declined")
    assert len(purge(store.db, store.files, POLICY, utcnow()).studies) == 1
    assert store.count(Study) == 0 and store.stored_files() == []


def test_dry_run_reports_and_deletes_nothing(store):
    uid = store.study(age_days=10)
    report = purge(store.db, store.files, POLICY, utcnow(), dry_run=True)
    assert report.studies == [uid] and report.bytes_freed == 350
    assert store.count(Study) == 1 and len(store.stored_files()) == 4


def test_zero_days_keeps_forever(store):
    store.study(age_days=3000)
    report = purge(store.db, store.files, RetentionPolicy(0, 0, 0), utcnow())
    assert report.studies == [] and store.count(Study) == 1


def test_vault_rows_outlive_the_study_by_vault_days_only(store):
    uid = store.study(age_days=10)
    rows_before = store.count(VaultUid)
    assert rows_before > 0 and store.count(VaultStudy) == 1
    purge(store.db, store.files, POLICY, utcnow())  # study goes; its vault rows are young
    assert store.count(VaultUid) == rows_before
    report = purge(store.db, store.files, POLICY, utcnow() + 31 * DAY)
    assert report.vault_rows == rows_before + 1
    assert store.count(VaultUid) == 0 and store.count(VaultStudy) == 0
    assert uid  # the study itself was purged in the first pass


def test_vault_rows_of_an_indexed_study_are_never_purged(store):
    store.study(age_days=400, delivery="failed")
    rows = store.count(VaultUid)
    purge(store.db, store.files, POLICY, utcnow() + 400 * DAY)
    assert store.count(VaultUid) == rows  # the result may still need re-identification


def test_quarantine_ages_out(store):
    with store.db.session() as session:
        quarantine.keep(session, store.files, os.urandom(32), b"secret" * 10,
                        calling_ae="PACS", sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
                        reason_code="BURNED_IN_ANNOTATION", reason="test")
    assert purge(store.db, store.files, POLICY, utcnow()).quarantined == 0
    report = purge(store.db, store.files, POLICY, utcnow() + 31 * DAY)
    assert report.quarantined == 1 and store.count(Quarantined) == 0
    assert store.stored_files() == []


def test_forced_purge_of_a_study_with_a_failed_delivery(store):
    uid = store.study(age_days=1, delivery="failed")
    report = purge_study(store.db, store.files, uid)
    assert report.studies == [uid] and store.count(Study) == 0
    with pytest.raises(StudyNotPurgeable, match="no study"):
        purge_study(store.db, store.files, uid)


def test_purge_command(store, tmp_path, capsys):
    old = store.study(age_days=10)
    held = store.study(age_days=10, delivery="failed")
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{store.files.root}"\n'
                      f'[database]\nurl = "{store.db.url}"\n', encoding="utf-8")
    assert cli.main(["purge", "--dry-run", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "would purge 1 studies" in out and f"kept {held}: undelivered results: 1 failed" in out
    assert cli.main(["purge", "--json", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["studies"] == [old]
    assert cli.main(["purge", "--study", held, "--config", str(config)]) == 0
    assert store.count(Study) == 0
