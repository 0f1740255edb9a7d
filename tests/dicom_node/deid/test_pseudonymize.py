"""Pseudonymizer: markers, quarantine, identity payload, charsets through vault and back."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
from pydicom import dcmread, dcmwrite
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from dicom_node.deid import QuarantineRequired
from dicom_node.deid.pseudonymize import IDENTITY_TAGS
from dicom_node.sample_data import PatientIdentity, ct_series_datasets


def _raw(ds: Dataset, tag: int):  # noqa: ANN202
    elem = ds.get_item(tag)
    return elem.value


def _ct(identity: PatientIdentity | None = None) -> list[Dataset]:
    return ct_series_datasets(np.zeros((3, 8, 8), np.float32), identity=identity)


def test_markers_and_codes(pseudonymizer) -> None:  # noqa: ANN001
    out = pseudonymizer.pseudonymize(_ct()[0]).dataset
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113105", "113107", "113108"]
    assert all(i.CodingSchemeDesignator == "DCM" for i in out.DeidentificationMethodCodeSequence)
    assert all(len(v) <= 64 for v in (out.DeidentificationMethod if out["DeidentificationMethod"]
                                      .VM > 1 else [out.DeidentificationMethod]))


def test_no_identifying_string_survives(pseudonymizer) -> None:  # noqa: ANN001
    identity = PatientIdentity()
    for ds in _ct(identity):
        buffer = io.BytesIO()
        dcmwrite(buffer, pseudonymizer.pseudonymize(ds).dataset, enforce_file_format=True)
        data = buffer.getvalue()
        for text in identity.identifying_strings + [identity.study_uid]:
            assert text.encode() not in data, "identifying value left in the output"


def test_same_patient_same_pseudonym_and_shift(pseudonymizer) -> None:  # noqa: ANN001
    a = pseudonymizer.pseudonymize(_ct(PatientIdentity(study_date="20260101"))[0])
    b = pseudonymizer.pseudonymize(_ct(PatientIdentity(study_date="20260111"))[0])
    assert a.dataset.PatientID == b.dataset.PatientID
    assert a.identity.date_offset_days == b.identity.date_offset_days < 0
    # Intervals survive the shift.
    from datetime import date
    da, db = (date.fromisoformat(x.dataset.StudyDate[:4] + "-" + x.dataset.StudyDate[4:6] + "-"
                                 + x.dataset.StudyDate[6:]) for x in (a, b))
    assert (db - da).days == 10
    assert a.dataset.StudyTime == "101500"  # times are not shifted


def test_file_meta_remapped(pseudonymizer) -> None:  # noqa: ANN001
    ds = _ct()[0]
    original = ds.SOPInstanceUID
    result = pseudonymizer.pseudonymize(ds)
    meta = result.dataset.file_meta
    assert meta.MediaStorageSOPInstanceUID == result.dataset.SOPInstanceUID != original
    assert result.uid_mappings[meta.MediaStorageSOPInstanceUID] == original
    assert meta.ImplementationClassUID == "1.2.826.0.1.3680043.8.498.1"


@pytest.mark.parametrize(("sop_class", "burned", "code"), [
    (CTImageStorage, "YES", "burned-in-annotation"),
    ("1.2.840.10008.5.1.4.1.1.7", "NO", "sop-class"),
    ("1.2.840.10008.5.1.4.1.1.104.1", None, "sop-class"),
    ("1.2.840.10008.5.1.4.1.1.77.1.4.1", None, "sop-class"),
    ("1.2.840.10008.5.1.4.1.1.6.1", None, "sop-class"),
])
def test_quarantine(pseudonymizer, sop_class, burned, code) -> None:  # noqa: ANN001
    ds = _ct(PatientIdentity(name="Secretname^X"))[0]
    ds.SOPClassUID = sop_class
    if burned is None:
        del ds.BurnedInAnnotation
    else:
        ds.BurnedInAnnotation = burned
    with pytest.raises(QuarantineRequired) as info:
        pseudonymizer.pseudonymize(ds)
    assert info.value.code == code
    assert "Secretname" not in str(info.value) and "PID" not in str(info.value)


def test_ultrasound_with_explicit_no_accepted(pseudonymizer) -> None:  # noqa: ANN001
    ds = _ct()[0]
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    ds.BurnedInAnnotation = "NO"
    assert pseudonymizer.pseudonymize(ds).dataset.PatientIdentityRemoved == "YES"


@pytest.mark.parametrize("name", ["chrX1.dcm", "chrGerm.dcm", "chrH31.dcm"])
def test_charset_round_trip_byte_for_byte(pseudonymizer, vault, reidentifier, name) -> None:  # noqa: ANN001
    """ISO_IR 192, ISO_IR 100 and ISO 2022 IR 87 names survive vault + reidentify exactly."""
    path = get_charset_files(name)[0]
    source = dcmread(path)
    source.SOPClassUID = CTImageStorage  # the samples are Secondary Capture (quarantined)
    raw_elements = [source.get_item(t) for t in source.keys()]  # noqa: SIM118
    raw_before = {int(e.tag): e.value for e in raw_elements
                  if int(e.tag) in IDENTITY_TAGS and e.VR != "SQ"}
    assert isinstance(raw_before[0x00100010], bytes)  # still undecoded: compare bytes
    assert 0x00100010 in raw_before and 0x00080005 in raw_before
    result = pseudonymizer.pseudonymize(copy.deepcopy(source))
    with vault.database.session() as session:
        vault.record(session, result.uid_mappings, result.identity)
    # Through a file, as the node stores it.
    buffer = io.BytesIO()
    dcmwrite(buffer, result.dataset, enforce_file_format=True)
    stored = dcmread(io.BytesIO(buffer.getvalue()))
    assert b"Yamada" not in buffer.getvalue() and b"Wang" not in buffer.getvalue()
    back = reidentifier.reidentify(stored)
    for tag, raw in raw_before.items():
        assert _raw(back, tag) == raw, f"({tag:08X}) not restored byte for byte"
    out = io.BytesIO()
    dcmwrite(out, back, enforce_file_format=True)
    reread = dcmread(io.BytesIO(out.getvalue()))
    for tag, raw in raw_before.items():
        assert _raw(reread, tag) == raw, f"({tag:08X}) changed when written"
    assert str(reread.PatientName) == str(source.PatientName)
    assert reread.SOPInstanceUID == source.SOPInstanceUID
