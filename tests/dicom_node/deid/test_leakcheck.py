"""Leak checks find pseudonyms (clinical) and originals (research), never print values."""

from __future__ import annotations

import copy

import numpy as np

from dicom_node.deid import check_clinical, check_research
from dicom_node.sample_data import PatientIdentity, ct_series_datasets


def _ingest(pseudonymizer, vault, identity):  # noqa: ANN001, ANN202
    source = ct_series_datasets(np.zeros((1, 8, 8), np.float32), identity=identity)[0]
    result = pseudonymizer.pseudonymize(copy.deepcopy(source))
    with vault.database.session() as session:
        vault.record(session, result.uid_mappings, result.identity)
    return source, result


def test_clinical_flags_pseudonyms(pseudonymizer, vault, reidentifier) -> None:  # noqa: ANN001
    source, result = _ingest(pseudonymizer, vault, PatientIdentity())
    pseudo = copy.deepcopy(result.dataset)
    problems = check_clinical(pseudo, vault)
    joined = "; ".join(problems)
    assert any("StudyInstanceUID" in p for p in problems)
    assert any("PatientID" in p for p in problems) and any("PatientName" in p for p in problems)
    assert result.dataset.PatientID not in joined and result.dataset.StudyInstanceUID not in joined
    back = reidentifier.reidentify(result.dataset)
    assert check_clinical(back, vault) == []
    # A pseudonym hidden in a free-text attribute is found too.
    back.ImageComments = f"see {pseudo.PatientID}"
    assert check_clinical(back, vault) == ["patient pseudonym left in (0020,4000) ImageComments"]


def test_research_flags_originals(pseudonymizer, vault) -> None:  # noqa: ANN001
    identity = PatientIdentity()
    source, result = _ingest(pseudonymizer, vault, identity)
    clean = result.dataset
    assert check_research(clean, vault) == []
    assert check_research(clean, vault, result.identity) == []
    leaky = copy.deepcopy(clean)
    leaky.ImageComments = f"patient {identity.patient_id}"
    leaky.ReferencedImageSequence = [copy.deepcopy(leaky)]
    leaky.ReferencedImageSequence[0].SOPInstanceUID = source.SOPInstanceUID
    leaky.OperatorsName = "Testperson^Anna"
    problems = check_research(leaky, vault)
    text = "; ".join(problems)
    assert "original patient ID in (0020,4000) ImageComments" in problems
    assert any("original UID" in p and "SOPInstanceUID" in p for p in problems)
    assert "original patient name in (0008,1070) OperatorsName" in problems
    for value in identity.identifying_strings + [source.SOPInstanceUID]:
        assert value not in text


def test_research_unknown_study(vault) -> None:  # noqa: ANN001
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.StudyInstanceUID = "2.25.42"
    assert check_research(ds, vault) != []


def test_numbers_are_not_identifiers(pseudonymizer, vault) -> None:  # noqa: ANN001
    """Contour coordinates (DS) that happen to contain a numeric accession number or patient
    ID are numbers, not leaks; the same digits in a text attribute are."""
    identity = PatientIdentity(patient_id="4711", accession="8342")
    _, result = _ingest(pseudonymizer, vault, identity)
    ds = copy.deepcopy(result.dataset)
    ds.ContourData = ["-4711.5", "18342.25", "3"]
    ds.SliceLocation = "4711"
    assert check_research(ds, vault) == []
    ds.ImageComments = "ref 8342"
    assert check_research(ds, vault) == ["original accession number in (0020,4000) ImageComments"]
