"""The scrub context memo (``pseudonymize.scrub_context``): an instance de-identified with the
memo warm (what its series' earlier slices left there) is byte for byte the instance
de-identified afresh, with the same UID mappings and identity payload."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from pydicom import dcmread

from dicom_node.config import DeidSettings
from dicom_node.deid import Pseudonymizer
from dicom_node.deid.pseudonymize import scrub_context
from dicom_node.part10 import write_instance
from dicom_node.sample_data import (
    PatientIdentity,
    ct_series_datasets,
    phantom_chest_hu,
    write_series,
)
from tests.dicom_node.test_part10 import _edge_case
from tests.security.test_deid_fuzz import cases

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
SECRET = b"scrub-context-memo-site-secret01"


def deidentified(pseudonymizer: Pseudonymizer, path: Path) -> tuple[bytes, dict, bytes | None]:
    result = pseudonymizer.pseudonymize(dcmread(path, defer_size="256 KB"))
    sink = io.BytesIO()
    write_instance(sink, result.dataset)
    return sink.getvalue(), result.uid_mappings, result.identity.payload if result.identity \
        else None


def assert_memo_changes_nothing(paths: list[Path]) -> Pseudonymizer:
    """Each file after all of ``paths`` went through one pseudonymizer, against afresh."""
    warm = Pseudonymizer(DeidSettings(), SECRET)
    for path in paths:
        deidentified(warm, path)
    for path in paths:
        assert deidentified(warm, path) == deidentified(Pseudonymizer(DeidSettings(), SECRET),
                                                        path)
    return warm


def test_slices_of_a_series_share_one_entry_and_change_nothing(tmp_path: Path) -> None:
    identity = PatientIdentity()
    hu = phantom_chest_hu((3, 16, 16))
    files = write_series(ct_series_datasets(hu, identity=identity), tmp_path / "ct")
    warm = assert_memo_changes_nothing(files)
    assert len(warm._scrub_contexts) == 1  # each slice has its own UIDs, and hits the entry
    # The context itself: the patient's name parts and the slice's own SOP Instance UID.
    ds = dcmread(files[1])
    context = scrub_context(ds, warm._scrub_contexts)
    assert context == scrub_context(dcmread(files[1]))
    assert str(ds.SOPInstanceUID).lower() in context.identifiers
    assert str(dcmread(files[0]).SOPInstanceUID).lower() not in context.identifiers


def test_the_same_bytes_under_another_character_set_are_another_entry(tmp_path: Path) -> None:
    paths = []
    for n, charset in enumerate(("ISO_IR 100", "ISO_IR 192")):
        ds = _edge_case(None, "1.2.840.10008.1.2.1")
        ds.SpecificCharacterSet = charset
        ds.PatientName = "Müller^Jörg"
        ds.OperatorsName = "Müller"  # kept descriptors are scrubbed with the context
        ds.StudyDescription = "Thorax Müller"
        paths.append(tmp_path / f"{n}.dcm")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(paths[-1], enforce_file_format=True)
    warm = assert_memo_changes_nothing(paths)
    assert len(warm._scrub_contexts) == 2


@pytest.mark.parametrize("charset", [None, "ISO_IR 100", "ISO_IR 192", "GB18030",
                                     ["", "ISO 2022 IR 87"], "ISO 2022 IR 13"])
@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
def test_edge_values(tmp_path: Path, charset: str | list[str] | None, syntax: str) -> None:
    path = tmp_path / "edge.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _edge_case(charset, syntax).save_as(path, enforce_file_format=True)
        assert_memo_changes_nothing([path])


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True, database=None)
@given(cases())
def test_deid_fuzz_cases(tmp_path_factory, case) -> None:  # noqa: ANN001
    data, _ = case
    path = tmp_path_factory.getbasetemp() / "memo.dcm"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_memo_changes_nothing([path])
