"""Radiomics engine: IBSI 1 features of every region that arrived with the study, and an exact
GLCM entropy map over the regions' slab.

Input: one CT, MR or PET series and the regions (RTSTRUCT ROIs, SEG segments) the node
rasterised onto it.  Output: :class:`~ai_engines.findings.RegionMeasurements` per region with
one :class:`~ai_engines.findings.Measurement` per feature (coded with its IBSI identifier),
a :class:`~ai_engines.findings.VoxelMap` of GLCM joint entropy, and the settings in the notes.
:func:`features_csv` turns the findings into the CSV a researcher opens.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ai_engines import codes
from ai_engines.codes import Code
from ai_engines.engine import Engine
from ai_engines.findings import (
    Decline,
    EngineIdentity,
    Findings,
    Measurement,
    RegionMeasurements,
    VoxelMap,
)
from ai_engines.radiomics.features import FeatureValue, compute_features
from ai_engines.radiomics.ibsi import AGGREGATIONS, FEATURES
from ai_engines.radiomics.maps import glcm_feature_maps, quantise
from ai_engines.radiomics.preprocess import bounding_box
from ai_engines.radiomics.settings import IBSI_C, IBSI_D, RadiomicsSettings
from ai_engines.radiomics.spec import ACCEPTANCE, ENGINE_VERSION
from ai_engines.volume import RoiContours, SeriesVolume, StudyInput

IBSI_SCHEME = "IBSI"  # coding scheme designator of the IBSI feature identifiers

# Decline codes of this engine.
RADIOMICS_NO_MEASURABLE_REGION = "RADIOMICS_NO_MEASURABLE_REGION"
QC_SHEARED_STACK = "QC_SHEARED_STACK"

SETTINGS_NOTE_PREFIX = "radiomics settings: "
MAP_LABEL = "GLCM_Entropy"
UNIT_ARBITRARY = Code("[arb'U]", "UCUM", "arbitrary unit")
UNIT_BQ_ML = Code("Bq/mL", "UCUM", "becquerels per milliliter")
_FIXED_UNITS = {
    "mm": codes.UNIT_MM,
    "mm2": Code("mm2", "UCUM", "square millimeter"),
    "mm3": codes.UNIT_MM3,
    "/mm": Code("/mm", "UCUM", "per millimeter"),
    "1": codes.UNIT_NONE,
}


def _intensity_unit(modality: str) -> Code:
    if modality == "CT":
        return codes.UNIT_HU
    if modality == "PT":
        return UNIT_BQ_ML
    return UNIT_ARBITRARY


def unit_code(unit: str, modality: str) -> Code:
    """UCUM code of a feature unit ("[I]" is the image's intensity unit)."""
    if unit in _FIXED_UNITS:
        return _FIXED_UNITS[unit]
    intensity = _intensity_unit(modality)
    if unit == "[I]":
        return intensity
    if unit == "[I]2":
        return Code(f"{intensity.value}2", "UCUM", f"{intensity.meaning} squared")
    if unit == "[I].mm3":
        return Code(f"{intensity.value}.mm3", "UCUM", f"{intensity.meaning} times cubic millimeter")
    raise ValueError(f"unknown unit {unit!r}")


def feature_measurement(value: FeatureValue, modality: str) -> Measurement:
    """One feature as a Measurement: concept name = IBSI code; aggregation as modifier."""
    modifier = None
    if value.aggregation != "3D":
        modifier = Code(value.aggregation_code, IBSI_SCHEME, AGGREGATIONS[value.aggregation][1])
    return Measurement(
        name=Code(value.code, IBSI_SCHEME, value.name),
        value=value.value,
        unit=unit_code(value.unit, modality),
        modifier=modifier,
        description=value.tag,
    )


def _spacing(series: SeriesVolume) -> tuple[float, float, float]:
    geometry = series.geometry
    z = geometry.slice_spacing
    if z <= 0:
        z = geometry.slice_thickness or min(geometry.pixel_spacing)
    return (float(z), float(geometry.pixel_spacing[0]), float(geometry.pixel_spacing[1]))


def _shear_deg(series: SeriesVolume) -> float:
    origins = series.geometry.slice_origins
    if len(origins) < 2:
        return 0.0
    stack = origins[-1] - origins[0]
    norm = float(np.linalg.norm(stack))
    if norm == 0:
        return 0.0
    cosine = abs(float(np.dot(stack / norm, series.geometry.normal)))
    return math.degrees(math.acos(min(cosine, 1.0)))


class RadiomicsEngine(Engine):
    """IBSI 1 radiomic features of received regions on CT, MR or PET.

    Parameters
    ----------
    model_dir
        Unused (the engine has no model); accepted for the common constructor.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``: where the feature map is computed.
    threads
        CPU threads for the feature map (None: 2).
    settings
        One :class:`RadiomicsSettings` for every modality; ``None``: ``settings_by_modality``.
    settings_by_modality
        Settings per modality; the defaults are IBSI configuration C for CT (calibrated HU:
        2 mm isotropic, re-segmentation [-1000, 400] HU, FBS 25 HU) and configuration D for
        MR and PET (2 mm isotropic, 3-sigma outlier filter, FBN 32: no HU assumptions).
    """

    name = "radiomics"
    version = ENGINE_VERSION
    acceptance = ACCEPTANCE

    def __init__(self, model_dir: Path | None = None, device: str = "auto", threads: int | None = None,
                 settings: RadiomicsSettings | None = None,
                 settings_by_modality: Mapping[str, RadiomicsSettings] | None = None) -> None:
        from ai_engines.models import resolve_device

        self.device = resolve_device(device)
        self.threads = threads or 2
        if settings is not None:
            self.settings_by_modality = {m: settings for m in ("CT", "MR", "PT")}
        else:
            defaults = {"CT": IBSI_C, "MR": IBSI_D, "PT": IBSI_D}
            defaults.update(settings_by_modality or {})
            self.settings_by_modality = defaults

    def identity(self) -> EngineIdentity:
        """No model: the "model" is the IBSI 1 feature definitions with these settings."""
        description = "\n".join(
            f"{m}: {s.describe()}" for m, s in sorted(self.settings_by_modality.items())
        )
        return EngineIdentity(
            name=self.name,
            version=ENGINE_VERSION,
            model_name="IBSI 1 feature definitions (no trained model)",
            model_sha256=hashlib.sha256(description.encode()).hexdigest(),
            research_use_only=True,
            intended_use="IBSI 1 radiomic features of received regions (research use)",
        )

    def run(self, study: StudyInput) -> Findings:
        """Features of every selected region, a GLCM entropy map, or a decline."""
        selected = self.select_inputs(study)
        source_uid = study.series[0].series_uid if study.series else ""
        if isinstance(selected, Decline):
            return self.declined(source_uid, selected)
        series = selected["image"]
        shear = _shear_deg(series)
        if shear > 1.0:
            return self.declined(series.series_uid, Decline(
                QC_SHEARED_STACK,
                f"slices are stacked {shear:.1f} degrees off their normal (gantry tilt); "
                f"features need an orthogonal grid",
            ))
        settings = self.settings_by_modality[series.modality]
        spacing = _spacing(series)
        timings: dict[str, float] = {}
        notes: list[str] = [settings.describe()]
        results: list[RegionMeasurements] = []
        measured: list[RoiContours] = []
        started = time.perf_counter()
        for region in selected.regions:
            if region.mask.shape != series.shape:
                raise ValueError(
                    f"region {region.name!r} has mask shape {region.mask.shape}, series {series.shape}"
                )
            if not region.mask.any():
                notes.append(f"region {region.name!r}: empty mask, no features")
                continue
            try:
                feature_set = compute_features(series.voxels, region.mask, spacing, settings)
            except ValueError as error:  # empty after interpolation or re-segmentation
                notes.append(f"region {region.name!r}: {error}; no features")
                continue
            rows = [v for v in feature_set.values if math.isfinite(v.value)]
            skipped = sorted({v.tag for v in feature_set.values if not math.isfinite(v.value)})
            if skipped:
                notes.append(f"region {region.name!r}: undefined for this ROI: {', '.join(skipped)}")
            notes.extend(f"region {region.name!r}: {note}" for note in feature_set.notes)
            results.append(RegionMeasurements(
                region=region,
                measurements=tuple(feature_measurement(v, series.modality) for v in rows),
                tracking_id=region.name,
            ))
            measured.append(region)
        timings["features"] = time.perf_counter() - started
        if not results:
            return Findings(
                engine=self.identity(), source_series_uid=series.series_uid,
                decline=Decline(RADIOMICS_NO_MEASURABLE_REGION,
                                "no region had voxels to measure (empty, or outside the "
                                "re-segmentation range)"),
                notes=tuple(notes),
            )
        maps: tuple[VoxelMap, ...] = ()
        if settings.entropy_map:
            started = time.perf_counter()
            maps = (self._entropy_map(series, measured, settings),)
            timings["entropy_map"] = time.perf_counter() - started
            notes.append(
                f"{MAP_LABEL}: exact GLCM joint entropy (log2) per pixel, {settings.map_window}x"
                f"{settings.map_window} in-plane window, {settings.map_levels} grey levels (FBN "
                f"over the map range, clipped), symmetric, distance 1, averaged over 0/45/90/135 "
                f"degrees; computed on the slices that hold a region, 0 elsewhere"
            )
        return Findings(
            engine=self.identity(),
            source_series_uid=series.series_uid,
            maps=maps,
            region_measurements=tuple(results),
            notes=tuple(notes),
            timings_s=timings,
        )

    def _entropy_map(self, series: SeriesVolume, regions: list[RoiContours],
                     settings: RadiomicsSettings) -> VoxelMap:
        union = np.zeros(series.shape, dtype=bool)
        for region in regions:
            union |= region.mask
        slab = bounding_box(union)[0]
        if settings.map_range is not None:
            low, high = settings.map_range
        elif settings.resegmentation_range is not None and None not in settings.resegmentation_range:
            low, high = settings.resegmentation_range  # type: ignore[assignment]
        else:
            values = series.voxels[union]
            low, high = float(values.min()), float(values.max())
        levels = quantise(series.voxels[slab], settings.map_levels, float(low), float(high))
        entropy = glcm_feature_maps(levels, settings.map_levels, settings.map_window,
                                    ("cm.joint.entr",), device=self.device,
                                    threads=self.threads)["cm.joint.entr"]
        values = np.zeros(series.shape, dtype=np.float32)
        values[slab] = np.nan_to_num(entropy, nan=0.0)
        code, name, _ = FEATURES["cm.joint.entr"]
        return VoxelMap(
            label=MAP_LABEL,
            description=f"GLCM joint entropy, {settings.map_window}x{settings.map_window} window, "
                        f"{settings.map_levels} levels over [{low:g}, {high:g}]",
            quantity=Code(code, IBSI_SCHEME, name),
            unit=codes.UNIT_NONE,
            values=values,
            source_series_uid=series.series_uid,
        )


CSV_COLUMNS = (
    "study_uid", "series_uid", "region", "roi_number", "region_source", "region_source_uid",
    "family", "feature", "tag", "ibsi_code", "aggregation", "aggregation_code", "value", "unit",
    "settings_name", "settings", "engine_version",
)
_SOURCE_KINDS = {"1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT", "1.2.840.10008.5.1.4.1.1.66.4": "SEG"}


def _settings_of(findings: Findings) -> tuple[str, str]:
    """(name, full line) of the settings the findings were computed with."""
    for note in findings.notes:
        if note.startswith(SETTINGS_NOTE_PREFIX):
            line = note[len(SETTINGS_NOTE_PREFIX):]
            name = line.split(";", 1)[0].removeprefix("name=")
            return name, line
    return "", ""


def features_csv(findings: Findings, study_uid: str = "", header: bool = True) -> str:
    """The features of ``findings`` as CSV text: one row per region, feature and setting.

    Plain CSV (RFC 4180, UTF-8, comma, a header row; no comment lines), so a spreadsheet,
    pandas or R opens it as it is.  Columns: :data:`CSV_COLUMNS`: the study and image series
    UIDs (the node's pseudonymous ones), the region (name, ROI/segment number, the RTSTRUCT or
    SEG it came from), the IBSI family, feature name, symbol and identifier, the aggregation
    and its identifier, the value, its UCUM unit, and the settings it was computed with.

    Parameters
    ----------
    findings
        The radiomics engine's findings.
    study_uid
        The study's UID as the engine saw it (pseudonymous on the node).
    header
        Start with the header row (False to append to a file that has one).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    families = {code: family for code, _, family in FEATURES.values()}
    settings_name, settings_line = _settings_of(findings)
    for region in findings.region_measurements:
        contours = region.region
        for m in region.measurements:
            aggregation = m.modifier.meaning if m.modifier else "3D"
            aggregation_code = m.modifier.value if m.modifier else AGGREGATIONS["3D"][0]
            writer.writerow([
                study_uid,
                contours.series_uid,
                contours.name,
                "" if contours.source_number is None else contours.source_number,
                _SOURCE_KINDS.get(contours.source_sop_class_uid or "", ""),
                contours.source_sop_instance_uid or "",
                families.get(m.name.value, ""),
                m.name.meaning,
                m.description,
                m.name.value,
                aggregation,
                aggregation_code,
                repr(float(m.value)),
                m.unit.value,
                settings_name,
                settings_line,
                findings.engine.version,
            ])
    return buffer.getvalue()
