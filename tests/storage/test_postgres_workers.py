"""Several `dicom-node worker` processes share one PostgreSQL database: every job is claimed
by exactly one of them (SELECT ... FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import select

from storage import migrate
from storage.database import Database
from storage.jobs import JobQueue, enqueue
from storage.keys import UID_SECRET, KeyFolder
from storage.studies import ReceivedInstance, index_instance
from storage.tables import Job, utcnow
from tests.nodeproc import NodeProcess
from tests.pg import PrivatePostgres

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    pg = PrivatePostgres(tmp_path_factory.mktemp("pg")).start()
    yield pg
    pg.stop()


def _studies(db: Database, n: int, engine: str) -> None:
    with db.session() as s:
        for i in range(n):
            uid = f"2.25.{1000 + i}"
            out = index_instance(s, ReceivedInstance(
                uid, uid + ".1", uid + ".1.1", "1.2.840.10008.5.1.4.1.1.4",
                "1.2.840.10008.1.2.1", "MR", None, "ANON", "PACS", "p", 1, "0" * 64), utcnow())
            enqueue(s, out.study_id, 1, [engine], 3, utcnow())


def test_threads_claim_each_job_once_on_postgres(postgres):
    db = Database(postgres.url)
    migrate.upgrade(db)
    assert migrate.pending_differences(db) == []
    _studies(db, 40, "x_engine")
    queue = JobQueue(db)
    seen: list[int] = []
    lock = threading.Lock()

    def claim(name: str) -> None:
        while (job := queue.claim(name, 60)) is not None:
            with lock:
                seen.append(job.id)
            queue.finish(job.id, name, "succeeded")

    threads = [threading.Thread(target=claim, args=(f"t{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 40
    db.dispose()


def test_worker_processes_share_the_queue(postgres, tmp_path):
    node = NodeProcess(tmp_path, database_url=postgres.url, extra={"jobs": {"poll_seconds": 0.05}})
    db = Database(postgres.url)
    migrate.upgrade(db)
    with db.session() as s:
        s.query(Job).delete()
    # Workers never create keys: the UID secret comes from the receiving host.
    KeyFolder(node.keys_dir).create([UID_SECRET])
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    workers = [subprocess.Popen([sys.executable, "-m", "dicom_node.cli", "worker", "--count",
                                 "2", "--config", str(node.config_path)],
                                stdout=subprocess.DEVNULL, stderr=log.open("w"))
               for log in logs]
    # Jobs arrive once every process is polling; otherwise the first process to finish
    # importing could drain the queue before the others start, and sharing proves nothing.
    deadline = time.time() + 120
    while not all("node started" in log.read_text() for log in logs):
        assert time.time() < deadline and all(w.poll() is None for w in workers)
        time.sleep(0.2)
    _studies(db, 30, "mr_glioma")  # not installed: each job is declined with a coded reason
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            with db.session() as s:
                open_jobs = s.scalars(select(Job).where(Job.state.in_(("queued", "running"))))
                if not open_jobs.all():
                    break
            time.sleep(0.5)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            assert w.wait(timeout=60) == 0  # SIGTERM is a clean stop
    with db.session() as s:
        jobs = s.scalars(select(Job)).all()
    db.dispose()
    assert len(jobs) == 30
    # Each study ends declined with a coded reason, once (the MR phantom fits no sequence role).
    assert {j.state for j in jobs} == {"declined"} and all(j.attempts == 1 for j in jobs)
    assert {j.reason_code for j in jobs} <= {"NO_SUITABLE_SERIES", "MR_NO_USABLE_SEQUENCE",
                                             "ENGINE_NOT_INSTALLED"}
    assert all(j.attempts == 1 for j in jobs)  # nobody ran a job twice
    assert len({j.worker_id.rsplit(":", 2)[0] for j in jobs}) >= 2  # the work was shared


def test_vault_insert_if_absent_on_postgres(postgres):
    import os

    from storage.vault import OriginalIdentity, Vault

    db = Database(postgres.url)
    migrate.upgrade(db)
    vault = Vault(db, os.urandom(32))
    identity = OriginalIdentity("ANON-PG", "2.25.77", b"payload-bytes", 12)
    for _ in range(2):  # idempotent: the second record changes nothing and does not fail
        with db.session() as s:
            vault.record(s, {"2.25.77": "1.2.3.4", "2.25.78": "1.2.3.5"}, identity)
    assert vault.original_uids(["2.25.77", "2.25.78", "2.25.79"]) == {
        "2.25.77": "1.2.3.4", "2.25.78": "1.2.3.5"}
    assert vault.identity_for_study("2.25.77").payload == b"payload-bytes"
    db.dispose()
