import datetime as dt

from storage.studies import ReceivedInstance, complete_quiet_studies, index_instance
from storage.tables import utcnow


def item(sop: str, sha: str = "a" * 64, series: str = "2.25.10", modality: str = "CT"):
    return ReceivedInstance("2.25.1", series, sop, "1.2.840.10008.5.1.4.1.1.2",
                            "1.2.840.10008.1.2.1", modality, "2.25.9", "ANON-1", "PACS",
                            f"studies/{sop}.dcm", 10, sha)


def test_duplicate_instance_is_idempotent(sqlite_db):
    now = utcnow()
    with sqlite_db.session() as s:
        assert index_instance(s, item("2.25.100"), now).new_instance
    with sqlite_db.session() as s:
        again = index_instance(s, item("2.25.100"), now)
    assert not again.new_instance and not again.changed
    with sqlite_db.session() as s:
        changed = index_instance(s, item("2.25.100", sha="b" * 64), now)
    assert changed.changed


def test_completion_waits_for_quiet_and_open_associations(sqlite_db):
    t0 = utcnow()
    with sqlite_db.session() as s:
        index_instance(s, item("2.25.100"), t0)
        index_instance(s, item("2.25.101", series="2.25.11", modality="RTSTRUCT"), t0)
    later = t0 + dt.timedelta(seconds=11)
    with sqlite_db.session() as s:
        # Not yet quiet.
        assert complete_quiet_studies(s, t0 - dt.timedelta(seconds=1), set(),
                                      t0 - dt.timedelta(seconds=100), later) == []
        # Quiet, but an association is still open.
        assert complete_quiet_studies(s, t0, {"2.25.1"}, t0 - dt.timedelta(seconds=100),
                                      later) == []
        # Quiet and released.
        done = complete_quiet_studies(s, t0, set(), t0 - dt.timedelta(seconds=100), later)
    assert [d.modalities for d in done] == [frozenset({"CT", "RTSTRUCT"})]
    with sqlite_db.session() as s:  # completes once
        assert complete_quiet_studies(s, later, set(), later, later) == []


def test_stalled_association_does_not_block_forever(sqlite_db):
    t0 = utcnow()
    with sqlite_db.session() as s:
        index_instance(s, item("2.25.100"), t0)
        done = complete_quiet_studies(s, t0, {"2.25.1"}, t0, t0 + dt.timedelta(seconds=200))
    assert len(done) == 1


def test_late_arrival_reopens_as_new_revision(sqlite_db):
    t0 = utcnow()
    with sqlite_db.session() as s:
        index_instance(s, item("2.25.100"), t0)
        (done,) = complete_quiet_studies(s, t0, set(), t0, t0)
        assert done.revision == 1
    with sqlite_db.session() as s:
        outcome = index_instance(s, item("2.25.102"), t0)
    assert outcome.late_arrival
    with sqlite_db.session() as s:
        (done,) = complete_quiet_studies(s, t0, set(), t0, t0)
    assert done.revision == 2
