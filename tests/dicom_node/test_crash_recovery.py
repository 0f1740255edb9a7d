"""SIGKILL the node in the middle of a 200-instance send: nothing acknowledged is lost and the
study completes exactly once after restart."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
from sqlalchemy import select

from dicom_node.sample_data import ct_series_datasets, phantom_chest_hu, write_series
from storage.database import Database
from storage.keys import VAULT, KeyFolder
from storage.tables import Instance, Job, Study
from storage.vault import Vault
from tests.net import need
from tests.nodeproc import NodeProcess

pytestmark = pytest.mark.slow


def acknowledged_files(storescu_log: str) -> list[str]:
    """Files storescu saw a Success response for (it logs 'Sending file' then the response)."""
    acked, current = [], None
    for line in storescu_log.splitlines():
        m = re.search(r"Sending file: (\S+)", line)
        if m:
            current = m.group(1)
        elif "Received Store Response (Success)" in line and current:
            acked.append(current)
            current = None
    return acked


def test_sigkill_mid_send_loses_nothing_acknowledged(tmp_path):
    datasets = ct_series_datasets(phantom_chest_hu((200, 128, 128)))
    originals = {}
    files = write_series(datasets, tmp_path / "ct")
    for ds, path in zip(datasets, files, strict=True):
        originals[str(path)] = str(ds.SOPInstanceUID)

    # Quiet time well above a kill, a restart and the start of the re-send, so the interrupted
    # study is not completed (and re-opened as revision 2) in between.
    node = NodeProcess(tmp_path / "node", quiet_seconds=15)
    node.start()
    sender = subprocess.Popen(
        [need("storescu"), "-v", "-aet", "PACS", "-aec", node.ae_title, "127.0.0.1",
         str(node.port), *map(str, files)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    # Kill once a fair part has arrived, while the send is still going.
    deadline = time.time() + 120
    while time.time() < deadline:
        stored = list((node.data_dir / "studies").rglob("*.dcm"))
        if len(stored) >= 60:
            break
        time.sleep(0.05)
    node.kill()
    log, _ = sender.communicate(timeout=60)
    acked = acknowledged_files(log)
    assert 0 < len(acked) < 200, "the kill must land mid-send"

    # Every acknowledged instance is indexed, its file intact, its identity in the vault.
    db = Database(f"sqlite:///{node.data_dir / 'node.db'}")
    vault = Vault(db, KeyFolder(node.keys_dir).ring(VAULT))
    with db.session() as s:
        rows = s.execute(select(Instance.sop_instance_uid, Instance.path)).all()
    back = vault.original_uids([uid for uid, _ in rows])
    present = set(back.values())
    missing = [p for p in acked if originals[p] not in present]
    assert not missing, f"{len(missing)} acknowledged instances lost"
    for _, path in rows:
        assert (node.data_dir / path).stat().st_size > 0
    db.dispose()

    # Restart; the PACS re-sends the whole series (as it would after a failed transfer).
    node.start()
    out = subprocess.run([need("storescu"), "-aet", "PACS", "-aec", node.ae_title, "127.0.0.1",
                          str(node.port), *map(str, files)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    status = node.wait_for(lambda s: s["studies"].get("complete") == 1, timeout=60)
    assert status["instances"]["stored"] == 200
    time.sleep(3)  # a few more completion passes must not complete it again
    node.stop()
    db = Database(f"sqlite:///{node.data_dir / 'node.db'}")
    with db.session() as s:
        study = s.scalars(select(Study)).one()
        jobs = s.scalars(select(Job)).all()
    db.dispose()
    assert study.revision == 1 and study.state == "complete"
    assert [(j.engine, j.revision) for j in jobs] == [("ct_lung", 1)]
