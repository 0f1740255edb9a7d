"""The CT lung engine's declaration: torch-free, read by the node to list and route it.

Registered in ``pyproject.toml`` as ``ct_lung = "ai_engines.ct_lung.spec:SPEC"`` under
``[project.entry-points."dicom_node.engines"]``.
"""

from __future__ import annotations

from ai_engines.acceptance import (
    CT_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
    Acceptance,
    GeometryNeeds,
    SeriesRequirement,
)
from ai_engines.ct_lung import ENGINE_NAME, ENGINE_VERSION, EXTENT_MODEL_NAME, MODEL_NAME
from ai_engines.spec import EngineSpec

ACCEPTANCE = Acceptance(
    series=(
        SeriesRequirement(
            role="CT",
            modalities=("CT",),
            sop_classes=(CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE),
            geometry=GeometryNeeds(
                min_slices=16,
                slice_thickness_mm=(0.5, 5.0),
                pixel_spacing_mm=(0.5, 1.0),
                axial_only=True,
                max_obliquity_deg=1.0,
                uniform_spacing=True,
                lossless_only=True,
            ),
        ),
    ),
)

SPEC = EngineSpec(
    name=ENGINE_NAME,
    version=ENGINE_VERSION,
    title="CT lungs and primary lung tumour (NSCLC GTV), after Primakov et al. 2022",
    acceptance=ACCEPTANCE,
    models=(MODEL_NAME, EXTENT_MODEL_NAME),
    factory="ai_engines.ct_lung.engine:CtLungEngine",
    training="ai_engines.ct_lung.training:TRAINING",
)
