"""Quarantined files: streamed AES-256-GCM with a key id, bound to their path, tamper-evident;
files from before the key split still open with key id 0."""

from __future__ import annotations

import io
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select

from storage import quarantine
from storage.files import FileStore
from storage.keys import QUARANTINE, KeyRing, MissingKeyError
from storage.tables import Quarantined

DATA = os.urandom(3 * quarantine.CHUNK + 12345)  # several chunks and a partial one


def _keep(sqlite_db, files, ring, source) -> str:
    with sqlite_db.session() as s:
        row_id = quarantine.keep(s, files, ring, source, calling_ae="PACS",
                                 sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
                                 reason_code="sop-class", reason="secondary capture")
        return s.get(Quarantined, row_id).path


@pytest.mark.parametrize("kind", ["path", "bytes", "file"])
def test_every_source_kind_round_trips(sqlite_db, tmp_path, kind):
    files = FileStore(tmp_path / "var")
    ring = KeyRing(QUARANTINE, {3: os.urandom(32)})
    received = tmp_path / "in.dcm"
    received.write_bytes(DATA)
    source = {"path": received, "bytes": DATA, "file": io.BytesIO(DATA)}[kind]
    relative = _keep(sqlite_db, files, ring, source)
    assert quarantine.sealed_key_id(files, relative) == 3
    assert quarantine.open_sealed(files, ring, relative) == DATA


def test_altered_or_moved_file_does_not_open(sqlite_db, tmp_path):
    files = FileStore(tmp_path / "var")
    ring = KeyRing(QUARANTINE, {1: os.urandom(32)})
    relative = _keep(sqlite_db, files, ring, DATA)
    path = files.absolute(relative)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(quarantine.QuarantineError):
        quarantine.open_sealed(files, ring, relative)
    other = _keep(sqlite_db, files, ring, DATA)
    moved = "quarantine/moved.dcm.enc"
    files.absolute(other).rename(files.absolute(moved))
    with pytest.raises(quarantine.QuarantineError):  # the path is bound into the ciphertext
        quarantine.open_sealed(files, ring, moved)


def test_missing_key_id_is_named(sqlite_db, tmp_path):
    files = FileStore(tmp_path / "var")
    relative = _keep(sqlite_db, files, KeyRing(QUARANTINE, {1: os.urandom(32)}), DATA)
    later = KeyRing(QUARANTINE, {2: os.urandom(32)}, tmp_path / "keys")
    with pytest.raises(MissingKeyError, match="quarantine-0001.key"):
        quarantine.open_sealed(files, later, relative)


def test_pre_split_file_opens_with_key_id_0_and_rotates(sqlite_db, tmp_path):
    files = FileStore(tmp_path / "var")
    legacy = os.urandom(32)
    relative = "quarantine/abc.dcm.enc"
    nonce = os.urandom(12)
    files.write(relative, nonce + AESGCM(legacy).encrypt(nonce, DATA, relative.encode()))
    with sqlite_db.session() as s:
        s.add(Quarantined(calling_ae="PACS", sop_class_uid="1.2.3", reason_code="x", reason="x",
                          path=relative))
    ring = KeyRing(QUARANTINE, {0: legacy, 1: os.urandom(32)})
    assert quarantine.sealed_key_id(files, relative) == 0
    assert quarantine.open_sealed(files, ring, relative) == DATA
    assert quarantine.reencrypt(sqlite_db, files, ring) == 1
    assert quarantine.reencrypt(sqlite_db, files, ring) == 0  # nothing left to do
    with sqlite_db.session() as s:
        (now_at,) = s.scalars(select(Quarantined.path)).all()
    assert quarantine.sealed_key_id(files, now_at) == 1
    assert quarantine.open_sealed(files, KeyRing(QUARANTINE, {1: ring.key(1)}), now_at) == DATA
    assert not files.absolute(relative).exists()
