"""The radiomics engine's declaration: importing it loads neither numpy work nor torch."""

from __future__ import annotations

from ai_engines.engine import (
    CT_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
    ENHANCED_MR_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    Acceptance,
    GeometryNeeds,
    RegionRequirement,
    SeriesRequirement,
)
from ai_engines.spec import EngineSpec

ENGINE_VERSION = "1.0.0"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
ENHANCED_PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.130"

ACCEPTANCE = Acceptance(
    series=(
        SeriesRequirement(
            role="image",
            modalities=("CT", "MR", "PT"),
            sop_classes=(
                CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE, MR_IMAGE_STORAGE,
                ENHANCED_MR_IMAGE_STORAGE, PET_IMAGE_STORAGE, ENHANCED_PET_IMAGE_STORAGE,
            ),
            # Any orientation: features are computed on the voxel grid with its spacing (the
            # engine declines sheared, gantry-tilted stacks itself).  Quantitative: lossy
            # inputs are refused and the slices must be evenly spaced.
            geometry=GeometryNeeds(min_slices=1, axial_only=False, uniform_spacing=True,
                                   lossless_only=True),
        ),
    ),
    # Every region that arrived with the study on the selected series (RTSTRUCT ROI or SEG
    # segment): at least one.
    regions=RegionRequirement(name_pattern=".*", min_count=1),
)

SPEC = EngineSpec(
    name="radiomics",
    version=ENGINE_VERSION,
    title="IBSI 1 radiomic features of received regions; exact GLCM entropy maps",
    acceptance=ACCEPTANCE,
    models=(),
    factory="ai_engines.radiomics.engine:RadiomicsEngine",
    # Every GTV the CT lung engine finds and every glioma sub-region the MR engine finds is
    # measured too: the node hands their stored SEG/RTSTRUCT to this engine as regions.
    consumes_results=True,
)
