"""The node's keys: one folder outside the data folder, one key (or key ring) per purpose.

Three purposes, three keys, never shared:

* ``uid-secret.key``: the HMAC secret behind every pseudonym (UIDs, patient ID/name, date
  shift). It is never rotated: a new one would give every known patient a new pseudonym.
* ``vault-NNNN.key``: AES-256-GCM keys of the identity vault (:mod:`storage.vault`).
* ``quarantine-NNNN.key``: AES-256-GCM keys of quarantined instances
  (:mod:`storage.quarantine`).

``NNNN`` is the key id. Every ciphertext starts with the id of the key that sealed it, so after
``dicom-node rotate-keys`` old and new keys coexist until everything is re-encrypted. The
newest id seals; any id present opens. Key id 0 is the single key of installations from before
the keys were split (imported by ``dicom-node init-keys``).

Key files are created once with mode 0600 (``O_CREAT | O_EXCL``: two processes starting
together cannot both write one) and refused when group or others could read them. Keys are
created only on a fresh installation: :func:`prepare_keys` refuses when the database or the data
folder already holds data and a key is missing, and names the files to restore.

This module imports nothing of the project outside ``storage``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import inspect, text

from storage.database import Database

KEY_BYTES = 32
UID_SECRET = "uid-secret"
VAULT = "vault"
QUARANTINE = "quarantine"
RINGS = (VAULT, QUARANTINE)
PURPOSES = (UID_SECRET, *RINGS)

# Sealed value: format version (1 byte), key id (uint32 big endian), nonce, ciphertext + tag.
SEALED_VERSION = 1
SEALED_HEADER = struct.Struct(">BI")
NONCE_BYTES = 12
# Files of the single key of installations before the split (under data_dir/keys).
LEGACY_FILES = {"uid-secret.key": UID_SECRET, "vault.key": "vault+quarantine"}
LEGACY_KEY_ID = 0

_RING_FILE = re.compile(r"^(vault|quarantine)-(\d{4,9})\.key$")


class KeyFileError(Exception):
    """A key that must not or cannot be used. The message names files, never key bytes."""


class MissingKeyError(KeyFileError):
    """A key the node needs is not in the key folder; the message says which file to restore."""


# -- one key file -------------------------------------------------------------------------------

def load_or_create_key(path: Path, nbytes: int = KEY_BYTES) -> bytes:
    """The key in ``path``; when missing, a new random key written there with mode 0600.

    Creation is atomic: the file is opened with ``O_CREAT | O_EXCL`` so two processes starting
    together cannot both write a key; the loser reads the winner's.

    Parameters
    ----------
    path
        The key file. Its folder is created (mode 0700) when missing.
    nbytes
        Key length in bytes.

    Raises
    ------
    KeyFileError
        The file is readable or writable by group/other, is not a regular file, or holds a key
        of the wrong length. The message names the file and the problem, never the key.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise KeyFileError(f"cannot create the key folder {path.parent}: {exc.strerror}; create "
                           "it (mode 0700, owned by the node's user) or run 'dicom-node "
                           "init-keys' as that user") from None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return read_key(path, nbytes)
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}; run 'dicom-node init-keys' "
                           "as the node's user where the key folder is writable") from None
    try:
        key = secrets.token_bytes(nbytes)
        os.write(fd, key)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    _fsync_dir(path.parent)
    return key


def read_key(path: Path, nbytes: int = KEY_BYTES) -> bytes:
    """The key in an existing file, checked (regular file, mode, length)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise MissingKeyError(f"{path}: missing") from None
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"{path}: not a regular file")
    if info.st_mode & 0o077:
        raise KeyFileError(
            f"{path}: permissions {stat.filemode(info.st_mode)} let group or others read it; "
            f"run 'chmod 600 {path}'")
    key = path.read_bytes()
    if len(key) != nbytes:
        raise KeyFileError(f"{path}: holds {len(key)} bytes, expected {nbytes} (wrong or "
                           "truncated key file)")
    return key


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- key rings ----------------------------------------------------------------------------------

class KeyRing:
    """The keys of one purpose: the newest seals, the one a ciphertext names opens it.

    Parameters
    ----------
    purpose
        ``vault`` or ``quarantine`` (used in messages).
    keys
        ``{key id: 32-byte key}``; at least one.
    folder
        Where the key files live (named in messages about a missing key).
    """

    def __init__(self, purpose: str, keys: Mapping[int, bytes], folder: Path | None = None):
        if not keys:
            raise MissingKeyError(f"no {purpose} key")
        for key in keys.values():
            if len(key) != KEY_BYTES:
                raise KeyFileError(f"a {purpose} key must be {KEY_BYTES} bytes (AES-256)")
        self.purpose = purpose
        self.folder = folder
        self._keys = {int(k): bytes(v) for k, v in keys.items()}
        self.current_id = max(self._keys)

    @classmethod
    def single(cls, purpose: str, key: bytes, key_id: int = 1) -> KeyRing:
        """A ring of one key (tests, tools)."""
        return cls(purpose, {key_id: key})

    @property
    def key_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self._keys))

    def file_name(self, key_id: int) -> str:
        return ring_file_name(self.purpose, key_id)

    def key(self, key_id: int) -> bytes:
        """The key with this id; :class:`MissingKeyError` naming its file when absent."""
        try:
            return self._keys[key_id]
        except KeyError:
            where = self.folder / self.file_name(key_id) if self.folder else self.file_name(
                key_id)
            raise MissingKeyError(
                f"data sealed with {self.purpose} key id {key_id}, which is not loaded: "
                f"restore {where} from the key backup") from None

    def header(self, key_id: int | None = None) -> bytes:
        return SEALED_HEADER.pack(SEALED_VERSION,
                                  self.current_id if key_id is None else key_id)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """``header | nonce | AES-256-GCM(plaintext, aad)`` under the newest key."""
        nonce = os.urandom(NONCE_BYTES)
        return (self.header() + nonce
                + AESGCM(self._keys[self.current_id]).encrypt(nonce, plaintext, aad))

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """Decrypt a value sealed by :meth:`seal` (any key id of this ring).

        Raises
        ------
        KeyFileError
            Not a sealed value of this format.
        MissingKeyError
            Its key id is not in the ring.
        cryptography.exceptions.InvalidTag
            Wrong key, or the value or its associated data was altered.
        """
        key_id = sealed_key_id(sealed)
        start = SEALED_HEADER.size
        nonce = sealed[start:start + NONCE_BYTES]
        return AESGCM(self.key(key_id)).decrypt(nonce, sealed[start + NONCE_BYTES:], aad)


def sealed_key_id(sealed: bytes) -> int:
    """The key id a sealed value names."""
    if len(sealed) < SEALED_HEADER.size + NONCE_BYTES + 16:
        raise KeyFileError("sealed value too short")
    version, key_id = SEALED_HEADER.unpack_from(sealed)
    if version != SEALED_VERSION:
        raise KeyFileError(f"sealed value of unknown format version {version}")
    return key_id


def ring_file_name(purpose: str, key_id: int) -> str:
    return f"{purpose}-{key_id:04d}.key"


# -- the key folder -----------------------------------------------------------------------------

class KeyFolder:
    """The key folder (``[keys] dir``): loads, lists and creates the node's key files.

    Parameters
    ----------
    path
        The folder. It must not lie inside the data folder (the configuration checks it).
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def uid_secret_path(self) -> Path:
        return self.path / f"{UID_SECRET}.key"

    def ring_path(self, purpose: str, key_id: int) -> Path:
        return self.path / ring_file_name(purpose, key_id)

    def ring_ids(self, purpose: str) -> list[int]:
        """Key ids of ``purpose`` that have a file, ascending."""
        if not self.path.is_dir():
            return []
        ids = []
        for entry in self.path.iterdir():
            match = _RING_FILE.match(entry.name)
            if match and match.group(1) == purpose:
                ids.append(int(match.group(2)))
        return sorted(ids)

    def expected_files(self, purposes: Iterable[str]) -> list[Path]:
        """The files the purposes need (a ring's newest or, when none, its first key)."""
        out = []
        for purpose in purposes:
            if purpose == UID_SECRET:
                out.append(self.uid_secret_path())
            else:
                ids = self.ring_ids(purpose)
                out.append(self.ring_path(purpose, ids[-1] if ids else 1))
        return out

    def missing(self, purposes: Iterable[str]) -> list[Path]:
        """Files of ``purposes`` not present (a ring is missing when it has no key at all)."""
        return [p for p in self.expected_files(purposes) if not p.exists()]

    def uid_secret(self) -> bytes:
        return read_key(self.uid_secret_path())

    def ring(self, purpose: str) -> KeyRing:
        ids = self.ring_ids(purpose)
        if not ids:
            raise MissingKeyError(f"{self.ring_path(purpose, 1)}: missing")
        return KeyRing(purpose, {i: read_key(self.ring_path(purpose, i)) for i in ids},
                       self.path)

    def create(self, purposes: Iterable[str]) -> list[Path]:
        """Create the missing keys of ``purposes`` (mode 0600); returns the files created."""
        created = []
        for path in self.missing(purposes):
            load_or_create_key(path)
            created.append(path)
        return created

    def add_ring_key(self, purpose: str) -> int:
        """A new, newest key for ``purpose`` (rotation); returns its id."""
        ids = self.ring_ids(purpose)
        key_id = (ids[-1] + 1) if ids else 1
        path = self.ring_path(purpose, key_id)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, flags, 0o600)
        try:
            os.write(fd, secrets.token_bytes(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(self.path)
        return key_id

    def import_legacy(self, legacy: Path) -> list[str]:
        """Move the keys of an installation from before the split out of ``legacy``.

        ``legacy/uid-secret.key`` becomes ``uid-secret.key``; ``legacy/vault.key`` (which sealed
        both the vault and the quarantine) becomes ``vault-0000.key`` and
        ``quarantine-0000.key``. Files are copied and fsync'd before the old ones are removed.
        Returns what was done, one line per file.
        """
        done = []
        plan = []
        secret = legacy / "uid-secret.key"
        if secret.exists():
            plan.append((secret, [self.uid_secret_path()]))
        vault = legacy / "vault.key"
        if vault.exists():
            plan.append((vault, [self.ring_path(VAULT, LEGACY_KEY_ID),
                                 self.ring_path(QUARANTINE, LEGACY_KEY_ID)]))
        for source, targets in plan:
            key = read_key(source)
            for target in targets:
                if target.exists():
                    if read_key(target) != key:
                        raise KeyFileError(f"{target} exists and differs from {source}; "
                                           "resolve by hand (keep both until you know which "
                                           "one the data needs)")
                    continue
                self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(fd, key)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                _fsync_dir(self.path)
                done.append(f"{source} -> {target}")
        for source, _ in plan:
            source.unlink()
        if legacy.is_dir() and not any(legacy.iterdir()):
            shutil.rmtree(legacy)
        return done


def legacy_key_files(data_dir: Path) -> list[Path]:
    """Key files of an installation from before the split, still inside the data folder."""
    folder = Path(data_dir) / "keys"
    return [folder / name for name in LEGACY_FILES if (folder / name).exists()]


# Tables whose rows cannot be used (or would be silently broken) without the existing keys.
_DATA_TABLES = {"vault_studies": "vault rows", "vault_uids": "vault rows",
                "studies": "indexed studies", "quarantine": "quarantined instances"}


def existing_data(db: Database, data_dir: Path) -> list[str]:
    """What this installation already holds that its keys protect or key; empty when fresh."""
    found: list[str] = []
    with db.engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
        for table, label in _DATA_TABLES.items():
            if table in tables and label not in found and connection.execute(
                    text(f"SELECT 1 FROM {table} LIMIT 1")).first() is not None:  # noqa: S608
                found.append(label)
    for folder in ("studies", "quarantine", "results"):
        path = Path(data_dir) / folder
        if path.is_dir() and any(path.iterdir()):
            found.append(f"files under {path}")
    return found


def prepare_keys(folder: KeyFolder, purposes: Iterable[str], *, db: Database, data_dir: Path,
                 may_create: bool) -> list[Path]:
    """Make sure the keys of ``purposes`` are there; create them only on a fresh installation.

    Parameters
    ----------
    folder
        The key folder.
    purposes
        What this process needs (a worker needs only the UID secret).
    db, data_dir
        Looked at for existing data when a key is missing.
    may_create
        Whether this process may create keys (``serve`` and ``init-keys``; never a worker,
        which would create a secret no other machine has).

    Returns
    -------
    list of Path
        The key files created (empty when all were there).

    Raises
    ------
    MissingKeyError
        A key is missing and the installation holds data (or this process may not create
        keys). The message names every file to restore and what data needs it.
    """
    purposes = list(purposes)
    legacy = legacy_key_files(data_dir)
    if legacy:
        raise KeyFileError(
            f"key files inside the data folder ({', '.join(map(str, legacy))}): any copy of the "
            f"data folder would carry its own key. Run 'dicom-node init-keys' (same --config) "
            f"to move them to the key folder {folder.path}")
    missing = folder.missing(purposes)
    if not missing:
        return []
    names = ", ".join(map(str, missing))
    data = existing_data(db, data_dir)
    if data:
        raise MissingKeyError(
            f"missing key file(s) {names}, but this installation already holds "
            f"{', '.join(data)}; a new key would make them unreadable or change every "
            "pseudonym. Restore the file(s) from the key backup (docs/operations-backup.md) "
            "and start again.")
    if not may_create:
        raise MissingKeyError(
            f"missing key file(s) {names}; this process never creates keys. Run 'dicom-node "
            "init-keys' (or start 'dicom-node serve' once) on the receiving host, then copy "
            "the file(s) here.")
    # Fresh installation: every purpose gets its key at once, so they start out together.
    return folder.create(PURPOSES)
