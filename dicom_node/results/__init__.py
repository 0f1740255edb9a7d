"""Result-object writers: engine findings -> SEG, RTSTRUCT, TID 1500 SR, key images.

``build_result_objects`` is the entry point; each object family also has its own module
(:mod:`.seg`, :mod:`.rtstruct`, :mod:`.sr`, :mod:`.capture`).  See docs/result-objects.md
for IOD choices and the empty-result policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydicom.dataset import Dataset

from ai_engines.findings import Findings
from ai_engines.volume import SliceReference
from dicom_node.results.options import ResultOptions, SrStorage

# Modalities for which an RT structure set makes sense (RT planning images).
RTSTRUCT_MODALITIES = frozenset({"CT", "MR"})

__all__ = ["RTSTRUCT_MODALITIES", "ResultOptions", "SrStorage", "build_result_objects"]


def build_result_objects(
    findings: Findings,
    source_datasets: Sequence[Dataset],
    options: ResultOptions,
    *,
    sources: Mapping[str, Sequence[Dataset]] | None = None,
    slices: Mapping[str, Sequence[SliceReference]] | None = None,
) -> list[Dataset]:
    """Every result object for one engine run, in sending order.

    Parameters
    ----------
    findings
        What the engine produced (or its decline).
    source_datasets
        The pseudonymized source series of ``findings.source_series_uid``: single-frame
        slices in the engine's volume order, or one multi-frame instance (NM, enhanced
        CT/MR; given once or once per frame).
    options
        Equipment identification, series numbering, SR class, whether to add key images.
    sources
        The other series of the study that segments, maps, image-level classifications or
        measured regions lie on, by Series Instance UID (each as ``source_datasets``).
    slices
        A volume's slice references (``SeriesVolume.slices``) by Series Instance UID: the
        order of its slices and frames.  Without it, single-frame slices keep the order
        given and a multi-frame instance's frames are ordered as the volume reader does.

    Returns
    -------
    list of pydicom.dataset.Dataset
        ``[SEG..., RTSTRUCT..., SR, SC..., PM...]``: per source series with segments a SEG
        (one per view for planar NM) and, for single-frame CT/MR slices, an RTSTRUCT; one SR;
        key images per source series with something to show; a Parametric Map series per
        tomographic source series with voxel maps (planar views: the key image only).  SEG and RTSTRUCT are left out when the findings have
        no segments (the SR says so).  A declined run gives only the SR (and, if enabled,
        one secondary capture stating the decline).

    Raises
    ------
    ValueError
        If a source series does not match the findings, a segment or map lies on a series
        that was not given, or the options are incomplete.
    """
    from dicom_node.results.capture import build_key_images
    from dicom_node.results.pm import build_parametric_maps, maps_on
    from dicom_node.results.rtstruct import build_rtstruct
    from dicom_node.results.seg import build_segmentations, segments_on
    from dicom_node.results.source import SourceGrid, check_source_series, source_grid
    from dicom_node.results.sr import build_measurement_report

    order = dict(slices or {})
    given = {findings.source_series_uid: source_datasets, **(sources or {})}
    given[findings.source_series_uid] = source_datasets
    grids: dict[str, SourceGrid] = {
        uid: check_source_series(findings, source_grid(datasets, order.get(uid)), uid)
        for uid, datasets in given.items()
    }
    # Series with something drawn on them, the engine's own series first.
    used = [findings.source_series_uid]
    if not findings.declined:
        for uid in [s.source_series_uid for s in findings.segments] + \
                [m.source_series_uid for m in findings.maps]:
            if uid and uid not in used:
                used.append(uid)
    missing = [uid for uid in used if uid not in grids]
    if missing:
        raise ValueError(f"{len(missing)} series that segments or maps lie on were not given")

    segmentations: list[Dataset] = []
    structure_sets: list[Dataset] = []
    parametric_maps: list[Dataset] = []
    if not findings.declined:
        for uid in used:
            grid = grids[uid]
            if segments_on(findings, uid):
                segmentations += build_segmentations(findings, grid, options, series_uid=uid)
                if grid.modality in RTSTRUCT_MODALITIES and grid.tomographic:
                    structure_sets.append(build_rtstruct(findings, grid, options,
                                                         series_uid=uid))
            # Planar views have no patient-space geometry for a Parametric Map: their maps
            # are drawn in the key image only.
            if maps_on(findings, uid) and not grid.planar:
                parametric_maps += build_parametric_maps(findings, grid, options,
                                                         series_uid=uid)
    objects: list[Dataset] = [*segmentations, *structure_sets]
    primary = grids[findings.source_series_uid]
    # The SR's evidence: the series its groups reference, not every series given.
    referenced = set(used[1:])
    if not findings.declined:
        referenced |= {c.source_series_uid for c in findings.classifications
                       if c.source is not None and c.source_series_uid}
        referenced |= {r.region.series_uid for r in findings.region_measurements}
    objects.append(build_measurement_report(
        findings, primary, segmentations or None, options,
        sources={uid: grids[uid] for uid in referenced
                 if uid in grids and uid != primary.series_uid}))
    if options.include_secondary_capture:
        objects.extend(build_key_images(findings, primary, options))
        for uid in used[1:]:
            objects.extend(build_key_images(findings, grids[uid], options, series_uid=uid))
    objects.extend(parametric_maps)
    return objects
