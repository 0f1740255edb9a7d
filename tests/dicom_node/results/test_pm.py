"""Parametric Map writer: float values on the source grid, real world value mapping, dciodvfy."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from ai_engines import codes
from ai_engines.findings import EngineIdentity, Findings, VoxelMap
from dicom_node.results import ResultOptions, build_result_objects
from dicom_node.results.pm import build_parametric_maps
from tests.dicom_node.results.conftest import JOINT_ENTROPY, SHAPE, save


@pytest.fixture(scope="module")
def ct_map_findings(findings: Findings) -> Findings:
    values = np.random.default_rng(5).random(SHAPE) * 6.0  # e.g. an entropy map, 0-6 bits
    values[3, 10, 10] = np.nan  # a voxel the engine could not compute
    entropy = VoxelMap(label="GLCM_Entropy", description="GLCM joint entropy, 5x5, 64 levels",
                       quantity=JOINT_ENTROPY, unit=codes.UNIT_NONE, values=values)
    return dataclasses.replace(findings, maps=(entropy,))


def test_map_values_read_back_on_the_source_grid(
    tmp_path: Path, ct_map_findings: Findings, source_datasets: list[Dataset],
    options: ResultOptions,
) -> None:
    (pmap,) = build_parametric_maps(ct_map_findings, source_datasets, options)
    read = pydicom.dcmread(save(pmap, tmp_path / "pm.dcm"))
    assert read.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    assert read.FrameOfReferenceUID == source_datasets[0].FrameOfReferenceUID
    assert read.StudyInstanceUID == source_datasets[0].StudyInstanceUID
    assert read.SeriesNumber == 9005 and read.SeriesInstanceUID.startswith("2.25.")
    assert read.BitsAllocated == 32 and "FloatPixelData" in read
    # One frame per source slice, in the source's order (each frame names its slice).
    frames = read.pixel_array
    expected = np.nan_to_num(ct_map_findings.maps[0].values.astype(np.float32), nan=0.0)
    by_instance = {}
    for index, frame in enumerate(read.PerFrameFunctionalGroupsSequence):
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        by_instance[uid] = frames[index]
    for k, ds in enumerate(source_datasets):
        np.testing.assert_array_equal(by_instance[ds.SOPInstanceUID], expected[k])
    mapping = read.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    assert (float(mapping.RealWorldValueSlope), float(mapping.RealWorldValueIntercept)) == (1, 0)
    quantity = mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0]
    assert (quantity.CodeValue, quantity.CodingSchemeDesignator) == ("TU0O", "IBSI")
    assert read.ContentLabel == "GLCM_ENTROPY"


def test_map_passes_dciodvfy(tmp_path: Path, ct_map_findings: Findings,
                             source_datasets: list[Dataset], options: ResultOptions,
                             dciodvfy_errors: Callable[[Path], list[str]]) -> None:
    (pmap,) = build_parametric_maps(ct_map_findings, source_datasets, options)
    assert dciodvfy_errors(save(pmap, tmp_path / "pm.dcm")) == []


def test_maps_come_last_and_ct_objects_stay(ct_map_findings: Findings,
                                           source_datasets: list[Dataset],
                                           options: ResultOptions) -> None:
    objects = build_result_objects(ct_map_findings, source_datasets, options)
    assert [ds.Modality for ds in objects][:3] == ["SEG", "RTSTRUCT", "SR"]
    assert objects[-1].SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"


def test_map_rejects_wrong_grid_and_planar(findings: Findings, source_datasets: list[Dataset],
                                           nm_dataset: Dataset, engine: EngineIdentity,
                                           options: ResultOptions) -> None:
    wrong = VoxelMap(label="X", description="", quantity=JOINT_ENTROPY, unit=codes.UNIT_NONE,
                     values=np.zeros((SHAPE[0] - 1, *SHAPE[1:])))
    with pytest.raises(ValueError, match="not the source grid"):
        build_parametric_maps(dataclasses.replace(findings, maps=(wrong,)), source_datasets,
                              options)
    planar = Findings(engine=engine, source_series_uid=str(nm_dataset.SeriesInstanceUID),
                      maps=(VoxelMap(label="X", description="", quantity=JOINT_ENTROPY,
                                     unit=codes.UNIT_NONE,
                                     values=np.zeros((2, nm_dataset.Rows, nm_dataset.Columns))),))
    with pytest.raises(ValueError, match="planar"):
        build_parametric_maps(planar, [nm_dataset], options)
