"""Leak checks run before anything leaves the node.

Problems name the attribute and the kind of identifier, never the value itself.
"""

from __future__ import annotations

import re

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicom_node.deid.reidentify import decode_payload
from dicom_node.elements import elements_with_vr
from storage.vault import OriginalIdentity, Vault

_PSEUDONYM = re.compile(r"ANON[-^][A-Z2-7]{10}")
# VRs that can carry an identifier.  DS and IS are left out: they are numbers by definition
# (a structure set holds a million contour coordinates), and a numeric accession number
# found inside a coordinate would be a false alarm, not a leak.
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR", "DA", "DT",
                       "TM", "AS", "UI"})
_WALKED_VRS = _TEXT_VRS | {"SQ"}


def _where(path: str, elem: DataElement) -> str:
    name = elem.keyword or "private or unknown attribute"
    return f"{path}({elem.tag.group:04X},{elem.tag.element:04X}) {name}"


def _walk(ds: Dataset, path: str = ""):  # noqa: ANN202 - generator of (where, element, values)
    for elem in elements_with_vr(ds, _WALKED_VRS):
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value or ()):
                yield from _walk(item, f"{path}{elem.keyword or elem.tag}[{index}]/")
            continue
        if elem.VR not in _TEXT_VRS or elem.value is None or elem.value == "":
            continue
        values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
        yield _where(path, elem), elem, [str(v) for v in values]


def _all_elements(ds: Dataset):  # noqa: ANN202
    yield from _walk(ds)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        yield from _walk(meta, "file meta/")


def check_clinical(ds: Dataset, vault: Vault) -> list[str]:
    """Problems of a re-identified result: any pseudonym still in it.

    Looks for pseudonymous UIDs known to the vault, pseudonymous patient IDs known to the vault,
    and anything shaped like the node's patient pseudonyms (``ANON-``/``ANON^`` + 10 chars).
    """
    entries = list(_all_elements(ds))
    uis = {v for _, elem, values in entries if elem.VR == "UI" for v in values}
    strings = {v.strip() for _, elem, values in entries if elem.VR != "UI" for v in values}
    pseudo_uids = set(vault.original_uids(uis)) if uis else set()
    pseudo_ids = vault.known_pseudo_patient_ids(strings) if strings else set()
    problems = []
    for where, elem, values in entries:
        for value in values:
            if elem.VR == "UI" and value in pseudo_uids:
                problems.append(f"pseudonymous UID left in {where}")
            elif value.strip() in pseudo_ids or _PSEUDONYM.search(value):
                problems.append(f"patient pseudonym left in {where}")
    return problems


def _original_identifiers(identity: OriginalIdentity) -> dict[str, str]:
    """{identifying string: kind} from the vault payload (exact values, never reported)."""
    original = decode_payload(identity.payload)
    found: dict[str, str] = {}
    for keyword, kind in (("PatientName", "patient name"), ("OtherPatientNames", "patient name"),
                          ("PatientID", "patient ID"), ("OtherPatientIDs", "patient ID"),
                          ("PatientBirthDate", "birth date"),
                          ("AccessionNumber", "accession number"),
                          ("ReferringPhysicianName", "referring physician name"),
                          ("StudyInstanceUID", "original study UID")):
        if keyword not in original or not original[keyword].value:
            continue
        elem = original[keyword]
        values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
        for value in values:
            text = str(value).strip()
            if not text:
                continue
            found[text] = kind
            if elem.VR == "PN":
                for part in text.replace("=", "^").split("^"):
                    if len(part.strip()) >= 3:
                        found[part.strip()] = kind
    return found


def check_research(ds: Dataset, vault: Vault,
                   original_identity: OriginalIdentity | None = None) -> list[str]:
    """Problems of a pseudonymous result for a research destination: any original identifier.

    Parameters
    ----------
    ds
        The result as it would leave.
    vault
        The vault (original UIDs and identity of the result's study).
    original_identity
        The study's identity; looked up by the result's Study Instance UID when omitted.
    """
    problems: list[str] = []
    if original_identity is None:
        pseudo_study = str(ds.get("StudyInstanceUID", "") or "")
        original_identity = vault.identity_for_study(pseudo_study) if pseudo_study else None
        if original_identity is None:
            return ["the result's Study Instance UID is not a pseudonymous study in the vault"]
    # Every identity revision of the study: an identifier corrected since still identifies.
    identifiers = _original_identifiers(original_identity)
    for revision in vault.identities_for_study(original_identity.pseudo_study_uid):
        for ident, kind in _original_identifiers(revision).items():
            identifiers.setdefault(ident, kind)
    original_uids = vault.original_uids_for_study(original_identity.pseudo_study_uid)
    for where, elem, values in _all_elements(ds):
        for value in values:
            text = value.strip()
            if elem.VR == "UI":
                if text in original_uids or identifiers.get(text) == "original study UID":
                    problems.append(f"original UID in {where}")
                continue
            for ident, kind in identifiers.items():
                if ident == text or (len(ident) >= 3 and ident in text):
                    problems.append(f"original {kind} in {where}")
                    break
    return problems
