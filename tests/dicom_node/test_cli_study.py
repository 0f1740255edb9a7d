"""Operator decisions: ``quarantine release`` (a quarantined instance goes on through the
normal path, audited, refused for any other reason), ``study complete --force`` and ``study
rerun`` by study UID or accession number (audited)."""

from __future__ import annotations

import io

import pytest
from lxml import etree
from pydicom.uid import UID
from sqlalchemy import select

from dicom_node import audit, cli
from dicom_node.config import load_config
from dicom_node.deid import Pseudonymizer
from dicom_node.sample_data import PatientIdentity, ct_series_datasets, phantom_chest_hu
from dicom_node.scp import Receiver
from storage import migrate
from storage.database import Database
from storage.files import FileStore
from storage.keys import PURPOSES, QUARANTINE, VAULT, KeyFolder
from storage.tables import Instance, Job, Quarantined, Study
from storage.vault import Vault
from tests.dicom_node.test_worker import (  # noqa: F401 (hotspot_node is a fixture)
    axial_ct_with_spots,
    complete_and_run,
    hotspot_node,
    node_worker,
    receive,
)

SCHEMA = etree.RelaxNG(etree.parse(str(audit.SCHEMA_PATH)))
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ULTRASOUND = "1.2.840.10008.5.1.4.1.1.6.1"


@pytest.fixture
def node(tmp_path):
    """A node's configuration, keys and database, and a receiver writing into them."""
    config_path = tmp_path / "node.toml"
    config_path.write_text(f'[node]\ndata_dir = "{tmp_path / "var"}"\n'
                           f'[database]\nurl = "sqlite:///{tmp_path / "node.db"}"\n'
                           f'[keys]\ndir = "{tmp_path / "keys"}"\n', encoding="utf-8")
    config = load_config(config_path)
    folder = KeyFolder(tmp_path / "keys")
    folder.create(PURPOSES)
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    migrate.upgrade(db)
    receiver = Receiver(config, db, FileStore(tmp_path / "var"),
                        Pseudonymizer(config.deid, folder.uid_secret()),
                        Vault(db, folder.ring(VAULT)), folder.ring(QUARANTINE))
    yield config_path, db, receiver, tmp_path
    db.dispose()


def _datasets(identity: PatientIdentity | None = None, sop_class: str | None = None,
              burned: str | None = None, slices: int = 3):
    datasets = ct_series_datasets(phantom_chest_hu((slices, 8, 8)), identity=identity)
    for ds in datasets:
        if sop_class:
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
        if burned:
            ds.BurnedInAnnotation = burned
    return datasets


def _audit_lines(root) -> list[bytes]:
    path = root / "var" / "audit" / "audit.log"
    return path.read_bytes().splitlines() if path.exists() else []


def _quarantined(db: Database) -> list[Quarantined]:
    with db.session() as session:
        rows = session.scalars(select(Quarantined)).all()
        session.expunge_all()
        return list(rows)


def test_release_a_secondary_capture_checked_by_an_operator(node, capsys):
    config, db, receiver, root = node
    (ds,) = _datasets(sop_class=SECONDARY_CAPTURE, slices=1)
    assert receiver.ingest(ds, "PACS") == 0
    (row,) = _quarantined(db)
    assert row.reason_code == "sop-class"
    assert cli.main(["quarantine", "release", str(row.id), "--config", str(config)]) == 2
    assert "--reason" in capsys.readouterr().err
    assert _quarantined(db)  # nothing happened without a reason

    assert cli.main(["quarantine", "release", str(row.id), "--reason",
                     "checked: no burned-in text", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "sop-class overridden" in out
    assert not _quarantined(db)
    assert not list((root / "var" / "quarantine").rglob("*.enc"))
    assert not list((root / "var" / "release").iterdir())  # no plaintext left behind
    with db.session() as session:
        (study,) = session.scalars(select(Study)).all()
        instance = session.scalars(select(Instance)).one()
        assert study.state == "receiving" and study.calling_ae == "PACS"
        assert instance.sop_class_uid == SECONDARY_CAPTURE
        stored = (root / "var" / instance.path).read_bytes()
        assert study.study_uid in out
    assert b"Testperson" not in stored and b"PID-4711" not in stored  # de-identified
    (line,) = _audit_lines(root)
    assert SCHEMA.validate(etree.fromstring(line)), SCHEMA.error_log
    assert b'EventActionCode="U"' in line and b"checked: no burned-in text" in line
    assert study.study_uid.encode() in line and b"Testperson" not in line


def test_release_refused_when_another_reason_remains(node, capsys):
    config, db, receiver, root = node
    # An ultrasound stating Burned In Annotation YES: burned-in text AND its SOP class.
    (ds,) = _datasets(sop_class=ULTRASOUND, burned="YES", slices=1)
    assert receiver.ingest(ds, "PACS") == 0
    (row,) = _quarantined(db)
    assert row.reason_code == "burned-in-annotation"
    assert cli.main(["quarantine", "release", str(row.id), "--reason", "looked at it",
                     "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "also quarantined for sop-class" in err and "stays quarantined" in err
    assert [q.id for q in _quarantined(db)] == [row.id]
    assert len(list((root / "var" / "quarantine").rglob("*.enc"))) == 1
    with db.session() as session:
        assert session.scalar(select(Instance.id)) is None
    assert not list((root / "var" / "release").iterdir())
    assert _audit_lines(root) == []  # nothing released, nothing audited as released


def test_release_of_an_unknown_or_altered_instance(node, capsys):
    config, db, receiver, root = node
    assert cli.main(["quarantine", "release", "99", "--reason", "x",
                     "--config", str(config)]) == 1
    assert "no quarantined instance 99" in capsys.readouterr().err
    (ds,) = _datasets(sop_class=SECONDARY_CAPTURE, slices=1)
    receiver.ingest(ds, "PACS")
    (row,) = _quarantined(db)
    sealed = root / "var" / row.path
    data = bytearray(sealed.read_bytes())
    data[-1] ^= 1
    sealed.write_bytes(bytes(data))
    assert cli.main(["quarantine", "release", str(row.id), "--reason", "x",
                     "--config", str(config)]) == 1
    assert "does not decrypt" in capsys.readouterr().err
    assert _quarantined(db) and not list((root / "var" / "release").iterdir())


def _jobs(db: Database) -> list[tuple[int, int, str, str]]:
    with db.session() as session:
        return [tuple(r) for r in session.execute(
            select(Job.id, Job.revision, Job.engine, Job.state).order_by(Job.id)).all()]


def test_complete_force_then_rerun(node, capsys):
    config, db, receiver, root = node
    for ds in _datasets():
        assert receiver.ingest(ds, "PACS") == 0
    with db.session() as session:
        study_uid = session.scalar(select(Study.study_uid))
    assert cli.main(["study", "complete", study_uid, "--config", str(config)]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli.main(["study", "rerun", study_uid, "--config", str(config)]) == 1
    assert "still receiving" in capsys.readouterr().err

    assert cli.main(["study", "complete", "--force", study_uid, "--config", str(config)]) == 0
    assert "(ct_lung)" in capsys.readouterr().out
    ((job_id, revision, engine, state),) = _jobs(db)
    assert (revision, engine, state) == (1, "ct_lung", "queued")
    assert cli.main(["study", "complete", "--force", study_uid, "--config", str(config)]) == 1
    assert "already complete" in capsys.readouterr().err

    assert cli.main(["study", "rerun", study_uid, "--config", str(config)]) == 1
    assert f"job {job_id} (ct_lung) not finished" in capsys.readouterr().err
    with db.session() as session:
        job = session.get(Job, job_id)
        job.state, job.summary = "succeeded", '{"objects": ["SEG"]}'
    assert cli.main(["study", "rerun", study_uid, "--engine", "nope",
                     "--config", str(config)]) == 1
    assert "no enabled route names engine 'nope'" in capsys.readouterr().err
    assert cli.main(["study", "rerun", study_uid, "--engine", "ct_lung",
                     "--config", str(config)]) == 0
    assert "revision 2" in capsys.readouterr().out
    assert _jobs(db) == [(job_id, 1, "ct_lung", "succeeded"),
                         (job_id + 1, 2, "ct_lung", "queued")]
    with db.session() as session:  # the earlier job's record stands as it was
        assert session.get(Job, job_id).summary == '{"objects": ["SEG"]}'
        study = session.scalar(select(Study))
        assert (study.state, study.revision, study.dispatched_revision) == ("complete", 2, 2)
    lines = _audit_lines(root)
    assert len(lines) == 2 and all(SCHEMA.validate(etree.fromstring(x)) for x in lines)
    assert b"study complete: revision 1" in lines[0] and b"study rerun: revision 2" in lines[1]


def test_study_by_accession_resolved_through_the_vault(node, capsys, monkeypatch):
    config, db, receiver, root = node
    for identity in (PatientIdentity(), PatientIdentity(patient_id="P2", accession="ACC2",
                                                        name="Other^Otto")):
        for ds in _datasets(identity):
            receiver.ingest(ds, "PACS")
    assert cli.main(["study", "complete", "--force", "--accession", "ACC2",
                     "--config", str(config)]) == 0
    with db.session() as session:
        states = dict(session.execute(select(Study.patient_pseudonym, Study.state)).all())
    assert sorted(states.values()) == ["complete", "receiving"]
    assert cli.main(["study", "complete", "--force", "--accession", "NOPE",
                     "--config", str(config)]) == 1
    assert "no study found" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{PatientIdentity().accession}\n"))
    assert cli.main(["study", "complete", "--force", "--accession", "-",  # from stdin
                     "--config", str(config)]) == 0
    with db.session() as session:
        assert session.scalars(select(Study.state)).all() == ["complete", "complete"]
    lines = _audit_lines(root)
    assert [b'csd-code="110112"' in x for x in lines] == [True, False, True, True, False]
    assert not any(b"ACC2" in x or b"NOPE" in x or b"ACC2026" in x for x in lines)


def test_rerun_results_go_to_the_destinations_again(hotspot_node):  # noqa: F811
    """A real engine (the example hot-spot engine) run, rerun: a second job with new result
    objects owed to the route's destination; the first job's deliveries stay as they were."""
    from dicom_node.completion import rerun
    from storage.tables import OutboxItem

    receive(hotspot_node, axial_ct_with_spots(PatientIdentity()))
    (first,) = complete_and_run(hotspot_node)
    assert first.state == "succeeded", first.reason
    with hotspot_node.db.session() as session:
        study_uid = session.scalar(select(Study.study_uid))
        session.execute(OutboxItem.__table__.update().values(state="sent"))
    done = rerun(hotspot_node.config, hotspot_node.db, study_uid, "hotspot")
    assert done.revision == 2 and done.engines == ("hotspot",)
    worker = node_worker(hotspot_node)
    while worker.run_one():
        pass
    with hotspot_node.db.session() as session:
        jobs = session.scalars(select(Job).order_by(Job.id)).all()
        items = session.scalars(select(OutboxItem)).all()
        by_job = {}
        for item in items:
            by_job.setdefault(item.job_id, []).append((item.destination, item.modality,
                                                       item.state, item.sop_instance_uid))
    assert [(j.revision, j.state) for j in jobs] == [(1, "succeeded"), (2, "succeeded")]
    old, new = by_job[jobs[0].id], by_job[jobs[1].id]
    assert {d for d, *_ in new} == {"pacs"} and {s for *_, s, _ in new} == {"pending"}
    assert sorted(m for _, m, *_ in new) == sorted(m for _, m, *_ in old)
    assert {s for *_, s, _ in old} == {"sent"}  # earlier deliveries untouched
    assert not {u for *_, u in new} & {u for *_, u in old}  # new objects, new UIDs
