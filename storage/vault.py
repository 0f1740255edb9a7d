"""The vault: the only place original identities live, encrypted at rest with AES-256-GCM.

Rows are keyed by pseudonyms (not identifying). Every original value is encrypted, with associated
data naming the table, the row key and the column:

* ``vault_uids``: pseudo UID -> original UID (and the pseudonymous study it belongs to);
* ``vault_studies``: (pseudo Study Instance UID, identity revision) -> pseudo patient ID, the
  original Patient and General Study module attributes as raw DICOM bytes, and the date shift.

A study has one identity row per *identity revision*: each distinct original identity received
for the same study (a PACS re-sends it after a demographic correction, an accession number
change or a patient merge) gets the next revision number, and the receiver records on every
instance the revision it arrived with. A job records the latest revision among the instances
it read, and its results are re-identified with that revision: results computed before a
correction go back with the identity their source instances carried.

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
import functools
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import cast

from cryptography.exceptions import InvalidTag
from sqlalchemy import (
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    TextClause,
    bindparam,
    false,
    func,
    select,
    text,
    tuple_,
    update,
)
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
    revision
        The identity revision of the study this identity is (1 for the first one received);
        assigned by :meth:`Vault.record`, meaningless on an identity not yet recorded.
    """

    pseudo_patient_id: str
    pseudo_study_uid: str
    payload: bytes
    date_offset_days: int = 0
    revision: int = 1


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
    # 1, 2, ...: one per distinct original identity received for the study.
    revision: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    pseudo_patient_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    date_offset: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[_dt.datetime] = mapped_column(DateTime(timezone=True))


_UID_TABLE = cast(Table, VaultUid.__table__)
_STUDY_TABLE = cast(Table, VaultStudy.__table__)
VAULT_TABLES = (_UID_TABLE, _STUDY_TABLE)


@functools.cache
def _insert_ignore_statement(dialect: str, table: Table, key: str,
                             columns: tuple[str, ...]) -> TextClause:
    """INSERT of ``columns`` that leaves a row already there (by its unique ``key``) as it is;
    built once per table and columns (it runs for every received instance).

    ``ON CONFLICT (key) DO NOTHING`` is the same in SQLite and PostgreSQL.  It is a text
    statement with typed parameters rather than the dialects' ``insert().on_conflict_do_nothing``
    because SQLAlchemy does not cache the compiled form of those (their cache key is None):
    compiling it again for every instance cost more than running it.  Table and column names
    come from the schema, never from a received value.
    """
    if dialect not in ("postgresql", "sqlite"):
        raise VaultError(f"unsupported database dialect {dialect}")  # config allows only these
    if key not in columns or not set(columns) <= set(table.c.keys()):
        raise ValueError(f"not columns of {table.name}: {columns}")
    names = ", ".join(columns)
    values = ", ".join(f":{name}" for name in columns)
    return text(f"INSERT INTO {table.name} ({names}) VALUES ({values}) "
                f"ON CONFLICT ({key}) DO NOTHING").bindparams(
        *(bindparam(name, type_=table.c[name].type) for name in columns))


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

    def _insert_ignore(self, session: Session, table: Table, rows: list[dict],
                       key: str) -> None:
        if not rows:
            return
        statement = _insert_ignore_statement(session.get_bind().dialect.name, table, key,
                                             tuple(rows[0]))
        session.connection().execute(statement, rows)  # Core: no ORM work per statement

    def record(self, session: Session, uid_mappings: Mapping[str, str],
               identity: OriginalIdentity | None = None) -> int | None:
        """Store pseudo -> original UID mappings and a study's identity; returns its revision.

        UID mappings are idempotent (a pseudo UID already stored is left as it is). The
        identity is compared with every identity revision of the study already stored
        (decrypted in memory): an equal one gives its revision; a different one (a demographic
        correction, a patient merge) is stored as the next revision.

        Parameters
        ----------
        session
            An open session; the caller commits (same transaction as its own rows).
        uid_mappings
            ``{pseudo UID: original UID}``.
        identity
            The study's original identity, when known.

        Returns
        -------
        int or None
            The identity revision of ``identity`` (``None`` when no identity was given).

        Raises
        ------
        sqlalchemy.exc.IntegrityError
            Another transaction stored a new revision of the same study at the same moment;
            the caller retries (the receiver does, as for its index rows).
        """
        now = _dt.datetime.now(_dt.UTC)
        study = identity.pseudo_study_uid if identity else None
        rows = [{"pseudo_uid": p, "pseudo_study_uid": study, "created_at": now,
                 "original": self._seal(o.encode("ascii"), self._aad("vault_uids", p, "original"))}
                for p, o in sorted(uid_mappings.items())]
        for start in range(0, len(rows), _BATCH):
            self._insert_ignore(session, _UID_TABLE, rows[start:start + _BATCH],
                                "pseudo_uid")
        if identity is None:
            return None
        key = identity.pseudo_study_uid
        if session.get_bind().dialect.name == "sqlite":
            # Take SQLite's write lock before reading the revisions (a no-op UPDATE does):
            # a read transaction cannot become a write one once another connection has
            # committed ("database is locked" at once, busy_timeout notwithstanding).
            session.execute(update(VaultStudy).where(false()).values(revision=0))
        latest = 0
        for stored in self._identities(session, key):
            latest = stored.revision
            if (stored.payload, stored.pseudo_patient_id, stored.date_offset_days) == \
                    (identity.payload, identity.pseudo_patient_id, identity.date_offset_days):
                return stored.revision
        revision = latest + 1
        row_key = self._study_key(key, revision)
        # A plain insert: a concurrent writer of the same revision number raises, and the
        # caller's retry then finds (and compares with) the row that writer stored.
        session.execute(_STUDY_TABLE.insert().values(
            pseudo_study_uid=key, revision=revision,
            pseudo_patient_id=identity.pseudo_patient_id,
            payload=self._seal(identity.payload, self._aad("vault_studies", row_key, "payload")),
            date_offset=self._seal(struct.pack(">i", identity.date_offset_days),
                                   self._aad("vault_studies", row_key, "date_offset")),
            created_at=now))
        return revision

    @staticmethod
    def _study_key(pseudo_study_uid: str, revision: int) -> str:
        # The row key sealed into the associated data: revision 1 keeps the key rows had
        # before revisions existed (they stay readable); a "/" cannot occur in a UID, so a
        # ciphertext moved to another revision fails to decrypt.
        return pseudo_study_uid if revision == 1 else f"{pseudo_study_uid}/{revision}"

    def _decrypt_study(self, row: VaultStudy) -> OriginalIdentity:
        key = self._study_key(row.pseudo_study_uid, row.revision)
        payload = self._open(row.payload, self._aad("vault_studies", key, "payload"))
        (offset,) = struct.unpack(
            ">i", self._open(row.date_offset, self._aad("vault_studies", key, "date_offset")))
        return OriginalIdentity(row.pseudo_patient_id, row.pseudo_study_uid, payload, offset,
                                row.revision)

    def _identities(self, session: Session, pseudo_study_uid: str) -> list[OriginalIdentity]:
        rows = session.scalars(select(VaultStudy)
                               .where(VaultStudy.pseudo_study_uid == pseudo_study_uid)
                               .order_by(VaultStudy.revision)).all()
        return [self._decrypt_study(row) for row in rows]

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

    def identity_for_study(self, pseudo_study_uid: str, session: Session | None = None,
                           revision: int | None = None) -> OriginalIdentity | None:
        """The original identity of a pseudonymous study, or ``None``.

        Parameters
        ----------
        pseudo_study_uid
            The pseudonymous Study Instance UID.
        session
            An open session, or ``None`` for a short one of its own.
        revision
            The identity revision wanted (a job's :attr:`identity_revision`); ``None`` for the
            latest one received. A revision that is not stored gives ``None`` (never another).
        """
        if session is None:
            with self.database.session() as own:
                return self.identity_for_study(pseudo_study_uid, own, revision)
        query = select(VaultStudy).where(VaultStudy.pseudo_study_uid == pseudo_study_uid)
        if revision is not None:
            query = query.where(VaultStudy.revision == revision)
        row = session.scalars(query.order_by(VaultStudy.revision.desc()).limit(1)).first()
        return None if row is None else self._decrypt_study(row)

    def identities_for_study(self, pseudo_study_uid: str,
                             session: Session | None = None) -> list[OriginalIdentity]:
        """Every identity revision of a pseudonymous study, oldest first (lookups, leak
        checks: an identifier of any revision identifies the patient)."""
        if session is None:
            with self.database.session() as own:
                return self.identities_for_study(pseudo_study_uid, own)
        return self._identities(session, pseudo_study_uid)

    def study_uids(self, session: Session | None = None) -> list[str]:
        """Every pseudonymous study UID with an identity in the vault (no decryption)."""
        if session is None:
            with self.database.session() as own:
                return self.study_uids(own)
        return list(session.scalars(select(VaultStudy.pseudo_study_uid)
                                    .group_by(VaultStudy.pseudo_study_uid)
                                    .order_by(func.min(VaultStudy.created_at))))

    def pseudonyms_for_study(self, pseudo_study_uid: str,
                             session: Session | None = None) -> StudyPseudonyms | None:
        """Every pseudonym recorded for a study (no decryption needed)."""
        if session is None:
            with self.database.session() as own:
                return self.pseudonyms_for_study(pseudo_study_uid, own)
        row = session.scalars(select(VaultStudy)
                              .where(VaultStudy.pseudo_study_uid == pseudo_study_uid)
                              .order_by(VaultStudy.revision.desc()).limit(1)).first()
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
                select(VaultStudy.pseudo_patient_id).distinct()
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
        for table, key_columns, columns in (
                (_UID_TABLE, ("pseudo_uid",), ("original",)),
                (_STUDY_TABLE, ("pseudo_study_uid", "revision"),
                 ("payload", "date_offset"))):
            pks = [table.c[k] for k in key_columns]
            after: tuple | None = None
            while True:
                with self.database.session() as session:
                    query = select(*pks, *(table.c[c] for c in columns))
                    if after is not None:
                        query = query.where(tuple_(*pks) > after)
                    rows = session.execute(query.order_by(*pks).limit(batch)).all()
                    if not rows:
                        break
                    width = len(pks)
                    for row in rows:
                        keys = tuple(row[:width])
                        values = dict(zip(columns, row[width:], strict=True))
                        if all(sealed_key_id(v) == current for v in values.values()):
                            continue
                        aad_key = keys[0] if width == 1 else self._study_key(*keys)
                        fresh = {c: self._seal(self._open(v, self._aad(table.name, aad_key, c)),
                                               self._aad(table.name, aad_key, c))
                                 for c, v in values.items()}
                        session.execute(update(table).where(
                            *(pk == k for pk, k in zip(pks, keys, strict=True))).values(**fresh))
                        changed += 1
                    after = tuple(rows[-1][:width])
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
