"""The persistent outbox: result objects owed to destinations, retried until delivered."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from storage.database import Database
from storage.leases import backoff, claim_rows
from storage.tables import Job, OutboxItem, Study, utcnow

# Deliveries an operator may send again: failed ones, and sent ones a PACS says it lost.
# A refused delivery was stopped by the leak check; sending it again cannot change that.
RESENDABLE = ("failed", "sent")


@dataclass(frozen=True)
class OwedObject:
    """A result object to deliver to one destination."""

    destination: str
    sop_class_uid: str
    sop_instance_uid: str
    modality: str
    path: str


@dataclass(frozen=True)
class ClaimedItem:
    id: int
    destination: str
    sop_class_uid: str
    sop_instance_uid: str
    modality: str
    path: str
    attempts: int
    # The identity revision of the job that made the object (None: not recorded, the latest
    # identity applies): results are re-identified as the study was when they were computed.
    identity_revision: int | None = None


def add(session: Session, job_id: int, objects: list[OwedObject], now: dt.datetime) -> int:
    """Queue objects for delivery in the caller's transaction (idempotent per SOP+destination)."""
    added = 0
    for obj in objects:
        exists = session.scalar(select(OutboxItem.id).where(
            OutboxItem.sop_instance_uid == obj.sop_instance_uid,
            OutboxItem.destination == obj.destination))
        if exists:
            continue
        session.add(OutboxItem(
            job_id=job_id, destination=obj.destination, sop_class_uid=obj.sop_class_uid,
            sop_instance_uid=obj.sop_instance_uid, modality=obj.modality, path=obj.path,
            next_attempt_at=now, created_at=now))
        added += 1
    return added


class Outbox:
    """Claiming and settling deliveries."""

    def __init__(self, db: Database):
        self.db = db

    def claim_batch(self, owner: str, lease_seconds: float, limit: int = 50) -> list[ClaimedItem]:
        """Claim due items of one destination (the one with the oldest due item)."""
        now = utcnow()
        with self.db.session() as session:
            first = claim_rows(
                session, OutboxItem, waiting_state="pending", running_state="sending", now=now,
                lease_until=now + dt.timedelta(seconds=lease_seconds),
                owner_values={}, skip_locked=not self.db.is_sqlite,
            )
            if not first:
                return []
            rest = claim_rows(
                session, OutboxItem, waiting_state="pending", running_state="sending", now=now,
                lease_until=now + dt.timedelta(seconds=lease_seconds), owner_values={},
                extra_filter=OutboxItem.destination == first[0].destination,
                limit=limit - 1, skip_locked=not self.db.is_sqlite,
            )
            claimed = first + rest
            revisions = dict(session.execute(
                select(OutboxItem.id, Job.identity_revision)
                .join(Job, Job.id == OutboxItem.job_id)
                .where(OutboxItem.id.in_([i.id for i in claimed]))).tuples().all())
            return [ClaimedItem(i.id, i.destination, i.sop_class_uid, i.sop_instance_uid,
                                i.modality, i.path, i.attempts, revisions.get(i.id))
                    for i in claimed]

    def mark_sent(self, item_ids: Iterable[int], status: int,
                  commitment_uid: str | None = None) -> None:
        """Settle deliveries as stored by the peer, in one transaction; with
        ``commitment_uid``, as awaiting that storage commitment transaction."""
        with self.db.session() as session:
            session.execute(update(OutboxItem).where(OutboxItem.id.in_(list(item_ids))).values(
                state="sent", sent_at=utcnow(), last_status=status, lease_expires_at=None,
                reason=None, commitment="requested" if commitment_uid else None,
                commitment_transaction_uid=commitment_uid).execution_options(
                    synchronize_session=False))

    def mark_refused(self, item_id: int, reason: str) -> None:
        """Terminal: the object must not go to this destination (e.g. leak check)."""
        with self.db.session() as session:
            session.execute(update(OutboxItem).where(OutboxItem.id == item_id).values(
                state="refused", reason=reason, lease_expires_at=None))

    def mark_retry(self, item_id: int, reason: str, status: int | None, max_attempts: int,
                   backoff_s: float, backoff_max_s: float,
                   retry_window: dt.timedelta | None = None) -> str:
        """After a failed attempt: ``pending`` again with backoff, or ``failed`` once the
        attempts or the retry window (counted from when the result was queued) are spent."""
        now = utcnow()
        with self.db.session() as session:
            item = session.get(OutboxItem, item_id)
            if item is None:
                raise LookupError(f"no outbox item {item_id}")
            item.reason, item.last_status, item.lease_expires_at = reason, status, None
            window_spent = retry_window is not None and now - item.created_at >= retry_window
            if item.attempts >= max_attempts or window_spent:
                item.state = "failed"
            else:
                item.state = "pending"
                item.next_attempt_at = now + backoff(backoff_s, backoff_max_s, item.attempts)
            return item.state

    def record_commitment(self, transaction_uid: str, committed: set[str],
                          failed: set[str]) -> int:
        """Record a Storage Commitment N-EVENT-REPORT; returns rows updated."""
        n = 0
        with self.db.session() as session:
            for uids, state in ((committed, "committed"), (failed, "failed")):
                if uids:
                    n += cast(CursorResult[Any], session.execute(update(OutboxItem).where(
                        OutboxItem.commitment_transaction_uid == transaction_uid,
                        OutboxItem.sop_instance_uid.in_(uids)).values(commitment=state)
                    )).rowcount
        return n

    def counts(self) -> dict[str, int]:
        with self.db.session() as session:
            rows = session.execute(
                select(OutboxItem.state, func.count()).group_by(OutboxItem.state)).all()
            return {s: n for s, n in rows}

    def items_for_job(self, job_id: int) -> list[dict]:
        with self.db.session() as session:
            return [
                {"destination": i.destination, "modality": i.modality, "state": i.state,
                 "attempts": i.attempts, "reason": i.reason, "commitment": i.commitment}
                for i in session.scalars(select(OutboxItem).where(OutboxItem.job_id == job_id))
            ]

    def list(self, state: str | None = None, destination: str | None = None,
             limit: int = 100) -> list[DeliveryView]:
        """Deliveries, newest first, with their study (pseudonymous) and job."""
        with self.db.session() as session:
            query = (select(OutboxItem, Study.study_uid).join(Job, Job.id == OutboxItem.job_id)
                     .join(Study, Study.id == Job.study_id))
            if state:
                query = query.where(OutboxItem.state == state)
            if destination:
                query = query.where(OutboxItem.destination == destination)
            rows = session.execute(query.order_by(OutboxItem.id.desc()).limit(limit)).all()
            return [DeliveryView(
                i.id, i.job_id, uid, i.destination, i.modality, i.sop_instance_uid, i.state,
                i.attempts, i.last_status, i.reason, i.created_at, i.sent_at, i.commitment)
                for i, uid in rows]

    def resend(self, *, item_id: int | None = None, destination: str | None = None,
               study_uid: str | None = None, include_sent: bool = False) -> int:
        """Queue deliveries again with a fresh attempt budget; returns how many.

        By id, a failed or sent delivery is queued again; by destination and/or study, the
        failed ones (and the sent ones too with ``include_sent``).
        """
        if item_id is None and destination is None and study_uid is None:
            raise ValueError("resend needs an item id, a destination or a study")
        states = RESENDABLE if item_id is not None or include_sent else ("failed",)
        with self.db.session() as session:
            query = update(OutboxItem).where(OutboxItem.state.in_(states))
            if item_id is not None:
                query = query.where(OutboxItem.id == item_id)
            if destination is not None:
                query = query.where(OutboxItem.destination == destination)
            if study_uid is not None:
                jobs = select(Job.id).join(Study, Study.id == Job.study_id).where(
                    Study.study_uid == study_uid)
                query = query.where(OutboxItem.job_id.in_(jobs))
            return cast(CursorResult[Any], session.execute(query.values(
                state="pending", attempts=0, next_attempt_at=utcnow(), lease_expires_at=None,
                reason=None, sent_at=None, commitment=None, commitment_transaction_uid=None,
            ).execution_options(synchronize_session=False))).rowcount


@dataclass(frozen=True)
class DeliveryView:
    """One delivery as ``dicom-node outbox list`` shows it."""

    id: int
    job_id: int
    study_uid: str
    destination: str
    modality: str
    sop_instance_uid: str
    state: str
    attempts: int
    last_status: int | None
    reason: str | None
    created_at: dt.datetime
    sent_at: dt.datetime | None
    commitment: str | None

    def as_dict(self) -> dict:
        view = dict(self.__dict__)
        for key in ("created_at", "sent_at"):
            if view[key] is not None:
                view[key] = view[key].isoformat() + "Z"
        return view
