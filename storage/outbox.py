"""The persistent outbox: result objects owed to destinations, retried until delivered."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from storage.database import Database
from storage.leases import backoff, claim_rows
from storage.tables import OutboxItem, utcnow


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
            return [ClaimedItem(i.id, i.destination, i.sop_class_uid, i.sop_instance_uid,
                                i.modality, i.path, i.attempts) for i in first + rest]

    def mark_sent(self, item_id: int, status: int, commitment_uid: str | None = None) -> None:
        with self.db.session() as session:
            session.execute(update(OutboxItem).where(OutboxItem.id == item_id).values(
                state="sent", sent_at=utcnow(), last_status=status, lease_expires_at=None,
                reason=None, commitment="requested" if commitment_uid else None,
                commitment_transaction_uid=commitment_uid))

    def mark_refused(self, item_id: int, reason: str) -> None:
        """Terminal: the object must not go to this destination (e.g. leak check)."""
        with self.db.session() as session:
            session.execute(update(OutboxItem).where(OutboxItem.id == item_id).values(
                state="refused", reason=reason, lease_expires_at=None))

    def mark_retry(self, item_id: int, reason: str, status: int | None, max_attempts: int,
                   backoff_s: float, backoff_max_s: float) -> str:
        now = utcnow()
        with self.db.session() as session:
            item = session.get(OutboxItem, item_id)
            item.reason, item.last_status, item.lease_expires_at = reason, status, None
            if item.attempts >= max_attempts:
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
                    n += session.execute(update(OutboxItem).where(
                        OutboxItem.commitment_transaction_uid == transaction_uid,
                        OutboxItem.sop_instance_uid.in_(uids)).values(commitment=state)
                    ).rowcount
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
