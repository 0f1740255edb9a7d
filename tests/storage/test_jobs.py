import datetime as dt
import threading

from sqlalchemy import select

from storage.jobs import JobQueue, enqueue
from storage.studies import ReceivedInstance, index_instance
from storage.tables import Job, utcnow


def _study(db, uid="2.25.1"):
    with db.session() as s:
        out = index_instance(s, ReceivedInstance(
            uid, uid + ".1", uid + ".1.1", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1",
            "CT", None, "ANON-X", "PACS", "p", 1, "0" * 64), utcnow())
    return out.study_id


def test_enqueue_is_idempotent_per_revision(sqlite_db):
    sid = _study(sqlite_db)
    with sqlite_db.session() as s:
        first = enqueue(s, sid, 1, ["ct_lung", "radiomics"], 3, utcnow())
        again = enqueue(s, sid, 1, ["ct_lung", "radiomics"], 3, utcnow())
    assert len(first) == 2 and again == []


def test_new_revision_supersedes_queued_jobs(sqlite_db):
    sid = _study(sqlite_db)
    with sqlite_db.session() as s:
        enqueue(s, sid, 1, ["ct_lung"], 3, utcnow())
        enqueue(s, sid, 2, ["ct_lung"], 3, utcnow())
        states = {(j.revision, j.state, j.reason_code) for j in s.scalars(select(Job))}
    assert states == {(1, "cancelled", "SUPERSEDED"), (2, "queued", None)}


def test_concurrent_claims_never_share_a_job(sqlite_db):
    sid = _study(sqlite_db)
    with sqlite_db.session() as s:
        for rev in range(1, 31):
            s.add(Job(study_id=sid, revision=rev, engine="e", max_attempts=3,
                      next_attempt_at=utcnow()))
    queue = JobQueue(sqlite_db)
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while (job := queue.claim(name, 60)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 30 and len(set(claimed)) == 30


def test_expired_lease_is_retried_then_fails_with_reason(sqlite_db):
    sid = _study(sqlite_db)
    with sqlite_db.session() as s:
        enqueue(s, sid, 1, ["ct_lung"], 2, utcnow())
    queue = JobQueue(sqlite_db)
    first = queue.claim("dead-worker", lease_seconds=-1)  # lease already expired
    assert first.attempts == 1
    second = queue.claim("w2", lease_seconds=-1)
    assert second.id == first.id and second.attempts == 2
    assert queue.claim("w3", lease_seconds=60) is None
    view = queue.get(first.id)
    assert view.state == "failed" and view.reason_code == "LEASE_EXPIRED"


def test_failed_attempt_backs_off_then_fails(sqlite_db):
    sid = _study(sqlite_db)
    with sqlite_db.session() as s:
        enqueue(s, sid, 1, ["ct_lung"], 2, utcnow())
    queue = JobQueue(sqlite_db)
    job = queue.claim("w", 60)
    assert queue.fail_attempt(job.id, "w", "ENGINE_ERROR", "boom", 30, 600) == "queued"
    assert queue.claim("w", 60) is None  # backing off
    with sqlite_db.session() as s:
        s.get(Job, job.id).next_attempt_at = utcnow() - dt.timedelta(seconds=1)
    job = queue.claim("w", 60)
    assert queue.fail_attempt(job.id, "w", "ENGINE_ERROR", "boom", 30, 600) == "failed"
    assert queue.retry(job.id)
    assert queue.get(job.id).state == "queued"


def test_finish_refused_for_a_worker_that_lost_the_job(sqlite_db):
    sid = _study(sqlite_db)
    with sqlite_db.session() as s:
        enqueue(s, sid, 1, ["ct_lung"], 3, utcnow())
    queue = JobQueue(sqlite_db)
    job = queue.claim("old", lease_seconds=-1)
    queue.claim("new", lease_seconds=60)
    assert not queue.finish(job.id, "old", "succeeded")
    assert queue.finish(job.id, "new", "succeeded")
