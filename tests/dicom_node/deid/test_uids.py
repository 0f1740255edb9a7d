"""Keyed UID and patient pseudonyms."""

from __future__ import annotations

import re

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from dicom_node.deid.uids import UidMapper, is_well_known

SECRET = b"unit-test-site-secret-0123456789"


def test_uid_is_valid_and_deterministic() -> None:
    m = UidMapper(SECRET)
    pseudo = m.pseudo_uid("1.2.826.0.1.3680043.8.498.1234")
    assert re.fullmatch(r"2\.25\.(0|[1-9][0-9]*)", pseudo)
    assert len(pseudo) <= 64
    assert UidMapper(SECRET).pseudo_uid("1.2.826.0.1.3680043.8.498.1234") == pseudo
    assert UidMapper(b"another-secret-0123456789abcdef!").pseudo_uid(
        "1.2.826.0.1.3680043.8.498.1234") != pseudo


def test_well_known_untouched() -> None:
    m = UidMapper(SECRET)
    for uid in (CTImageStorage, ExplicitVRLittleEndian, "1.2.840.10008.2.16.4"):
        assert is_well_known(uid)
        assert m.pseudo_uid(uid) == uid


def test_patient_pseudonyms() -> None:
    m = UidMapper(SECRET)
    pid, name = m.pseudo_patient_id("pid:4711"), m.pseudo_patient_name("pid:4711")
    assert re.fullmatch(r"ANON-[A-Z2-7]{10}", pid)
    assert name == "ANON^" + pid[5:]
    assert m.pseudo_patient_id("pid:4712") != pid


def test_date_offset_range() -> None:
    m = UidMapper(SECRET)
    offsets = {m.date_offset_days(f"pid:{i}", 30) for i in range(200)}
    assert offsets <= set(range(-30, 0)) and len(offsets) > 10


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError):
        UidMapper(b"short")
