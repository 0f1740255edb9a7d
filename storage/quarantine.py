"""Instances kept but not processed (e.g. burned-in text), encrypted at rest with a reason.

A quarantined file is ``magic | key id | nonce | AES-256-GCM ciphertext | tag``, sealed with the
newest quarantine key (:class:`storage.keys.KeyRing`, separate from the vault key) and bound to
its path in the data folder. It is encrypted as a stream, 1 MiB at a time, straight from the
received file into the data folder: a 200 MB instance never sits in memory, let alone twice.
Files written before the key split carry no magic; they are opened with key id 0.
"""

from __future__ import annotations

import functools
import io
import os
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.database import Database
from storage.files import FileStore
from storage.keys import LEGACY_KEY_ID, NONCE_BYTES, KeyRing
from storage.tables import Quarantined, utcnow

MAGIC = b"DNQ\x01"
_HEADER = struct.Struct(">4sI")  # magic, key id
_TAG = 16
CHUNK = 1 << 20


class QuarantineError(Exception):
    """A quarantined file that cannot be opened (wrong key, altered). Never carries values."""


def _chunks(source: Path | bytes | BinaryIO) -> Iterator[bytes | memoryview]:
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source)
        for start in range(0, len(view), CHUNK):
            yield view[start:start + CHUNK]
        return
    if isinstance(source, Path | str):
        with open(source, "rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk
        return
    while chunk := source.read(CHUNK):
        yield chunk


def _seal_into(sink: BinaryIO, ring: KeyRing, relative: str,
               chunks: Iterator[bytes | memoryview]) -> None:
    header = _HEADER.pack(MAGIC, ring.current_id)
    nonce = os.urandom(NONCE_BYTES)
    encryptor = Cipher(algorithms.AES(ring.key(ring.current_id)), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(header + relative.encode())
    sink.write(header + nonce)
    for chunk in chunks:
        sink.write(encryptor.update(chunk))
    sink.write(encryptor.finalize())
    sink.write(encryptor.tag)


def keep(session: Session, files: FileStore, ring: KeyRing | bytes,
         source: Path | bytes | BinaryIO, *, calling_ae: str, sop_class_uid: str,
         reason_code: str, reason: str) -> int:
    """Store an instance encrypted (streamed, 1 MiB at a time) and record why.

    Parameters
    ----------
    session
        Open session; the caller commits.
    files
        The data folder.
    ring
        The quarantine key ring (a bare 32-byte key is a ring of one key, id 1).
    source
        The instance as received: a file (read in chunks, never whole), open binary file, or
        bytes already in memory (encrypted chunk by chunk, without a second full copy).

    Returns
    -------
    int
        The quarantine record id.
    """
    ring = _as_ring(ring)
    relative = f"quarantine/{uuid.uuid4().hex}.dcm.enc"
    files.write_stream(relative, lambda sink: _seal_into(sink, ring, relative,
                                                          _chunks(source)))
    row = Quarantined(received_at=utcnow(), calling_ae=calling_ae, sop_class_uid=sop_class_uid,
                      reason_code=reason_code, reason=reason, path=relative)
    session.add(row)
    session.flush()
    return row.id


def _as_ring(ring: KeyRing | bytes) -> KeyRing:
    return ring if isinstance(ring, KeyRing) else KeyRing.single("quarantine", bytes(ring))


def sealed_key_id(files: FileStore, relative: str) -> int:
    """The key id a quarantined file names (0 for files from before the key split)."""
    with open(files.absolute(relative), "rb") as fh:
        head = fh.read(_HEADER.size)
    if len(head) == _HEADER.size and head[:4] == MAGIC:
        return _HEADER.unpack(head)[1]
    return LEGACY_KEY_ID


def _plaintext_chunks(files: FileStore, ring: KeyRing, relative: str) -> Iterator[bytes]:
    """Plaintext of a quarantined file, chunk by chunk; the tag is checked after the last.

    Whoever consumes the chunks must discard them when this raises at the end.
    """
    path = files.absolute(relative)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header = fh.read(_HEADER.size)
        if len(header) < _HEADER.size or header[:4] != MAGIC:
            # Written before the key split: nonce | ciphertext+tag, associated data = path.
            sealed = header + fh.read()
            try:
                yield AESGCM(ring.key(LEGACY_KEY_ID)).decrypt(
                    sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], relative.encode())
            except InvalidTag:
                raise QuarantineError(f"{relative}: does not decrypt (wrong quarantine key, "
                                      "or altered)") from None
            return
        key_id = _HEADER.unpack(header)[1]
        nonce = fh.read(NONCE_BYTES)
        fh.seek(size - _TAG)
        tag = fh.read(_TAG)
        fh.seek(_HEADER.size + NONCE_BYTES)
        decryptor = Cipher(algorithms.AES(ring.key(key_id)), modes.GCM(nonce, tag)).decryptor()
        decryptor.authenticate_additional_data(header + relative.encode())
        left = size - _HEADER.size - NONCE_BYTES - _TAG
        while left > 0:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield decryptor.update(chunk)
        try:
            yield decryptor.finalize()
        except InvalidTag:
            raise QuarantineError(f"{relative}: does not decrypt (wrong quarantine key, or "
                                  "altered)") from None


def _reseal(files: FileStore, ring: KeyRing, old: str, new: str, sink: BinaryIO) -> None:
    """Re-encrypt the quarantined file ``old`` under the current key into ``sink`` (``new``)."""
    _seal_into(sink, ring, new, _plaintext_chunks(files, ring, old))


def open_into(files: FileStore, ring: KeyRing | bytes, relative: str, sink: BinaryIO) -> None:
    """Decrypt a quarantined instance into ``sink`` in chunks, then check its tag.

    The caller must discard what was written when this raises (the tag is checked last).

    Raises
    ------
    QuarantineError
        Wrong key or altered file.
    storage.keys.MissingKeyError
        The file names a key id whose file is not in the key folder.
    """
    for chunk in _plaintext_chunks(files, _as_ring(ring), relative):
        sink.write(chunk)


def open_sealed(files: FileStore, ring: KeyRing | bytes, relative: str) -> bytes:
    """Decrypt a quarantined instance into memory (for an operator with the key)."""
    out = io.BytesIO()
    open_into(files, ring, relative, out)
    return out.getvalue()


def reencrypt(db: Database, files: FileStore, ring: KeyRing) -> int:
    """Re-seal every quarantined file not sealed with the newest key; returns how many.

    Each file is decrypted and re-encrypted chunk by chunk straight into a new file (plaintext
    never touches the disk; the new name is needed because the path is bound into the
    ciphertext). Only when the old file's tag checks out is the new file renamed into place;
    then the row is pointed at it and the old file removed. A crash leaves at worst an extra
    sealed file, never a row without a readable file.
    """
    with db.session() as session:
        rows = session.execute(select(Quarantined.id, Quarantined.path)).all()
    changed = 0
    for row_id, relative in rows:
        if not files.absolute(relative).exists():
            continue
        if sealed_key_id(files, relative) == ring.current_id and _has_magic(files, relative):
            continue
        fresh = f"quarantine/{uuid.uuid4().hex}.dcm.enc"
        files.write_stream(fresh, functools.partial(_reseal, files, ring, relative, fresh))
        with db.session() as session:
            row = session.get(Quarantined, row_id)
            if row is None:  # purged meanwhile: the new copy has no owner
                files.delete(fresh)
                continue
            row.path = fresh
        files.delete(relative)
        changed += 1
    return changed


def key_ids_in_use(db: Database, files: FileStore) -> set[int]:
    """The key ids that quarantined files are sealed with (reads every file's header)."""
    with db.session() as session:
        paths = session.scalars(select(Quarantined.path)).all()
    return {sealed_key_id(files, p) for p in paths if files.absolute(p).exists()}


def _has_magic(files: FileStore, relative: str) -> bool:
    with open(files.absolute(relative), "rb") as fh:
        return fh.read(4) == MAGIC


def counts(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Quarantined.reason_code, func.count()).group_by(Quarantined.reason_code)).all()
    return {code: n for code, n in rows}


def remove(db: Database, files: FileStore, quarantine_id: int) -> bool:
    """Delete one quarantined instance (its sealed file, then its row); False if unknown."""
    with db.session() as session:
        row = session.get(Quarantined, quarantine_id)
        if row is None:
            return False
        files.delete(row.path)
        session.delete(row)
    return True


@dataclass(frozen=True)
class QuarantineEntry:
    """What a release needs of one quarantined instance (its reason, sender, sealed file)."""

    id: int
    calling_ae: str
    sop_class_uid: str
    reason_code: str
    path: str


def entry(db: Database, quarantine_id: int) -> QuarantineEntry | None:
    """One quarantined instance's record, or None."""
    with db.session() as session:
        row = session.get(Quarantined, quarantine_id)
        return None if row is None else QuarantineEntry(row.id, row.calling_ae,
                                                        row.sop_class_uid, row.reason_code,
                                                        row.path)
