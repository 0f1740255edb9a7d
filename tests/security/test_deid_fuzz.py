"""Defect 3 as a property: random data sets carry identifiers planted in random elements of
random VRs, in nested sequences, private blocks and UN encodings; after de-identification no
planted identifier is anywhere in the bytes the node would write.

Planted are the identifiers a sender holds (name parts, patient ID, accession number, birth
date, study UID), copied into any text-capable element, and, into free text, what no header
names (an e-mail address, a telephone number, a titled name). Names are drawn in four scripts
(ASCII, accented Latin, Chinese/Japanese ideographs, Hangul; the non-ASCII ones in a UTF-8
data set), and free text may glue them to the words around them ("CT山田", "MUELLERKM") or
hold letters whose lower case is longer than they are ("İ"). Numbers in numeric attributes
(DS, IS, binary) are out of scope: they are kept as numbers (docs/deidentification.md).
"""

from __future__ import annotations

import io
import os
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from dicom_node.config import DeidSettings
from dicom_node.deid import Pseudonymizer, safe
from tests.security.deid_encoding import elements_of, explicit_elements, part10, read, un_of

# pydicom warns about the hostile values while the cases are built: that is the point.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
SECRET = b"security-test-site-secret-012345"
PSEUDONYMIZER = Pseudonymizer(DeidSettings(), SECRET)
TEXT_VRS = ("AE", "CS", "DA", "DT", "TM", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UI", "AS")
FREE_TEXT_VRS = ("LO", "LT", "SH", "ST", "UC", "UT")
SKIP = {0x00080016, 0x00080018, 0x0020000D, 0x00100010, 0x00100020, 0x00280301,
        0x00080005, 0x00100030, 0x00080050}
_PUBLIC = sorted(
    tag for tag, entry in DicomDictionary.items()
    if entry[0] in TEXT_VRS and tag >> 16 not in (0x0000, 0x0002, 0xFFFE) and tag & 0xFFFF
    and tag not in SKIP)
_KEPT = sorted(t for t in (safe.SAFE_TEXT | safe.SCRUBBED_DESCRIPTORS | safe.CODED_TEXT) - SKIP
               if DicomDictionary[t][0] in TEXT_VRS)
TARGETS = st.one_of(st.sampled_from(_PUBLIC), st.sampled_from(_KEPT),
                    st.sampled_from([0x00181FF0, 0x00431FF2, 0x7FE10010]))  # unknown/odd

consonants = st.text(alphabet="BCDFGHJKLMNPQRSTVWXZ", min_size=7, max_size=10)
# Name alphabets by script. Left out: letters whose upper case is another word ("ß" -> "SS",
# "ı" -> "I"): a transliterated name is a different string, out of reach of any matcher.
SCRIPTS = {
    "ascii": st.text(alphabet="BCDFGHJKLMNPQRSTVWXZ", min_size=7, max_size=10),
    "latin": st.text(alphabet="BCDFGHKLMNPRSTVWZÄÖÜÉÈÑÇØÅŁŠŽİ", min_size=7, max_size=10),
    "cjk": st.text(alphabet="山田太郎佐藤鈴木高橋渡辺伊中村小林加吉王李张刘陈杨黄赵", min_size=2,
                   max_size=3),
    "hangul": st.text(alphabet="김이박최정강조윤장임민수지영현우서준", min_size=2, max_size=3),
}
UTF8 = "ISO_IR 192"


@st.composite
def identities(draw) -> dict:  # noqa: ANN001
    year = draw(st.integers(1920, 2015))
    script = draw(st.sampled_from(sorted(SCRIPTS)))
    names = SCRIPTS[script]
    return {
        "charset": UTF8 if script != "ascii" or draw(st.booleans()) else None,
        "family": draw(names), "given": draw(names),
        "pid": draw(consonants.map(lambda s: s[:3])) + str(draw(st.integers(10**5, 10**7))),
        "accession": "A" + str(draw(st.integers(10**6, 10**8))) + draw(consonants)[:2],
        "birth": f"{year}{draw(st.integers(1, 12)):02d}{draw(st.integers(1, 28)):02d}",
        "study": "1.2.826.0.1.3680043.10.999." + str(draw(st.integers(10**6, 10**12))),
        "doctor": draw(consonants).capitalize(),
        "mail": draw(consonants).lower() + "@" + draw(consonants).lower() + ".org",
        "phone": f"+49 {draw(st.integers(20, 99))} {draw(st.integers(1000, 99999))}-"
                 f"{draw(st.integers(100, 999))}",
    }


def _planted_value(draw, vr: str, ident: dict, free: bool) -> tuple[str, list[str]]:  # noqa: ANN001
    """A value for ``vr`` carrying identifiers; returns (value, the identifiers in it)."""
    if vr == "UI":
        return ident["study"], [ident["study"]]
    if vr in ("DA", "DT", "TM"):
        return ident["birth"] + ("1200" if vr == "DT" else ""), [ident["birth"]]
    if vr == "PN":
        return f"{ident['family']}^{ident['given']}", [ident["family"], ident["given"]]
    known = [ident["family"], ident["given"], ident["pid"], ident["accession"],
             ident["birth"], ident["study"]]
    if vr in ("CS", "AE", "AS"):  # the default repertoire only (PS3.5 6.1.2.3)
        one = draw(st.sampled_from([k for k in known[:5] if k.isascii()]))
        return one.upper()[:16], [one.upper()[:16]]
    pick = draw(st.lists(st.sampled_from(known), min_size=1, max_size=3))
    extra = None
    if free:
        extra = draw(st.sampled_from(["mail", "phone", "doctor", None]))
        if extra == "doctor":
            pick = [*pick, ident["doctor"]]
            text = " ".join(pick[:-1]) + f" Dr {ident['doctor']}"
        elif extra:
            pick = [*pick, ident[extra]]
            text = " ".join(pick)
        else:
            text = " ".join(pick)
    else:
        text = " ".join(pick)
    prefixes = ["", "CT Thorax ", "T1 MPRAGE ", "AX T2 FLAIR ", "CT", "t1_se_"]
    if ident["charset"] == UTF8:  # letters whose lower case is longer shift positions
        prefixes += ["İİ Kontrast ", "ẞİ", "胸部CT "]
    prefix = draw(st.sampled_from(prefixes))
    if free and extra is None and draw(st.booleans()):
        text += draw(st.sampled_from(["KM", "様", "님", "_KM"]))  # a suffix glued on
    return prefix + text, pick


@st.composite
def cases(draw) -> tuple[bytes, list[str]]:  # noqa: ANN001
    ident = draw(identities())
    charset = ident["charset"] or "iso8859"
    base = Dataset()
    if ident["charset"]:
        base.SpecificCharacterSet = ident["charset"]
    base.SOPClassUID = CTImageStorage
    base.SOPInstanceUID = "1.2.826.0.1.3680043.10.999.11.1"
    base.StudyInstanceUID = ident["study"]
    base.PatientID = ident["pid"]
    base.AccessionNumber = ident["accession"]
    base.PatientBirthDate = ident["birth"]
    base.Modality = "CT"
    names = Dataset()
    names.PatientName = f"{ident['family']}^{ident['given']}"
    planted: list[str] = [ident["family"], ident["given"], ident["pid"], ident["accession"],
                          ident["birth"], ident["study"]]
    elements = elements_of(base, charset)
    # The patient's name itself may arrive UN-encoded.
    elements.append(un_of(names, charset) if draw(st.booleans())
                    else elements_of(names, charset)[0])
    used = {t for t, _ in elements}
    for _ in range(draw(st.integers(1, 8))):
        tag = draw(TARGETS)
        where = draw(st.sampled_from(["top", "un", "nested", "un-nested", "private"]))
        entry = DicomDictionary.get(tag)
        vr = entry[0] if entry else "LO"
        free = vr in FREE_TEXT_VRS and tag not in safe.CODED_TEXT
        value, idents = _planted_value(draw, vr, ident, free)
        planted += idents
        holder = Dataset()
        if where == "private":
            group = draw(st.sampled_from([0x0009, 0x0019, 0x0029, 0x0043]))
            holder.add_new((group << 16) | 0x0010, "LO", "QZ VENDOR")
            holder.add_new((group << 16) | 0x1000 | draw(st.integers(0, 0xFF)), "LO", value)
        else:
            holder.add_new(tag, vr, value)
        if where in ("nested", "un-nested"):
            container = Dataset()
            # Referenced Study, Request Attributes, Referenced Image, Shared Functional
            # Groups, and two code sequences whose Code Meaning is text.
            seq_tag = draw(st.sampled_from([0x00081115, 0x00400275, 0x00081140, 0x52009229,
                                            0x00082218, 0x0040A043]))
            item = holder
            if draw(st.booleans()):  # two levels deep
                inner = Dataset()
                inner.ReferencedSeriesSequence = Sequence([holder])
                item = inner
            container.add_new(seq_tag, "SQ", Sequence([item]))
            holder = container
        for elem in holder:
            t = int(elem.tag)
            if t in used:
                continue
            used.add(t)
            one = Dataset()
            one.add(elem)
            if where in ("un", "un-nested") or (where == "private" and t & 0xFFFF >= 0x1000):
                elements.append(un_of(one, charset))
            else:
                elements.append((t, explicit_elements(one, charset)))
    return part10(elements, CTImageStorage, "1.2.826.0.1.3680043.10.999.11.1"), planted


# 2,000 examples in CI (issue 10); DEID_FUZZ_EXAMPLES may raise it for a longer hunt.
# derandomize: CI runs the same 2,000 examples every time, so a red run is reproducible;
# DEID_FUZZ_RANDOM=1 draws new ones (a longer hunt: DEID_FUZZ_EXAMPLES=20000 DEID_FUZZ_RANDOM=1).
@settings(max_examples=int(os.environ.get("DEID_FUZZ_EXAMPLES", "2000")), deadline=None,
          suppress_health_check=list(HealthCheck),
          derandomize=os.environ.get("DEID_FUZZ_RANDOM") != "1", database=None)
@given(cases())
def test_no_planted_identifier_survives(tmp_path_factory, case) -> None:  # noqa: ANN001
    data, planted = case
    folder = tmp_path_factory.getbasetemp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the hostile values by design
        clean = PSEUDONYMIZER.pseudonymize(read(data, folder)).dataset
        out = io.BytesIO()
        dcmwrite(out, clean, enforce_file_format=True)
    written = out.getvalue()
    # bytes.lower() folds ASCII only: non-ASCII identifiers are looked for in the decoded text
    # (UTF-8 when planted; the node keeps the data set's Specific Character Set).
    text = written.decode("utf-8", "replace").lower()
    for identifier in planted:
        assert identifier.lower().encode() not in written.lower(), identifier
        assert identifier.lower() not in text, identifier
