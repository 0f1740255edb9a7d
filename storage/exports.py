"""Files the node hands to people outside it: the research export folder (features CSV).

The folder is meant to be shared with a research group through its group ownership (e.g. a
set-group-ID folder owned by the group, or a mounted share): files are written whole (a
temporary name, then renamed), readable by the owner and the folder's group only (0640), the
folder itself 0750 when the node creates it.  Names are built here from validated parts, never
from received text.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from storage.files import UnsafePath, is_valid_uid

_ENGINE = re.compile(r"[a-z][a-z0-9_]{0,63}")
FILE_MODE = 0o640
FOLDER_MODE = 0o750


def export_name(engine: str, study_uid: str, revision: int, job_id: int) -> str:
    """``<engine>_<study UID>_r<revision>_job<id>.csv``: one file per job, never overwritten
    by a later revision's job (a re-run gets its own file)."""
    if not _ENGINE.fullmatch(engine) or not is_valid_uid(study_uid):
        raise UnsafePath("export name from an invalid engine name or study UID")
    return f"{engine}_{study_uid}_r{int(revision)}_job{int(job_id)}.csv"


def write_export(folder: Path, name: str, text: str) -> Path:
    """Write ``text`` (UTF-8) as ``folder/name`` atomically, mode 0640; returns the path.

    Raises
    ------
    UnsafePath
        ``name`` is not a plain file name.
    OSError
        The folder cannot be created or written (the caller's job then fails and is retried).
    """
    if "/" in name or name.startswith(".") or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise UnsafePath("export file name")
    folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    final = folder / name
    tmp = folder / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # whatever the umask says
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    return final
