"""``find`` resolves hospital identifiers through the vault to pseudonymous studies and audits
the lookup without the identifier; ``quarantine list/show/purge`` show reasons, never content."""

from __future__ import annotations

import io
import json

import pytest

from dicom_node import cli
from dicom_node.config import parse_config
from dicom_node.deid import Pseudonymizer
from dicom_node.sample_data import PatientIdentity, ct_series_datasets, phantom_chest_hu
from storage import migrate, quarantine
from storage.database import Database
from storage.files import FileStore
from storage.keys import PURPOSES, QUARANTINE, VAULT, KeyFolder
from storage.vault import Vault


@pytest.fixture
def site(tmp_path):
    """Two de-identified studies in the vault (two patients) and one quarantined instance."""
    config_path = tmp_path / "node.toml"
    config_path.write_text(f'[node]\ndata_dir = "{tmp_path / "var"}"\n'
                           f'[database]\nurl = "sqlite:///{tmp_path / "node.db"}"\n'
                           f'[keys]\ndir = "{tmp_path / "keys"}"\n', encoding="utf-8")
    config = parse_config({"node": {"data_dir": str(tmp_path / "var")}})
    folder = KeyFolder(tmp_path / "keys")
    folder.create(PURPOSES)
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    migrate.upgrade(db)
    vault = Vault(db, folder.ring(VAULT))
    pseudonymizer = Pseudonymizer(config.deid, folder.uid_secret())
    studies = {}
    for identity in (PatientIdentity(), PatientIdentity(patient_id="PID-9", accession="ACC9",
                                                        name="Other^Otto")):
        with db.session() as session:
            for ds in ct_series_datasets(phantom_chest_hu((2, 8, 8)), identity=identity):
                result = pseudonymizer.pseudonymize(ds)
                vault.record(session, result.uid_mappings, result.identity)
        studies[identity.accession] = str(result.dataset.StudyInstanceUID)
    files = FileStore(tmp_path / "var")
    with db.session() as session:
        quarantine.keep(session, files, folder.ring(QUARANTINE), b"DICM" * 100,
                        calling_ae="PACS", sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
                        reason_code="burned-in-annotation", reason="Burned In Annotation is YES")
    yield config_path, studies, tmp_path
    db.dispose()


def test_find_by_accession_patient_id_and_date(site, capsys):
    config, studies, _ = site
    assert cli.main(["find", "--accession", "ACC9", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert studies["ACC9"] in out and studies["ACC20261125001"] not in out
    assert cli.main(["find", "--patient-id", "PID-4711-0815", "--config", str(config)]) == 0
    assert studies["ACC20261125001"] in capsys.readouterr().out
    assert cli.main(["find", "--study-date", "20261120", "--config", str(config)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert cli.main(["find", "--accession", "NOPE", "--config", str(config)]) == 1


def test_find_reads_the_identifier_from_stdin(site, capsys, monkeypatch):
    config, studies, _ = site
    monkeypatch.setattr("sys.stdin", io.StringIO("ACC9\n"))
    assert cli.main(["find", "--accession", "-", "--config", str(config)]) == 0
    assert studies["ACC9"] in capsys.readouterr().out


def test_find_is_audited_without_the_identifier(site):
    config, studies, root = site
    cli.main(["find", "--accession", "ACC9", "--config", str(config)])
    (line,) = (root / "var" / "audit" / "audit.log").read_bytes().splitlines()
    assert b'csd-code="110112"' in line and studies["ACC9"].encode() in line
    assert b"ACC9" not in line.replace(studies["ACC9"].encode(), b"")


def test_find_needs_the_vault_key(site, capsys):
    config, _, root = site
    for key in (root / "keys").glob("vault-*.key"):
        key.unlink()
    assert cli.main(["find", "--accession", "ACC9", "--config", str(config)]) == 3


def test_quarantine_list_show_purge(site, capsys):
    config, _, root = site
    assert cli.main(["quarantine", "--config", str(config)]) == 0
    line = capsys.readouterr().out.strip()
    assert "burned-in-annotation" in line and "PACS" in line
    qid = int(line.split()[0])
    assert cli.main(["quarantine", "show", str(qid), "--config", str(config)]) == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert shown["reason"] == "Burned In Annotation is YES" and "DICM" not in json.dumps(shown)
    assert len(list((root / "var" / "quarantine").rglob("*.enc"))) == 1
    assert cli.main(["quarantine", "purge", str(qid), "--config", str(config)]) == 0
    assert not list((root / "var" / "quarantine").rglob("*.enc"))
    assert cli.main(["quarantine", "show", str(qid), "--config", str(config)]) == 1
