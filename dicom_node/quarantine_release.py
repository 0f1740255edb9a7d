"""An operator's release of a quarantined instance: it goes on through the normal path.

Every quarantine reason today is a judgement about *content* the de-identifier cannot clean
(:meth:`dicom_node.deid.Pseudonymizer.check_pixels`): ``burned-in-annotation`` (the sender
states Burned In Annotation YES) and ``sop-class`` (secondary captures, photographs, video,
encapsulated documents, and ultrasound not stating Burned In Annotation NO).  A person who has
looked at the instance can decide that its content carries no identity; both are releasable.
Nothing else is overridden by a release: the instance is de-identified by the same
pseudonymizer as at the door, checked for the *other* reasons (an ultrasound stating Burned In
Annotation YES has both; releasing one leaves the other), stored, indexed and recorded in the
vault exactly as a received instance, and its study then completes by the usual rule.  The
quarantined copy is deleted only after the instance is stored and indexed, so a refused or
failed release loses nothing.  Each release is audited with the operator, the reason code
overridden and the operator's stated reason.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_node.audit import AuditTrail
from dicom_node.config import NodeConfig
from dicom_node.deid import Pseudonymizer, QuarantineRequired
from dicom_node.deid.pseudonymize import decode_un_tree
from dicom_node.scp import CHECKED_UIDS, SUCCESS, Receiver
from storage import quarantine
from storage.database import Database
from storage.files import FileStore, is_valid_uid
from storage.keys import QUARANTINE, VAULT, KeyFolder
from storage.vault import Vault

log = logging.getLogger("dicom_node.quarantine")

# Reason code -> what the operator confirms by releasing it.
RELEASABLE = {
    "burned-in-annotation": "the pixels carry no identifying text despite Burned In "
                            "Annotation YES",
    "sop-class": "the content of this SOP class (secondary capture, photograph, video, "
                 "document, ultrasound screen) carries no identifying text",
}


class ReleaseRefused(Exception):
    """A release that was not done; the message says why (never a value of the instance).
    The quarantined copy is untouched."""


@dataclass(frozen=True)
class Released:
    quarantine_id: int
    overridden: str  # the reason code released
    study_uid: str  # pseudonymous
    patient_pseudonym: str
    sop_class_uid: str


class ReleasedPseudonymizer(Pseudonymizer):
    """The node's pseudonymizer with one quarantine reason overridden for one instance."""

    def __init__(self, base: Pseudonymizer, released: str):
        self.__dict__.update(base.__dict__)
        self.released = released

    def check_pixels(self, ds: Dataset) -> None:
        try:
            super().check_pixels(ds)
        except QuarantineRequired as q:
            if q.code != self.released:
                raise
            if q.code == "burned-in-annotation":
                # Checked first at the door; the SOP class rules still apply after it.
                probe = Dataset()
                probe.SOPClassUID = ds.get("SOPClassUID", "")
                super().check_pixels(probe)


def release(config: NodeConfig, db: Database, files: FileStore, keys: KeyFolder,
            quarantine_id: int, operator: str, why: str,
            audit: AuditTrail | None) -> Released:
    """De-identify, store and index a quarantined instance with its reason overridden.

    Raises
    ------
    ReleaseRefused
        Unknown id, a reason that is not releasable, an empty ``why``, a file that does not
        decrypt or parse, or de-identification that still fails for another reason.
    storage.keys.KeyFileError
        A key the release needs (UID secret, vault, quarantine) is missing.
    """
    if not why.strip():
        raise ReleaseRefused("a release needs --reason (why the operator lets it go on)")
    entry = quarantine.entry(db, quarantine_id)
    if entry is None:
        raise ReleaseRefused(f"no quarantined instance {quarantine_id}")
    if entry.reason_code not in RELEASABLE:
        raise ReleaseRefused(f"quarantined instance {quarantine_id}: reason "
                             f"{entry.reason_code!r} is not releasable")
    ring = keys.ring(QUARANTINE)
    pseudonymizer = ReleasedPseudonymizer(Pseudonymizer(config.deid, keys.uid_secret()),
                                          entry.reason_code)
    receiver = Receiver(config, db, files, pseudonymizer, Vault(db, keys.ring(VAULT)), ring)
    # The plaintext holds identities for the length of the release, inside the data folder
    # like a C-STORE's temporary file, readable by the node's user only.
    work = files.folder("release") / f"{quarantine_id}-{os.getpid()}.dcm"
    try:
        with open(os.open(work, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as sink:
            try:
                quarantine.open_into(files, ring, entry.path, sink)
            except quarantine.QuarantineError as exc:
                raise ReleaseRefused(f"quarantined instance {quarantine_id}: {exc}") from None
        try:
            ds = dcmread(work, defer_size="256 KB")
            sop_class = str(ds.SOPClassUID)
        except (InvalidDicomError, AttributeError, ValueError, EOFError, KeyError) as exc:
            raise ReleaseRefused(f"quarantined instance {quarantine_id} is not a readable "
                                 f"data set ({type(exc).__name__})") from None
        problem = _other_problem(pseudonymizer, ds)
        if problem:
            raise ReleaseRefused(f"quarantined instance {quarantine_id} not released: "
                                 f"{problem}; it stays quarantined")
        try:
            status = receiver.ingest(ds, entry.calling_ae)
        except Exception as exc:  # never a false release: the quarantined copy stays
            log.exception("release of quarantined instance %d failed", quarantine_id)
            raise ReleaseRefused(f"quarantined instance {quarantine_id} not released: "
                                 f"de-identification or storage failed "
                                 f"({type(exc).__name__}); it stays quarantined") from None
        if status != SUCCESS:
            raise ReleaseRefused(f"quarantined instance {quarantine_id} not released: status "
                                 f"0x{status:04X}; it stays quarantined")
    finally:
        work.unlink(missing_ok=True)
    # Stored, indexed and in the vault: only now does the quarantined copy go.
    quarantine.remove(db, files, quarantine_id)
    released = Released(quarantine_id, entry.reason_code, str(ds.StudyInstanceUID),
                        str(ds.get("PatientID", "")), sop_class)
    log.warning("quarantined instance %d released by %s (%s overridden) into study %s",
                quarantine_id, operator, entry.reason_code, released.study_uid)
    if audit is not None:
        audit.operator_action(operator, "quarantine release", released.study_uid,
                              f"instance {quarantine_id}, {entry.reason_code} overridden: "
                              f"{why}", patient_pseudonym=released.patient_pseudonym,
                              sop_classes={sop_class: 1})
    return released


def _other_problem(pseudonymizer: ReleasedPseudonymizer, ds: Dataset) -> str | None:
    """Why the instance still cannot go on, checked before anything is stored."""
    for keyword in CHECKED_UIDS:
        value = ds.get(keyword)
        if value is not None and not is_valid_uid(str(value)):
            return f"{keyword} is not a valid UID"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not ds.get(keyword):
            return f"{keyword} missing"
    decode_un_tree(ds)
    try:
        pseudonymizer.check_pixels(ds)
    except QuarantineRequired as q:
        return f"also quarantined for {q.code} ({q.reason})"
    return None
