"""Elements the scrubber leaves unchanged are left undecoded (``profile._kept_as_read``): the
de-identified instance is byte for byte what decoding every scrubbed element gives."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from pydicom import dcmread

from dicom_node.config import DeidSettings
from dicom_node.deid import Pseudonymizer, profile
from dicom_node.part10 import write_instance
from dicom_node.sample_data import ct_series_datasets, phantom_chest_hu, write_series
from tests.dicom_node.test_part10 import _edge_case
from tests.security.test_deid_fuzz import cases

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
SECRET = b"kept-as-read-test-site-secret-01"


def deidentified(path: Path, *, shortcut: bool) -> tuple[bytes, dict, bytes | None]:
    """(written bytes, UID mappings, identity payload), with or without the shortcut."""
    pseudonymizer = Pseudonymizer(DeidSettings(), SECRET)  # a fresh scrubber memo each time
    ds = dcmread(path, defer_size="256 KB")
    with mock.patch.object(profile, "_kept_as_read",
                           profile._kept_as_read if shortcut else lambda *_a: False):
        result = pseudonymizer.pseudonymize(ds)
    sink = io.BytesIO()
    write_instance(sink, result.dataset)
    identity = result.identity.payload if result.identity else None
    return sink.getvalue(), result.uid_mappings, identity


def assert_same(path: Path) -> None:
    assert deidentified(path, shortcut=True) == deidentified(path, shortcut=False)


def test_ct_slices_and_the_shortcut_is_taken(tmp_path: Path) -> None:
    hu = phantom_chest_hu((2, 16, 16))
    files = write_series(ct_series_datasets(hu, pixel_spacing=(0.7, 0.7)), tmp_path / "ct")
    taken = []
    real = profile._kept_as_read

    def counting(*args):  # noqa: ANN002, ANN202
        taken.append(real(*args))
        return taken[-1]

    for path in files:
        assert_same(path)
        with mock.patch.object(profile, "_kept_as_read", counting):
            Pseudonymizer(DeidSettings(), SECRET).pseudonymize(dcmread(path))
    assert sum(taken) >= 10  # Image Type, Manufacturer, Modality, descriptors, ...
    assert not all(taken)  # and elements it must not keep go the ordinary way


@pytest.mark.parametrize("charset", [None, "ISO_IR 100", "ISO_IR 192", "GB18030",
                                     ["", "ISO 2022 IR 87"], "ISO 2022 IR 13"])
def test_edge_values(tmp_path: Path, charset: str | list[str] | None) -> None:
    path = tmp_path / "edge.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = _edge_case(charset, "1.2.840.10008.1.2.1")
        ds.Manufacturer = "ACME  "  # non-canonical padding: must go the ordinary way
        ds.StationName = "CT\\\\Dr Huber"  # an empty value and a name to cut
        ds.save_as(path, enforce_file_format=True)
    assert_same(path)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True, database=None)
@given(cases())
def test_deid_fuzz_cases(tmp_path_factory, case) -> None:  # noqa: ANN001
    data, _ = case
    path = tmp_path_factory.getbasetemp() / "kept.dcm"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same(path)
