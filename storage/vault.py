"""The vault: the only place original identities live, encrypted at rest with AES-256-GCM.

Rows are keyed by pseudonyms (not identifying). Every original value is encrypted, with associated
data naming the table, the row key and the column:

* ``vault_uids``: pseudo UID -> original UID (and the pseudonymous study it belongs to);
* ``vault_studies``: pseudo Study Instance UID -> pseudo patient ID, the original Patient and
  General Study module attributes as raw DICOM bytes, and the date shift.

Every ciphertext starts with the id of the vault key that sealed it (:class:`storage.keys.KeyRing`),
so ``dicom-node rotate-keys`` can re-encrypt rows under a new key while old ones stay readable.
A ciphertext moved to another row, or read with another key, fails to decrypt: it is never
silently used. Writes take the caller's :class:`~sqlalchemy.orm.Session`, so the receiver stores
mappings in the same transaction as its index rows. They are idempotent
(insert-if-absent on SQLite and PostgreSQL).

This module imports nothing of the project outside ``storage``.
"""

from __future__ import annotations

import datetime as _dt
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from sqlalchemy import DateTime, Index, LargeBinary, String, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from storage.database import Database
from storage.keys import VAULT, KeyFileError, KeyRing, sealed_key_id
from storage.schema import Base

_BATCH = 500  # keeps IN (...) lists under SQLite's variable limit


@dataclass(frozen=True)
class OriginalIdentity:
    """What re-identifying a study needs, as plain data.

    Attributes
    ----------
    pseudo_patient_id
        The patient's pseudonymous ID (``ANON-...``).
    pseudo_study_uid
        The pseudonymous Study Instance UID.
    payload
        Original Patient and General Study module attributes, with Specific Character Set,
        encoded as Explicit VR Little Endian data elements (raw bytes preserve every charset).
    date_offset_days
        Days added to dates on the way in (0 when dates were not shifted).
    """

    pseudo_patient_id: str
    pseudo_study_uid: str
    payload: bytes
    date_offset_days: int = 0


@dataclass(frozen=True)
class StudyPseudonyms:
    """The pseudonyms of one study, for leak checks (none of these identify anyone)."""

    pseudo_study_uid: str
    pseudo_patient_id: str
    pseudo_uids: frozenset[str]


class VaultError(Exception):
    """The vault cannot be used as asked (wrong key, tampered row). Never carries values."""


class VaultUid(Base):
    __tablename__ = "vault_uids"

    pseudo_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    pseudo_study_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    original: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[_dt.datetime] = mapped_column(DateTime(timezone=True))


class VaultStudy(Base):
    __tablename__ = "vault_studies"
    __table_args__ = (Index("ix_vault_studies_pseudo_patient_id", "pseudo_patient_id"),)

    pseudo_study_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    pseudo_patient_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    date_offset: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[_dt.datetime] = mapped_column(DateTime(timezone=True))


VAULT_TABLES = (VaultUid.__table__, VaultStudy.__table__)


class Vault:
    """Encrypted pseudonym -> original store.

    Parameters
    ----------
    database
        The node's database.
    keys
        The vault key ring (:meth:`storage.keys.KeyFolder.ring`); a bare 32-byte key is taken
        as a ring of one key with id 1.
    """

    def __init__(self, database: Database, keys: KeyRing | bytes):
        if not isinstance(keys, KeyRing):
            if len(keys) != 32:
                raise VaultError("the vault key must be 32 bytes (AES-256)")
            keys = KeyRing.single(VAULT, bytes(keys))
        self.database = database
        self.keys = keys

    # -- crypto -------------------------------------------------------------------------------

    def _seal(self, plaintext: bytes, aad: bytes) -> bytes:
        return self.keys.seal(plaintext, aad)

    def _open(self, sealed: bytes, aad: bytes) -> bytes:
        table = aad.split(b"|")[0].decode()
        try:
            return self.keys.open(sealed, aad)
        except InvalidTag:
            raise VaultError(
                "vault row does not decrypt: wrong vault key, or the row was altered "
                f"({table})") from None
        except KeyFileError as exc:  # names the key file to restore, never a value
            raise VaultError(f"vault row cannot be opened ({table}): {exc}") from None

    @staticmethod
    def _aad(table: str, key: str, column: str) -> bytes:
        return f"{table}|{key}|{column}".encode()

    # -- writes -------------------------------------------------------------------------------

    def _insert_ignore(self, session: Session, table, rows: list[dict], key: str) -> None:  # noqa: ANN001
        if not rows:
            return
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=[key])
        elif dialect == "sqlite":
            stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=[key])
        else:  # pragma: no cover - config only allows these two
            raise VaultError(f"unsupported database dialect {dialect}")
        session.execute(stmt, rows)

    def record(self, session: Session, uid_mappings: Mapping[str, str],
               identity: OriginalIdentity | None = None) -> None:
        """Store pseudo -> original UID mappings and a study's identity, if absent.

        Idempotent: a pseudo UID or study already stored is left as it is (the first identity
        recorded for a study wins).

        Parameters
        ----------
        session
            An open session; the caller commits (same transaction as its own rows).
        uid_mappings
            ``{pseudo UID: original UID}``.
        identity
            The study's original identity, when known.
        """
        now = _dt.datetime.now(_dt.UTC)
        study = identity.pseudo_study_uid if identity else None
        rows = [{"pseudo_uid": p, "pseudo_study_uid": study, "created_at": now,
                 "original": self._seal(o.encode("ascii"), self._aad("vault_uids", p, "original"))}
                for p, o in sorted(uid_mappings.items())]
        for start in range(0, len(rows), _BATCH):
            self._insert_ignore(session, VaultUid.__table__, rows[start:start + _BATCH],
                                "pseudo_uid")
        if identity is not None:
            key = identity.pseudo_study_uid
            self._insert_ignore(session, VaultStudy.__table__, [{
                "pseudo_study_uid": key,
                "pseudo_patient_id": identity.pseudo_patient_id,
                "payload": self._seal(identity.payload,
                                      self._aad("vault_studies", key, "payload")),
                "date_offset": self._seal(struct.pack(">i", identity.date_offset_days),
                                          self._aad("vault_studies", key, "date_offset")),
                "created_at": now,
            }], "pseudo_study_uid")

    # -- reads --------------------------------------------------------------------------------

    def original_uid(self, pseudo: str, session: Session | None = None) -> str | None:
        """The original UID for a pseudonymous one, or ``None`` when not in the vault."""
        return self.original_uids([pseudo], session).get(pseudo)

    def original_uids(self, pseudos: Iterable[str],
                      session: Session | None = None) -> dict[str, str]:
        """``{pseudo: original}`` for those of ``pseudos`` that are in the vault (batched)."""
        wanted = sorted({p for p in pseudos if p})
        if not wanted:
            return {}
        if session is None:
            with self.database.session() as own:
                return self.original_uids(wanted, own)
        found: dict[str, str] = {}
        for start in range(0, len(wanted), _BATCH):
            chunk = wanted[start:start + _BATCH]
            for pseudo, sealed in session.execute(
                    select(VaultUid.pseudo_uid, VaultUid.original)
                    .where(VaultUid.pseudo_uid.in_(chunk))):
                found[pseudo] = self._open(
                    sealed, self._aad("vault_uids", pseudo, "original")).decode("ascii")
        return found

    def identity_for_study(self, pseudo_study_uid: str,
                           session: Session | None = None) -> OriginalIdentity | None:
        """The original identity recorded for a pseudonymous study, or ``None``."""
        if session is None:
            with self.database.session() as own:
                return self.identity_for_study(pseudo_study_uid, own)
        row = session.get(VaultStudy, pseudo_study_uid)
        if row is None:
            return None
        key = row.pseudo_study_uid
        payload = self._open(row.payload, self._aad("vault_studies", key, "payload"))
        (offset,) = struct.unpack(
            ">i", self._open(row.date_offset, self._aad("vault_studies", key, "date_offset")))
        return OriginalIdentity(row.pseudo_patient_id, key, payload, offset)

    def study_uids(self, session: Session | None = None) -> list[str]:
        """Every pseudonymous study UID with an identity in the vault (no decryption)."""
        if session is None:
            with self.database.session() as own:
                return self.study_uids(own)
        return list(session.scalars(select(VaultStudy.pseudo_study_uid)
                                    .order_by(VaultStudy.created_at)))

    def pseudonyms_for_study(self, pseudo_study_uid: str,
                             session: Session | None = None) -> StudyPseudonyms | None:
        """Every pseudonym recorded for a study (no decryption needed)."""
        if session is None:
            with self.database.session() as own:
                return self.pseudonyms_for_study(pseudo_study_uid, own)
        row = session.get(VaultStudy, pseudo_study_uid)
        if row is None:
            return None
        uids = session.scalars(select(VaultUid.pseudo_uid)
                               .where(VaultUid.pseudo_study_uid == pseudo_study_uid)).all()
        return StudyPseudonyms(pseudo_study_uid, row.pseudo_patient_id,
                               frozenset(uids) | {pseudo_study_uid})

    def original_uids_for_study(self, pseudo_study_uid: str,
                                session: Session | None = None) -> set[str]:
        """The original UIDs recorded for a pseudonymous study (for research leak checks)."""
        if session is None:
            with self.database.session() as own:
                return self.original_uids_for_study(pseudo_study_uid, own)
        out = set()
        for pseudo, sealed in session.execute(
                select(VaultUid.pseudo_uid, VaultUid.original)
                .where(VaultUid.pseudo_study_uid == pseudo_study_uid)):
            out.add(self._open(sealed, self._aad("vault_uids", pseudo, "original"))
                    .decode("ascii"))
        return out

    def known_pseudo_patient_ids(self, candidates: Iterable[str],
                                 session: Session | None = None) -> set[str]:
        """Those of ``candidates`` that are pseudonymous patient IDs in the vault."""
        wanted = sorted({c for c in candidates if c})
        if not wanted:
            return set()
        if session is None:
            with self.database.session() as own:
                return self.known_pseudo_patient_ids(wanted, own)
        found: set[str] = set()
        for start in range(0, len(wanted), _BATCH):
            found.update(session.scalars(
                select(VaultStudy.pseudo_patient_id)
                .where(VaultStudy.pseudo_patient_id.in_(wanted[start:start + _BATCH]))))
        return found

    # -- rotation -----------------------------------------------------------------------------

    def reencrypt(self, batch: int = _BATCH) -> int:
        """Re-seal every row not sealed with the newest key; returns how many were re-sealed.

        Batched by primary key, one transaction per batch, so an interrupted run leaves every
        row readable (old or new key) and a second run finishes the work.
        """
        changed = 0
        current = self.keys.current_id
        for table, key_column, columns in (
                (VaultUid.__table__, "pseudo_uid", ("original",)),
                (VaultStudy.__table__, "pseudo_study_uid", ("payload", "date_offset"))):
            pk = table.c[key_column]
            after = ""
            while True:
                with self.database.session() as session:
                    rows = session.execute(
                        select(pk, *(table.c[c] for c in columns)).where(pk > after)
                        .order_by(pk).limit(batch)).all()
                    if not rows:
                        break
                    for row in rows:
                        values = dict(zip(columns, row[1:], strict=True))
                        if all(sealed_key_id(v) == current for v in values.values()):
                            continue
                        fresh = {c: self._seal(self._open(v, self._aad(table.name, row[0], c)),
                                               self._aad(table.name, row[0], c))
                                 for c, v in values.items()}
                        session.execute(update(table).where(pk == row[0]).values(**fresh))
                        changed += 1
                    after = rows[-1][0]
        return changed

    def key_ids_in_use(self) -> set[int]:
        """The key ids that vault rows are sealed with (reads every row; for rotation)."""
        used: set[int] = set()
        with self.database.session() as session:
            for (sealed,) in session.execute(select(VaultUid.original)):
                used.add(sealed_key_id(sealed))
            for payload, offset in session.execute(
                    select(VaultStudy.payload, VaultStudy.date_offset)):
                used.update((sealed_key_id(payload), sealed_key_id(offset)))
        return used

    def create_tables(self) -> None:
        """Create the vault tables when missing (tests; production uses the migrations)."""
        Base.metadata.create_all(self.database.engine, tables=list(VAULT_TABLES))
