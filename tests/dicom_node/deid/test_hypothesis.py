"""Property-based: random datasets never crash the pseudonymizer nor keep profile values."""

from __future__ import annotations

import copy
import datetime as _dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from dicom_node.config import DeidSettings
from dicom_node.deid import Pseudonymizer
from dicom_node.deid.profile import Profile, options_from_settings
from dicom_node.deid.uids import UidMapper

SECRET = b"unit-test-site-secret-0123456789"
PSEUDONYMIZER = Pseudonymizer(DeidSettings(), SECRET)
PROFILE = Profile(options_from_settings(DeidSettings()))
# Table rows a random dataset may carry (exact tags with a plain string VR).
STRING_VRS = {"LO": 64, "SH": 16, "PN": 64, "LT": 200, "ST": 200, "CS": 16, "UI": 64,
              "DA": 8, "DT": 26, "TM": 13, "AE": 16}
ROWS = [(int(r.pattern, 16), r.vr, r.action) for r in PROFILE.rules
        if r.vr in STRING_VRS and "x" not in r.pattern and not r.pattern.startswith("0002")]

text = st.text(alphabet=st.characters(min_codepoint=0x41, max_codepoint=0x5A), min_size=3,
               max_size=12)
uid = st.lists(st.integers(1, 10**9), min_size=3, max_size=5).map(
    lambda parts: "1.2.826.0.1." + ".".join(map(str, parts)))
date = st.dates(_dt.date(1900, 1, 1), _dt.date(2100, 12, 31)).map(
    lambda d: d.strftime("%Y%m%d"))


def value_for(vr: str):  # noqa: ANN201
    if vr == "UI":
        return uid
    if vr == "DA":
        return date
    if vr == "DT":
        return date.map(lambda d: d + "120000")
    if vr == "TM":
        return st.just("101010")
    return text.map(lambda s: "V" + s)


@st.composite
def datasets(draw):  # noqa: ANN001, ANN201
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    chosen = draw(st.lists(st.sampled_from(ROWS), min_size=1, max_size=25,
                           unique_by=lambda r: r[0]))
    nested = Dataset()
    for tag, vr, _action in chosen:
        target = nested if draw(st.booleans()) else ds
        target.add_new(tag, vr, draw(value_for(vr)))
    if len(nested):
        ds.add_new(0x00081115, "SQ", Sequence([nested]))  # ReferencedSeriesSequence
    return ds, chosen


def _values(ds: Dataset) -> dict[int, list]:
    found: dict[int, list] = {}
    for elem in ds.iterall():
        if elem.VR != "SQ":
            found.setdefault(int(elem.tag), []).append(elem.value)
    return found


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets())
def test_never_raises_never_keeps_profile_values(case) -> None:  # noqa: ANN001
    ds, chosen = case
    before = _values(ds)
    result = PSEUDONYMIZER.pseudonymize(copy.deepcopy(ds))
    after = _values(result.dataset)
    for tag, _vr, action in chosen:
        if action in ("K", "C"):
            continue  # kept or cleaned by an enabled option
        if tag in (0x00100010, 0x00100020):
            continue  # replaced by the patient pseudonym
        for value in after.get(tag, []):
            assert value not in before[tag] or value in ("", None), f"{tag:08X} kept"


@settings(max_examples=100, deadline=None)
@given(st.lists(uid, min_size=2, max_size=40, unique=True))
def test_uid_mapping_injective_and_stable(uids: list[str]) -> None:
    a, b = UidMapper(SECRET), UidMapper(SECRET)
    mapped = [a.pseudo_uid(u) for u in uids]
    assert len(set(mapped)) == len(uids)
    assert mapped == [b.pseudo_uid(u) for u in uids]
    assert all(len(m) <= 64 and m.startswith("2.25.") for m in mapped)
    assert not set(mapped) & set(uids)


@settings(max_examples=60, deadline=None)
@given(datasets())
def test_mappings_reverse_every_remapped_uid(case) -> None:  # noqa: ANN001
    ds, _ = case
    result = PSEUDONYMIZER.pseudonymize(copy.deepcopy(ds))
    originals = {v for vals in _values(ds).values() for v in vals if isinstance(v, str)}
    for elem in result.dataset.iterall():
        if elem.VR == "UI" and elem.value and str(elem.value).startswith("2.25."):
            assert result.uid_mappings[str(elem.value)] in originals
