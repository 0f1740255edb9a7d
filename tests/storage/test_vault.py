"""The vault: encrypted at rest, idempotent, bound rows, clear failure on a wrong key."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, update

from storage.database import Database
from storage.vault import OriginalIdentity, Vault, VaultError, VaultUid

KEY = bytes(range(32))
ORIGINAL_UID = "1.2.826.0.1.3680043.8.498.424242"
NAME = b"Geheimnisvoll^Hanna"


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'v.db'}")
    Vault(database, KEY).create_tables()
    yield database
    database.dispose()


def _identity(study: str = "2.25.100") -> OriginalIdentity:
    return OriginalIdentity("ANON-ABCDEFGHIJ", study, b"payload " + NAME, -42)


def test_round_trip_and_idempotent(db: Database) -> None:
    vault = Vault(db, KEY)
    for _ in range(2):  # the second record is a no-op, not an error
        with db.session() as s:
            vault.record(s, {"2.25.1": ORIGINAL_UID, "2.25.100": "1.2.3.100"}, _identity())
    assert vault.original_uid("2.25.1") == ORIGINAL_UID
    assert vault.original_uid("2.25.404") is None
    assert vault.original_uids(["2.25.1", "2.25.100", "2.25.9"]) == {
        "2.25.1": ORIGINAL_UID, "2.25.100": "1.2.3.100"}
    ident = vault.identity_for_study("2.25.100")
    assert ident == _identity()
    p = vault.pseudonyms_for_study("2.25.100")
    assert p.pseudo_patient_id == "ANON-ABCDEFGHIJ" and "2.25.1" in p.pseudo_uids
    assert vault.original_uids_for_study("2.25.100") == {ORIGINAL_UID, "1.2.3.100"}
    assert vault.known_pseudo_patient_ids(["ANON-ABCDEFGHIJ", "x"]) == {"ANON-ABCDEFGHIJ"}


def test_many_uids_batched(db: Database) -> None:
    vault = Vault(db, KEY)
    mapping = {f"2.25.{i}": f"1.2.3.{i}" for i in range(1200)}
    with db.session() as s:
        vault.record(s, mapping, _identity())
    assert vault.original_uids(mapping) == mapping


def test_raw_database_has_no_originals(db: Database, tmp_path: Path) -> None:
    with db.session() as s:
        Vault(db, KEY).record(s, {"2.25.1": ORIGINAL_UID}, _identity())
    db.dispose()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("v.db*"))
    assert ORIGINAL_UID.encode() not in raw
    assert NAME not in raw and b"Geheimnisvoll" not in raw
    assert b"2.25.1" in raw  # pseudonyms are stored in clear (not identifying)


def test_wrong_key_fails_clearly(db: Database) -> None:
    with db.session() as s:
        Vault(db, KEY).record(s, {"2.25.1": ORIGINAL_UID}, _identity())
    other = Vault(db, bytes(32))
    with pytest.raises(VaultError, match="wrong vault key") as info:
        other.original_uid("2.25.1")
    assert ORIGINAL_UID not in str(info.value)
    with pytest.raises(VaultError):
        other.identity_for_study("2.25.100")


def test_ciphertext_bound_to_its_row(db: Database) -> None:
    vault = Vault(db, KEY)
    with db.session() as s:
        vault.record(s, {"2.25.1": ORIGINAL_UID, "2.25.2": "1.2.3.2"}, _identity())
    with db.session() as s:
        sealed = s.get(VaultUid, "2.25.1").original
        s.execute(update(VaultUid).where(VaultUid.pseudo_uid == "2.25.2").values(original=sealed))
    with pytest.raises(VaultError):
        vault.original_uid("2.25.2")


def test_same_transaction_rollback(db: Database) -> None:
    vault = Vault(db, KEY)
    with pytest.raises(RuntimeError), db.session() as s:
        vault.record(s, {"2.25.1": ORIGINAL_UID}, _identity())
        raise RuntimeError("index row failed")
    assert vault.original_uid("2.25.1") is None


def test_key_length_checked(db: Database) -> None:
    with pytest.raises(VaultError):
        Vault(db, b"short")


def test_rows_name_their_key_and_reencrypt_to_the_newest(db):
    from storage.keys import VAULT, KeyRing, sealed_key_id

    old, new = bytes(range(32)), bytes(range(1, 33))
    with db.session() as s:
        Vault(db, KeyRing(VAULT, {1: old})).record(
            s, {"2.25.1": ORIGINAL_UID, "2.25.100": "1.2.3.100"}, _identity())
    with db.session() as s:
        assert {sealed_key_id(v) for v in s.scalars(select(VaultUid.original))} == {1}
    both = Vault(db, KeyRing(VAULT, {1: old, 2: new}))
    assert both.reencrypt(batch=1) == 3  # two UID rows and the study row, one per batch
    assert both.reencrypt() == 0
    assert both.key_ids_in_use() == {2}
    only_new = Vault(db, KeyRing(VAULT, {2: new}))
    assert only_new.original_uid("2.25.1") == ORIGINAL_UID
    assert only_new.identity_for_study("2.25.100") == _identity()
