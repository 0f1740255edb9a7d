"""Defect 3a: elements that arrive as UN skipped every rule and were written back under their
real VR. A UN-encoded Request Attributes Sequence kept the accession number, the requested
procedure ID and the original study UID."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from dicom_node.config import DeidSettings
from dicom_node.deid import Pseudonymizer
from tests.security.deid_encoding import (
    deidentified_bytes,
    elements_of,
    implicit_value,
    part10,
    read,
    un_element,
    un_of,
)

SECRET = b"security-test-site-secret-012345"
SOP_UID = "1.2.826.0.1.3680043.10.999.7.1"
STUDY_UID = "1.2.826.0.1.3680043.10.999.7.2"
ACCESSION = "ACCQX48213"
PROCEDURE_ID = "RPQZ77120"


def _base() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = SOP_UID
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.999.7.3"
    ds.PatientID = "PIDQX5521"
    ds.PatientName = "Quorvex^Hilda"
    ds.Modality = "CT"
    return ds


def _request_attributes(padding: int = 0) -> Dataset:
    item = Dataset()
    item.AccessionNumber = ACCESSION
    item.RequestedProcedureID = PROCEDURE_ID
    item.StudyInstanceUID = STUDY_UID
    item.ScheduledProcedureStepID = "SPSQX9931"
    if padding:
        item.RequestedProcedureDescription = "x" * 64
        item.add_new(0x00400602, "UT", "y" * padding)  # Specimen Detailed Description
    holder = Dataset()
    holder.RequestAttributesSequence = Sequence([item])
    return holder


def _pseudonymizer() -> Pseudonymizer:
    return Pseudonymizer(DeidSettings(), SECRET)


def test_un_encoded_request_attributes_lose_their_identifiers(tmp_path: Path) -> None:
    elements = elements_of(_base()) + [un_of(_request_attributes())]
    data = part10(elements, CTImageStorage, SOP_UID)
    assert ACCESSION.encode() in data and b"UN" in data
    out = deidentified_bytes(_pseudonymizer(), read(data, tmp_path))
    for secret in (ACCESSION, PROCEDURE_ID, STUDY_UID, "SPSQX9931"):
        assert secret.encode() not in out, secret


def test_un_sequence_walked_and_uids_remapped(tmp_path: Path) -> None:
    data = part10(elements_of(_base()) + [un_of(_request_attributes())], CTImageStorage,
                  SOP_UID)
    clean = _pseudonymizer().pseudonymize(read(data, tmp_path)).dataset
    seq = clean[0x00400275]
    assert seq.VR == "SQ"  # read under its dictionary VR, then walked (Clean Descriptors)
    item = seq.value[0]
    assert str(item.StudyInstanceUID).startswith("2.25.")
    assert str(item.StudyInstanceUID) == str(clean.StudyInstanceUID)
    assert not item.get("AccessionNumber")  # Basic Profile Z


def test_un_value_over_64_kib_is_decoded_too(tmp_path: Path) -> None:
    # pydicom's own UN replacement stops at 64 KiB; the node's does not.
    data = part10(elements_of(_base()) + [un_of(_request_attributes(padding=70_000))],
                  CTImageStorage, SOP_UID)
    out = deidentified_bytes(_pseudonymizer(), read(data, tmp_path))
    for secret in (ACCESSION, PROCEDURE_ID, STUDY_UID):
        assert secret.encode() not in out, secret


def test_un_encoded_text_and_names(tmp_path: Path) -> None:
    names = Dataset()
    names.OtherPatientNames = "Brimwell^Oskar"
    series = Dataset()
    series.SeriesDescription = "Thorax Brimwell"
    birth = Dataset()
    birth.PatientBirthDate = "19610412"
    elements = elements_of(_base()) + [un_of(names), un_of(series), un_of(birth)]
    data = part10(elements, CTImageStorage, SOP_UID)
    clean = _pseudonymizer().pseudonymize(read(data, tmp_path)).dataset
    out = deidentified_bytes(_pseudonymizer(), read(data, tmp_path))
    assert b"Brimwell" not in out and b"19610412" not in out
    assert clean.SeriesDescription == "Thorax"  # kept, scrubbed of the UN-encoded name


def test_unknown_un_elements_removed(tmp_path: Path) -> None:
    unknown_public = 0x00101FF0  # not in the data dictionary
    private = 0x00091010
    creator = Dataset()
    creator.add_new(0x00090010, "LO", "ACME 1.0")
    elements = elements_of(_base()) + elements_of(creator) + [
        (unknown_public, un_element(unknown_public, b"PIDQX5521 ")),
        (private, un_element(private, b"Quorvex ")),
        (0x00211001, un_element(0x00211001, implicit_value(_request_attributes())[8:])),
    ]
    data = part10(elements, CTImageStorage, SOP_UID)
    clean = _pseudonymizer().pseudonymize(read(data, tmp_path)).dataset
    assert unknown_public not in clean and private not in clean and 0x00211001 not in clean
    out = deidentified_bytes(_pseudonymizer(), read(data, tmp_path))
    assert b"PIDQX5521" not in out and b"Quorvex" not in out and ACCESSION.encode() not in out


def test_undefined_length_un_sequence(tmp_path: Path) -> None:
    item = Dataset()
    item.AccessionNumber = ACCESSION
    item.StudyInstanceUID = STUDY_UID
    encoded_item = implicit_value(item)
    value = (b"\xfe\xff\x00\xe0" + b"\xff\xff\xff\xff" + encoded_item
             + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    elements = elements_of(_base()) + [
        (0x00400275, un_element(0x00400275, value, undefined_length=True))]
    data = part10(elements, CTImageStorage, SOP_UID)
    out = deidentified_bytes(_pseudonymizer(), read(data, tmp_path))
    assert ACCESSION.encode() not in out and STUDY_UID.encode() not in out


def test_unreadable_un_sequence_removed(tmp_path: Path) -> None:
    garbage = b"\xfe\xff\x00\xe0\x10\x00\x00\x00" + b"ACCQX48213\x00\x00\x07"
    elements = elements_of(_base()) + [(0x00400275, un_element(0x00400275, garbage))]
    data = part10(elements, CTImageStorage, SOP_UID)
    out = deidentified_bytes(_pseudonymizer(), read(data, tmp_path))
    assert ACCESSION.encode() not in out
