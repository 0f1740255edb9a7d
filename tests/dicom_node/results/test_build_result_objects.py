"""build_result_objects: object order, decline policy, and the shared validator script."""

from __future__ import annotations

import copy
import dataclasses
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from ai_engines.findings import Findings
from dicom_node.results import ResultOptions, build_result_objects
from dicom_node.sample_data import PatientIdentity, ct_series_datasets, write_series
from tests.dicom_node.results.conftest import ORIGIN, PIXEL_SPACING, SHAPE, save


def _write_outputs(objects: list[Dataset], directory: Path) -> None:
    for number, ds in enumerate(objects, start=1):
        save(ds, directory / f"{number:02d}_{ds.Modality}.dcm")


def test_objects_in_sending_order(findings: Findings, source_datasets: list[Dataset],
                                  options: ResultOptions) -> None:
    objects = build_result_objects(findings, source_datasets, options)
    assert [ds.Modality for ds in objects] == ["SEG", "RTSTRUCT", "SR", "OT", "OT", "OT"]
    assert len({ds.SeriesInstanceUID for ds in objects}) == 4
    assert [ds.SeriesNumber for ds in objects[:4]] == [9001, 9002, 9003, 9004]
    sr = objects[2]
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert objects[0].SeriesInstanceUID in {s.SeriesInstanceUID for s in evidence}
    for ds in objects:
        assert ds.SeriesDescription.isascii() and "AI" in ds.SeriesDescription
        assert ds.SpecificCharacterSet == source_datasets[0].SpecificCharacterSet
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert ds.Manufacturer == options.manufacturer


def test_declined_run_gives_sr_and_picture(declined_findings: Findings,
                                           source_datasets: list[Dataset],
                                           options: ResultOptions) -> None:
    objects = build_result_objects(declined_findings, source_datasets, options)
    assert [ds.Modality for ds in objects] == ["SR", "OT"]
    no_pictures = dataclasses.replace(options, include_secondary_capture=False)
    assert [ds.Modality for ds in build_result_objects(declined_findings, source_datasets,
                                                       no_pictures)] == ["SR"]


def test_no_segments_gives_no_seg_or_rtstruct(findings: Findings,
                                              source_datasets: list[Dataset],
                                              options: ResultOptions) -> None:
    bare = dataclasses.replace(findings, segments=())
    objects = build_result_objects(bare, source_datasets, options)
    assert [ds.Modality for ds in objects] == ["SR", "OT"]


def test_rtstruct_only_for_ct_and_mr(findings: Findings, source_datasets: list[Dataset],
                                     options: ResultOptions) -> None:
    nm = [copy.deepcopy(ds) for ds in source_datasets]
    for ds in nm:
        ds.Modality = "NM"
    objects = build_result_objects(findings, nm,
                                   dataclasses.replace(options, include_secondary_capture=False))
    assert [ds.Modality for ds in objects] == ["SEG", "SR"]


def _dcmpschk_attributes(path: Path) -> set[str]:
    result = subprocess.run(["dcmpschk", str(path)], capture_output=True, timeout=60,
                            text=True, errors="replace")
    text = result.stdout + result.stderr
    return set(re.findall(r"Affected attribute: (\w+) \(\w{4},\w{4}\), Type PN", text))


def test_validate_outputs_script_with_ascii_names(
    tmp_path: Path, findings: Findings, options: ResultOptions,
    validate_outputs: Callable[[Path, Path], subprocess.CompletedProcess[str]],
) -> None:
    identity = PatientIdentity(name="Testperson^Anna", referring_physician="Doktor^Bernd")
    source = ct_series_datasets(np.full(SHAPE, -700.0), identity=identity,
                                pixel_spacing=PIXEL_SPACING, origin=ORIGIN)
    ascii_findings = dataclasses.replace(findings,
                                         source_series_uid=source[0].SeriesInstanceUID)
    write_series(source, tmp_path / "src")
    _write_outputs(build_result_objects(ascii_findings, source, options), tmp_path / "out")
    result = validate_outputs(tmp_path / "src", tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr


def test_validate_outputs_script_with_non_latin_names(
    tmp_path: Path, findings: Findings, source_datasets: list[Dataset], source_dir: Path,
    options: ResultOptions,
    validate_outputs: Callable[[Path, Path], subprocess.CompletedProcess[str]],
) -> None:
    """dcmpschk 3.6.7 rejects UTF-8 person names (in the source too); nothing else may fail."""
    out = tmp_path / "out"
    _write_outputs(build_result_objects(findings, source_datasets, options), out)
    result = validate_outputs(source_dir, out)
    failures = [line for line in result.stdout.splitlines() if line.strip()]
    unexpected = [line for line in failures
                  if not line.startswith("VR FAIL") and line != "xref OK"]
    assert unexpected == [], result.stdout + result.stderr
    if shutil.which("dcmpschk") is None:
        return
    source_pn = _dcmpschk_attributes(next(source_dir.glob("*.dcm")))
    for line in failures:
        if line.startswith("VR FAIL"):
            failing = Path(line.split(" ", 2)[2])
            checked = subprocess.run(["dcmpschk", str(failing)], capture_output=True,
                                     text=True, errors="replace", timeout=60)
            text = checked.stdout + checked.stderr
            errors = text.count("Error: ")
            pn = _dcmpschk_attributes(failing)
            assert pn and pn <= source_pn and errors == len(pn), text[-3000:]
