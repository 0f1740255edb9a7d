"""Every attribute of Table E.1-1 with a non-K action, top level and nested, gets its action."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from dicom_node.config import DeidSettings
from dicom_node.deid.profile import Profile, options_from_settings, parse_private_allowlist
from dicom_node.deid.pseudonymize import Pseudonymizer
from dicom_node.deid.safe import SCRUBBED_DESCRIPTORS
from dicom_node.deid.uids import UidMapper

SECRET = b"unit-test-site-secret-0123456789"
PROFILE = Profile(options_from_settings(DeidSettings()))
MAPPER = UidMapper(SECRET)
# A sequence outside the table: items are walked with the same rules.
CONTAINER = 0x00081115  # ReferencedSeriesSequence

SAMPLES = {
    "AE": "STATION1", "AS": "042Y", "CS": "VALUE1", "DA": "20200315",
    "DT": "20200315101010.000000", "TM": "101010", "DS": "12.5", "IS": "42",
    "LO": "some text", "LT": "some text", "SH": "some text", "ST": "some text",
    "UC": "some text", "UT": "some text", "UR": "http://host.example/x", "PN": "Doe^John",
    "UI": "1.2.3.4.5.6.7.8", "FL": 1.5, "FD": 1.5, "SL": 7, "SS": 7, "UL": 7, "US": 7,
    "SV": 7, "UV": 7, "AT": 0x00100010, "OB": b"\x01\x02", "OW": b"\x01\x02",
    "UN": b"\x01\x02", "OD": b"\x01" * 8, "OF": b"\x01" * 4, "OL": b"\x01" * 4,
    "OV": b"\x01" * 8,
}


def _sample(vr: str):  # noqa: ANN202
    if vr == "SQ":
        item = Dataset()
        item.CodeValue = "CV1"
        return Sequence([item])
    return SAMPLES[vr]


def _rows():
    for rule in PROFILE.rules:
        if rule.action == "K" or rule.vr is None or "x" in rule.pattern:
            continue
        if rule.pattern in ("private",) or rule.pattern.startswith("0002"):
            continue
        vr = rule.vr.split(" or ")[0]
        yield pytest.param(rule, vr, id=f"{rule.pattern}-{rule.action}")


def _empty(value) -> bool:  # noqa: ANN001
    return value is None or value == "" or value == [] or (
        isinstance(value, Sequence) and len(value) == 0)


def check_action(target: Dataset, tag: int, vr: str, original, action: str,  # noqa: ANN001
                 top: bool, offset: int | None) -> None:
    if top and tag in (0x00100010, 0x00100020):
        assert str(target[tag].value).startswith("ANON"), "patient pseudonym expected"
        return
    if action == "X":
        assert tag not in target
    elif action == "Z":
        assert tag in target and _empty(target[tag].value)
    elif action == "D":
        assert tag in target and target[tag].value != original
        assert not _empty(target[tag].value)
    elif action == "U":
        assert target[tag].value == MAPPER.pseudo_uid(original) != original
    elif action == "U*":
        assert tag in target  # sequence kept, UIDs inside remapped (tested separately)
    elif action == "C":
        if vr in ("DA", "DT"):
            assert offset is not None and target[tag].value != original
            assert str(target[tag].value)[8:] == str(original)[8:]
        elif vr == "SQ":
            assert tag in target and len(target[tag].value) == len(original)
        elif vr == "TM":
            assert target[tag].value == original  # times keep their value
        elif tag == 0x00080201:
            assert tag not in target  # "some text" is no UTC offset
        else:
            # Clean: a listed descriptor is kept, scrubbed ("some text" has nothing to cut).
            assert tag in SCRUBBED_DESCRIPTORS
            assert target[tag].value == original
    else:  # pragma: no cover
        raise AssertionError(action)


@pytest.fixture(scope="module")
def pseudonymizer() -> Pseudonymizer:
    return Pseudonymizer(DeidSettings(), SECRET)


@pytest.mark.parametrize("where", ["top", "nested"])
@pytest.mark.parametrize(("rule", "vr"), list(_rows()))
def test_table_action_applied(pseudonymizer, rule, vr, where) -> None:  # noqa: ANN001
    tag = int(rule.pattern, 16)
    original = _sample(vr)
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.PatientID = "PID-1"
    if where == "top":
        ds.add_new(tag, vr, original)
        holder = ds
    else:
        holder = Dataset()
        holder.add_new(tag, vr, original)
        ds.add_new(CONTAINER, "SQ", Sequence([holder]))
    result = pseudonymizer.pseudonymize(ds)
    target = result.dataset if where == "top" else result.dataset[CONTAINER].value[0]
    offset = pseudonymizer.mapper.date_offset_days("pid:PID-1", 3650)
    action = rule.action
    if action == "C" and vr not in ("DA", "DT", "TM", "SQ") and tag != 0x00080201 \
            and tag not in SCRUBBED_DESCRIPTORS:
        # Other free text and bulk data under Clean Descriptors: the Basic Profile action.
        action = "D" if rule.fallback == "C" else rule.fallback
    check_action(target, tag, vr, original, action, where == "top", offset)


def test_every_row_resolved() -> None:
    actions = {r.action for r in PROFILE.rules}
    assert actions <= {"X", "Z", "D", "K", "C", "U", "U*"}
    assert len(PROFILE.rules) >= 600


@pytest.mark.parametrize(("tag", "vr"), [(0x50000010, "US"), (0x50023000, "OW"),
                                         (0x60004000, "LT"), (0x601E3000, "OW")])
def test_repeating_group_patterns_removed(pseudonymizer, tag: int, vr: str) -> None:  # noqa: ANN001
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.add_new(tag, vr, _sample(vr))
    ds.add_new(0x60000010, "US", 512)  # Overlay Rows: not in the table, kept
    out = pseudonymizer.pseudonymize(ds).dataset
    assert tag not in out
    assert 0x60000010 in out


def test_sequence_u_star_keeps_references_remapped(pseudonymizer) -> None:  # noqa: ANN001
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = "1.2.3.9.9"
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SourceImageSequence = [ref]
    out = pseudonymizer.pseudonymize(ds).dataset
    item = out.SourceImageSequence[0]
    assert item.ReferencedSOPClassUID == CTImageStorage
    assert item.ReferencedSOPInstanceUID == MAPPER.pseudo_uid("1.2.3.9.9")


def test_clean_descriptor_with_identifier_not_kept(pseudonymizer) -> None:  # noqa: ANN001
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.PatientName = "Testperson^Anna"
    ds.PatientID = "PID-4711"
    ds.SeriesDescription = "Thorax for TESTPERSON"
    ds.StudyDescription = "CT THORAX"
    ds.ImageComments = "see PID-4711"
    out = pseudonymizer.pseudonymize(ds).dataset
    assert out.SeriesDescription == "Thorax for"  # kept, the name part cut out
    assert "ImageComments" not in out  # other free text: Basic Profile X
    assert out.StudyDescription == "CT THORAX"


def test_options_change_actions() -> None:
    base = Profile([])
    rich = Profile(["retain_patient_characteristics", "retain_device_identity",
                    "retain_longitudinal_modified_dates", "clean_descriptors"])
    assert base.rule_for(0x00101010).action == "X"  # Patient's Age
    assert rich.rule_for(0x00101010).action == "K"
    assert base.rule_for(0x00181000).action == "D"  # Device Serial Number X/Z/D
    assert rich.rule_for(0x00181000).action == "K"
    assert base.rule_for(0x00080020).action == "Z"  # Study Date
    assert rich.rule_for(0x00080020).action == "C"
    assert base.rule_for(0x0008103E).action == "X"
    assert rich.rule_for(0x0008103E).action == "C"


def test_private_tags_removed_except_allowlist() -> None:
    settings = DeidSettings(private_tag_allowlist=["(0019,xx0c) SIEMENS MR HEADER"])
    p = Pseudonymizer(settings, SECRET)
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.add_new(0x00190010, "LO", "SIEMENS MR HEADER")
    ds.add_new(0x0019100C, "IS", "1000")  # allow-listed b-value
    ds.add_new(0x0019100D, "LO", "secret")
    ds.add_new(0x00290010, "LO", "OTHER")
    ds.add_new(0x00291001, "LO", "Doe^John")
    item = Dataset()
    item.add_new(0x00090010, "LO", "GEMS")
    item.add_new(0x00091001, "LO", "hidden")
    ds.ReferencedSeriesSequence = [item]
    out = p.pseudonymize(ds).dataset
    assert out[0x0019100C].value == "1000" and out[0x00190010].value == "SIEMENS MR HEADER"
    for tag in (0x0019100D, 0x00290010, 0x00291001):
        assert tag not in out
    assert 0x00091001 not in out.ReferencedSeriesSequence[0]
    assert "113111" in {i.CodeValue for i in out.DeidentificationMethodCodeSequence}


def test_bad_allowlist_entry_rejected() -> None:
    with pytest.raises(ValueError):
        parse_private_allowlist(["(0018,xx0c) EVEN GROUP"])
