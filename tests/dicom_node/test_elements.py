"""elements_with_vr: only the asked-for VRs are decoded, in Explicit and Implicit VR files."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_node.elements import elements_with_vr


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_only_requested_vrs_are_decoded(syntax):
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.SOPInstanceUID = "2.25.1"
    ds.ContourData = ["1.5", "-2.25", "3"]
    ds.PatientName = "Doe^Jane"
    item = Dataset()
    item.ReferencedSOPInstanceUID = "2.25.2"
    ds.ReferencedImageSequence = [item]
    ds.add_new(0x00091010, "LO", "private")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    back = dcmread(BytesIO(buffer.getvalue()))

    found = {e.keyword for e in elements_with_vr(back, frozenset({"UI", "SQ"}))}
    assert found == {"SOPClassUID", "SOPInstanceUID", "ReferencedImageSequence"}
    assert isinstance(back.get_item(0x30060050), RawDataElement)  # ContourData untouched
    assert isinstance(back.get_item(0x00100010), RawDataElement)
    assert [e.keyword for e in elements_with_vr(back, frozenset({"DS"}))] == ["ContourData"]
