"""Instances kept but not processed (e.g. burned-in text), encrypted at rest with a reason."""

from __future__ import annotations

import os
import uuid

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.files import FileStore
from storage.tables import Quarantined, utcnow


def keep(session: Session, files: FileStore, key: bytes, data: bytes, *, calling_ae: str,
         sop_class_uid: str, reason_code: str, reason: str) -> int:
    """Store the original bytes encrypted (AES-GCM) and record why; returns the record id."""
    name = uuid.uuid4().hex
    relative = f"quarantine/{name}.dcm.enc"
    nonce = os.urandom(12)
    sealed = nonce + AESGCM(key).encrypt(nonce, data, relative.encode())
    files.write(relative, sealed)
    row = Quarantined(received_at=utcnow(), calling_ae=calling_ae, sop_class_uid=sop_class_uid,
                      reason_code=reason_code, reason=reason, path=relative)
    session.add(row)
    session.flush()
    return row.id


def open_sealed(files: FileStore, key: bytes, relative: str) -> bytes:
    """Decrypt a quarantined instance (for an operator with the key)."""
    sealed = files.read(relative)
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], relative.encode())


def counts(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Quarantined.reason_code, func.count()).group_by(Quarantined.reason_code)).all()
    return {code: n for code, n in rows}
