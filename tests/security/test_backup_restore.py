"""The backup of docs/operations-backup.md, done with the tools it names (sqlite3 .backup, tar)
and restored into a fresh folder: an old result is re-identified from the restored vault, the
quarantine opens, and pseudonyms stay the same for new arrivals."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from pydicom import dcmread

from dicom_node.deid.reidentify import Reidentifier
from dicom_node.node import Node
from storage import quarantine
from storage.keys import QUARANTINE, KeyFolder
from storage.tables import Quarantined
from tests.security.installation import (
    PLANTED,
    burned_in,
    node_config,
    receive,
    source_series,
    write_result,
)


def _run(*cmd: str) -> None:
    tool = shutil.which(cmd[0])
    if tool is None:
        pytest.fail(f"{cmd[0]} is not installed")
    out = subprocess.run([tool, *cmd[1:]], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_backup_then_restore_into_a_fresh_folder_reidentifies_an_old_result(tmp_path):
    site = tmp_path / "site"
    config = node_config(site)
    node = Node(config, workers=0, send=False)
    series = source_series()
    stored = receive(node, series)
    assert node.receiver.ingest(burned_in(), "PACS") == 0
    result = write_result(node, stored)
    pseudonyms = dcmread(stored[0])
    node.db.dispose()  # the node is stopped for the backup

    # Backup: three parts, the keys kept apart from the other two.
    backup = tmp_path / "backup"
    backup.mkdir()
    _run("sqlite3", str(config.node.data_dir / "node.db"), f".backup '{backup / 'node.db'}'")
    _run("tar", "-C", str(site), "--exclude=var/node.db*", "-czf", str(backup / "data.tar.gz"),
         "var")
    _run("tar", "-C", str(site), "-czf", str(backup / "keys.tar.gz"), "keys")
    shutil.rmtree(site)  # the machine is lost

    # Restore into a fresh folder elsewhere.
    fresh = tmp_path / "new-host"
    fresh.mkdir()
    _run("tar", "-C", str(fresh), "-xzf", str(backup / "data.tar.gz"))
    _run("tar", "-C", str(fresh), "-xzf", str(backup / "keys.tar.gz"))
    shutil.copy2(backup / "node.db", fresh / "var" / "node.db")
    restored_config = node_config(fresh)
    keys_before = {p.name: p.read_bytes() for p in (fresh / "keys").iterdir()}

    restored = Node(restored_config, workers=0, send=True)
    try:
        assert {p.name: p.read_bytes() for p in (fresh / "keys").iterdir()} == keys_before
        old_result = dcmread(fresh / result.relative_to(site))
        assert old_result.PatientID.startswith("ANON-")
        back = Reidentifier(restored.vault).reidentify(old_result)
        assert str(back.PatientName) == PLANTED.name
        assert back.PatientID == PLANTED.patient_id
        assert back.AccessionNumber == PLANTED.accession
        assert back.StudyInstanceUID == PLANTED.study_uid
        refs = back.ReferencedSeriesSequence[0]
        assert refs.SeriesInstanceUID == series[0].SeriesInstanceUID

        with restored.db.session() as s:
            (relative,) = [q.path for q in s.query(Quarantined)]
        sealed = quarantine.open_sealed(restored.files,
                                        KeyFolder(fresh / "keys").ring(QUARANTINE), relative)
        assert PLANTED.patient_id.encode("latin-1") in sealed

        # Pseudonyms are stable: the same instance again lands on the same stored file, and
        # a new series of the same patient and study gets the pseudonyms from before the loss.
        again = receive(restored, series[:1])
        assert {p.relative_to(fresh) for p in again} == {p.relative_to(site) for p in stored}
        later = receive(restored, source_series(slices=2))
        new = [dcmread(p) for p in later if p.relative_to(fresh) not in
               {s.relative_to(site) for s in stored}]
        assert len(new) == 2
        for ds in new:
            assert ds.PatientID == pseudonyms.PatientID
            assert ds.StudyInstanceUID == pseudonyms.StudyInstanceUID
            assert ds.StudyDate == pseudonyms.StudyDate  # same per-patient date shift
    finally:
        restored.db.dispose()
