"""Round trip: source CT -> pseudonymized -> derived result referencing it -> re-identified."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_node.deid import ReidentificationError, check_clinical
from dicom_node.deid.pseudonymize import IDENTITY_TAGS
from dicom_node.sample_data import PatientIdentity, ct_series_datasets

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def _ingest(pseudonymizer, vault, sources):  # noqa: ANN001, ANN202
    clean = []
    for ds in sources:
        result = pseudonymizer.pseudonymize(copy.deepcopy(ds))
        with vault.database.session() as session:
            vault.record(session, result.uid_mappings, result.identity)
        clean.append(result.dataset)
    return clean


def _derived(clean: list[Dataset]) -> Dataset:
    """A SEG-like result in a new series, referencing the pseudonymous source everywhere."""
    src = clean[0]
    seg = Dataset()
    seg.SpecificCharacterSet = "ISO_IR 100"
    seg.SOPClassUID = SEG_CLASS
    seg.SOPInstanceUID = generate_uid()  # minted by the node
    seg.SeriesInstanceUID = generate_uid()
    seg.StudyInstanceUID = src.StudyInstanceUID
    seg.FrameOfReferenceUID = src.FrameOfReferenceUID
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
               "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName",
               "StudyDescription", "PatientIdentityRemoved", "DeidentificationMethod",
               "DeidentificationMethodCodeSequence"):
        if kw in src:
            seg[kw] = copy.deepcopy(src[kw])
    seg.SeriesDate = seg.ContentDate = "20300101"
    seg.ContentTime = "120000"
    seg.SeriesDescription = "AI SEG"
    refs = []
    for ds in clean:
        item = Dataset()
        item.ReferencedSOPClassUID = ds.SOPClassUID
        item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        refs.append(item)
    series = Dataset()
    series.SeriesInstanceUID = src.SeriesInstanceUID
    series.ReferencedInstanceSequence = refs
    seg.ReferencedSeriesSequence = [series]
    frames = []
    for ds in clean:
        derivation = Dataset()
        source_image = Dataset()
        source_image.ReferencedSOPClassUID = ds.SOPClassUID
        source_image.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        derivation.SourceImageSequence = [source_image]
        frame = Dataset()
        frame.DerivationImageSequence = [derivation]
        frames.append(frame)
    seg.PerFrameFunctionalGroupsSequence = frames
    seg.file_meta = FileMetaDataset()
    seg.file_meta.MediaStorageSOPClassUID = SEG_CLASS
    seg.file_meta.MediaStorageSOPInstanceUID = seg.SOPInstanceUID
    seg.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return seg


@pytest.mark.parametrize("charset", ["ISO_IR 192", "ISO_IR 100"])
def test_round_trip(pseudonymizer, vault, reidentifier, charset) -> None:  # noqa: ANN001
    identity = PatientIdentity(name="Müller^Jürgen" if charset == "ISO_IR 100"
                               else "Müller^Jürgen=山田^太郎", charset=charset)
    sources = ct_series_datasets(np.zeros((4, 8, 8), np.float32), identity=identity)
    originals = {ds.SOPInstanceUID for ds in sources}
    clean = _ingest(pseudonymizer, vault, sources)
    seg = _derived(clean)
    minted = seg.SOPInstanceUID
    buffer = io.BytesIO()
    dcmwrite(buffer, seg, enforce_file_format=True)
    back = reidentifier.reidentify(dcmread(io.BytesIO(buffer.getvalue())))

    assert back.SOPInstanceUID == minted == back.file_meta.MediaStorageSOPInstanceUID
    assert back.StudyInstanceUID == identity.study_uid
    assert back.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    series = back.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence} == originals
    per_frame = {f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                 for f in back.PerFrameFunctionalGroupsSequence}
    assert per_frame == originals
    assert back.ContentDate == "20300101" and back.SeriesDate == "20300101"
    for kw in ("PatientIdentityRemoved", "DeidentificationMethodCodeSequence"):
        assert kw not in back

    # Patient/study attributes equal the source's, byte for byte once written.
    out = io.BytesIO()
    dcmwrite(out, back, enforce_file_format=True)
    final = dcmread(io.BytesIO(out.getvalue()))
    src_buffer = io.BytesIO()
    dcmwrite(src_buffer, sources[0], enforce_file_format=True)
    src = dcmread(io.BytesIO(src_buffer.getvalue()))
    for tag in sorted(t for t in src.keys() if int(t) in IDENTITY_TAGS):  # noqa: SIM118
        assert final.get_item(tag).value == src.get_item(tag).value, f"{tag} differs"
    assert str(final.PatientName) == identity.name
    assert check_clinical(final, vault) == []


def test_source_series_dates_unshifted(pseudonymizer, vault, reidentifier) -> None:  # noqa: ANN001
    sources = ct_series_datasets(np.zeros((1, 8, 8), np.float32))
    clean = _ingest(pseudonymizer, vault, sources)[0]
    assert clean.SeriesDate != sources[0].SeriesDate
    back = reidentifier.reidentify(clean)
    assert back.SeriesDate == sources[0].SeriesDate
    assert back.StudyDate == sources[0].StudyDate
    assert back.SOPInstanceUID == sources[0].SOPInstanceUID


def test_unknown_study_refused(reidentifier) -> None:  # noqa: ANN001
    ds = Dataset()
    ds.StudyInstanceUID = "2.25.1"
    with pytest.raises(ReidentificationError):
        reidentifier.reidentify(ds)
