"""Key files: created once with mode 0600, refused when anyone else could read them."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


class KeyFileError(Exception):
    """A key file that must not be used (wrong permissions, wrong length, not a file)."""


def load_or_create_key(path: Path, nbytes: int = 32) -> bytes:
    """The key in ``path``; on first start, a new random key written there with mode 0600.

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
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return _read_key(path, nbytes)
    try:
        key = secrets.token_bytes(nbytes)
        os.write(fd, key)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return key


def _read_key(path: Path, nbytes: int) -> bytes:
    info = path.lstat()
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
