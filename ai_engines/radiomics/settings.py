"""Radiomics settings: image processing and texture parameters, with the IBSI 1 presets.

The presets reproduce the five image-processing configurations A–E that the IBSI reference
manual (chapter 5, "Reference data sets") defines for its lung CT phantom, and the
digital-phantom setting (no processing at all).  Every field is reported with the features
(:meth:`RadiomicsSettings.describe`), so a reader of the SR or the CSV can reproduce them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from ai_engines.radiomics.ibsi import TEXTURE_AGGREGATIONS

Interpolation = Literal["nearest", "linear", "cubic"]
Discretisation = Literal["none", "FBN", "FBS"]
Dimensionality = Literal["2D", "3D"]
# IBSI family prefixes (the first part of every feature tag), in the IBSI 1 order.
FAMILY_PREFIXES = ("morph", "loc", "stat", "ih", "ivh", "cm", "rlm", "szm", "dzm", "ngt", "ngl")


@dataclass(frozen=True)
class RadiomicsSettings:
    """How an ROI is processed before features are computed.

    Parameters
    ----------
    name
        Preset name reported with the features (``"IBSI-C"``, ``"custom"``...).
    spacing_mm
        Resampled voxel spacing ``(z, y, x)`` in mm; ``None``: no interpolation.  With
        ``dimensionality="2D"`` or ``z == 0`` only the slices are resampled in-plane.
    dimensionality
        ``"2D"``: interpolation in-plane only; ``"3D"``: in three dimensions.
    interpolation
        Image interpolator (SimpleITK): nearest, (bi/tri)linear or cubic B-spline.
    round_intensities
        Round interpolated intensities to the nearest integer (CT Hounsfield units).
    mask_threshold
        Partial-volume threshold of the (linearly) interpolated ROI mask.
    resegmentation_range
        Intensity range ``(low, high)`` kept in the intensity mask; either bound may be None.
    outlier_sigma
        Remove intensities further than this many standard deviations from the ROI mean.
    discretisation, bin_number, bin_width
        Texture and intensity-histogram discretisation: fixed bin number (FBN) or fixed bin
        size (FBS, bins start at the lower re-segmentation bound, else at the ROI minimum).
    ivh_discretisation, ivh_bin_number, ivh_bin_width
        Intensity-volume histogram: ``"none"`` (discrete calibrated intensities, step 1),
        ``"FBS"`` (continuous calibrated) or ``"FBN"`` (arbitrary units, 1000 bins).
    glcm_distance, ngtdm_distance, ngldm_distance, ngldm_alpha
        Chebyshev distance of the neighbourhoods and the NGLDM coarseness parameter.
    texture_aggregations
        IBSI aggregation codes computed for the texture families (see ``texture.py``).
    moran_max_voxels
        Moran's I and Geary's C are O(n²): above this many voxels they are estimated on a
        fixed-seed random subsample of this size (IBSI allows subsampling).
    families
        IBSI family prefixes computed (``morph``, ``loc``, ``stat``, ``ih``, ``ivh``, ``cm``,
        ``rlm``, ``szm``, ``dzm``, ``ngt``, ``ngl``); the default is every family.
    entropy_map, map_levels, map_window, map_range
        Feature map (GLCM entropy) over the ROI's slab: on/off, grey levels, window size
        (pixels, odd) and the intensity range quantised into ``map_levels`` (``None``: the
        ROI's intensity range).
    """

    name: str = "custom"
    spacing_mm: tuple[float, float, float] | None = None
    dimensionality: Dimensionality = "3D"
    interpolation: Interpolation = "linear"
    round_intensities: bool = False
    mask_threshold: float = 0.5
    resegmentation_range: tuple[float | None, float | None] | None = None
    outlier_sigma: float | None = None
    discretisation: Discretisation = "FBS"
    bin_number: int = 32
    bin_width: float = 25.0
    ivh_discretisation: Discretisation = "none"
    ivh_bin_number: int = 1000
    ivh_bin_width: float = 2.5
    glcm_distance: int = 1
    ngtdm_distance: int = 1
    ngldm_distance: int = 1
    ngldm_alpha: int = 0
    texture_aggregations: tuple[str, ...] = ("3D_avg", "3D_merged")
    moran_max_voxels: int = 4000
    families: tuple[str, ...] = FAMILY_PREFIXES
    entropy_map: bool = True
    map_levels: int = 64
    map_window: int = 5
    map_range: tuple[float, float] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.interpolation not in ("nearest", "linear", "cubic"):
            raise ValueError("interpolation must be nearest, linear or cubic")
        if self.discretisation not in ("none", "FBN", "FBS"):
            raise ValueError("discretisation must be FBN or FBS")
        if self.discretisation == "FBN" and self.bin_number < 1:
            raise ValueError("bin_number must be at least 1")
        if self.discretisation == "FBS" and not self.bin_width > 0:
            raise ValueError("bin_width must be positive")
        if self.map_window < 3 or self.map_window % 2 == 0:
            raise ValueError("map_window must be odd and at least 3")
        if not 2 <= self.map_levels <= 256:
            raise ValueError("map_levels must be between 2 and 256")
        unknown = sorted(set(self.families) - set(FAMILY_PREFIXES))
        if unknown or not self.families:
            raise ValueError(f"families must be some of {', '.join(FAMILY_PREFIXES)}"
                             + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
        bad = sorted(set(self.texture_aggregations) - set(TEXTURE_AGGREGATIONS))
        if bad or not self.texture_aggregations:
            raise ValueError(f"texture_aggregations must be some of "
                             f"{', '.join(TEXTURE_AGGREGATIONS)}"
                             + (f" (unknown: {', '.join(bad)})" if bad else ""))
        if self.spacing_mm is not None and (min(self.spacing_mm[1:]) <= 0 or self.spacing_mm[0] < 0):
            raise ValueError("spacing_mm must be positive (z may be 0: keep the slices)")

    def describe(self) -> str:
        """The settings as one line for Findings.notes, the SR and the CSV."""
        parts = []
        for key, value in asdict(self).items():
            if key == "extra" and not value:
                continue
            parts.append(f"{key}={value}")
        return "radiomics settings: " + "; ".join(parts)

    def with_changes(self, **changes: object) -> RadiomicsSettings:
        """A copy with some fields replaced (e.g. a preset with the entropy map off)."""
        return replace(self, **changes)  # type: ignore[arg-type]


_2D_AGG = ("2D_avg", "2D_slice_merged", "2.5D_direction_merged", "2.5D_merged")
_3D_AGG = ("3D_avg", "3D_merged")

# The IBSI 1 digital phantom: no interpolation, no re-segmentation, grey levels used as they are
# (FBS of width 1 starting at 1 leaves the values 1..6 unchanged), every aggregation.
DIGITAL_PHANTOM = RadiomicsSettings(
    name="IBSI-digital-phantom",
    discretisation="FBS",
    bin_width=1.0,
    texture_aggregations=_2D_AGG + _3D_AGG,
    entropy_map=False,
)

# IBSI 1 configurations A–E (reference manual, chapter 5, lung cancer CT phantom).
IBSI_A = RadiomicsSettings(
    name="IBSI-A",
    dimensionality="2D",
    resegmentation_range=(-500.0, 400.0),
    discretisation="FBS",
    bin_width=25.0,
    ivh_discretisation="none",
    texture_aggregations=_2D_AGG,
)
IBSI_B = RadiomicsSettings(
    name="IBSI-B",
    dimensionality="2D",
    spacing_mm=(0.0, 2.0, 2.0),  # z = 0: slices are kept (2D interpolation)
    interpolation="linear",
    round_intensities=True,
    resegmentation_range=(-500.0, 400.0),
    discretisation="FBN",
    bin_number=32,
    ivh_discretisation="none",
    texture_aggregations=_2D_AGG,
)
IBSI_C = RadiomicsSettings(
    name="IBSI-C",
    spacing_mm=(2.0, 2.0, 2.0),
    interpolation="linear",
    round_intensities=True,
    resegmentation_range=(-1000.0, 400.0),
    discretisation="FBS",
    bin_width=25.0,
    ivh_discretisation="FBS",
    ivh_bin_width=2.5,
)
IBSI_D = RadiomicsSettings(
    name="IBSI-D",
    spacing_mm=(2.0, 2.0, 2.0),
    interpolation="linear",
    round_intensities=True,
    outlier_sigma=3.0,
    discretisation="FBN",
    bin_number=32,
    ivh_discretisation="none",
)
IBSI_E = RadiomicsSettings(
    name="IBSI-E",
    spacing_mm=(2.0, 2.0, 2.0),
    interpolation="cubic",
    round_intensities=True,
    resegmentation_range=(-1000.0, 400.0),
    outlier_sigma=3.0,
    discretisation="FBN",
    bin_number=32,
    ivh_discretisation="FBN",
    ivh_bin_number=1000,
)

PRESETS: dict[str, RadiomicsSettings] = {
    "IBSI-A": IBSI_A,
    "IBSI-B": IBSI_B,
    "IBSI-C": IBSI_C,
    "IBSI-D": IBSI_D,
    "IBSI-E": IBSI_E,
    "IBSI-digital-phantom": DIGITAL_PHANTOM,
}

DEFAULT_PRESET = "IBSI-C"


def preset(name: str) -> RadiomicsSettings:
    """The named preset (``"IBSI-A"`` … ``"IBSI-E"``, ``"IBSI-digital-phantom"``).

    Raises
    ------
    KeyError
        ``name`` is not a preset; the message lists those that are.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown radiomics preset {name!r}; presets: {', '.join(PRESETS)}") from None


# Settings a site may change on top of a preset (node configuration ``[radiomics]``).
SITE_KEYS = (
    "spacing_mm", "interpolation", "discretisation", "bin_number", "bin_width",
    "resegmentation_range", "outlier_sigma", "texture_aggregations", "families", "entropy_map",
    "map_levels", "map_window",
)


def site_settings(preset_name: str, changes: dict[str, object]) -> RadiomicsSettings:
    """A preset with a site's changes, named so the report shows it was changed.

    Parameters
    ----------
    preset_name
        One of :data:`PRESETS`.
    changes
        Keys of :data:`SITE_KEYS` with values as a TOML file gives them: ``spacing_mm``
        ``[z, y, x]`` or ``[]`` (no resampling); ``resegmentation_range`` ``[low, high]`` or
        ``[]`` (none); ``outlier_sigma`` 0 (none); lists for the aggregations and families.

    Raises
    ------
    KeyError
        Unknown preset (the message lists the presets).
    ValueError
        An unknown key or a value the settings refuse (the message names the key).
    """
    base = preset(preset_name)
    unknown = sorted(set(changes) - set(SITE_KEYS))
    if unknown:
        raise ValueError(f"unknown radiomics setting(s) {', '.join(unknown)}")
    values: dict[str, object] = {}
    for key, value in changes.items():
        if key in ("spacing_mm", "resegmentation_range"):
            items = tuple(float(v) for v in value)  # type: ignore[attr-defined]
            if items and len(items) != (3 if key == "spacing_mm" else 2):
                raise ValueError(f"{key} needs {3 if key == 'spacing_mm' else 2} numbers or []")
            if key == "resegmentation_range" and items and not items[0] < items[1]:
                raise ValueError("resegmentation_range: low must be below high")
            values[key] = items or None
        elif key == "outlier_sigma":
            values[key] = float(value) or None  # type: ignore[arg-type]
        elif key in ("texture_aggregations", "families"):
            values[key] = tuple(str(v) for v in value)  # type: ignore[attr-defined]
        else:
            values[key] = value
    if not values:
        return base
    name = f"{base.name}+site({','.join(sorted(values))})"
    try:
        return base.with_changes(name=name, **values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"radiomics settings: {exc}") from None
