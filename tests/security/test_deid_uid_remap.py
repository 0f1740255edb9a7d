"""Defect 2 (the de-identification half): UIDs under the 1.2.840.10008 root were never
remapped, so a hostile value such as ``1.2.840.10008.1/../../x`` passed through into paths.
Now only UIDs registered in the DICOM dictionary are kept; everything else is remapped."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from dicom_node.config import DeidSettings
from dicom_node.deid import Pseudonymizer
from dicom_node.deid.uids import UidMapper, is_valid_uid, is_well_known

SECRET = b"security-test-site-secret-012345"
HOSTILE = "1.2.840.10008.1/../../x"
UNREGISTERED = "1.2.840.10008.5.1.4.1.1.2.999.1"
TALAIRACH = "1.2.840.10008.1.4.1.1"  # a well-known Frame of Reference


@pytest.mark.parametrize("uid", [HOSTILE, UNREGISTERED, "1.2.840.10008.", "1.2.840.10008"])
def test_unregistered_uids_under_the_dicom_root_are_remapped(uid: str) -> None:
    assert not is_well_known(uid)
    pseudo = UidMapper(SECRET).pseudo_uid(uid)
    assert pseudo.startswith("2.25.") and is_valid_uid(pseudo)


@pytest.mark.parametrize("uid", [CTImageStorage, ExplicitVRLittleEndian, TALAIRACH,
                                 "1.2.840.10008.1.20.1"])
def test_registered_uids_are_kept(uid: str) -> None:
    assert is_well_known(uid)
    assert UidMapper(SECRET).pseudo_uid(uid) == uid


def _instance() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = HOSTILE
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = HOSTILE
    ds.StudyInstanceUID = "1.2.840.10008.9/../../study"
    ds.SeriesInstanceUID = UNREGISTERED
    ds.FrameOfReferenceUID = TALAIRACH
    ds.PatientID = "PID-UID-1"
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = "1.2.840.10008.77/.."
    ds.ReferencedImageSequence = Sequence([ref])
    ds.add_new(0x00209161, "UI", "1.2.840.10008.3/x")  # Concatenation UID (outside table)
    return ds


def test_instance_uids_remapped_at_every_depth_and_in_file_meta() -> None:
    result = Pseudonymizer(DeidSettings(), SECRET).pseudonymize(_instance())
    out = result.dataset
    for uid in (out.SOPInstanceUID, out.StudyInstanceUID, out.SeriesInstanceUID,
                out.ReferencedImageSequence[0].ReferencedSOPInstanceUID,
                out.file_meta.MediaStorageSOPInstanceUID, out[0x00209161].value):
        assert uid.startswith("2.25.") and is_valid_uid(uid), uid
    assert out.SOPClassUID == CTImageStorage
    assert out.FrameOfReferenceUID == TALAIRACH
    assert result.uid_mappings[out.SOPInstanceUID] == HOSTILE  # re-identification still works
    buffer = io.BytesIO()
    dcmwrite(buffer, out, enforce_file_format=True)
    assert b"/" not in buffer.getvalue().split(b"DICM", 1)[1].replace(b"http://", b"")
    assert dcmread(io.BytesIO(buffer.getvalue())).SOPInstanceUID == out.SOPInstanceUID


def test_hostile_class_uid_is_not_kept() -> None:
    ds = _instance()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2/../x"
    out = Pseudonymizer(DeidSettings(), SECRET).pseudonymize(ds).dataset
    assert is_valid_uid(str(out.SOPClassUID))
