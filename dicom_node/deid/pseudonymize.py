"""Pseudonymize one received instance: PS3.15 Basic Profile + options, keyed pseudonyms.

Pure: no database, no files, no logging of values. The receiver stores
:attr:`PseudonymizedInstance.uid_mappings` and :attr:`PseudonymizedInstance.identity` in the
vault, in the same transaction as its index rows.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from dicom_node.config import DeidSettings
from dicom_node.deid.profile import (
    ActionContext,
    Profile,
    options_from_settings,
    parse_private_allowlist,
)
from dicom_node.deid.scrub import Scrubber, ScrubContext
from dicom_node.deid.uids import CLASS_UID_TAGS, UidMapper, is_well_known
from dicom_node.elements import decode_un, vr_of
from dicom_node.part10 import write_data_set
from storage.vault import OriginalIdentity

__all__ = ["OriginalIdentity", "PseudonymizedInstance", "Pseudonymizer", "QuarantineRequired",
           "IDENTITY_TAGS", "PATIENT_MODULE_TAGS", "GENERAL_STUDY_MODULE_TAGS"]

SPECIFIC_CHARACTER_SET = 0x00080005

# PS3.3 C.7.1.1 Patient Module.
PATIENT_MODULE_TAGS = frozenset({
    0x00100010, 0x00100020, 0x00100021, 0x00100022, 0x00100024, 0x00100026, 0x00100027,
    0x00100028, 0x00100030, 0x00100032, 0x00100033, 0x00100034, 0x00100035, 0x00100040,
    0x00100200, 0x00100212, 0x00100213, 0x00100214, 0x00100215, 0x00100216, 0x00100217,
    0x00100218, 0x00100219, 0x00100221, 0x00100222, 0x00100223, 0x00100229, 0x00101000,
    0x00101002, 0x00101001, 0x00102160, 0x00102201, 0x00102202, 0x00102292, 0x00102293,
    0x00102294, 0x00102295, 0x00102296, 0x00102297, 0x00102298, 0x00102299, 0x00104000,
    0x00120062, 0x00120063, 0x00120064, 0x00081120, 0x00101100,
})
# PS3.3 C.7.2.1 General Study Module.
GENERAL_STUDY_MODULE_TAGS = frozenset({
    0x0020000D, 0x00080020, 0x00080030, 0x00080090, 0x00080096, 0x0008009C, 0x0008009D,
    0x00200010, 0x00080050, 0x00080051, 0x00081030, 0x00081048, 0x00081049, 0x00081060,
    0x00081062, 0x00321034, 0x00081110, 0x00081032, 0x00401012,
})
IDENTITY_TAGS = PATIENT_MODULE_TAGS | GENERAL_STUDY_MODULE_TAGS | {SPECIFIC_CHARACTER_SET}

# SOP classes whose pixels carry text as a rule and have no clean-pixel rule here: always
# quarantined. (Secondary Capture family, encapsulated documents, VL photographs and video.)
ALWAYS_QUARANTINE = {
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.1": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.2": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.3": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.4": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.104.1": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.104.2": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.104.3": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.104.4": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.104.5": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.77.1.1.1": "video",
    "1.2.840.10008.5.1.4.1.1.77.1.2.1": "video",
    "1.2.840.10008.5.1.4.1.1.77.1.4.1": "video",
    "1.2.840.10008.5.1.4.1.1.77.1.4": "photograph",
}
# Quarantined unless the sender states BurnedInAnnotation NO (ultrasound screens carry names).
QUARANTINE_UNLESS_NO = {
    "1.2.840.10008.5.1.4.1.1.6.1": "ultrasound",
    "1.2.840.10008.5.1.4.1.1.3.1": "ultrasound",
    "1.2.840.10008.5.1.4.1.1.6.2": "ultrasound",
}

METHOD_PREFIX = "AINODE PS3.15 E.1-1"


class QuarantineRequired(Exception):
    """The instance may carry identity in its pixels; keep it aside, never process it.

    Attributes
    ----------
    code
        Short machine-readable reason (``burned-in-annotation``, ``sop-class``).
    reason
        Human-readable reason. It names the attribute or class, never a value of the instance.
    """

    def __init__(self, code: str, reason: str):
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass
class PseudonymizedInstance:
    """One de-identified instance and what the vault must store for it.

    Attributes
    ----------
    dataset
        The de-identified dataset (the input object, modified in place).
    uid_mappings
        ``{pseudonymous UID: original UID}`` for every UID replaced, file meta included.
    identity
        The study's original identity (encrypted by the vault, never logged).
    """

    dataset: Dataset
    uid_mappings: dict[str, str] = field(default_factory=dict)
    identity: OriginalIdentity | None = None


class Pseudonymizer:
    """PS3.15 Basic Application Level Confidentiality Profile with the deployment's options.

    Parameters
    ----------
    settings
        The ``[deid]`` section of the configuration.
    uid_secret
        The site secret that keys every pseudonym (UIDs, patient ID/name, date shift).
    """

    def __init__(self, settings: DeidSettings, uid_secret: bytes):
        self.settings = settings
        self.mapper = UidMapper(uid_secret)
        self.profile = Profile(options_from_settings(settings))
        self.allowlist = parse_private_allowlist(settings.private_tag_allowlist)
        self.scrubber = Scrubber(settings.scrub_words)
        self._scrub_contexts: ScrubContextMemo = {}
        self.shift_dates = settings.retain_longitudinal_modified_dates
        codes = [("113100", "Basic Application Confidentiality Profile"),
                 *self.profile.option_codes()]
        self.method_codes = codes
        self._method_code_elements = [
            (code, (DataElement(0x00080100, "SH", code), DataElement(0x00080102, "SH", "DCM"),
                    DataElement(0x00080104, "LO", meaning)))
            for code, meaning in codes]
        self.method_text = _method_values(METHOD_PREFIX, [c for c, _ in codes])

    def check_pixels(self, ds: Dataset) -> None:
        """Raise :class:`QuarantineRequired` when pixels may show identifying text."""
        sop_class = str(ds.get("SOPClassUID", "") or "")
        burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
        if burned == "YES":
            raise QuarantineRequired("burned-in-annotation",
                                     "Burned In Annotation (0028,0301) is YES")
        if sop_class in ALWAYS_QUARANTINE:
            raise QuarantineRequired(
                "sop-class", f"{ALWAYS_QUARANTINE[sop_class]} SOP class {sop_class} may carry "
                "identifying text in its content")
        if sop_class in QUARANTINE_UNLESS_NO and burned != "NO":
            raise QuarantineRequired(
                "sop-class", f"{QUARANTINE_UNLESS_NO[sop_class]} SOP class {sop_class} without "
                "Burned In Annotation (0028,0301) NO")

    def pseudonymize(self, ds: Dataset) -> PseudonymizedInstance:
        """De-identify ``ds`` in place.

        Raises
        ------
        QuarantineRequired
            When the pixels may carry identity (see :meth:`check_pixels`).
        """
        decode_un_tree(ds)  # before anything reads it: a UN-encoded name is still a name
        self.check_pixels(ds)
        patient_id = str(ds.get("PatientID", "") or "").strip()
        study_uid = str(ds.get("StudyInstanceUID", "") or "").strip()
        # The pseudonym and date shift follow the patient; without a patient ID the study
        # stands in, so unrelated ID-less studies do not share one pseudonym.
        patient_key = f"pid:{patient_id}" if patient_id else f"study:{study_uid}"
        payload = identity_payload(ds)
        offset = (self.mapper.date_offset_days(patient_key, self.settings.date_shift_max_days)
                  if self.shift_dates else None)
        ctx = ActionContext(pseudo_uid=self.mapper.pseudo_uid, date_offset_days=offset,
                            scrub=scrub_context(ds, self._scrub_contexts),
                            scrubber=self.scrubber,
                            private_allowlist=self.allowlist)

        self.profile.apply(ds, ctx)
        meta = getattr(ds, "file_meta", None)
        if meta is not None and meta.get("MediaStorageSOPInstanceUID"):
            original = str(meta.MediaStorageSOPInstanceUID)
            pseudo = self.mapper.pseudo_uid(original)
            if pseudo != original:
                ctx.uid_mappings[pseudo] = original
            meta.MediaStorageSOPInstanceUID = pseudo

        pseudo_id = self.mapper.pseudo_patient_id(patient_key)
        ds.PatientID = pseudo_id
        ds.PatientName = self.mapper.pseudo_patient_name(patient_key)
        self._mark(ds, offset)
        pseudo_study = self.mapper.pseudo_uid(study_uid) if study_uid else ""
        identity = OriginalIdentity(pseudo_patient_id=pseudo_id, pseudo_study_uid=pseudo_study,
                                    payload=payload, date_offset_days=offset or 0)
        return PseudonymizedInstance(ds, ctx.uid_mappings, identity if pseudo_study else None)

    def _mark(self, ds: Dataset, offset: int | None) -> None:
        ds.PatientIdentityRemoved = "YES"
        previous = ds.get(Tag("DeidentificationMethod"))  # a Tag key returns the element
        values = [] if previous is None or not previous.value else (
            list(previous.value) if previous.VM > 1 else [str(previous.value)])
        ds.DeidentificationMethod = values + self.method_text
        items = list(ds.get("DeidentificationMethodCodeSequence", None) or [])
        have = {(str(i.get("CodeValue", "")), str(i.get("CodingSchemeDesignator", "")))
                for i in items}
        for code, elements in self._method_code_elements:
            if (code, "DCM") not in have:
                # A new item of elements made once: they are only ever written, never changed.
                items.append(Dataset({elem.tag: elem for elem in elements}))
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if offset is not None \
            else "REMOVED"


def _method_values(prefix: str, codes: list[str]) -> list[str]:
    """De-identification Method text, split into LO values of at most 64 characters."""
    values, current = [], prefix
    for code in codes:
        if len(current) + 1 + len(code) > 64:
            values.append(current)
            current = prefix
        current += " " + code
    values.append(current)
    return values


# Identifying strings cut out of kept descriptors wherever they appear (any depth).
_IDENTIFIER_TAGS = frozenset(int(Tag(k)) for k in (
    "PatientID", "OtherPatientIDs", "AccessionNumber", "PatientBirthDate", "StudyID",
    "AdmissionID", "PatientAddress", "MedicalRecordLocator", "PatientTelephoneNumbers",
    "RequestedProcedureID", "ScheduledProcedureStepID", "PerformedProcedureStepID",
    "PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "IssuerOfPatientID", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
))
_NAME_SPLIT = re.compile(r"[^\W_]+")


def decode_un_tree(ds: Dataset) -> None:
    """Read every UN element of a known public tag under its dictionary VR, at every depth."""
    elements = ds._dict  # as get_item(keep_deferred=True): no deferred value is read
    for tag in list(ds.keys()):  # keys, not elements(): that would read deferred values
        if (tag >> 16) % 2 or tag & 0xFFFF == 0:
            continue
        vr = elements[tag].VR
        if vr and vr not in ("UN", "SQ"):
            continue  # decode_un would return this VR and change nothing
        if decode_un(ds, tag) == "SQ":
            try:
                items = list(ds[tag].value or ())
            except Exception:  # noqa: BLE001 - any parse error: the sequence cannot be checked
                del ds[tag]  # fail closed: nothing of an unreadable sequence survives
                continue
            for item in items:
                decode_un_tree(item)


# What the undecoded names, identifiers and sequences of a data set add to its scrub context,
# keyed by their bytes: every slice of a series repeats them (its UIDs are collected afresh).
ScrubContextMemo = dict[tuple, tuple[frozenset[str], frozenset[str]]]
_MEMO_ENTRIES = 10_000


def scrub_context(ds: Dataset, memo: ScrubContextMemo | None = None) -> ScrubContext:
    """Every part of every person name and the identifiers of ``ds``, at every depth.

    Name parts are kept whatever their length ("Li", "Al"); private elements count when their
    VR is explicit. Bulk data is not decoded.  With ``memo``, what the still undecoded
    top-level elements other than UIDs add is looked up by their bytes, their VRs, the data
    set's encoding and character set (everything their decoding depends on), and stored
    there when new.
    """
    names: set[str] = set()
    identifiers: set[str] = set()
    if memo is None:
        _collect(ds, names, identifiers)
        return ScrubContext(frozenset(names), frozenset(identifiers))
    as_read: list[tuple[int, str, bytes]] = []
    decoded: list[tuple[int, str]] = []
    for tag, vr, raw in _relevant(ds):
        if vr != "UI" and type(raw) is RawDataElement and isinstance(raw.value, bytes):
            as_read.append((tag, vr, raw.value))
        else:
            decoded.append((tag, vr))
    key = (ds.original_encoding, tuple(ds._character_set), tuple(as_read))
    known = memo.get(key)
    if known is None:
        found_names: set[str] = set()
        found_identifiers: set[str] = set()
        for tag, vr, _ in as_read:
            _collect_element(ds, tag, vr, found_names, found_identifiers)
        known = (frozenset(found_names), frozenset(found_identifiers))
        if len(memo) >= _MEMO_ENTRIES:
            memo.clear()
        memo[key] = known
    names.update(known[0])
    identifiers.update(known[1])
    for tag, vr in decoded:
        _collect_element(ds, tag, vr, names, identifiers)
    return ScrubContext(frozenset(names), frozenset(identifiers))


def _relevant(ds: Dataset) -> list[tuple[int, str, DataElement | RawDataElement]]:
    """(tag, VR, element as stored) of the names, sequences, UIDs and identifiers of ``ds``."""
    elements = ds._dict
    found = []
    for key in list(ds.keys()):
        tag = int(key)
        raw = elements[key]  # as get_item(keep_deferred=True): a deferred value is not read
        vr = vr_of(tag, raw.VR)
        if vr in ("PN", "SQ", "UI") or tag in _IDENTIFIER_TAGS:
            found.append((tag, vr, raw))
    return found


def _collect(ds: Dataset, names: set[str], identifiers: set[str]) -> None:
    for tag, vr, _ in _relevant(ds):
        _collect_element(ds, tag, vr, names, identifiers)


def _collect_element(ds: Dataset, tag: int, vr: str, names: set[str],
                     identifiers: set[str]) -> None:
    """Add the name parts and identifiers of one element of ``ds`` (of VR ``vr``)."""
    try:
        elem = ds[tag]
    except (ValueError, TypeError, KeyError):
        return  # undecodable: the profile removes or replaces it anyway
    if vr == "SQ" and elem.VR == "SQ":
        for item in elem.value or ():
            _collect(item, names, identifiers)
        return
    value = elem.value
    if value is None or isinstance(value, bytes | bytearray):
        return
    values = value if isinstance(value, MultiValue | list) else [value]
    for one in values:
        text = str(one).strip()
        if vr == "PN":
            names.update(w.lower() for w in _NAME_SPLIT.findall(text))
        elif vr == "UI":
            if len(text) >= 8 and not is_well_known(text) and tag not in CLASS_UID_TAGS:
                identifiers.add(text.lower())  # an original UID copied into text
        elif text:
            identifiers.add(text.lower())
            identifiers.update(w.lower() for w in text.split() if len(w) >= 4)


def identity_payload(ds: Dataset) -> bytes:
    """The instance's Patient and General Study module attributes as raw DICOM bytes.

    Elements still undecoded (read from a file) are copied byte for byte, so names in any
    Specific Character Set (ISO_IR 192, ISO_IR 100, ISO 2022 IR 87, ...) survive exactly. The
    payload is Explicit VR Little Endian data elements, without preamble or file meta.
    """
    out = Dataset()
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset yields elements
        t = int(tag)
        if t not in IDENTITY_TAGS:
            continue
        elem = ds.get_item(tag)
        if isinstance(elem, RawDataElement) and elem.is_little_endian:
            vr = vr_of(t, elem.VR)
            if vr != "SQ" and elem.length != 0xFFFFFFFF:
                out[tag] = RawDataElement(elem.tag, vr, elem.length, elem.value, 0,
                                          False, True)
                continue
        elem = ds[tag]
        # Only written, never changed: a decoded value is shared, a sequence (whose items
        # pydicom adjusts when it joins another data set) is copied.
        out[tag] = copy.deepcopy(elem) if elem.VR == "SQ" else elem
    # Same encoding and charset as the raw elements: the writer then copies them verbatim.
    out.set_original_encoding(False, True, out._character_set)
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_data_set(buffer, out)  # the bytes pydicom's write_dataset writes, faster
    return buffer.getvalue()

