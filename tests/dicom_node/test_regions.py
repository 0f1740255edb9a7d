"""Regions that arrive with a study: RTSTRUCT ROIs as masks on their CT, read by the node the
way plastimatch reads them, and handed to engines that ask for regions."""

from __future__ import annotations

import copy
import shutil
import subprocess
import time

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813

from ai_engines import codes
from ai_engines.acceptance import Acceptance, RegionRequirement, SeriesRequirement
from ai_engines.findings import EngineIdentity, Findings, Segment
from ai_engines.spec import EngineSpec
from dicom_node.config import parse_config
from dicom_node.node import Node
from dicom_node.regions import RTSTRUCT_STORAGE, read_regions
from dicom_node.results.rtstruct import build_rtstruct
from dicom_node.sample_data import PatientIdentity, ct_series_datasets, write_series
from dicom_node.volumes import build_volume
from dicom_node.worker import JobRunner
from storage.studies import study_series

SHAPE = (10, 48, 48)

REGION_PROBE = EngineSpec(
    name="region_probe", version="0", title="asks for regions", models=(),
    factory="tests.dicom_node.test_regions:none",
    acceptance=Acceptance(series=(SeriesRequirement("CT", ("CT",)),),
                          regions=RegionRequirement(name_pattern=".*", min_count=1)),
)


def _masks() -> dict[str, np.ndarray]:
    # Solid shapes: plastimatch fills an inner contour instead of cutting a hole (holes are
    # checked against known masks in test_training_data.py).
    rows, cols = np.mgrid[: SHAPE[1], : SHAPE[2]]
    disc = np.zeros(SHAPE, dtype=bool)
    for k in range(2, 7):
        disc[k] = (rows - 20) ** 2 + (cols - 22) ** 2 <= 100
    blob = np.zeros(SHAPE, dtype=bool)
    blob[4:9, 30:40, 8:16] = True
    return {"GTV": disc, "Lung_L": blob}


@pytest.fixture
def study(tmp_path):
    """A CT and an RTSTRUCT on it (written by the node's own writer, as a planning system
    would send it), both in one study."""
    identity = PatientIdentity()
    rng = np.random.default_rng(3)
    datasets = ct_series_datasets(rng.normal(-700, 50, SHAPE), identity=identity,
                                  pixel_spacing=(0.9, 0.9), slice_spacing=2.0,
                                  origin=(-20.0, -30.0, 10.0))
    segments = tuple(
        Segment(label=name, description=name, category=codes.ANATOMICAL_STRUCTURE,
                property_type=codes.LUNG, rt_interpreted_type="ORGAN",
                color_rgb=(255, 0, 0), mask=mask) for name, mask in _masks().items())
    findings = Findings(EngineIdentity("planning", "1", "none", "0" * 64),
                        str(datasets[0].SeriesInstanceUID), segments=segments)
    config = parse_config({
        "node": {"data_dir": str(tmp_path / "var")},
        "database": {"url": f"sqlite:///{tmp_path / 'var' / 'node.db'}"},
        "jobs": {"workers": 0}, "completion": {"quiet_seconds": 0.05},
        "peers": [{"name": "pacs", "ae_title": "PACS", "port": 104, "kind": "clinical"}],
    })
    node = Node(config, workers=0, send=False)
    runner = JobRunner(node.config, node.db, node.files, "2.25.99")
    rtstruct = build_rtstruct(findings, datasets, runner.options)
    yield node, runner, datasets, rtstruct
    node.db.dispose()


def test_rtstruct_rois_become_regions_on_their_series(study):
    _, _, datasets, rtstruct = study
    volume = build_volume(datasets)
    regions = read_regions(rtstruct, [volume])
    expected = _masks()
    assert [r.name for r in regions] == list(expected)
    for region in regions:
        assert region.series_uid == volume.series_uid
        assert region.source_sop_class_uid == RTSTRUCT_STORAGE
        assert region.source_sop_instance_uid == str(rtstruct.SOPInstanceUID)
        assert region.source_series_uid == str(rtstruct.SeriesInstanceUID)
        assert region.source_number in (1, 2)
        truth = expected[region.name]
        dice = 2 * (region.mask & truth).sum() / (region.mask.sum() + truth.sum())
        assert dice >= 0.95, (region.name, dice)


def test_an_rtstruct_sent_with_a_ct_reaches_the_engine_as_plastimatchs_masks(study, tmp_path):
    if shutil.which("plastimatch") is None:
        pytest.skip("plastimatch (Debian) is not installed")
    node, runner, datasets, rtstruct = study
    # plastimatch reads the RTSTRUCT as sent, on the CT as sent.
    ct_dir = tmp_path / "ct"
    write_series(datasets, ct_dir)
    rt_path = tmp_path / "rt.dcm"
    rtstruct.save_as(rt_path, enforce_file_format=True)
    out = tmp_path / "masks"
    result = subprocess.run(
        ["plastimatch", "convert", "--input", str(rt_path), "--referenced-ct", str(ct_dir),
         "--output-prefix", str(out), "--prefix-format", "nrrd"],
        capture_output=True, text=True, errors="replace", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    reference = {p.stem: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) > 0
                 for p in out.glob("*.nrrd")}
    assert sorted(reference) == ["GTV", "Lung_L"]

    # The node receives both (de-identified at the boundary) and selects them for an engine.
    for ds in [*datasets, rtstruct]:
        assert node.receiver.ingest(copy.deepcopy(ds), "PACS") == 0x0000
    time.sleep(0.1)
    (completed,) = node.completion.run_once()
    with node.db.session() as session:
        stored = study_series(session, completed.study_id)
    volumes, _, regions, notes = runner._select(REGION_PROBE, stored)
    assert [v.modality for v in volumes] == ["CT"]
    assert {r.name for r in regions} == {"GTV", "Lung_L"}, notes
    for region in regions:
        assert region.series_uid == volumes[0].series_uid  # pseudonymous UIDs, consistent
        theirs = reference[region.name]
        assert theirs.shape == region.mask.shape
        dice = 2 * (region.mask & theirs).sum() / (region.mask.sum() + theirs.sum())
        assert dice >= 0.95, (region.name, dice)
        assert abs(int(region.mask.sum()) - int(theirs.sum())) <= 0.05 * theirs.sum()
