"""Defect 3c: "Clean Descriptors" only removed this instance's own identifiers and ignored name
parts under three characters, so dates, other people's names ("Dr Huber"), phone numbers and
short names in free text survived. Kept descriptors are now scrubbed token by token; other
free text is removed."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import MRImageStorage

from dicom_node.config import DeidSettings
from dicom_node.deid import Pseudonymizer
from dicom_node.deid.scrub import Scrubber, ScrubContext

SECRET = b"security-test-site-secret-012345"
NONE = ScrubContext()


@pytest.mark.parametrize("text", [
    "20231105", "2023-11-05", "05.11.2023", "11/05/2023", "5/11/23", "5 Nov 2023",
    "5. November 2023", "Nov 5, 2023", "November 2023", "14:32", "14:32:05", "143205",
    "2023.11.05",
])
def test_dates_and_times_cut(text: str) -> None:
    out = Scrubber().scrub(f"Thorax {text} axial", NONE)
    assert out == "Thorax axial", out


@pytest.mark.parametrize(("text", "gone"), [
    ("CT 4711 Abdomen", "4711"),
    ("Pat 12345678 Thorax", "12345678"),
    ("call +49 89 1234-567 now", "567"),
    ("Rückruf (089) 123 456 78 Kopf", "456"),
    ("Befund an hans.huber@klinik-nord.de Thorax", "huber"),
    ("see https://ris.example.org/order/99", "ris"),
])
def test_numbers_contacts_cut(text: str, gone: str) -> None:
    out = Scrubber().scrub(text, NONE)
    assert gone not in out.lower(), out


@pytest.mark.parametrize(("text", "expected"), [
    ("Thorax Dr Huber", "Thorax"),
    ("Thorax Dr. Huber", "Thorax"),
    ("Prof. Dr. med. Hans Meier Leber", "Leber"),
    ("Mrs Okafor brain", "brain"),
    ("Knie rechts Herr Wagner", "Knie rechts"),
    ("Dr Hans Huber", ""),
    ("Ms. Li T2", "T2"),
])
def test_titles_and_the_name_after_them_cut(text: str, expected: str) -> None:
    assert Scrubber().scrub(text, NONE) == expected


@pytest.mark.parametrize("name", ["T1 MPRAGE", "AX T2 FLAIR", "t1_se_tra_KM", "DWI b1000",
                                  "ep2d_diff_b0_b1000 TRACEW", "MR Brain", "MS lesion",
                                  "DR Chest", "Thorax 1.5mm B30f", "fl3d_1.0iso",
                                  "t2_pd_tse_fs", "mr_brain_routine", "dr_chest pa"])
def test_sequence_and_protocol_names_survive(name: str) -> None:
    ctx = ScrubContext(frozenset({"li", "al", "m"}), frozenset({"pid-77"}))
    assert Scrubber().scrub(name, ctx) == name


def test_every_name_part_whatever_its_length() -> None:
    ctx = ScrubContext(frozenset({"li", "al", "x"}))
    assert Scrubber().scrub("Li Al X CT Kopf", ctx) == "CT Kopf"


def test_word_list() -> None:
    scrubber = Scrubber(["Klinikum Nord", "Schwabing"])
    assert scrubber.scrub("CT Klinikum Nord Schwabing Thorax", NONE) == "CT Thorax"


def _instance() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.999.9.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.999.9.2"
    ds.PatientName = "Quorvex^Hilda"
    ds.PatientID = "PID-SCR-1"
    ds.AccessionNumber = "A77Q"
    item = Dataset()
    item.PerformingPhysicianName = "Ng^Al"  # short parts, nested
    ds.PerformedProtocolCodeSequence = Sequence([item])
    ds.ReferringPhysicianName = "Osei^Kofi"
    return ds


def test_pseudonymizer_scrubs_kept_descriptors_and_removes_other_text() -> None:
    ds = _instance()
    ds.SeriesDescription = "AX T2 FLAIR Quorvex 05.11.2023 Dr Huber"
    ds.StudyDescription = "MRT Kopf Ng Al 14:32 +49 89 1234-567"
    ds.ProtocolName = "t1_se_tra_KM Osei A77Q"
    ds.SequenceName = "*tse2d1_15"
    ds.BodyPartExamined = "HEAD"
    ds.ContrastBolusAgent = "Gadovist 20231105"
    ds.ImageComments = "patient anxious"  # other free text: removed
    ds.add_new(0x00082111, "ST", "derived by Dr Huber")  # Derivation Description: removed
    ds.add_new(0x00181030 + 0, "LO", ds.ProtocolName)
    pseudonymizer = Pseudonymizer(DeidSettings(scrub_words=["Gadovist"]), SECRET)
    out = pseudonymizer.pseudonymize(ds).dataset
    assert out.SeriesDescription == "AX T2 FLAIR"
    assert out.StudyDescription == "MRT Kopf"
    assert out.ProtocolName == "t1_se_tra_KM"
    assert out.SequenceName == "*tse2d1_15"
    assert out.BodyPartExamined == "HEAD"
    assert not out.get("ContrastBolusAgent")
    assert "ImageComments" not in out and 0x00082111 not in out


def test_descriptor_in_nested_sequence_scrubbed() -> None:
    ds = _instance()
    ref = Dataset()
    ref.SeriesDescription = "Osei follow-up 2023-11-05"
    ds.ReferencedSeriesSequence = Sequence([ref])
    out = Pseudonymizer(DeidSettings(), SECRET).pseudonymize(ds).dataset
    assert out.ReferencedSeriesSequence[0].SeriesDescription == "follow-up"


@pytest.mark.parametrize(("text", "parts", "expected"), [
    # Scripts without spaces: the name is glued to what follows it.
    ("CT山田太郎胸部", {"山田", "太郎"}, "CT胸部"),
    ("김민수님 흉부 CT", {"김민수"}, "님 흉부 CT"),
    # A Latin name of five letters or more glued to a prefix.
    ("CTMUELLER thorax", {"mueller"}, "CT thorax"),
    ("t1_se_HubertusKM", {"hubertus"}, "t1_se_KM"),
])
def test_name_parts_inside_words(text: str, parts: set[str], expected: str) -> None:
    assert Scrubber().scrub(text, ScrubContext(frozenset(parts))) == expected


def test_short_latin_name_parts_stay_token_only() -> None:
    """"Li" is cut as a word, never out of "Lipid" (a sequence name an engine reads)."""
    assert Scrubber().scrub("Lipid Li", ScrubContext(frozenset({"li"}))) == "Lipid"


@pytest.mark.parametrize("text", ["İİİİİ CTqxzab Thorax", "ẞİ qxzab", "CTqxzabİ"])
def test_letters_whose_lower_case_is_longer_shift_no_cut(text: str) -> None:
    """"İ".lower() is two characters: positions found in the lower-cased text used to be
    applied to the original, so a glued identifier after it survived (or the scrubber raised
    IndexError on a hostile value)."""
    out = Scrubber().scrub(text, ScrubContext(identifiers=frozenset({"qxzab"})))
    assert "qxzab" not in out.lower(), out
