"""The research export folder: whole files, 0640 whatever the umask, names from valid parts."""

from __future__ import annotations

import os
import stat

import pytest

from storage.exports import export_name, write_export
from storage.files import UnsafePath


def test_export_is_written_whole_and_group_readable_only(tmp_path):
    old = os.umask(0o000)  # a permissive umask must not widen the file
    try:
        path = write_export(tmp_path / "share" / "radiomics", "a.csv", "x,y\r\n1,2\r\n")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"x,y\r\n1,2\r\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
    assert [p.name for p in path.parent.iterdir()] == ["a.csv"]  # no temporary left
    write_export(path.parent, "a.csv", "new\r\n")
    assert path.read_bytes() == b"new\r\n"


@pytest.mark.parametrize("name", ["../x.csv", ".hidden.csv", "a/b.csv", "a b.csv", ""])
def test_export_names_are_plain_file_names(tmp_path, name):
    with pytest.raises(UnsafePath):
        write_export(tmp_path, name, "x")


def test_export_name_is_built_from_validated_parts():
    assert export_name("radiomics", "2.25.12", 2, 7) == "radiomics_2.25.12_r2_job7.csv"
    for engine, uid in [("Radiomics", "2.25.1"), ("radiomics", "../1"), ("radiomics", "1..2")]:
        with pytest.raises(UnsafePath):
            export_name(engine, uid, 1, 1)
