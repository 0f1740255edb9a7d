"""DICOM Parametric Map of an engine's voxel maps (heat maps, radiomic feature maps).

One Parametric Map instance per :class:`~ai_engines.findings.VoxelMap` on a tomographic or
enhanced multi-frame source: 32-bit float frames on the source grid, with a Real World Value
Mapping that names the map's quantity (Quantity Definition) and unit (UCUM), identity slope
and intercept, so a viewer shows the engine's values unchanged.

A planar multi-frame source (NM whole-body views) gets no Parametric Map: the IOD requires a
Frame of Reference and a Plane Position (Patient) per frame (dciodvfy reports both missing),
and planar views have neither.  Their maps are drawn in the key image.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from ai_engines.findings import Findings, VoxelMap
from dicom_node.results.coding import coded_concept
from dicom_node.results.options import PM_SERIES_OFFSET, ResultOptions
from dicom_node.results.source import (
    SourceGrid,
    ascii_text,
    check_source_series,
    copy_patient_study,
    new_uid,
    replace_generated_uids,
    series_description,
    set_file_meta,
    source_grid,
    uids_in,
)


def maps_on(findings: Findings, series_uid: str) -> list[VoxelMap]:
    """The findings' maps that lie on ``series_uid``."""
    return [m for m in findings.maps
            if (m.source_series_uid or findings.source_series_uid) == series_uid]


def _map_label(voxel_map: VoxelMap) -> str:
    label = re.sub(r"[^A-Z0-9_]", "_", voxel_map.label.upper()).strip("_")
    return (label or "MAP")[:16]


def _value_mapping(voxel_map: VoxelMap, values: np.ndarray) -> hd.pm.RealWorldValueMapping:
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    return hd.pm.RealWorldValueMapping(
        lut_label=ascii_text(voxel_map.label, 16) or "MAP",
        lut_explanation=ascii_text(voxel_map.description or voxel_map.label, 64) or "map",
        unit=coded_concept(voxel_map.unit),
        value_range=(low, high),
        slope=1.0,
        intercept=0.0,
        quantity_definition=coded_concept(voxel_map.quantity),
    )


def _window(values: np.ndarray) -> hd.VOILUTTransformation:
    finite = values[np.isfinite(values)]
    low, high = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
    width = max(float(high - low), 1e-6)
    # LINEAR_EXACT: maps in [0, 1] need a window narrower than 1, which LINEAR forbids.
    return hd.VOILUTTransformation(window_center=float(low + width / 2), window_width=width,
                                   voi_lut_function="LINEAR_EXACT")


def _parametric_map(
    findings: Findings,
    voxel_map: VoxelMap,
    source_images: list[Dataset],
    values: np.ndarray,
    series_uid: str,
    instance_number: int,
    options: ResultOptions,
) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # highdicom's notes on derived values
        pmap = hd.pm.ParametricMap(
            source_images=source_images,
            pixel_array=values,
            series_instance_uid=series_uid,
            series_number=options.series_number(PM_SERIES_OFFSET),
            sop_instance_uid=new_uid(),
            instance_number=instance_number,
            manufacturer=options.manufacturer,
            manufacturer_model_name=options.manufacturer_model_name,
            software_versions=options.software_version,
            device_serial_number=options.device_serial_number,
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[_value_mapping(voxel_map, values)],
            voi_lut_transformations=[_window(values)],
            content_label=_map_label(voxel_map),
            content_description=ascii_text(
                f"AI map {voxel_map.label} {findings.engine.name} {findings.engine.version}", 64),
            transfer_syntax_uid=ExplicitVRLittleEndian,
        )
    copy_patient_study(source_images[0], pmap)
    pmap.SeriesDescription = series_description("MAP", findings)
    # General Series Type 2C: written empty, as for the key images.
    pmap.Laterality = ""
    if options.institution_label:
        pmap.InstitutionName = options.institution_label
    return pmap


def build_parametric_maps(
    findings: Findings,
    source_datasets: Sequence[Dataset] | SourceGrid,
    options: ResultOptions,
    *,
    series_uid: str | None = None,
) -> list[Dataset]:
    """Encode the findings' voxel maps on one source series as Parametric Maps.

    Parameters
    ----------
    findings
        Engine output; its ``maps`` on ``series_uid`` are written (none: empty list).
    source_datasets
        The source series (slices in volume order, one multi-frame instance, or a grid).
    options
        Equipment identification and series numbering (Parametric Map series: base + 5).
    series_uid
        The source series; default ``findings.source_series_uid``.

    Returns
    -------
    list of pydicom.dataset.Dataset
        Parametric Map Storage instances of one new series, one per map.

    Raises
    ------
    ValueError
        If the findings are declined, a map is not on the source grid, or the source is
        planar.
    """
    grid = (source_datasets if isinstance(source_datasets, SourceGrid)
            else source_grid(source_datasets))
    grid = check_source_series(findings, grid, series_uid)
    if findings.declined:
        raise ValueError("declined findings have no parametric map")
    if grid.planar:
        raise ValueError("planar views have no patient-space position, which a Parametric "
                         "Map needs: the map is drawn in the key image instead")
    voxel_maps = maps_on(findings, grid.series_uid)
    series = new_uid()
    keep = uids_in(grid.instances)
    objects: list[Dataset] = []
    for voxel_map in voxel_maps:
        values = np.nan_to_num(voxel_map.values.astype(np.float32), nan=0.0,
                               posinf=0.0, neginf=0.0)
        if grid.multiframe:
            # highdicom wants the frames in the source's frame order.
            frames = np.empty_like(values)
            for k, item in enumerate(grid.slices):
                frames[int(item.frame_number or 1) - 1] = values[k]
            source_images, values = [grid.first], frames
        else:
            source_images = list(grid.instances)
        objects.append(_parametric_map(findings, voxel_map, source_images, values, series,
                                       len(objects) + 1, options))
    for pmap in objects:
        replace_generated_uids(pmap, keep=keep)
        set_file_meta(pmap)
    return objects
