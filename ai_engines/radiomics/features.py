"""All IBSI 1 features of one ROI: image processing, then every family.

:func:`compute_features` is the one entry point; it returns :class:`FeatureValue` rows with
the IBSI tag, code and aggregation so writers (SR, CSV) need no further knowledge.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ai_engines.radiomics.ibsi import AGGREGATIONS, FAMILIES, FEATURES
from ai_engines.radiomics.intensity import (
    histogram_features,
    ivh_features,
    local_intensity_features,
    statistics_features,
)
from ai_engines.radiomics.morphology import morphology_features
from ai_engines.radiomics.preprocess import ProcessedRoi, discretise, process_roi
from ai_engines.radiomics.settings import RadiomicsSettings
from ai_engines.radiomics.texture import texture_features


@dataclass(frozen=True)
class FeatureValue:
    """One feature value with its IBSI identity."""

    tag: str  # IBSI symbol, e.g. "cm.joint.entr"
    code: str  # IBSI permanent identifier, e.g. "TU9B"
    name: str  # IBSI feature name, e.g. "Joint entropy"
    family: str  # IBSI family name
    family_code: str
    aggregation: str  # our aggregation name, e.g. "3D_merged" ("3D" for non-texture)
    aggregation_code: str  # IBSI code, e.g. "IAZD"
    value: float
    unit: str  # UCUM: "mm", "mm2", "mm3", "1" or the image's intensity unit marker "[I]"


@dataclass(frozen=True)
class FeatureSet:
    """The features of one ROI, with the notes the computation produced."""

    values: tuple[FeatureValue, ...]
    notes: tuple[str, ...]
    timings_s: dict[str, float]

    def as_dict(self) -> dict[tuple[str, str], float]:
        """``{(tag, aggregation_code): value}``."""
        return {(v.tag, v.aggregation_code): v.value for v in self.values}


_UNITS = {
    "morph.vol": "mm3", "morph.approx.vol": "mm3", "morph.area": "mm2", "morph.av": "/mm",
    "morph.comp.1": "1", "morph.com": "mm", "morph.diam": "mm", "morph.pca.major": "mm",
    "morph.pca.minor": "mm", "morph.pca.least": "mm",
}
# Features in the image's intensity unit (HU for CT) or its square.
_INTENSITY = {
    "loc.peak.local", "loc.peak.global", "stat.mean", "stat.median", "stat.min", "stat.P10",
    "stat.P90", "stat.max", "stat.iqr", "stat.range", "stat.mad", "stat.rmad", "stat.medad",
    "stat.rms",
}


_IVH_INTENSITY = {"ivh.I10", "ivh.I90", "ivh.I10minusI90"}


def _unit(tag: str, settings: RadiomicsSettings) -> str:
    if tag in _UNITS:
        return _UNITS[tag]
    if tag in _INTENSITY or (tag in _IVH_INTENSITY and settings.ivh_discretisation != "FBN"):
        return "[I]"
    if tag in ("stat.var", "stat.energy"):
        return "[I]2"
    if tag == "morph.integ.int":
        return "[I].mm3"
    return "1"


def _row(tag: str, aggregation: str, value: float, settings: RadiomicsSettings) -> FeatureValue:
    code, name, family = FEATURES[tag]
    return FeatureValue(
        tag=tag, code=code, name=name, family=family, family_code=FAMILIES[family][0],
        aggregation=aggregation, aggregation_code=AGGREGATIONS[aggregation][0],
        value=float(value), unit=_unit(tag, settings),
    )


def _ivh_input(roi: ProcessedRoi, values: np.ndarray,
               settings: RadiomicsSettings) -> tuple[np.ndarray, tuple[float, float], float]:
    """X_d,gl, the total range G and the step w_d for the intensity-volume histogram."""
    low, high = roi.resegmentation_range
    if settings.ivh_discretisation == "none":
        return np.round(values), (low, high), 1.0
    if settings.ivh_discretisation == "FBS":
        width = settings.ivh_bin_width
        bins, _ = discretise(values, "FBS", bin_width=width, low=low)
        centres = low + (bins - 0.5) * width
        return centres, (low + 0.5 * width, high - 0.5 * width), width
    bins, n_bins = discretise(values, "FBN", bin_number=settings.ivh_bin_number)
    return bins.astype(np.float64), (1.0, float(n_bins)), 1.0


def features_of_processed(roi: ProcessedRoi, settings: RadiomicsSettings) -> FeatureSet:
    """Every family on an already processed ROI (the IBSI phantom enters here)."""
    timings: dict[str, float] = {}
    rows: list[FeatureValue] = []
    wanted = set(settings.families)
    morph: dict[str, float] = {}
    notes: list[str] = []
    if "morph" in wanted:
        t = time.perf_counter()
        morph, notes = morphology_features(
            roi.image, roi.morph_mask, roi.intensity_mask, roi.spacing, settings.moran_max_voxels
        )
        timings["morphology"] = time.perf_counter() - t
    values = roi.image[roi.intensity_mask]
    t = time.perf_counter()
    first_order = local_intensity_features(roi.image, roi.intensity_mask, roi.spacing)
    first_order.update(statistics_features(values))
    # FBS bins start at the lower re-segmentation bound, else at the ROI minimum.
    low = settings.resegmentation_range[0] if settings.resegmentation_range else None
    grey, n_levels = discretise(values, settings.discretisation, settings.bin_number,
                                settings.bin_width, low)
    first_order.update(histogram_features(grey, n_levels))
    ivh_values, ivh_range, ivh_step = _ivh_input(roi, values, settings)
    first_order.update(ivh_features(ivh_values, ivh_range, ivh_step))
    timings["first_order"] = time.perf_counter() - t
    for tag, value in {**morph, **first_order}.items():
        if tag.split(".", 1)[0] in wanted:
            rows.append(_row(tag, "3D", value, settings))
    if not wanted & {"cm", "rlm", "szm", "dzm", "ngt", "ngl"}:
        return FeatureSet(tuple(rows), tuple(notes), timings)

    t = time.perf_counter()
    levels = np.zeros(roi.image.shape, dtype=np.int64)
    levels[roi.intensity_mask] = grey
    # Crop to the ROI (texture needs no surroundings).
    present = np.argwhere(roi.morph_mask | roi.intensity_mask)
    box = tuple(slice(a, b + 1) for a, b in zip(present.min(0), present.max(0), strict=True))
    texture = texture_features(
        levels[box], n_levels, roi.morph_mask[box], settings.texture_aggregations,
        settings.glcm_distance, settings.ngtdm_distance, settings.ngldm_distance,
        settings.ngldm_alpha,
    )
    timings["texture"] = time.perf_counter() - t
    for (tag, aggregation), value in texture.items():
        if tag.split(".", 1)[0] in wanted:
            rows.append(_row(tag, aggregation, value, settings))
    return FeatureSet(tuple(rows), tuple(notes), timings)


def compute_features(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float],
                     settings: RadiomicsSettings) -> FeatureSet:
    """IBSI 1 features of the ROI ``mask`` on ``image`` (``[z, y, x]``, spacing in mm).

    Raises
    ------
    ValueError
        The ROI is empty (before or after interpolation / re-segmentation).
    """
    t = time.perf_counter()
    roi = process_roi(image, mask, spacing, settings)
    preprocessing = time.perf_counter() - t
    result = features_of_processed(roi, settings)
    result.timings_s["preprocessing"] = preprocessing
    return result
