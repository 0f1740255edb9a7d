"""Result-object writers: engine findings -> SEG, RTSTRUCT, TID 1500 SR, key images.

``build_result_objects`` is the entry point; each object family also has its own module
(:mod:`.seg`, :mod:`.rtstruct`, :mod:`.sr`, :mod:`.capture`).  See docs/result-objects.md
for IOD choices and the empty-result policy.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

from ai_engines.findings import Findings
from dicom_node.results.options import ResultOptions, SrStorage

# Modalities for which an RT structure set makes sense (RT planning images).
RTSTRUCT_MODALITIES = frozenset({"CT", "MR"})

__all__ = ["RTSTRUCT_MODALITIES", "ResultOptions", "SrStorage", "build_result_objects"]


def build_result_objects(
    findings: Findings,
    source_datasets: Sequence[Dataset],
    options: ResultOptions,
) -> list[Dataset]:
    """Every result object for one engine run, in sending order.

    Parameters
    ----------
    findings
        What the engine produced (or its decline).
    source_datasets
        The pseudonymized source slices, in the engine's volume order.
    options
        Equipment identification, series numbering, SR class, whether to add key images.

    Returns
    -------
    list of pydicom.dataset.Dataset
        ``[SEG, RTSTRUCT, SR, SC...]``.  RTSTRUCT only for CT/MR sources.  SEG and RTSTRUCT
        are left out when the findings have no segments (the SR says so).  A declined run
        gives only the SR (and, if enabled, one secondary capture stating the decline).

    Raises
    ------
    ValueError
        If the source series does not match the findings or the options are incomplete.
    """
    from dicom_node.results.capture import build_key_images
    from dicom_node.results.rtstruct import build_rtstruct
    from dicom_node.results.seg import build_segmentation
    from dicom_node.results.source import check_source_series
    from dicom_node.results.sr import build_measurement_report

    check_source_series(findings, source_datasets)
    objects: list[Dataset] = []
    segmentation: Dataset | None = None
    if not findings.declined and findings.segments:
        segmentation = build_segmentation(findings, source_datasets, options)
        objects.append(segmentation)
        if source_datasets[0].Modality in RTSTRUCT_MODALITIES:
            objects.append(build_rtstruct(findings, source_datasets, options))
    objects.append(build_measurement_report(findings, source_datasets, segmentation, options))
    if options.include_secondary_capture:
        objects.extend(build_key_images(findings, source_datasets, options))
    return objects
