"""A copy of the data folder alone (SQLite database, logs, studies, results, quarantine; no key
folder) reveals no identity: no planted identifier in any byte of any file, and nothing in the
copy opens the vault or the quarantine. On the old layout the copy carried ``keys/vault.key``."""

from __future__ import annotations

import contextlib
import logging
import shutil

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select

from dicom_node.node import Node, configure_logging
from storage.database import Database
from storage.keys import SEALED_HEADER
from storage.vault import VaultUid
from tests.security.installation import (
    PLANTED,
    burned_in,
    node_config,
    receive,
    source_series,
    write_result,
)


def _encodings(value: str) -> set[bytes]:
    out = {value.encode("utf-8")}
    with contextlib.suppress(UnicodeEncodeError):
        out.add(value.encode("latin-1"))
    return out


def _opens(key: bytes, sealed: bytes, aad: bytes) -> bool:
    """Whether ``key`` decrypts a vault value, in the current or the pre-split format."""
    for start in (SEALED_HEADER.size, 0):
        with contextlib.suppress(InvalidTag, ValueError):
            AESGCM(key).decrypt(sealed[start:start + 12], sealed[start + 12:], aad)
            return True
    return False


def test_copy_of_the_data_folder_reveals_no_identity(tmp_path):
    config = node_config(tmp_path / "site")
    configure_logging(config)
    try:
        node = Node(config, workers=0, send=False)
        series = source_series()
        logging.getLogger("dicom_node.test").info("received a study")
        stored = receive(node, series)
        assert node.receiver.ingest(burned_in(), "PACS") == 0
        write_result(node, stored)
        node.db.dispose()
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_dicom_node", False)]:
            root.removeHandler(handler)
            handler.close()

    copy = tmp_path / "stolen"
    shutil.copytree(config.node.data_dir, copy)
    files = [p for p in copy.rglob("*") if p.is_file()]
    names = {p.relative_to(copy).parts[0] for p in files}
    assert {"node.db", "studies", "results", "quarantine", "logs"} <= names, names

    needles: dict[bytes, str] = {}
    planted = [*PLANTED.name.split("^"), PLANTED.patient_id, PLANTED.birth_date,
               PLANTED.accession, PLANTED.institution, PLANTED.address.split(",")[0],
               PLANTED.study_uid]
    for ds in series:
        planted += [ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID]
    for value in planted:
        for encoded in _encodings(str(value)):
            needles[encoded] = str(value)
    leaks = sorted({f"{p.relative_to(copy)}: {needles[n]}" for p in files
                    for n in needles if n in p.read_bytes()})
    assert not leaks, leaks

    # The vault is in the copy, but nothing in the copy is a key that opens it.
    db = Database(f"sqlite:///{copy / 'node.db'}")
    with db.session() as s:
        rows = s.execute(select(VaultUid.pseudo_uid, VaultUid.original)).all()
    db.dispose()
    assert rows
    pseudo, sealed = rows[0]
    aad = f"vault_uids|{pseudo}|original".encode()
    candidates = [p for p in files if p.stat().st_size == 32 or p.suffix == ".key"]
    openers = [str(p.relative_to(copy)) for p in candidates
               if len(p.read_bytes()) == 32 and _opens(p.read_bytes(), sealed, aad)]
    assert not openers, f"the copy carries the vault key: {openers}"
