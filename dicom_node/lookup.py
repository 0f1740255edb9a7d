"""Finding pseudonymous studies by the identifiers a hospital knows (accession number,
patient ID, study date), through the encrypted vault.  Every lookup is audited with the kind
of identifier and the studies found, never the identifier itself."""

from __future__ import annotations

from dataclasses import dataclass

from dicom_node.deid.reidentify import decode_payload
from storage.vault import Vault

KINDS = ("accession", "patient-id", "study-date")
_KEYWORD = {"accession": "AccessionNumber", "patient-id": "PatientID", "study-date": "StudyDate"}


@dataclass(frozen=True)
class FoundStudy:
    study_uid: str  # pseudonymous
    patient_pseudonym: str


def find_studies(vault: Vault, kind: str, value: str) -> list[FoundStudy]:
    """Studies whose original ``kind`` (accession, patient-id or study-date) equals ``value``.

    Each identity is decrypted in memory and compared; nothing is written or logged.
    """
    if kind not in _KEYWORD:
        raise ValueError(f"lookup by {kind!r} is not supported; use one of {', '.join(KINDS)}")
    wanted = value.strip()
    found = []
    for study_uid in vault.study_uids():
        # Every identity revision: a study is found by its accession number before and
        # after a correction.
        for identity in vault.identities_for_study(study_uid):
            original = decode_payload(identity.payload)
            recorded = original.get(_KEYWORD[kind])  # decoded in the payload's character set
            if recorded is not None and str(recorded).strip() == wanted:
                found.append(FoundStudy(study_uid, identity.pseudo_patient_id))
                break
    return found
